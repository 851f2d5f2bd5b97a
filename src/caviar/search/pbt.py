"""Population-based training (Jaderberg et al. 2017) inside one vectorized population.

Ray Tune's PBT runs each member as a process and copies checkpoints through the file system
when a member *exploits* a better one. Here the members are rows of one ``Population``:
exploiting is a row copy (``Population.copy_member``: weights, batch-norm statistics,
optimizer state) and *exploring* is a change of the member's ``(P,)`` hyperparameters.

How a run goes:

- First a coarse search: the default tuner (``Tuner._run``: the study's sampler, ASHA, slot
  refill, the warm start) spends ``coarse`` of the budget (half by default; trials or
  seconds). PBT keeps a population's structure fixed and only perturbs its members'
  hyperparameters, so it is a fine stage: alone, a round trained 2 random structures where
  ASHA tried hundreds, and its model was 1.046× ASHA's at 60 s (bench/README.md).
- A round starts ``structures`` populations (2 by default) that share the ``population``
  members. Once the study has trained networks (the coarse search's, earlier rounds'), each
  population takes one of its best structures (ranked by the best validation score a trial's
  network reached, a budget-stopped trial's too) and its members start from that structure's
  trials' hyperparameters, best first; when it has fewer trials than members, the best again
  with their hyperparameters explored (a population it has no trained structure for draws
  one, and its members, at random). Without a coarse search a new study's first round
  takes the warm start's structures (that network a first member) and members draw their
  hyperparameters at random, as in the paper. Everyone trains for the same ``epochs`` (the
  space's largest), since PBT's schedule replaces early stopping by the pruner.
- Every ``interval`` epochs, per population: the members in the bottom quarter by their
  latest validation score copy a member drawn from the top quarter (truncation selection),
  then perturb its numeric per-member hyperparameters (``explore``): each is multiplied by
  0.8 or 1.25 in sampling space (on α for log axes, on 1 − β for ema_beta axes, on the value
  for linear axes), clipped to the space's bounds, or with probability 0.25 drawn afresh.
  Choices (optimizer, learning-rate schedule) and structural names are inherited, never
  perturbed: a different optimizer would not fit the copied optimizer state.
- The round ends at ``epochs`` or when the budget runs out; another round starts while the
  budget allows (a trial budget counts members).
- Each member becomes one Optuna trial when its round ends: its params are its *final*
  hyperparameters (Optuna params are fixed per trial), its value the best validation score
  its network reached since its last copy, and its user attributes hold its schedule
  (``keys.PBT_SCHEDULE``: the segments its network trained, the copied ancestors' included)
  and its id. Each population's lineage (who copied whom, when) is a study attribute of its
  own (``keys.PBT_POPULATION`` + its id), written once, for the report. One trial per
  member keeps the leaderboard, the dashboard and the kept model as they are for the
  default tuner; a trial per segment would make most trials fragments of one network.
- With several workers each trains its own populations (ids prefixed ``w<index>-``);
  exploiting stays inside a population, so inside a process.
- The kept model is chosen as the default tuner's (``ensemble.KeptNetworks``) from every
  member's best network; ``model.info["pbt"]`` holds the best network's schedule, which
  ``replay`` trains again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from ..data import PreparedTable, prepare, read_table
from ..engine import Population
from ..files import jsonable
from ..hyperparams import DEFAULTS, SPACE_STRUCTURAL, resolve, structural_params
from ..metrics import Metric, in_target_units, validation_score
from ..model import CaviarModel
from .budget import COARSE_SHARE, Budget
from .samplers import QueuedTrial
from .scaling import ScalingChoice
from .scheduler import TuneProgress, Tuner
from .space import Space
from .study import keys
from .study.archive import TrialArchive
from .study.shared import SharedStudy

__all__ = ["PopulationBasedTraining", "explore", "explorable", "read_schedule", "replay",
           "schedule_plan"]

# epochs between exploit/explore steps: 2, 4 and 8 scored within 0.2% of each other at 20 s
# on wage and default (bench/README.md); 8 makes no step when a budget stops a round early
INTERVAL = 4
TRUNCATION = 0.25  # the bottom quarter copies the top quarter
FACTORS = (0.8, 1.25)  # perturbation factors, in sampling space
RESAMPLE = 0.25  # probability of drawing a hyperparameter afresh instead
STRUCTURES = 2  # populations (structures) a round trains
MIN_MEMBERS = 4  # a population smaller than this has no quartiles to select from


# per-member names that only shape a network's initial weights (PLR's frequencies are drawn
# with this σ): changing them after a copy would change nothing
INITIAL_ONLY = frozenset({"plr_sigma"})


def explorable(space: Space, params: Mapping[str, Any]) -> list[str]:
    """The names ``explore`` may change for a member whose Optuna params are ``params``: the
    space's numeric axes that are per member, act during training and are active for it
    (``epochs`` is the run's)."""
    return [name for name in space.names
            if space[name].is_numeric and space[name].optuna_name in params
            and name not in SPACE_STRUCTURAL and name != "epochs" and name not in INITIAL_ONLY]


def explore(values: Mapping[str, Any], space: Space, rng: random.Random,
            factors: Sequence[float] = FACTORS, resample: float = RESAMPLE) -> dict[str, Any]:
    """New values for ``values`` (caviar's names and values, β not 1 − β): each multiplied
    by a factor drawn from ``factors`` in sampling space, or with probability ``resample``
    drawn uniformly in sampling space; clipped to the space's bounds.

    Example:
        >>> from caviar.search import Space, ema_beta, log_uniform
        >>> space = Space({"learning_rate": log_uniform(1e-4, 1e-1),
        ...                "beta2": ema_beta(0.99, 0.9999)})
        >>> new = explore({"learning_rate": 1e-2, "beta2": 0.999}, space, random.Random(0),
        ...               resample=0)
        >>> sorted(new)
        ['beta2', 'learning_rate']
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        p = space[name]
        low, high = p.r_bounds()
        if rng.random() < resample:
            r = rng.uniform(low, high)
        elif p.scale in ("log", "ema_beta"):  # α·f, or (1 − β)·f: a shift of log10 f
            r = p.to_r(value) + math.log10(rng.choice(factors))
        else:
            r = value * rng.choice(factors)
        out[name] = p.from_r(min(max(r, low), high))
    return out


@dataclass
class _Member:
    """One slot of a PBT population: its id, its Optuna params (what the trial will hold,
    encoded as Optuna sees them) and its network's schedule."""

    id: str
    params: dict[str, Any]
    schedule: list[dict[str, Any]]


@dataclass
class _PBTPopulation:
    id: str
    structure: dict[str, Any]
    population: Population
    members: list[_Member]
    started: float
    # every member's values of hyperparameters the space does not name (a warm start's,
    # samplers.QueuedTrial.outside): structural ones shape the whole population
    outside: dict[str, Any] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)  # the latest epoch's, per slot
    events: list[dict[str, Any]] = field(default_factory=list)


