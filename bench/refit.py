"""What the kept networks should train on at the end of ``tune``: the searched networks
(training rows only), or their configurations trained again on the training and validation
rows, for the epochs of their best validation score or for that many scaled down by the row
ratio (the same number of optimizer steps); or both the searched networks and their refits,
averaged.

One search per table and seed (``tune(..., refit="none")``), then every variant is built
from its kept model and scored on the same internal test rows, which no variant trains on.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/refit.py --tables wage default
It prints one JSON line per table and seed (``--out FILE`` appends them there too).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tables import TABLES, load_table

from caviar import tune
from caviar.model import CaviarModel
from caviar.search.tune import _rows
from caviar.training import refit_networks


def variants(model: CaviarModel, prepared, seed: int) -> dict[str, CaviarModel]:
    """The searched model and its refits on the training and validation rows."""
    X, y, w = _rows(prepared, False, None, None)
    epochs = [int(n.epoch[0]) for n in model.networks]
    ratio = len(prepared.X_train) / len(X)
    out = {"searched": model}
    for name, counts in (("refit_same_epochs", epochs),
                         ("refit_scaled_epochs", [max(1, round(e * ratio)) for e in epochs])):
        started = time.perf_counter()
        networks = refit_networks(model.networks, X, y, counts, seed=seed, weight=w)
        out[name] = CaviarModel(model.preprocessor, networks, {"seconds": round(
            time.perf_counter() - started, 2)})
    # the searched networks and their refits averaged together (twice the members)
    out["searched_and_refit"] = CaviarModel(
        model.preprocessor, model.networks + out["refit_same_epochs"].networks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="+", default=["wage", "default", "baseball"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per search (on a loaded machine, few epochs)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per search instead: the same search at any load")
    parser.add_argument("--out")
    args = parser.parse_args()
    for name in args.tables:
        table = TABLES[name]
        frame = load_table(name)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                result = tune(frame, table.target, drop=table.drop,
                              categorical=table.categorical, time_budget=args.budget,
                              trials=args.trials,
                              seed=seed, out=Path(tmp) / "run", refit="none")
                from caviar.data import prepare

                prepared = prepare(frame, table.target, drop=table.drop,
                                   categorical=table.categorical, seed=seed)
                models = variants(result.model, prepared, seed)
                row = {"table": name, "seed": seed, "budget": args.budget,
                       "trials": args.trials,
                       "members": len(result.model.networks),
                       "epochs": [int(n.epoch[0]) for n in result.model.networks],
                       "train_rows": len(prepared.X_train), "val_rows": len(prepared.X_val)}
                for key, model in models.items():
                    row[key] = model.scores(prepared.test)
                    if "seconds" in model.info:
                        row[key]["seconds"] = model.info["seconds"]
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
