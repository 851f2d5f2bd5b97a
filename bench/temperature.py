"""Would one temperature, fitted on the validation rows, lower the kept model's test log-loss?

For each classification table of bench/tables.py and seed: ``tune(..., time_budget=B)`` on
the whole table (its own split, ``split_frame(df, target, task, 0.2, 0.2, seed)``), then the
kept model's probabilities on those validation and test rows. T minimizes the validation
log-loss of p ∝ p^(1/T) (bounded 0.25-4: temperature scaling, Guo et al. 2017, applied to the
averaged probabilities); the test log-loss is reported with T and without.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/temperature.py --budget 30 \
         --seeds 24 --tables hpc_data default hi digits
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn import metrics
from tables import TABLES, load_table

from caviar import tune
from caviar.data import split_frame


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(metrics.log_loss(y, p, labels=list(range(p.shape[1]))))


def with_temperature(p: np.ndarray, t: float) -> np.ndarray:
    """p ∝ p^(1/t), renormalized per row (a softmax of log p / t)."""
    logits = np.log(np.clip(p, 1e-15, 1.0)) / t
    q = np.exp(logits - logits.max(axis=1, keepdims=True))
    return q / q.sum(axis=1, keepdims=True)


def probe(name: str, seed: int, budget: float) -> dict:
    spec = TABLES[name]
    df = load_table(name)
    with tempfile.TemporaryDirectory() as out:
        result = tune(df, spec.target, time_budget=budget, population=32, out=out, seed=seed,
                      drop=spec.drop, categorical=spec.categorical, task=spec.task)
    _, val, test = split_frame(df, spec.target, spec.task, 0.2, 0.2, seed)
    model = result.model
    # float64: log-loss clips at the dtype's epsilon, which float32's would make 1e-7
    p_val, p_test = (model.predict_proba(rows).astype(np.float64) for rows in (val, test))
    y_val, y_test = (np.asarray(model.preprocessor.encode_target(rows[spec.target]))
                     for rows in (val, test))
    t = minimize_scalar(lambda t: log_loss(with_temperature(p_val, t), y_val),
                        bounds=(0.25, 4.0), method="bounded").x
    before, after = log_loss(p_test, y_test), log_loss(with_temperature(p_test, t), y_test)
    return {"table": name, "seed": seed, "networks": len(model.networks), "T": round(t, 3),
            "val": [log_loss(p_val, y_val), log_loss(with_temperature(p_val, t), y_val)],
            "test": [before, after], "test_ratio": after / before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[24])
    parser.add_argument("--tables", nargs="+",
                        default=[n for n, t in TABLES.items() if t.task != "regression"])
    args = parser.parse_args()
    for seed in args.seeds:
        for name in args.tables:
            print(json.dumps(probe(name, seed, args.budget)), flush=True)


if __name__ == "__main__":
    main()
