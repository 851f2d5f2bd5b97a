"""Which of the kept networks should the model average? The rule in use (``select_ensemble``:
up to 5 of the 20 best, each joining unless it worsens the validation loss by more than one
standard error) against others, all on the networks of one search.

One ``tune(..., ensemble=10)`` per table and seed (it keeps the 40 best networks; the search
is the same as with the default 5, which keeps the best 20 of them), then every rule picks
from the kept networks and its model is scored on the same 20% of the rows, which no network
trained or was chosen on: the best network alone; the rule with 10 or 20 networks from the
40; the 5 or 10 best averaged without a rule; and Caruana et al.'s greedy selection with
replacement (20 steps, from the 20 or the 40 best), AutoGluon's weighted ensemble; the
better warm-start network alone (``warm``); and the rule anchored on it (``anchored``:
Breiman's one-standard-error rule with the known-good networks as the prior, the model
starting from the better warm network when it is no worse than the search's best by more than
one standard error of the row-by-row difference).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/ensemble_rules.py --budget 60 \
         --seeds 9 [--tables wage digits]
It prints one JSON line per table and seed: each rule's test score and how many networks
it averages.
"""

from __future__ import annotations

import tempfile
import time

import torch
from tables import ANY_TABLE, load_table, run_each_table

from caviar import tune
from caviar.data import split_frame
from caviar.engine.losses import prediction_losses
from caviar.model import CaviarModel
from caviar.search import ensemble


def caruana(pool: list, y: torch.Tensor, task: str, steps: int = 20) -> list:
    """Greedy forward selection with replacement: each step adds the network (again, maybe)
    whose joining gives the lowest validation loss of the average."""
    chosen, total = [pool[0]], pool[0].val_outputs.clone()
    for _ in range(steps - 1):
        best = min(pool, key=lambda c: ensemble.averaged_score(
            (total + c.val_outputs) / (len(chosen) + 1), y, task))
        chosen.append(best)
        total = total + best.val_outputs
    return chosen


def anchored(pool: list, warm: list, y: torch.Tensor, task: str, size: int = 5) -> list:
    """The rule in use, started from the better warm network when it is within one standard
    error of the best network (row by row), else from the best."""
    best_warm = min(warm, key=lambda k: k.value)
    gap = (prediction_losses(best_warm.val_outputs, y, task)
           - prediction_losses(pool[0].val_outputs, y, task))
    if not ensemble._joins(gap):
        return ensemble.select_ensemble(pool, y, task, size)[0]
    rest = [k for k in pool if k.trial != best_warm.trial]
    return ensemble.select_ensemble([best_warm, *rest], y, task, size)[0]


def run(name: str, seed: int, budget: float) -> dict:
    spec = ANY_TABLE[name]
    fit, _, test = split_frame(load_table(name), spec.target, spec.task, test_size=0.2,
                               val_size=0.0, seed=seed)
    grabbed, warm = {}, {}
    model_of, add = ensemble.KeptNetworks.model, ensemble.KeptNetworks.add

    def add_and_see(self, network, trial, value, stopped=None, seed=None):
        if trial < 2 and seed is None:  # a new study's first two trials: the warm start's
            with torch.no_grad():
                warm[trial] = ensemble.KeptNetwork(value, trial, network,
                                                   network.predict(self.X_val)[0], stopped)
        add(self, network, trial, value, stopped, seed)

    def keep(kept, pre, study_name):  # the tuner's kept networks, as it builds its model
        grabbed.update(kept=kept, pre=pre)
        return model_of(kept, pre, study_name)

    ensemble.KeptNetworks.model, ensemble.KeptNetworks.add = keep, add_and_see
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            result = tune(fit, spec.target, time_budget=budget, test=test, out=out, seed=seed,
                          drop=spec.drop, categorical=spec.categorical, task=spec.task,
                          ensemble=10)
    finally:
        ensemble.KeptNetworks.model, ensemble.KeptNetworks.add = model_of, add
    kept, pre = grabbed["kept"], grabbed["pre"]
    nets, y, task = kept.networks, kept.y_val, kept.task
    metric = "rmse" if spec.task == "regression" else "log_loss"
    rules = {
        "best": [nets[0]],
        "se5_top20": ensemble.select_ensemble(nets[:20], y, task, 5)[0],  # in use
        "se10_top40": ensemble.select_ensemble(nets, y, task, 10)[0],
        "se20_top40": ensemble.select_ensemble(nets, y, task, 20)[0],
        "uniform5": nets[:5], "uniform10": nets[:10],
        "caruana20_top20": caruana(nets[:20], y, task),
        "caruana20_top40": caruana(nets, y, task),
    }
    if warm:
        rules["warm"] = [min(warm.values(), key=lambda k: k.value)]
        rules["anchored"] = anchored(nets[:20], list(warm.values()), y, task)
    row = {"table": name, "seed": seed, "wall": time.perf_counter() - started,
           "trials": len(result.leaderboard), "kept": len(nets),
           "warm_trials": sorted(warm), "anchored_on_warm": bool(warm) and any(
               k.trial in warm and k.seed is None for k in rules["anchored"][:1])}
    for rule, members in rules.items():
        model = CaviarModel(pre, [k.network for k in members])
        row[rule] = model.scores(test)[metric]
        row[rule + "_n"] = len({id(k) for k in members})
    return row


if __name__ == "__main__":
    run_each_table(__doc__, run, budget=60.0, seeds=[9])
