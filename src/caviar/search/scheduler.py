"""The scheduler: many Optuna trials trained at once in populations (the caviar approach).

How trials meet populations (slot refill):

- Up to ``population`` trials run at once. Trials that share the structural hyperparameters
  (depth, width, activation, batch norm, batch size) train as members of one ``Population``.
- A *group* is one population with one structure. A new group starts from a leader trial
  that the sampler draws freely; the trials that fill and refill its slots are asked with the
  leader's structural values fixed (``study.enqueue_trial``), and the sampler draws the rest.
  After a group has taken ``trials_per_structure`` trials (2 × population by default) it stops
  taking new ones and drains, and the next free slot starts a new group from a new leader.
  A leader whose structure matches a draining group rejoins and reopens it instead, so that
  once coarse-to-fine has narrowed the structures, populations stay full rather than
  splitting into several part-empty populations of one shape.
- Coarse-to-fine's coarse round is ``2 × trials_per_structure`` trials (``tune`` sets it), so
  that it spans at least two structures: with one structure per group, a coarse round of one
  group's size saw a single structure and then narrowed every structural choice to it. More
  structures in the coarse round cost more than they found, since populations of a few
  survivors vectorize little. With the grid sampler, which must place every grid point
  itself, each trial joins whichever group matches its structure.
- A new study's first trials are known-good networks (``samplers.warm_start``: the
  estimators' network, TabM-mini, a RealMLP-like one, and the estimators' network on
  RealMLP's schedule at two σ of its PLR frequencies, which alone trains to the end of it;
  for a regression, the linear regression solved exactly at three λ, and on the numeric
  columns' periodic features at four), each alone in a group of its own that no other trial
  joins (the solved ones of one structure share one: one XᵀX for all their λ; so do the two
  on RealMLP's schedule: a member more costs less than a group's turns), and never pruned.
  Shared with 15 random draws, in a short budget each got a sixteenth of the epochs the
  estimator gives its one network, and a 10 s tune scored 1.185x the defaults; alone, with
  groups taking turns by time, it trains about as fast as the estimator's network
  (bench/README.md, "A 10-second tune"). Where its turns would not end the estimators'
  network within the time budget (a short tune, a large table), it goes before the other
  groups (``Tuner.behind``); so do the two on RealMLP's schedule, whose last epochs are
  what they are there for, where going first ends their schedule and their turns would not.
- Groups take turns by time, not by epochs: the next epoch goes to the group that has used
  the least estimated time (``epoch_cost``; a new group starts level with the least), so a
  structure whose epochs cost 5× as much gets the same seconds as the others, not 5× as
  many, and cheap structures are not held back by a slow one. With a time budget a group
  takes members only while its epoch stays within ``EPOCH_SHARE`` of it, so that the turns
  stay small: the other trials of a costly structure train in sibling groups of the same
  structure, whose quota and time count together.
- Every epoch each running trial reports its validation score to Optuna; the pruner (ASHA or
  median) may stop it (not a warm-start network). When a trial completes, is pruned or
  diverges, its slot is refilled in place at the epoch boundary
  (``Population.replace_members``: fresh weights, no copy of the other members) with a new
  trial from the sampler, so the vectorized batch stays full.
- The score is the validation loss, or the metric the study was given (``caviar.metrics``:
  AUC, F1, MAE, ..., from the validation predictions, maximized or minimized). Every member
  remembers its weights at its best epoch (``Population.remember_best``); a completed trial's
  value is that epoch's score, and that network is the one offered to the kept model
  (``ensemble.KeptNetworks``).
- Each trial is created in the study's storage when it is asked (``study.shared``: the
  storage numbers it); each finished trial goes to the archive (``study.archive``), which
  updates that storage trial behind the tuner's back, with its network as an Optuna artifact
  when it is a candidate for the model; the scheduler slows down when the writer falls
  behind. At every refill the working copy takes in other workers' finished trials, so many
  workers tune one study (``caviar.workers``).

The measurements behind these choices are in bench/README.md, "Figures behind design choices".
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..data import PreparedTable
from ..engine import Population, resolve_device
from ..engine.losses import output_size
from ..engine.network import Structure, make_structure
from ..engine.threads import OneThreadWhenBusy
from ..explain import IMPORTANCE_REPEATS, IMPORTANCE_ROWS, ImportanceRows
from ..files import jsonable
from ..hyperparams import PATIENCE, resolve, structural_params, structure_key
from ..metrics import Metric, get_metric, in_target_units, validation_score
from ..model import CaviarModel
from .bagging import distinct_configurations
from .budget import (
    BAG_FACTOR,
    IMPORTANCE_SHARE,
    PREDICT_FACTOR,
    REFIT_FACTOR,
    SEED_SHARE,
    WRITER_TRIALS_PER_S,
    Budget,
    bag_declined,
    end_seconds,
    epoch_cost,
    prefix_costs,
    refit_cost,
    structure_epoch_cost,
)
from .ensemble import KeptNetwork, KeptNetworks, seed_epochs, train_seeds
from .samplers import AskTellGridSampler, QueuedTrial
from .scaling import ScalingChoice
from .space import Space
from .study import keys
from .study.archive import TrialArchive
from .study.artifacts import network_bytes
from .study.shared import SharedStudy

PRUNERS = ("asha", "median", "none")
WRITER_BACKLOG = 64  # journal lines (finished trials) the database writer may lag behind


@dataclass
class TuneProgress:
    """What a progress display shows; passed to ``on_progress`` after every epoch round."""

    done: int
    running: int
    pruned: int
    failed: int
    best_value: float | None
    metric: str
    direction: str
    elapsed: float
    time_budget: float | None
    trials_budget: int | None
    populations: int = 0


@dataclass
class _Group:
    """One population of trials sharing a structure.

    ``trials[i]`` is the trial member i trains, or None when that trial ended this epoch and
    the slot waits for ``fill`` to refill it (in place) or drop it. ``joining`` holds trials
    asked during a fill, placed in the population at its end (one tensor copy, not one per
    trial); a new group has no population until then."""

    key: tuple
    structure: dict[str, Any]
    shape: Structure  # the engine's structure of its members, for ``epoch_cost``
    population: Population | None = None
    trials: list[optuna.Trial | None] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    joining: list[tuple[optuna.Trial, dict]] = field(default_factory=list)
    taken: int = 0
    retired: bool = False
    cost: float = 0.0  # estimated seconds of training so far (``epoch_cost``)
    solo: bool = False  # a warm-start network alone: no other trial joins it
    first: bool = False  # the estimators' network: first while behind (``Tuner.behind``)
    full_schedule: bool = False  # a warm-start network that trains all its epochs
    numeric: str = ""  # its members' numeric scaling (the table's own written out)

    @property
    def running(self) -> int:
        return sum(t is not None for t in self.trials) + len(self.joining)

    @property
    def free_slots(self) -> list[int]:
        return [i for i, t in enumerate(self.trials) if t is None]


# A group's epoch, at the measured speed, may take at most this share of a time budget: the
# turns of fair time are epochs, and successive halving (rungs at 1, 3, 9, 27 epochs, a third
# going on) spends about 3 first epochs of a group to bring one member to the 27th, so at 1/20
# the budget holds several such rounds. Without it a 10 s tune on snmesp spent 6-8 s on one
# epoch of 30 networks, the warm-start ones waiting.
EPOCH_SHARE = 1 / 20


def structure_quota(population: int, trials_per_structure: int | None) -> int:
    """Trials a group takes before it drains: ``trials_per_structure``, by default
    2 × population."""
    return trials_per_structure or 2 * population


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner called ``name``: "asha" (successive halving: rungs at epochs 1, 3, 9, 27, a
    third goes on), "median" or "none"."""
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


