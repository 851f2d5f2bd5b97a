"""RealMLP's scaling layer (``front_scale``): a learned factor per input of the first layer.
The engine's hand-written backward against finite differences, its steps against a plain
torch.nn module trained by autograd and torch.optim (the scale in its own group at 6·√F
times the rate), and a model that holds one saved, loaded and exported to ONNX alike."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from gradcheck import LAYOUT, assert_gradients_match_finite_differences, make_data
from torch import nn
from torch_reference import torch_optimizer, train_beside

from caviar.engine import Population
from caviar.engine.network import FRONT_SCALE_LR


def test_the_scale_starts_at_one_and_changes_nothing_until_it_learns():
    """One factor per input of the first layer (dense columns, embedded rows and PLR
    outputs), 1 at first, decayed like the weights and stepped at 6·√F times α; a network
    with it predicts at first exactly what the same network without it predicts."""
    X, _ = make_data("multiclass", n=20, dtype=torch.float32)
    member = {"hidden_layer_sizes": (6,), "numeric_embedding": "plr", "plr_frequencies": 3,
              "plr_dim": 2, "encoding": "embedding", "embedding_dim": 2}
    scaled = Population("multiclass", LAYOUT, [{**member, "front_scale": True}] * 2,
                        n_classes=3, seed=4)
    plain = Population("multiclass", LAYOUT, [member] * 2, n_classes=3, seed=4)
    F = scaled.structure.n_features
    assert F == 1 + 2 + 3 * 2  # the binary column, the 4-level embedding, 3 PLR columns
    assert tuple(scaled.params["front_scale"].shape) == (2, F, 1)
    assert torch.equal(scaled.params["front_scale"], torch.ones(2, F, 1))
    assert "front_scale" in scaled.weight_names and "front_scale" not in plain.params
    assert scaled.structure.lr_factors == {"front_scale": FRONT_SCALE_LR * math.sqrt(F)}
    torch.testing.assert_close(scaled.predict(X), plain.predict(X), rtol=0, atol=0)


CONFIGS = [
    ("multiclass", {"activation": "relu", "batch_norm": True, "l2": 2.0, "l1": 0.5}),
    ("binary", {"activation": "tanh", "batch_norm": False, "numeric_embedding": "plr",
                "plr_frequencies": 3, "plr_dim": 2, "encoding": "embedding",
                "embedding_dim": 2}),
    ("regression", {"activation": "gelu", "batch_norm": False, "tabm_k": 3, "l2": 1.0}),
]


@pytest.mark.parametrize("task,config", CONFIGS)
def test_gradients_match_finite_differences(task, config):
    """A shared input (one broadcast product), embedded inputs (a product per member) and
    TabM-mini's sub-networks; the penalties on the scale included."""
    X, y = make_data(task)
    members = [{"hidden_layer_sizes": (4, 3), **config, "front_scale": True}] * 2
    pop = Population(task, LAYOUT, members, n_classes=3, seed=1, dtype=torch.float64)
    with torch.no_grad():  # the scale off 1, biases away from ReLU's kink at 0
        pop.params["front_scale"].mul_(torch.rand_like(pop.params["front_scale"]) + 0.5)
        for name, p in pop.params.items():
            if name in ("b0", "b1", "plr_b"):
                p.add_(0.2)
    assert_gradients_match_finite_differences(pop, X, y, 40, f"{task}, {config}")


class TorchScaled(nn.Module):
    """One member written plainly with autograd: x ⊙ s, then Linear-ReLU-Linear."""

    def __init__(self, pop: Population, member: int):
        super().__init__()
        s = pop.structure
        self.dense = list(s.dense_columns)
        self.scale = nn.Parameter(pop.params["front_scale"][member, :, 0].clone())
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(s.layer_sizes[:-1],
                                                                    s.layer_sizes[1:]))
        with torch.no_grad():
            for layer, linear in enumerate(self.layers):
                linear.weight.copy_(pop.params[f"W{layer}"][member].T)
                linear.bias.copy_(pop.params[f"b{layer}"][member, 0])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        a = X[:, self.dense] * self.scale
        for linear in self.layers[:-1]:
            a = torch.relu(linear(a))
        return self.layers[-1](a)


