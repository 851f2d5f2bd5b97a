"""Many trials in one transaction, on the tables of Optuna's RDB storage.

Optuna's ``RDBStorage`` runs one transaction per call: creating a trial with its parameters,
attributes and heartbeat is three, finishing one (its curve, attributes, value, state) a dozen
or more, each a few milliseconds of SQLAlchemy and, on SQLite, a turn of the file's single
write lock. That was most of a worker's time (bench/README.md). These functions do the same
writes for a batch of trials in one transaction through Optuna's own table models, so what
they write is what Optuna reads (tests/test_workers.py reads it back through Optuna).

Only ``RDBStorage`` has these tables; callers fall back to Optuna's calls for other storages.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

IN_CHUNK = 500  # ids per IN (...) list: SQLite allows 999 variables in old versions


def batched(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` has Optuna's RDB tables (these functions work on it)."""
    return isinstance(storage, RDBStorage)


def sqlite_no_sync(storage: RDBStorage) -> None:
    """SQLite in WAL mode commits without waiting for the disk (``synchronous=NORMAL``): a
    commit survives the process being killed, only a power cut may lose the last ones, which
    the journal (``archive.py``) still holds. A commit then costs microseconds, not an fsync."""
    engine = storage.engine
    if engine.dialect.name != "sqlite":
        return

    def _pragma(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", _pragma)
    engine.dispose()  # connections opened before the listener get it when reopened


def create_trials(storage: RDBStorage, study_id: int,
                  trials: Sequence[tuple[dict[str, Any], dict[str, BaseDistribution],
                                         dict[str, Any]]],
                  heartbeat: bool) -> list[tuple[int, int]]:
    """Create RUNNING trials (``(params, distributions, user_attrs)`` each) in one
    transaction, under the lock on the study's row, with a heartbeat each if ``heartbeat``;
    returns their (trial id, number), numbered as Optuna numbers them: the count of the
    study's trials before each."""
    created = []
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        rows = []
        for _ in trials:
            row = models.TrialModel(study_id=study_id, number=None, state=TrialState.RUNNING,
                                    datetime_start=datetime.now())
            session.add(row)
            rows.append(row)
        session.flush()  # their ids
        params, attrs, beats = [], [], []
        for row, (values, distributions, user_attrs) in zip(rows, trials):
            row.number = row.count_past_trials(session)
            created.append((row.trial_id, row.number))
            params += [{"trial_id": row.trial_id, "param_name": name,
                        "param_value": distributions[name].to_internal_repr(value),
                        "distribution_json": distribution_to_json(distributions[name])}
                       for name, value in values.items()]
            attrs += [{"trial_id": row.trial_id, "key": key, "value_json": json.dumps(value)}
                      for key, value in user_attrs.items()]
            beats.append({"trial_id": row.trial_id})
        _insert(session, models.TrialParamModel, params)
        _insert(session, models.TrialUserAttributeModel, attrs)
        if heartbeat:
            _insert(session, models.TrialHeartbeatModel, beats)
    return created


def beat(storage: RDBStorage, trial_ids: Iterable[int]) -> None:
    """Record a heartbeat for each of ``trial_ids`` (which have one already) at once."""
    table = models.TrialHeartbeatModel.__table__
    ids = list(trial_ids)
    with _create_scoped_session(storage.scoped_session) as session:
        for start in range(0, len(ids), IN_CHUNK):
            session.execute(table.update()
                            .where(table.c.trial_id.in_(ids[start:start + IN_CHUNK]))
                            .values(heartbeat=sqlalchemy.func.current_timestamp()))


def states(storage: RDBStorage, study_id: int, from_id: int) -> list[tuple[int, int, TrialState]]:
    """(trial id, number, state) of the study's trials whose id is at least ``from_id``: one
    light query, for a worker to see what changed since it last looked."""
    table = models.TrialModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        rows = session.execute(
            sqlalchemy.select(table.c.trial_id, table.c.number, table.c.state)
            .where(table.c.study_id == study_id, table.c.trial_id >= from_id)
            .order_by(table.c.trial_id)).all()
    return [(i, n, _state(s)) for i, n, s in rows]


def _state(state: TrialState | str) -> TrialState:
    return state if isinstance(state, TrialState) else TrialState[state]


def finish_trials(storage: RDBStorage, records: Sequence[dict[str, Any]],
                  more_system_attrs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                  ) -> list[dict[str, Any]]:
    """Write finished trials (journal records: ``trial_id``, ``state``, ``value``,
    ``intermediate_values``, ``user_attrs``, ``system_attrs``) to their RUNNING storage
    trials in one transaction; ``more_system_attrs(record)``: attributes to add (an
    artifact's link), called for those only. Returns the records whose trial was not
    RUNNING (finished already, or failed by another worker meanwhile), which the caller
    handles one by one."""
    if not records:
        return []
    by_id = {r["trial_id"]: r for r in records}
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (session.query(models.TrialModel)
                .filter(models.TrialModel.trial_id.in_(list(by_id)))
                .with_for_update().all())
        running = {row.trial_id: row for row in rows if row.state == TrialState.RUNNING}
        ids = list(running)
        _delete(session, models.TrialIntermediateValueModel, ids)
        _delete(session, models.TrialValueModel, ids)
        steps, values, user, system = [], [], [], []
        for trial_id in ids:
            record = by_id[trial_id]
            for step, value in record["intermediate_values"].items():
                stored, kind = (models.TrialIntermediateValueModel
                                .intermediate_value_to_stored_repr(value))
                steps.append({"trial_id": trial_id, "step": int(step),
                              "intermediate_value": stored, "intermediate_value_type": kind})
            if record["value"] is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(record["value"])
                values.append({"trial_id": trial_id, "objective": 0, "value": stored,
                               "value_type": kind})
            user += _attr_rows(session, models.TrialUserAttributeModel, trial_id,
                               record["user_attrs"])
            extra = more_system_attrs(record) if more_system_attrs else {}
            system += _attr_rows(session, models.TrialSystemAttributeModel, trial_id,
                                 {**record["system_attrs"], **extra})
        _insert(session, models.TrialIntermediateValueModel, steps)
        _insert(session, models.TrialValueModel, values)
        _insert(session, models.TrialUserAttributeModel, user)
        _insert(session, models.TrialSystemAttributeModel, system)
        now = datetime.now()
        for trial_id, row in running.items():
            row.state = TrialState[by_id[trial_id]["state"]]
            row.datetime_complete = now
    return [r for i, r in by_id.items() if i not in running]


def _attr_rows(session: Any, model: Any, trial_id: int,
               attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``attrs`` for ``trial_id``, the ones they replace deleted."""
    if not attrs:
        return []
    table = model.__table__
    session.execute(table.delete().where(table.c.trial_id == trial_id,
                                         table.c.key.in_(list(attrs))))
    return [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
            for k, v in attrs.items()]


def _delete(session: Any, model: Any, trial_ids: list[int]) -> None:
    table = model.__table__
    for start in range(0, len(trial_ids), IN_CHUNK):
        session.execute(table.delete().where(
            table.c.trial_id.in_(trial_ids[start:start + IN_CHUNK])))


def _insert(session: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(model.__table__.insert(), rows)


def count_with_system_attr(storage: RDBStorage, study_id: int, key: str) -> int:
    """How many of the study's trials have the system attribute ``key``."""
    trials = models.TrialModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        return int(session.execute(
            sqlalchemy.select(sqlalchemy.func.count()).select_from(
                attrs.join(trials, attrs.c.trial_id == trials.c.trial_id))
            .where(trials.c.study_id == study_id, attrs.c.key == key)).scalar_one())


def get_trials(storage: RDBStorage, trial_ids: Sequence[int],
               skip_user_attrs: Iterable[str] = ()) -> list[FrozenTrial]:
    """The trials ``trial_ids`` as Optuna reads them (values, parameters, attributes,
    intermediate values; single-objective, no datetimes), without the user attributes
    ``skip_user_attrs``: six plain queries in one transaction, no ORM objects (Optuna's own
    read builds them, several times the cost for a worker reading others' trials)."""
    ids, skip = list(trial_ids), list(skip_user_attrs)
    if not ids:
        return []
    t, p, v = (models.TrialModel.__table__, models.TrialParamModel.__table__,
               models.TrialValueModel.__table__)
    u, s = models.TrialUserAttributeModel.__table__, models.TrialSystemAttributeModel.__table__
    i = models.TrialIntermediateValueModel.__table__
    found: dict[int, dict[str, Any]] = {}
    with _create_scoped_session(storage.scoped_session) as session:
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            for trial_id, number, state in session.execute(
                    sqlalchemy.select(t.c.trial_id, t.c.number, t.c.state)
                    .where(t.c.trial_id.in_(chunk))):
                found[trial_id] = {"number": number, "state": _state(state), "value": None,
                                   "params": {}, "distributions": {}, "user": {},
                                   "system": {}, "steps": {}}
            for trial_id, name, value, dist in session.execute(
                    sqlalchemy.select(p.c.trial_id, p.c.param_name, p.c.param_value,
                                      p.c.distribution_json).where(p.c.trial_id.in_(chunk))):
                distribution = _distribution(dist)
                found[trial_id]["distributions"][name] = distribution
                found[trial_id]["params"][name] = distribution.to_external_repr(value)
            for trial_id, value, kind in session.execute(
                    sqlalchemy.select(v.c.trial_id, v.c.value, v.c.value_type)
                    .where(v.c.trial_id.in_(chunk), v.c.objective == 0)):
                found[trial_id]["value"] = models.TrialValueModel.stored_repr_to_value(
                    value, kind)
            for table, field in ((u, "user"), (s, "system")):
                query = (sqlalchemy.select(table.c.trial_id, table.c.key, table.c.value_json)
                         .where(table.c.trial_id.in_(chunk)))
                if field == "user" and skip:
                    query = query.where(table.c.key.not_in(skip))
                for trial_id, key, value in session.execute(query):
                    found[trial_id][field][key] = json.loads(value)
            for trial_id, step, value, kind in session.execute(
                    sqlalchemy.select(i.c.trial_id, i.c.step, i.c.intermediate_value,
                                      i.c.intermediate_value_type)
                    .where(i.c.trial_id.in_(chunk))):
                found[trial_id]["steps"][step] = (
                    models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                        value, kind))
    return [FrozenTrial(number=f["number"], state=f["state"], value=f["value"],
                        datetime_start=None, datetime_complete=None, params=f["params"],
                        distributions=f["distributions"], user_attrs=f["user"],
                        system_attrs=f["system"], intermediate_values=f["steps"],
                        trial_id=trial_id)
            for trial_id, f in sorted(found.items())]


@functools.lru_cache(maxsize=1024)
def _distribution(text: str) -> BaseDistribution:
    return json_to_distribution(text)


def has_system_attr(storage: RDBStorage, study_id: int, key: str, value: Any) -> bool:
    """Whether one of the study's trials has the system attribute ``key`` = ``value``."""
    trials = models.TrialModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    with _create_scoped_session(storage.scoped_session) as session:
        return session.execute(
            sqlalchemy.select(attrs.c.trial_id).select_from(
                attrs.join(trials, attrs.c.trial_id == trials.c.trial_id))
            .where(trials.c.study_id == study_id, attrs.c.key == key,
                   attrs.c.value_json == json.dumps(value)).limit(1)).first() is not None
