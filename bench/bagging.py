"""What a bag over folds adds to a searched model, given the time it takes.

For each table (bench/tables.py, the ten and the check tables) and seed:
``tune(..., time_budget=B)`` on the whole table (its own split), then, as
``tune(refit="bag")`` does at its end but without a budget, ``bagging.bag_model``: each of the
model's configurations as 5 networks cross-fitted over folds of the training and validation
rows, each at its best epoch on its own fold. Reported on the test rows: the searched model,
the bag, the bag's out-of-fold score beside the searched model's validation score, and the
seconds the bag took (the time a budgeted run would take from its search for it); and the bag
given only a share of the search's budget (``CUT_SHARES``), as a budget's end cuts it short.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/bagging.py --budget 30 \
         --seeds 40 --tables wage hpc_data College
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import tempfile

from tables import ANY_TABLE, load_table, run_each_table

from caviar import tune
from caviar.data import prepare
from caviar.metrics import get_metric
from caviar.search.bagging import BAG_FOLDS, bag_model
from caviar.search.budget import refit_cost
from caviar.search.tune import _rows

# shares of the search's budget the bag is also given (as a budget's end would cut it short)
CUT_SHARES = (0.1, 0.2, 0.4)


def probe(name: str, seed: int, budget: float) -> dict:
    spec = ANY_TABLE[name]
    df = load_table(name)
    with tempfile.TemporaryDirectory() as out:
        result = tune(df, spec.target, time_budget=budget, out=out, seed=seed, drop=spec.drop,
                      categorical=spec.categorical, task=spec.task)
    model = result.model
    data = prepare(df, spec.target, task=spec.task, categorical=spec.categorical,
                   drop=spec.drop, seed=seed)  # the same split and encoding as tune's
    X, y, w = _rows(data, False, None, None)
    key = "rmse" if data.task == "regression" else "log_loss"

    def bag(seconds: float | None):
        return bag_model(model, X, y, get_metric(None, data.task), seed=seed, weight=w,
                         target_std=data.target_std, target_mean=data.target_mean,
                         seconds=seconds)

    bagged = bag(None)
    # the bag as a budget's end cuts it: given a share of the search's time
    cut = {f"{share:g}": bag(share * budget) for share in CUT_SHARES}
    return {"table": name, "seed": seed, "budget": budget,
            "searched": model.scores(data.test)[key], "bag": bagged.scores(data.test)[key],
            "searched_val": model.info["ensemble_value"], "bag_oof": bagged.info["bag_value"],
            "networks": [len(model.networks), len(bagged.networks)],
            "bag_seconds": bagged.info["bag_seconds"],
            "bag_estimate": round(refit_cost(model.networks, len(y), BAG_FOLDS), 3),
            "bag_cut": {share: {"test": m.scores(data.test)[key], "networks": len(m.networks),
                                "bag": m.info.get("bag"), "bag_epochs": m.info.get("bag_epochs")}
                        for share, m in cut.items()}}


if __name__ == "__main__":
    run_each_table(__doc__, probe, budget=30.0, seeds=[40], tables=list(ANY_TABLE))
