"""Devices and compiled kernels: the device code paths run on every machine (on the CPU here,
on the GPU too where there is one), and the compiled kernels agree with the eager ones."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from caviar import CaviarClassifier
from caviar.cli import app
from caviar.engine import Population, kernels, resolve_device
from caviar.model import fit_model, load_model
from caviar.training import train_network

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(160, 6, generator=g)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).long() + (X[:, 2] > 0.5).long()
    return X[:120], y[:120], X[120:], y[120:]


def members(epochs: int = 2) -> list[dict]:
    base = [{"learning_rate": 1e-2, "dropout": 0.2},
            {"learning_rate": 3e-3, "optimizer": "momentum", "l2": 1.0},
            {"learning_rate": 1e-3, "optimizer": "adamw", "weight_decay": 0.1, "dropout": 0.4}]
    return [{"hidden_layer_sizes": (16, 8), "batch_size": 32, "epochs": epochs, **m}
            for m in base]


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError) as error:
        resolve_device("cuda")
    assert str(error.value) == "CUDA is not available on this machine; use --device cpu or auto"


def test_cli_train_device_cuda_without_cuda_is_one_error_line(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["train", "nowhere.csv", "--target", "y", "--device",
                                      "cuda", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == ("error: CUDA is not available on this machine; use "
                                     "--device cpu or auto")
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("device", DEVICES)
def test_population_lives_on_its_device(data, device):
    X, y, Xv, yv = data  # on the CPU: fit moves them once
    pop = Population("multiclass", 6, members(), n_classes=3, seed=3, device=device)
    pop.fit(X, y, Xv, yv)
    assert pop.generator.device.type == device
    tensors = [*pop.params.values(), *pop.buffers.values(), *pop.optimizer.v.values(),
               pop.optimizer.t, pop.epoch, pop.diverged, pop.best_score]
    assert all(t.device.type == device for t in tensors)
    assert all(t.device.type == "cpu" for t in pop.state_tensors().values())
    assert pop.predict(Xv).device.type == device
    assert [len(h) for h in pop.history] == [2, 2, 2]
    assert all(np.isfinite(h[-1]["val_log_loss"]) for h in pop.history)
    # a member's start comes from its own seeded generator on the device, whatever P
    again = Population("multiclass", 6, members(), n_classes=3, seed=3, device=device)
    alone = Population("multiclass", 6, members()[1:2], n_classes=3, seed=3, device=device)
    for name, p in again.params.items():
        assert torch.equal(p[0], alone.params[name][0])


def test_device_cpu_through_the_device_code_path_equals_the_default(data):
    """Population(device="cpu") and "auto" on a machine without CUDA train bit for bit like
    a population built without the argument (a seeded CPU run stays reproducible)."""
    X, y, Xv, yv = data
    default = Population("multiclass", 6, members(), n_classes=3, seed=3).fit(X, y, Xv, yv)
    devices = ["cpu"] if torch.cuda.is_available() else ["cpu", "auto"]
    for device in devices:
        pop = Population("multiclass", 6, members(), n_classes=3, seed=3, device=device)
        pop.fit(*pop.to_device(X, y, Xv, yv))
        for name, p in default.params.items():
            assert torch.equal(pop.params[name], p), (device, name)
        assert pop.history == default.history
        assert torch.equal(pop.generator.get_state(), default.generator.get_state())


def test_train_network_and_estimator_on_cpu_equal_the_default():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(100, 4, generator=g)
    y = (X[:, 0] > 0).float()
    hp = {"hidden_layer_sizes": (8,), "epochs": 3, "batch_size": 16, "dropout": 0.1}
    a = train_network(X[:80], y[:80], "binary", hp, X_val=X[80:], y_val=y[80:], seed=2,
                      patience=2)
    b = train_network(X[:80], y[:80], "binary", hp, X_val=X[80:], y_val=y[80:], seed=2,
                      patience=2, device="cpu")
    for name, p in a.params.items():
        assert torch.equal(b.params[name], p)

    Xn, yn = X.numpy(), y.numpy().astype(int)
    default = CaviarClassifier(hidden_layer_sizes=(8,), epochs=3, random_state=0).fit(Xn, yn)
    on_cpu = CaviarClassifier(hidden_layer_sizes=(8,), epochs=3, random_state=0,
                              device="cpu").fit(Xn, yn)
    assert on_cpu.get_params()["device"] == "cpu"
    np.testing.assert_array_equal(on_cpu.predict_proba(Xn), default.predict_proba(Xn))
    with pytest.raises(ValueError, match="device must be one of"):
        CaviarClassifier(epochs=1, device="gpu").fit(Xn, yn)


@pytest.mark.parametrize("saved_on", DEVICES)
@pytest.mark.parametrize("loaded_on", DEVICES)
def test_a_model_saved_on_one_device_loads_on_another(tmp_path, saved_on, loaded_on):
    g = np.random.default_rng(0)
    df = pd.DataFrame({"a": g.normal(size=120), "b": g.normal(size=120),
                       "c": g.choice(["x", "y"], size=120)})
    df["t"] = np.where(df["a"] + (df["c"] == "x") > 0.5, "yes", "no")
    model = fit_model(df, "t", {"hidden_layer_sizes": [8], "epochs": 2, "batch_size": 32,
                                "dropout": 0.2}, device=saved_on)
    assert model.network.device.type == saved_on
    expected = model.predict_proba(df)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", device=loaded_on)
    assert loaded.network.device.type == loaded_on
    assert loaded.network.generator.device.type == loaded_on
    np.testing.assert_allclose(loaded.predict_proba(df), expected, rtol=1e-5, atol=1e-6)
    for name, p in model.network.params.items():
        assert torch.equal(loaded.network.params[name].cpu(), p.cpu())
    if saved_on == loaded_on:  # the generator goes on where it stopped
        assert torch.equal(loaded.network.generator.get_state(),
                           model.network.generator.get_state())


def test_a_generator_state_from_another_kind_of_device_seeds_a_new_one(data):
    """A CUDA generator's state cannot drive a CPU generator (nor the reverse): loading it
    elsewhere seeds the new generator from the saved state, the same way every time."""
    X, y, Xv, yv = data
    pop = Population("multiclass", 6, members(), n_classes=3, seed=3).fit(X, y, Xv, yv)
    meta, tensors = pop.state_meta(), pop.state_tensors()
    assert meta["generator_device"] == "cpu"
    meta["generator_device"] = "cuda"  # as if saved from a GPU, loaded on the CPU
    meta["hyperparameters"] = pop.hyperparameters
    a, b = (Population.from_state(meta, tensors) for _ in range(2))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert not torch.equal(a.generator.get_state(), pop.generator.get_state())
    for name, p in pop.params.items():
        assert torch.equal(a.params[name], p)
    a.train_epoch(X, y)
    b.train_epoch(X, y)
    assert torch.equal(a.params["W0"], b.params["W0"])


def test_compiled_kernels_fall_back_to_eager_once_when_compiling_fails(data, monkeypatch):
    X, y, _, _ = data

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found (simulated)")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(kernels, "_compile_failed", [])
    for kernel in (kernels.COMPILED.hidden_forward, kernels.COMPILED.hidden_backward,
                   kernels.COMPILED.update):
        monkeypatch.setattr(kernel, "compiled", None)
    eager = Population("multiclass", 6, members(), n_classes=3, seed=3, compile=False)
    fallback = Population("multiclass", 6, members(), n_classes=3, seed=3, compile=True)
    assert fallback.kernels is kernels.COMPILED
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback.train_epoch(X, y)
        fallback.train_epoch(X, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no C++ compiler found" in messages[0], messages
    eager.train_epoch(X, y)
    eager.train_epoch(X, y)
    for name, p in eager.params.items():
        assert torch.equal(fallback.params[name], p)


def test_compile_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    assert kernels.select() is kernels.EAGER
    monkeypatch.setenv(kernels.COMPILE_ENV, "1")
    assert kernels.select() is kernels.COMPILED
    assert kernels.select(False) is kernels.EAGER
    monkeypatch.setenv(kernels.COMPILE_ENV, "0")
    assert kernels.select(True) is kernels.COMPILED


@pytest.mark.slow
def test_compiled_kernels_equal_the_eager_ones(data):
    """torch.compile (inductor, C++ kernels from the system's compiler) trains like the
    eager path, to float32 rounding: fused loops sum and multiply in another order."""
    if kernels._compile_failed:
        pytest.skip(f"torch.compile failed earlier: {kernels._compile_failed[0]}")
    X, y, Xv, yv = data
    runs = {}
    for compile in (False, True):
        pop = Population("multiclass", 6, members(epochs=3), n_classes=3, seed=3,
                         compile=compile)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own deprecation notices while compiling
            runs[compile] = pop.fit(X, y, Xv, yv)
    if kernels._compile_failed:
        pytest.skip(f"no working compiler here: {kernels._compile_failed[0]}")
    eager, compiled = runs[False], runs[True]
    for name, p in eager.params.items():
        torch.testing.assert_close(compiled.params[name], p, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(eager.history, compiled.history):
        assert a[-1]["val_log_loss"] == pytest.approx(b[-1]["val_log_loss"], rel=1e-4)
