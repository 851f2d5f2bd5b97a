"""(A probe) ridge regression on caviar's own inputs, against an earlier sweep's tune.

For the regression targets of an `any_tables.py` sweep (the same draws and splits: pass its
--seed and --count), the training rows go through caviar's `TablePreprocessor` (its robust
scaling, then again with standard scaling), scikit-learn's `RidgeCV` (α from 1e-4 to 1e3,
by leave-one-out) fits them, and its test RMSE is printed beside the sweep's caviar model's.
Where a target is close to linear in the columns, gradient steps stop short of the fit that
the normal equations give; this shows how often, and by how much.

`--random-features K`: also ridge on the robust-scaled inputs with, beside each numeric
column, K fixed periodic features cos(2π·c·x + b) of it (c ~ N(0, 1), b uniform; at most
2,000 in all): an additive model of one-column functions solved exactly, as PLR's features
would be if their frequencies were drawn once and only the last layer solved. It shows how
much of a target that is a smooth function of one column such a solve would fit.

`--tune B` (with `--random-features K`): what the validation rows would choose. For each
regression target, `caviar tune` on the sweep's training part (`--time-budget B`, the
sweep's seed for the table), its model's validation RMSE (`ensemble_value`); the periodic
ridge fitted on the same training rows of the tune's own split and scored on its validation
rows; the one with the lower validation RMSE is kept, and both test RMSEs are printed.

    PYTHONPATH=src .venv/bin/python bench/ridge_probe.py \
        --sweep bench/results-warm-decayed-any-tables-new.jsonl --seed 253 --count 60
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import MODEL_LINE, draw_tables, first_score, split, tune_in  # noqa: E402
from tables import test_score  # noqa: E402

from caviar.data import prepare, read_table  # noqa: E402
from caviar.data.preprocess import TablePreprocessor  # noqa: E402

ALPHAS = np.logspace(-4, 3, 15)


def sweep_targets(sweep: str, seed: int, count: int, metric: str = "rmse") -> Iterator[tuple]:
    """Each target of an ``any_tables.py`` sweep (its JSON lines, --seed and --count) scored
    by ``metric``, on the sweep's own draws and splits, rows without a target dropped: the
    table, the target, the training and test rows, the sweep's line for it and the table's
    seed."""
    runs = {r["table"]: r for r in map(json.loads, Path(sweep).read_text().splitlines())
            if r.get("metric") == metric}
    for i, (name, df) in enumerate(draw_tables(count, seed, 60_000, 100)):
        if name not in runs:
            continue
        target, train, test = split(df, seed + i)
        yield (name, target, train.dropna(subset=[target]), test.dropna(subset=[target]),
               runs[name], seed + i)


def sweep_arguments(doc: str, count: int) -> argparse.ArgumentParser:
    """A probe's command line: the sweep it reads (--sweep), that sweep's --seed and
    --count."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="an any_tables.py sweep's JSON lines")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, default=count)
    return parser


def ridge_rmse(train, test, target: str, numeric: str, features: int = 0) -> float:
    return ridge_rmses(train, [test], target, numeric, features)[0]


def ridge_rmses(train, tests: list, target: str, numeric: str, features: int = 0
                ) -> list[float]:
    """RidgeCV fitted once on ``train``'s rows, its RMSE on each of ``tests``."""
    pre = TablePreprocessor(target=target, task="regression", numeric=numeric)
    X_train = pre.fit_transform(train)
    X_tests = [pre.transform(test) for test in tests]
    if features:
        columns = list(pre.numeric_columns())
        k = max(1, min(features, 2000 // max(1, len(columns))))
        rng = np.random.default_rng(0)
        c = rng.normal(size=(len(columns), k))
        b = rng.uniform(0, 2 * np.pi, size=(len(columns), k))

        def periodic(X: np.ndarray) -> np.ndarray:
            theta = 2 * np.pi * X[:, columns, None] * c + b  # (rows, columns, k)
            return np.hstack([X, np.cos(theta).reshape(len(X), -1)])

        X_train, X_tests = periodic(X_train), [periodic(X) for X in X_tests]
    model = RidgeCV(alphas=ALPHAS).fit(X_train, train[target].astype(float))
    return [test_score(model, X, test[target].astype(float), "regression")
            for X, test in zip(X_tests, tests)]


def chosen_by_validation(train, test, target: str, seed: int, budget: float,
                         features: int) -> dict:
    """The tune's and the periodic ridge's validation and test RMSE on the tune's own split."""
    with tempfile.TemporaryDirectory() as folder:
        done = tune_in(folder, train, test, target, seed, budget)
        done.check_returncode()
        info = json.loads((Path(folder) / "out/model/model.json").read_text())["info"]
        tuned = first_score(MODEL_LINE, done.stdout)
        frame, held = read_table(Path(folder) / "train.csv"), read_table(Path(folder) /
                                                                         "test.csv")
    split = prepare(frame, target, seed=seed, test=held)
    val, test_rmse = ridge_rmses(split.train, [split.validation, split.test], target, "robust",
                                 features)
    return {"caviar_val": info["ensemble_value"], "ridge_val": val, "ridge_test": test_rmse,
            "caviar_test_tuned": tuned[1] if tuned else None}


def main() -> None:
    parser = sweep_arguments(__doc__, 60)
    parser.add_argument("--random-features", type=int, default=0, metavar="K")
    parser.add_argument("--tune", type=float, metavar="B", help="choose by validation rows "
                        "between a B-second tune and the periodic ridge")
    args = parser.parse_args()
    for name, target, train, test, run, table_seed in sweep_targets(
            args.sweep, args.seed, args.count):
        result = {"table": name, "target": target, "caviar": run["caviar"]}
        try:
            for numeric in ("robust", "standard"):
                result[f"ridge_{numeric}"] = ridge_rmse(train, test, target, numeric)
            if args.random_features:
                result["ridge_periodic"] = ridge_rmse(train, test, target, "robust",
                                                      args.random_features)
            if args.tune:
                result.update(chosen_by_validation(train, test, target, table_seed,
                                                   args.tune, args.random_features))
        except (ValueError, subprocess.CalledProcessError) as error:  # recorded, not fatal
            result["error"] = str(error)[:200]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
