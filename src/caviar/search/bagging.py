"""Bagging over folds: the kept model's configurations trained again on the training and
validation rows, K times each, every time with one fold of those rows held out.

The search needed the validation rows to choose; once it has chosen, they can train too. A
plain refit on all of them (``ensemble.refit_model``) must guess each network's epochs
(the searched ones) and has nothing left to check them on. Bagging over K folds (what
AutoGluon, RealMLP's and TabM's benchmarks do with their final models) keeps both: each
network trains on (K − 1)/K of the rows and stops at its best epoch on the fold it never saw,
the K networks of a configuration average out their draws of rows and weights, and the held-out
predictions together score the whole bag on every row once (the out-of-fold score: a
validation score of n rows, not of the validation split's few).

All K × M networks of one structure train as one ``Population`` on the same minibatches:
member k's row weights are zero on its fold (``train_epoch`` takes ``(P, n)`` weights), so
the fold costs it arithmetic on rows it ignores, not a second pass. (Its batch-norm statistics
do see the held-out rows' inputs, never their targets.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

from ..engine import Population
from ..hyperparams import structure_key
from ..metrics import Metric, ValidationScorer
from ..model import CaviarModel
from ..training import stop_at_epochs
from .ensemble import KeptNetwork, seed_epochs, select_ensemble

# K: five folds, the benchmarks' and AutoGluon's usual count (each network trains on 80% of
# the rows it may use); fixed before it was measured, not tuned
BAG_FOLDS = 5
# each population's seed: far from the search's and the seeds' (tune's seed + this)
BAG_OFFSET = 2_000_003
# the model's info["bag"] when no configuration could be bagged
NOT_BAGGED = ("declined: no configuration's fold networks trained the epochs its search "
              "needed in the time left")


def assign_folds(y: torch.Tensor, task: str, folds: int, seed: int,
                 groups: Sequence[Any] | None = None) -> np.ndarray:
    """Each row's fold, 0 to ``folds`` − 1: stratified by class for a classifier, shuffled
    for a regressor, each group in one fold when ``groups`` are given (scikit-learn's
    ``StratifiedKFold``, ``KFold``, ``GroupKFold``)."""
    n = len(y)
    if groups is not None:
        check_groups(groups, folds)
        splitter = GroupKFold(n_splits=folds)
        splits = splitter.split(np.zeros(n), groups=np.asarray(groups))
    elif task != "regression" and np.bincount(y.long().numpy()).min(initial=n) >= folds:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(n), y.long().numpy())
    else:  # a regressor, or a class too rare to be in every fold
        splits = KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n))
    fold = np.empty(n, dtype=np.int64)
    for k, (_, held_out) in enumerate(splits):
        fold[held_out] = k
    return fold


def check_groups(groups: Sequence[Any], folds: int = BAG_FOLDS) -> None:
    """A one-line error unless ``groups`` (the training and validation rows' groups) fill
    ``folds`` folds, each group whole."""
    count = len(set(groups))
    if count < folds:
        raise ValueError(f"a bag of {folds} folds needs {folds} groups or more in the "
                         f"training and validation rows, which hold {count} groups; use "
                         "refit='train+valid'")


def fold_weights(fold: np.ndarray, folds: int, weight: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(folds, n)`` row weights: fold k's rows 0 in row k, the others the rows' weights
    (1 without any), each row normalized to mean 1 over the rows it trains on, so a
    network's loss and its L2 term keep the scale they had in the search."""
    held = torch.as_tensor(fold).view(1, -1) == torch.arange(folds).view(-1, 1)
    base = torch.ones(len(fold), dtype=dtype) if weight is None else weight.to(dtype)
    w = torch.where(held, torch.zeros((), dtype=dtype), base.view(1, -1))
    return w * (len(fold) / w.sum(dim=1, keepdim=True))


def bag_networks(networks: Sequence[Population], X: torch.Tensor, y: torch.Tensor,
                 fold: np.ndarray, folds: int, scorers: Sequence[ValidationScorer],
                 seed: int = 0, weight: torch.Tensor | None = None,
                 deadline: float | None = None) -> list[list[Population | None]]:
    """For each of ``networks`` (one member each), ``folds`` networks of its configuration
    trained afresh on ``X``, ``y`` with fold k's rows held out, for ``seed_epochs`` of the
    searched network, each kept at its best epoch by ``scorers[k]`` (the study's metric on
    fold k's rows). ``deadline`` (``time.monotonic()``): no epoch starts that would end
    after it, at the pace of the epoch before. Returns ``out[i][k]``: network i's fold-k
    network (on the CPU). A configuration is bagged whole or not at all: its ``out[i]`` is
    all None unless each of its fold networks has a finite score and trained at least the
    epochs its searched network needed (its best epoch): one cut short by the deadline is a
    worse network than the one the search chose (a configuration stopped after one epoch
    made a bag's log-loss four times the searched model's), and one that diverged has no
    prediction to average."""
    held_out = [torch.as_tensor(np.flatnonzero(fold == k)) for k in range(folds)]
    groups: dict[tuple, list[int]] = {}
    for i, network in enumerate(networks):
        groups.setdefault(structure_key(network.hyperparameters[0]), []).append(i)
    out: list[list[Population | None]] = [[None] * folds for _ in networks]
    for g, members in enumerate(groups.values()):
        first = networks[members[0]]
        # member j·folds + k: network members[j] without fold k
        population = Population(first.structure.task, first.inputs,
                                [networks[i].hyperparameters[0] for i in members
                                 for _ in range(folds)],
                                n_classes=first.n_classes, seed=seed + g, device=first.device)
        w = fold_weights(fold, folds, weight, population.dtype).repeat(len(members), 1)
        Xd, yd, wd = population.to_device(X, y, w)
        searched = [networks[i] for i in members for _ in range(folds)]  # member p's
        stops = [seed_epochs(network) for network in searched]
        last = 0.0  # the seconds of the epoch before
        while bool(population.trainable.any()):
            started = time.monotonic()
            if deadline is not None and started + last > deadline:
                break
            population.train_epoch(Xd, yd, wd)
            with torch.no_grad():
                outputs = population.predict(Xd)
            scores = [scorers[p % folds](outputs[p, held_out[p % folds]])
                      for p in range(population.size)]
            # a NaN score (no number) is skipped, as remember_best skips any non-finite one
            population.remember_best(torch.tensor(
                [scorers[p % folds].metric.loss(v) for p, v in enumerate(scores)]))
            stop_at_epochs(population, stops)  # each at its own seed_epochs
            last = time.monotonic() - started
        # the epochs each configuration's search needed: its searched network's best epoch
        # (never above its stop: seed_epochs is at least that)
        needed = torch.tensor([int(network.epoch[0]) for network in searched])
        ready = ((population.best_epoch.cpu() > 0) & torch.isfinite(population.best_score.cpu())
                 & (population.epoch.cpu() >= needed))
        for j, i in enumerate(members):
            if bool(ready[j * folds:(j + 1) * folds].all()):
                out[i] = [population.export_member(j * folds + k, at_best=True).to("cpu")
                          for k in range(folds)]
    return out


def bag_model(model: CaviarModel, X: torch.Tensor, y: torch.Tensor, metric: Metric, *,
              candidates: Sequence[KeptNetwork] | None = None, size: int | None = None,
              folds: int = BAG_FOLDS, seed: int = 0,
              weight: torch.Tensor | None = None, groups: Sequence[Any] | None = None,
              target_std: float | None = None, target_mean: float = 0.0,
              seconds: float | None = None) -> CaviarModel:
    """The model averaging the bags of the configurations the out-of-fold score chooses:
    each candidate configuration as ``folds`` networks cross-fitted on ``X``, ``y`` (the
    training and validation rows, as the preprocessor makes them; ``weight``: their weights,
    ``groups``: rows that must stay in one fold), then ``select_ensemble``'s rule on their
    out-of-fold predictions (every row predicted by the networks that never trained on it).

    ``candidates``: the configurations to choose among (one per trial, the best first:
    the groups of one structure train in the order of their first), or ``model``'s networks
    alone; ``size``: the most the model averages (the model's count). Why more than the
    searched ensemble: that one was chosen on the validation rows, and on a small table
    those are few; the out-of-fold score is a score of every row, and chose better among
    configurations (bench/README.md, "Choosing on one split or by cross-validation").

    Its ``info`` keeps the searched members' trials and scores and adds the bag's members
    (``bag_members``: trial, validation score, out-of-fold score), the out-of-fold score of
    their average (``bag_value``, the study's ``metric`` in the target's units) and its
    ``bag_seconds``. ``seconds``: the time it may take (None: no limit); it trains as many
    epochs as fit. A configuration whose fold networks the time cut short of its searched
    epochs, or one of which diverged, is not a candidate (``bag_networks``); if none is
    left, the model stays as searched and ``info["bag"]`` says so."""
    began = time.monotonic()
    deadline = None if seconds is None else began + seconds
    task = model.preprocessor.task_
    candidates = distinct_configurations(candidates or _model_candidates(model))
    size = len(model.networks) if size is None else size
    fold = assign_folds(y, task, folds, seed, groups)
    rows = [np.flatnonzero(fold == k) for k in range(folds)]
    w = None if weight is None else weight.numpy()
    scorers = [ValidationScorer(metric, y[r].numpy(), task, target_std, target_mean,
                                None if w is None else w[r]) for r in rows]
    bagged = bag_networks([c.network for c in candidates], X, y, fold, folds, scorers,
                          seed=seed + BAG_OFFSET, weight=weight, deadline=deadline)
    everywhere = ValidationScorer(metric, y.numpy(), task, target_std, target_mean, w)
    # each configuration bagged whole, as a candidate scored on every row out of fold
    scored = []
    with torch.no_grad():
        for candidate, per_fold in zip(candidates, bagged):
            if per_fold[0] is None:
                continue
            oof = _out_of_fold(per_fold, X, rows)
            value = everywhere(oof)
            if math.isfinite(value):
                scored.append(KeptNetwork(value, candidate.trial, candidate.network, oof))
    if not scored:
        return CaviarModel(model.preprocessor, model.networks,
                           {**model.info, "bag": NOT_BAGGED})
    chosen, _ = select_ensemble(scored, y, task, size, everywhere)
    searched = {c.trial: c.value for c in candidates}
    fold_networks = {c.trial: per_fold for c, per_fold in zip(candidates, bagged)}
    networks = [n for c in chosen for n in fold_networks[c.trial]]
    average = torch.stack([c.val_outputs for c in chosen]).mean(dim=0)
    info = {**model.info, "trained_on": "bag", "folds": folds,
            "bag_rows": int(len(y)), "bag_candidates": len(candidates),
            "bag_networks": len(networks), "bag_value": everywhere(average),
            "bag_members": [{"trial": c.trial, "value": searched[c.trial],
                             "bag_value": c.value} for c in chosen],
            "bag_epochs": [[int(n.epoch[0]) for n in fold_networks[c.trial]]
                           for c in chosen],
            "bag_seconds": round(time.monotonic() - began, 3)}
    return CaviarModel(model.preprocessor, networks, info)


def distinct_configurations(networks: Sequence[KeptNetwork]) -> list[KeptNetwork]:
    """``networks`` in their order, one per trial: a new initialization of a trial's
    configuration (``train_seeds``) is that configuration again."""
    distinct: dict[int, KeptNetwork] = {}
    for k in networks:
        distinct.setdefault(k.trial, k)
    return list(distinct.values())


def _model_candidates(model: CaviarModel) -> list[KeptNetwork]:
    """``model``'s networks as candidates (their trials and scores from its ``info``, else
    their places)."""
    members = model.info.get("members") or [{}] * len(model.networks)
    return distinct_configurations([
        KeptNetwork(m.get("value", math.nan), m.get("trial", i), network, torch.empty(0))
        for i, (m, network) in enumerate(zip(members, model.networks))])


def _out_of_fold(per_fold: Sequence[Population], X: torch.Tensor,
                 rows: Sequence[np.ndarray]) -> torch.Tensor:
    """One configuration's predictions for every row, each by the fold network that held
    its fold out."""
    first = per_fold[0].predict(X[rows[0]])[0]
    oof = torch.zeros((len(X),) + tuple(first.shape[1:]), dtype=first.dtype)
    oof[rows[0]] = first
    for k in range(1, len(rows)):
        oof[rows[k]] = per_fold[k].predict(X[rows[k]])[0]
    return oof
