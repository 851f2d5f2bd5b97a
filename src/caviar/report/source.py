"""Read what a report shows from its source: a tune run directory, an Optuna storage, or a panda
run directory, into one plain :class:`RunData` the figures and tables are drawn from.

A study's layout (which attribute holds what) is ``caviar.search.study.keys``, the module the
tuner writes by. Everything the tuner and the panda trainer store is optional here: a missing
key becomes ``None`` (or an empty container) and the section that needs it shows a short note
instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from caviar.search.space import Space
from caviar.search.study import keys


@dataclass
class TrialData:
    """One trial, as the report needs it."""

    number: int
    state: str  # "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"
    value: float | None  # the validation metric (complete trials)
    params: dict[str, Any] = field(default_factory=dict)  # Optuna params (sampling names)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # the full resolved dict
    curve: list[dict[str, Any]] = field(default_factory=list)  # per-epoch dicts
    intermediate: dict[int, float] = field(default_factory=dict)  # trial.report values
    duration_s: float | None = None
    failure: str | None = None
    round: int | None = None  # coarse-to-fine round
    pbt_member: str | None = None  # population-based training: the member's id
    pbt_schedule: list[dict[str, Any]] = field(default_factory=list)  # its network's segments

    @property
    def score(self) -> float | None:
        """The value, or for a pruned trial its last reported value; ``None`` when neither."""
        if self.value is not None and _finite(self.value):
            return float(self.value)
        if self.intermediate:
            last = self.intermediate[max(self.intermediate)]
            return float(last) if _finite(last) else None
        return None


@dataclass
class RunData:
    """Everything a report shows; ``kind`` is ``"tune"`` or ``"panda"``."""

    kind: str
    name: str
    task: str | None = None
    metric: str | None = None
    direction: str = "maximize"
    sampler: str | None = None
    space: Space | None = None  # the study's search space, when it stored a readable one
    data: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)  # hyperparameters, test_scores, ...
    c2f_boxes: list[dict[str, Any]] = field(default_factory=list)
    pbt: dict[str, Any] = field(default_factory=dict)  # PBT's lineage (empty: not a PBT run)
    scaling: dict[str, Any] = field(default_factory=dict)  # numeric="auto"'s choice (keys.SCALING)
    trials: list[TrialData] = field(default_factory=list)
    distributions: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    study: optuna.Study | None = None
    # panda runs
    history: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def count(self, state: str) -> int:
        """How many trials are in ``state`` ("COMPLETE", "PRUNED", "FAIL")."""
        return sum(t.state == state for t in self.trials)

    def ranked(self) -> list[TrialData]:
        """Completed trials with a finite value, best first."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.score is not None]
        return sorted(done, key=lambda t: t.score, reverse=self.direction == "maximize")

    def best_trial(self) -> TrialData | None:
        """The trial ``best`` names, else the best ranked one."""
        number = self.best.get(keys.BEST_TRIAL)
        for t in self.trials:
            if t.number == number:
                return t
        ranked = self.ranked()
        return ranked[0] if ranked else None


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def load_run(source: str | Path, study_name: str | None = None,
             study: optuna.Study | None = None) -> RunData:
    """Read a report source.

    ``source`` is a tune run directory (``run.json`` with the study, or ``study.db``), a panda
    run directory (``run.json`` with ``"kind": "panda"``), an Optuna storage URL such as
    ``sqlite:///runs/study.db``, or the path of an SQLite study file. ``study_name`` picks the
    study in a storage holding several; ``study``: the run directory's study, open already
    (``tune``'s, whose storage cache holds its finished trials), read instead of opening the
    storage again (reading 3,292 trials back took 2.5 s). Raises ``ValueError`` with a
    one-line message when the source cannot be read.
    """
    text = str(source)
    path = Path(source)
    if "://" not in text and path.is_dir():
        info = _read_json(path / "run.json") if (path / "run.json").is_file() else {}
        if info.get("kind") == "panda":
            return _load_panda(path, info)
        db = path / "study.db"
        if db.is_file():
            storage = f"sqlite:///{db.resolve()}"
        elif info.get("storage"):
            storage = str(info["storage"])
        else:
            raise ValueError(
                f"{path} is not a caviar run directory (no study.db, and no run.json naming "
                "a study or a panda run)"
            )
        return _load_study(storage, study_name or info.get("study_name"), fallback_name=path.name,
                           study=study)
    if "://" not in text and path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
        return _load_study(f"sqlite:///{path.resolve()}", study_name)
    if "://" in text:
        return _load_study(text, study_name)
    raise ValueError(f"report source {text!r} is neither a run directory nor a storage URL")


