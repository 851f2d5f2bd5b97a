"""Writing finished trials to the study's database without making the tuner wait for it.

Every trial is created in the storage when a worker asks it (RUNNING: the storage numbers it;
``shared.SharedStudy``). When it finishes, the tuner hands it to a ``TrialArchive``, which

1. appends it as one JSON line to a journal file next to the run (microseconds; the line is
   in the kernel's hands once ``write`` returns, so it survives a SIGKILL of the process),
   with its network, when it is a candidate for the model, in a file beside the journal; and
2. has a separate writer *process* read the journal and *finish that storage trial*: its
   intermediate values, attributes, the network as an Optuna artifact, its state and value
   (and the study's user attributes, such as the seconds spent, which the tuner journals
   every few seconds). It writes up to ``BATCH`` journal lines in one transaction
   (``rdb.finish_trials``; Optuna's RDB storage would run one per field, a few
   milliseconds of Python each), networks uploaded before it, so SQLite's write lock, which
   the workers wait for, is held briefly. A thread would hold the interpreter lock
   (bench/README.md); the writer runs at a lower priority than training; what it has not
   written yet is safe in the journal, and ``close`` waits for it.

Trials are identified by their storage trial id, so many workers' archives write to one
study side by side. A run that dies before its writer caught up leaves lines whose trials
are still RUNNING in the storage; the next ``TrialArchive`` on that journal writes them first
(``recover``; a trial already finished is skipped, so recovering twice is harmless). When
the storage cannot be reached (or is locked), the writer retries its batch with backoff for
up to ``storage.UNREACHABLE_S``; the journal keeps every finished trial meanwhile. A trial
another worker failed meanwhile, having missed its heartbeats, is added as a trial of its
own (once: ``LATE`` names the trial it is the result of). The writer holds a lock on the
journal while it runs and stops when the tuner's process is gone, so recovery never races a
writer left behind by a killed run; the lock file also holds how many journal lines it has
written and the CPU seconds it spent writing, so the tuner can see when it falls behind
(``backlog``).

This module imports only Optuna (``caviar.search`` loads its names lazily), so the writer
process starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from .rdb import batched, finish_trials, has_system_attr
from .storage import patiently

POLL_S = 0.05  # how often the writer looks for new journal lines
BATCH = 64  # journal records written in one transaction at most
LATE = "caviar:result_of"  # system attribute: the failed trial whose result this trial is


def _to_line(frozen: FrozenTrial, trial_id: int, number: int, study_name: str,
             network: str | None) -> str:
    return json.dumps({
        "study": study_name, "trial_id": trial_id, "number": number,
        "state": frozen.state.name, "value": frozen.value, "params": frozen.params,
        "distributions": {k: distribution_to_json(d) for k, d in frozen.distributions.items()},
        "user_attrs": frozen.user_attrs, "system_attrs": frozen.system_attrs,
        "intermediate_values": {str(k): v for k, v in frozen.intermediate_values.items()},
        "network": network,
    }) + "\n"


def _from_line(record: dict[str, Any]) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState[record["state"]], value=record["value"], params=record["params"],
        distributions={k: json_to_distribution(d)
                       for k, d in record["distributions"].items()},
        user_attrs=record["user_attrs"], system_attrs=record["system_attrs"],
        intermediate_values={int(k): v for k, v in record["intermediate_values"].items()})


def _attrs_line(attrs: dict[str, Any], study_name: str) -> str:
    return json.dumps({"study": study_name, "study_attrs": attrs}) + "\n"


class _Writer:
    """Applies journal records to the trials of a database study, skipping those finished."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str,
                 artifacts: str | None):
        self.storage, self.study_name = storage, study_name
        self.study = optuna.load_study(study_name=study_name, storage=storage)
        self.attrs = dict(self.study.user_attrs)
        self.artifacts = artifacts
        self.seconds = 0.0  # CPU seconds spent writing (its wall time, niced, says little)

    def apply(self, record: dict[str, Any]) -> bool:
        """Write one journal record; returns whether it finished a trial."""
        return self.apply_many([record]) > 0

    def apply_many(self, records: list[dict[str, Any]]) -> int:
        """Write journal records, the trials among them in one transaction; returns how many
        trials they finished."""
        records = [r for r in records if r.get("study") == self.study_name]
        trials = [r for r in records if "study_attrs" not in r]
        started = time.process_time()
        try:
            attrs = [r for r in records if "study_attrs" in r]
            if attrs:  # the last carries every attribute the tuner had
                patiently(lambda: self._apply(attrs[-1]))
            if not batched(self.storage):
                return sum(patiently(lambda r=r: self._apply(r)) for r in trials)
            # the networks' files first, outside the transaction (which holds SQLite's
            # write lock that the workers wait for); their links are written with the trials
            links = {r["trial_id"]: self._artifact(r) for r in trials}
            left = patiently(lambda: finish_trials(self.storage, trials,
                                                   lambda r: links[r["trial_id"]]))
            done = len(trials) - len(left)
            for record in trials:
                if record not in left and record.get("network"):
                    with contextlib.suppress(OSError):
                        os.remove(record["network"])
            # not RUNNING: written already (a recovered journal) or failed meanwhile
            return done + sum(patiently(lambda r=r: self._apply(r)) for r in left)
        finally:
            self.seconds += time.process_time() - started

    def _artifact(self, record: dict[str, Any]) -> dict[str, Any]:
        """Upload the record's network to the artifact store; returns the system attribute
        that links it to the trial (written in the trial's transaction)."""
        network = record.get("network")
        if not (network and self.artifacts and os.path.exists(network)):
            return {}
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        os.makedirs(self.artifacts, exist_ok=True)
        link = _Attrs()
        trial = FrozenTrial(number=record["number"], state=TrialState.RUNNING, value=None,
                            values=None, datetime_start=None, datetime_complete=None,
                            params={}, distributions={}, user_attrs={}, system_attrs={},
                            intermediate_values={}, trial_id=record["trial_id"])
        upload_artifact(artifact_store=FileSystemArtifactStore(self.artifacts),
                        file_path=network, study_or_trial=trial, storage=link,  # type: ignore[arg-type]
                        mimetype="application/x-safetensors")
        return link.attrs

    def _apply(self, record: dict[str, Any]) -> bool:
        if "study_attrs" in record:
            for key, value in record["study_attrs"].items():
                if self.attrs.get(key) != value:
                    self.study.set_user_attr(key, value)
                    self.attrs[key] = value
            return False
        current = self.storage.get_trial(record["trial_id"])
        if current.state.is_finished():
            if current.state == TrialState[record["state"]] and current.value == record["value"]:
                return False  # written already (a recovered journal)
            return self._add(record)
        try:
            return self._update(record, current)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self._add(record)

    def _add(self, record: dict[str, Any]) -> bool:
        """A trial another worker failed, having missed its heartbeats (its worker could not
        reach the storage, or died before its writer wrote it): it still finished, so it is
        kept as a trial of its own, once (``LATE`` names the trial it is the result of, so a
        journal recovered again adds nothing)."""
        if batched(self.storage) and has_system_attr(
                self.storage, self.study._study_id, LATE, record["trial_id"]):
            return False
        trial = _from_line(record)
        trial.system_attrs = {**trial.system_attrs, LATE: record["trial_id"]}
        self.study.add_trial(trial)
        return True

    def _update(self, record: dict[str, Any], current: FrozenTrial) -> bool:
        storage, trial_id = self.storage, record["trial_id"]
        for step, value in record["intermediate_values"].items():
            storage.set_trial_intermediate_value(trial_id, int(step), value)
        for key, value in record["user_attrs"].items():
            if current.user_attrs.get(key) != value:
                storage.set_trial_user_attr(trial_id, key, value)
        for key, value in record["system_attrs"].items():  # the pruner's rungs
            if current.system_attrs.get(key) != value:
                storage.set_trial_system_attr(trial_id, key, value)
        network = record.get("network")
        if network and self.artifacts and os.path.exists(network):
            from optuna.artifacts import FileSystemArtifactStore, upload_artifact

            os.makedirs(self.artifacts, exist_ok=True)
            upload_artifact(artifact_store=FileSystemArtifactStore(self.artifacts),
                            file_path=network, study_or_trial=current, storage=storage,
                            mimetype="application/x-safetensors")
        value = record["value"]
        storage.set_trial_state_values(trial_id, TrialState[record["state"]],
                                       None if value is None else [value])
        if network and os.path.exists(network):
            os.remove(network)
        return True


