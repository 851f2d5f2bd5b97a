"""Is a short tune ever worse than the estimators' defaults? (issue 13, item 3)

Every table of bench/tables.py (``--tables`` takes the check tables too), one 80/20 split per
seed (``split_frame``, stratified for classifiers). On the same 80% of the rows:
``tune(..., time_budget=B, test=the 20%)`` (its validation rows carved from the 80%; its
first trials are the estimators' network, TabM-mini, and the RealMLP-like one) and
``CaviarClassifier``/``CaviarRegressor`` at their defaults (early stopping on 10% of the
rows), fitted ``DEFAULT_DRAWS`` times with ``random_state`` seed, seed + 1, ...: on a small
table one fit of the defaults is a lucky or an unlucky draw (Credit, one split: 59-84 RMSE
over six ``random_state``s), so the tune is compared with their mean. All are scored on the
20%: RMSE in the target's units, or log-loss. The tune's seconds are the wall time of the
whole call; the defaults' are one fit's, averaged.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/short_tune.py --budget 10 \
         --seeds 0 [--tables wage digits] [--threads 1]
It prints one JSON line per table and seed (``--tune-only``: the tune alone).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from sklearn import metrics
from tables import ANY_TABLE, load_table, run_each_table

from caviar import CaviarClassifier, CaviarRegressor, tune
from caviar.data import split_frame

DEFAULT_DRAWS = 3  # fits of the defaults per table and seed (their random_state differs)


def score(task: str, y, out) -> float:
    if task == "regression":
        return float(np.sqrt(metrics.mean_squared_error(y, out)))
    return float(metrics.log_loss(y, out[0], labels=out[1]))


def run(name: str, seed: int, budget: float, tune_only: bool = False) -> dict:
    spec = ANY_TABLE[name]
    df = load_table(name)
    fit, _, test = split_frame(df, spec.target, spec.task, test_size=0.2, val_size=0.0,
                               seed=seed)
    y_test = test[spec.target]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = tune(fit, spec.target, time_budget=budget, test=test, out=out, seed=seed,
                      drop=spec.drop, categorical=spec.categorical, task=spec.task)
        seconds = time.perf_counter() - started
        model = result.model
        tuned = (model.predict(test) if spec.task == "regression"
                 else (model.predict_proba(test), model.classes))
    if tune_only:  # an A/B of the tune: the defaults are another run's
        return {"table": name, "seed": seed, "budget": budget,
                "tune": score(spec.task, y_test, tuned), "tune_seconds": seconds,
                "trials": len(result.leaderboard)}
    X = fit.drop(columns=[spec.target, *spec.drop])
    X_test = test.drop(columns=[spec.target, *spec.drop])
    defaults, default_seconds = [], []
    for state in range(seed, seed + DEFAULT_DRAWS):
        estimator = (CaviarRegressor if spec.task == "regression" else CaviarClassifier)(
            categorical=list(spec.categorical), random_state=state)
        started = time.perf_counter()
        estimator.fit(X, fit[spec.target])
        default_seconds.append(time.perf_counter() - started)
        default = (estimator.predict(X_test) if spec.task == "regression"
                   else (estimator.predict_proba(X_test), list(estimator.classes_)))
        defaults.append(score(spec.task, y_test, default))
    s_tuned, s_default = score(spec.task, y_test, tuned), float(np.mean(defaults))
    return {"table": name, "seed": seed, "budget": budget, "tune": s_tuned,
            "defaults": s_default, "defaults_each": defaults, "ratio": s_tuned / s_default,
            "tune_seconds": seconds, "defaults_seconds": float(np.mean(default_seconds)),
            "trials": len(result.leaderboard)}


if __name__ == "__main__":
    run_each_table(__doc__, run, budget=10.0, seeds=[0], flags={
        "tune-only": "the tune alone, not the defaults (an A/B of the tune)"})
