"""The tuner: many Optuna trials trained at once in populations (the caviar approach).

How trials meet populations (the slot-refill scheduler):

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
- Coarse-to-fine's coarse round is ``2 × trials_per_structure`` trials, so that it spans at
  least two structures (with one structure per group, a coarse round of one group's size
  saw a single structure and then narrowed every structural choice to it). More structures
  in the coarse round cost more than they found: each is a population of its own, and
  populations of a few survivors vectorize little (measured on default and baseball).
  With the grid sampler, which must place every grid point itself, each trial joins whichever
  group matches its structure.
- Groups take turns by time, not by epochs: the next epoch goes to the group that has used
  the least estimated time (``epoch_cost``; a new group starts level with the least), so a
  structure whose epochs cost 5× as much gets the same seconds as the others, not 5× as
  many. Measured on wage (60 s, seeds 0, 1, 2): one epoch per group in turn spent 34 s of
  seed 0 in one 256 × 3 structure; fair time trained 1,036 / 930 / 1,482 trials instead of
  619 / 975 / 1,256, test RMSE 37.05 / 33.45 / 34.11 against 36.99 / 33.43 / 34.23.
- Every epoch each running trial reports its validation score to Optuna; the pruner (ASHA or
  median) may stop it. When a trial completes, is pruned or diverges, its slot is refilled
  in place at the epoch boundary (``Population.replace_members``: fresh weights, no copy of
  the other members) with a new trial from the sampler, so the vectorized batch stays full.
- The score is the validation loss: log-loss for classifiers, RMSE (in the target's units)
  for regression. Every member remembers its weights at its best epoch (early stopping's
  "restore best weights", ``Population.remember_best``); a completed trial's value is that
  epoch's score, and that network is the one kept.
- The model averages the predictions of up to ``ensemble`` (5 by default) trained networks;
  none is refit. The tuner keeps the ``4 × ensemble`` networks with the best validation
  scores: every finished trial's best-epoch network is a candidate (completed trials, and
  pruned ones or ones the budget stopped: trained networks judged by the same score). The
  model starts from the best and walks down the rest in order: a network joins unless
  averaging it in makes the validation loss of the average worse by more than one standard
  error of the row-by-row change (``select_ensemble``), until ``ensemble`` have joined.
  Why: picking the single best of a thousand trials by a few hundred validation rows picks
  a lucky one (measured: digits, seed 0, the best network 0.15 test log-loss, five averaged
  0.068); averaging costs nothing more to train; the rule keeps out networks that would
  dilute a much better one (wine: the best 0.07, the next 0.48), and the standard error
  lets in networks that only look worse than the lucky best (a stricter "must lower the
  score" rule averaged 1 to 5 networks, 3 typically, on digits and tested worse: 60 s, seeds
  0 to 5, mean test log-loss 0.0702 against 0.0663; baseball 5.757 RMSE under both).
  ``ensemble=1`` keeps the best network alone. The model is saved to ``OUT/model`` when the
  kept networks have changed (checked every 2 s, and at the end); its held-out test scores
  are computed at the end. (If a killed run left the best trial out of the saved model, its
  configuration is refit at the end and joins by the same rule.)
- The study lives in a database (SQLite in ``OUT/study.db`` by default), but the sampler and
  the pruner work on an in-memory copy: a database round trip for every report, prune check
  and suggestion cost more than the training itself (measured: two thirds of a 20 s run on
  ``wage``). Each trial is written to the database, whole, the moment it finishes, so a
  killed run loses only the trials that were running. Running the same tune again loads the
  finished trials and resumes: the trial budget counts finished trials, the time budget the
  seconds already spent. Database trial numbers (finish order) are the ones reported; the
  in-memory numbers (ask order) stay internal. One process tunes a study at a time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from ..data import PreparedTable, TablePreprocessor, check_target, prepare, read_table
from ..engine import Population, resolve, structure_key
from ..files import jsonable
from ..metrics import in_target_units, validation_metric, validation_score
from ..model import CaviarModel
from ..training import train_network
from .samplers import AskTellGridSampler, make_sampler, sampler_key
from .space import Space, default_space
from .study.archive import TrialArchive

STRUCTURAL_NAMES = ("depth", "width", "hidden_layer_sizes", "activation", "batch_norm",
                    "batch_size")
PRUNERS = ("asha", "median", "none")
WRITER_BACKLOG = 64  # finished trials the database writer may lag behind (~2 s of writing)


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
class TuneResult:
    study: optuna.Study
    model: CaviarModel
    out: Path
    model_dir: Path
    leaderboard: pd.DataFrame
    test_scores: dict[str, float]
    storage: str
    study_name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Kept:
    """A trained network the model keeps: its trial (database number) and validation score."""

    value: float
    trial: int
    network: Population
    val_outputs: torch.Tensor  # its predictions for the validation rows
    stopped: str | None = None  # why a running trial was stopped (the budget), if it was

    def describe(self) -> dict[str, Any]:
        out = {"trial": self.trial, "value": self.value, "epoch": int(self.network.epoch[0])}
        return out | ({"stopped": self.stopped} if self.stopped else {})


@dataclass
class _Group:
    """One population of trials sharing a structure.

    ``trials[i]`` is the trial member i trains, or None when that trial ended this epoch and
    the slot waits for ``fill`` to refill it (in place) or drop it. ``joining`` holds trials
    asked during a fill, placed in the population at its end (one tensor copy, not one per
    trial); a new group has no population until then."""

    key: tuple
    structure: dict[str, Any]
    population: Population | None = None
    trials: list[optuna.Trial | None] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    joining: list[tuple[optuna.Trial, dict]] = field(default_factory=list)
    taken: int = 0
    retired: bool = False
    cost: float = 0.0  # estimated seconds of training so far (``epoch_cost``)

    @property
    def running(self) -> int:
        return sum(t is not None for t in self.trials) + len(self.joining)

    @property
    def free_slots(self) -> list[int]:
        return [i for i, t in enumerate(self.trials) if t is None]


def structure_quota(population: int, trials_per_structure: int | None) -> int:
    """Trials a group takes before it drains: ``trials_per_structure``, by default
    2 × population."""
    return trials_per_structure or 2 * population


# What an epoch costs, in seconds, fitted on 72 population shapes (P 2 to 32, width 32 to 256,
# depth 1 to 3, batch 64 to 256, batch norm on and off; median error 19%) on a 2-core CPU:
# a fixed cost per minibatch step (Python and operator dispatch), then per member the
# multiply-adds and the per-unit work (activation, dropout, batch norm) of every row, and the
# optimizer's passes over the parameters at every step. The scheduler needs only ratios, and
# an estimate rather than the clock keeps a seeded run reproducible.
STEP_S, MAC_S, UNIT_S, PARAM_S = 1e-3, 2e-11, 1.7e-8, 3e-9


def epoch_cost(population: Population, rows: int) -> float:
    """Estimated seconds of one epoch of ``population`` over ``rows`` rows."""
    s = population.structure
    sizes = s.layer_sizes
    macs = sum(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:]))  # ≈ parameters
    units = sum(sizes[1:])
    steps = math.ceil(rows / s.batch_size)
    per_member = rows * (macs * MAC_S + units * UNIT_S) + steps * macs * PARAM_S
    return steps * STEP_S + population.size * per_member


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


class _Budget:
    def __init__(self, trials: int | None, time_budget: float | None, spent: float):
        self.trials, self.time_budget, self.spent = trials, time_budget, spent
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.start

    def out_of_time(self) -> bool:
        return self.time_budget is not None and self.elapsed >= self.time_budget

    def may_ask(self, started: int) -> bool:
        """``started``: trials of this study that are finished or running."""
        if self.out_of_time():
            return False
        return self.trials is None or started < self.trials


class Tuner:
    """Drives an Optuna study with ask-and-tell, training its trials in populations."""

    def __init__(self, study: optuna.Study, space: Space, data: PreparedTable,
                 budget: _Budget, population: int,
                 out: Path, seed: int, trials_per_structure: int | None = None,
                 on_progress: Callable[[TuneProgress], None] | None = None,
                 archive: TrialArchive | None = None, ensemble: int = 5,
                 saved: CaviarModel | None = None):
        """``study`` is the working study the sampler and pruner see (in memory);
        ``archive`` writes each finished trial to the database study (None: nowhere);
        ``ensemble``: how many networks the model averages at most; ``saved``: a resumed
        run's model, whose networks are kept again."""
        self.study, self.space, self.data, self.pre = study, space, data, data.preprocessor
        self.archive = archive
        self.budget, self.capacity, self.out, self.seed = budget, population, out, seed
        self.trials_per_structure = structure_quota(population, trials_per_structure)
        self.on_progress = on_progress
        self.task = data.task
        self.n_classes = data.n_classes
        self.groups: list[_Group] = []
        self.free_asks = isinstance(study.sampler, AskTellGridSampler)
        self.best_value = _best_value(study)
        self.ensemble = ensemble
        self.pool = 1 if ensemble == 1 else 4 * ensemble  # candidates kept for the model
        self.kept: list[_Kept] = []
        if saved is not None:
            info = saved.info
            members = info.get("members") or [{"trial": info["trial"], "value": info["value"],
                                               "stopped": info.get("stopped")}]
            for m, network in zip(members, saved.networks):
                self.add_kept(network, int(m["trial"]), float(m["value"]), m.get("stopped"))
        # rewrite a saved model of more networks than this run's ensemble allows
        self._kept_changed = saved is not None and len(saved.networks) > ensemble
        self._groups_made = 0
        # finished trials by state, counted here: filtering the study's trials for every ask
        # grows with the study (quadratic over a run)
        self.finished = {s: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for t in study.get_trials(deepcopy=False, states=tuple(self.finished)):
            self.finished[t.state] += 1

    # ---------------------------------------------------------------- slots

    @property
    def running(self) -> int:
        return sum(g.running for g in self.groups)

    def _started(self) -> int:
        return sum(self.finished.values()) + self.running

    def _ask(self, structure: dict[str, Any] | None) -> tuple[optuna.Trial, dict] | None:
        if structure:
            self.study.enqueue_trial(structure, skip_if_exists=False)
        trial = self.study.ask()
        try:
            params = resolve(self.space.suggest(trial))
        except ValueError as e:
            trial.set_user_attr("failure", f"invalid hyperparameters: {e}")
            self._tell(trial, None, TrialState.FAIL)
            return None
        trial.set_user_attr("hyperparameters", jsonable(params))
        return trial, params

    def _join(self, group: _Group, trial: optuna.Trial, params: dict) -> None:
        group.joining.append((trial, params))
        group.taken += 1
        group.retired = group.taken >= self.trials_per_structure

    def _new_group(self, trial: optuna.Trial, params: dict) -> _Group:
        structure = {k: v for k, v in trial.params.items() if k in STRUCTURAL_NAMES}
        # it starts level with the group that has used the least time, so it does not take
        # every epoch until it has caught up with groups that ran long before it
        level = min((g.cost for g in self.groups), default=0.0)
        group = _Group(structure_key(params), structure, cost=level)
        self.groups.append(group)
        self._join(group, trial, params)
        return group

    def _target(self) -> _Group | None:
        """The group the next trial should join: one with a free slot to refill in place,
        else the newest still taking trials; None: start a new group."""
        open_groups = [g for g in self.groups if not g.retired]
        waiting = [g for g in open_groups if len(g.free_slots) > len(g.joining)]
        if waiting:
            return waiting[0]
        return open_groups[-1] if open_groups else None

    def fill(self) -> None:
        """Refill free slots from the sampler, at an epoch boundary."""
        while self.running < self.capacity and self.budget.may_ask(self._started()):
            group = None if self.free_asks else self._target()
            asked = self._ask(group.structure if group else None)
            if asked is None:
                continue
            trial, params = asked
            key = structure_key(params)
            if group is None:  # a leader (or any grid point): join a group of its shape,
                # reopening a draining one (its few survivors fill up again)
                group = next((g for g in self.groups if g.key == key), None)
                if group is not None and group.retired and not self.free_asks:
                    group.taken, group.retired = 0, False
            if group is not None and group.key == key:
                self._join(group, trial, params)
            else:  # a new structure (or the space changed it, e.g. a conditional)
                self._new_group(trial, params)
        for group in list(self.groups):
            self._settle(group)

    def _settle(self, group: _Group) -> None:
        """Place the joining trials (free slots first, in place; then appended) and drop the
        slots left free."""
        joining, group.joining = group.joining, []
        now = time.monotonic()
        params = [p for _, p in joining]
        if group.population is None:
            group.population = Population(
                self.task, self.data.X_train.shape[1], params, n_classes=self.n_classes,
                seed=self.seed + self._groups_made)
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

    def run_epoch(self, group: _Group) -> None:
        """One epoch of the group's population; report, prune, complete. Slots whose trial
        ended are left free (None) for ``fill``."""
        d, pop = self.data, group.population
        records = pop.fit_epoch(d.X_train, d.y_train, d.X_val, d.y_val)
        scores = [self.score(r) if r is not None else math.nan for r in records]
        pop.remember_best(torch.tensor(scores))
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
                if epoch >= pop.hyperparameters[slot]["epochs"]:
                    # the value of the network kept: the trial's best epoch
                    self._finish(group, slot, TrialState.COMPLETE,
                                 value=float(pop.best_score[slot]))
                elif trial.should_prune():
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
        trial.set_user_attr("curve", [in_target_units(r, self.data.target_std)
                                       for r in pop.history[slot]])
        trial.set_user_attr("duration_s", round(time.monotonic() - group.started[slot], 3))
        if failure:
            trial.set_user_attr("failure", failure)
        if stopped:
            trial.set_user_attr("stopped", stopped)
        number = self._tell(trial, value if state == TrialState.COMPLETE else None, state)
        group.trials[slot] = None
        if state != TrialState.FAIL and not pop.diverged[slot]:
            # its best epoch's network (a pruned trial's too: judged by the same score)
            self._keep(pop, slot, number, float(pop.best_score[slot]), stopped)
        return number

    def _tell(self, trial: optuna.Trial, value: float | None, state: TrialState) -> int:
        """Finish ``trial`` in the working study and write it to the archive; returns its
        number there (the number users see)."""
        self.study.tell(trial, value, state=state)
        self.finished[state] += 1
        if self.archive is None:
            return trial.number
        return self.archive.put(self.study._storage.get_trial(trial._trial_id))

    def _keep(self, pop: Population, slot: int, number: int, value: float,
              stopped: str | None = None) -> None:
        """Keep member ``slot``'s best-epoch network if its validation score ``value`` is
        among the ``pool`` best so far (inf: it never finished an epoch)."""
        full = len(self.kept) >= self.pool
        if not math.isfinite(value) or (full and value >= self.kept[-1].value):
            return
        self.add_kept(pop.export_member(slot, at_best=True), number, value, stopped)

    def add_kept(self, network: Population, number: int, value: float,
                 stopped: str | None = None) -> None:
        """Add a trained network (trial ``number``, validation score ``value``) to the kept
        ones, keeping the ``pool`` best."""
        with torch.no_grad():
            outputs = network.predict(self.data.X_val)[0]
        self.kept.append(_Kept(value, number, network, outputs, stopped))
        self.kept.sort(key=lambda k: k.value)
        del self.kept[self.pool:]
        self._kept_changed = True
        if self.best_value is None or value < self.best_value:
            self.best_value = value

    def model(self) -> CaviarModel:
        """The model: the kept networks that ``select_ensemble`` chooses, averaged."""
        members, value = select_ensemble(self.kept, self.data.y_val, self.task,
                                         self.ensemble)
        return model_from_kept(self.pre, members, self.study.study_name, value)

    def save_model(self) -> None:
        """Write the model to ``OUT/model``, if the kept networks changed since the last
        write."""
        if not self._kept_changed or not self.kept:
            return
        self.model().save(self.out / "model")
        self._kept_changed = False

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
        self.study.set_user_attr("elapsed_s", round(self.budget.elapsed, 3))
        if self.archive is not None:
            self.archive.put_study_attrs(self.study.user_attrs)

    def progress(self) -> TuneProgress:
        counts = self.finished
        return TuneProgress(
            done=counts[TrialState.COMPLETE], running=self.running,
            pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL],
            best_value=self.best_value, metric=self.study.user_attrs.get("metric", ""),
            direction="minimize", elapsed=self.budget.elapsed,
            time_budget=self.budget.time_budget, trials_budget=self.budget.trials,
            populations=len(self.groups))

    def pace_writer(self) -> None:
        """Keep the archive's writer process from falling far behind. It runs at a lower
        priority than training, which is best while spare CPU time lets it keep up; when
        training keeps every core busy its backlog grows (measured: 40 s of writing left at
        the end of a 60 s run on digits), so then PyTorch gives up a thread until the
        writer has caught up."""
        if self.archive is None:
            return
        backlog = self.archive.backlog
        if backlog > 4 * WRITER_BACKLOG:
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

    def run(self) -> None:
        self._threads, self._yielded = torch.get_num_threads(), False
        # an epoch trains on the training rows and predicts the validation rows (a forward
        # pass: about a third of a training step's arithmetic)
        self._cost_rows = len(self.data.X_train) + len(self.data.X_val) // 3
        try:
            self._run()
        finally:
            torch.set_num_threads(self._threads)

    def _run(self) -> None:
        last_saved = time.monotonic()
        self.fill()
        while self.groups:
            # fair time, not fair epochs: the next epoch goes to the group that has used the
            # least (estimated) time, so a structure 5× as costly per epoch gets the same
            # seconds, not 5× as many, and cheap structures are not held back by a slow one
            group = min(self.groups, key=lambda g: g.cost)
            group.cost += epoch_cost(group.population, self._cost_rows)
            self.run_epoch(group)
            if self.budget.out_of_time():
                self.stop_running("time budget")
            else:
                self.fill()
            if time.monotonic() - last_saved > 2.0 or not self.groups:
                self.save_study_state()
                self.save_model()
                last_saved = time.monotonic()
            self.pace_writer()
            if self.on_progress is not None:
                self.on_progress(self.progress())


