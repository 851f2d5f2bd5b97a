"""One worker loop, as other processes and machines run it: ``run_worker(spec, index)``;
and joining a study from its stored spec (``caviar worker``)."""

from __future__ import annotations

import os
from typing import Any

import optuna

from ..search.study import keys
from ..search.study.storage import open_storage
from .spec import WorkerSpec


def run_worker(spec: WorkerSpec | dict[str, Any], index: int) -> dict[str, Any]:
    """Train populations for the study of ``spec`` until its budget is spent; returns what
    this worker did (trials, seconds, seconds in the storage). Picklable for Dask."""
    from ..search.tune import work

    if isinstance(spec, dict):
        spec = WorkerSpec.from_dict(spec)
    _, summary = work(spec, index)
    return summary


def stored_spec(storage: str, study_name: str) -> WorkerSpec:
    """The spec the study's coordinator stored; ValueError if there is no such study."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(f"no study {study_name!r} in {storage}: start it with caviar tune "
                         "--storage URL --study NAME") from None
    spec = study.user_attrs.get(keys.SPEC)
    if not isinstance(spec, dict):
        raise ValueError(f"study {study_name!r} was not started by a caviar that records "
                         "workers' specs: run caviar tune on it once")
    return WorkerSpec.from_dict(spec)


def join(storage: str, study_name: str, *, artifacts: str | None = None,
         data: str | None = None, out: str | None = None,
         threads: int | None = None) -> dict[str, Any]:
    """Join the study as one more worker (``caviar worker``)."""
    spec = stored_spec(storage, study_name).replace(
        storage=storage, artifacts=artifacts, data=data, out=out, threads=threads)
    return run_worker(spec, index=os.getpid())
