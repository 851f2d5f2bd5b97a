"""The storage many workers share: batched writes read back through Optuna as Optuna's own
calls write them, and a storage that refuses for a while loses no trial."""

import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from wine import WINE_SPACE

from caviar.search.study import rdb
from caviar.search.study.storage import open_storage, quiet

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
         "opt": CategoricalDistribution(["adam", "momentum"])}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _comparable(t: optuna.trial.FrozenTrial) -> tuple:
    return (t.state, t.value, t.params, t.distributions, t.user_attrs, t.system_attrs,
            {k: ("nan" if math.isnan(v) else v) for k, v in t.intermediate_values.items()},
            t.datetime_complete is not None)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("state, value", [(TrialState.COMPLETE, 0.25),
                                          (TrialState.COMPLETE, math.inf),
                                          (TrialState.PRUNED, None)])
def test_batched_writes_match_optunas_own_calls(url, state, value):
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    study_id = storage.get_study_id_from_name("s")
    params, attrs = {"lr": 0.01, "opt": "momentum"}, {"hp": {"width": 8}, "worker": "h:1"}
    ours = rdb.create_trials(storage, study_id, [(params, DISTS, attrs)] * 2, heartbeat=True)
    theirs = storage.create_new_trial(study_id, optuna.trial.FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, values=None, datetime_start=None,
        datetime_complete=None, params=params, distributions=DISTS, user_attrs=attrs,
        system_attrs={}, intermediate_values={}, trial_id=-1))
    assert [n for _, n in ours] == [0, 1] and study.trials[2]._trial_id == theirs
    record = {"trial_id": ours[0][0], "state": state.name, "value": value,
              "intermediate_values": {"1": 0.5, "2": math.nan, "3": -math.inf},
              "user_attrs": {"hp": {"width": 16}, "curve": [1.0, 2.0]},
              "system_attrs": {"asha:rung_0": 0.5}}
    assert rdb.finish_trials(storage, [record]) == []
    for step, v in record["intermediate_values"].items():  # the same through Optuna's calls
        storage.set_trial_intermediate_value(theirs, int(step), v)
    for k, v in record["user_attrs"].items():
        storage.set_trial_user_attr(theirs, k, v)
    for k, v in record["system_attrs"].items():
        storage.set_trial_system_attr(theirs, k, v)
    storage.set_trial_state_values(theirs, state, None if value is None else [value])
    assert _comparable(storage.get_trial(ours[0][0])) == _comparable(storage.get_trial(theirs))
    assert storage.get_trial(ours[1][0]).state == TrialState.RUNNING
    for trial_id in (ours[0][0], ours[1][0], theirs):  # read back as Optuna reads them
        [read] = rdb.get_trials(storage, [trial_id])
        assert _comparable(read)[:-1] == _comparable(storage.get_trial(trial_id))[:-1]
        assert read.number == storage.get_trial(trial_id).number
    [read] = rdb.get_trials(storage, [ours[0][0]], skip_user_attrs=["curve"])
    assert read.user_attrs == {"hp": {"width": 16}, "worker": "h:1"}
    assert rdb.finish_trials(storage, [record]) == [record]  # finished already: the caller's
    rdb.beat(storage, [ours[1][0]])
    with quiet():
        stale = optuna.storages.RDBStorage(storage.url, heartbeat_interval=1, grace_period=1)
    assert stale._get_stale_trial_ids(study_id) == []  # it beats
    time.sleep(2.1)
    assert stale._get_stale_trial_ids(study_id) == [ours[1][0]]  # the other never did
    assert [s for _, _, s in rdb.states(storage, study_id, ours[1][0])] == [
        TrialState.RUNNING, state]


@pytest.mark.slow
def test_a_locked_storage_delays_the_run_but_loses_no_trial(wine_csv, tmp_path):
    db = tmp_path / "run" / "study.db"
    code = ("from caviar.search.tune import tune; "
            f"tune({str(wine_csv)!r}, 'cultivar', trials=96, population=4, sampler='random', "
            f"space={dict(WINE_SPACE, epochs={'kind': 'int', 'low': 4, 'high': 8})!r}, "
            f"out={str(tmp_path / 'run')!r})")
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "CAVIAR_SQLITE_TIMEOUT_S": "0.1"}  # a locked file fails a call in 0.1 s
    run = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            done = optuna.load_study(study_name="wine-cultivar", storage=f"sqlite:///{db}")
            if len(done.trials) >= 4:  # started
                break
        except Exception:  # not created yet
            continue
    with sqlite3.connect(db, timeout=30) as holder:  # every write refused for 3 s
        holder.execute("BEGIN EXCLUSIVE")
        locked_at = len(holder.execute("SELECT trial_id FROM trials").fetchall())
        time.sleep(3)
        running = run.poll() is None
        holder.rollback()
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err.decode()[-2000:]
    trials = optuna.load_study(study_name="wine-cultivar", storage=f"sqlite:///{db}").trials
    assert locked_at < 96 and running  # the lock came mid-run
    assert len(trials) == 96 and all(t.state.is_finished() for t in trials)
    assert sorted(t.number for t in trials) == list(range(96))
    assert not (tmp_path / "run" / "pending-trials.jsonl").exists()  # all written, dropped
