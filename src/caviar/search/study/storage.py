"""Opening a storage that many processes share: drivers, SQLite's WAL mode, heartbeats,
retries. Imports only Optuna and SQLAlchemy, for the archive's writer process."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback


class StudyMismatch(ValueError):
    """Resuming or joining a study with other data or another split seed."""


# Heartbeats: a worker records one for each of its running trials every HEARTBEAT_S; a
# trial without one for GRACE_S is failed by the next worker that looks, and re-queued once.
HEARTBEAT_S = int(os.environ.get("CAVIAR_HEARTBEAT_S", "5"))
GRACE_S = 4 * HEARTBEAT_S
MAX_RETRY = 1
# how long an SQLite writer waits for another's lock before the call fails (and is retried)
SQLITE_TIMEOUT_S = float(os.environ.get("CAVIAR_SQLITE_TIMEOUT_S", "60"))
# how long a worker and its writer retry a storage they cannot reach, then give up
UNREACHABLE_S = float(os.environ.get("CAVIAR_UNREACHABLE_S", "600"))
# what a storage that cannot be reached (or is locked) raises: retried, never fatal at once
STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                  optuna.exceptions.StorageInternalError, sqlite3.OperationalError)


def storage_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can load: ``postgresql://`` means psycopg 3 when
    psycopg2 is absent. ValueError naming the extra to install when neither is."""
    if url.startswith(("postgresql://", "postgres://")):
        scheme, rest = url.split("://", 1)
        if importlib.util.find_spec("psycopg2") is not None:
            return url
        if importlib.util.find_spec("psycopg") is None:
            raise ValueError("PostgreSQL storage needs a driver: pip install "
                             "'caviar-ml[distributed]' (psycopg 3)")
        return f"postgresql+psycopg://{rest}"
    if url.startswith("postgresql+psycopg") and importlib.util.find_spec("psycopg") is None:
        raise ValueError("PostgreSQL storage needs a driver: pip install "
                         "'caviar-ml[distributed]' (psycopg 3)")
    return url


def _sqlite_wal(url: str) -> None:
    """Put an SQLite file in WAL mode (it stays so): readers do not block the writer, and
    several processes share the file (bench/workers.py measures it)."""
    path = url.split(":///", 1)[1].split("?", 1)[0]
    if path in ("", ":memory:"):
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S) as db:
        db.execute("PRAGMA journal_mode=WAL")


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """The storage at ``url``, safe to share between processes: SQLite in WAL mode with a
    busy timeout; heartbeats and one retry of a trial whose worker died (RDB storages).
    Two processes creating a fresh database at once both succeed (retried)."""
    url = storage_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # another process may be creating the file's tables
        retrying(lambda: _sqlite_wal(url), what="put the SQLite storage in WAL mode")
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    if heartbeat:
        with quiet():
            kwargs.update(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                              max_retry=MAX_RETRY))
    with quiet():
        storage = retrying(lambda: RDBStorage(url, **kwargs), what="open the storage")
    from .rdb import sqlite_no_sync

    sqlite_no_sync(storage)
    return storage


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without Optuna's warnings that heartbeats are experimental (the user can do nothing
    about them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def patiently(call: Any, give_up_s: float | None = None) -> Any:
    """``call()``, retried with backoff (0.1 s doubling to 10 s) while the storage cannot be
    reached or is locked, for ``give_up_s`` (default ``UNREACHABLE_S``); then the error."""
    deadline = time.monotonic() + (UNREACHABLE_S if give_up_s is None else give_up_s)
    pause = 0.1
    while True:
        try:
            return call()
        except STORAGE_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause * (1 + random.random()) / 2)
            pause = min(2 * pause, 10.0)


def retrying(call: Any, what: str, attempts: int = 8) -> Any:
    """``call()``, retried with backoff when the database refuses (a race creating tables or
    a study, a lock, a lost connection)."""
    for attempt in range(attempts):
        try:
            return call()
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                sqlite3.Error) as e:
            if attempt == attempts - 1:
                raise RuntimeError(f"could not {what}: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0]}") from e
            time.sleep(min(0.05 * 2 ** attempt, 5.0) * (1 + random.random()))
    raise AssertionError("unreachable")
