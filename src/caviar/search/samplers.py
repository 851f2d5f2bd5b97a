"""Samplers for tuning: Optuna's random, grid and TPE samplers, and coarse to fine (DESIGN.md,
"Coarse to fine").

Every sampler here works with Optuna's ask-and-tell loop, with many trials asked before any is
told: the scheduler keeps a whole population of trials in flight.
"""

from __future__ import annotations

import inspect
import math
import secrets
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..hyperparams import (
    DEFAULTS,
    ESTIMATOR_NETWORK,
    ESTIMATOR_NETWORK_DECAYED,
    ESTIMATOR_NETWORK_DECAYED_SIGMA1,
    LINEAR_EXACT,
    PERIODIC_EXACT,
    REALMLP_LIKE,
    SPACE_ONLY,
    close_names,
    epochs_by_steps,
    resolve,
)
from .space import Space, SpaceError
from .study import keys

SAMPLERS = ("random", "grid", "coarse-to-fine", "tpe")


def sampler_key(name: str) -> str:
    """A sampler name as ``make_sampler`` matches it: "Coarse_To_Fine" is "coarse-to-fine"."""
    key = name.strip().lower().replace("_", "-")
    return "coarse-to-fine" if key == "c2f" else key


def make_sampler(name: str, space: Space, seed: int | None = None,
                 **options: Any) -> BaseSampler:
    """The sampler called ``name`` (``"random"``, ``"grid"``, ``"coarse-to-fine"``, ``"tpe"``)
    for ``space``, seeded with ``seed``.

    ``options`` go to the sampler: ``CoarseToFineSampler``'s keywords, ``TPESampler``'s, or for
    ``"grid"`` ``points_per_axis`` (3) and ``max_points`` (100000: a larger grid is an error,
    since GridSampler enumerates it; inactive conditional axes still multiply the count).

    Example::

        >>> from caviar.search import default_space, make_sampler
        >>> sampler = make_sampler("coarse-to-fine", default_space(), seed=0, n_coarse=64)
        >>> sampler.n_coarse, sampler.n_per_round, sampler.top_k
        (64, 16, 5)
    """
    key = sampler_key(name)
    if key == "random":
        _check_options(key, [], options)
        return RandomSampler(seed=seed)
    if key == "grid":
        points = options.pop("points_per_axis", 3)
        max_points = options.pop("max_points", 100_000)
        _check_options(key, ["points_per_axis", "max_points"], options)
        grid = space.grid(points)
        size = math.prod(len(values) for values in grid.values())
        if size > max_points:
            raise SpaceError(f"grid: the space has {size:,} grid points, more than max_points="
                             f"{max_points:,}; fix some parameters, narrow the choices or use "
                             "fewer points_per_axis")
        return AskTellGridSampler(grid, seed=seed)
    if key == "tpe":
        _check_options(key, _keywords(TPESampler), options)
        return TPESampler(seed=seed, **options)
    if key == "coarse-to-fine":
        _check_options(key, _keywords(CoarseToFineSampler), options)
        return CoarseToFineSampler(seed=seed, **options)
    raise ValueError(f"unknown sampler {name!r}{close_names(key, SAMPLERS)}; "
                     f"choose {', '.join(SAMPLERS)}")