def _open_study(storage: str, study_name: str | None) -> optuna.Study:
    """The study ``study_name`` of ``storage`` (None: its only one), or ValueError in one line."""
    if storage.startswith("sqlite:///"):
        # Optuna would create a missing SQLite file; say it is missing instead.
        db = Path(storage[len("sqlite:///"):])
        if not db.is_file():
            raise ValueError(f"no SQLite study file at {db}")
        with db.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":  # Optuna would add its tables to it
                raise ValueError(f"{db} is not an SQLite database")
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as exc:  # any storage error becomes one line
        raise ValueError(f"cannot open Optuna storage {storage}: {_one_line(exc)}") from None
    if study_name is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise ValueError(f"pass a study name: {storage} holds {len(names)} studies ({listed})")
        study_name = names[0]
    elif study_name not in names:
        raise ValueError(
            f"no study {study_name!r} in {storage} (studies: {', '.join(names) or 'none'})"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def _load_study(storage: str, study_name: str | None, fallback_name: str = "",
                study: optuna.Study | None = None) -> RunData:
    if study is None:
        study = _open_study(storage, study_name)
    study_name = study.study_name
    attrs = study.user_attrs
    trials, distributions = [], {}
    for ft in study.get_trials(deepcopy=False):
        ua = ft.user_attrs
        for name, dist in ft.distributions.items():
            distributions.setdefault(name, dist)
        trials.append(
            TrialData(
                number=ft.number,
                state=ft.state.name,
                value=ft.values[0] if ft.values and ft.state.name == "COMPLETE" else None,
                params=dict(ft.params),
                hyperparameters=_dict(ua.get(keys.HYPERPARAMETERS)),
                curve=_curve(ua.get(keys.CURVE)),
                intermediate=dict(ft.intermediate_values),
                duration_s=_duration(ua.get(keys.DURATION_S), ft),
                failure=None if ua.get(keys.FAILURE) is None else str(ua[keys.FAILURE]),
                round=keys.trial_round(ft),
                pbt_member=ua.get(keys.PBT_MEMBER) if isinstance(ua.get(keys.PBT_MEMBER), str)
                else None,
                pbt_schedule=_curve(ua.get(keys.PBT_SCHEDULE)),
            )
        )
    direction = attrs.get(keys.DIRECTION)
    if direction not in ("maximize", "minimize"):
        direction = "minimize" if study.directions[0].name == "MINIMIZE" else "maximize"
    data = _dict(attrs.get(keys.DATA))
    return RunData(
        kind="tune",
        name=study_name or fallback_name,
        task=attrs.get(keys.TASK) or data.get("task"),
        metric=attrs.get(keys.METRIC),
        direction=direction,
        sampler=attrs.get(keys.SAMPLER),
        space=_space(attrs.get(keys.SPACE)),
        data=data,
        best=_dict(attrs.get(keys.BEST)),
        c2f_boxes=[b for b in attrs.get(keys.BOXES) or [] if isinstance(b, dict)],
        pbt=keys.pbt_lineage(attrs),
        scaling=_dict(attrs.get(keys.SCALING)),
        trials=trials,
        distributions=distributions,
        study=study,
    )


def _load_panda(path: Path, info: dict[str, Any]) -> RunData:
    data = _dict(info.get("data"))
    best = {  # run.json's keys, in the study's "best" layout
        keys.HYPERPARAMETERS: _dict(info.get("hyperparameters")),
        keys.TEST_SCORES: _dict(info.get("test_scores")),
        keys.CONFUSION_MATRIX: _dict(info.get("confusion_matrix")),
        keys.TEST_WEIGHT: _dict(info.get("usage")).get("weight"),
        keys.CONSTANT_TEST_SCORES: _dict(info.get("constant_test_scores")),
    }
    return RunData(
        kind="panda",
        name=str(info.get("name") or path.resolve().name),
        task=info.get("task") or data.get("task"),
        metric=info.get("metric"),
        direction=info.get("direction") or _guess_direction(info.get("metric")),
        sampler=None,
        data=data,
        best=best,
        history=_curve(info.get("history")),
        changes=[c for c in info.get("changes") or [] if isinstance(c, dict)],
    )


def _guess_direction(metric: Any) -> str:
    """Scores where bigger is better: accuracy, r2, auc; everything else is a loss."""
    name = str(metric or "")
    return "maximize" if any(k in name for k in ("accuracy", "r2", "auc", "f1")) else "minimize"


def _space(value: Any) -> Space | None:
    """The stored space, or None when there is none or it does not read as one (a study of
    another version): the report then reads each scale from its Optuna distribution."""
    try:
        return Space.from_dict(value) if isinstance(value, dict) else None
    except (ValueError, TypeError):  # SpaceError is a ValueError
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _curve(value: Any) -> list[dict[str, Any]]:
    return [row for row in value or [] if isinstance(row, dict)] if isinstance(value, list) else []


def _duration(value: Any, ft: optuna.trial.FrozenTrial) -> float | None:
    if _finite(value):
        return float(value)
    if ft.duration is not None:
        return ft.duration.total_seconds()
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
