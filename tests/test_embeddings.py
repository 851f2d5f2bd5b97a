"""Learned categorical embeddings: the engine's gather/scatter-add against finite differences
and against torch.nn.Embedding with autograd and torch.optim, members kept apart, the
preprocessor's codes, and a model that embeds saved, loaded and scored from a raw table."""

import numpy as np
import pandas as pd
import pytest
import torch
from gradcheck import (
    assert_gradients_match_finite_differences,
    assert_members_apart,
    random_targets,
)
from torch import nn
from torch_reference import torch_optimizer, train_beside

from caviar.engine import Population
from caviar.engine.network import Categorical, InputLayout, embedding_width

# X: two numeric columns, a 4-level categorical one-hot (columns 2-5), a 6-level one
# target-encoded (column 6), then the two categoricals' codes (columns 7 and 8)
LAYOUT = InputLayout(9, (Categorical("c", 7, 4, (2, 3, 4, 5)), Categorical("d", 8, 6, (6,))))


def make_data(task: str, n: int = 12, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 5, (n,), generator=g)  # 0: a level unseen in training
    d = torch.randint(1, 7, (n,), generator=g)
    X = torch.cat([torch.randn(n, 2, generator=g, dtype=dtype),
                   nn.functional.one_hot(c, 5)[:, 1:].to(dtype),
                   torch.randn(n, 1, generator=g, dtype=dtype),
                   c[:, None].to(dtype), d[:, None].to(dtype)], dim=1)
    return X, random_targets(task, n, g, dtype)


def test_structure_reads_codes_only_when_embedding():
    onehot = Population("regression", LAYOUT, [{"hidden_layer_sizes": (4,)}]).structure
    assert onehot.dense_columns == (0, 1, 2, 3, 4, 5, 6) and onehot.embeddings == ()
    embedded = Population("regression", LAYOUT, [{"encoding": "embedding",
                                                  "hidden_layer_sizes": (4,)}]).structure
    assert embedded.dense_columns == (0, 1)
    assert embedded.embeddings == ((7, 5, embedding_width(4)), (8, 7, embedding_width(6)))
    assert embedded.n_features == 2 + embedding_width(4) + embedding_width(6)
    fixed = Population("regression", LAYOUT, [{"encoding": "embedding", "embedding_dim": 2,
                                               "hidden_layer_sizes": (4,)}]).structure
    assert [k for _, _, k in fixed.embeddings] == [2, 2]
    assert [embedding_width(n) for n in (3, 10, 50, 2972)] == [3, 6, 14, 16]


def test_mixed_embeds_only_the_target_encoded():
    """``encoding="mixed"`` keeps the one-hot categorical's columns and embeds the one past
    the one-hot limit instead of reading its target encoding; a layout saved before the flag
    existed reads as one-hot, so old models rebuild the networks they trained."""
    layout = InputLayout(9, (Categorical("c", 7, 4, (2, 3, 4, 5)),
                             Categorical("d", 8, 6, (6,), target_encoded=True)))
    mixed = Population("regression", layout, [{"encoding": "mixed",
                                                "hidden_layer_sizes": (4,)}]).structure
    assert mixed.dense_columns == (0, 1, 2, 3, 4, 5)
    assert mixed.embeddings == ((8, 7, embedding_width(6)),)
    assert InputLayout.from_dict(layout.to_dict()) == layout
    old = layout.to_dict()
    for c in old["categoricals"]:
        del c["target_encoded"]
    assert InputLayout.from_dict(old) == LAYOUT
    nothing_past = Population("regression", LAYOUT, [{"encoding": "mixed",
                                                      "hidden_layer_sizes": (4,)}]).structure
    assert nothing_past == Population("regression", LAYOUT,
                                      [{"hidden_layer_sizes": (4,)}]).structure


