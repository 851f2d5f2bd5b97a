"""Many workers on one study: numbers from the storage, every worker's trials shared, the
model built from every worker's networks, dead workers' trials re-queued, data checked."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner
from wine import WINE_SPACE, WINE_WARM

from caviar.cli import app
from caviar.search import default_space, fixed
from caviar.search.study import keys
from caviar.search.study.storage import StudyMismatch
from caviar.search.tune import tune

SPACE = {**WINE_SPACE, "epochs": {"kind": "int", "low": 2, "high": 4}}
SRC = str(Path(__file__).resolve().parents[1] / "src")




def _env(**extra: str) -> dict[str, str]:
    """Subprocesses (workers, Dask workers) import this checkout's caviar."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else ""),
            "OMP_NUM_THREADS": "1", **extra}


def _check_shared_study(result, n: int, workers: int) -> None:
    study = result.study
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == n == len(trials)
    assert sorted(t.number for t in trials) == list(range(n))  # numbered by the storage
    drawn = Counter(tuple(sorted(t.params.items())) for t in trials)
    assert max(drawn.values()) == 1  # random draws of continuous values never repeat
    assert len({t.user_attrs[keys.WORKER] for t in trials}) == workers
    for member in result.model.info["members"]:  # the model's networks are the study's
        trial = study.trials[member["trial"]]
        assert trial.user_attrs[keys.NETWORK]["value"] == pytest.approx(member["value"])
        assert optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    assert result.test_scores["accuracy"] > 0.8


@pytest.mark.slow
def test_two_local_workers_tune_one_study_on_postgres(wine_csv, tmp_path, postgres_url,
                                                      monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    result = tune(wine_csv, "cultivar", trials=64, population=4, sampler="random",
                  space=SPACE, storage=postgres_url, out=tmp_path / "run", seed=0, workers=2,
                  numeric="quantile")
    _check_shared_study(result, 64, workers=2)
    assert len(result.extra["workers"]) == 2
    # every worker prepares the table from the study's spec: with the numeric scaling asked
    assert result.study.user_attrs[keys.SPEC]["numeric"] == ["quantile"]
    assert result.model.preprocessor.numeric == "quantile"


@pytest.mark.slow
def test_a_dask_cluster_tunes_one_study_on_postgres(wine_csv, tmp_path, postgres_url,
                                                    monkeypatch):
    from distributed import LocalCluster

    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = tune(wine_csv, "cultivar", trials=64, population=4, sampler="random",
                      space=SPACE, storage=postgres_url, out=tmp_path / "run", seed=0,
                      dask=cluster.scheduler_address)
    _check_shared_study(result, 64, workers=2)


def _journaled(out: Path, worker: str) -> dict[int, dict]:
    """The trials ``worker`` finished: its journal's complete lines, by trial number (its
    writer writes them to the study behind it)."""
    journal = out / "workers" / worker.replace(":", "-") / "pending-trials.jsonl"
    records = {}
    with contextlib.suppress(OSError):
        for line in journal.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written: not finished
                record = json.loads(line)
                if "trial_id" in record:
                    records[record["number"]] = record
    return records


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_running_trials(wine_csv, tmp_path, postgres_url):
    trials_budget, population = 40, 4
    space = dict(SPACE, epochs={"kind": "int", "low": 60, "high": 100})  # trials that last
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(space))
    out = tmp_path / "run"
    code = ("import json; from caviar.search.tune import tune; "
            f"tune({str(wine_csv)!r}, 'cultivar', trials={trials_budget}, "
            f"population={population}, workers=2, sampler='random', pruner='none', "
            f"storage={postgres_url!r}, out={str(out)!r}, "
            f"space=json.load(open({str(space_file)!r})))")
    coordinator = subprocess.Popen([sys.executable, "-c", code],
                                   env=_env(CAVIAR_HEARTBEAT_S="1"))
    victim, finished = None, {}
    deadline = time.monotonic() + 300  # a loaded machine is slow
    while time.monotonic() < deadline and victim is None and coordinator.poll() is None:
        time.sleep(0.1)
        try:
            trials = optuna.load_study(study_name="wine-cultivar", storage=postgres_url).trials
        except Exception:  # not created yet
            continue
        if len(trials) > trials_budget - 2 * population:
            break  # too late: a worker near the end may have no trial training
        for name in {t.user_attrs.get(keys.WORKER) for t in trials}:
            if len(_journaled(out, name)) >= 2:  # mid-run, with a population training
                os.kill(int(name.rpartition(":")[2]), signal.SIGKILL)
                victim, finished = name, _journaled(out, name)  # what it had finished
                break
    assert victim is not None, "no worker finished trials in time"
    assert len(finished) >= 2
    assert coordinator.wait(timeout=300) == 0

    study = optuna.load_study(study_name="wine-cultivar", storage=postgres_url)
    trials = study.trials
    assert all(t.state.is_finished() for t in trials)
    by_victim = [t for t in trials if t.user_attrs.get(keys.WORKER) == victim]
    # every trial it finished is in the study, as it finished it: its own, or, when its
    # orphaned writer came after the survivors had failed it, as a trial of its own
    results, late = set(), 0
    for number, record in finished.items():
        same = [t.number for t in by_victim if t.params == record["params"]
                and t.state == TrialState[record["state"]] and t.value == record["value"]]
        assert len(same) == 1
        results.add(same[0])
        late += same[0] != number
    # the ones it was training failed through the survivors' heartbeat checks ...
    lost = [t for t in by_victim if t.number not in results]
    assert len(lost) >= 1 + late and all(t.state == TrialState.FAIL for t in lost)
    # ... and each was re-queued once and trained by a survivor
    retries = {t.system_attrs.get("failed_trial"): t for t in trials}
    for t in lost:
        assert t.number in retries, [(u.number, u.state.name, u.user_attrs.get(keys.WORKER),
                                      u.user_attrs.get(keys.FAILURE), u.system_attrs)
                                     for u in trials if u.number == t.number or u.number < 12]
        retry = retries[t.number]
        assert retry.params == t.params and retry.state != TrialState.FAIL
        assert retry.user_attrs[keys.WORKER] not in (victim, None)
    # the study completes: the budget's trials finished, a re-queued copy counting for the
    # trial it replaces (a late one counts once it is in, maybe after the budget was spent)
    done = len([t for t in trials if t.state != TrialState.FAIL])
    assert trials_budget <= done <= trials_budget + late
    assert len(trials) == done + len(lost)
    assert (out / "model" / "model.json").exists()


