"""The kept model: the best trained networks so far, and the few of them the model averages.

Every finished trial's network at its best epoch is a candidate (completed trials, and pruned
or budget-stopped ones: trained networks judged by the same validation score). The tuner keeps
the ``4 × ensemble`` best (``KeptNetworks``); the model averages the predictions of up to
``ensemble`` of them, chosen by forward selection in rank order (``select_ensemble``). Why
average: the single best of a thousand trials, picked on a few hundred validation rows, is a
lucky one; averaging costs nothing more to train (bench/README.md, "Figures behind design
choices").

Once chosen, the members' configurations can be trained again on more rows (``refit_model``:
the training and validation rows, or every row), each for its best epoch count: the search
needed the validation rows to choose, the final networks need not leave them out.

When asked for (``tune(seed_ensemble=N)``), the best network's configuration is also trained
again from new initializations (``train_seeds``, a deep ensemble: Lakshminarayanan et al.
2017): the search's best is one draw of its weights, and networks of one configuration that
differ only in their start make errors that average out (on hpc_data 16 such seeds averaged
took log-loss from 0.486 to 0.448; TabM's 32 members in one network are the same idea). They
join the candidates and the selection above decides, with room for them beyond
``ensemble``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data import TablePreprocessor
from ..engine import Population
from ..engine.losses import prediction_losses
from ..metrics import ValidationScorer
from ..model import CaviarModel
from ..training import refit_networks


@dataclass
class KeptNetwork:
    """A trained network the model may average: its trial (database number), validation
    score, and predictions for the validation rows."""

    value: float
    trial: int
    network: Population
    val_outputs: torch.Tensor  # its predictions for the validation rows
    stopped: str | None = None  # why a running trial was stopped (the budget), if it was
    seed: int | None = None  # a new initialization of the trial's configuration (train_seeds)

    def describe(self) -> dict[str, Any]:
        out = {"trial": self.trial, "value": self.value, "epoch": int(self.network.epoch[0])}
        return (out | ({"stopped": self.stopped} if self.stopped else {})
                | ({"seed": self.seed} if self.seed is not None else {}))


def averaged_score(outputs: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """The validation loss of averaged predictions: log-loss of the mean class
    probabilities, or RMSE (standardized units) of the mean values."""
    mean = prediction_losses(outputs, y, task).mean()
    return float((2 * mean).sqrt() if task == "regression" else mean)  # L = ½(ŷ − y)²


def select_ensemble(kept: Sequence[KeptNetwork], y_val: torch.Tensor, task: str,
                    size: int, scorer: ValidationScorer | None = None
                    ) -> tuple[list[KeptNetwork], float]:
    """The networks the model averages, and the validation score of their average.

    Start from the best network; walk down the others by validation score; one joins unless
    averaging it in makes the validation loss worse by more than one standard error (of the
    row-by-row difference, with and without it); stop at ``size`` networks.

    Why the standard error: the best of a thousand networks has a lucky validation score, so
    requiring each network to *lower* it keeps out networks that are as good on new rows
    (it averaged fewer networks and tested worse), while a network truly worse than the
    others raises the loss on most rows and stays out. (Forward selection in rank order: each
    network is one yes-or-no decision, which the validation rows can afford; a free weighting
    of many networks would fit them instead.)

    ``scorer``: the study's metric (None: the default loss, as ``averaged_score`` gives it).
    A metric with per-row losses (log-loss, squared or absolute error, 0/1) keeps the rule
    on them (weighted when the validation rows are); one that does not decompose into rows
    (AUC, F1) has no row-by-row standard error, so a network joins when the metric of the
    average with it is at least as good as without it."""
    if scorer is not None and not scorer.default:
        return _select_by_metric(kept, size, scorer)
    ranked = sorted(kept, key=lambda k: k.value)
    chosen, total = [ranked[0]], ranked[0].val_outputs.clone()
    current = prediction_losses(total, y_val, task)  # the average's loss on each row
    for candidate in ranked[1:]:
        if len(chosen) >= size:
            break
        with_it = prediction_losses((total + candidate.val_outputs) / (len(chosen) + 1),
                                    y_val, task)
        if _joins(with_it - current):
            chosen.append(candidate)
            total, current = total + candidate.val_outputs, with_it
    return chosen, averaged_score(total / len(chosen), y_val, task)


def _joins(change: torch.Tensor) -> bool:
    """Worse by at most one standard error of the row-by-row ``change``."""
    change = torch.as_tensor(change, dtype=torch.float64)
    noise = change.std() / math.sqrt(len(change)) if len(change) > 1 else 0.0
    return bool(change.mean() <= noise)


def _select_by_metric(kept: Sequence[KeptNetwork], size: int, scorer: ValidationScorer
                      ) -> tuple[list[KeptNetwork], float]:
    """``select_ensemble`` for a chosen metric; the value is the metric's own (natural)."""
    metric = scorer.metric
    ranked = sorted(kept, key=lambda k: metric.loss(k.value))
    chosen, total = [ranked[0]], ranked[0].val_outputs.clone()
    current, rows = scorer(total), scorer.row_losses(total)
    for candidate in ranked[1:]:
        if len(chosen) >= size:
            break
        average = (total + candidate.val_outputs) / (len(chosen) + 1)
        value = scorer(average)
        if rows is not None:
            with_rows = scorer.row_losses(average)
            joins = _joins(with_rows - rows)
        else:  # no per-row losses: the metric of the average must not get worse
            joins = math.isfinite(value) and metric.loss(value) <= metric.loss(current)
        if joins:
            chosen.append(candidate)
            total, current = total + candidate.val_outputs, value
            rows = scorer.row_losses(total / len(chosen)) if rows is not None else None
    return chosen, scorer(total / len(chosen))