def test_onehot_networks_never_read_the_codes():
    X, _ = make_data("regression", dtype=torch.float32)
    pop = Population("regression", LAYOUT, [{"hidden_layer_sizes": (4,)}] * 2)
    other = X.clone()
    other[:, 7:] = torch.randint(0, 5, (len(X), 2)).float()
    assert torch.equal(pop.decision_function(X), pop.decision_function(other))


CONFIGS = [
    ("multiclass", {"activation": "relu", "batch_norm": True, "dropout": 0.3, "l2": 2.0}),
    ("binary", {"activation": "tanh", "batch_norm": False, "l1": 1.0}),
    ("regression", {"activation": "gelu", "batch_norm": True, "hidden_layer_sizes": ()}),
]


@pytest.mark.parametrize("task,config", CONFIGS)
def test_gradients_with_embeddings_match_finite_differences(task, config):
    X, y = make_data(task)
    members = [{"hidden_layer_sizes": (4, 3), **config, "encoding": "embedding",
                "embedding_dim": 2} for _ in range(2)]
    pop = Population(task, LAYOUT, members, n_classes=3, seed=1, dtype=torch.float64)
    assert {"E0", "E1"} <= set(pop.params)
    with torch.no_grad():  # everything off its initial values (row 0 of a table is zeros)
        for p in pop.params.values():
            p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype))
    n_train = 40
    assert_gradients_match_finite_differences(pop, X, y, n_train, f"{task}, {config}")


MEMBERS = [
    {"optimizer": "sgd", "learning_rate": 0.1, "l2": 3.0},
    {"optimizer": "momentum", "learning_rate": 0.2, "momentum": 0.8},
    {"optimizer": "rmsprop", "learning_rate": 3e-3, "beta2": 0.95},
    {"optimizer": "adam", "learning_rate": 1e-2, "l2": 1.0},
    {"optimizer": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1, "beta1": 0.85},
]
N, BATCH = 48, 16


class TorchNet(nn.Module):
    """One member as torch modules: nn.Embedding tables, the dense columns and the looked-up
    rows concatenated, then Linear-ReLU-Linear."""

    def __init__(self, pop: Population, member: int):
        super().__init__()
        s = pop.structure
        self.dense = list(s.dense_columns)
        self.code_columns = [column for column, _, _ in s.embeddings]
        self.tables = nn.ModuleList(nn.Embedding(rows, k) for _, rows, k in s.embeddings)
        sizes = s.layer_sizes
        self.hidden = nn.Linear(sizes[0], sizes[1])
        self.out = nn.Linear(sizes[1], sizes[2])
        with torch.no_grad():
            for j, table in enumerate(self.tables):
                table.weight.copy_(pop.params[f"E{j}"][member])
            for layer, linear in enumerate((self.hidden, self.out)):
                linear.weight.copy_(pop.params[f"W{layer}"][member].T)
                linear.bias.copy_(pop.params[f"b{layer}"][member, 0])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        looked_up = [t(X[:, c].long()) for t, c in zip(self.tables, self.code_columns)]
        x = torch.cat([X[:, self.dense], *looked_up], dim=1)
        return self.out(torch.relu(self.hidden(x)))

    def optimizer(self, h: dict, n_train: int) -> torch.optim.Optimizer:
        # the penalties and weight decay act on the dense weights and the tables alike
        weights = [self.hidden.weight, self.out.weight, *(t.weight for t in self.tables)]
        biases = [self.hidden.bias, self.out.bias]
        return torch_optimizer(h, n_train, weights, biases)


