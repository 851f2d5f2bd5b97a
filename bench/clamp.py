"""Regression predictions clamped to the training target's range (RealMLP-TD's
``clamp_output``) against the same predictions as they are: one 60 s ``tune`` per table and
seed, the test RMSE of its model both ways (a paired comparison: the same networks), and how
many predictions fell below or above the range.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/clamp.py --seeds 81 \
         --tables Credit College Hitters
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from tables import ANY_TABLE, load_table, run_each_table

from caviar import tune
from caviar.data import split_frame


def run(name: str, seed: int, budget: float) -> dict:
    spec = ANY_TABLE[name]
    fit, _, test = split_frame(load_table(name), spec.target, spec.task, test_size=0.2,
                               val_size=0.0, seed=seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = tune(fit, spec.target, time_budget=budget, test=test, out=out, seed=seed,
                      drop=spec.drop, categorical=spec.categorical, task=spec.task)
    pre = result.model.preprocessor
    truth = test[spec.target].to_numpy(dtype=float)
    outputs = result.model.outputs(pre.transform(test))
    as_is, clamped = pre.decode_target(outputs), pre.predicted_values(outputs)
    low, high = pre.target_range_
    rmse = lambda p: float(np.sqrt(np.mean((p - truth) ** 2)))  # noqa: E731
    return {"table": name, "seed": seed, "rmse": rmse(as_is), "clamped": rmse(clamped),
            "below": int((as_is < low).sum()), "above": int((as_is > high).sum()),
            "n": len(truth), "wall": time.perf_counter() - started}


if __name__ == "__main__":
    run_each_table(__doc__, run, budget=60.0, seeds=[81],
                   tables=["Credit", "College", "Hitters", "Auto", "Carseats", "Bikeshare"])