def row_losses(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Each validation row's loss: −log p(true class), or the squared error (standardized
    units)."""
    if task == "regression":
        return (outputs - y).square()
    return -outputs.gather(1, y.long().view(-1, 1)).clamp_min(1e-15).log().squeeze(1)


def averaged_score(outputs: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """The validation loss of averaged predictions: log-loss of the mean class
    probabilities, or RMSE (standardized units) of the mean values."""
    mean = row_losses(outputs, y, task).mean()
    return float(mean.sqrt() if task == "regression" else mean)


def select_ensemble(kept: Sequence[_Kept], y_val: torch.Tensor, task: str,
                    size: int) -> tuple[list[_Kept], float]:
    """The networks the model averages, and the validation score of their average.

    Start from the best network; walk down the others by validation score; one joins unless
    averaging it in makes the validation loss worse by more than one standard error (of the
    row-by-row difference, with and without it); stop at ``size`` networks.

    Why the standard error: the best of a thousand networks has a lucky validation score, so
    requiring each network to *lower* it keeps out networks that are as good on new rows
    (measured: digits, 60 s, seeds 0 to 5, requiring each network to lower the score
    averaged 3, 1, 3, 5, 3, 5 networks and tested at 0.0702 log-loss on average, this rule
    5 each and 0.0663), while a network truly worse than the others raises the loss on most
    rows and stays out. (Forward selection in rank order: each network is one yes-or-no
    decision, which the validation rows can afford; a free weighting of many networks would
    fit them instead.)"""
    ranked = sorted(kept, key=lambda k: k.value)
    chosen, total = [ranked[0]], ranked[0].val_outputs.clone()
    current = row_losses(total, y_val, task)  # the average's loss on each validation row
    for candidate in ranked[1:]:
        if len(chosen) >= size:
            break
        with_it = row_losses((total + candidate.val_outputs) / (len(chosen) + 1), y_val, task)
        change = with_it - current
        noise = change.std() / math.sqrt(len(change)) if len(change) > 1 else 0.0
        if change.mean() <= noise:  # worse by at most one standard error
            chosen.append(candidate)
            total, current = total + candidate.val_outputs, with_it
    return chosen, averaged_score(total / len(chosen), y_val, task)


def model_from_kept(pre: TablePreprocessor, members: Sequence[_Kept], study_name: str,
                    averaged: float) -> CaviarModel:
    """The model averaging ``members`` (best first); ``info`` names the best one's trial and
    score, lists every member's, and the validation score of their average (``averaged``,
    from ``select_ensemble``; as ``ensemble_value``, regression RMSE in the target's units
    like every trial value)."""
    if pre.task_ == "regression":
        averaged *= pre.target_std_
    info = {**members[0].describe(), "study": study_name, "ensemble_value": averaged,
            "members": [k.describe() for k in members]}
    return CaviarModel(pre, [k.network for k in members], info)


def _best_value(study: optuna.Study) -> float | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(t.value for t in done) if done else None


def _mark_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a process that died: failed, with the reason."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(
            t._trial_id, "failure", "interrupted: the tuning process stopped during this trial")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial, best first: completed by value, then pruned, then failed."""
    rows = []
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    for t in study.get_trials(deepcopy=False, states=tuple(order)):
        hp = t.user_attrs.get("hyperparameters", {})
        curve = t.user_attrs.get("curve") or []
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "epochs_run": len(curve), "duration_s": t.user_attrs.get("duration_s"),
                     **{k: (json.dumps(v) if isinstance(v, list) else v)
                        for k, v in hp.items()},
                     "_order": order[t.state]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["_order", "value", "trial"], na_position="last")
    return frame.drop(columns="_order").reset_index(drop=True)


