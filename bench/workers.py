"""Trials per minute, the best validation score after a fixed budget, and the storage's share
of wall time, for 1, 2 and 4 local workers of one torch thread each on one study.

    PYTHONPATH=src python bench/workers.py [--budget 60] [--workers 1 2 4] [--storage sqlite]

Storage share: seconds the workers' training waited for storage calls (reading others'
trials, waiting for trial numbers) over their wall time; beside it, the CPU seconds of each
worker's storage thread (creating trials, heartbeats: training goes on meanwhile) and of the
archive writers (updating finished trials, in processes of their own), over the same. The
machine's load average is recorded with each run: on a shared machine it moves the figures,
so trials per CPU second (the workers' and their writers' CPU time) are given too: equal for
1 and N workers means the storage costs nothing that more cores would not pay for.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import optuna
import torch

from caviar.datasets import dataset_path
from caviar.search.tune import tune


def run(workers: int, budget: float, storage: str | None, root: Path) -> dict:
    out = root / f"w{workers}"
    load = round(os.getloadavg()[0], 2)  # 1-minute load average: other work on the machine
    started = time.perf_counter()
    result = tune(dataset_path("wage"), "wage", drop=["logwage"], time_budget=budget,
                  population=16, out=out, seed=0, workers=workers,
                  storage=storage and storage.replace("NAME", f"w{workers}"))
    wall = time.perf_counter() - started
    trials = [t for t in result.study.trials if t.state.is_finished()]
    summaries = result.extra.get("workers") or [result.extra]
    worker_wall = sum(s.get("wall_s", wall) for s in summaries)
    return {"workers": workers, "trials": len(trials),
            "trials_per_min": round(60 * len(trials) / budget, 1),
            "best_val": min((t.value for t in trials if t.value is not None), default=None),
            "storage_share": round(sum(s.get("storage_s", 0) for s in summaries)
                                   / worker_wall, 4),
            "thread_share": round(sum(s.get("storage_thread_s", 0) for s in summaries)
                                  / worker_wall, 4),
            "writer_share": round(sum(s.get("writer_storage_s", 0) for s in summaries)
                                  / worker_wall, 4),
            # trials per CPU second the workers and their writers got: what the storage
            # costs, apart from how much of a loaded machine the workers were given
            "trials_per_cpu_s": round(len(trials) / sum(
                s.get("cpu_s", 0) + s.get("writer_storage_s", 0) for s in summaries), 2),
            "wall_s": round(wall, 1), "load_before": load,
            "load_after": round(os.getloadavg()[0], 2)}


def compare_storages(root: Path, n: int = 200) -> list[dict]:
    """Milliseconds per trial to create one (parameters, two attributes) and finish it (20
    intermediate values, 4 attributes, a value) in one process: Optuna's calls on SQLite in
    WAL mode, caviar's batched writes on the same file (batches of 8), and Optuna's calls on
    its JournalFileBackend."""
    from optuna.distributions import FloatDistribution
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from caviar.search.study import rdb
    from caviar.search.study.storage import open_storage

    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "dropout": FloatDistribution(0, 1)}
    attrs = {"hyperparameters": {"width": 64, "depth": 2}, "worker": "host:1"}
    finished = {"curve": [{"epoch": e, "val_rmse": 1.0 / e} for e in range(1, 21)],
                "duration_s": 1.5, "network": {"value": 0.5}, "stopped": None}
    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
        datetime_start=None, datetime_complete=None, params={"lr": 0.01, "dropout": 0.1},
        distributions=dists, user_attrs=attrs, system_attrs={}, intermediate_values={},
        trial_id=-1)

    def optuna_calls(storage: optuna.storages.BaseStorage) -> float:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
        started = time.perf_counter()
        for _ in range(n):
            trial_id = storage.create_new_trial(study_id, template)
            for step in range(1, 21):
                storage.set_trial_intermediate_value(trial_id, step, 1.0 / step)
            for key, value in finished.items():
                storage.set_trial_user_attr(trial_id, key, value)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [0.5])
        return 1000 * (time.perf_counter() - started) / n

    def batched(storage: optuna.storages.RDBStorage) -> float:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
        started = time.perf_counter()
        for _ in range(n // 8):
            made = rdb.create_trials(storage, study_id, [(template.params, dists, attrs)] * 8,
                                     heartbeat=True)
            rdb.finish_trials(storage, [
                {"trial_id": i, "state": "COMPLETE", "value": 0.5, "user_attrs": finished,
                 "system_attrs": {}, "intermediate_values": {s: 1.0 / s for s in range(1, 21)}}
                for i, _ in made])
        return 1000 * (time.perf_counter() - started) / (8 * (n // 8))

    return [
        {"storage": "sqlite-wal, optuna calls",
         "ms_per_trial": round(optuna_calls(open_storage(f"sqlite:///{root / 'a.db'}",
                                                         heartbeat=False)), 2)},
        {"storage": "sqlite-wal, caviar batches of 8",
         "ms_per_trial": round(batched(open_storage(f"sqlite:///{root / 'b.db'}",
                                                    heartbeat=False)), 2)},
        {"storage": "journal file, optuna calls",
         "ms_per_trial": round(optuna_calls(JournalStorage(JournalFileBackend(
             str(root / "journal.log")))), 2)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--storage", default=None,
                        help="a storage URL with NAME for the run (default: SQLite in OUT)")
    parser.add_argument("--compare-storages", action="store_true",
                        help="only time creating and finishing trials in each storage")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.compare_storages:
        with tempfile.TemporaryDirectory() as tmp:
            for row in compare_storages(Path(tmp)):
                print(json.dumps(row), flush=True)
        return
    torch.set_num_threads(1)  # one worker in this process: one thread, like each of N
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            print(json.dumps(run(n, args.budget, args.storage, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
