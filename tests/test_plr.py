"""Periodic numeric embeddings (PLR, Gorishniy et al. 2022): the engine's hand-written
backward against finite differences and against a plain torch.nn implementation with autograd
and torch.optim, members kept apart, the preprocessor's numeric columns, and a model that
embeds saved, loaded, exported to ONNX and refit."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from gradcheck import (
    LAYOUT,
    assert_gradients_match_finite_differences,
    assert_members_apart,
    make_data,
)
from torch import nn
from torch_reference import torch_optimizer, train_beside

from caviar.engine import Population

PLR = {"numeric_embedding": "plr", "plr_frequencies": 3, "plr_dim": 2}


def test_structure_embeds_the_layouts_numeric_columns_only_with_plr():
    plain = Population("regression", LAYOUT, [{"hidden_layer_sizes": (4,)}]).structure
    assert plain.dense_columns == tuple(range(8)) and plain.plr_columns == ()
    pop = Population("regression", LAYOUT, [{**PLR, "hidden_layer_sizes": (4,),
                                             "plr_sigma": sigma} for sigma in (0.01, 3.0)])
    s = pop.structure
    assert s.dense_columns == (3, 4, 5, 6, 7) and s.plr_columns == (0, 1, 2)
    assert s.n_features == 5 + 3 * 2
    assert {k: tuple(v.shape) for k, v in pop.params.items() if k.startswith("plr")} == {
        "plr_C": (2, 3, 3), "plr_W": (2, 3 * 6, 2), "plr_b": (2, 3, 2)}
    assert "plr_W" in pop.weight_names and "plr_C" not in pop.weight_names
    # σ is per member: it sets the scale of that member's initial frequencies only
    big = Population("regression", LAYOUT, [{**PLR, "plr_frequencies": 64,
                                             "plr_sigma": sigma} for sigma in (0.01, 3.0)])
    std = big.params["plr_C"].std(dim=(1, 2))
    assert 0.008 < std[0] < 0.012 and 2.4 < std[1] < 3.6
    # a member without PLR draws the same weights as before PLR existed (PLR draws last)
    alone = Population("regression", LAYOUT, [{"hidden_layer_sizes": (4,)}], seed=3)
    torch.testing.assert_close(
        alone.params["W1"], Population("regression", LAYOUT, [{"hidden_layer_sizes": (4,)}],
                                       seed=3).params["W1"])


def test_a_plain_width_embeds_nothing():
    pop = Population("regression", 4, [{**PLR, "hidden_layer_sizes": (4,)}])
    assert pop.structure.plr_columns == () and not any(k.startswith("plr") for k in pop.params)


CONFIGS = [
    ("multiclass", {"activation": "relu", "batch_norm": True, "dropout": 0.3, "l2": 2.0}),
    ("binary", {"activation": "tanh", "batch_norm": False, "l1": 1.0}),
    ("regression", {"activation": "gelu", "batch_norm": True, "hidden_layer_sizes": ()}),
]


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
@pytest.mark.parametrize("task,config", CONFIGS)
def test_plr_gradients_match_finite_differences(task, config, encoding):
    X, y = make_data(task)
    members = [{"hidden_layer_sizes": (4, 3), **config, **PLR, "encoding": encoding,
                "embedding_dim": 2, "plr_sigma": sigma} for sigma in (0.3, 1.0)]
    pop = Population(task, LAYOUT, members, n_classes=3, seed=1, dtype=torch.float64)
    assert {"plr_C", "plr_W", "plr_b"} <= set(pop.params)
    assert ("E0" in pop.params) == (encoding == "embedding")
    with torch.no_grad():  # a positive shift of b: most ReLU units of the embedding are on
        pop.params["plr_b"].add_(0.2)
    assert_gradients_match_finite_differences(pop, X, y, 40, f"{task}, {config}, {encoding}")


MEMBERS = [
    {"optimizer": "sgd", "learning_rate": 0.1, "l2": 3.0},
    {"optimizer": "momentum", "learning_rate": 0.2, "momentum": 0.8, "l1": 2.0},
    {"optimizer": "rmsprop", "learning_rate": 3e-3, "beta2": 0.95},
    {"optimizer": "adam", "learning_rate": 1e-2, "l2": 1.0},
    {"optimizer": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1, "beta1": 0.85},
]
N, BATCH = 48, 16


class TorchPLRNet(nn.Module):
    """One member written plainly with autograd: per numeric column, frequencies c_j and an
    nn.Linear(2k, m) with ReLU on [sin 2πc_jx_j, cos 2πc_jx_j]; the outputs after the dense
    columns; then Linear-ReLU-Linear."""

    def __init__(self, pop: Population, member: int):
        super().__init__()
        s = pop.structure
        self.dense, self.numeric = list(s.dense_columns), list(s.plr_columns)
        n, k, m = len(self.numeric), s.plr_frequencies, s.plr_dim
        self.frequencies = nn.Parameter(pop.params["plr_C"][member].clone())
        self.linears = nn.ModuleList(nn.Linear(2 * k, m) for _ in range(n))
        sizes = s.layer_sizes
        self.hidden = nn.Linear(sizes[0], sizes[1])
        self.out = nn.Linear(sizes[1], sizes[2])
        with torch.no_grad():
            W = pop.params["plr_W"][member].view(n, 2 * k, m)
            for j, linear in enumerate(self.linears):
                linear.weight.copy_(W[j].T)
                linear.bias.copy_(pop.params["plr_b"][member, j])
            for layer, linear in enumerate((self.hidden, self.out)):
                linear.weight.copy_(pop.params[f"W{layer}"][member].T)
                linear.bias.copy_(pop.params[f"b{layer}"][member, 0])

    def embeddings(self, X: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for j, (column, linear) in enumerate(zip(self.numeric, self.linears)):
            theta = 2 * math.pi * X[:, column:column + 1] * self.frequencies[j]
            out.append(torch.relu(linear(torch.cat([theta.sin(), theta.cos()], dim=1))))
        return out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        x = torch.cat([X[:, self.dense], *self.embeddings(X)], dim=1)
        return self.out(torch.relu(self.hidden(x)))

    def plr_weight(self) -> torch.Tensor:  # as the engine stores it: (n·2k, m)
        return torch.cat([linear.weight.T for linear in self.linears])

    def optimizer(self, h: dict, n_train: int) -> torch.optim.Optimizer:
        # L2 and weight decay act on the dense weights and PLR's linear weights; not on the
        # frequencies or the biases (L1 is added to the gradients by hand below)
        weights = [self.hidden.weight, self.out.weight, *(li.weight for li in self.linears)]
        others = [self.hidden.bias, self.out.bias, self.frequencies,
                  *(li.bias for li in self.linears)]
        return torch_optimizer(h, n_train, weights, others)

    def add_l1(self, h: dict, n_train: int) -> None:
        for w in [self.hidden.weight, self.out.weight, *(li.weight for li in self.linears)]:
            w.grad += h["l1"] / (2 * n_train) * w.detach().sign()


def test_plr_trains_like_autograd_and_torch_optim():
    """The same parameters and inputs give the gradients autograd gives through the plain
    module, and after two epochs of optimizer steps the weights torch.optim gives, for
    every optimizer, with L2, L1 and weight decay on PLR's linear weights only."""
    X, y = make_data("multiclass", n=N, seed=3, dtype=torch.float32)
    members = [{**m, **PLR, "hidden_layer_sizes": (8,), "batch_norm": False,
                "batch_size": BATCH, "epochs": 2, "plr_sigma": 0.5} for m in MEMBERS]
    pop = Population("multiclass", LAYOUT, members, n_classes=3, seed=5)
    models = [TorchPLRNet(pop, i) for i in range(pop.size)]
    optimizers = [m.optimizer(pop.hyperparameters[i], N) for i, m in enumerate(models)]

    grads = pop.gradients(X[:BATCH], y[:BATCH], n_train=N)
    for i, model in enumerate(models):
        h = pop.hyperparameters[i]
        model.zero_grad()
        nn.functional.cross_entropy(model(X[:BATCH]), y[:BATCH]).backward()
        model.add_l1(h, N)
        W = model.plr_weight()
        expected_W = (torch.cat([li.weight.grad.T for li in model.linears])
                      + h["l2"] / N * W.detach())
        torch.testing.assert_close(grads["plr_W"][i], expected_W, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads["plr_C"][i], model.frequencies.grad,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads["plr_b"][i],
                                   torch.stack([li.bias.grad for li in model.linears]),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads["W0"][i], model.hidden.weight.grad.T
                                   + h["l2"] / N * model.hidden.weight.detach().T,
                                   rtol=1e-5, atol=1e-6)

    start = pop.params["plr_C"].clone()
    train_beside(pop, models, optimizers, X, y, epochs=2, seed=5,
                 loss=lambda model, Xb, yb: nn.functional.cross_entropy(model(Xb), yb),
                 before_step=lambda i, model: model.add_l1(pop.hyperparameters[i], N))
    for i, model in enumerate(models):
        label = MEMBERS[i]["optimizer"]
        torch.testing.assert_close(pop.params["plr_C"][i], model.frequencies.detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"frequencies of {label}")
        torch.testing.assert_close(pop.params["plr_W"][i], model.plr_weight().detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"PLR weights of {label}")
        torch.testing.assert_close(pop.decision_function(X)[i], model(X).detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"outputs of {label}")
    moved = (pop.params["plr_C"] - start).abs().amax(dim=(1, 2))
    assert (moved > 1e-3).all(), moved  # the frequencies did train


