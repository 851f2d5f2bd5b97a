"""A worker's link to the study in the storage, beside its in-memory working copy.

The sampler and the pruner work on the working copy (a storage round trip for every report,
prune check and suggestion would cost more than the training). What makes it one study
across workers, with the storage traffic batched (``rdb.py``: one transaction per batch):

- *numbers*: every trial is created in the storage when it is asked, RUNNING, with its
  parameters, the worker that runs it and a heartbeat; the trials asked at one slot refill
  are created together, in one transaction, by this worker's storage thread while training
  goes on. The storage numbers them under its lock on the study row, so numbers are unique
  whoever asks; a trial's number is waited for only when it finishes. Its storage id follows
  it to the archive, which later finishes that trial (``archive.py``);
- *sharing*: at every slot refill (at most every ``REFRESH_S``) one light query reads the
  states of the study's trials from the oldest one not yet finished elsewhere, and the
  finished trials of other workers that the working copy lacks are read (without their
  curves) and added to it, with their intermediate values and the pruner's rung
  attributes, so the sampler draws knowing them and the pruner compares against them;
- *faults*: a heartbeat for all this worker's running trials (and finished ones its writer
  has not written) in one transaction every ``HEARTBEAT_S / 2``, from the storage thread;
  once per ``HEARTBEAT_S``, ``fail_stale_trials`` fails the trials of a worker that stopped
  beating and re-queues them (``RetryHeartbeatStaleTrialCallback``) as WAITING trials,
  which a live worker claims (``set_trial_state_values(..., RUNNING)`` is atomic: False
  when another worker took it) and trains with their parameters. While the storage cannot
  be reached, reads and heartbeats are skipped and creation waits, retrying with backoff
  (``storage.patiently``);
- *budget*: a trials budget counts the study's trials, all workers' (running ones too), a
  re-queued copy counting for the lost trial it replaces; near the end, the count and the
  creation happen under a file lock, so workers on one machine never overshoot it.

``seconds`` is the time the training waited for the storage, ``background_seconds`` the
storage thread's CPU time, for bench/workers.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import keys, rdb
from .storage import HEARTBEAT_S, STORAGE_ERRORS, patiently, quiet

REFRESH_S = 0.25  # the least time between two reads of other workers' trials
LOCK_MARGIN = 256  # trials before the budget's end from which creation counts under a lock
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RETRIED = "failed_trial"  # the system attribute of a re-queued trial (Optuna's callback)
# a re-queued trial's user attributes (Optuna's callback copies them) that a retry keeps:
# a warm start's trial trains alone again (first, if it was), with the values its space
# does not draw
RETRIED_ATTRS = (keys.WARM, keys.FIRST, keys.OUTSIDE_SPACE)


class SharedStudy:
    """The storage side of a worker's working copy (see the module's docstring)."""

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study,
                 working: optuna.Study, worker: str, lock: Path | None = None):
        """``storage``: the storage object of ``study`` (the database study); ``working``:
        the in-memory copy; ``worker``: this process's name (host:pid); ``lock``: a file
        the workers of one machine share to keep a trials budget exactly."""
        self.storage, self.study, self.working, self.worker = storage, study, working, worker
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.lock = lock
        self.beats = storage.get_heartbeat_interval() is not None
        self.seen: set[int] = set()  # storage numbers the working copy holds or runs
        self.running: dict[int, tuple[int, int]] = {}  # working number -> (trial id, number)
        # claimed re-queued trials: id, number, params, the user attributes that make the
        # trial what it was (a warm start's, ``RETRIED_ATTRS``)
        self.retries: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []
        self._serving: tuple[int, int] | None = None  # the claimed trial being asked now
        # asked trials not created in the storage yet: created together at ``flush``
        self.pending: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        self._eager = False  # near a budget's end: create each trial as it is asked
        self.count = 0  # trials in the study when last seen (every worker's, any state)
        self.requeued = 0  # of them, re-queued copies of lost trials (they replace those)
        self.others = 0  # other workers' trials running or waiting when last seen
        self.low = 0  # trial ids below this are finished and in the working copy, or ours
        self.seconds = 0.0  # time the training waited for storage calls
        self.background_seconds = 0.0  # CPU time the storage thread spent on them
        # creations and heartbeats run in a thread of their own: SQLite's lock waits and
        # the database's round trips release the interpreter, so training goes on
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caviar-storage")
        self._creating: list[tuple[list[Any], Future]] = []
        self._beating: Future | None = None
        self.created = 0  # trials this worker ran
        # finished trials the archive has not written yet: (journal line, trial id); they
        # are still RUNNING in the storage, so their heartbeats go on
        self.unwritten: list[tuple[int, int]] = []
        self._refreshed = self._stale_checked = -math.inf
        self._beaten = time.monotonic()
        self._failed: set[int] = set()  # failed trials seen: a new one may be re-queued

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    @property
    def started(self) -> int:
        """Trials the study's budget counts: every worker's, any state, but a lost trial
        that was re-queued counts once (its copy)."""
        return self.count - self.requeued

    # -------------------------------------------------------------- sharing

    def refresh(self, force: bool = False) -> list[FrozenTrial]:
        """Add the finished trials of other workers to the working copy, fail the trials of
        dead workers, claim re-queued ones; returns the trials added. Skipped while the
        storage cannot be reached (the next refill tries again)."""
        now = time.monotonic()
        if not force and now - self._refreshed < REFRESH_S:
            return []
        self._refreshed = now
        if all(future.done() for _, future in self._creating):
            self._created()  # this worker's new trials, seen as its own
        try:
            with self._timed(), quiet():
                if self.beats and now - self._stale_checked >= HEARTBEAT_S:
                    self._stale_checked = now
                    optuna.storages.fail_stale_trials(self.study)
                rows = self._look()
                new_ids = [i for i, n, s in rows if s in FINISHED and n not in self.seen]
                # their curves are for the report; the sampler and pruner do without
                new = rdb.get_trials(self.storage, new_ids, skip_user_attrs=(keys.CURVE,))
        except STORAGE_ERRORS:
            return []
        new = [t for t in new if t.state in FINISHED]
        self.working.add_trials([_copy(t) for t in new])
        self.seen.update(t.number for t in new)
        waiting = [(i, n) for i, n, s in rows if s == TrialState.WAITING and n not in self.seen]
        for trial_id, number in waiting:
            with contextlib.suppress(*STORAGE_ERRORS):  # unclaimed: the next refresh tries
                self._claim(trial_id, number)
        unseen = [i for i, n, s in rows if n not in self.seen]
        self.others = len(unseen)
        self.low = min(unseen, default=max((i for i, _, _ in rows), default=self.low - 1) + 1)
        return new

    def _look(self) -> list[tuple[int, int, TrialState]]:
        """The study's trials from ``low`` on (id, number, state); counts them."""
        rows = rdb.states(self.storage, self.study_id, self.low)
        if rows:
            self.count = max(self.count, max(n for _, n, _ in rows) + 1)
        failed = {n for _, n, s in rows if s == TrialState.FAIL}
        if not failed <= self._failed or any(s == TrialState.WAITING for _, _, s in rows):
            self.requeued = rdb.count_with_system_attr(self.storage, self.study_id, RETRIED)
        self._failed |= failed
        return rows

    def _claim(self, trial_id: int, number: int) -> None:
        """Take a re-queued trial, unless another worker was first."""
        with self._timed():
            trial = self.storage.get_trial(trial_id)
            if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return
        self.seen.add(number)
        kept = {k: trial.user_attrs[k] for k in RETRIED_ATTRS if k in trial.user_attrs}
        self.retries.append((trial_id, number, trial.params, kept))
        if self.beats:  # from now on a trial of this worker's: found stale if it dies
            with self._timed(), contextlib.suppress(*STORAGE_ERRORS):
                self.storage.record_heartbeat(trial_id)  # (again when it is trained)

    def next_retry(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The parameters of a claimed re-queued trial and the user attributes that make it
        what it was (``RETRIED_ATTRS``); the next ``create`` is that trial."""
        if not self.retries:
            return None
        trial_id, number, params, attrs = self.retries.pop(0)
        self._serving = (trial_id, number)
        return params, attrs

    # -------------------------------------------------------------- trials

    @contextlib.contextmanager
    def asking(self, budget: int | None) -> Iterator[bool]:
        """Around asking one new trial: yields whether the study's trials budget (``budget``,
        None: none) allows one more; near its end, under the machine's lock until the trial
        is created, so two workers never both take the last one."""
        if self._serving is not None or budget is None or self.count < budget - LOCK_MARGIN:
            yield budget is None or self.started < budget or self._serving is not None
            return
        self.flush(wait=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644) if self.lock else None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            with self._timed():
                patiently(self._look)
            self._eager = True  # created before the lock is released
            yield self.started < budget
        finally:
            self._eager = False
            if fd is not None:
                os.close(fd)  # releases the lock

    def create(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        """Create the storage trial of the working copy's ``trial`` (asked, its parameters
        drawn), RUNNING, with ``attrs`` and this worker's name: at the next ``flush``,
        together with the others asked meanwhile. A claimed re-queued trial is taken over
        instead, at once."""
        attrs = {**attrs, keys.WORKER: self.worker}
        trial.set_user_attr(keys.WORKER, self.worker)  # journaled with it, too
        self.created += 1
        if self._serving is None:
            self.pending.append((trial.number, dict(trial.params), dict(trial.distributions),
                                 attrs))
            self.count += 1
            if self._eager:
                self.flush(wait=True)
            return
        trial_id, number = self._serving
        self._serving = None
        with self._timed():
            for key, value in attrs.items():
                patiently(lambda k=key, v=value: self.storage.set_trial_user_attr(
                    trial_id, k, v))
            if self.beats:
                patiently(lambda: self.storage.record_heartbeat(trial_id))
        self.running[trial.number] = (trial_id, number)

    def flush(self, wait: bool = False) -> None:
        """Create the asked trials in the storage, in one transaction (the storage numbers
        them), in the background thread: training goes on meanwhile, and the numbers are
        waited for when a trial finishes (``wait``: now). The thread waits, retrying,
        while the storage cannot be reached."""
        if self.pending:
            pending, self.pending = self.pending, []
            future = self._thread.submit(
                self._background, patiently, lambda: rdb.create_trials(
                    self.storage, self.study_id, [(p, d, a) for _, p, d, a in pending],
                    heartbeat=self.beats))
            self._creating.append((pending, future))
        if wait:
            self._created()

    def _created(self) -> None:
        """Wait for the trials being created; record their ids and numbers."""
        creating, self._creating = self._creating, []
        for pending, future in creating:
            with self._timed():
                created = future.result()
            for (working_number, *_), (trial_id, number) in zip(pending, created):
                self.running[working_number] = (trial_id, number)
                self.seen.add(number)
                self.count = max(self.count, number + 1)

    def _background(self, call: Any, *args: Any) -> Any:
        """``call(*args)`` in the storage thread, its CPU time counted apart from the time
        the training waited."""
        started = time.thread_time()
        try:
            return call(*args)
        finally:
            self.background_seconds += time.thread_time() - started

    def close(self) -> None:
        """Stop the storage thread once its work is done (every finished trial has its
        number already; a trial asked but never trained is not created)."""
        self._thread.shutdown(wait=True)

    def finish(self, trial: optuna.Trial) -> tuple[int, int]:
        """The storage trial id and number of the working copy's ``trial``, which finished."""
        if trial.number not in self.running:
            self.flush(wait=True)
        return self.running.pop(trial.number)

    def number(self, trial: optuna.Trial) -> int:
        if trial.number not in self.running:
            self.flush(wait=True)
        return self.running[trial.number][1]

    def journaled(self, line: int, trial_id: int) -> None:
        """The finished trial ``trial_id`` is journal line ``line`` until the writer has it."""
        self.unwritten.append((line, trial_id))

    def heartbeat(self, written: int = 0) -> None:
        """A heartbeat for each running trial and each finished one the writer has not
        written (``written``: journal lines it has), every ``HEARTBEAT_S / 2``, all in one
        transaction (call it every epoch). Skipped while the storage cannot be reached."""
        now = time.monotonic()
        if not self.beats or now - self._beaten < HEARTBEAT_S / 2:
            return
        self._beaten = now
        self.unwritten = [(line, i) for line, i in self.unwritten if line >= written]
        ids = [i for i, _ in self.running.values()] + [i for _, i in self.unwritten]
        if ids and (self._beating is None or self._beating.done()):
            self._beating = self._thread.submit(self._background, self._beat, ids)

    def _beat(self, ids: list[int]) -> None:
        with contextlib.suppress(*STORAGE_ERRORS):  # missed beats: the next one may reach
            rdb.beat(self.storage, ids)


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A finished storage trial as a new trial for the working copy."""
    return optuna.trial.create_trial(
        state=trial.state, value=trial.value if trial.state == TrialState.COMPLETE else None,
        params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values)