def _load_space(space: Space | str | Path | Mapping | None) -> Space:
    if space is None:
        return default_space()
    if isinstance(space, Space):
        return space
    if isinstance(space, Mapping):
        return Space.from_dict(space)
    return Space.from_toml(space)


def tune(data: pd.DataFrame | str | Path, target: str, *, time_budget: float | None = None,
         trials: int | None = None, population: int = 32, sampler: str = "coarse-to-fine",
         pruner: str = "asha", space: Space | str | Path | Mapping | None = None,
         storage: str | None = None, study_name: str | None = None,
         out: str | Path = "runs/tune", seed: int = 0, categorical: Sequence[str] = (),
         drop: Sequence[str] = (), task: str | None = None,
         trials_per_structure: int | None = None, ensemble: int = 5,
         on_progress: Callable[[TuneProgress], None] | None = None) -> TuneResult:
    """Tune a network for ``target`` on a table, many trials at once.

    Args:
        data: a CSV/Parquet path or a DataFrame.
        target: the column to predict.
        time_budget: seconds for the whole study (resumed runs count what they spent).
        trials: the number of trials for the whole study (same).
            With neither budget, 64 trials.
        population: how many trials train at once.
        sampler: "random", "grid", "coarse-to-fine" or "tpe".
        pruner: "asha" (successive halving), "median" or "none".
        space: a ``Space``, a TOML file, a dict, or None for ``default_space()``.
        storage, study_name: an Optuna storage URL (default SQLite in ``out``) and study name
            (default "<data name>-<target>"). The same study is resumed when it exists.
        out: the run directory: ``model/``, ``leaderboard.csv``, ``run.json``, ``study.db``.
        seed: seeds the data split, the sampler and the networks.
        ensemble: the model averages the predictions of this many networks, those with the
            best validation scores (1: the best network alone).

    Returns a ``TuneResult`` with the study, the model and its held-out test scores.

    Example:
        >>> result = tune("wage.csv", "wage", drop=["logwage"], time_budget=60)  # doctest: +SKIP
        >>> result.test_scores  # doctest: +SKIP
    """
    if population < 1:
        raise ValueError(f"population must be at least 1, got {population}")
    if trials is not None and trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time budget must be positive, got {time_budget}")
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1 network, got {ensemble}")
    if trials is None and time_budget is None:
        trials = 64
    pruner_obj = make_pruner(pruner)
    space_obj = _load_space(space)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = str(data) if not isinstance(data, pd.DataFrame) else "DataFrame"
    frame = read_table(data)
    name = (Path(source).name.split(".")[0] if source != "DataFrame" else "data")
    study_name = study_name or f"{name}-{target}"
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"

    check_target(frame, target)
    prepared = prepare(frame, target, task=task, categorical=categorical, drop=drop, seed=seed)
    pre, test = prepared.preprocessor, prepared.test
    metric = validation_metric(pre.task_)

    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                load_if_exists=True)
    interrupted = _mark_interrupted(study)  # left RUNNING by an older caviar
    study.set_user_attr("task", pre.task_)
    study.set_user_attr("metric", metric)
    study.set_user_attr("direction", "minimize")
    study.set_user_attr("sampler", sampler)
    study.set_user_attr("pruner", pruner)
    study.set_user_attr("space", space_obj.to_dict())
    study.set_user_attr("data", {
        "source": source, "rows": int(len(frame)), "columns": int(frame.shape[1]),
        "target": target, "task": pre.task_, "roles": pre.roles_.by_column(),
        "split": prepared.split})
    budget = _Budget(trials, time_budget, float(study.user_attrs.get("elapsed_s", 0.0)))
    (out / "run.json").write_text(json.dumps({
        "kind": "tune", "study_name": study_name, "storage": storage, "data": source,
        "target": target, "seed": seed, "sampler": sampler, "pruner": pruner,
        "population": population, "time_budget": time_budget, "trials": trials,
        "ensemble": ensemble}, indent=1))

    # the coarse round spans two groups, so that it compares two structures
    sampler_options = ({"n_coarse": 2 * structure_quota(population, trials_per_structure)}
                       if sampler_key(sampler) == "coarse-to-fine" else {})
    # the working copy the sampler and pruner use: in memory, loaded with the finished trials
    working = optuna.create_study(study_name=study_name, direction="minimize",
                                  sampler=make_sampler(sampler, space_obj, seed=seed,
                                                       **sampler_options),
                                  pruner=pruner_obj)
    for key, value in study.user_attrs.items():
        working.set_user_attr(key, value)
    archive = TrialArchive(study, out / "pending-trials.jsonl", storage)  # recovers a killed run's
    working.add_trials(study.get_trials(deepcopy=False))
    saved = _saved_model(out, study_name, prepared.X_train.shape[1])  # a resumed run's
    tuner = Tuner(working, space_obj, prepared, budget, population, out, seed,
                  trials_per_structure=trials_per_structure, on_progress=on_progress,
                  archive=archive, ensemble=ensemble, saved=saved)
    try:
        tuner.run()
    finally:
        tuner.save_study_state()
        tuner.save_model()
        archive.close()

    model = _final_model(study, tuner, seed)
    test_scores = model.scores(test) if len(test) else {}
    best = study.trials[model.info["trial"]]  # the best network's trial (maybe a stopped one)
    best_info = {"trial": best.number, "value": model.info["value"],
                 "hyperparameters": best.user_attrs.get("hyperparameters", {}),
                 "members": model.info.get("members", []), "test_scores": test_scores}
    if len(model.networks) > 1 and len(test):
        best_info["best_network_test_scores"] = CaviarModel(pre, model.network).scores(test)
    if pre.task_ != "regression" and len(test):
        best_info["confusion_matrix"] = model.confusion_matrix(test)
    study.set_user_attr("best", jsonable(best_info))
    board = leaderboard(study)
    board.to_csv(out / "leaderboard.csv", index=False)
    return TuneResult(study=study, model=model, out=out, model_dir=out / "model",
                      leaderboard=board, test_scores=test_scores, storage=storage,
                      study_name=study_name,
                      extra={"interrupted_trials": interrupted,
                             "recovered_trials": archive.recovered})