def test_embeddings_train_like_torch_nn_embedding():
    """The same tables and inputs give the gradients autograd gives through nn.Embedding, and
    after optimizer steps the tables torch.optim gives, for every optimizer."""
    X, y = make_data("multiclass", n=N, seed=3, dtype=torch.float32)
    members = [{**m, "hidden_layer_sizes": (8,), "batch_norm": False, "batch_size": BATCH,
                "encoding": "embedding", "epochs": 2} for m in MEMBERS]
    pop = Population("multiclass", LAYOUT, members, n_classes=3, seed=5)
    models = [TorchNet(pop, i) for i in range(pop.size)]
    optimizers = [m.optimizer(pop.hyperparameters[i], N) for i, m in enumerate(models)]

    # the gradients of one batch, penalties included (torch adds L2 in its step: add it here)
    grads = pop.gradients(X[:BATCH], y[:BATCH], n_train=N)
    for i, model in enumerate(models):
        model.zero_grad()
        nn.functional.cross_entropy(model(X[:BATCH]), y[:BATCH]).backward()
        l2 = pop.hyperparameters[i]["l2"] / N
        for j, table in enumerate(model.tables):
            expected = table.weight.grad + l2 * table.weight.detach()
            torch.testing.assert_close(grads[f"E{j}"][i], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads["W0"][i], model.hidden.weight.grad.T
                                   + l2 * model.hidden.weight.detach().T, rtol=1e-5, atol=1e-6)

    train_beside(pop, models, optimizers, X, y, epochs=2, seed=5,
                 loss=lambda model, Xb, yb: nn.functional.cross_entropy(model(Xb), yb))
    for i, model in enumerate(models):
        for j, table in enumerate(model.tables):
            torch.testing.assert_close(pop.params[f"E{j}"][i], table.weight.detach(),
                                       rtol=1e-4, atol=1e-5,
                                       msg=f"table {j} of {MEMBERS[i]['optimizer']}")
        torch.testing.assert_close(pop.decision_function(X)[i], model(X).detach(),
                                   rtol=1e-4, atol=1e-5)


def test_members_tables_are_their_own():
    """One member's gradient never touches another's table, and a member trains to the same
    table whatever members share its population."""
    X, y = make_data("regression", n=32, dtype=torch.float64)
    member = {"hidden_layer_sizes": (4,), "encoding": "embedding", "batch_size": 8,
              "optimizer": "adam", "learning_rate": 0.05, "l2": 1.0, "epochs": 2}
    assert_members_apart(LAYOUT, member, {**member, "learning_rate": 10.0}, X, y,
                         ("E0", "E1"))


# ----------------------------------------------------------------------------- the data

def id_table(n: int = 600, levels: int = 40, seed: int = 0) -> pd.DataFrame:
    """A table where the identity of ``shop`` carries the signal (its own effect, not a
    trend in its code), ``size`` 3 levels, ``flag`` 2 levels, and a numeric column."""
    rng = np.random.default_rng(seed)
    shop = rng.integers(0, levels, n)
    effect = rng.normal(0, 2, levels)
    x = rng.normal(size=n)
    return pd.DataFrame({"shop": [f"s{i:02d}" for i in shop],
                         "size": rng.choice(["S", "M", "L"], n),
                         "flag": rng.choice(["y", "n"], n), "x": x,
                         "y": effect[shop] + 0.5 * x + rng.normal(0, 0.3, n)})


def test_preprocessor_codes_and_layout():
    from caviar.data import TablePreprocessor

    df = id_table()
    pre = TablePreprocessor("y", categorical=["shop"], codes=True, max_onehot=10).fit(df)
    X = pre.transform(df)
    names = pre.feature_names_out_
    assert names[-2:] == ["code__size", "code__shop"] or names[-2:] == ["code__shop",
                                                                       "code__size"]
    layout = {c["name"]: c for c in pre.input_layout()}
    assert set(layout) == {"size", "shop"}  # flag has 2 levels: no codes
    for name, c in layout.items():
        assert names[c["code_column"]] == f"code__{name}"
        levels = sorted(df[name].unique())
        assert c["levels"] == len(levels)
        codes = X[:, c["code_column"]]
        np.testing.assert_array_equal(codes, [levels.index(v) + 1 for v in df[name]])
    assert [names[j] for j in layout["size"]["dense_columns"]] == [
        "onehot__size_L", "onehot__size_M", "onehot__size_S"]
    assert [names[j] for j in layout["shop"]["dense_columns"]] == ["te__shop"]  # 40 > 10
    assert layout["shop"]["target_encoded"] and not layout["size"]["target_encoded"]
    unseen = pre.transform(df.head(3).assign(shop="new", size=None))
    assert (unseen[:, layout["shop"]["code_column"]] == 0).all()
    assert (unseen[:, layout["size"]["code_column"]] == 0).all()  # missing: unseen in training
    # saved and rebuilt (no codes of its own to save: they come from the encoders)
    meta, arrays = pre.to_state()
    again = TablePreprocessor.from_state(meta, arrays)
    np.testing.assert_array_equal(again.transform(df), X)
    assert again.input_layout() == pre.input_layout()
    plain = TablePreprocessor("y", categorical=["shop"], max_onehot=10).fit(df)
    np.testing.assert_array_equal(plain.transform(df), X[:, :-2])


