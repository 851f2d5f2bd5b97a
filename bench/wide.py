"""A wide table: 4,000 rows and 600 numeric columns (a probe none of the benchmark tables make).

The table (the generator of bench/README.md, "A wide table: a probe"): a target linear in 20
of the 600 standard-normal columns plus a sine of the 21st and noise. One 80/20 split of its
rows (``--seed``); on the 80%: ``tune(..., time_budget=B)`` for each ``--budgets`` B (its
validation rows carved from the 80%, as ``short_tune.py`` does), ``CaviarRegressor()`` at its
defaults, ``RidgeCV`` and ``HistGradientBoostingRegressor`` defaults, each scored by RMSE on
the 20%, with its wall seconds. ``--realmlp`` adds pytabkit's RealMLP-TD defaults (minutes).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/wide.py --budgets 30 60
It prints one JSON line per method.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV

from caviar import CaviarRegressor, tune

ROWS, COLUMNS, SIGNAL = 4000, 600, 20


def wide_table(seed: int = 0) -> pd.DataFrame:
    """The probe's table: y = X[:, :20] @ w + sin(2 X[:, 20]) + N(0, 0.5²)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(ROWS, COLUMNS))
    w = np.zeros(COLUMNS)
    w[:SIGNAL] = rng.normal(size=SIGNAL)
    y = X @ w + np.sin(X[:, SIGNAL] * 2) + rng.normal(scale=0.5, size=ROWS)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(COLUMNS)])
    df["y"] = y
    return df


def timed(name: str, predict: Callable[[], np.ndarray], y: np.ndarray, **extra) -> dict:
    started = time.perf_counter()
    out = predict()
    return {"method": name, "rmse": float(np.sqrt(np.mean((out - y) ** 2))),
            "seconds": round(time.perf_counter() - started, 1), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--seed", type=int, default=0, help="the split's (the table is fixed)")
    parser.add_argument("--realmlp", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    df = wide_table()
    order = np.random.default_rng(args.seed).permutation(ROWS)
    fit, test = df.iloc[order[:ROWS * 4 // 5]], df.iloc[order[ROWS * 4 // 5:]]
    X, y, X_test, y_test = fit.drop(columns="y"), fit["y"], test.drop(columns="y"), test["y"]
    runs = [("RidgeCV", lambda: RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X, y).predict(X_test)),
            ("HGB defaults", lambda: HistGradientBoostingRegressor().fit(X, y).predict(X_test)),
            ("CaviarRegressor defaults",
             lambda: CaviarRegressor(random_state=args.seed).fit(X, y).predict(X_test))]
    for name, predict in runs:
        print(json.dumps(timed(name, predict, y_test.to_numpy())), flush=True)
    for budget in args.budgets:
        with tempfile.TemporaryDirectory() as out:
            kept = {}

            def tuned(budget: float = budget, out: str = out, kept: dict = kept) -> np.ndarray:
                result = tune(fit, "y", time_budget=budget, test=test, out=out,
                              seed=args.seed)
                kept.update(trials=len(result.leaderboard),
                            members=result.model.info.get("members"))
                return result.model.predict(test)

            row = timed(f"tune {budget:g} s", tuned, y_test.to_numpy())
            print(json.dumps(row | kept), flush=True)
    if args.realmlp:
        from pytabkit import RealMLP_TD_Regressor

        model = RealMLP_TD_Regressor(random_state=args.seed, n_threads=1)
        print(json.dumps(timed("RealMLP-TD defaults",
                               lambda: model.fit(X, y).predict(X_test), y_test.to_numpy())))


if __name__ == "__main__":
    main()