class _Attrs:
    """Stands for the storage in ``upload_artifact``: keeps the artifact's system attribute
    for the batch's transaction instead of writing it in one of its own."""

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.attrs[key] = value


def _lock(path: Path) -> int:
    """Open ``path`` and wait for an exclusive lock on it; returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    from .storage import open_storage

    return open_storage(url, heartbeat=False)


def follow(storage: str, study_name: str, journal: str, parent: int,
           artifacts: str | None) -> None:
    """The writer process: write the journal's records to the database as they come, until
    the tuner journals that it is done (or its process is gone and the journal is read)."""
    lock = _lock(Path(journal + ".lock"))
    try:
        writer = _Writer(_open_storage(storage), study_name, artifacts)
        pending, written = "", 0
        with open(journal, encoding="utf-8") as f:
            while True:
                orphaned = os.getppid() != parent
                chunk = f.read()
                if not chunk:
                    if orphaned:
                        return
                    time.sleep(POLL_S)
                    continue
                *lines, pending = (pending + chunk).split("\n")
                records = [json.loads(line) for line in lines]
                done = any(r.get("done") for r in records)
                records = [r for r in records if not r.get("done")]
                for start in range(0, len(records), BATCH):
                    writer.apply_many(records[start:start + BATCH])
                    written += len(records[start:start + BATCH])
                    # for TrialArchive.backlog and .writer_seconds
                    os.pwrite(lock, struct.pack("<qd", written, writer.seconds), 0)
                if done:
                    return
    finally:
        os.close(lock)


class TrialArchive:
    """Finished trials into the database study ``study_name`` at ``storage`` (a URL),
    journaled first, written behind by another process; networks go to the Optuna artifact
    store in the directory ``artifacts``."""

    def __init__(self, storage: str, study_name: str, journal: Path,
                 artifacts: str | Path | None = None):
        self.storage, self.study_name = storage, study_name
        self.journal = Path(journal)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self.artifacts = str(artifacts) if artifacts is not None else None
        self.networks = self.journal.with_name(self.journal.stem + "-networks")
        lock = _lock(self._lock_path)  # a killed run's writer may still be finishing
        try:
            self.recovered = recover(self.journal, storage, study_name, self.artifacts)
            self._file = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)
        finally:
            os.close(lock)
        self.lines = 0  # journal lines written (trials and study attributes)
        # a process of its own (not multiprocessing, which would re-run the user's script);
        # its errors go to a file, which cannot fill up and block it as a pipe can
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "caviar.search.study.archive", storage, study_name,
             str(self.journal), str(os.getpid()), self.artifacts or ""],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def _lock_path(self) -> Path:
        return self.journal.with_name(self.journal.name + ".lock")

    def put(self, frozen: FrozenTrial, trial_id: int, number: int,
            network: bytes | None = None) -> int:
        """Journal ``frozen`` (the working copy's trial) for the storage trial ``trial_id``
        (number ``number``), with its network's safetensors bytes if it is a candidate;
        returns its line's index (written once ``written`` exceeds it)."""
        if self._process.poll():
            raise RuntimeError(f"could not write trials to the study: {self._error()}")
        path = None
        if network is not None:
            self.networks.mkdir(exist_ok=True)
            file = self.networks / f"trial-{trial_id}.safetensors"
            tmp = file.with_suffix(".tmp")
            tmp.write_bytes(network)
            os.replace(tmp, file)  # complete before the journal line names it
            path = str(file.resolve())
        self._append(_to_line(frozen, trial_id, number, self.study_name, path))
        return self.lines - 1

    def put_study_attrs(self, attrs: dict[str, Any]) -> None:
        """Journal the study's user attributes; the changed ones are written."""
        self._append(_attrs_line(dict(attrs), self.study_name))

    def _append(self, line: str) -> None:
        """One journal line, flushed (the writer follows the file), counted for ``backlog``."""
        self._file.write(line)
        self._file.flush()
        self.lines += 1

    @property
    def writing(self) -> bool:
        """Whether the writer process is still running."""
        return self._process.poll() is None

    def _progress(self) -> tuple[int, float]:
        """The writer's count of lines written and its seconds in the storage (the first 16
        bytes of the lock file)."""
        try:
            with open(self._lock_path, "rb") as f:
                data = f.read(16)
        except OSError:
            return 0, 0.0
        return struct.unpack("<qd", data) if len(data) == 16 else (0, 0.0)

    @property
    def written(self) -> int:
        """Journal lines the writer has written to the database."""
        return self._progress()[0]

    @property
    def backlog(self) -> int:
        """Journal lines the writer has not written to the database yet."""
        return self.lines - self.written

    @property
    def writer_seconds(self) -> float:
        """Seconds the writer process has spent in storage calls."""
        return self._progress()[1]

    def _error(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self._process.returncode}"

    def close(self) -> float:
        """Wait until every trial is in the database, then drop the journal; returns the
        writer's seconds in the storage. On failure the journal stays, and the next run on
        this study adds its trials."""
        if self._process.poll() is None:
            self._file.write(json.dumps({"done": True}) + "\n")
        self._file.close()
        self._process.wait()
        if self._process.returncode != 0:
            raise RuntimeError(f"could not write trials to the study: {self._error()} (they "
                               f"are kept in {self.journal}; running again adds them)")
        seconds = self.writer_seconds
        self._stderr.close()
        os.remove(self.journal)
        self._lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.networks.rmdir()
        return seconds


def recover(journal: Path, storage: str, study_name: str, artifacts: str | None) -> int:
    """Write the journal's trials (and study attributes) that a killed run never wrote to
    the database; returns how many trials were written. The caller holds the journal's
    lock."""
    journal = Path(journal)
    if not journal.exists() or journal.stat().st_size == 0:
        return 0
    writer = _Writer(_open_storage(storage), study_name, artifacts)
    added = 0
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by the kill: that trial was not finished
            continue
        if not record.get("done"):
            added += writer.apply_many([record])
    return added


def recover_journal(journal: Path, storage: str, study_name: str,
                    artifacts: str | None) -> int:
    """``recover`` a journal a dead worker left (waiting for its writer to finish), then
    remove it; returns how many trials were written."""
    journal = Path(journal)
    lock_path = journal.with_name(journal.name + ".lock")
    lock = _lock(lock_path)
    try:
        added = recover(journal, storage, study_name, artifacts)
        journal.unlink(missing_ok=True)
    finally:
        os.close(lock)
    lock_path.unlink(missing_ok=True)
    return added


# the writer process: python -m caviar.search.study.archive STORAGE STUDY JOURNAL PID ARTIFACTS
if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its stderr is for errors
    os.nice(10)  # training comes first; the journal keeps every trial safe meanwhile
    try:
        follow(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] or None)
    except Exception as e:  # one line for TrialArchive to report, naming the root cause
        cause = e.__cause__ or e
        print(f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
              file=sys.stderr)
        sys.exit(1)
