"""Panda mode: one network, checkpointed every epoch, resumable exactly, adjustable by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from caviar import panda
from caviar.data import DataError
from caviar.datasets import load_dataset
from caviar.model import load_model
from caviar.report import load_run, write_report

SMALL = {"hidden_layer_sizes": [8], "batch_size": 32}


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame  # 178 rows, 13 numbers, 3 classes in "target"


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _network(run: Path):
    return load_model(run / "model").network


def _assert_same_state(a: Path, b: Path) -> None:
    na, nb = _network(a), _network(b)
    ta, tb = na.state_tensors(), nb.state_tensors()
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert na.history == nb.history
    assert na.hyperparameters == nb.hyperparameters


def test_train_writes_checkpoint_and_run_json(wine, tmp_path):
    seen = []
    run = panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=3,
                          on_epoch=lambda u: seen.append((u.epoch, u.epochs, u.record["epoch"])))
    assert seen == [(1, 3, 1), (2, 3, 2), (3, 3, 3)]
    info = _info(run)
    assert info["kind"] == "panda" and info["status"] == "complete"
    assert info["task"] == "multiclass" and info["metric"] == "val_log_loss"
    assert [r["epoch"] for r in info["history"]] == [1, 2, 3]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy",
            "learning_rate"} <= info["history"][0].keys()
    assert info["changes"] == [] and info["seed"] == 0 and info["target"] == "target"
    assert info["hyperparameters"]["hidden_layer_sizes"] == [8]
    assert info["data_path"] == "data.parquet" and (run / "data.parquet").is_file()
    assert info["data"]["rows"] == 178 and info["data"]["columns"] == 14
    assert info["data"]["roles"]["target"]["role"] == "target"
    assert info["data"]["roles"]["alcohol"] == {"role": "numeric", "reason": "numbers (float64)"}
    split = info["split"]
    assert split["train_rows"] + split["val_rows"] + split["test_rows"] == 178
    assert set(info["test_scores"]) == {"accuracy", "log_loss"}
    cm = info["confusion_matrix"]
    assert cm["labels"] == ["0", "1", "2"]
    assert sum(map(sum, cm["matrix"])) == split["test_rows"]

    model = load_model(run / "model")
    assert int(model.network.epoch[0]) == 3 and len(model.network.history[0]) == 3
    assert model.predict_frame(wine.head(5)).shape == (5, 4)  # prediction + 3 probabilities
    assert not list(run.glob(".model*"))  # no temporary directories left

    report = load_run(run)
    assert report.kind == "panda" and len(report.history) == 3
    assert report.direction == "minimize"


def test_regression_rmse_in_target_units(tmp_path):
    df = load_dataset("wage").head(300)
    run = panda.train_run(df, "wage", SMALL, tmp_path / "run", epochs=2, drop=["logwage"])
    info = _info(run)
    pre = load_model(run / "model").preprocessor
    assert info["metric"] == "val_rmse" and info["direction"] == "minimize"
    assert info["drop"] == ["logwage"]
    assert info["data"]["roles"]["logwage"]["role"] == "ignored"
    last, raw = info["history"][-1], _network(run).history[0][-1]
    assert last["val_rmse"] == pytest.approx(raw["val_rmse"] * pre.target_std_)
    assert last["val_loss"] == pytest.approx(raw["val_loss"])  # losses stay standardized
    assert set(info["test_scores"]) == {"rmse", "mae", "r2"}
    assert "confusion_matrix" not in info


def test_resume_without_changes_equals_never_stopping(wine, tmp_path):
    hp = {**SMALL, "dropout": 0.2}  # dropout masks: the saved random generator matters
    straight = panda.train_run(wine, "target", hp, tmp_path / "a", epochs=6)
    split = panda.train_run(wine, "target", hp, tmp_path / "b", epochs=3)
    panda.resume_run(split, epochs=3)
    _assert_same_state(straight, split)
    assert _info(split)["changes"] == [{"epoch": 3, "changes": {"epochs": [3, 6]}}]
    assert _info(split)["test_scores"] == _info(straight)["test_scores"]


def test_keyboard_interrupt_saves_and_resumes_exactly(wine, tmp_path):
    hp = {**SMALL, "lr_decay": "cosine", "dropout": 0.1}  # the schedule depends on epochs

    def stop_at_2(u):
        if u.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(panda.RunInterrupted) as caught:
        panda.train_run(wine, "target", hp, tmp_path / "b", epochs=5, on_epoch=stop_at_2)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert (caught.value.epoch, caught.value.epochs) == (2, 5)
    run = tmp_path / "b"
    info = _info(run)
    assert info["status"] == "interrupted" and info["epochs_done"] == 2
    assert "test_scores" not in info
    assert int(_network(run).epoch[0]) == 2

    panda.resume_run(run)  # no changes, no epochs: on to the planned 5
    straight = panda.train_run(wine, "target", hp, tmp_path / "a", epochs=5)
    _assert_same_state(straight, run)
    info = _info(run)
    assert info["status"] == "complete" and info["changes"] == []
    assert [r["epoch"] for r in info["history"]] == [1, 2, 3, 4, 5]


def test_resume_with_a_change_records_and_applies_it(wine, tmp_path):
    run = panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=3)
    panda.resume_run(run, {"learning_rate": 3e-4, "dropout": 0.1}, epochs=2)
    info = _info(run)
    assert info["changes"] == [{"epoch": 3, "changes": {
        "learning_rate": [0.001, 0.0003], "dropout": [0.0, 0.1], "epochs": [3, 5]}}]
    rates = [r["learning_rate"] for r in info["history"]]
    assert rates[:3] == pytest.approx([1e-3] * 3) and rates[3:] == pytest.approx([3e-4] * 2)
    assert info["current_hyperparameters"]["learning_rate"] == 3e-4
    assert info["hyperparameters"]["learning_rate"] == 1e-3  # the initial ones stay
    hp = _network(run).hyperparameters[0]
    assert hp["learning_rate"] == 3e-4 and hp["dropout"] == 0.1 and hp["epochs"] == 5
    assert load_model(run / "model").info["changes"] == info["changes"]
    # the report draws the change
    html = write_report(run, tmp_path / "report.html").read_text()
    assert "learning_rate 1e-3 → 3e-4" in html


def test_resume_refuses_bad_requests(wine, tmp_path):
    run = panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=1)
    with pytest.raises(ValueError, match="hidden_layer_sizes cannot change"):
        panda.resume_run(run, {"hidden_layer_sizes": [4]}, epochs=1)
    with pytest.raises(ValueError, match="did you mean learning_rate"):
        panda.resume_run(run, {"learnig_rate": 1e-4}, epochs=1)
    with pytest.raises(ValueError, match="--epochs N"):
        panda.resume_run(run)  # finished: needs more epochs
    with pytest.raises(ValueError, match="not more than"):
        panda.resume_run(run, {"epochs": 1})
    with pytest.raises(ValueError, match="not a panda run"):
        panda.resume_run(tmp_path)
    with pytest.raises(ValueError, match="already holds a run"):
        panda.train_run(wine, "target", SMALL, run, epochs=1)
    assert _info(run)["changes"] == [] and int(_network(run).epoch[0]) == 1


def test_interrupted_checkpoint_write_keeps_the_previous_one(wine, tmp_path, monkeypatch):
    import safetensors.numpy

    real = safetensors.numpy.save_file
    calls = []

    def flaky(*args, **kwargs):  # the last file of a checkpoint; model.json is already written
        calls.append(1)
        if len(calls) == 3:  # checkpoints: epoch 0, epoch 1, then epoch 2 fails midway
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save_file", flaky)
    with pytest.raises(OSError, match="No space left"):
        panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=4)
    run = tmp_path / "run"
    assert int(_network(run).epoch[0]) == 1  # the checkpoint of epoch 1, complete
    assert _info(run)["epochs_done"] == 1
    assert not list(run.glob(".model*"))
    monkeypatch.setattr(safetensors.numpy, "save_file", real)
    panda.resume_run(run)
    assert [r["epoch"] for r in _info(run)["history"]] == [1, 2, 3, 4]


def test_kill_between_the_two_renames_keeps_the_old_checkpoint(wine, tmp_path):
    run = panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=2)
    # write_directory_atomically moves model/ aside, then renames the new one into place
    os.replace(run / "model", run / ".model.old.4242")
    assert panda.find_model_dir(run) == run / ".model.old.4242"
    panda.resume_run(run, epochs=1)
    assert int(_network(run).epoch[0]) == 3
    assert not list(run.glob(".model*"))


def test_divergence_keeps_the_last_good_checkpoint(wine, tmp_path):
    run = panda.train_run(wine, "target", SMALL, tmp_path / "run", epochs=2)
    with pytest.raises(panda.RunDiverged, match="checkpoint of epoch 2 is kept"):
        panda.resume_run(run, {"learning_rate": 1e30, "optimizer": "sgd"}, epochs=3)
    info = _info(run)
    network = _network(run)
    assert info["status"] == "diverged" and "diverged" in info["failure"]
    assert not bool(network.diverged[0]) and torch.isfinite(network.params["W0"]).all()
    assert int(network.epoch[0]) == info["epochs_done"] == len(info["history"]) == 2
    panda.resume_run(run, {"learning_rate": 1e-3, "optimizer": "adam"})  # on to epoch 5
    info = _info(run)
    assert info["status"] == "complete" and info["epochs_done"] == 5
    assert [c["changes"].get("learning_rate") for c in info["changes"]] == [
        [1e-3, 1e30], [1e30, 1e-3]]


def test_data_file_run_checks_the_file_on_resume(tmp_path):
    csv = tmp_path / "wage.csv"
    load_dataset("wage").head(200).to_csv(csv, index=False)
    run = panda.train_run(csv, "wage", SMALL, tmp_path / "run", epochs=1, drop="logwage")
    info = _info(run)
    assert info["data_path"] == str(csv.resolve()) and info["data"]["source"] == str(csv)
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # one row fewer
    with pytest.raises(DataError, match="changed since the run started"):
        panda.resume_run(run, epochs=1)


@pytest.mark.slow
def test_sigkill_leaves_a_resumable_checkpoint(tmp_path):
    csv = tmp_path / "default.csv"
    load_dataset("default").head(1000).to_csv(csv, index=False)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "caviar.cli", "train", str(csv), "--target", "default",
         "--epochs", "500", "--set", "hidden_layer_sizes=8", "--out", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "run.json").exists() and _info(run)["epochs_done"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    seen = _info(run)["epochs_done"]
    k = int(_network(run).epoch[0])
    assert k >= seen >= 2  # run.json lags the checkpoint by at most one write
    panda.resume_run(run, epochs=1)
    info = _info(run)
    assert [r["epoch"] for r in info["history"]] == list(range(1, k + 2))
    assert info["status"] == "complete" and not list(run.glob(".model*"))


@pytest.fixture
def sigint_handler():
    """Restore the test process's SIGINT handler, whatever a test sets."""
    inherited = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, inherited)


def test_ctrl_c_waits_until_the_checkpoint_is_written(sigint_handler):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive shell
    done = []
    with pytest.raises(KeyboardInterrupt), panda._sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("wrote the checkpoint")  # not interrupted midway
    assert done == ["wrote the checkpoint"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored_while_writing(sigint_handler):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or in a background job
    with panda._sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # and no KeyboardInterrupt
