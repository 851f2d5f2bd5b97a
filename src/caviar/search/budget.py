"""What a search's time costs and who may spend it: the estimated seconds of an epoch
(``epoch_cost``, the scheduler's turns), of a refit or a bag of the kept networks, and of the
end of a run (the final model, the report, the importance), the shares of a budget the
coarse round, the seeds and a bag may take, and ``Budget``, the trials and seconds a study
may spend with the time it holds back for its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from ..engine import Population
from ..engine.exact import LBFGS_ITERATIONS
from ..engine.network import Structure
from ..engine.threads import main_thread_cpu
from ..explain import IMPORTANCE_REPEATS
from ..hyperparams import structure_key
from .ensemble import seed_epochs

# What an epoch costs, in seconds, fitted on this project's 2-core CPU (bench/README.md): a
# fixed cost per minibatch step (Python and operator dispatch), then per member the
# multiply-adds and the per-unit work (activation, dropout, batch norm) of every row, and the
# optimizer's passes over the parameters at every step. The scheduler needs only ratios, and
# an estimate rather than the clock keeps a seeded run reproducible.
STEP_S, MAC_S, UNIT_S, PARAM_S = 1e-3, 2e-11, 1.7e-8, 3e-9
# A classifier's solve (``exact.softmax_regression``) is L-BFGS's evaluations of the cost on
# every row, in float64, each a fixed cost (some twenty operations' dispatch) and its two thin
# products, far slower a multiply-add than the minibatch steps' wide float32 ones: fitted on
# digits and three synthetic tables (1,077-12,000 rows, 20-200 columns, 2-10 classes:
# 0.35-5.0 ms an evaluation, 33-87 evaluations a member, priced at the cap; bench/README.md,
# "The seeds' softmax regression, solved").
SOLVE_EVAL_S, SOLVE_MAC_S = 3e-4, 5.5e-10


def epoch_cost(population: Population, rows: int, members: int | None = None) -> float:
    """Estimated seconds of one epoch of ``population`` (or of ``members`` members of its
    structure) over ``rows`` rows."""
    return structure_epoch_cost(population.structure, rows,
                                population.size if members is None else members)


def structure_epoch_cost(s: Structure, rows: int, members: int) -> float:
    """Estimated seconds of one epoch of ``members`` members of structure ``s`` over ``rows``
    rows (``epoch_cost``)."""
    d = s.layer_sizes[0]
    if s.exact and s.task == "regression":  # in float64: XᵀX once, a Cholesky solve a member
        return STEP_S + 2 * MAC_S * (rows * d * d + members * d ** 3 / 3)
    if s.exact:  # L-BFGS, each member alone: up to LBFGS_ITERATIONS evaluations of the cost
        macs = 2 * rows * d * s.layer_sizes[-1]  # its forward and backward products
        return STEP_S + members * LBFGS_ITERATIONS * (SOLVE_EVAL_S + macs * SOLVE_MAC_S)
    steps, macs, units, parameters = epoch_terms(s, rows, members)
    return steps * STEP_S + macs * MAC_S + units * UNIT_S + parameters * PARAM_S


def epoch_terms(s: Structure, rows: int, members: int) -> tuple[int, float, float, float]:
    """What an epoch of ``members`` members of a stepped structure ``s`` over ``rows`` rows
    does, each count priced by one of the constants above: minibatch steps (``STEP_S``),
    multiply-adds (``MAC_S``), unit-rows (``UNIT_S``) and parameter-steps (``PARAM_S``)."""
    sizes = s.layer_sizes
    macs = sum(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:]))  # ≈ parameters
    units = sum(sizes[1:])
    if s.plr_columns:  # per numeric column: θ, sin, cos over k, and PLR's 2k → m layer
        n, k, m = len(s.plr_columns), s.plr_frequencies, s.plr_dim
        if s.plr_linear:
            macs += n * 2 * k * m
        units += n * (3 * k + (m if s.plr_linear else 0))
    steps = math.ceil(rows / s.batch_size)
    parameters = macs
    if s.tabm_k > 1:  # TabM-mini: every row k times, k output layers and r
        parameters += (s.tabm_k - 1) * sizes[-2] * sizes[-1] + s.tabm_k * sizes[0]
    row_passes = members * rows * s.tabm_k
    return steps, row_passes * macs, row_passes * units, members * steps * parameters


def refit_cost(networks: Sequence[Population], rows: int, folds: int = 0) -> float:
    """Estimated seconds to train the configurations of ``networks`` (one member each)
    afresh on ``rows`` rows for the epochs each ran, those of one structure as one
    population (``training.refit_networks``); with ``folds``, as a bag: ``folds`` members
    each, for up to ``seed_epochs`` (``bagging.bag_networks``)."""
    costs = prefix_costs(networks, rows, folds)
    return costs[-1] if costs else 0.0


def prefix_costs(networks: Sequence[Population], rows: int, folds: int = 0) -> list[float]:
    """``refit_cost`` of each of ``networks``' prefixes: element i, of the first i + 1
    (one pass: a structure's populations pay their per-step overhead once, for the most
    epochs any of its networks trains, and each member its own epochs)."""
    groups: dict[tuple, tuple[float, float, int, int]] = {}  # fixed, member, max, sum
    total, costs = 0.0, []
    for n in networks:
        key = structure_key(n.hyperparameters[0])
        if key not in groups:
            fixed = epoch_cost(n, rows, members=0)  # the per-step overhead
            groups[key] = (fixed, epoch_cost(n, rows, 1) - fixed, 0, 0)
        fixed, member, most, epochs = groups[key]
        before = most * fixed + epochs * member * max(folds, 1)
        own = seed_epochs(n) if folds else max(1, int(n.epoch[0]))
        most, epochs = max(most, own), epochs + own
        groups[key] = (fixed, member, most, epochs)
        total += most * fixed + epochs * member * max(folds, 1) - before
        costs.append(total)
    return costs


# What the end of a run costs, in seconds of this project's 2-core CPU (not scaled by the
# run's training speed, which on tiny tables measures the epoch model's error, not the
# machine: wine's epochs ran 13× their estimate): the final model, the test scores and the
# report's fixed part (END_S, fitted on wage and digits on an idle machine: 3.0 s and 8.1 s
# of end with the report); per trial, reading the trials back for the model and the
# leaderboard (END_TRIAL_S), which every run does, and the report (REPORT_TRIAL_S), only a
# run that writes one (a 60 s tune, both cores busy: Carseats' 2,111 trials 1.0 ms a trial
# beyond END_S and 4.0 ms for the report, wage's 917 trials 4.1 ms for the report; 1.5 ms
# since the report draws a parameter's rounds as one trace and reads the study tune has open:
# 40 s tunes, both cores busy, ended in 1.0 s + 1.7 ms a trial, END_TRIAL_S included:
# bench/README.md, "The report's time per trial"); and the
# permutation importance, timed once on the model of the moment and taken PREDICT_FACTOR
# times (digits, a 10 s tune: 2.9 s estimated, 2.1 s taken). The refit measured twice its
# refit_cost (populations built, networks exported: 4.4 s for 1.8 s on wage); and the
# archive writer's rate, for the backlog it must write (bench/README.md, "Budget").
END_S, PREDICT_FACTOR = 2.0, 2.0
END_TRIAL_S, REPORT_TRIAL_S = 0.001, 0.0015
REFIT_FACTOR, WRITER_TRIALS_PER_S = 2.0, 30.0
# A bag measured 0.82-1.51 times its refit_cost (seven tables, untimed: bench/README.md, "The
# bag chooses by out-of-fold score"): held back at the refit's factor, a run that bagged
# ended 8-11 s early and small tables' bags were declined at half their real cost
BAG_FACTOR = 1.5
# The report's permutation importance ranks columns; it may not take the search's time: the
# tuner holds back at most this share of a time budget for it, and at the end it makes fewer
# shuffles, or none, when they would not end within the budget (digits: 2.6 s a shuffle of
# its 64 columns, a quarter of a 10 s tune).
IMPORTANCE_SHARE = 0.1


# END_S and the writer's measured rate are seconds of a core the run has to itself. On a
# machine busy with other work its threads also wait for a core, and those take longer by as
# much (Ecdat's Hedonic at 15 s beside two busy processes on the two cores: its end took
# 8.1 s, not 4.9, and the run 19.8 s). The kernel counts both for each thread (/proc's
# schedstat: nanoseconds run, nanoseconds waited while ready to run), so a budget scales
# them by its main thread's (run + wait) / run since the budget began (``Budget.slowdown``):
# 1 on an idle core, 2 where it got half of one. It needs this much of the main thread's
# running to say (before it, and where the kernel does not count, it is 1), and it is at
# most MAX_SLOWDOWN.
SLOWDOWN_MIN_RUN_S, MAX_SLOWDOWN = 0.1, 20.0


def end_seconds(trials: int, report: bool = True, slowdown: float = 1.0) -> float:
    """The end of a run but its refit and importance, estimated: the final model, the test
    scores and the report (``END_S``, fitted on an idle machine: times ``slowdown``, what
    other work makes a second of it take, ``Budget.slowdown``); reading the trials back
    (``END_TRIAL_S`` each); and the report's part per trial when the run writes one
    (``report``; a run without it holds no time back for what it does not do). The
    per-trial costs were fitted with both cores busy, so they are not slowed again (slowed,
    they stopped a busy small table's search of 714 trials 7.5 s into 15 s, its end taking
    3.4 s)."""
    return END_S * slowdown + trials * (END_TRIAL_S + (REPORT_TRIAL_S if report else 0.0))


def short_budget_warning(time_budget: float, prepared: float, searched: float,
                         reserved: float, completed: int) -> str | None:
    """One line for a time budget too short to search in, or None: where no trial completed
    and the search had fewer seconds than the run's fixed ones, the ``prepared`` seconds
    before it (reading and preparing the table; on the command line, the imports) and the
    ``reserved`` ones held back after it (the model, its scores and the report), which a
    small table does not shorten: 5 s on 300 rows left 0.7 s and a model of one epoch, no
    better than the constant. It names a budget of twice the fixed seconds, rounded up to
    5 s, which leaves the search as many."""
    fixed = prepared + reserved
    if completed or searched >= fixed:
        return None
    suggested = 5 * math.ceil(2 * fixed / 5)
    return (f"the time budget of {time_budget:g} s left {searched:.1f} s to search, after "
            "preparing the table and before the model, its scores and the report, and no "
            f"trial completed: the model is barely trained; give a time budget of {suggested} s "
            "or more")


def importance_repeats(seconds: float | None, per_repeat: float) -> int:
    """The shuffles of each column the end's permutation importance makes:
    ``IMPORTANCE_REPEATS``, or as many as end within ``seconds`` (None: no time budget), each
    taking ``per_repeat`` (0: none)."""
    if seconds is None:
        return IMPORTANCE_REPEATS
    return max(0, min(IMPORTANCE_REPEATS, int(seconds / max(per_repeat, 1e-9))))


# the share of a budget the coarse search spends: coarse-to-fine's first round under a time
# budget, and the default tuner before PBT refines its best; an even split, fixed before it
# was measured (bench/README.md, "PBT after a coarse search", "The coarse round's time")
COARSE_SHARE = 0.5
# The most of a time budget the seeds of the best configuration (``Tuner.add_seeds``, asked
# for with ``tune(seed_ensemble=N)``) may take: a quarter, a round share fixed before it was
# measured; fewer seeds train when fewer fit. Off by default: at equal time they were a wash
# (bench/README.md, "Seeds of the best network").
SEED_SHARE = 0.25
# The most of a time budget a bag of the kept model (``tune(refit="bag")``) may take: the
# seeds' quarter, for the same reason (the search's time is worth more than a costly end);
# a bag estimated to take more is declined, and the model stays as searched. (Held back
# whatever its cost, a 60 s search lost trials to it and 2.5% on the ten tables:
# bench/README.md, "Bagging over folds".)
BAG_SHARE = SEED_SHARE


def bag_declined(seconds: float, time_budget: float | None) -> bool:
    """Whether a bag estimated at ``seconds`` is too costly for ``time_budget``."""
    return time_budget is not None and seconds > BAG_SHARE * time_budget


class Budget:
    """The trials and seconds a study may spend; ``spent``: seconds earlier runs spent."""

    def __init__(self, trials: int | None, time_budget: float | None, spent: float,
                 start: float | None = None, reason: str = "time budget"):
        """``start``: when this run began (``time.monotonic()``; default now), so that
        preparing the data counts; ``reserve``: seconds held back for the end of the run
        (the final model and the report), which the tuner keeps up to date; ``reason``: what
        a trial its end stops records (``keys.STOPPED``)."""
        self.trials, self.time_budget, self.spent = trials, time_budget, spent
        self.start = time.monotonic() if start is None else start
        self.reason = reason
        self.reserve = 0.0
        self._cpu_start = main_thread_cpu()  # for slowdown

    @property
    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.start

    def slowdown(self) -> float:
        """How many times an idle core's seconds CPU work takes on this machine now: the main
        thread's (run + wait) / run since the budget began (1 until it has run
        ``SLOWDOWN_MIN_RUN_S``, or where the kernel does not count)."""
        now = main_thread_cpu()
        if now is None or self._cpu_start is None:
            return 1.0
        run, wait = now[0] - self._cpu_start[0], now[1] - self._cpu_start[1]
        if run < SLOWDOWN_MIN_RUN_S:
            return 1.0
        return min(max((run + wait) / run, 1.0), MAX_SLOWDOWN)

    def out_of_time(self) -> bool:
        """Whether the time left is only what the end of the run needs."""
        return not self.fits(0.0)

    def deadline(self) -> float | None:
        """When (``time.monotonic()``) the work before the time held back must end; None
        without a time budget."""
        if self.time_budget is None:
            return None
        return time.monotonic() + self.time_budget - self.elapsed - self.reserve

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` of work started now would end before the time held back."""
        return (self.time_budget is None
                or self.elapsed + self.reserve + seconds < self.time_budget)

    def first(self, share: float, started: int, reason: str) -> Budget:
        """The first ``share`` of what is left of this budget (its trials beyond the
        ``started`` ones, its seconds from now), on the same clock; ``reason``: what the
        trials its end stops record."""
        trials = (None if self.trials is None
                  else started + max(1, math.ceil(share * (self.trials - started))))
        seconds = (None if self.time_budget is None
                   else self.elapsed + share * (self.time_budget - self.elapsed))
        share = Budget(trials, seconds, self.spent, start=self.start, reason=reason)
        share._cpu_start = self._cpu_start  # the same run: its slowdown since it began
        return share

    def share_passed(self, share: float) -> Callable[[], bool] | None:
        """A test of whether ``share`` of the time budget has passed (None without one)."""
        if self.time_budget is None:
            return None
        return lambda: self.elapsed >= share * self.time_budget

    def may_ask(self, started: int) -> bool:
        """``started``: trials of this study that are finished or running."""
        if self.out_of_time():
            return False
        return self.trials is None or started < self.trials