def test_multiclass_target_encoding_layout():
    from caviar.data import TablePreprocessor

    df = id_table().assign(y=lambda d: pd.cut(d["y"], 3, labels=["lo", "mid", "hi"]))
    pre = TablePreprocessor("y", categorical=["shop"], codes=True, max_onehot=10).fit(df)
    (shop,) = [c for c in pre.input_layout() if c["name"] == "shop"]
    assert [pre.feature_names_out_[j] for j in shop["dense_columns"]] == [
        "te__shop_0", "te__shop_1", "te__shop_2"]  # one per class


def test_embedding_model_learns_ids_saves_loads_and_exports(tmp_path):
    """A model that embeds: it learns what the IDs carry, saves as safetensors (no pickle),
    loads to the same predictions from a raw table, and exports to ONNX alike."""
    import onnxruntime as ort
    import safetensors.torch

    from caviar import export_onnx, load_model
    from caviar.model import fit_model

    torch.manual_seed(0)
    df = id_table(n=1500)
    train, test = df.iloc[:1200], df.iloc[1200:]
    hp = {"hidden_layer_sizes": [32], "epochs": 40, "learning_rate": 0.01, "batch_size": 64}
    model = fit_model(train, "y", {**hp, "encoding": "embedding"}, categorical=["shop"])
    network = model.network
    assert sorted(k for _, _, k in network.structure.embeddings) == [3, embedding_width(40)]
    rmse = float(np.sqrt(np.mean((model.predict(test) - test["y"]) ** 2)))
    assert rmse < 0.6 * float(test["y"].std()), rmse

    model.save(tmp_path / "model")
    tensors = safetensors.torch.load_file(str(tmp_path / "model" / "network.safetensors"))
    torch.testing.assert_close(tensors["param.E1"], network.params["E1"])
    again = load_model(tmp_path / "model")
    assert again.network.structure == network.structure
    np.testing.assert_allclose(again.predict(test), model.predict(test), rtol=1e-6)
    new_shop = test.assign(shop="never seen")  # code 0: row 0 of the table, zeros
    assert np.isfinite(again.predict(new_shop)).all()

    path = export_onnx(again, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_values,) = session.run(None, {"features": again.preprocessor.transform(test)})
    np.testing.assert_allclose(onnx_values, again.predict(test), rtol=1e-4, atol=1e-4)


