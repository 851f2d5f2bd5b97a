"""(The budget on large tables) `caviar tune --time-budget B` on synthetic tables of 100,000
to 1,000,000 rows, where one epoch of a network can take a large part of the budget: the
wall seconds of the whole command against B, the test score it printed, and the trials and
epochs its study ran.

Each table: 20 normal columns and 5 categorical ones of 30 levels; a regression target
x0·x1 + sin 2·x2 + x3²/2 + the first category's effect + noise (σ 0.5), or three classes cut
from the same sum. Rows are drawn from ``--seed``; 80% train (`caviar tune train.csv`), 20%
test (`--test`). Tables are written once per row count and reused across budgets.

The code measured is whichever `caviar` package the interpreter imports: run it once per
arm with PYTHONPATH pointing at each arm's frozen `src`, one arm after the other (the
machine's cores are what is measured).

    PYTHONPATH=/tmp/ab_new/src .venv/bin/python bench/large_budget.py --rows 100000 1000000
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import CAVIAR, MODEL_LINE, first_score  # noqa: E402


def synthetic(rows: int, task: str, seed: int) -> pd.DataFrame:
    """A table of ``rows`` rows: 20 numbers, 5 categories and the target ``y``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 20))
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(20)])
    levels = np.array([f"level{k}" for k in range(30)])
    codes = rng.integers(0, 30, size=(rows, 5))
    for j in range(5):
        df[f"c{j}"] = levels[codes[:, j]]
    effect = rng.normal(size=30)[codes[:, 0]]
    signal = X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2]) + X[:, 3] ** 2 / 2 + effect
    noisy = signal + rng.normal(scale=0.5, size=rows)
    if task == "regression":
        df["y"] = noisy
    else:
        df["y"] = np.digitize(noisy, np.quantile(noisy, [1 / 3, 2 / 3]))
    return df


def study_facts(folder: Path) -> dict:
    """The trials the study finished and the epochs its trials reported, all together."""
    for path in (folder / "out").glob("*.db"):
        with sqlite3.connect(path) as db:
            trials = db.execute("SELECT COUNT(*) FROM trials WHERE state != 'RUNNING'"
                                ).fetchone()[0]
            epochs = db.execute("SELECT COUNT(*) FROM trial_intermediate_values"
                                ).fetchone()[0]
        return {"trials": trials, "epochs": epochs}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--tasks", nargs="+", default=["regression", "classification"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tables:
        for rows in args.rows:
            for task in args.tasks:
                df = synthetic(rows, task, args.seed)
                cut = int(0.8 * rows)
                train, test = Path(tables) / "train.csv", Path(tables) / "test.csv"
                df.iloc[:cut].to_csv(train, index=False)
                df.iloc[cut:].to_csv(test, index=False)
                for budget in args.budgets:
                    with tempfile.TemporaryDirectory() as folder:
                        start = time.perf_counter()
                        done = subprocess.run(
                            [CAVIAR, "tune", str(train), "--target", "y", "--test", str(test),
                             "--time-budget", str(budget), "--seed", str(args.seed),
                             "--out", "out"],
                            cwd=folder, capture_output=True, text=True)
                        seconds = time.perf_counter() - start
                        found = first_score(MODEL_LINE, done.stdout)
                        result = {"rows": rows, "task": task, "budget": budget,
                                  "seconds": round(seconds, 1), "rc": done.returncode,
                                  "metric": found and found[0], "score": found and found[1],
                                  **study_facts(Path(folder))}
                        if done.returncode:
                            result["stderr_last"] = done.stderr.strip()[-300:]
                        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
