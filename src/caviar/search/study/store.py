"""The study in its database: opening it, what a run records in it, the working copy the
sampler and pruner use, the leaderboard, and the model a run left behind (resume).

The study lives in a database (SQLite in ``OUT/study.db`` by default), but the sampler and the
pruner work on an in-memory copy: a database round trip for every report, prune check and
suggestion cost more than the training itself. Finished trials reach the database through the
archive (``archive.py``). Running the same tune again loads the finished trials and resumes.
The storage numbers each trial when a worker asks it (``shared.SharedStudy``); those are the
numbers reported, the in-memory ones stay internal. Many processes may share one study.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ...data import TablePreprocessor, nested_kind
from ...io import network_fits
from ...model import CaviarModel
from . import keys
from .storage import StudyMismatch, open_storage, retrying

__all__ = ["StudyMismatch", "open_storage", "open_study", "mark_interrupted", "check_data"]

INTERRUPTED = "interrupted: the tuning process stopped during this trial"


def open_study(storage: str | optuna.storages.BaseStorage, study_name: str,
               direction: str = "minimize") -> optuna.Study:
    """The study ``study_name`` at ``storage`` (a URL or a storage), created if it does not
    exist (to ``direction`` its values; safely when several processes start at once)."""
    store = open_storage(storage) if isinstance(storage, str) else storage
    return retrying(lambda: optuna.create_study(storage=store, study_name=study_name,
                                                direction=direction, load_if_exists=True),
                    what=f"open the study {study_name!r}")


def worker_name() -> str:
    """This process, as the ``worker`` trial attribute names it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_here(worker: Any) -> bool:
    """Whether ``worker`` (host:pid) is a process of this host that no longer runs."""
    if not isinstance(worker, str) or ":" not in worker:
        return True  # written before caviar recorded workers: one process tuned at a time
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: its heartbeat tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def check_metric(study: optuna.Study, direction: str, metric: str | None) -> None:
    """ValueError if ``study`` was tuned for another metric (``metric``: the history key,
    e.g. "val_auc") or direction, whose values this run's would not compare with."""
    had = study.user_attrs.get(keys.METRIC)
    same_direction = study.direction.name.lower() == direction
    if (metric is not None and had is not None and had != metric) or not same_direction:
        raise ValueError(f"study {study.study_name!r} was tuned for {had or 'another metric'}, "
                         f"not {metric}; continue it with that metric, or start another study "
                         "(--study NAME or another --out)")


def mark_interrupted(storage: optuna.storages.BaseStorage, study: optuna.Study) -> int:
    """Trials of ``study`` (in ``storage``) left RUNNING by a process of this host that died
    (or by a caviar that recorded no worker): failed now, with the reason, and re-queued as
    a heartbeat would (the storage's stale-trial callback, when it has one), so a killed
    worker whose trials a late starter finds loses nothing either. Returns how many. Other
    machines' trials are left to their heartbeats."""
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if dead_here(t.user_attrs.get(keys.WORKER))]
    study_id = storage.get_study_id_from_name(study.study_name)
    requeue = (storage.get_heartbeat_stale_trial_callback()
               if isinstance(storage, optuna.storages.RDBStorage) else None)
    failed = 0
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, keys.FAILURE, INTERRUPTED)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker starting at the same time was first
        failed += 1
        if requeue is not None:
            requeue(study, storage.get_trial(trial_id))
    return failed


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a canonical dump of the table as read: column names, dtypes and values."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    hashable = frame.copy(deep=False)
    for column in frame.columns:
        if nested_kind(frame[column]) is not None:
            hashable[column] = frame[column].map(_as_json)
    digest.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _as_json(value: Any) -> str:
    """A list, array or dict value (which pandas cannot hash) as canonical text."""
    return json.dumps(value, sort_keys=True, default=lambda v: v.tolist()
                      if hasattr(v, "tolist") else str(v))