def test_estimator_takes_encoding():
    from caviar import CaviarRegressor

    df = id_table(n=300)
    est = CaviarRegressor(encoding="embedding", embedding_dim=4, hidden_layer_sizes=[8],
                          epochs=3, categorical=["shop"], random_state=0)
    est.fit(df.drop(columns="y"), df["y"])
    assert est.get_params()["encoding"] == "embedding"
    assert [k for _, _, k in est.model_.network.structure.embeddings] == [4, 4]
    assert est.predict(df.drop(columns="y")).shape == (300,)
    wide = id_table(n=300, levels=150)  # 150 shops: past the one-hot limit of 270 rows
    mixed = CaviarRegressor(encoding="mixed", embedding_dim=4, hidden_layer_sizes=[8],
                            epochs=3, categorical=["shop"], random_state=0)
    structure = mixed.fit(wide.drop(columns="y"), wide["y"]).model_.network.structure
    layout = {c.code_column: c.name for c in mixed.model_.network.inputs.categoricals}
    assert [layout[column] for column, _, _ in structure.embeddings] == ["shop"]
    with pytest.raises(ValueError, match="encoding must be one of onehot, embedding, mixed"):
        CaviarRegressor(encoding="ordinal", epochs=1).fit(df.drop(columns="y"), df["y"])


def test_tune_searches_the_encoding(tmp_path):
    """``encoding`` in a space is structural: each group trains one encoding on the shared
    prepared tensors, and the kept model predicts from a raw table."""
    from caviar import load_model
    from caviar.search.tune import tune

    df = id_table(n=500)
    space = {"encoding": {"kind": "choice", "values": ["onehot", "embedding"]},
             "learning_rate": {"value": 0.01}, "width": {"value": 8}, "depth": {"value": 1},
             "batch_size": {"value": 64}, "epochs": {"value": 3}}
    result = tune(df, "y", trials=8, population=2, sampler="grid", space=space,
                  categorical=["shop"], out=tmp_path / "run", seed=0, pruner="none",
                  trials_per_structure=2, ensemble=3)
    encodings = {t.params["encoding"] for t in result.study.trials}
    assert encodings == {"onehot", "embedding"}
    model = load_model(tmp_path / "run" / "model")
    assert model.predict(df.drop(columns="y").head(5)).shape == (5,)


def test_mixed_model_saves_and_loads_what_it_embeds(tmp_path):
    """A model of ``encoding="mixed"`` loads to the network it trained: the saved layout
    says which categorical was target-encoded, so the same one is embedded again."""
    from caviar import load_model
    from caviar.model import fit_model

    df = id_table(n=400, levels=150)
    model = fit_model(df, "y", {"hidden_layer_sizes": [8], "epochs": 3, "encoding": "mixed"},
                      categorical=["shop"])
    assert len(model.network.structure.embeddings) == 1
    model.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    assert again.network.structure == model.network.structure
    np.testing.assert_allclose(again.predict(df), model.predict(df), rtol=1e-6)


def test_default_space_searches_the_encoding_only_past_the_onehot_limit(tmp_path):
    """With the default space, a table whose categorical is target-encoded (past the one-hot
    limit) has its encoding searched, one-hot or embedded; a table whose categoricals are
    all one-hot trains as before, no encoding axis; a space of the caller's own is kept."""
    from caviar.search import default_space
    from caviar.search.samplers import warm_start
    from caviar.search.space import SEARCHED_ENCODINGS
    from caviar.search.tune import tune

    def encodings(df, name, **kw):
        # 8 random draws beside the warm start's trials (a regression's: its networks and the
        # solved linear ones; coarse-to-fine's round of 8 would narrow to their one-hot)
        result = tune(df, "y", trials=8 + len(warm_start(default_space(), task="regression")),
                      population=2, categorical=["shop"], seed=0, sampler="random",
                      out=tmp_path / name, pruner="none", trials_per_structure=2, **kw)
        return [t.params.get("encoding") for t in result.study.trials]

    wide = id_table(n=400, levels=150)  # 150 levels > the limit of 240 training rows
    searched = encodings(wide, "wide")
    assert all(e in SEARCHED_ENCODINGS for e in searched[1:]), searched  # 0: the warm start
    assert set(searched) == set(SEARCHED_ENCODINGS), searched
    assert not any(encodings(id_table(n=400, levels=20), "narrow"))
    own = {"learning_rate": {"value": 0.01}, "epochs": {"value": 2}}
    assert not any(encodings(wide, "own", space=own))
