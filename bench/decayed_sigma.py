"""(A probe) The warm start's decayed network (``hyperparams.ESTIMATOR_NETWORK_DECAYED``: the
estimators' TabM-mini with PLR on RealMLP's cosine schedule, run to the end, the best epoch
kept) with its PLR frequencies drawn at σ = 0.1, RealMLP-TD's, against σ = 1, the scale of
the robust-scaled inputs (PERIODIC_EXACT's), fitted as ``CaviarRegressor`` /
``CaviarClassifier`` on the training rows of ``any_tables.py``'s draws and splits, scored on
their test rows.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/decayed_sigma.py --seed 377 --count 40
It prints one JSON line per target: the test RMSE or log-loss at each σ, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import draw_tables, split  # noqa: E402
from tables import test_score  # noqa: E402

from caviar import CaviarClassifier, CaviarRegressor  # noqa: E402
from caviar.data import DataError  # noqa: E402
from caviar.data.roles import infer_task  # noqa: E402
from caviar.hyperparams import ESTIMATOR_NETWORK_DECAYED  # noqa: E402

SIGMAS = (0.1, 1.0)


def decayed(kind, sigma: float):
    """The decayed warm network as an estimator: all its epochs, the best on validation."""
    c = ESTIMATOR_NETWORK_DECAYED
    return kind(hidden_layer_sizes=c["hidden_layer_sizes"], tabm_k=c["tabm_k"],
                numeric_embedding="plr", plr_sigma=sigma, lr_decay=c["lr_decay"],
                learning_rate=c["learning_rate"], epochs=c["epochs"],
                n_iter_no_change=10**6, random_state=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--max-rows", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for i, (name, df) in enumerate(draw_tables(args.count, args.seed, args.max_rows, 100)):
        target, train, test = split(df, args.seed + i)
        train, test = train.dropna(subset=[target]), test.dropna(subset=[target])
        y = train[target]
        try:
            regression = infer_task(y) == "regression"
        except (DataError, ValueError) as error:
            print(json.dumps({"table": name, "target": target, "error": str(error)[:200]}))
            continue
        if not regression:
            test = test[test[target].isin(set(y))]
        out = {"table": name, "target": target, "rows": len(df),
               "metric": "rmse" if regression else "log_loss"}
        kind = CaviarRegressor if regression else CaviarClassifier
        try:
            for sigma in SIGMAS:
                start = time.perf_counter()
                model = decayed(kind, sigma).fit(train.drop(columns=[target]), y)
                out[f"sigma_{sigma}"] = test_score(model, test.drop(columns=[target]),
                                                   test[target],
                                                   "regression" if regression else "multiclass")
                out[f"seconds_{sigma}"] = round(time.perf_counter() - start, 1)
        except (DataError, ValueError) as error:
            out["error"] = str(error)[:200]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