class AskTellGridSampler(GridSampler):
    """Optuna's GridSampler, usable with ask-and-tell.

    GridSampler calls ``study.stop()`` when a tell finishes the grid, which raises outside
    ``study.optimize``; this one skips that there. Ask while ``not sampler.all_started(study)``
    (with trials in flight, ``is_exhausted`` stays false until they finish, and more asks would
    repeat running grid points).

    Example::

        >>> import optuna
        >>> sampler = AskTellGridSampler({"x": [0.0, 1.0]}, seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> while not sampler.all_started(study):
        ...     trial = study.ask()
        ...     _ = study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
        >>> len(study.trials)
        2
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError:  # study.stop() outside optimize: the caller checks all_started
            pass

    @property
    def n_points(self) -> int:
        """How many grid points there are."""
        return len(self._all_grids)

    def all_started(self, study: optuna.Study) -> bool:
        """Whether every grid point has a trial (running or finished) in ``study``."""
        started = {t.system_attrs["grid_id"] for t in study.get_trials(deepcopy=False)
                   if "grid_id" in t.system_attrs
                   and self._same_search_space(t.system_attrs["search_space"])}
        return len(started) >= self.n_points


def _check_options(key: str, valid: Sequence[str], options: dict) -> None:
    for option in options:
        if option not in valid:
            raise ValueError(f"sampler {key!r} has no option {option!r}"
                             f"{close_names(option, valid)}; options: {', '.join(valid) or 'none'}")


def _keywords(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "seed")]


def _storage(study: optuna.Study) -> tuple[optuna.storages.BaseStorage, int]:
    """The study's storage and id: private in Optuna, and the one way a sampler has to write a
    trial's attributes or to see the whole study (HyperbandPruner hands samplers a filtered
    study without user attributes, whose trials are one bracket's). Optuna's own samplers
    use the same two names."""
    return study._storage, study._study_id


class CoarseToFineSampler(BaseSampler):
    """Coarse to fine: sample the whole space at random, then keep shrinking a box, in
    sampling space, around the best trials so far and sample densely inside it.

    Sampling space is the coordinate each Optuna distribution is uniform in: r = log10 x for a
    log distribution (so r = log10 α for a learning rate and r = log10(1 − β) for an ema_beta
    axis, whose Optuna parameter holds 1 − β), r = x otherwise.

    **The rule.** A trial's round is fixed when it is asked (``before_trial``):

    - Round 0 samples every parameter uniformly in r over its whole range (categoricals
      uniformly over their choices).
    - Round k + 1 starts at the first ask after at least ``n_coarse`` (k = 0) or
      ``n_per_round`` (k ≥ 1) trials *of round k* have finished, completed or pruned, provided
      at least ``top_k`` trials can be ranked (below). Round 0 also ends once
      ``coarse_over()`` says so (a tune under a time budget: when half of it has passed), so
      that a run too short for ``n_coarse`` trials still spends its second half refining.
      Trials asked meanwhile stay in round k, so any number may be in flight (ask-and-tell
      with a population) and a round grows.
    - Round k + 1's box is computed once, when it starts, from the finished trials of all
      rounds, best first in the study's direction, compared like with like: by the value they
      reported at the latest step (epoch) that at least ``top_k`` completed or pruned trials
      reached, which under a pruner is a rung many trials share; trials that report nothing
      are ranked by final value, completed ones only. For each numeric parameter, take the best
      ``top_k`` completed trials that have it; the box is [min r, max r] over them, widened on
      each side by ``margin`` × its width, then, if narrower than ``min_width`` × the whole
      axis, widened about its centre to that width; shifted and clipped into the whole range.
      Integer axes snap the box to the integers inside it (the nearest one if none).
    - For each categorical parameter, round k + 1 samples only the values its top ``top_k``
      trials used; with probability ``explore`` it samples all values instead.
    - Every trial of round k draws each parameter it suggests uniformly in r inside round k's
      box (int axes: each integer in the box equally likely; log ints: 10^r rounded); a
      parameter that no completed trial has yet is drawn over its whole range. Conditional
      parameters are only drawn when the objective (``Space.suggest``) asks for them, i.e.
      when their condition holds.

    Defaults: ``n_coarse=32, n_per_round=16, top_k=5, margin=0.25, min_width=0.1,
    explore=0.0, coarse_over=None`` (round 0 ends by its count alone): with a population of
    64, the first 64 asks are coarse and later rounds refine around the best 5 while keeping
    at least a tenth of each axis.

    Pruned trials count toward finishing a round and rank by what they reported at the common
    step. Failed trials are ignored. The draw for (trial number, parameter) comes from a
    generator seeded with (``seed``, trial number, parameter name), so the same seed and the
    same order of asks and tells give the same parameters. Single objective only.

    **Records.** Each trial gets the user attr ``"c2f_round"``; the study gets the user attr
    ``"c2f_boxes"``, a list of ``{"round": k, "n_complete": completed trials when it started,
    "box": {optuna_name: [r_low, r_high]}, "choices": {optuna_name: [values]}}``. A parameter
    missing from a round's box (all of round 0) spans its whole range. The state lives in the
    study, so a new sampler on a resumed study goes on from its last round (one process asking).

    Example::

        >>> import optuna
        >>> sampler = CoarseToFineSampler(n_coarse=20, n_per_round=10, seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(lambda t: (t.suggest_float("lr", 1e-5, 1e-1, log=True) - 1e-3) ** 2,
        ...                n_trials=50)
        >>> [r["round"] for r in study.user_attrs["c2f_boxes"]]
        [0, 1, 2, 3]
    """

    def __init__(self, *, n_coarse: int = 32, n_per_round: int = 16, top_k: int = 5,
                 margin: float = 0.25, min_width: float = 0.1, explore: float = 0.0,
                 coarse_over: Callable[[], bool] | None = None,
                 seed: int | None = None) -> None:
        for key, value in (("n_coarse", n_coarse), ("n_per_round", n_per_round),
                           ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key, value, high in (("margin", margin, math.inf), ("min_width", min_width, 1.0),
                                 ("explore", explore, 1.0)):
            if not 0 <= value <= high:
                raise ValueError(f"{key} must be in [0, {high}], got {value!r}")
        self.n_coarse, self.n_per_round, self.top_k = n_coarse, n_per_round, top_k
        self.margin, self.min_width, self.explore = margin, min_width, explore
        self.coarse_over = coarse_over
        self._seed = seed if seed is not None else secrets.randbits(63)
        self._rounds: dict[tuple[int, int, int], dict] = {}  # (storage, study, round) → record

    def __repr__(self) -> str:
        return (f"CoarseToFineSampler(n_coarse={self.n_coarse}, n_per_round={self.n_per_round}, "
                f"top_k={self.top_k}, margin={self.margin}, min_width={self.min_width}, "
                f"explore={self.explore})")

    def reseed_rng(self) -> None:
        self._seed = secrets.randbits(63)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    # -- rounds -------------------------------------------------------------------------------

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._raise_error_if_multi_objective(study)
        if keys.ROUND in trial.user_attrs:
            return
        storage, study_id = _storage(study)
        rounds = list(storage.get_study_user_attrs(study_id).get(keys.BOXES, []))
        if not rounds:
            rounds.append({"round": 0, "n_complete": 0, "box": {}, "choices": {}})
            storage.set_study_user_attr(study_id, keys.BOXES, rounds)
        current = rounds[-1]
        trials = storage.get_all_trials(study_id, deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                       and keys.trial_round(t) == current["round"] for t in trials)
        need = self.n_coarse if current["round"] == 0 else self.n_per_round
        if current["round"] == 0 and self.coarse_over is not None and self.coarse_over():
            need = self.top_k  # the coarse stage's time is up: refine once trials rank
        ranked = self._ranked(trials, study.direction) if finished >= need else []
        if len(ranked) >= self.top_k:
            n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
            current = self._next_round(current["round"] + 1, ranked, n_complete)
            rounds.append(current)
            storage.set_study_user_attr(study_id, keys.BOXES, rounds)
        # a user attribute, where the report and optuna-dashboard look for it
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, keys.ROUND, current["round"])

    def _ranked(self, trials: Sequence[FrozenTrial], direction: StudyDirection
                ) -> list[FrozenTrial]:
        """Finished trials best first, compared like with like: by their reported value at
        the latest step that at least ``top_k`` completed or pruned trials reached (under a
        pruner few trials complete, but many reach the same rung); without reports, the
        completed trials by final value."""
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        reach: dict[int, int] = {}
        for t in done:
            for step in t.intermediate_values:
                reach[step] = reach.get(step, 0) + 1
        steps = [step for step, n in reach.items() if n >= self.top_k]
        if steps:
            step = max(steps)
            at = [t for t in done if math.isfinite(t.intermediate_values.get(step, math.nan))]
            return sorted(at, key=lambda t: sign * t.intermediate_values[step])  # ties: number
        complete = [t for t in done if t.state == TrialState.COMPLETE]
        return sorted(complete, key=lambda t: sign * t.value)

    def _next_round(self, number: int, ranked: list[FrozenTrial], n_complete: int) -> dict:
        box: dict[str, list[float]] = {}
        choices: dict[str, list] = {}
        names = dict.fromkeys(name for t in ranked for name in t.params)
        for name in names:
            top = [t for t in ranked if name in t.params][: self.top_k]
            dist = top[0].distributions[name]
            if isinstance(dist, CategoricalDistribution):
                choices[name] = list(dict.fromkeys(t.params[name] for t in top))
            else:
                rs = [_to_r(t.params[name], dist) for t in top]
                box[name] = list(self._widen(min(rs), max(rs), dist))
        return {"round": number, "n_complete": n_complete, "box": box, "choices": choices}

    def _widen(self, lo: float, hi: float, dist: BaseDistribution) -> tuple[float, float]:
        a, b = _r_bounds(dist)
        pad = self.margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
        least = self.min_width * (b - a)
        if hi - lo < least:
            mid = (lo + hi) / 2
            lo, hi = mid - least / 2, mid + least / 2
        if lo < a:
            lo, hi = a, hi + (a - lo)
        if hi > b:
            lo, hi = lo - (hi - b), b
        lo, hi = max(lo, a), min(hi, b)
        if isinstance(dist, IntDistribution):
            first, last = _int_range(lo, hi, dist)
            lo, hi = _to_r(first, dist), _to_r(last, dist)
        return lo, hi

    def _round(self, study: optuna.Study, trial: FrozenTrial) -> dict | None:
        """The record of the round ``trial`` was drawn in (``before_trial`` stored it)."""
        storage, study_id = _storage(study)
        # through the storage: the trial Optuna hands ``sample_independent`` is a copy taken
        # before ``before_trial`` wrote the round
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        number = storage.get_trial_user_attrs(trial_id).get(keys.ROUND, 0)
        key = (id(storage), study_id, number)
        if key not in self._rounds:
            for record in storage.get_study_user_attrs(study_id).get(keys.BOXES, []):
                self._rounds[(id(storage), study_id, record["round"])] = record
        return self._rounds.get(key)

    # -- sampling -----------------------------------------------------------------------------

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        record = self._round(study, trial) or {}
        rng = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())])
        dist = param_distribution
        if isinstance(dist, CategoricalDistribution):
            allowed = record.get("choices", {}).get(param_name, [])
            candidates = [c for c in dist.choices if any(_same(c, a) for a in allowed)]
            if not candidates or (self.explore > 0 and rng.random() < self.explore):
                candidates = list(dist.choices)
            return candidates[int(rng.integers(len(candidates)))]
        a, b = _r_bounds(dist)
        lo, hi = record.get("box", {}).get(param_name, (a, b))
        lo, hi = max(lo, a), min(hi, b)  # the distribution may have changed since
        if lo > hi:
            lo, hi = a, b
        if isinstance(dist, IntDistribution):
            return _sample_int(rng, lo, hi, dist)
        value = _from_r(rng.uniform(lo, hi), dist)
        if dist.step is not None:
            value = dist.low + round((value - dist.low) / dist.step) * dist.step
        return float(min(max(value, dist.low), dist.high))


def _r_bounds(dist: BaseDistribution) -> tuple[float, float]:
    return _to_r(dist.low, dist), _to_r(dist.high, dist)


def _to_r(value: float, dist: BaseDistribution) -> float:
    return math.log10(value) if dist.log else float(value)


def _from_r(r: float, dist: BaseDistribution) -> float:
    return 10.0**r if dist.log else float(r)


def _int_range(lo: float, hi: float, dist: IntDistribution) -> tuple[int, int]:
    """The first and last integers of ``dist`` whose r lies in [lo, hi] (else the nearest)."""
    count = (dist.high - dist.low) // dist.step
    j_lo = math.ceil((_from_r(lo, dist) - dist.low) / dist.step - 1e-9)
    j_hi = math.floor((_from_r(hi, dist) - dist.low) / dist.step + 1e-9)
    j_lo, j_hi = max(j_lo, 0), min(j_hi, count)
    if j_lo > j_hi:
        j_lo = j_hi = min(max(round((_from_r((lo + hi) / 2, dist) - dist.low) / dist.step), 0),
                          count)
    return dist.low + j_lo * dist.step, dist.low + j_hi * dist.step


def _sample_int(rng: np.random.Generator, lo: float, hi: float, dist: IntDistribution) -> int:
    first, last = _int_range(lo, hi, dist)
    if not dist.log:
        return int(first + rng.integers((last - first) // dist.step + 1) * dist.step)
    # uniform in log10 over [first − ½, last + ½], then rounded: the lecture's 10^r for ints
    n = round(10.0 ** rng.uniform(math.log10(first - 0.5), math.log10(last + 0.5)))
    return int(min(max(n, first), last))


def _same(a: Any, b: Any) -> bool:
    """Equal and both bool or both not (JSON keeps True apart from 1, Python does not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


# The configurations a new study tries first: the estimators' network (TabM-mini of 4
# sub-networks with PLR, as ``CaviarClassifier()`` and ``CaviarRegressor()`` fit it: the
# default space draws no ``tabm_k``, so such values go with the trial as
# ``QueuedTrial.outside``) and a RealMLP-like network, so that a short search starts from what
# is known to work untuned and from the network a user gets without a tune (bench/README.md,
# "The estimators' network in the warm start, again"; following the estimators' PLR and epochs
# by steps: 0.997x over 18 runs on six tables never used for it, 0.979x on the ten tables,
# 1.001x on the check tables, "The warm start follows the estimators"); and the estimators'
# network on RealMLP's schedule, trained to its end, for targets close to a function of the
# columns ("The estimators' network on RealMLP's schedule in the warm start"); and for a
# regression, the seeds' linear regression solved exactly at three λ (``LINEAR_EXACT``), and
# beside it on the numeric columns' periodic features at four (``PERIODIC_EXACT``).
WARM_START = (ESTIMATOR_NETWORK, REALMLP_LIKE, ESTIMATOR_NETWORK_DECAYED,
              ESTIMATOR_NETWORK_DECAYED_SIGMA1, *LINEAR_EXACT, *PERIODIC_EXACT)
# Warm-start networks whose epochs follow the table's rows as the estimators' do
# (``hyperparams.epochs_by_steps``).
BY_STEPS = (ESTIMATOR_NETWORK, ESTIMATOR_NETWORK_DECAYED, ESTIMATOR_NETWORK_DECAYED_SIGMA1)
# Warm-start networks that train to the end of their schedule: a rate decayed to 0 does its
# finest fitting last, past plateaus that early stopping would end it on. Those of one
# structure (the two σ) share a group (``Tuner.fill``).
FULL_SCHEDULE = (ESTIMATOR_NETWORK_DECAYED, ESTIMATOR_NETWORK_DECAYED_SIGMA1)


@dataclass(frozen=True)
class QueuedTrial:
    """A trial asked with known values (``study.enqueue_trial``): a warm start's network,
    or a re-queued trial of a dead worker. ``params``: Optuna's, of the axes the space draws;
    ``outside``: a configuration's values of hyperparameters the space does not name (in a
    space of a few axes, the RealMLP-like network's optimizer, dropout, decay and PLR), which
    the trial carries as a user attribute (``keys.OUTSIDE_SPACE``) and trains with."""

    params: dict[str, Any]
    outside: dict[str, Any] = field(default_factory=dict)
    warm: bool = True  # False: a re-queued trial that was not a warm start's
    # the estimators' network: where its turns would not end it within a time budget, it
    # trains before the other groups (``Tuner.behind``)
    first: bool = False
    full_schedule: bool = False  # trains all its epochs: no early stopping (FULL_SCHEDULE)

    @classmethod
    def retried(cls, params: dict[str, Any], attrs: dict[str, Any]) -> QueuedTrial:
        """A re-queued trial (``SharedStudy.next_retry``): asked again as it was."""
        return cls(params, attrs.get(keys.OUTSIDE_SPACE) or {}, bool(attrs.get(keys.WARM)),
                   bool(attrs.get(keys.FIRST)), bool(attrs.get(keys.FULL_SCHEDULE)))

    def attrs(self) -> dict[str, Any]:
        """The user attributes the trial is enqueued with."""
        return ({keys.WARM: True} if self.warm else {}) | (
            {keys.FIRST: True} if self.first else {}) | (
            {keys.FULL_SCHEDULE: True} if self.full_schedule else {}) | (
            {keys.OUTSIDE_SPACE: self.outside} if self.outside else {})


def warm_start(space: Space, configs: Sequence[Any] = WARM_START,
               rows: int | None = None, task: str | None = None) -> list[QueuedTrial]:
    """The warm-start trials of each of ``configs`` (caviar's vocabulary) that ``space`` can
    draw; configurations outside it are left out, and those of ``solver="exact"`` unless
    ``task`` is "regression". Those have no hidden layer and one epoch, which the space's
    axes need not hold: their Optuna values are the nearest the axes hold (the fewest, the
    narrowest layers; the fewest epochs), and they train as configured (``outside``).

    ``rows``: the training rows. The estimators' network (``BY_STEPS``: on either schedule)
    then trains the epochs the estimators give it on as many rows (``hyperparams.epochs_by_steps``)
    unless the space fixes ``epochs``; more than the axis holds go with the trial as
    ``outside``, its Optuna value being the axis's top.

    Every axis the configuration activates must hold its value: a choice among its values,
    a fixed axis equal to it, a number within the bounds (a zero on a log axis whose floor
    stands for "off", such as l2, takes the floor). ``depth`` and ``width`` come from equal
    hidden layers. A configuration that leaves the numeric scaling to the table (None) is
    tried with each scaling the space searches. A hyperparameter the space does not name
    keeps the configuration's value (``QueuedTrial.outside``)."""
    out: list[QueuedTrial] = []
    for config in configs:
        config = resolve(config)
        exact = config["solver"] == "exact"
        if exact and task != "regression":
            continue  # the normal equations solve a regression's cost only
        by_steps = config in BY_STEPS  # its epochs follow the rows
        drawn = _nearest_drawn(space, config) if exact else config
        # "the table's own scaling" (None): the configuration under each one the space holds
        scalings = (space.numeric_values() if config["numeric"] is None
                     else (config["numeric"],))
        for scaling in scalings:
            params = _params_in(space, drawn.replace(numeric=scaling))
            if params is None:
                continue
            outside = _outside(space, config) | _moved(space, drawn, config)
            if rows and by_steps and _draws_epochs(space):
                epochs = epochs_by_steps(config["epochs"], config["batch_size"], rows)
                if epochs != config["epochs"]:
                    outside["epochs"] = epochs
                    if "epochs" in space and space["epochs"].high is not None:  # a range
                        axis = space["epochs"]
                        params[axis.optuna_name] = axis.encode(min(epochs, axis.high))
            known = QueuedTrial(params, outside, first=config == ESTIMATOR_NETWORK,
                                full_schedule=config in FULL_SCHEDULE)
            if known not in out:
                out.append(known)
    return out


def _nearest_drawn(space: Space, config: Any) -> Any:
    """``config`` with the layers, epochs and numeric embedding nearest to its own that the
    space's axes hold: its fewest hidden layers of its narrowest width, its fewest epochs,
    none for an embedding the axis does not hold (periodic)."""
    def lowest(name: str) -> Any:
        p = space[name]
        return p.value if p.kind == "fixed" else min(p.values) if p.kind == "choice" else p.low

    changes: dict[str, Any] = {}
    if set(SPACE_ONLY) & set(space):
        changes["hidden_layer_sizes"] = tuple(
            [lowest("width") if "width" in space else SPACE_ONLY["width"].default]
            * int(lowest("depth") if "depth" in space else SPACE_ONLY["depth"].default))
    if "epochs" in space:
        changes["epochs"] = max(config["epochs"], int(lowest("epochs")))
    embedding = space["numeric_embedding"] if "numeric_embedding" in space else None
    if embedding is not None and not _holds(embedding, config["numeric_embedding"]):
        held = [embedding.value] if embedding.kind == "fixed" else list(embedding.values)
        changes["numeric_embedding"] = "none" if "none" in held else held[0]
    return config.replace(**changes)


def _holds(p: Any, value: Any) -> bool:
    """Whether the choice or fixed axis ``p`` holds ``value``."""
    return _same(p.value, value) if p.kind == "fixed" else any(_same(v, value)
                                                                for v in p.values)


def _moved(space: Space, drawn: Any, config: Any) -> dict[str, Any]:
    """``config``'s values where the trial's drawn values (``_nearest_drawn``) differ, and of
    axes those values leave inactive (a periodic network drawn as none has no plr_sigma)
    where ``config`` is not at the default: what the trial must carry to train as
    ``config``."""
    values = dict(drawn)
    inactive = {name for name in space if name in values and not _active(space[name], values)}
    return {name: config[name] for name in config
            if not _same(drawn[name], config[name])
            or (name in inactive and not _same(config[name], DEFAULTS[name]))}


def _draws_epochs(space: Space) -> bool:
    """Whether a warm-start network's epochs are the search's to set: not fixed by the space."""
    return "epochs" not in space or space["epochs"].kind != "fixed"


def _outside(space: Space, config: Any) -> dict[str, Any]:
    """``config``'s values that differ from the defaults, of hyperparameters the space does
    not name (so its trials would take the default)."""
    named = set(space) | ({"hidden_layer_sizes"} if set(SPACE_ONLY) & set(space) else set())
    return {name: config[name] for name in config
            if name not in named and not _same(config[name], DEFAULTS[name])}


def _params_in(space: Space, config: Any) -> dict[str, Any] | None:
    sizes = tuple(config["hidden_layer_sizes"])
    values = dict(config)
    if sizes and len(set(sizes)) == 1:
        values.update(depth=len(sizes), width=sizes[0])
    params: dict[str, Any] = {}
    for name in space:
        p = space[name]
        if not _active(p, values):
            continue  # inactive for this configuration
        if name not in values:
            return None  # depth and width of unequal layers
        value = values[name]
        if p.kind in ("fixed", "choice"):
            if not _holds(p, value):
                return None
            if p.kind == "fixed":
                continue
        elif value is None:
            return None  # "the schedule's own rate" has no value on the axis
        elif value == 0 and p.kind == "log_uniform" and p.low <= 1e-3:
            value = p.low  # the axis's floor stands for zero
        elif not p.low <= value <= p.high:
            return None
        params[p.optuna_name] = p.encode(value)
    return params


def _active(p: Any, values: dict[str, Any]) -> bool:
    """Whether axis ``p`` is drawn for a configuration of ``values`` (its ``when`` holds)."""
    return all(_value(values, k) in allowed for k, allowed in p.when.items())


def _value(values: dict[str, Any], name: str) -> Any:
    value = values.get(name)
    return tuple(value) if isinstance(value, list) else value