PERIODIC = {"numeric_embedding": "periodic", "plr_frequencies": 3}


@pytest.mark.parametrize("task,config", CONFIGS)
def test_periodic_gradients_match_finite_differences(task, config):
    """The periodic features themselves (Gorishniy et al.'s "P"), beside the columns: the
    frequencies' gradient through sin and cos alone, no linear layer."""
    X, y = make_data(task)
    members = [{"hidden_layer_sizes": (4, 3), **config, **PERIODIC, "plr_sigma": sigma}
               for sigma in (0.3, 1.0)]
    pop = Population(task, LAYOUT, members, n_classes=3, seed=1, dtype=torch.float64)
    s = pop.structure
    assert s.plr_columns == (0, 1, 2) and not s.plr_linear
    assert s.dense_columns == (0, 1, 2, 3, 4, 5, 6, 7)  # the columns stay, beside them
    assert s.n_features == 8 + 3 * 2 * 3
    assert {k for k in pop.params if k.startswith("plr")} == {"plr_C"}
    assert_gradients_match_finite_differences(pop, X, y, 40, f"{task}, {config}")


def test_periodic_features_are_what_torch_computes_and_train_like_autograd():
    """Member by member, the first layer reads [x, sin 2πc_jx_j, cos 2πc_jx_j] as a plain
    torch module writes it, and two epochs of Adam give the weights and frequencies
    torch.optim.Adam gives through autograd."""
    X, y = make_data("regression", n=N, seed=3, dtype=torch.float32)
    members = [{**PERIODIC, "hidden_layer_sizes": (8,), "batch_norm": False,
                "batch_size": BATCH, "epochs": 2, "optimizer": "adam", "learning_rate": lr,
                "plr_sigma": 0.5} for lr in (1e-2, 3e-3)]
    pop = Population("regression", LAYOUT, members, seed=5)
    s = pop.structure

    class TorchPeriodicNet(nn.Module):
        def __init__(self, member: int):
            super().__init__()
            self.frequencies = nn.Parameter(pop.params["plr_C"][member].clone())
            self.hidden = nn.Linear(s.n_features, 8)
            self.out = nn.Linear(8, 1)
            with torch.no_grad():
                for layer, linear in enumerate((self.hidden, self.out)):
                    linear.weight.copy_(pop.params[f"W{layer}"][member].T)
                    linear.bias.copy_(pop.params[f"b{layer}"][member, 0])

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            features = []
            for j, column in enumerate(s.plr_columns):
                theta = 2 * math.pi * X[:, column:column + 1] * self.frequencies[j]
                features += [theta.sin(), theta.cos()]
            x = torch.cat([X[:, list(s.dense_columns)], *features], dim=1)
            return self.out(torch.relu(self.hidden(x))).squeeze(1)

    models = [TorchPeriodicNet(i) for i in range(pop.size)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=h["learning_rate"])
                  for m, h in zip(models, pop.hyperparameters)]
    start = pop.params["plr_C"].clone()
    train_beside(pop, models, optimizers, X, y, epochs=2, seed=5,
                 loss=lambda model, Xb, yb: 0.5 * nn.functional.mse_loss(model(Xb), yb))
    for i, model in enumerate(models):
        torch.testing.assert_close(pop.params["plr_C"][i], model.frequencies.detach(),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pop.decision_function(X)[i, :, 0], model(X).detach(),
                                   rtol=1e-4, atol=1e-5)
    assert ((pop.params["plr_C"] - start).abs().amax(dim=(1, 2)) > 1e-3).all()


