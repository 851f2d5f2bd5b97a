"""Training one network on prepared tensors, with early stopping: the loop behind the
estimators, ``fit_model`` and the tuner's refit. (Panda has its own loop: it checkpoints and
takes changes between epochs.)"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .engine import InputLayout, Population
from .engine.threads import OneThreadWhenBusy
from .hyperparams import structure_key
from .metrics import ValidationScorer, validation_score


def train_network(X: torch.Tensor, y: torch.Tensor, task: str,
                  hyperparameters: Mapping[str, Any], n_classes: int | None = None,
                  X_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                  seed: int = 0, patience: int | None = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None,
                  weight: torch.Tensor | None = None,
                  scorer: ValidationScorer | None = None,
                  device: str | torch.device = "cpu",
                  inputs: InputLayout | None = None) -> Population:
    """Train one network for ``hyperparameters["epochs"]`` epochs on ``device`` ("cpu",
    "cuda" or "auto"; the data is moved there once).

    With validation data and ``patience``, training stops when the validation score has not
    improved for ``patience`` epochs and the network of the best epoch is returned (its
    history still holds every epoch run). ``weight``: the training rows' loss weights (mean
    1); ``scorer``: the validation score (None: the validation loss), e.g. a weighted one.
    ``inputs``: what X's columns are (``PreparedTable.inputs``; None: all dense features).
    """
    network = Population(task, inputs or X.shape[1], [dict(hyperparameters)],
                         n_classes=n_classes, seed=seed, device=device)
    X, y, X_val, y_val = network.to_device(X, y, X_val, y_val)
    threads = OneThreadWhenBusy()
    try:
        return _train(network, X, y, task, X_val, y_val, patience, on_epoch, weight, scorer,
                      threads)
    finally:
        threads.restore()  # one on a busy machine while it trained


def _train(network: Population, X: torch.Tensor, y: torch.Tensor, task: str,
           X_val: torch.Tensor | None, y_val: torch.Tensor | None, patience: int | None,
           on_epoch: Callable[[dict[str, Any]], None] | None, weight: torch.Tensor | None,
           scorer: ValidationScorer | None, threads: OneThreadWhenBusy) -> Population:
    """``train_network``'s epochs; on one thread once other processes keep the cores busy
    (``threads``)."""
    best, best_score, since_best = None, float("inf"), 0
    while bool(network.trainable.any()):
        record = network.fit_epoch(X, y, X_val, y_val, weight=weight)[0]
        threads.check()
        if patience is not None and X_val is not None:
            score = _score(network, record, task, X_val, scorer)
        if on_epoch is not None:
            on_epoch(record)
        if network.diverged[0]:
            break
        if network.structure.exact:
            break  # its first epoch is the minimizer: later ones would solve the same again
        if patience is None or X_val is None:
            continue
        if score < best_score:
            best, best_score, since_best = network.export_member(0), score, 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best is not None:
        best.history = [list(network.history[0])]
        return best
    return network


def _score(network: Population, record: dict[str, Any], task: str, X_val: torch.Tensor,
           scorer: ValidationScorer | None) -> float:
    """The epoch's validation score as a loss (lower is better); a chosen or weighted metric
    is added to the record, as the tuner adds it."""
    if scorer is None or scorer.default:
        return validation_score(record, task)
    value = scorer(network.predict(X_val)[0])
    weighted = "weighted_" if scorer.weight is not None else ""
    record[f"val_{weighted}{scorer.metric.name}"] = value
    return scorer.metric.loss(value) if value == value else float("inf")  # NaN: no better


def stop_at_epochs(population: Population, stops: Sequence[int]) -> None:
    """Stop each member that has run ``stops[k]`` epochs: its ``epochs`` then reads the epochs
    it ran (so it trains no more; its learning-rate schedule, over the epochs it had, is the
    one it ran)."""
    done = population.epoch.tolist()
    for k, stop in enumerate(stops):
        if done[k] >= stop and population.hyperparameters[k]["epochs"] > done[k]:
            population.set_hyperparameters(k, epochs=done[k])


def refit_networks(networks: Sequence[Population], X: torch.Tensor, y: torch.Tensor,
                   epochs: Sequence[int], seed: int = 0,
                   weight: torch.Tensor | None = None) -> list[Population]:
    """Train the configurations of ``networks`` (one-member populations) afresh on ``X``
    and ``y`` for ``epochs[i]`` epochs each, with no validation rows; returns the new
    networks in the same order.

    Vectorized: the members that share a structure train as one ``Population``. Each keeps
    its learning-rate schedule over its own ``epochs`` hyperparameter (a cosine decay is the
    one the search ran, cut at the chosen epoch), so it retraces the searched trajectory on
    more rows; its ``epochs`` then reads the epochs it ran."""
    if len(epochs) != len(networks):
        raise ValueError(f"one epoch count per network: {len(networks)} networks, "
                         f"{len(epochs)} epoch counts")
    groups: dict[tuple, list[int]] = {}
    for i, network in enumerate(networks):
        groups.setdefault(structure_key(network.hyperparameters[0]), []).append(i)
    out: list[Population | None] = [None] * len(networks)
    first = networks[0]
    for g, members in enumerate(groups.values()):
        stops = [max(1, int(epochs[i])) for i in members]
        population = Population(first.structure.task, networks[members[0]].inputs,
                                [networks[i].hyperparameters[0] for i in members],
                                n_classes=first.n_classes, seed=seed + g, device=first.device)
        Xd, yd, wd = population.to_device(X, y, weight)
        while bool(population.trainable.any()):
            population.fit_epoch(Xd, yd, weight=wd)
            stop_at_epochs(population, stops)
        for k, i in enumerate(members):
            out[i] = population.export_member(k)
    return [n for n in out if n is not None]
