"""``tune --device``: the populations train on the device, the kept networks, the model files
and the study come back on the CPU; on a CPU the device path trains exactly like the
default. Parametrized over the devices this machine has (a GPU too where there is one)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import assert_one_error_line, invoke
from wine import WINE_SPACE, wine_frame

from caviar.data import prepare
from caviar.engine import Population, resolve_device
from caviar.model import load_model
from caviar.search import Space
from caviar.search.budget import Budget
from caviar.search.scheduler import Tuner
from caviar.search.study import keys
from caviar.search.tune import tune

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SPACE = {**WINE_SPACE, "epochs": {"kind": "int", "low": 3, "high": 4}}


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return wine_frame()


def _values(result) -> list[tuple]:
    return sorted((t.number, t.state.name, t.value) for t in result.study.trials)


@pytest.fixture(scope="module")
def default_run(wine, tmp_path_factory):
    """A tune that never names a device."""
    return tune(wine, "cultivar", trials=8, population=8, space=SPACE, seed=1,
                out=tmp_path_factory.mktemp("default"))


@pytest.mark.parametrize("device", [*DEVICES, "auto"])
def test_tune_on_a_device_keeps_a_cpu_model_that_loads_and_predicts_the_same(
        wine, tmp_path, default_run, device):
    result = tune(wine, "cultivar", trials=8, population=8, space=SPACE, seed=1,
                  out=tmp_path, device=device)
    kind = resolve_device(device).type
    assert json.loads((tmp_path / "run.json").read_text())["device"] == kind
    assert result.study.user_attrs[keys.SPEC]["device"] == device  # what workers resolve
    assert all(n.device.type == "cpu" for n in result.model.networks)
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(wine), result.model.predict_proba(wine))
    assert result.test_scores["log_loss"] < 1.0
    if kind == "cpu":  # the device code path trains bit for bit like the default
        assert _values(result) == _values(default_run)
        np.testing.assert_array_equal(result.model.predict_proba(wine),
                                      default_run.model.predict_proba(wine))


@pytest.mark.parametrize("device", DEVICES)
def test_pbt_on_a_device_keeps_a_cpu_model_with_its_schedule(wine, tmp_path, device):
    result = tune(wine, "cultivar", trials=8, population=8, space=SPACE, seed=2,
                  out=tmp_path, scheduler="pbt", pbt_interval=2, pbt_coarse=0, device=device)
    assert all(n.device.type == "cpu" for n in result.model.networks)
    assert result.model.info["pbt"]["schedule"][0]["epoch"] == 0
    loaded = load_model(tmp_path / "model", device=device)
    assert loaded.network.device.type == device
    np.testing.assert_allclose(loaded.predict_proba(wine), result.model.predict_proba(wine),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_the_tuner_moves_the_tensors_once_and_trains_there(wine, device):
    data = prepare(wine, "cultivar", seed=0)
    tuner = Tuner(optuna.create_study(), Space.from_dict(SPACE), data, Budget(4, None, 0.0), 4,
                  None, seed=0, device=device)
    assert tuner.data.X_train.device.type == device and tuner.data.y_val.device.type == device
    assert data.X_train.device.type == "cpu"  # the caller's table is left alone
    tuner.run()
    assert len(tuner.kept.networks) == 4
    for kept in tuner.kept.networks:
        assert kept.network.device.type == "cpu" and kept.val_outputs.device.type == "cpu"


@pytest.mark.parametrize("device", DEVICES)
def test_population_to_copies_every_state_and_leaves_the_original(device):
    X, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    pop = Population("multiclass", 5, [{"hidden_layer_sizes": (8,), "batch_norm": True,
                                        "dropout": 0.1, "epochs": 2, "learning_rate": lr}
                                       for lr in (1e-2, 3e-3)], n_classes=3, device=device)
    pop.fit(X, y, X, y)
    pop.remember_best(torch.tensor([0.5, 0.7]))
    assert pop.to(device) is pop
    moved = pop.to("cpu", copy=True)
    assert moved is not pop and moved.device.type == "cpu"
    for a, b in ((pop.params, moved.params), (pop.buffers, moved.buffers),
                 (pop.optimizer.v, moved.optimizer.v), (pop._best, moved._best)):
        for name, t in a.items():
            assert torch.equal(b[name], t.cpu()), name
    assert torch.equal(moved.best_score, pop.best_score.cpu())
    assert moved.history == pop.history and moved.epoch.tolist() == [2, 2]
    torch.testing.assert_close(moved.predict(X), pop.predict(X).cpu())
    moved.params["W0"].zero_()  # a copy, not a view
    assert pop.params["W0"].abs().sum() > 0


def test_cli_tune_device_cuda_without_cuda_is_one_error_line(monkeypatch, tmp_path, wine_csv):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("tune", wine_csv, "--target", "cultivar", "--trials", "2", "--device",
                    "cuda", "--out", tmp_path / "run")
    assert_one_error_line(result, "CUDA is not available on this machine",
                          "--device cpu or auto")
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("device", [*DEVICES, "auto"])
def test_a_worker_trains_on_the_device_the_study_names(wine_csv, tmp_path, device):
    """``--workers``/``--dask``/``caviar worker``: each worker reads the device from the
    study's spec and resolves it on its own machine."""
    from caviar.search.tune import work
    from caviar.workers.spec import WorkerSpec

    result = tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, seed=0,
                  out=tmp_path / "run", device=device)
    spec = WorkerSpec.from_dict(result.study.user_attrs[keys.SPEC])
    assert spec.device == device
    tuner, summary = work(spec.replace(trials=8), 1)  # a second worker, 4 more trials
    assert tuner.device == resolve_device(device)
    assert tuner.data.X_train.device.type == resolve_device(device).type
    assert summary["trials"] == 4
    assert all(k.network.device.type == "cpu" for k in tuner.kept.networks)