def test_members_plr_parameters_are_their_own():
    """One member's gradient never touches another's PLR parameters, and a member trains to
    the same ones whatever members share its population."""
    X, y = make_data("regression", n=32)
    member = {**PLR, "hidden_layer_sizes": (4,), "batch_size": 8, "optimizer": "adam",
              "learning_rate": 0.05, "l2": 1.0, "epochs": 2}
    assert_members_apart(LAYOUT, member, {**member, "learning_rate": 10.0, "plr_sigma": 5.0},
                         X, y, ("plr_C", "plr_W", "plr_b"))


# ----------------------------------------------------------------------------- the data

def wave_table(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """y is a fast wave of ``x`` (hard for a ReLU network on x itself, a few units of a
    periodic embedding), plus a binary column, a numeric column with missing values, a
    categorical and a date."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    z = rng.normal(size=n)
    z[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "x": x, "flag": rng.integers(0, 2, n), "z": z,
        "kind": rng.choice(["a", "b", "c"], n),
        "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n), "D"),
        "y": np.sin(6 * np.pi * x) + 0.1 * rng.normal(size=n)})


def test_preprocessor_numeric_columns():
    """Numeric values with more than two values (a date's parts too); not the binary column,
    the missing-value indicator, the one-hot columns or the codes; saved and rebuilt."""
    from caviar.data import TablePreprocessor

    df = wave_table(300)
    pre = TablePreprocessor("y", codes=True).fit(df)
    names = [pre.feature_names_out_[j] for j in pre.numeric_columns()]
    assert names == ["num__x", "num__z", "num__day.month", "num__day.dayofweek",
                     "num__day.days"], names  # year: one value; flag: two
    assert "num__flag" in pre.feature_names_out_
    assert "num__missingindicator_z" in pre.feature_names_out_
    meta, arrays = pre.to_state()
    again = TablePreprocessor.from_state(meta, arrays)
    assert again.numeric_columns() == pre.numeric_columns()
    del meta["numeric_columns"]  # saved before PLR: every numeric value column
    older = TablePreprocessor.from_state(meta, arrays)
    assert [older.feature_names_out_[j] for j in older.numeric_columns()] == [
        "num__x", "num__flag", "num__z", "num__day.year", "num__day.month",
        "num__day.dayofweek", "num__day.days"]


def test_plr_model_learns_a_wave_saves_loads_exports_and_refits(tmp_path):
    """A model with PLR: it learns a wave a plain network of the same size misses, saves
    as safetensors (no pickle), loads to the same predictions from a raw table, exports to
    ONNX alike, and a refit keeps the embedding and each member's σ."""
    import onnxruntime as ort
    import safetensors.torch

    from caviar import export_onnx, load_model
    from caviar.data import prepare
    from caviar.model import fit_model
    from caviar.training import refit_networks

    df = wave_table()
    train, test = df.iloc[:1200], df.iloc[1200:]
    hp = {"hidden_layer_sizes": [32], "epochs": 40, "learning_rate": 0.01, "batch_size": 64}
    rmse = {}
    for kind in ("none", "plr"):
        model = fit_model(train, "y", {**hp, "numeric_embedding": kind, "plr_sigma": 1.0})
        rmse[kind] = float(np.sqrt(np.mean((model.predict(test) - test["y"]) ** 2)))
    assert rmse["plr"] < 0.3 < rmse["none"], rmse
    network = model.network
    assert len(network.structure.plr_columns) == 5

    model.save(tmp_path / "model")
    tensors = safetensors.torch.load_file(str(tmp_path / "model" / "network.safetensors"))
    torch.testing.assert_close(tensors["param.plr_C"], network.params["plr_C"])
    again = load_model(tmp_path / "model")
    assert again.network.structure == network.structure
    assert again.network.inputs == network.inputs
    np.testing.assert_allclose(again.predict(test), model.predict(test), rtol=1e-6)

    path = export_onnx(again, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_values,) = session.run(None, {"features": again.preprocessor.transform(test)})
    np.testing.assert_allclose(onnx_values, again.predict(test), rtol=1e-4, atol=1e-4)

    prepared = prepare(train, "y", seed=0, val_size=0, test_size=0)
    searched = [Population("regression", prepared.inputs,
                           [{**hp, "numeric_embedding": "plr", "plr_sigma": sigma,
                             "plr_frequencies": 32, "learning_rate": 1e-4}],
                           seed=7).export_member(0) for sigma in (0.05, 2.0)]
    refit = refit_networks(searched, prepared.X_train, prepared.y_train, [2, 2], seed=1)
    for net, sigma in zip(refit, (0.05, 2.0)):
        assert net.structure == searched[0].structure and net.inputs == prepared.inputs
        assert net.hyperparameters[0]["plr_sigma"] == sigma
        std = float(net.params["plr_C"].std())  # a fresh draw of its own σ, barely trained
        assert 0.7 * sigma < std < 1.3 * sigma, (sigma, std)
        assert not torch.equal(net.params["plr_C"], searched[0].params["plr_C"])


def test_tune_searches_the_numeric_embedding(tmp_path):
    """``numeric_embedding`` in a space is structural (each group trains one kind on the
    shared prepared tensors), ``plr_sigma`` is drawn per member only where PLR is on, and
    the kept model predicts from a raw table."""
    from caviar import load_model
    from caviar.search.tune import tune

    df = wave_table(n=500)
    space = {"numeric_embedding": {"kind": "choice", "values": ["none", "plr"]},
             "plr_sigma": {"kind": "log_uniform", "low": 0.01, "high": 10.0,
                           "when": {"numeric_embedding": ["plr"]}},
             "learning_rate": {"value": 0.01}, "width": {"value": 8}, "depth": {"value": 1},
             "batch_size": {"value": 64}, "epochs": {"value": 3}}
    result = tune(df, "y", trials=8, population=2, sampler="grid", space=space,
                  out=tmp_path / "run", seed=0, pruner="none", trials_per_structure=2,
                  ensemble=3)
    trials = result.study.trials
    assert {t.params["numeric_embedding"] for t in trials} == {"none", "plr"}
    assert all(("plr_sigma" in t.params) == (t.params["numeric_embedding"] == "plr")
               for t in trials)
    model = load_model(tmp_path / "run" / "model")
    assert model.predict(df.drop(columns="y").head(5)).shape == (5,)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_plr_population_lives_on_its_device(device):
    X, y = make_data("multiclass", n=64, dtype=torch.float32)
    pop = Population("multiclass", LAYOUT, [{**PLR, "hidden_layer_sizes": (8,), "epochs": 2,
                                             "batch_size": 16, "plr_sigma": s}
                                            for s in (0.1, 1.0)],
                     n_classes=3, seed=0, device=device)
    pop.fit(X[:48], y[:48], X[48:], y[48:])
    assert all(p.device.type == device for p in pop.params.values())
    assert all(np.isfinite(h[-1]["val_log_loss"]) for h in pop.history)
    assert pop.predict(X).device.type == device
