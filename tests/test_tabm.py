"""TabM-mini (``tabm_k``: k sub-networks sharing one backbone, Gorishniy et al. 2024): the
engine's hand-written backward against finite differences and against a plain torch.nn
implementation trained with autograd and torch.optim on the same minibatches, members kept
apart, the prediction as the mean of the sub-networks', and a model that holds one saved,
loaded and exported to ONNX."""

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
from torch_reference import torch_optimizer

from caviar.engine import Population

K = 3


def test_parameters_of_a_tabm_network():
    """r: one vector of ±1 per sub-network over the first layer's input; one output layer
    per sub-network; the hidden layers shared; L2 and weight decay act on the weights, not
    on r (shrinking r would shrink the input)."""
    pop = Population("multiclass", LAYOUT, [{"hidden_layer_sizes": (6, 5), "tabm_k": 4}] * 2,
                     n_classes=3)
    shapes = {k: tuple(v.shape) for k, v in pop.params.items()}
    assert shapes == {"W0": (2, 8, 6), "gamma0": (2, 1, 6), "beta0": (2, 1, 6),
                      "W1": (2, 6, 5), "gamma1": (2, 1, 5), "beta1": (2, 1, 5),
                      "W2": (2, 4 * 5, 3), "b2": (2, 4, 3), "tabm_r": (2, 4, 8)}, shapes
    assert set(pop.params["tabm_r"].unique().tolist()) == {-1.0, 1.0}
    assert "tabm_r" not in pop.weight_names and "W2" in pop.weight_names
    with pytest.raises(ValueError, match="tabm_k=4 needs at least one hidden layer"):
        Population("regression", 5, [{"hidden_layer_sizes": (), "tabm_k": 4}])


CONFIGS = [
    ("multiclass", {"activation": "relu", "batch_norm": True, "dropout": 0.3, "l2": 2.0}),
    ("binary", {"activation": "tanh", "batch_norm": False, "l1": 1.0}),
    ("regression", {"activation": "gelu", "batch_norm": False, "numeric_embedding": "plr",
                    "plr_frequencies": 3, "plr_dim": 2, "encoding": "embedding",
                    "embedding_dim": 2}),
]


@pytest.mark.parametrize("sub_batches", [False, True])
@pytest.mark.parametrize("task,config", CONFIGS)
def test_tabm_gradients_match_finite_differences(task, config, sub_batches):
    """Every sub-network on the whole batch, or each on its own block of rows (training)."""
    X, y = make_data(task)
    members = [{"hidden_layer_sizes": (4, 3), **config, "tabm_k": K} for _ in range(2)]
    pop = Population(task, LAYOUT, members, n_classes=3, seed=1, dtype=torch.float64)
    with torch.no_grad():  # r off ±1, and biases away from ReLU's kink at 0
        pop.params["tabm_r"].mul_(torch.rand_like(pop.params["tabm_r"]) + 0.5)
        for name, p in pop.params.items():
            if name in ("b0", "b1", "plr_b"):
                p.add_(0.2)
    cost, gradients = pop.cost, pop.gradients
    pop.cost = lambda *a: cost(*a, sub_batches=sub_batches)
    pop.gradients = lambda *a: gradients(*a, sub_batches=sub_batches)
    assert_gradients_match_finite_differences(pop, X, y, 40, f"{task}, {config}")


