"""A probe: tables whose signal is who someone is (identifier columns), as issue 13's
course-ratings table (student and lecturer IDs, 2,972 and 1,128 levels), where a linear model
on one-hot IDs beat caviar. Synthetic, so the truth is known: a rating is the sum of each ID's
effect, a small slope in one numeric column, and noise of σ = 0.8 (the best RMSE possible).

Per table and seed, on the split ``caviar.data.prepare`` makes for ``tune`` (60% train, 20%
validation, 20% test), test RMSE of a ``tune`` per ``--arms``: ``onehot`` (the default space
with categoricals past the one-hot limit target-encoded: the rows' ``caviar_default`` before
2026-12-05 10:30, ``caviar_onehot`` since), ``embedding`` or ``mixed`` fixed (learned
embeddings), ``default`` (no space given: since 2026-12-05 it searches onehot and mixed
where IDs pass the limit); then ridge regression on one-hot IDs (its α by leave-one-out on
the training rows), and HistGradientBoosting on the ID codes.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/ids.py --budget 30 --seeds 0 1
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from caviar import tune
from caviar.data import prepare
from caviar.search import default_space

NOISE = 0.8
# rows, then (levels, σ of the effects) of each ID column: the course-ratings table's shape,
# and one with IDs under the one-hot limit (two ~50-level team columns, as the football table)
TABLES = {"ratings_like": (30_000, [(3000, 0.6), (1100, 0.5)]),
          "teams_like": (14_000, [(50, 0.3), (50, 0.3)])}


def make_table(rows: int, ids: list[tuple[int, float]], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns, y = {}, 3.0 + NOISE * rng.normal(size=rows)
    for j, (levels, scale) in enumerate(ids):
        effect, code = rng.normal(0, scale, levels), rng.integers(0, levels, rows)
        columns[f"id{j}"] = np.char.add(f"i{j}_", code.astype(str))
        y += effect[code]
    age = rng.normal(40, 10, rows)
    return pd.DataFrame({**columns, "age": age, "rating": y + 0.01 * (age - 40)})


def coded(X: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    """The ID columns as integer codes, for HistGradientBoosting."""
    return X.assign(**{c: pd.Categorical(X[c], categories=values).codes
                       for c, values in levels.items()})


def rmse(y: pd.Series, predicted: np.ndarray) -> float:
    return float(mean_squared_error(y, predicted) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--arms", nargs="+", default=["onehot", "embedding"],
                        choices=["default", "onehot", "embedding", "mixed"])
    args = parser.parse_args()
    for name in args.tables:
        rows, ids = TABLES[name]
        for seed in args.seeds:
            frame = make_table(rows, ids, seed)
            split = prepare(frame, "rating", seed=seed)
            ids_columns = [c for c in frame.columns if c.startswith("id")]
            X_train, y_train = split.train.drop(columns="rating"), split.train["rating"]
            X_test, y_test = split.test.drop(columns="rating"), split.test["rating"]
            row = {"table": name, "seed": seed, "rows": rows,
                   "levels": [levels for levels, _ in ids], "noise": NOISE}
            for encoding in args.arms:
                space = None if encoding == "default" else default_space().replace(
                    {"encoding": encoding})
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as out:
                    result = tune(frame, "rating", time_budget=args.budget, out=out,
                                  seed=seed, space=space)
                row[f"caviar_{encoding}"] = result.test_scores["rmse"]
                row[f"caviar_{encoding}_s"] = round(time.perf_counter() - started, 1)
            ridge = make_pipeline(
                make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ids_columns),
                                        remainder="passthrough"),
                RidgeCV(alphas=np.logspace(-2, 3, 12)))
            row["ridge_onehot"] = rmse(y_test, ridge.fit(X_train, y_train).predict(X_test))
            levels = {c: sorted(frame[c].unique()) for c in ids_columns}
            hgb = HistGradientBoostingRegressor(random_state=seed)
            row["hgb_codes"] = rmse(y_test, hgb.fit(coded(X_train, levels), y_train).predict(
                coded(X_test, levels)))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