MEMBERS = [
    {"optimizer": "sgd", "learning_rate": 0.01, "l2": 3.0},
    {"optimizer": "momentum", "learning_rate": 0.02, "momentum": 0.8, "l2": 1.0},
    {"optimizer": "adam", "learning_rate": 1e-3, "l2": 1.0},
    {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 0.5, "beta1": 0.85},
]
N, BATCH = 48, 16


def test_the_scale_steps_as_torch_optim_steps_it_in_a_group_of_its_own():
    """Two epochs of every optimizer end at the weights and the scale that torch.optim gives
    a plain module whose scale is a parameter group with rate 6·√F·α and the weights'
    decay (L2, or AdamW's decoupled decay at that rate)."""
    X, y = make_data("regression", n=N, seed=3, dtype=torch.float32)
    members = [{**m, "hidden_layer_sizes": (8,), "batch_norm": False, "batch_size": BATCH,
                "epochs": 2, "front_scale": True} for m in MEMBERS]
    pop = Population("regression", LAYOUT, members, seed=5)
    factor = pop.structure.lr_factors["front_scale"]
    models = [TorchScaled(pop, i) for i in range(pop.size)]
    optimizers = []
    for model, h in zip(models, pop.hyperparameters):
        weights = [linear.weight for linear in model.layers]
        opt = torch_optimizer(h, N, weights, [linear.bias for linear in model.layers])
        opt.add_param_group({"params": [model.scale], "lr": opt.param_groups[0]["lr"] * factor,
                             "weight_decay": opt.param_groups[0]["weight_decay"]})
        optimizers.append(opt)
    train_beside(pop, models, optimizers, X, y, epochs=2, seed=5,
                 loss=lambda model, Xb, yb: nn.functional.mse_loss(model(Xb).squeeze(1), yb) / 2)
    for i, model in enumerate(models):
        label = MEMBERS[i]["optimizer"]
        torch.testing.assert_close(pop.params["front_scale"][i, :, 0], model.scale.detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"scale of {label}")
        torch.testing.assert_close(pop.params["W0"][i], model.layers[0].weight.detach().T,
                                   rtol=1e-4, atol=1e-5, msg=f"W0 of {label}")
        assert not torch.allclose(model.scale.detach(), torch.ones_like(model.scale))


def test_a_model_with_the_scale_learns_saves_loads_and_exports(tmp_path):
    """A regressor with ``front_scale``: it beats the mean on held-out rows, saves as
    safetensors, loads to the same predictions, and exports to ONNX alike."""
    import onnxruntime as ort

    from caviar import CaviarRegressor, export_onnx, load_model

    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "noise": rng.normal(size=n), "c": rng.choice(list("wxyz"), n)})
    y = 3 * df["a"] - np.abs(df["b"]) + (df["c"] == "x") + 0.1 * rng.normal(size=n)
    train, test = slice(0, 400), slice(400, None)
    reg = CaviarRegressor(hidden_layer_sizes=(32,), front_scale=True, epochs=40,
                          random_state=0).fit(df[train], y[train])
    assert reg.get_params()["front_scale"] is True
    assert reg.model_.network.structure.front_scale
    prediction = reg.predict(df[test])
    rmse = np.sqrt(np.mean((prediction - y[test]) ** 2))
    assert rmse < 0.3 * np.std(y[test]), rmse

    reg.model_.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    np.testing.assert_allclose(again.predict(df[test]), prediction, rtol=1e-6)
    path = export_onnx(again, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_prediction, = session.run(None, {"features": again.preprocessor.transform(df[test])})
    np.testing.assert_allclose(onnx_prediction, prediction, rtol=1e-4, atol=1e-4)
