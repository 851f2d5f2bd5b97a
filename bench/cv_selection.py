"""Choosing a configuration on one validation split, or by K-fold cross-validation.

A probe of the winner's curse on small tables (bench/README.md, "Check tables, seed 0": on
Hitters' 53 validation rows the best of 2,543 trials tested worse than the best of 1,297).
For each table and seed: ``--configs`` configurations drawn at random from the default space
(Optuna's random sampler); each trained once on the training rows and kept at its best epoch
on the validation rows (what a search scores), then bagged as ``tune(refit="bag")`` bags it
(``bagging.bag_model``: 5 networks cross-fitted over the training and validation rows, the
same folds for every configuration; its out-of-fold score: every one of those rows predicted
by a network that never trained on it). Two choices: the
configuration with the best validation score, and the one with the best out-of-fold score;
each scored on the test rows as the same model, its 5 fold networks averaged, so that only
the choice differs. Also the test score of the best configuration in hindsight (the oracle),
and the rank correlation of each selection score with the test scores.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/cv_selection.py --seeds 50 \
         --tables Hitters College --configs 24
It prints one JSON line per table and seed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import optuna
import torch
from scipy.stats import spearmanr
from tables import ANY_TABLE, CHECK_TABLES, load_table

from caviar import CaviarModel
from caviar.data import prepare
from caviar.engine import Population
from caviar.metrics import get_metric
from caviar.search import default_space
from caviar.search.bagging import bag_model
from caviar.search.tune import _rows


def searched_network(data, params: dict, seed: int) -> tuple[Population, float]:
    """One network of ``params`` trained on the training rows, at its best validation epoch,
    and that loss (what a search ranks by)."""
    population = Population(data.task, data.inputs, [params], n_classes=data.n_classes,
                            seed=seed)
    population.fit(data.X_train, data.y_train, data.X_val, data.y_val,
                   on_epoch=lambda pop, records: pop.remember_best(torch.tensor(
                       [r["val_loss"] if r else math.inf for r in records])))
    return population.export_member(0, at_best=True), float(population.best_score[0])


def probe(name: str, seed: int, configs: int) -> dict:
    spec = ANY_TABLE[name]
    data = prepare(load_table(name), spec.target, task=spec.task,
                   categorical=spec.categorical, drop=spec.drop, seed=seed)
    metric = get_metric(None, data.task)
    key = "rmse" if data.task == "regression" else "log_loss"
    started = time.perf_counter()
    space = default_space()
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    X, y, w = _rows(data, False, None, None)
    val_losses, oof_losses, test_scores = [], [], []
    for i in range(configs):
        network, val_loss = searched_network(data, space.suggest(draws.ask()), seed + i)
        # the configuration bagged as tune(refit="bag") bags it, on the same folds each time
        bagged = bag_model(CaviarModel(data.preprocessor, [network], {}), X, y, metric,
                           seed=seed, target_std=data.target_std, target_mean=data.target_mean)
        diverged = bagged.info.get("trained_on") != "bag"
        val_losses.append(val_loss)
        oof_losses.append(math.inf if diverged else metric.loss(bagged.info["bag_value"]))
        test_scores.append(math.inf if diverged else bagged.scores(data.test)[key])
    by_val, by_cv = int(np.argmin(val_losses)), int(np.argmin(oof_losses))
    finite = [i for i in range(configs) if math.isfinite(test_scores[i])]

    def rank_correlation(scores: list[float]) -> float:
        return float(spearmanr([scores[i] for i in finite],
                               [test_scores[i] for i in finite]).statistic)

    return {"table": name, "seed": seed, "configs": configs,
            "rows": {"train": len(data.train), "val": len(data.validation),
                     "test": len(data.test)},
            "test_by_validation": test_scores[by_val], "test_by_cv": test_scores[by_cv],
            "test_oracle": min(test_scores), "test_median": float(np.median(
                [test_scores[i] for i in finite])),
            "spearman_validation_test": rank_correlation(val_losses),
            "spearman_cv_test": rank_correlation(oof_losses),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[50])
    parser.add_argument("--tables", nargs="+", default=list(CHECK_TABLES),
                        choices=list(ANY_TABLE))
    parser.add_argument("--configs", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in args.seeds:
        for name in args.tables:
            print(json.dumps(probe(name, seed, args.configs)), flush=True)


if __name__ == "__main__":
    main()