# their population's seed: far from the search's groups (seed + 1000 × worker + group)
SEED_OFFSET = 1_000_003


class Tuner:
    """Drives an Optuna study with ask-and-tell, training its trials in populations."""

    def __init__(self, study: optuna.Study, space: Space, data: PreparedTable,
                 budget: Budget, population: int,
                 out: Path | None, seed: int, trials_per_structure: int | None = None,
                 on_progress: Callable[[TuneProgress], None] | None = None,
                 archive: TrialArchive | None = None, ensemble: int = 5,
                 saved: CaviarModel | None = None, shared: SharedStudy | None = None,
                 metric: Metric | None = None, device: str | torch.device = "cpu",
                 refit_rows: int = 0, warm: Sequence[QueuedTrial] = (),
                 seeds: int = 0, bag_folds: int = 0, report: bool = True,
                 scaling: ScalingChoice | None = None):
        """``study`` is the working study the sampler and pruner see (in memory);
        ``shared`` links it to the database study (None: in memory only), ``archive``
        writes each finished trial there (both or neither);
        ``ensemble``: how many networks the model averages at most; ``saved``: a resumed
        run's model, whose networks are kept again; ``metric``: the validation metric the
        study optimizes (None: the default loss), weighted by ``data.w_val`` when given;
        ``device``: where the populations train ("cpu", "cuda", "auto"). The tensors move
        there once; the kept networks come back to the CPU;
        ``refit_rows``: the rows the kept networks train on again after the search (0: none),
        whose estimated time the budget holds back (``bag_folds``: as a bag of that many
        folds, ``bagging.bag_model``); ``warm``: the first trials
        (``samplers.warm_start``), each the leader of its own group;
        ``seeds``: new initializations of the best network's configuration
        ``add_seeds`` trains after the search, whose estimated time the budget holds back;
        ``report``: whether the run's end writes the report (``end_seconds``);
        ``scaling``: the numeric scaling chosen by the warm start (``numeric="auto"``),
        which new structures take (None: the sampler draws it like any structural axis)."""
        self.device = resolve_device(device)
        self.study, self.space, self.pre = study, space, data.preprocessor
        self.data = on_device(data, self.device)
        self.archive, self.shared = archive, shared
        self.budget, self.capacity, self.out, self.seed = budget, population, out, seed
        self.trials_per_structure = structure_quota(population, trials_per_structure)
        self.refit_rows, self.bag_folds = refit_rows, bag_folds
        self.report = report  # whether the run's end writes the report (end_seconds)
        self._bag_declined = False  # the last estimate's verdict (refit_seconds)
        # _bag_plan's cache: the kept networks' version it was made of, and the plan
        self._bag_plan_of: tuple[tuple[int, int], list[KeptNetwork], list[float], int] | None = None
        self.seeds, self._seeding, self._seeds_declined = seeds, False, False
        self._improved_at = -math.inf  # the budget's clock when the best value last improved
        # PyTorch's threads while the search runs (one fewer while the writer catches up:
        # pace_writer; one once other processes keep the cores busy: share_busy_cores)
        self._threads, self._yielded = torch.get_num_threads(), False
        self._one_thread = OneThreadWhenBusy(skip_first=True)
        self._longest_epoch = 0.0  # seconds, measured: how far before its end the search stops
        self.warm = list(warm)
        self.ensemble = ensemble
        # seconds measured / seconds estimated (epoch_cost) over the epochs run after the
        # first (which pays for warming up): the speed of this machine now, which scales the
        # time held back for the end
        self._measured, self._estimated, self._warm = 0.0, 0.0, False
        # the first epoch's seconds / its estimated seconds: the only pace measured until a
        # second epoch ends (None before the first)
        self._warmup_pace: float | None = None
        # the end's permutation importance: its rows, and its estimated seconds
        self._importance_rows: ImportanceRows | None = None
        self._importance_s: float | None = None
        # an epoch trains on the training rows and predicts the validation rows (a forward
        # pass: about a third of a training step's arithmetic)
        self._cost_rows = len(self.data.X_train) + len(self.data.X_val) // 3
        self.on_progress = on_progress
        self.task = data.task
        self.n_classes = data.n_classes
        self.groups: list[_Group] = []
        self.free_asks = isinstance(study.sampler, AskTellGridSampler)
        self.metric = metric or get_metric(None, self.task)
        self.scorer = data.validation_scorer(self.metric)
        self.best_value = _best_value(study)
        self.kept = KeptNetworks(data.X_val, data.y_val, self.task, ensemble, self.scorer)
        if saved is not None:
            info = saved.info
            members = info.get("members") or [{"trial": info["trial"], "value": info["value"],
                                               "stopped": info.get("stopped")}]
            for m, network in zip(members, saved.networks):
                self.keep(network, int(m["trial"]), float(m["value"]), m.get("stopped"),
                          m.get("seed"))
            self.kept.seeds = sum(m.get("seed") is not None for m in members)
        # rewrite a saved model of more networks than this run's ensemble allows
        self.kept.changed = saved is not None and len(saved.networks) > (ensemble
                                                                         + self.kept.seeds)
        self._groups_made = 0
        # finished trials by state, counted here: filtering the study's trials for every ask
        # grows with the study (quadratic over a run)
        self.finished = {s: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        self.scaling = scaling
        for t in study.get_trials(deepcopy=False, states=tuple(self.finished)):
            self.finished[t.state] += 1
            self._see(t)

    # ---------------------------------------------------------------- slots

    @property
    def running(self) -> int:
        return sum(g.running for g in self.groups)

    def _started(self) -> int:
        """Trials of the study finished or running (every worker's, as last seen)."""
        return (self.shared.started if self.shared
                else sum(self.finished.values()) + self.running)

    def _ask(self, structure: dict[str, Any] | None, fixed: QueuedTrial | None = None
             ) -> tuple[optuna.Trial, dict] | None:
        """A new trial (``fixed``: a warm start's or a re-queued trial's parameters and user
        attributes), created in the storage; None if it failed at once or the study's trials
        budget is spent."""
        asking = (self.shared.asking(self.budget.trials) if self.shared
                  else contextlib.nullcontext(True))
        with asking as allowed:
            if not allowed:
                return None
            if fixed is not None:
                self.study.enqueue_trial(fixed.params, user_attrs=fixed.attrs(),
                                         skip_if_exists=False)
            elif structure:
                self.study.enqueue_trial(structure, skip_if_exists=False)
            trial = self.study.ask()
            try:
                # what the space draws, and a warm start's values of what it does not
                outside = trial.user_attrs.get(keys.OUTSIDE_SPACE) or {}
                params = resolve({**self.space.suggest(trial), **outside})
                # a network the table cannot hold (solver=exact on a classification, say)
                make_structure(self.task, self.data.inputs,
                               output_size(self.task, self.n_classes or 2), params)
            except ValueError as e:
                trial.set_user_attr(keys.FAILURE, f"invalid hyperparameters: {e}")
                self._create(trial)
                self._tell(trial, None, TrialState.FAIL)
                return None
            trial.set_user_attr(keys.HYPERPARAMETERS, jsonable(params))
            self._create(trial)
        return trial, params

    def _create(self, trial: optuna.Trial) -> None:
        if self.shared is not None:
            self.shared.create(trial, dict(trial.user_attrs))

    def refresh(self, force: bool = False) -> None:
        """Take in other workers' finished trials (the sampler and pruner see them)."""
        if self.shared is None:
            return
        for t in self.shared.refresh(force):
            self.finished[t.state] += 1
            self._see(t)
            if t.state == TrialState.COMPLETE and (self.best_value is None
                                                   or t.value < self.best_value):
                self.best_value = t.value

    def _leader_structure(self) -> dict[str, Any] | None:
        """What a new structure's first trial is asked with: the chosen numeric scaling
        (``numeric="auto"``), or nothing (the sampler draws every axis)."""
        return None if self.scaling is None or self.free_asks else self.scaling.fixed()

    def _see(self, trial: optuna.trial.FrozenTrial) -> None:
        """A finished trial, for the scaling's choice: once made, the groups of another
        scaling take no more trials (theirs finish), so new ones go to the chosen one."""
        if self.scaling is None or not self.scaling.see(trial):
            return
        # what the run chose, and from which trial on: the next trial's number (the
        # storage's, counting every worker's trials; else the study's)
        asked = (self.shared.count if self.shared
                 else len(self.study.get_trials(deepcopy=False)))
        self.study.set_user_attr(keys.SCALING, {
            "scaling": self.scaling.chosen, "from_trial": asked,
            "best": self.scaling.best()})
        for group in self.groups:
            if not group.solo and group.numeric != self.scaling.chosen:
                group.retired = True

    def _siblings(self, group: _Group) -> list[_Group]:
        """The groups of ``group``'s structure (itself included; a warm start's is alone):
        a structure whose epoch would take too long in one group trains in several."""
        if group.solo:
            return [group]
        return [g for g in self.groups if g.key == group.key and not g.solo]

    def _join(self, group: _Group, trial: optuna.Trial, params: dict) -> None:
        """``group``, or a sibling whose epoch fits another member (a new one if none does),
        takes the trial; the structure drains once its groups took ``trials_per_structure``."""
        if not self._fits_another(group):
            roomy = next((g for g in self._siblings(group) if self._fits_another(g)), None)
            if roomy is None:
                self._new_group(trial, params, sibling=True)  # which joins it
                return
            group = roomy
        group.joining.append((trial, params))
        group.taken += 1
        siblings = self._siblings(group)
        retired = sum(g.taken for g in siblings) >= self.trials_per_structure
        for g in siblings:
            g.retired = retired

    def _new_group(self, trial: optuna.Trial, params: dict, sibling: bool = False) -> _Group:
        structure = structural_params(trial.params)
        # it starts level with the group that has used the least time, so it does not take
        # every epoch until it has caught up with groups that ran long before it (a sibling
        # starts at none: its structure's time is its siblings' too)
        level = 0.0 if sibling else min((g.cost for g in self.groups), default=0.0)
        shape = make_structure(self.task, self.data.inputs,
                               output_size(self.task, self.n_classes or 2), resolve(params))
        group = _Group(structure_key(params), structure, shape, cost=level,
                       numeric=resolve(params)["numeric"] or self.pre.numeric)
        self.groups.append(group)
        self._join(group, trial, params)
        return group

    def _target(self) -> _Group | None:
        """The group the next trial should join: one with a free slot to refill in place,
        else the one still taking trials with the fewest; never a warm-start network's (it
        trains alone); None: start a new group."""
        open_groups = [g for g in self.groups if not (g.retired or g.solo)]
        waiting = [g for g in open_groups if len(g.free_slots) > len(g.joining)]
        if waiting:
            return waiting[0]
        return min(open_groups, key=lambda g: g.running) if open_groups else None

    def _fits_another(self, group: _Group) -> bool:
        """Whether the group's epoch with one more member, at the speed measured so far,
        stays within ``EPOCH_SHARE`` of the time budget (always without a time budget). A
        structure too costly for it still trains, in groups of one."""
        if self.budget.time_budget is None or not group.running:
            return True
        seconds = structure_epoch_cost(group.shape, self._cost_rows, group.running + 1)
        return seconds * self.speed <= EPOCH_SHARE * self.budget.time_budget

    def fill(self) -> None:
        """Refill free slots from the sampler (or re-queued trials of dead workers), at an
        epoch boundary."""
        self.refresh()
        while self.running < self.capacity and not self.budget.out_of_time():
            retry = self.shared.next_retry() if self.shared else None
            if retry is None and not self.budget.may_ask(self._started()):
                break
            fixed = (QueuedTrial.retried(*retry) if retry is not None
                     else self.warm.pop(0) if self.warm else None)
            group = None if self.free_asks or fixed else self._target()
            structure = (group.structure if group
                         else self._leader_structure() if fixed is None else None)
            asked = self._ask(structure, fixed=fixed)
            if asked is None:
                continue
            trial, params = asked
            key = structure_key(params)
            if trial.user_attrs.get(keys.WARM):  # a known-good network trains alone (see
                # the module's notes), but solved ones share, and so do full-schedule ones
                full_schedule = bool(trial.user_attrs.get(keys.FULL_SCHEDULE))
                sharing = self._warm_sharing(key, full_schedule)
                if sharing is not None:
                    sharing.joining.append((trial, params))
                    continue
                group = self._new_group(trial, params)
                group.solo, group.first = True, bool(trial.user_attrs.get(keys.FIRST))
                group.full_schedule = full_schedule
                continue
            if group is None:  # a leader (or any grid point): join a group of its shape,
                # reopening a draining one (its few survivors fill up again)
                group = next((g for g in self.groups if g.key == key and not g.solo), None)
                if group is not None and group.retired and not self.free_asks:
                    for g in self._siblings(group):
                        g.taken, g.retired = 0, False
            if group is not None and group.key == key:
                self._join(group, trial, params)
            else:  # a new structure (or the space changed it, e.g. a conditional)
                self._new_group(trial, params)
        if self.shared is not None:
            self.shared.flush()  # the trials asked here, created in one transaction
        for group in list(self.groups):
            self._settle(group)

    def _warm_sharing(self, key: tuple, full_schedule: bool) -> _Group | None:
        """The warm start's group of structure ``key`` asked in this fill that a warm network
        joins, if any. Solved networks (``solver="exact"``) share one, so that one XᵀX serves
        every λ (``exact.least_squares``), and each is the one epoch it would be alone.
        Full-schedule ones share one too (the decayed network at σ = 0.1 and 1): a member
        more costs less than a group's turns, and both train every epoch of it."""
        return next((g for g in self.groups if g.solo and g.key == key and g.population is None
                     and (g.shape.exact or (full_schedule and g.full_schedule))), None)

    def _settle(self, group: _Group) -> None:
        """Place the joining trials (free slots first, in place; then appended) and drop the
        slots left free."""
        joining, group.joining = group.joining, []
        now = time.monotonic()
        params = [p for _, p in joining]
        if group.population is None:
            group.population = Population(
                self.task, self.data.inputs, params, n_classes=self.n_classes,
                seed=self.seed + self._groups_made, device=self.device)
            self._groups_made += 1
            group.trials = [t for t, _ in joining]
            group.started = [now] * len(joining)
            return
        free = group.free_slots
        refill = min(len(free), len(joining))
        if refill:
            group.population.replace_members(free[:refill], params[:refill])
            for slot, (trial, _) in zip(free, joining):
                group.trials[slot], group.started[slot] = trial, now
        if len(joining) > refill:
            group.population.add_members(params[refill:])
            group.trials += [t for t, _ in joining[refill:]]
            group.started += [now] * (len(joining) - refill)
        self._drop(group, group.free_slots)

    # ---------------------------------------------------------------- epochs

    def score(self, record: dict[str, Any]) -> float:
        return validation_score(record, self.task, self.data.target_std)

    def epoch_scores(self, pop: Population, records: Sequence[dict | None]) -> list[float]:
        """Each member's validation score this epoch, in the metric's own units (NaN for
        members that did not train). The default loss is read from the records; another
        metric (or weighted validation rows) needs the predictions, one more forward pass,
        and is added to the records (so the curves and the report show it)."""
        if self.scorer.default:
            return [self.score(r) if r is not None else math.nan for r in records]
        values = self.scorer.members(pop.predict(self.data.X_val))
        key = self.metric_key
        for record, value in zip(records, values):
            if record is not None:
                record[key] = value
        return [v if r is not None else math.nan for r, v in zip(records, values)]

    @property
    def metric_key(self) -> str:
        """The history key of the score: "val_log_loss", "val_auc", "val_weighted_rmse"."""
        weighted = "weighted_" if self.scorer.weight is not None else ""
        return f"val_{weighted}{self.metric.name}"

    def run_epoch(self, group: _Group, until: float | None = None) -> None:
        """One epoch of the group's population (cut short at ``until``: ``paced_epoch``);
        report, prune, complete. Slots whose trial ended are left free (None) for ``fill``."""
        d, pop = self.data, group.population
        records = pop.fit_epoch(d.X_train, d.y_train, d.X_val, d.y_val, **self._weight,
                                until=until)
        scores = self.epoch_scores(pop, records)
        # members remember their best epoch by a loss (lower is better): −AUC for AUC
        pop.remember_best(torch.tensor([self.metric.loss(v) for v in scores]))
        for slot, record in enumerate(records):
            trial = group.trials[slot]
            if record is None:  # reached its epochs earlier; should not stay
                group.trials[slot] = None
                continue
            epoch, value = record["epoch"], scores[slot]
            if pop.diverged[slot] or not math.isfinite(value):
                self._finish(group, slot, TrialState.FAIL,
                             failure=pop.failure[slot]
                             or f"diverged at epoch {epoch}: validation score {value}")
            else:
                trial.report(value, epoch)
                # a warm-start network ends as the estimators' early stopping ends theirs:
                # PATIENCE epochs without a better validation score (on a small table it
                # trains their hundreds of epochs, and most of them can be past its best),
                # unless it trains to the end of its schedule (samplers.FULL_SCHEDULE)
                stalled = (group.solo and not group.full_schedule
                           and epoch - int(pop.best_epoch[slot]) >= PATIENCE)
                if epoch >= pop.hyperparameters[slot]["epochs"] or stalled:
                    # the value of the network kept: the trial's best epoch
                    self._finish(group, slot, TrialState.COMPLETE,
                                 value=self.metric.natural(float(pop.best_score[slot])))
                elif not group.solo and trial.should_prune():
                    # a warm-start network is never pruned: a known-good configuration that
                    # learns slowly (the defaults: log-loss 2.05 after digits' first epoch)
                    # is what a short tune must not lose to the estimators' defaults
                    self._finish(group, slot, TrialState.PRUNED)

    def _drop(self, group: _Group, slots: Sequence[int]) -> None:
        if not slots:
            return
        if len(slots) == group.population.size:
            self.groups.remove(group)
            return
        group.population.remove_members(slots)
        for slot in sorted(slots, reverse=True):
            del group.trials[slot]
            del group.started[slot]

    def _finish(self, group: _Group, slot: int, state: TrialState, value: float | None = None,
                failure: str | None = None, stopped: str | None = None) -> int:
        """Finish the trial in ``slot``; returns its number in the database."""
        trial = group.trials[slot]
        pop = group.population
        trial.set_user_attr(keys.CURVE, [in_target_units(r, self.data.target_std)
                                          for r in pop.history[slot]])
        trial.set_user_attr(keys.DURATION_S, round(time.monotonic() - group.started[slot], 3))
        if failure:
            trial.set_user_attr(keys.FAILURE, failure)
        if stopped:
            trial.set_user_attr(keys.STOPPED, stopped)
        network, best = None, math.nan
        if state != TrialState.FAIL and not pop.diverged[slot]:
            # its best epoch's network (a pruned trial's too: judged by the same score)
            best = self.metric.natural(float(pop.best_score[slot]))
            network = self.candidate(trial, pop, slot, best, stopped)
        number = self._tell(trial, value if state == TrialState.COMPLETE else None, state,
                            network)
        group.trials[slot] = None
        if network is not None:
            self.keep(network, number, best, stopped)
        return number

    def candidate(self, trial: optuna.Trial, pop: Population, slot: int, value: float,
                  stopped: str | None) -> Population | None:
        """The best-epoch network of ``slot`` (validation score ``value``), exported only if
        the kept model wants it, its value recorded in ``trial``'s ``network`` attribute
        (with ``_tell`` it goes to the study as the trial's artifact); else None."""
        if not self.kept.wants(value):
            return None
        network = pop.export_member(slot, at_best=True)
        trial.set_user_attr(keys.NETWORK, {"value": value, "epoch": int(network.epoch[0]),
                                           "stopped": stopped})
        return network

    def _tell(self, trial: optuna.Trial, value: float | None, state: TrialState,
              network: Population | None = None) -> int:
        """Finish ``trial`` in the working study and journal it for the storage (with its
        network, a candidate for the model); returns its storage number (the number users
        see)."""
        frozen = self.study.tell(trial, value, state=state)
        self.finished[state] += 1
        self._see(frozen)
        if self.shared is None:
            return frozen.number
        trial_id, number = self.shared.finish(trial)
        if self.archive is not None:
            line = self.archive.put(frozen, trial_id, number,
                                    None if network is None else network_bytes(network))
            self.shared.journaled(line, trial_id)
        return number

    def keep(self, network: Population, number: int, value: float,
             stopped: str | None = None, seed: int | None = None) -> None:
        """Offer a trained network (trial ``number``, validation score ``value``; ``seed``: a
        new initialization of its configuration) to the kept model's candidates, on the CPU
        (the model files, the artifacts and the ensemble's validation predictions are made
        there)."""
        self.kept.add(network.to("cpu"), number, value, stopped, seed)
        if self.best_value is None or (self.metric.loss(value)
                                       < self.metric.loss(self.best_value)):
            self.best_value = value
            self._improved_at = self.budget.elapsed

    def model(self) -> CaviarModel:
        """The model: the kept networks that ``select_ensemble`` chooses, averaged."""
        return self.kept.model(self.pre, self.study.study_name)

    def save_model(self) -> None:
        """Write the model to ``OUT/model``, if the kept networks changed since the last
        write."""
        if self.out is None or not self.kept.changed or not self.kept.networks:
            return  # a worker of many: the coordinator builds the model from the study
        self.model().save(self.out / "model")
        self.kept.changed = False
        self._importance_s = None  # timed again on the new model

    def stop_running(self, reason: str) -> None:
        """End every running trial (the budget ran out): pruned at its last report. Their
        best-epoch networks are candidates for the model like any other (trained networks
        judged on the validation rows), so a short budget still leaves the best it trained."""
        for group in list(self.groups):
            for slot, trial in enumerate(group.trials):
                if trial is not None:
                    self._finish(group, slot, TrialState.PRUNED, stopped=reason)
            self.groups.remove(group)

    def save_study_state(self) -> None:
        """The seconds spent and the sampler's study attributes (coarse-to-fine boxes), in
        the archive, so that a resumed run continues the budget and the rounds."""
        self.study.set_user_attr(keys.ELAPSED_S, round(self.budget.elapsed, 3))
        if self.archive is not None:
            self.archive.put_study_attrs(self.study.user_attrs)

    def progress(self) -> TuneProgress:
        counts = self.finished
        return TuneProgress(
            done=counts[TrialState.COMPLETE], running=self.running,
            pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL],
            best_value=self.best_value, metric=self.study.user_attrs.get(keys.METRIC, ""),
            direction=self.metric.direction, elapsed=self.budget.elapsed,
            time_budget=self.budget.time_budget, trials_budget=self.budget.trials,
            populations=len(self.groups))

    def pace_writer(self) -> None:
        """Keep the archive's writer process from falling far behind. It runs at a lower
        priority than training, which is best while spare CPU time lets it keep up; when
        training keeps every core busy its backlog grows (and would be written after the
        budget, at the end), so then PyTorch gives up a thread until the writer has caught
        up, or on one thread the tuner waits for it."""
        if self.archive is None:
            return
        backlog = self.archive.backlog
        # on one thread PyTorch has none to give up, and the writer (niced) gets next to no
        # CPU time beside training: wait for it as soon as it lags (a 10 s tune of a small
        # table on one core had written nothing after 2.8 s, and held the backlog back)
        if backlog > (4 if self._threads > 1 else 1) * WRITER_BACKLOG:
            # more than the writer can do beside training (~30 trials/s at most): wait for it
            # here, inside the budget, rather than after the budget at the end
            while (self.archive.backlog > WRITER_BACKLOG and self.archive.writing
                   and not self.budget.out_of_time()):
                time.sleep(0.02)
            backlog = self.archive.backlog
        if backlog > WRITER_BACKLOG and not self._yielded:
            torch.set_num_threads(max(1, self._threads - 1))
            self._yielded = True
        elif backlog < WRITER_BACKLOG // 4 and self._yielded:
            torch.set_num_threads(self._threads)
            self._yielded = False

    @property
    def _weight(self) -> dict[str, Any]:
        """The training rows' weights for ``fit_epoch``, when the study has them."""
        return {} if self.data.w_train is None else {"weight": self.data.w_train}

    def share_busy_cores(self) -> None:
        """Train on one thread from now on once other processes keep the cores busy (the
        main thread waits for a core: ``engine.threads``), and record when in the study."""
        share = self._one_thread.check()  # None on one thread already
        if share is not None:
            self._threads, self._yielded = 1, False
            self.study.set_user_attr(keys.BUSY, {"elapsed_s": round(self.budget.elapsed, 3),
                                                 "wait_share": round(share, 3)})

    def run(self) -> None:
        """The search, on the threads it finds (one fewer while the writer lags behind); on
        one from the moment other processes keep the cores busy, to the end of the run (its
        final model and importance predict on them too; ``tune`` gives the caller's back)."""
        self._threads, self._yielded = torch.get_num_threads(), False
        # share_busy_cores' windows start here; the first holds the writer's own start
        self._one_thread = OneThreadWhenBusy(skip_first=True)
        try:
            self._run()
        finally:
            torch.set_num_threads(self._threads)

    def _run(self) -> None:
        last_saved = time.monotonic()
        self.fill()
        while self.groups or self._others_running():
            if not self.groups:  # wait for other workers: a dead one's trials come back
                time.sleep(0.5)
                self._beat()
                self.fill()
                continue
            # None: no group's epoch would end within the budget
            if self.train_next_epoch() is None or self.budget.out_of_time():
                self.stop_running(self.budget.reason)
            else:
                self.fill()
            if time.monotonic() - last_saved > 2.0 or not self.groups:
                self.save_study_state()
                self.save_model()
                last_saved = time.monotonic()
            self.pace_writer()
            self.share_busy_cores()
            self._beat()
            if self.on_progress is not None:
                self.on_progress(self.progress())

    def train_next_epoch(self) -> _Group | None:
        """Train one epoch of the group whose turn it is, and return it; None when no
        group's epoch would end within the time budget (nothing trained).

        Fair time, not fair epochs: the turn goes to the structure that has used the least
        (estimated) time, its groups taken together, and among them to the group that has,
        so a structure 5× as costly per epoch gets the same seconds, not 5× as many, and
        cheap structures are not held back by a slow one. Near the budget's end, when that
        group's epoch would end past it, the next group in that order whose epoch still fits
        trains instead, so the last seconds are not left unused. Ahead of that order: the
        estimators' network, while its turns would not end it in time (``behind``)."""
        spent = {id(g): sum(s.cost for s in self._siblings(g)) for g in self.groups}
        behind = {id(g): self.behind(g) for g in self.groups}
        for group in sorted(self.groups, key=lambda g: (not behind[id(g)], spent[id(g)],
                                                        g.cost)):
            cost = self.paced_epoch(group.population, partial(self.run_epoch, group))
            if cost is not None:
                group.cost += cost
                return group
        return None

    def behind(self, group: _Group) -> bool:
        """Whether the estimators' network (``group.first``), or the warm start's networks
        that train to the end of their schedule (``group.full_schedule``), taking one turn in
        as many as there are groups, would not end their epochs within the time budget, at
        the speed measured so far: then their epochs go before every other group's, so that
        a short tune holds as much of the first as fits, and the others' last epochs, where
        their decayed rate makes the fine fit they are there for. (Always first, the
        estimators' network steered a minute's coarse-to-fine towards its own costly
        structures: bench/README.md, "The estimators' network first".) A full-schedule group
        that could not end its schedule even alone goes by its turns: its end is out of
        reach, and the search's time is not given to it."""
        pop = group.population
        if not (group.first or group.full_schedule) or pop is None or (
                self.budget.time_budget is None):
            return False
        left = pop.hyperparameters[0]["epochs"] - int(pop.epoch[0])
        alone = left * epoch_cost(pop, self._cost_rows) * self.speed
        if group.full_schedule and not self.budget.fits(alone):
            return False
        return not self.budget.fits(alone * len(self.groups))

    def paced_epoch(self, population: Population, train: Callable[[float | None], None]
                    ) -> float | None:
        """Run ``train`` (one epoch of ``population``) unless, at the speed measured so far,
        it would end past the time budget with the end of the run held back; returns the
        epoch's estimated cost (``epoch_cost``), or None when it was not run.

        ``train(until)`` gets the time its epoch must end by (``Budget.deadline``), where it
        stops its minibatches: the first epoch runs unpriced (a model needs one), and on a
        large table one epoch can take longer than the budget (a 30 s tune of a million
        rows took 58 s, its one epoch 30 s)."""
        cost = epoch_cost(population, self._cost_rows)
        self.budget.reserve = self.end_reserve()  # the end of the run, at the speed so far
        if self._warm and not self.budget.fits(cost * self._pace()):
            return None  # this epoch, at the pace measured so far, would end past it
        started, until = time.monotonic(), self.budget.deadline()
        train(until)
        seconds = time.monotonic() - started
        # an epoch cut short is not a whole epoch's pace (and the search is at its end)
        whole = until is None or started + seconds < until
        if self._warm and whole:  # the first epoch pays for warming up
            self._measured += seconds
            self._estimated += cost
            self._longest_epoch = max(self._longest_epoch, seconds)
        elif whole:
            self._warmup_pace = seconds / max(cost, 1e-12)
        self._warm = True
        return cost

    def _pace(self) -> float:
        """Measured seconds per estimated second for the next epoch: the speed once an epoch
        after the first has ended; before, the first epoch's own (slower by its warming up,
        so cautious). On a large table an epoch can take a third of a budget, and the second
        started unchecked: 400,000 rows' tune of 30 s took 40 s."""
        if self._estimated or self._warmup_pace is None:
            return self.speed
        return self._warmup_pace

    @property
    def speed(self) -> float:
        """Measured seconds per estimated second of training so far (1 before any)."""
        if not self._estimated:
            return 1.0
        return min(max(self._measured / self._estimated, 0.1), 20.0)

    def end_reserve(self) -> float:
        """Estimated seconds from the end of the search to the end of the run: the kept
        networks' refit and the best one's seeds at this machine's measured speed; the rest
        of the end (the model, the test scores, each feature's permutation importance, the
        report of every trial); and the archive writer's backlog; those priced on an idle
        core slowed by the machine's other work (``Budget.slowdown``)."""
        trials = sum(self.finished.values()) + self.running
        # the seeds train after the search, once the writer has written every trial
        backlog = self.archive.backlog if self.archive is not None and not self._seeding else 0
        writing = backlog * self._writer_line_seconds()
        # what an idle core's seconds price is slowed as the machine's other work slows this
        # run (the refit and the seeds are at the measured speed, the importance timed:
        # already so); the writer's cautious prior rate is not (slowed, it once stopped a busy
        # small table's search 2.4 s into 15 s: 150 trials' backlog, the writer starting)
        slowdown = self.budget.slowdown()
        end = end_seconds(trials, self.report, slowdown)
        writing *= slowdown if self._writer_measured else 1.0
        rest = self.refit_seconds() + end + writing + self._importance_seconds()
        return rest + self._seeds_seconds(rest)

    @property
    def _writer_measured(self) -> bool:
        """Whether the archive writer's seconds a line are measured (``_writer_line_seconds``)."""
        return self.archive is not None and self.archive.written >= WRITER_BACKLOG

    def _writer_line_seconds(self) -> float:
        """The archive writer's CPU seconds a journal line: measured once it has written a
        transaction's worth (short trials' lines took under 1 ms, not the constant's 33 ms,
        which held back 5 s of a 10 s tune on a small table), else 1 / WRITER_TRIALS_PER_S."""
        if self._writer_measured:
            return self.archive.writer_seconds / self.archive.written
        return 1.0 / WRITER_TRIALS_PER_S

    def refit_seconds(self) -> float:
        """The kept model's refit after the search (``refit_rows``; a bag with
        ``bag_folds``: of ``bag_candidates``), estimated at this machine's measured speed.
        A bag whose searched ensemble alone would take more than ``BAG_SHARE`` of a time
        budget is declined: 0 (and ``bag_fits`` says so)."""
        if not self.refit_rows or not self.kept.networks:
            return 0.0
        if not self.bag_folds:
            networks = [k.network for k in self.kept.chosen()[0]]
            return REFIT_FACTOR * refit_cost(networks, self.refit_rows) * self.speed
        _, costs, chosen = self._bag_plan()
        fitting = self._bag_fitting(costs)
        self._bag_declined = fitting < chosen
        return 0.0 if self._bag_declined else BAG_FACTOR * costs[fitting - 1] * self.speed

    def bag_candidates(self) -> list[KeptNetwork]:
        """The configurations a bag trains and chooses among (``bagging.bag_model``): the
        searched ensemble's, then the other kept ones best first, as many as ``BAG_SHARE``
        of a time budget affords at the measured speed (all without a budget), and never
        fewer than the searched ensemble once the search held its time back. Why more than
        the ensemble: the bag scores each on every row out of fold, which chooses better
        than the validation rows did (bench/README.md, "Choosing on one split or by
        cross-validation")."""
        order, costs, chosen = self._bag_plan()
        return order[:max(chosen, self._bag_fitting(costs))]

    def _bag_fitting(self, costs: Sequence[float]) -> int:
        """How many of the bag's candidates, their prefixes costing ``costs``, fit
        ``BAG_SHARE`` of the time budget."""
        budget = self.budget.time_budget
        if budget is None:
            return len(costs)
        scale = BAG_FACTOR * self.speed
        return sum(1 for c in costs if not bag_declined(c * scale, budget))

    def _bag_plan(self) -> tuple[list[KeptNetwork], list[float], int]:
        """The bag's candidates in order (the searched ensemble's configurations, then the
        other kept ones best first, one per trial), the estimated cost of each prefix of
        them at unit speed, and how many of them the searched ensemble is; made again only
        once the kept networks changed (asked before every epoch)."""
        version = self.kept.version
        if self._bag_plan_of is None or self._bag_plan_of[0] != version:
            chosen = distinct_configurations(self.kept.chosen()[0])
            order = distinct_configurations([*chosen, *self.kept.networks])
            costs = prefix_costs([k.network for k in order], self.refit_rows, self.bag_folds)
            self._bag_plan_of = (version, order, costs, len(chosen))
        return self._bag_plan_of[1:]

    def bag_fits(self) -> bool:
        """Whether the bag goes ahead after the search: as the search last estimated it
        (whether it held the bag's time back), not as the networks its end adds would
        estimate it again (the running trials join the candidates when the budget stops
        them, and a costlier bag declined then would leave the held-back time unused)."""
        return bool(self.bag_folds and self.kept.networks and not self._bag_declined)

    def _seeds_seconds(self, rest: float) -> float:
        """The seeds ``add_seeds`` trains, estimated at this machine's speed: at most
        ``SEED_SHARE`` of a time budget (0 once they train, or once declined).

        Under a time budget the search gives its last seconds to the seeds only if it has
        stopped finding better networks: once the time left beyond the rest of the end
        (``rest``) is down to the seeds' time and one epoch, the seeds are declined if the
        best validation score improved within the last ``SEED_SHARE`` of the budget, and the
        search goes on to the end (a large table's search improves to its last minute; a
        small table's found its best early, and seeds of it pay more than more draws)."""
        if (not self.seeds or not self.kept.networks or self._seeding
                or self._seeds_declined):
            return 0.0
        best = self.kept.networks[0].network
        seconds = seed_epochs(best) * epoch_cost(best, self._cost_rows, self.seeds) * self.speed
        budget = self.budget.time_budget
        if budget is None:
            return seconds
        seconds = min(seconds, SEED_SHARE * budget)
        due = self.budget.elapsed + rest + seconds + self._longest_epoch >= budget
        if due and self.budget.elapsed - self._improved_at < SEED_SHARE * budget:
            self._seeds_declined = True  # the search still improves: the time is its own
            return 0.0
        return seconds

    def add_seeds(self) -> int:
        """Train the best kept network's configuration again from ``seeds`` new
        initializations (``ensemble.train_seeds``; under a time budget, as many as fit in
        the time left, each epoch paced like the search's) and offer them to the kept model.
        Returns how many were added."""
        if not self.seeds or not self.kept.networks or self._seeds_declined:
            return 0
        best = self.kept.networks[0]
        if best.network.structure.exact:
            return 0  # a solved network is the same from any initialization
        count = self.seeds
        self._seeding = True
        if self.budget.time_budget is not None:
            self.budget.reserve = self.end_reserve()
            fixed = epoch_cost(best.network, self._cost_rows, members=0)
            member = epoch_cost(best.network, self._cost_rows, 1) - fixed
            left = self.budget.time_budget - self.budget.elapsed - self.budget.reserve
            count = min(count, int((left / self.speed / seed_epochs(best.network) - fixed)
                                   / max(member, 1e-12)))
        if count < 1:
            return 0
        d = self.data

        def pace(population: Population, epoch: Callable[[], None]) -> bool:
            return self.paced_epoch(population, lambda until: epoch()) is not None

        seeded = train_seeds(best, d.X_train, d.y_train, d.X_val, count,
                             self.seed + SEED_OFFSET, self.scorer, weight=d.w_train,
                             device=self.device, pace=pace)
        for k, (network, value) in enumerate(seeded):
            self.kept.add(network, best.trial, value, seed=k + 1)
        self.kept.seeds += len(seeded)
        return len(seeded)

    def _importance_seconds(self) -> float:
        """The permutation importance at the end, estimated: its rows preprocessed once, then
        a shuffle per feature and repeat, each a prediction of the model and its score
        (``explain.ImportanceRows``: text columns, target encoders and the networks' widths
        make them vary many-fold by table), timed on the model of the moment, again whenever
        it has changed and been saved, and taken ``PREDICT_FACTOR`` times (the model at the
        end may average costlier networks); at most ``IMPORTANCE_SHARE`` of a time budget."""
        if not len(self.data.test):
            return 0.0  # no test rows: no importance
        if self._importance_s is None and self.kept.networks:
            if self._importance_rows is None:
                self._importance_rows = ImportanceRows(self.model(),
                                                       self.data.test.iloc[:IMPORTANCE_ROWS])
            else:
                self._importance_rows.model = self.model()
            rows = self._importance_rows
            shuffles = IMPORTANCE_REPEATS * len(rows.features)
            self._importance_s = PREDICT_FACTOR * (rows.prepare_seconds
                                                   + shuffles * rows.shuffle_seconds())
            if self.budget.time_budget is not None:
                self._importance_s = min(self._importance_s,
                                         IMPORTANCE_SHARE * self.budget.time_budget)
        return self._importance_s or 0.0

    def _beat(self) -> None:
        if self.shared is not None:
            self.shared.heartbeat(self.archive.written if self.archive else 0)

    def _others_running(self) -> bool:
        """Whether other workers still run (or wait to run) trials of the study, while the
        budget lasts: a dead worker's trials are re-queued once its heartbeats stop."""
        if self.shared is None or self.budget.out_of_time():
            return False
        self.shared.refresh()
        return self.shared.others > 0 or bool(self.shared.retries)


def on_device(data: PreparedTable, device: torch.device) -> PreparedTable:
    """``data`` with its tensors on ``device`` (the same tensors where they are there
    already): moved once, not every epoch. The raw rows and the preprocessor stay as they
    are."""
    moved = {name: getattr(data, name).to(device)
             for name in ("X_train", "y_train", "X_val", "y_val", "w_train", "w_val")
             if getattr(data, name) is not None}
    return dataclasses.replace(data, **moved)


def _best_value(study: optuna.Study) -> float | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(t.value for t in done) if done else None