class PopulationBasedTraining(Tuner):
    """Drives an Optuna study as PBT: see the module docstring. It shares the default
    tuner's study bookkeeping, archive and kept model; only how members train differs."""

    def __init__(self, study: optuna.Study, space: Space, data: PreparedTable, budget: Budget,
                 population: int, out: Path, seed: int, *, interval: int | None = None,
                 structures: int = STRUCTURES, on_progress: Any = None,
                 archive: TrialArchive | None = None, ensemble: int = 5,
                 saved: CaviarModel | None = None, shared: SharedStudy | None = None,
                 metric: Metric | None = None, device: str | torch.device = "cpu",
                 prefix: str = "", warm: Sequence[QueuedTrial] = (),
                 scaling: ScalingChoice | None = None,
                 coarse: float = COARSE_SHARE, trials_per_structure: int | None = None,
                 refit_rows: int = 0, bag_folds: int = 0, report: bool = True):
        """``prefix``: what this worker's population and member ids start with ("w1-" for
        worker 1 of several; "" alone), so that workers' ids never collide; ``warm``: the
        known-good networks' trials (``samplers.warm_start``): the coarse search's
        first trials, or without one the first round's populations take their structures,
        each with that network as its first member; ``coarse``: the share of the budget
        (trials or seconds) the coarse search spends first (0: none, PBT from random
        draws); ``trials_per_structure``, ``refit_rows``, ``bag_folds``: as the default
        tuner's."""
        super().__init__(study, space, data, budget, population, out, seed,
                         trials_per_structure=trials_per_structure, on_progress=on_progress,
                         archive=archive, ensemble=ensemble, saved=saved, shared=shared,
                         metric=metric, device=device, warm=warm, refit_rows=refit_rows,
                         bag_folds=bag_folds, report=report, scaling=scaling)
        if interval is not None and interval < 1:
            raise ValueError(f"the PBT interval must be at least 1 epoch, got {interval}")
        if not 0 <= coarse < 1:
            raise ValueError(f"the coarse search's share of the budget must be in [0, 1), "
                             f"got {coarse}")
        self.coarse = coarse
        self.interval = interval or INTERVAL
        self.structures = max(1, structures)
        self.epochs = _horizon(space)
        self.rng = random.Random(seed)
        # initial hyperparameters are drawn at random, as in the paper, from a scratch study:
        # the study's own trials are the members, told with their final values
        self.draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        self.live: list[_PBTPopulation] = []
        self.schedules: dict[int, dict[str, Any]] = {}  # trial number: what replay needs
        self.prefix = prefix
        # a resumed worker goes on numbering its rounds where it stopped
        self.round = len({p["id"].split(".")[0]
                          for p in keys.pbt_lineage(study.user_attrs).get("populations", [])
                          if _own(p["id"], prefix)})
        settings = {"interval": self.interval, "epochs": self.epochs, "truncation": TRUNCATION,
                    "coarse": self.coarse}
        legacy = (study.user_attrs.get(keys.PBT) or {}).get("populations")
        study.set_user_attr(keys.PBT, settings | ({"populations": legacy} if legacy else {}))
        study.set_user_attr(keys.SCHEDULER, "pbt")

    # ---------------------------------------------------------------- members

    @property
    def running(self) -> int:
        """Members of the round's populations, or the coarse search's running trials."""
        return sum(p.population.size for p in self.live) + super().running

    def _draw(self, structure: dict[str, Any], fixed: dict[str, Any] | None = None,
              outside: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
        """Optuna params and the resolved configuration of a new member (``fixed``: all its
        params, a warm start's; ``outside``: its population's values the space does not
        draw)."""
        for _ in range(100):
            if fixed or structure:
                self.draws.enqueue_trial(fixed or structure, skip_if_exists=False)
            trial = self.draws.ask()
            values = self.space.suggest(trial)
            try:
                config = resolve({**values, **(outside or {}), "epochs": self.epochs})
            except ValueError:  # e.g. a conditional combination the vocabulary refuses
                continue
            params = dict(trial.params)
            if "epochs" in params:
                params["epochs"] = self.epochs
            return params, config
        raise ValueError("the space gave no valid hyperparameters in 100 draws")

    def _ranked(self) -> list[optuna.trial.FrozenTrial]:
        """The study's trials that trained (every worker's, as last seen; earlier runs'
        too), best first by the best validation score their network reached: a trial the
        coarse search's budget stopped counts as much as a completed one."""
        def best(t: optuna.trial.FrozenTrial) -> float:
            losses = [self.metric.loss(v) for v in t.intermediate_values.values()
                      if math.isfinite(v)]
            return min(losses, default=math.inf)

        trained = [(best(t), t.number, t) for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        return [t for loss, _, t in sorted(trained, key=lambda x: x[:2]) if math.isfinite(loss)]

    def _starts(self, n: int) -> list[list[optuna.trial.FrozenTrial]]:
        """Up to ``n`` lists of trials, one per population: the best structures the study
        has trained, each with its trials, best first ([] before any)."""
        by_structure: dict[tuple, list[optuna.trial.FrozenTrial]] = {}
        for t in self._ranked():
            structure = structural_params(t.params) | _trial_outside(t)
            key = tuple(sorted((k, str(v)) for k, v in structure.items()))
            if key in by_structure or len(by_structure) < n:
                by_structure.setdefault(key, []).append(t)
        return list(by_structure.values())

    def _from_best(self, starts: list[optuna.trial.FrozenTrial], size: int
                   ) -> list[tuple[dict[str, Any], Any, optuna.trial.FrozenTrial, dict]]:
        """``size`` members of one structure that start from its best trials (``starts``,
        best first): the best ``size`` of them, and when there are fewer, the best again
        with their hyperparameters explored (the fine stage of coarse to fine). Each is its
        params, its configuration, the trial it starts from and the values explored."""
        drawn = []
        for i in range(size):
            source = starts[i % len(starts)]
            params, changes = dict(source.params), {}
            if i >= len(starts):
                changes = explore(self._values(params), self.space, self.rng)
                params.update({self.space[k].optuna_name: _encoded(self.space, k, v)
                               for k, v in changes.items()})
            drawn.append((*self._draw({}, fixed=params, outside=_trial_outside(source)), source,
                          changes))
        return drawn

    def _kept_network(self, trial: optuna.trial.FrozenTrial) -> Population | None:
        """The network the kept model holds for ``trial`` (its best epoch), if it holds one:
        found by the trial's configuration, since a worker's study numbers its trials apart
        from the database."""
        config = trial.user_attrs.get(keys.HYPERPARAMETERS)
        for kept in self.kept.networks:
            if jsonable(kept.network.hyperparameters[0]) == config:
                return kept.network
        return None

    def _start_round(self) -> list[_PBTPopulation]:
        # other workers' finished members count in a trials budget and may hold the best
        # structure; members other workers are training now are not seen (they become trials
        # at the end of their round), so with several workers a trials budget may be passed
        # by up to one round of each other worker
        self.refresh(force=True)
        left = (self.capacity if self.budget.trials is None
                else min(self.capacity, self.budget.trials - self._started()))
        if left < 1:
            return []
        n = max(1, min(self.structures, left // MIN_MEMBERS))
        # once the study has trained networks (the coarse search's, earlier rounds'), a
        # round refines its best structures from their best params, and draws a structure
        # for each population it has no trained structure for; a new study without a coarse
        # search starts from the known-good networks (one population each, that network its
        # first member) and random draws
        starts = self._starts(n)
        sizes = [left // n + (i < left % n) for i in range(n)]
        warm, self.warm = ([] if starts else self.warm[:n]), []
        pops = []
        for i, size in enumerate(sizes):
            pid = f"{self.prefix}{self.round}.{i}"
            known = warm[i] if i >= len(starts) and i < len(warm) else None
            outside = (_trial_outside(starts[i][0]) if i < len(starts)
                       else known.outside if known else {})
            if i < len(starts):
                drawn = self._from_best(starts[i], size)
            else:
                drawn = [(*d, None, {}) for d in self._draw_random(
                    size, known.params if known else None, outside)]
            population = Population(self.task, self.data.inputs,
                                    [c for _, c, _, _ in drawn], n_classes=self.n_classes,
                                    seed=self.seed + self._groups_made, device=self.device)
            self._groups_made += 1
            members = [self._start_member(population, slot, f"{pid}.{slot}", params, source,
                                          changes)
                       for slot, (params, _, source, changes) in enumerate(drawn)]
            pops.append(_PBTPopulation(pid, structural_params(drawn[0][0]), population,
                                       members, time.monotonic(), outside=outside))
        self.round += 1
        return pops

    def _start_member(self, population: Population, slot: int, member_id: str,
                      params: dict[str, Any], source: optuna.trial.FrozenTrial | None,
                      changes: dict[str, Any]) -> _Member:
        """Slot ``slot``'s member, with its schedule's first segment. A member that starts
        from a trial whose network the kept model holds goes on from it (at its best
        epoch, before the space's last): its schedule starts with that trial's values and,
        when explored, changes them at that epoch."""
        schedule = [{"epoch": 0, "member": member_id, "copied_from": None,
                     "hyperparameters": self._values(params)}]
        network = self._kept_network(source) if source is not None else None
        if network is not None and int(network.epoch[0]) < self.epochs:
            population.load_member(slot, network)
            schedule[0]["hyperparameters"] = self._values(source.params)
            if changes:
                schedule.append({"epoch": int(network.epoch[0]), "member": member_id,
                                 "copied_from": None, "hyperparameters": changes})
        return _Member(member_id, params, schedule)

    def _draw_random(self, size: int, fixed: dict[str, Any] | None,
                     outside: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
        """``size`` members of one structure drawn at random, the first ``fixed`` (a warm
        start's params) when given, whose structure the others take; every one with the
        values ``outside`` the space."""
        structure = {} if fixed is None else structural_params(fixed)
        drawn = []
        for _ in range(size):
            params, config = self._draw(structure, fixed, outside)
            fixed = None
            structure = structure or structural_params(params)
            drawn.append((params, config))
        return drawn

    def _values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The explorable hyperparameters in ``params``, in caviar's names and values."""
        return {name: self.space[name].decode(params[self.space[name].optuna_name])
                for name in explorable(self.space, params)}

    # ---------------------------------------------------------------- training

    def _epoch(self, p: _PBTPopulation, until: float | None = None) -> None:
        d, pop = self.data, p.population
        records = pop.fit_epoch(d.X_train, d.y_train, d.X_val, d.y_val, **self._weight,
                                until=until)
        # ranked by the study's metric as a loss (lower is better: −AUC for AUC)
        losses = [self.metric.loss(v) for v in self.epoch_scores(pop, records)]
        pop.remember_best(torch.tensor(losses))
        p.scores = [s if math.isfinite(s) and not pop.diverged[i] else math.inf
                    for i, s in enumerate(losses)]

    def exploit_and_explore(self, p: _PBTPopulation, epoch: int) -> None:
        """Truncation selection: the bottom quarter copies members drawn from the top
        quarter, then perturbs their hyperparameters."""
        pop, size = p.population, p.population.size
        q = int(size * TRUNCATION)
        if q < 1:
            return
        order = sorted(range(size), key=lambda i: (p.scores[i], i))
        top, bottom = order[:q], order[-q:]
        for target in sorted(bottom):
            source = self.rng.choice(top)
            src, member = p.members[source], p.members[target]
            pop.copy_member(source, target)
            # its kept network is one it trains from here, not a second copy of the source's
            pop.best_score[target] = math.inf
            changes = explore(self._values(src.params), self.space, self.rng)
            pop.set_hyperparameters(target, **changes)
            member.params = {**src.params, **{self.space[k].optuna_name: _encoded(
                self.space, k, v) for k, v in changes.items()}}
            member.schedule = [*src.schedule, {"epoch": epoch, "member": member.id,
                                               "copied_from": src.id,
                                               "hyperparameters": changes}]
            p.events.append({"epoch": epoch, "member": member.id, "copied_from": src.id,
                             "score": _finite(p.scores[target]),
                             "source_score": _finite(p.scores[source])})
            p.scores[target] = p.scores[source]

    def _train(self, pops: list[_PBTPopulation]) -> str | None:
        """Train the round's populations in step to ``epochs``; returns why it stopped early
        ("time budget") or None. An epoch is not started when, at the speed measured so far,
        it would end past the time budget (with the end of the run held back), as the
        default tuner does."""
        last_saved = time.monotonic()
        for epoch in range(1, self.epochs + 1):
            for p in pops:
                if (self.paced_epoch(p.population, partial(self._epoch, p)) is None
                        or self.budget.out_of_time()):
                    return "time budget"
            if epoch % self.interval == 0 and epoch < self.epochs:
                for p in pops:
                    self.exploit_and_explore(p, epoch)
            if time.monotonic() - last_saved > 2.0:
                self.save_study_state()
                last_saved = time.monotonic()
            self.pace_writer()
            self.share_busy_cores()
            self._beat()  # finished members the writer has not written yet stay alive
            if self.on_progress is not None:
                self.on_progress(self.progress())
        return None

    def _end_round(self, pops: list[_PBTPopulation], stopped: str | None) -> None:
        """Each member becomes a trial (final params, schedule); its network is offered to
        the kept model; the lineage goes to the study."""
        for p in pops:
            pop = p.population
            for slot in range(pop.size):
                number, value, network = self._tell_member(p, slot, stopped)
                if network is not None:
                    self.keep(network, number, value, stopped)
            self.study.set_user_attr(keys.PBT_POPULATION + p.id, jsonable({
                "id": p.id, "structure": p.structure,
                "members": [m.id for m in p.members], "events": p.events}))
        self.live = []

    def _tell_member(self, p: _PBTPopulation, slot: int, stopped: str | None
                     ) -> tuple[int, float | None, Population | None]:
        """The member's trial, told; returns its number, its value (None: failed) and its
        best network when the kept model wants it (it goes to the study as an artifact, from
        which a coordinator of several workers builds the model)."""
        pop, member = p.population, p.members[slot]
        self.study.enqueue_trial(member.params, skip_if_exists=False)
        trial = self.study.ask()
        self.space.suggest(trial)  # every param enqueued: the member's final values
        config = pop.hyperparameters[slot]
        for record in pop.history[slot]:  # its network's curve, for the dashboard
            trial.report(self.score(record) if self.scorer.default
                         else record[self.metric_key], record["epoch"])
        trial.set_user_attr(keys.HYPERPARAMETERS, jsonable(config))
        trial.set_user_attr(keys.CURVE, [in_target_units(r, self.data.target_std)
                                         for r in pop.history[slot]])
        trial.set_user_attr(keys.DURATION_S, round(time.monotonic() - p.started, 3))
        trial.set_user_attr(keys.PBT_MEMBER, member.id)
        trial.set_user_attr(keys.PBT_SCHEDULE, jsonable(member.schedule))
        if p.outside:  # a later round's population takes them again (_starts)
            trial.set_user_attr(keys.OUTSIDE_SPACE, jsonable(p.outside))
        if stopped:
            trial.set_user_attr(keys.STOPPED, stopped)
        value = self.metric.natural(float(pop.best_score[slot]))
        failed = pop.diverged[slot] or not math.isfinite(value)
        if failed:
            trial.set_user_attr(keys.FAILURE, pop.failure[slot] or "no finite validation score")
        network = None if failed else self.candidate(trial, pop, slot, value, stopped)
        self._create(trial)  # in the storage, which numbers it
        if failed:
            return self._tell(trial, None, TrialState.FAIL), None, None
        number = self._tell(trial, value, TrialState.COMPLETE, network)
        self.schedules[number] = {"hyperparameters": jsonable(config),
                                  "schedule": jsonable(member.schedule)}
        return number, value, network

    # ---------------------------------------------------------------- the run

    def _run(self) -> None:
        if self.coarse and not self.round:
            self._coarse_search()
        while self.budget.may_ask(self._started()):
            pops = self._start_round()
            if not pops:
                break
            self.live = pops
            stopped = self._train(pops)
            self._end_round(pops, stopped)
            self.save_study_state()
            self.save_model()
            if self.on_progress is not None:
                self.on_progress(self.progress())

    def _coarse_search(self) -> None:
        """The default tuner (``Tuner._run``: the study's sampler, ASHA, slot refill) for
        the first ``coarse`` share of what is left of the budget: PBT keeps a population's
        structure fixed and only perturbs its members, so the structures and the region of
        the space it refines come from here (coarse to fine)."""
        whole = self.budget
        self.budget = whole.first(self.coarse, self._started(), "the coarse search's share")
        try:
            super()._run()
        finally:
            self.budget = whole

    def progress(self) -> TuneProgress:
        running = super().progress()
        return dataclasses.replace(running, populations=len(self.live) or running.populations)

    def model(self) -> CaviarModel:
        """The kept model; ``info["pbt"]`` holds the best network's schedule (``replay``)."""
        model = super().model()
        schedule = self.schedules.get(model.info.get("trial"))
        if schedule is not None:
            model.info["pbt"] = schedule
        return model


def schedule_plan(schedule: Mapping[str, Any]) -> tuple[dict[str, Any], dict[int, dict]]:
    """A PBT schedule as the hyperparameters a network starts from and the changes made
    before each later segment's epoch: ``({...}, {epoch: {name: value}})``.

    ``schedule`` is ``model.info["pbt"]`` of a PBT run's model, or ``{"hyperparameters":
    trial.user_attrs["hyperparameters"], "schedule": trial.user_attrs["pbt_schedule"]}`` of
    any member's trial. The structure and the choices are the final configuration's (a
    member inherits them when it copies); the explored values are each segment's.

    Example:
        >>> start, changes = schedule_plan({"hyperparameters": {"epochs": 8}, "schedule": [
        ...     {"epoch": 0, "hyperparameters": {"learning_rate": 0.1}},
        ...     {"epoch": 4, "hyperparameters": {"learning_rate": 0.08}}]})
        >>> start, changes
        ({'epochs': 8, 'learning_rate': 0.1}, {4: {'learning_rate': 0.08}})
    """
    segments = schedule.get("schedule") if isinstance(schedule, Mapping) else None
    final = schedule.get("hyperparameters") if isinstance(schedule, Mapping) else None
    if (not isinstance(final, Mapping) or not isinstance(segments, list) or not segments
            or not all(isinstance(s, Mapping) and isinstance(s.get("epoch"), int)
                       and isinstance(s.get("hyperparameters"), Mapping) for s in segments)):
        raise ValueError('a PBT schedule is {"hyperparameters": {...}, "schedule": [{"epoch": '
                         'N, "hyperparameters": {...}}, ...]}, as a PBT model\'s info["pbt"] '
                         "holds it")
    segments = sorted(segments, key=lambda s: s["epoch"])
    start = {**final, **segments[0]["hyperparameters"]}
    return start, {int(s["epoch"]): dict(s["hyperparameters"]) for s in segments[1:]}


def read_schedule(path: str | Path) -> tuple[dict[str, Any], dict[int, dict]]:
    """``schedule_plan`` of the schedule in ``path``: a PBT run's model directory (or the run
    directory holding it in ``model/``: its best network's schedule), or a JSON file with
    ``{"hyperparameters": ..., "schedule": [...]}``. What ``caviar train --schedule`` reads."""
    path = Path(path)
    for file in (path / "model.json", path / "model" / "model.json", path):
        if file.is_file():
            break
    else:
        raise ValueError(f"{path} is neither a model directory nor a JSON schedule file")
    try:
        content = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{file} is not a JSON schedule: {e}") from None
    if isinstance(content, Mapping) and "schedule" not in content and "info" in content:
        content = (content.get("info") or {}).get("pbt")  # a model.json
        if content is None:
            raise ValueError(f"{file.parent}'s model was not trained by population-based "
                             "training (no schedule in its info); pass the model of a "
                             "`caviar tune --scheduler pbt` run or a JSON schedule file")
    return schedule_plan(content)


def replay(schedule: Mapping[str, Any], data: pd.DataFrame | str | Path, target: str, *,
           seed: int = 0, task: str | None = None, categorical: Sequence[str] = (),
           drop: Sequence[str] = (), device: str | torch.device = "cpu") -> CaviarModel:
    """Train one network again along a PBT schedule (see ``schedule_plan``) on ``device``.

    The network starts from the final configuration's structure and choices and changes its
    explored hyperparameters at each segment's epoch, as the member's lineage did. It is a
    new network (its own initial weights and minibatch order), not the same one; the best
    epoch's network is kept, as in tuning. (``caviar train --schedule`` does the same as a
    panda run, with its checkpoints and report.)

    Example:
        >>> model = replay(tuned.model.info["pbt"], "wage.csv", "wage",
        ...                drop=["logwage"])  # doctest: +SKIP
    """
    start, changes = schedule_plan(schedule)
    config = resolve(start)
    d = prepare(read_table(data), target, task=task, categorical=categorical, drop=drop,
                seed=seed)
    network = Population(d.task, d.inputs, [config], n_classes=d.n_classes, seed=seed,
                         device=device)
    X, y, X_val, y_val = network.to_device(d.X_train, d.y_train, d.X_val, d.y_val)
    for epoch in range(int(config["epochs"])):
        if epoch in changes:
            network.set_hyperparameters(0, **changes[epoch])
        record = network.fit_epoch(X, y, X_val, y_val)[0]
        if record is None or network.diverged[0]:
            break
        if X_val is not None:
            network.remember_best(torch.tensor([validation_score(record, d.task,
                                                                 d.target_std)]))
    info = {"pbt": dict(schedule), "replayed": True,
            "value": _finite(float(network.best_score[0]))}
    return CaviarModel(d.preprocessor, network.export_member(0, at_best=True).to("cpu"), info)


def _horizon(space: Space) -> int:
    """The epochs every member trains: the space's largest ``epochs``."""
    if "epochs" not in space:
        return int(DEFAULTS["epochs"])
    p = space["epochs"]
    if p.kind == "fixed":
        return int(p.value)
    if p.kind == "choice":
        return int(max(p.values))
    return int(p.high)


def _own(population_id: str, prefix: str) -> bool:
    """Whether a population id is of the worker whose ids start with ``prefix``."""
    rest = population_id[len(prefix):] if population_id.startswith(prefix) else "-"
    return rest.replace(".", "").isdigit()


def _encoded(space: Space, name: str, value: Any) -> Any:
    """Optuna's value of ``name``, inside its distribution's bounds (1 − β's rounding)."""
    p = space[name]
    raw = p.encode(value)
    low, high = p.optuna_bounds()
    return min(max(raw, low), high)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _trial_outside(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's values of hyperparameters its space does not draw (``keys.OUTSIDE_SPACE``)."""
    return trial.user_attrs.get(keys.OUTSIDE_SPACE) or {}