class TorchTabMMini(nn.Module):
    """One member written plainly with autograd: x·r_i for each of k sub-networks, a shared
    Linear-ReLU-Linear-ReLU backbone, and k output layers."""

    def __init__(self, pop: Population, member: int):
        super().__init__()
        s = pop.structure
        self.k = s.tabm_k
        self.r = nn.Parameter(pop.params["tabm_r"][member].clone())
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(s.layer_sizes[:-2],
                                                                    s.layer_sizes[1:-1]))
        h, C = s.layer_sizes[-2], s.layer_sizes[-1]
        last = len(self.hidden)
        self.heads_W = nn.Parameter(pop.params[f"W{last}"][member].view(self.k, h, C).clone())
        self.heads_b = nn.Parameter(pop.params[f"b{last}"][member].clone())
        self.dense = list(s.dense_columns)
        with torch.no_grad():
            for layer, linear in enumerate(self.hidden):
                linear.weight.copy_(pop.params[f"W{layer}"][member].T)
                linear.bias.copy_(pop.params[f"b{layer}"][member, 0])

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Each sub-network's logits ``(k, rows, C)``: x ``(k, rows, d)``, its own rows."""
        a = x[..., self.dense] * self.r.unsqueeze(1)
        for linear in self.hidden:
            a = torch.relu(linear(a))
        return torch.bmm(a, self.heads_W) + self.heads_b.unsqueeze(1)

    def loss(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of the sub-networks' cross-entropies, X ``(k, B, d)`` and y ``(k, B)``."""
        z = self.heads(X)
        return nn.functional.cross_entropy(z.flatten(0, 1), y.flatten())

    def probabilities(self, X: torch.Tensor) -> torch.Tensor:
        return self.heads(X.expand(self.k, -1, -1)).softmax(dim=2).mean(dim=0)

    def weights(self) -> list:
        return [*(li.weight for li in self.hidden), self.heads_W]

    def others(self) -> list:
        return [*(li.bias for li in self.hidden), self.heads_b, self.r]


MEMBERS = [
    {"optimizer": "sgd", "learning_rate": 0.1, "l2": 3.0},
    {"optimizer": "momentum", "learning_rate": 0.2, "momentum": 0.8},
    {"optimizer": "adam", "learning_rate": 1e-2, "l2": 1.0},
    {"optimizer": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1, "beta1": 0.85},
]
N, BATCH = 48, 16


def test_tabm_trains_like_autograd_and_torch_optim():
    """The engine's gradients are autograd's through the plain module, and two epochs, each
    sub-network on its own order of the rows as the population draws them, end at the
    weights torch.optim gives, for every optimizer; the population predicts the mean of the
    sub-networks' probabilities."""
    X, y = make_data("multiclass", n=N, seed=3, dtype=torch.float32)
    members = [{**m, "hidden_layer_sizes": (8, 6), "batch_norm": False, "batch_size": BATCH,
                "epochs": 2, "tabm_k": K} for m in MEMBERS]
    pop = Population("multiclass", LAYOUT, members, n_classes=3, seed=5)
    models = [TorchTabMMini(pop, i) for i in range(pop.size)]

    # one step's gradients, every sub-network on its own block of the batch's rows
    index = torch.arange(K * BATCH) % N
    grads = pop.gradients(X[index], y[index], n_train=N, sub_batches=True)
    for i, model in enumerate(models):
        h = pop.hyperparameters[i]
        model.zero_grad()
        model.loss(X[index].view(K, BATCH, -1), y[index].view(K, BATCH)).backward()
        torch.testing.assert_close(grads["tabm_r"][i], model.r.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads["W2"][i].view(K, 6, 3), model.heads_W.grad
                                   + h["l2"] / N * model.heads_W.detach(), rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(grads["W0"][i], model.hidden[0].weight.grad.T
                                   + h["l2"] / N * model.hidden[0].weight.detach().T,
                                   rtol=1e-5, atol=1e-6)

    optimizers = [torch_optimizer(h, N, m.weights(), m.others())
                  for m, h in zip(models, pop.hyperparameters)]
    order_generator = torch.Generator().manual_seed(5)  # the population's minibatch orders
    for _ in range(2):
        pop.train_epoch(X, y)
        orders = torch.stack([torch.randperm(N, generator=order_generator) for _ in range(K)])
        for model, opt in zip(models, optimizers):
            for start in range(0, N, BATCH):
                rows = orders[:, start:start + BATCH]
                opt.zero_grad()
                model.loss(X[rows], y[rows]).backward()
                opt.step()
    for i, model in enumerate(models):
        label = MEMBERS[i]["optimizer"]
        torch.testing.assert_close(pop.params["tabm_r"][i], model.r.detach(), rtol=1e-4,
                                   atol=1e-5, msg=f"r of {label}")
        torch.testing.assert_close(pop.predict(X)[i], model.probabilities(X).detach(),
                                   rtol=1e-4, atol=1e-5, msg=f"probabilities of {label}")
    assert not torch.equal(pop.params["tabm_r"][3].abs(), torch.ones_like(pop.params["tabm_r"][3]))


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_prediction_is_the_mean_of_the_sub_networks(task):
    """What a member predicts (and is scored on) is the mean of its sub-networks'
    probabilities or values, each computed by a population of that sub-network alone."""
    X, y = make_data(task, n=30, dtype=torch.float32)
    member = {"hidden_layer_sizes": (8,), "batch_norm": False, "tabm_k": K}
    pop = Population(task, LAYOUT, [member], seed=2)
    alone = []
    for i in range(K):
        single = Population(task, LAYOUT, [{**member, "tabm_k": 1}], seed=2)
        with torch.no_grad():
            single.params["W0"][0] = pop.params["W0"][0] * pop.params["tabm_r"][0, i][:, None]
            single.params["b0"][0] = pop.params["b0"][0]
            single.params["W1"][0] = pop.params["W1"][0].view(K, 8, 1)[i]
            single.params["b1"][0] = pop.params["b1"][0, i]
        alone.append(single.predict(X)[0])
    torch.testing.assert_close(pop.predict(X)[0], torch.stack(alone).mean(dim=0),
                               rtol=1e-5, atol=1e-6)
    if task == "binary":  # the loss scored is that of the mean probability
        p1 = torch.stack(alone).mean(dim=0)[:, 1]
        expected = -(y * p1.log() + (1 - y) * (1 - p1).log()).mean()
        torch.testing.assert_close(pop.evaluate(X, y)["log_loss"][0], expected, rtol=1e-5,
                                   atol=1e-6)


def test_members_tabm_parameters_are_their_own():
    X, y = make_data("regression", n=32)
    member = {"hidden_layer_sizes": (4,), "batch_size": 8, "optimizer": "adam",
              "learning_rate": 0.05, "l2": 1.0, "epochs": 2, "tabm_k": K}
    assert_members_apart(LAYOUT, member, {**member, "learning_rate": 10.0},
                         X, y, ("tabm_r", "W1", "b1"))


def test_a_tabm_model_learns_saves_loads_and_exports(tmp_path):
    """A classifier with tabm_k: its held-out log-loss beats the class frequencies', it saves
    as safetensors, loads to the same probabilities, and exports to ONNX alike."""
    import onnxruntime as ort

    from caviar import CaviarClassifier, export_onnx, load_model

    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "c": rng.choice(list("wxyz"), n)})
    y = np.where(df["a"] + (df["c"] == "x") > 0.5, "hi", np.where(df["b"] > 0, "mid", "lo"))
    train, test = slice(0, 450), slice(450, None)
    clf = CaviarClassifier(hidden_layer_sizes=(32, 32), tabm_k=4, epochs=30,
                           random_state=0).fit(df[train], y[train])
    assert clf.get_params()["tabm_k"] == 4
    assert clf.model_.network.structure.tabm_k == 4
    proba = clf.predict_proba(df[test])
    frequencies = pd.Series(y[train]).value_counts(normalize=True)[clf.classes_].to_numpy()
    held_out = -np.mean(np.log(proba[np.arange(len(proba)),
                                     np.searchsorted(clf.classes_, y[test])]))
    baseline = -np.mean(np.log(frequencies[np.searchsorted(clf.classes_, y[test])]))
    assert held_out < 0.6 * baseline, (held_out, baseline)

    clf.model_.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    np.testing.assert_allclose(again.predict_proba(df[test]), proba, rtol=1e-6)
    path = export_onnx(again, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities, label_index = session.run(
        None, {"features": again.preprocessor.transform(df[test])})
    np.testing.assert_allclose(probabilities, proba, rtol=1e-4, atol=1e-5)
    assert (np.asarray(again.classes)[label_index] == clf.predict(df[test])).all()


def _wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame
    df["cultivar"] = df.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return df


def test_tune_searches_tabm_k_from_a_space(tmp_path):
    """``tabm_k`` in a space is structural: each group trains one k, the study records it,
    and the kept model, TabM-mini or not, loads and predicts from a raw table."""
    from caviar import load_model
    from caviar.search.tune import tune

    df = _wine()
    space = {"tabm_k": {"kind": "choice", "values": [1, 4]},
             "learning_rate": {"value": 0.01}, "width": {"value": 8}, "depth": {"value": 1},
             "batch_size": {"value": 32}, "epochs": {"value": 3}}
    result = tune(df, "cultivar", trials=8, population=2, sampler="grid", space=space,
                  out=tmp_path / "run", seed=0, pruner="none", trials_per_structure=2,
                  ensemble=3)
    trials = result.study.trials
    assert {t.params["tabm_k"] for t in trials} == {1, 4}
    assert all(t.user_attrs["hyperparameters"]["tabm_k"] == t.params["tabm_k"]
               for t in trials)
    model = load_model(tmp_path / "run" / "model")
    assert {n.structure.tabm_k for n in model.networks} <= {1, 4}
    assert model.predict_proba(df.drop(columns="cultivar").head(5)).shape == (5, 3)


def test_train_on_the_command_line_with_tabm_k(tmp_path):
    """``caviar train --set tabm_k=4`` trains and saves a TabM-mini network."""
    from commandline import assert_one_error_line, invoke

    from caviar import load_model

    path = tmp_path / "wine.csv"
    _wine().to_csv(path, index=False)
    result = invoke("train", path, "--target", "cultivar", "--epochs", "2", "--out",
                    tmp_path / "run", "--set", "hidden_layer_sizes=8", "--set", "tabm_k=4")
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model")
    assert model.network.structure.tabm_k == 4
    assert model.network.params["tabm_r"].shape == (1, 4, model.network.structure.n_features)
    bad = invoke("train", path, "--target", "cultivar", "--epochs", "1", "--out",
                 tmp_path / "bad", "--set", "hidden_layer_sizes=[]", "--set", "tabm_k=4")
    assert_one_error_line(bad, "tabm_k=4 needs at least one hidden layer", "tabm_k=1")


def test_the_schedulers_epoch_estimate_counts_every_row_k_times():
    """The tuner shares time by estimated epoch costs: a TabM-mini member of 8 sub-networks
    costs about 8 times a plain one of its structure (every row through it 8 times)."""
    from caviar.search.budget import epoch_cost

    plain, tabm = (Population("regression", 20, [{"hidden_layer_sizes": (64, 64),
                                                  "tabm_k": k}]) for k in (1, 8))
    per_member = [epoch_cost(p, 10_000, 1) - epoch_cost(p, 10_000, 0) for p in (plain, tabm)]
    assert 7.0 < per_member[1] / per_member[0] < 8.5, per_member