def check_data(study: optuna.Study, seed: int, data_fingerprint: str,
               split: Mapping[str, Any] | None = None) -> None:
    """Record the study's split seed and data fingerprint, or, when it has them, refuse
    others (its saved networks were trained on that split: a test score on other rows would
    count rows they trained on). ``split``: this run's rows per part (``PreparedTable.split``),
    refused where the study's last run split the same table otherwise (another --valid
    file, or the validation share of an earlier caviar: its networks may have trained on
    this run's validation rows)."""
    attrs = study.user_attrs
    old_seed, old_print = attrs.get(keys.SPLIT_SEED), attrs.get(keys.FINGERPRINT)
    new = "start a new study with --study NEW_NAME"
    if old_seed is not None and old_seed != seed:
        raise StudyMismatch(f"study {study.study_name!r} was split with --seed {old_seed}, "
                            f"not {seed}: use --seed {old_seed}, or {new}")
    if old_print is not None and old_print != data_fingerprint:
        raise StudyMismatch(f"study {study.study_name!r} was tuned on other data (fingerprint "
                            f"{old_print[:12]}, this table {data_fingerprint[:12]}): {new}")
    # the same seed and table split otherwise: after those two, whose messages say more
    parts = ("train_rows", "val_rows", "test_rows")
    old_split = (attrs.get(keys.DATA) or {}).get("split") or {}
    if split is not None and all(p in old_split for p in parts) and any(
            old_split[p] != split[p] for p in parts):
        said = "/".join(f"{old_split[p]:,}" for p in parts)
        now = "/".join(f"{split[p]:,}" for p in parts)
        raise StudyMismatch(f"study {study.study_name!r} split its table into {said} "
                            f"training/validation/test rows, this run into {now}: {new}")
    if old_seed is None:
        study.set_user_attr(keys.SPLIT_SEED, seed)
    if old_print is None:
        study.set_user_attr(keys.FINGERPRINT, data_fingerprint)


def record_run(study: optuna.Study, *, task: str, metric: str, sampler: str, pruner: str,
               space: Mapping[str, Any], data: Mapping[str, Any],
               direction: str = "minimize") -> None:
    """What this run is, in the study's user attributes (the report reads them)."""
    for key, value in ((keys.TASK, task), (keys.METRIC, metric), (keys.DIRECTION, direction),
                       (keys.SAMPLER, sampler), (keys.PRUNER, pruner),
                       (keys.SPACE, dict(space)), (keys.DATA, dict(data))):
        study.set_user_attr(key, value)


def elapsed(study: optuna.Study) -> float:
    """Seconds the study's runs have spent so far (a resumed run's time budget counts them)."""
    return float(study.user_attrs.get(keys.ELAPSED_S, 0.0))


def working_copy(study: optuna.Study, sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """An in-memory study for ``sampler`` and ``pruner``, with ``study``'s user attributes
    (its trials are added once the archive has recovered those a killed run journaled)."""
    working = optuna.create_study(study_name=study.study_name, direction=study.direction,
                                  sampler=sampler, pruner=pruner)
    for key, value in study.user_attrs.items():
        working.set_user_attr(key, value)
    return working


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial, best first (in the study's direction): completed by value,
    then pruned, then failed. ``attrs``: the metric (history key) and direction."""
    rows = []
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    for t in study.get_trials(deepcopy=False, states=tuple(order)):
        hp = t.user_attrs.get(keys.HYPERPARAMETERS, {})
        curve = t.user_attrs.get(keys.CURVE) or []
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "epochs_run": len(curve), "duration_s": t.user_attrs.get(keys.DURATION_S),
                     **{k: (json.dumps(v) if isinstance(v, list) else v)
                        for k, v in hp.items()},
                     "_order": order[t.state]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ascending = study.direction != optuna.study.StudyDirection.MAXIMIZE
    frame = frame.sort_values(["_order", "value", "trial"], ascending=[True, ascending, True],
                              na_position="last")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    frame.attrs.update(metric=study.user_attrs.get(keys.METRIC),
                       direction=study.direction.name.lower())
    return frame


def saved_model(out: Path, study_name: str, preprocessor: TablePreprocessor
                ) -> CaviarModel | None:
    """The model saved in ``out/model`` for this study and this preprocessing, or None: a
    resumed run starts from its networks."""
    try:
        model = CaviarModel.load(out / "model")
    except (OSError, ValueError):
        return None
    if model.info.get("study") != study_name:
        return None
    # the columns changed (--drop, --categorical), or the same columns are made another way
    # (--numeric, --max-onehot)
    if model.preprocessor.get_params() != preprocessor.get_params() or not all(
            network_fits(preprocessor, network) for network in model.networks):
        return None
    return model
