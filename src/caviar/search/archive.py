"""Writing finished trials to the study's database without making the tuner wait for it.

Adding one trial to an SQLite study through Optuna's RDB storage costs about 30 ms of Python
(SQLAlchemy, one query per parameter), more than a population spends training a pruned trial.
So the tuner hands each finished trial to a ``TrialArchive``, which

1. appends it as one JSON line to a journal file next to the run (microseconds; the line is
   in the kernel's hands once ``write`` returns, so it survives a SIGKILL of the process), and
2. lets a background thread add it to the database, in order.

The database numbers trials in the order they are added, so the trial on journal line i
becomes number ``base + i``, where ``base`` is how many trials the study held when the archive
opened. A run that dies before the thread caught up leaves lines whose numbers the database
lacks; the next ``TrialArchive`` on that study adds them first (``recover``), then starts a
fresh journal.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState


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


class TrialArchive:
    """Finished trials into ``study`` (a database study), journaled first, written behind."""

    def __init__(self, study: optuna.Study, journal: Path):
        self.study = study
        self.journal = Path(journal)
        self.recovered = self.recover()
        self.base = len(study.get_trials(deepcopy=False))
        self.count = 0
        self._file = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self._queue: queue.Queue[FrozenTrial | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_behind, name="caviar-archive",
                                        daemon=True)
        self._thread.start()

    def recover(self) -> int:
        """Add the journal's trials that a killed run never wrote to the database."""
        if not self.journal.exists():
            return 0
        present = len(self.study.get_trials(deepcopy=False))
        added = 0
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by the kill: that trial was not finished
                continue
            if record.get("study") == self.study.study_name and (
                    record["number"] == present + added):
                self.study.add_trial(_from_line(record))
                added += 1
        return added

    def put(self, frozen: FrozenTrial) -> int:
        """Journal ``frozen`` and queue it for the database; returns its database number."""
        if self._error is not None:
            raise RuntimeError(f"could not write trials to the study: {self._error}")
        number = self.base + self.count
        self._file.write(_to_line(frozen, number, self.study.study_name))
        self._file.flush()
        self.count += 1
        self._queue.put(frozen)
        return number

    def _write_behind(self) -> None:
        while (frozen := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.study.add_trial(frozen)
            except BaseException as e:  # reported by put() and close()
                self._error = e

    def close(self) -> None:
        """Wait until every trial is in the database, then drop the journal."""
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if self._error is not None:
            raise RuntimeError(f"could not write trials to the study: {self._error}")
        os.remove(self.journal)
