"""A worker's link to the study in the storage, beside its in-memory working copy.

The sampler and the pruner work on the working copy (a storage round trip for every report,
prune check and suggestion would cost more than the training). What makes it one study
across workers:

- *numbers*: every trial is created in the storage when it is asked, RUNNING, with its
  parameters and the worker that runs it, in one transaction; the storage numbers it, under
  its lock on the study row, so numbers are unique whoever asks. The trial's storage id
  follows it to the archive, which later updates that trial (``archive.py``);
- *sharing*: at every slot refill (at most every ``REFRESH_S``) the finished trials of other
  workers that the working copy lacks are added to it, with their intermediate values and
  the pruner's rung attributes, so the sampler draws knowing them and the pruner compares
  against them. Optuna's cached RDB storage reads only the trials new or unfinished since
  the last read;
- *faults*: one heartbeat per running trial every ``HEARTBEAT_S`` (batched at an epoch
  boundary); at a refill, ``fail_stale_trials`` fails the trials of a worker that stopped
  beating and re-queues them (``RetryFailedTrialCallback``) as WAITING trials, which a live
  worker claims (``set_trial_state_values(..., RUNNING)`` is atomic: False when another
  worker took it) and trains with their parameters;
- *budget*: a trials budget counts the study's trials, all workers' (running ones too);
  near the end, the count and the creation happen under a file lock, so workers on one
  machine never overshoot it.

``seconds`` is the time spent in storage calls, for bench/workers.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import keys
from .storage import HEARTBEAT_S, quiet

REFRESH_S = 0.25  # the least time between two reads of other workers' trials
LOCK_MARGIN = 256  # trials before the budget's end from which creation counts under a lock
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class SharedStudy:
    """The storage side of a worker's working copy (see the module's docstring)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study,
                 working: optuna.Study, worker: str, lock: Path | None = None):
        """``storage``: the storage object of ``study`` (the database study); ``working``:
        the in-memory copy; ``worker``: this process's name (host:pid); ``lock``: a file
        the workers of one machine share to keep a trials budget exactly."""
        self.storage, self.study, self.working, self.worker = storage, study, working, worker
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.lock = lock
        self.beats = storage.get_heartbeat_interval() is not None  # RDB storages
        self.seen: set[int] = set()  # storage numbers the working copy holds or runs
        self.running: dict[int, tuple[int, int]] = {}  # working number -> (trial id, number)
        self.retries: list[tuple[int, int, dict[str, Any]]] = []  # claimed: id, number, params
        self._serving: tuple[int, int] | None = None  # the claimed trial being asked now
        self.count = 0  # trials in the study when last seen (every worker's, any state)
        self.others = 0  # other workers' trials running or waiting when last seen
        self.seconds = 0.0  # time spent in storage calls
        self.created = 0  # trials this worker ran
        # finished trials the archive has not written yet: (journal line, trial id); they
        # are still RUNNING in the storage, so their heartbeats go on
        self.unwritten: list[tuple[int, int]] = []
        self._refreshed = -math.inf
        self._beaten = time.monotonic()

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    # -------------------------------------------------------------- sharing

    def refresh(self, force: bool = False) -> list[FrozenTrial]:
        """Add the finished trials of other workers to the working copy, fail the trials of
        dead workers, claim re-queued ones; returns the trials added."""
        now = time.monotonic()
        if not force and now - self._refreshed < REFRESH_S:
            return []
        self._refreshed = now
        with self._timed(), quiet():
            optuna.storages.fail_stale_trials(self.study)  # a no-op without heartbeats
            trials = self.study.get_trials(deepcopy=False)
        self.count = len(trials)
        new = [t for t in trials if t.state in FINISHED and t.number not in self.seen]
        self.working.add_trials([_copy(t) for t in new])
        self.seen.update(t.number for t in new)
        self.others = sum(t.state in (TrialState.RUNNING, TrialState.WAITING)
                          and t.number not in self.seen for t in trials)
        for t in trials:
            if t.state == TrialState.WAITING and t.params and t.number not in self.seen:
                self._claim(t)
        return new

    def _claim(self, trial: FrozenTrial) -> None:
        """Take a re-queued trial, unless another worker was first."""
        with self._timed():
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial.number)
            if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return
        self.seen.add(trial.number)
        self.retries.append((trial_id, trial.number, dict(trial.params)))

    def next_retry(self) -> dict[str, Any] | None:
        """The parameters of a claimed re-queued trial; the next ``create`` is that trial."""
        if not self.retries:
            return None
        trial_id, number, params = self.retries.pop(0)
        self._serving = (trial_id, number)
        return params

    # -------------------------------------------------------------- trials

    @contextlib.contextmanager
    def asking(self, budget: int | None) -> Iterator[bool]:
        """Around asking one new trial: yields whether the study's trials budget (``budget``,
        None: none) allows one more; near its end, under the machine's lock until the trial
        is created, so two workers never both take the last one."""
        if self._serving is not None or budget is None or self.count < budget - LOCK_MARGIN:
            yield budget is None or self.count < budget or self._serving is not None
            return
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644) if self.lock else None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            with self._timed():  # the cached storage reads only new or running trials
                self.count = len(self.study.get_trials(deepcopy=False))
            yield self.count < budget
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def create(self, trial: optuna.Trial, attrs: dict[str, Any]) -> int:
        """Create the storage trial of the working copy's ``trial`` (asked, its parameters
        drawn), RUNNING, with ``attrs`` and this worker's name; returns its storage number.
        A claimed re-queued trial is taken over instead."""
        attrs = {**attrs, keys.WORKER: self.worker}
        with self._timed():
            if self._serving is not None:
                trial_id, number = self._serving
                self._serving = None
                for key, value in attrs.items():
                    self.storage.set_trial_user_attr(trial_id, key, value)
            else:
                template = optuna.trial.FrozenTrial(
                    number=-1, state=TrialState.RUNNING, value=None, values=None,
                    datetime_start=None, datetime_complete=None, params=trial.params,
                    distributions=trial.distributions, user_attrs=attrs, system_attrs={},
                    intermediate_values={}, trial_id=-1)
                trial_id = self.storage.create_new_trial(self.study_id, template)
                number = self.storage.get_trial_number_from_id(trial_id)
            if self.beats:  # a trial never beaten is never found stale
                self.storage.record_heartbeat(trial_id)
        self.count = max(self.count, number + 1)
        self.created += 1
        self.seen.add(number)
        self.running[trial.number] = (trial_id, number)
        return number

    def finish(self, trial: optuna.Trial) -> tuple[int, int]:
        """The storage trial id and number of the working copy's ``trial``, which finished."""
        return self.running.pop(trial.number)

    def number(self, trial: optuna.Trial) -> int:
        return self.running[trial.number][1]

    def journaled(self, line: int, trial_id: int) -> None:
        """The finished trial ``trial_id`` is journal line ``line`` until the writer has it."""
        self.unwritten.append((line, trial_id))

    def heartbeat(self, written: int = 0) -> None:
        """A heartbeat for each running trial and each finished one the writer has not
        written (``written``: journal lines it has), every ``HEARTBEAT_S / 2`` (call it
        every epoch)."""
        now = time.monotonic()
        if not self.beats or now - self._beaten < HEARTBEAT_S / 2:
            return
        self._beaten = now
        self.unwritten = [(line, i) for line, i in self.unwritten if line >= written]
        with self._timed():
            for trial_id in [i for i, _ in self.running.values()] + [
                    i for _, i in self.unwritten]:
                self.storage.record_heartbeat(trial_id)


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A finished storage trial as a new trial for the working copy."""
    return optuna.trial.create_trial(
        state=trial.state, value=trial.value if trial.state == TrialState.COMPLETE else None,
        params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values)