def _saved_model(out: Path, study_name: str, n_inputs: int) -> CaviarModel | None:
    """The model saved in ``out/model`` for this study and these features, or None."""
    try:
        model = CaviarModel.load(out / "model")
    except (OSError, ValueError):
        return None
    if model.info.get("study") != study_name or model.network.structure.n_inputs != n_inputs:
        return None  # another study's, or the columns changed (--drop, --categorical)
    return model


def _final_model(study: optuna.Study, tuner: Tuner, seed: int) -> CaviarModel:
    """The model of the networks the tuner kept (the one ``OUT/model`` holds). If the best
    completed trial of the (database) study is not among them (a killed run finished it
    after its model was last saved), its configuration is refit and joins by the same rule."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(done, key=lambda t: t.value) if done else None
    kept = tuner.kept
    if best is None or any(k.trial == best.number for k in kept) or (
            kept and best.value >= kept[0].value):
        if not kept:
            raise RuntimeError("no trial completed within the budget: give it more time "
                               "(--time-budget) or more trials (--trials)")
        return tuner.model()
    data, pre = tuner.data, tuner.pre
    params = best.user_attrs["hyperparameters"]
    network = train_network(data.X_train, data.y_train, pre.task_,
                            params, n_classes=tuner.n_classes, X_val=data.X_val,
                            y_val=data.y_val, seed=seed,
                            patience=int(params["epochs"]))  # all epochs, best one kept
    tuner.add_kept(network, best.number, best.value)
    model = tuner.model()
    model.info["refit"] = best.number
    model.save(tuner.out / "model")
    return model


optuna.logging.set_verbosity(optuna.logging.WARNING)
