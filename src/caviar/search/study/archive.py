"""Writing finished trials to the study's database without making the tuner wait for it.

Adding one trial to an SQLite study through Optuna's RDB storage costs tens of milliseconds
of Python (SQLAlchemy, one query per parameter), more than a population spends training a
pruned trial. A thread would not help: it holds the interpreter lock while it works, and the
tuner would train fewer epochs (bench/README.md, "Figures behind design choices"). So the
tuner hands each finished trial to a ``TrialArchive``, which

1. appends it as one JSON line to a journal file next to the run (microseconds; the line is
   in the kernel's hands once ``write`` returns, so it survives a SIGKILL of the process), and
2. has a separate writer *process* read the journal and add each trial to the database, in
   order (and the study's user attributes, such as the seconds spent, which the tuner
   journals every few seconds). It runs at a lower priority than training; what it has not
   written yet is safe in the journal, and ``close`` waits for it.

The database numbers trials in the order they are added, so the trial on journal line i
becomes number ``base + i``, where ``base`` is how many trials the study held when the archive
opened. A run that dies before the writer caught up leaves lines the database lacks; the next
``TrialArchive`` on that study adds them first (``recover``), then starts a fresh journal. The
writer holds a lock on the journal while it runs and stops when the tuner's process is gone,
so recovery never races a writer left behind by a killed run; the lock file also holds how
many journal lines it has written, so the tuner can see when it falls behind (``backlog``).

This module imports only Optuna (``caviar.search`` loads its names lazily), so the writer
process starts in a fraction of a second.
"""

from __future__ import annotations

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

POLL_S = 0.05  # how often the writer looks for new journal lines


def _to_line(frozen: FrozenTrial, number: int, study_name: str) -> str:
    return json.dumps({
        "study": study_name, "number": number, "state": frozen.state.name, "value": frozen.value,
        "params": frozen.params,
        "distributions": {k: distribution_to_json(d) for k, d in frozen.distributions.items()},
        "user_attrs": frozen.user_attrs, "system_attrs": frozen.system_attrs,
        "intermediate_values": {str(k): v for k, v in frozen.intermediate_values.items()},
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
    """Applies journal records to a database study, skipping what it already holds."""

    def __init__(self, study: optuna.Study):
        self.study = study
        self.present = len(study.get_trials(deepcopy=False))
        self.attrs = dict(study.user_attrs)

    def apply(self, record: dict[str, Any]) -> bool:
        """Add one journal record; returns whether it was a trial that was added."""
        if record.get("study") != self.study.study_name:
            return False
        if "study_attrs" in record:
            for key, value in record["study_attrs"].items():
                if self.attrs.get(key) != value:
                    self.study.set_user_attr(key, value)
                    self.attrs[key] = value
            return False
        if record["number"] != self.present:  # already in the database (or out of order)
            return False
        self.study.add_trial(_from_line(record))
        self.present += 1
        return True


def _lock(path: Path) -> int:
    """Open ``path`` and wait for an exclusive lock on it; returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def follow(storage: str, study_name: str, journal: str, parent: int) -> None:
    """The writer process: add the journal's records to the database as they come, until
    the tuner journals that it is done (or its process is gone and the journal is read)."""
    lock = _lock(Path(journal + ".lock"))
    try:
        writer = _Writer(optuna.load_study(study_name=study_name, storage=storage))
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
                for line in lines:
                    record = json.loads(line)
                    if record.get("done"):
                        return
                    writer.apply(record)
                    written += 1
                    os.pwrite(lock, struct.pack("<q", written), 0)  # for TrialArchive.backlog
    finally:
        os.close(lock)


class TrialArchive:
    """Finished trials into ``study`` (a database study at ``storage``), journaled first,
    written behind by another process."""

    def __init__(self, study: optuna.Study, journal: Path, storage: str):
        self.study = study
        self.journal = Path(journal)
        lock = _lock(self._lock_path)  # a killed run's writer may still be finishing
        try:
            self.recovered = self.recover()
            self.base = len(study.get_trials(deepcopy=False))
            self._file = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)
        finally:
            os.close(lock)
        self.count = 0
        self.lines = 0  # journal lines written (trials and study attributes)
        # a process of its own (not multiprocessing, which would re-run the user's script);
        # its errors go to a file, which cannot fill up and block it as a pipe can
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "caviar.search.study.archive", storage, study.study_name,
             str(self.journal), str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def _lock_path(self) -> Path:
        return self.journal.with_name(self.journal.name + ".lock")

    def recover(self) -> int:
        """Add the journal's trials (and study attributes) that a killed run never wrote to
        the database; returns how many trials were added."""
        if not self.journal.exists():
            return 0
        writer = _Writer(self.study)
        added = 0
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by the kill: that trial was not finished
                continue
            added += writer.apply(record)
        return added

    def put(self, frozen: FrozenTrial) -> int:
        """Journal ``frozen`` for the database; returns its database number."""
        if self._process.poll():
            raise RuntimeError(f"could not write trials to the study: {self._error()}")
        number = self.base + self.count
        self._append(_to_line(frozen, number, self.study.study_name))
        self.count += 1
        return number

    def put_study_attrs(self, attrs: dict[str, Any]) -> None:
        """Journal the study's user attributes; the changed ones are written."""
        self._append(_attrs_line(dict(attrs), self.study.study_name))

    def _append(self, line: str) -> None:
        """One journal line, flushed (the writer follows the file), counted for ``backlog``."""
        self._file.write(line)
        self._file.flush()
        self.lines += 1

    @property
    def writing(self) -> bool:
        """Whether the writer process is still running."""
        return self._process.poll() is None

    @property
    def backlog(self) -> int:
        """Journal lines the writer has not written to the database yet (it keeps its count
        in the first 8 bytes of the lock file)."""
        try:
            with open(self._lock_path, "rb") as f:
                written = f.read(8)
        except OSError:
            return self.lines
        return self.lines - (struct.unpack("<q", written)[0] if len(written) == 8 else 0)

    def _error(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self._process.returncode}"

    def close(self) -> None:
        """Wait until every trial is in the database, then drop the journal. On failure the
        journal stays, and the next run on this study adds its trials."""
        if self._process.poll() is None:
            self._file.write(json.dumps({"done": True}) + "\n")
        self._file.close()
        self._process.wait()
        if self._process.returncode != 0:
            raise RuntimeError(f"could not write trials to the study: {self._error()} (they "
                               f"are kept in {self.journal}; running again adds them)")
        self._stderr.close()
        os.remove(self.journal)
        self._lock_path.unlink(missing_ok=True)


# the writer process: python -m caviar.search.study.archive STORAGE STUDY JOURNAL PID
if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its stderr is for errors
    os.nice(10)  # training comes first; the journal keeps every trial safe meanwhile
    try:
        follow(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    except Exception as e:  # one line for TrialArchive to report, naming the root cause
        cause = e.__cause__ or e
        print(f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
              file=sys.stderr)
        sys.exit(1)