def model_from_kept(pre: TablePreprocessor, members: Sequence[KeptNetwork], study_name: str,
                    averaged: float, in_units: bool = False) -> CaviarModel:
    """The model averaging ``members`` (best first); ``info`` names the best one's trial and
    score, lists every member's, and the validation score of their average (``averaged``,
    from ``select_ensemble``; as ``ensemble_value``, regression RMSE in the target's units
    like every trial value; ``in_units``: it is already, as a chosen metric is)."""
    if pre.task_ == "regression" and not in_units:
        averaged *= pre.target_std_
    info = {**members[0].describe(), "study": study_name, "ensemble_value": averaged,
            "members": [k.describe() for k in members]}
    return CaviarModel(pre, [k.network for k in members], info)


class KeptNetworks:
    """The best networks trained so far, best first: at most ``4 × ensemble`` (1 when the
    model is the best network alone), each at its best epoch.

    ``changed`` says whether they changed since the model was last saved."""

    def __init__(self, X_val: torch.Tensor, y_val: torch.Tensor, task: str, ensemble: int,
                 scorer: ValidationScorer | None = None):
        """``scorer``: the study's metric; None, or the default, ranks by the validation loss
        (values are then losses: lower is better)."""
        self.X_val, self.y_val, self.task, self.ensemble = X_val, y_val, task, ensemble
        self.scorer = scorer
        self.loss = scorer.metric.loss if scorer is not None else (lambda v: v)
        self.size = 1 if ensemble == 1 else 4 * ensemble
        self.networks: list[KeptNetwork] = []
        self.seeds = 0  # new initializations of the best configuration added (train_seeds)
        self.changed = False
        self._chosen: tuple[tuple[int, int], list[KeptNetwork], float] | None = None
        self._added = 0  # networks added so far: what the cached choice was made of

    def wants(self, value: float) -> bool:
        """Whether a network of validation score ``value`` would be kept (not if it is no
        number: it never finished an epoch). Ask before exporting the network."""
        full = len(self.networks) >= self.size
        return math.isfinite(value) and not (
            full and self.loss(value) >= self.loss(self.networks[-1].value))

    def add(self, network: Population, trial: int, value: float,
            stopped: str | None = None, seed: int | None = None) -> None:
        """Keep ``network`` (one member, trial ``trial``, validation score ``value``; ``seed``:
        a new initialization of the trial's configuration) if it is among the best."""
        with torch.no_grad():
            outputs = network.predict(self.X_val)[0]
        self.networks.append(KeptNetwork(value, trial, network, outputs, stopped, seed))
        self.networks.sort(key=lambda k: self.loss(k.value))
        del self.networks[self.size:]
        self.changed = True
        self._added += 1

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever networks are added (or room made for the best one's seeds):
        what a choice made of them is cached under."""
        return self._added, self.seeds

    def chosen(self) -> tuple[list[KeptNetwork], float]:
        """The networks ``select_ensemble`` chooses (the seeds of the best configuration in
        room of their own beyond ``ensemble``) and their average's validation score; made
        again only once networks were added (the tuner asks before every epoch)."""
        key = self.version
        if self._chosen is None or self._chosen[0] != key:
            members, value = select_ensemble(self.networks, self.y_val, self.task,
                                             self.ensemble + self.seeds, self.scorer)
            self._chosen = (key, members, value)
        return self._chosen[1], self._chosen[2]

    def model(self, pre: TablePreprocessor, study_name: str) -> CaviarModel:
        """The model: the networks ``chosen`` says, averaged."""
        members, value = self.chosen()
        chosen = self.scorer is not None and not self.scorer.default
        return model_from_kept(pre, members, study_name, value, in_units=chosen)


def seed_epochs(network: Population) -> int:
    """The epochs a new initialization of ``network``'s configuration may train: twice those
    of ``network``'s best epoch, at most its ``epochs`` (its learning-rate schedule is the
    searched one; each seed keeps its own best epoch, which falls near the searched one)."""
    return max(1, min(int(network.hyperparameters[0]["epochs"]), 2 * int(network.epoch[0])))


def train_seeds(best: KeptNetwork, X: torch.Tensor, y: torch.Tensor, X_val: torch.Tensor,
                count: int, seed: int, scorer: ValidationScorer,
                weight: torch.Tensor | None = None, device: str | torch.device = "cpu",
                pace: Callable[[Population, Callable[[], None]], bool] | None = None
                ) -> list[tuple[Population, float]]:
    """``count`` networks of ``best``'s configuration from new initializations (``seed``),
    trained as one population on the same rows for ``seed_epochs`` epochs, each kept at its
    best validation score by ``scorer`` (the study's metric). ``pace(population, epoch)``
    runs one epoch if it fits the time left and says whether it did (None: always). Returns
    each trained network (on the CPU) and its validation score in the metric's units; none
    whose first epoch diverged or never ran."""
    network = best.network
    population = Population(network.structure.task, network.inputs,
                            [network.hyperparameters[0]] * count, n_classes=network.n_classes,
                            seed=seed, device=device)
    X, y, X_val, weight = population.to_device(X, y, X_val, weight)
    metric = scorer.metric

    def epoch() -> None:
        population.train_epoch(X, y, weight)
        values = scorer.members(population.predict(X_val))
        population.remember_best(torch.tensor([metric.loss(v) for v in values]))

    for _ in range(seed_epochs(network)):
        if pace is None:
            epoch()
        elif not pace(population, epoch):
            break
    trained = (population.best_epoch > 0) & torch.isfinite(population.best_score)
    return [(population.export_member(k, at_best=True).to("cpu"),
             metric.natural(float(population.best_score[k])))
            for k in range(count) if bool(trained[k])]


def refit_model(model: CaviarModel, X: torch.Tensor, y: torch.Tensor, trained_on: str,
                seed: int = 0, weight: torch.Tensor | None = None) -> CaviarModel:
    """The model of ``model``'s configurations trained afresh on ``X`` and ``y`` (the rows
    named by ``trained_on``, e.g. "train+valid"), each member for the epochs its searched
    network ran to its best validation score, all members of one structure as one population
    (``training.refit_networks``). A member whose refit diverges keeps its searched network.
    ``info`` keeps the searched members' trials and validation scores, and says which rows
    the networks trained on and for how many epochs."""
    epochs = [int(n.epoch[0]) for n in model.networks]
    refit = refit_networks(model.networks, X, y, epochs, seed=seed, weight=weight)
    networks = [old if bool(new.diverged[0]) else new
                for old, new in zip(model.networks, refit)]
    info = {**model.info, "trained_on": trained_on, "refit_rows": int(len(X)),
            "refit_epochs": epochs,
            "refit_diverged": sum(n is old for n, old in zip(networks, model.networks))}
    return CaviarModel(model.preprocessor, networks, info)