@pytest.mark.slow
def test_a_killed_coordinator_resumes_with_the_same_command(wine_csv, tmp_path, postgres_url):
    out = tmp_path / "run"
    space = dict(SPACE, epochs={"kind": "int", "low": 8, "high": 16})
    code = ("from caviar.search.tune import tune; "
            f"tune({str(wine_csv)!r}, 'cultivar', trials=32, population=4, workers=2, "
            f"sampler='random', space={space!r}, "
            f"storage={postgres_url!r}, out={str(out)!r})")
    first = subprocess.Popen([sys.executable, "-c", code], env=_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
        with contextlib.suppress(Exception):  # not created yet
            study = optuna.load_study(study_name="wine-cultivar", storage=postgres_url)
            if sum(t.state.is_finished() for t in study.trials) >= 4:
                break
    first.kill()  # the coordinator only: its workers go on with the study
    assert first.wait() == -signal.SIGKILL
    again = subprocess.run([sys.executable, "-c", code], env=_env(), timeout=300,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name="wine-cultivar", storage=postgres_url).trials
    assert all(t.state.is_finished() and t.state != TrialState.FAIL for t in trials)
    assert sorted(t.number for t in trials) == list(range(32))  # the budget, once
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["info"]["study"] == "wine-cultivar"


def test_two_tuners_started_at_once_on_a_fresh_sqlite_file(wine_csv, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    code = ("import sys; from caviar.search.tune import tune; "
            f"tune({str(wine_csv)!r}, 'cultivar', trials=16, population=4, "
            f"sampler='random', space={SPACE!r}, storage={storage!r}, out=sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"run{i}")],
                              env=_env(), stderr=subprocess.PIPE) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    trials = optuna.load_study(study_name="wine-cultivar", storage=storage).trials
    assert all(t.state.is_finished() for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert 16 <= len(trials) <= 17  # one budget for both (the last ask may race by one)


def test_resuming_with_another_seed_is_refused(wine_csv, tmp_path):
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, out=out, seed=0)
    with pytest.raises(StudyMismatch, match="--seed 0.*--study NEW_NAME"):
        tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE, out=out, seed=1)
    result = CliRunner().invoke(app, ["tune", str(wine_csv), "--target", "cultivar",
                                      "--trials", "8", "-p", "4", "--out", str(out),
                                      "--seed", "2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--study NEW_NAME" in lines[0]


def test_caviar_worker_joins_a_study(wine_csv, tmp_path):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    tune(wine_csv, "cultivar", trials=8, population=4, sampler="random", space=SPACE, out=out)
    study = optuna.load_study(study_name="wine-cultivar", storage=storage)
    spec = study.user_attrs[keys.SPEC]
    study.set_user_attr(keys.SPEC, dict(spec, trials=12))  # as if asked for 4 more
    worker = subprocess.run(
        [sys.executable, "-m", "caviar.cli", "worker", "--storage", storage, "--study",
         "wine-cultivar", "--out", str(tmp_path / "w")], env=_env(), capture_output=True,
        text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    assert "4 trials" in worker.stdout
    trials = optuna.load_study(study_name="wine-cultivar", storage=storage).trials
    assert len(trials) == 12 and all(t.state.is_finished() for t in trials)
    assert len({t.user_attrs[keys.WORKER] for t in trials}) == 2
    other = CliRunner().invoke(app, ["worker", "--storage", storage, "--study", "nope"])
    assert other.exit_code == 1 and other.output.startswith("error: no study 'nope'")


@pytest.mark.slow
def test_workers_bag_the_kept_networks_of_every_worker(wine_csv, tmp_path, monkeypatch):
    # the bag's candidates are the kept networks read back from the study, one per trial:
    # more than the searched ensemble, and the bag averages those it chooses
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    result = tune(wine_csv, "cultivar", trials=16, population=4, sampler="random",
                  space=SPACE, out=tmp_path / "run", seed=0, workers=2, refit="bag")
    info = result.model.info
    assert info["trained_on"] == "bag"
    assert info["bag_candidates"] == 16 > len(info["members"])  # 4 × 5 kept: every trial
    chosen = {m["trial"] for m in info["bag_members"]}
    assert chosen <= {t.number for t in result.study.get_trials(deepcopy=False)}
    assert len(result.model.networks) == 5 * len(chosen)
    assert result.test_scores["accuracy"] > 0.8


@pytest.mark.slow
def test_every_worker_goes_on_with_the_scaling_the_warm_start_chose(wine_csv, tmp_path,
                                                                    monkeypatch):
    # numeric="auto": worker 0 trains the warm start; the other worker sees its trials
    # through refresh and switches as well. At seed 7 quantile's warm network wins on wine
    # (tests/test_scaling.py), so each worker's trials read robust, then quantile, never back.
    # The epochs are fixed so that the warm networks end early in the budget: on wine's 107
    # training rows the estimators' network would otherwise train their 1,000 one-step
    # epochs, most of this test's 20 s on one core, and leave no time after the switch.
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    space = default_space().replace({"epochs": fixed(50)})
    result = tune(wine_csv, "cultivar", time_budget=20, population=8, out=tmp_path / "run",
                  seed=7, workers=2, numeric="auto", report=False, space=space)
    trials = result.study.get_trials(deepcopy=False)
    warm = [t for t in trials if t.user_attrs.get(keys.WARM)]
    # each known-good network under both scalings, all trained by worker 0
    assert len(warm) == 2 * WINE_WARM
    assert len({t.user_attrs[keys.WORKER] for t in warm}) == 1
    assert result.study.user_attrs[keys.SCALING]["scaling"] == "quantile"
    by_worker: dict[str, list[str]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not t.user_attrs.get(keys.WARM):
            by_worker.setdefault(t.user_attrs[keys.WORKER], []).append(
                t.user_attrs[keys.HYPERPARAMETERS]["numeric"])
    assert len(by_worker) == 2
    for scalings in by_worker.values():
        switched = scalings.index("quantile")  # each worker switched
        assert set(scalings[:switched]) <= {"robust"} and set(scalings[switched:]) == {"quantile"}


def test_resuming_with_another_split_of_the_same_table_is_refused(wine_csv, tmp_path):
    # its networks may have trained on this run's validation rows
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, out=out, seed=0)
    valid = pd.read_csv(wine_csv).sample(30, random_state=0)
    with pytest.raises(StudyMismatch, match=r"split its table into 106/36/36 training/"
                       r"validation/test rows, this run into \d+/30/\d+.*--study NEW_NAME"):
        tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE, out=out, seed=0,
             validation=valid)
    again = tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE, out=out, seed=0)
    assert len(again.study.trials) == 8  # the same split resumes
