"""What new seeds of the best configuration add to a searched model, given the time they take.

For each table of bench/tables.py and seed: ``tune(..., time_budget=B, seed_ensemble=0)`` on
the whole table (its own split), then, as ``tune(seed_ensemble=N)`` does at its end but
without a budget, ``ensemble.train_seeds``: the best kept network's configuration from N new
initializations on the same training rows, each at its best validation epoch; the kept model
is chosen again by ``select_ensemble`` with room for them. Reported on the test rows: the
searched model, the model with the seeds, and the seeds alone averaged, with the seconds the
seeds took (the time a budgeted run would take from its search for them).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/seed_ensemble.py --budget 30 \
         --seeds 29 --count 16 --tables hpc_data txhousing wage snmesp baseball
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from tables import TABLES, load_table

from caviar import tune
from caviar.data import prepare
from caviar.model import CaviarModel
from caviar.search.ensemble import KeptNetworks, train_seeds


def probe(name: str, seed: int, budget: float, count: int) -> dict:
    spec = TABLES[name]
    df = load_table(name)
    with tempfile.TemporaryDirectory() as out:
        result = tune(df, spec.target, time_budget=budget, out=out, seed=seed, drop=spec.drop,
                      categorical=spec.categorical, task=spec.task, seed_ensemble=0)
    model = result.model
    data = prepare(df, spec.target, task=spec.task, categorical=spec.categorical,
                   drop=spec.drop, seed=seed)  # the same split and encoding as tune's
    scorer = data.validation_scorer()
    kept = KeptNetworks(data.X_val, data.y_val, data.task, 5, scorer)  # tune's ensemble=5
    for member, network in zip(model.info["members"], model.networks):
        kept.add(network, member["trial"], member["value"])
    started = time.perf_counter()
    seeded = train_seeds(kept.networks[0], data.X_train, data.y_train, data.X_val, count,
                         seed + 1_000_003, scorer, weight=data.w_train)
    seconds = time.perf_counter() - started
    for k, (network, value) in enumerate(seeded):
        kept.add(network, kept.networks[0].trial, value, seed=k + 1)
    kept.seeds = len(seeded)
    with_seeds = kept.model(model.preprocessor, "probe")
    alone = CaviarModel(model.preprocessor, [n for n, _ in seeded], {})
    key = "rmse" if spec.task == "regression" else "log_loss"
    return {"table": name, "seed": seed, "budget": budget, "count": count,
            "searched": model.scores(data.test)[key],
            "with_seeds": with_seeds.scores(data.test)[key],
            "seeds_alone": alone.scores(data.test)[key],
            "networks": [len(model.networks), len(with_seeds.networks)],
            "seeds_joined": sum("seed" in m for m in with_seeds.info["members"]),
            "seeds_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[29])
    parser.add_argument("--count", type=int, default=16, help="new initializations")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args()
    for seed in args.seeds:
        for name in args.tables:
            print(json.dumps(probe(name, seed, args.budget, args.count)), flush=True)


if __name__ == "__main__":
    main()
