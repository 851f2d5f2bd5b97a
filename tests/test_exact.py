"""``solver="exact"``: a network with no hidden layer takes the minimizer of its
L2-penalized cost (``caviar.engine.exact``): a regression's from the normal equations, on the
columns and, with ``numeric_embedding="periodic"``, their periodic features at fixed
frequencies; a classifier's (the seeds' softmax regression) by L-BFGS.

Checked against scikit-learn's ``Ridge`` (the same cost: ‖y − Xw − b‖²_Ω + α‖w‖², α = λ) and
``LogisticRegression`` (C·Σ wᵢLᵢ + ½‖W‖², C = 1/λ) on features built here from SciPy's
normal quantiles, against the engine's own hand-written gradients (zero at a minimum), and
through a tune: the warm start's solved trials, a model that fits a linear target to the
digit, and one that fits a smooth function of one column.
"""

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from gradcheck import LAYOUT
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression, Ridge

from caviar import CaviarClassifier, CaviarRegressor, export_onnx, load_model, tune
from caviar.data import prepare
from caviar.engine import Population
from caviar.engine.network import EXACT_PERIODIC_FEATURES, InputLayout, solved_inputs
from caviar.hyperparams import LINEAR_EXACT, PERIODIC_EXACT
from caviar.search import default_space
from caviar.search.budget import Budget
from caviar.search.samplers import warm_start
from caviar.search.scheduler import Tuner

LAMBDAS = (0.0, 1.0, 30.0)


def _rows(n: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Five columns and a copy of the first times 2 (collinear: λ = 0 is singular), and a
    target linear in them with noise."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    X = torch.cat([X, 2 * X[:, :1]], dim=1)
    coef = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    return X, X @ coef + 0.3 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)


def _linear(lambdas=LAMBDAS, d: int = 6, **extra) -> Population:
    return Population("regression", d, [{"hidden_layer_sizes": [], "solver": "exact",
                                         "l2": lam, "epochs": 3, **extra} for lam in lambdas],
                      dtype=torch.float64)


@pytest.mark.parametrize("weighted", [False, True])
def test_an_epoch_is_ridge_regression_of_the_same_cost(weighted):
    X, y = _rows()
    w = torch.rand(len(X), generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64) + 0.5 if weighted else None
    pop = _linear()
    pop.train_epoch(X, y, w)
    for k, lam in enumerate(LAMBDAS):
        ridge = Ridge(alpha=lam, solver="svd").fit(
            X.numpy(), y.numpy(), sample_weight=None if w is None else w.numpy())
        assert torch.allclose(pop.params["W0"][k, :, 0], torch.from_numpy(ridge.coef_),
                              atol=1e-10)
        assert pop.params["b0"][k].item() == pytest.approx(ridge.intercept_, abs=1e-10)
    # a minimum of the cost the engine trains: its own gradients vanish there
    for name, grad in pop.gradients(X, y, weight=w).items():
        assert grad.abs().max() < 1e-10, name
    assert pop.epoch.tolist() == [1, 1, 1]


def test_each_member_its_own_rows_as_a_bag_weights_them():
    X, y = _rows()
    weights = torch.stack([torch.ones(len(X), dtype=torch.float64),
                           (torch.arange(len(X)) % 3 != 0).double(),  # a held-out fold: 0
                           torch.linspace(0.1, 2.0, len(X), dtype=torch.float64)])
    pop = _linear()
    pop.train_epoch(X, y, weights)
    for k, lam in enumerate(LAMBDAS):
        ridge = Ridge(alpha=lam, solver="svd").fit(X.numpy(), y.numpy(),
                                                   sample_weight=weights[k].numpy())
        assert torch.allclose(pop.params["W0"][k, :, 0], torch.from_numpy(ridge.coef_),
                              atol=1e-10)


def test_later_epochs_change_nothing_and_spent_members_stay_as_they_are():
    X, y = _rows()
    pop = _linear(epochs=1)
    pop.train_epoch(X, y)
    solved = pop.params["W0"].clone()
    X2, y2 = _rows(seed=5)
    pop.train_epoch(X2, y2)  # every member has had its one epoch: nothing trains
    assert torch.equal(pop.params["W0"], solved)
    assert pop.epoch.tolist() == [1, 1, 1]


def _classes(task: str, n: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four columns and classes drawn from a softmax (or sigmoid) of a linear function of
    them: overlapping classes, so every λ has a finite minimizer."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    classes = 3 if task == "multiclass" else 2
    coef = torch.randn(4, classes, generator=g, dtype=torch.float64)
    return X, torch.multinomial(torch.softmax(X @ coef, dim=1), 1, generator=g).squeeze(1)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_classifiers_epoch_is_logistic_regression_of_the_same_cost(task, weighted):
    X, y = _classes(task)
    w = torch.rand(len(X), generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64) + 0.5 if weighted else None
    lambdas = (0.3, 3.0, 30.0)
    pop = Population(task, 4, [{"hidden_layer_sizes": [], "solver": "exact", "l2": lam,
                                "epochs": 3} for lam in lambdas],
                     n_classes=3 if task == "multiclass" else 2, dtype=torch.float64)
    metrics = pop.train_epoch(X, y, w)
    probabilities = pop.predict(X)
    for k, lam in enumerate(lambdas):
        reference = LogisticRegression(C=1 / lam, tol=1e-12, max_iter=10_000).fit(
            X.numpy(), y.numpy(), sample_weight=None if w is None else w.numpy())
        np.testing.assert_allclose(probabilities[k].numpy(), reference.predict_proba(X.numpy()),
                                   atol=1e-6)
    # a minimum of the cost the engine trains: its own gradients vanish there
    for name, grad in pop.gradients(X, y, weight=w).items():
        assert grad.abs().max() < 1e-6, name
    # the epoch's training metrics are the data term at the solution
    data_term = pop.cost(X, y, weight=w) - pop.penalty() / len(X)
    assert torch.allclose(metrics["log_loss"], data_term, atol=1e-12)
    assert pop.epoch.tolist() == [1, 1, 1]


def test_the_classifier_estimator_is_scikit_learns_logistic_regression():
    """``CaviarClassifier(hidden_layer_sizes=[], solver="exact")`` on standard-scaled columns,
    without early stopping: scikit-learn's scaler and ``LogisticRegression(C=1/λ)``."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _classes("multiclass", n=300, seed=3)
    frame = pd.DataFrame(X.numpy() * [1.0, 10.0, 0.1, 3.0] + [0.0, 5.0, -2.0, 0.0],
                         columns=list("abcd"))
    labels = np.array(["low", "mid", "high"])[y.numpy()]
    fitted = CaviarClassifier(hidden_layer_sizes=[], solver="exact", l2=2.0,
                              numeric="standard", numeric_embedding="none",
                              early_stopping=False, random_state=0).fit(frame, labels)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1 / 2.0, tol=1e-12,
                                                                   max_iter=10_000))
    reference.fit(frame, labels)
    order = [list(reference.classes_).index(c) for c in fitted.classes_]
    np.testing.assert_allclose(fitted.predict_proba(frame),
                               reference.predict_proba(frame)[:, order], atol=1e-5)
    assert fitted.n_iter_ == 1


@pytest.mark.parametrize("task, member, why", [
    ("binary", {}, "no hidden layer"),
    ("regression", {}, "no hidden layer"),
    ("regression", {"hidden_layer_sizes": [], "front_scale": True}, "columns read as they are"),
    ("regression", {"hidden_layer_sizes": [], "numeric_embedding": "plr"},
     "columns read as they are or as periodic features"),
])
def test_a_network_it_cannot_solve_is_refused_in_one_line(task, member, why):
    with pytest.raises(ValueError, match=f"solver=exact needs {why}") as error:
        Population(task, LAYOUT, [{"solver": "exact", **member}])
    assert "\n" not in str(error.value)


def test_the_estimator_fits_a_linear_target_to_the_digit():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = 3 * X["a"] - 2 * X["b"] + 5
    fitted = CaviarRegressor(hidden_layer_sizes=[], solver="exact", numeric="standard",
                             numeric_embedding="none", l2=1e-6, random_state=0).fit(X, y)
    assert np.abs(fitted.predict(X) - y).max() < 1e-3
    # one epoch solves it: its 50, or any early stopping's patience, would solve it again
    assert fitted.n_iter_ == 1 and len(fitted.history_) == 1
    with pytest.raises(ValueError, match="solver=exact needs no hidden layer"):
        CaviarRegressor(solver="exact").fit(X, y)


def test_a_regression_warm_start_adds_the_linear_trials_a_classification_does_not():
    """(A classifier's solved softmax regression in its warm start was measured, and not
    kept: bench/README.md, "The seeds' softmax regression, solved".)"""
    space = default_space()
    regression = warm_start(space, rows=500, task="regression")
    classification = warm_start(space, rows=500, task="binary")
    assert regression[:len(classification)] == classification
    assert warm_start(space, rows=500, task="multiclass") == classification
    solved = regression[len(classification):]
    assert len(solved) == len(LINEAR_EXACT) + len(PERIODIC_EXACT) == 7
    linear = {"solver": "exact", "hidden_layer_sizes": (), "epochs": 1}
    periodic = {**linear, "numeric_embedding": "periodic", "plr_frequencies": 32,
                "plr_sigma": 1.0}
    for known, config in zip(solved, LINEAR_EXACT + PERIODIC_EXACT):
        # the axes cannot hold no hidden layer, one epoch or the periodic features (nor σ,
        # which the drawn "none" leaves inactive): those train as configured
        assert known.outside == (periodic if config in PERIODIC_EXACT else linear)
        assert known.params["l2"] == config["l2"]
        assert known.params["depth"] == 1 and known.params["epochs"] == 10  # axes' floors
        assert known.params["numeric_embedding"] == "none"
        assert not known.first and not known.full_schedule


def test_a_tune_keeps_the_solved_linear_network_where_the_target_is_linear(tmp_path):
    """A target linear in the columns, scaled straight (``numeric="standard"``): the
    networks' gradient steps stop short of it, the solved linear trials do not, and the
    validation rows choose them."""
    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame({"a": rng.uniform(-1, 1, n), "b": rng.uniform(-1, 1, n),
                       "c": rng.choice(["x", "y", "z"], n)})
    df["y"] = 3 * df["a"] - 2 * df["b"] + df["c"].map({"x": 0.0, "y": 1.0, "z": -1.0})
    result = tune(df.iloc[:400], "y", test=df.iloc[400:], trials=8, seed=0,
                  numeric="standard", out=tmp_path / "run")
    trials = result.study.trials
    solved = [t for t in trials if t.user_attrs["hyperparameters"]["solver"] == "exact"
              and t.user_attrs["hyperparameters"]["numeric_embedding"] == "none"]
    assert len(solved) == 3
    assert all(t.user_attrs["hyperparameters"]["hidden_layer_sizes"] == [] for t in solved)
    best = min(trials, key=lambda t: t.value if t.value is not None else np.inf)
    assert best.user_attrs["hyperparameters"]["solver"] == "exact"
    # to the digit on the training rows (test rows beyond their range are clamped to it)
    train = df.iloc[:400]
    assert np.abs(result.model.predict(train) - train["y"]).max() < 1e-3  # y's sd: about 2
    model = load_model(tmp_path / "run" / "model")  # saved and read again, no pickle
    assert model.network.hyperparameters[0]["solver"] == "exact"
    np.testing.assert_allclose(model.predict(df.iloc[400:]), result.model.predict(df.iloc[400:]),
                               rtol=1e-5, atol=1e-5)


def test_a_space_that_draws_what_cannot_be_solved_fails_those_trials_alone(tmp_path):
    """A space searching the solver draws exact with hidden layers: those trials fail with
    their reason, the others train."""
    from caviar.search import Space, choice, fixed

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = df["a"] - df["b"]
    space = Space({"solver": choice(["gradient", "exact"]), "hidden_layer_sizes": fixed([8]),
                   "epochs": fixed(3)})
    result = tune(df, "y", trials=8, seed=0, space=space, out=tmp_path / "run")
    failed = [t for t in result.study.trials if t.state.name == "FAIL"]
    assert failed and all("solver=exact needs no hidden layer" in t.user_attrs["failure"]
                          for t in failed)
    assert any(t.state.name == "COMPLETE" for t in result.study.trials)


# ------------------------------------------------------------------- periodic features, solved

def _periodic_features(X: np.ndarray, columns: list[int], k: int, sigma: float) -> np.ndarray:
    """[X, sin 2πc·x_j, cos 2πc·x_j for each numeric column j], c the k quantiles
    (i + ½)/k of |N(0, σ²)|, written out with SciPy: what the solve must read."""
    c = sigma * norm.ppf(0.5 + 0.5 * (np.arange(k) + 0.5) / k)
    parts = [X]
    for j in columns:
        theta = 2 * math.pi * X[:, j:j + 1] * c
        parts += [np.sin(theta), np.cos(theta)]
    return np.hstack(parts)


def _mixed_rows(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """LAYOUT's table: three numeric columns, a binary one, a 4-level one-hot and its codes;
    y a smooth function of the first column, a linear one of the second and the levels."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 9))
    X[:, :3] = rng.uniform(-2, 2, (n, 3))
    X[:, 3] = rng.integers(0, 2, n)
    level = rng.integers(0, 4, n)
    X[np.arange(n), 4 + level] = 1.0
    X[:, 8] = level + 1
    y = np.sin(2 * X[:, 0]) + X[:, 0] ** 2 + 0.5 * X[:, 1] + level + 0.05 * rng.normal(size=n)
    return torch.from_numpy(X), torch.from_numpy(y)


def _periodic(lambdas, **extra) -> Population:
    return Population("regression", LAYOUT, [
        {"hidden_layer_sizes": [], "solver": "exact", "numeric_embedding": "periodic",
         "plr_frequencies": 6, "plr_sigma": 1.0, "l2": lam, **extra} for lam in lambdas],
        dtype=torch.float64)


@pytest.mark.parametrize("weighted", [False, True])
def test_periodic_features_solved_are_ridge_on_those_features(weighted):
    """The output layer solved on [x, sin, cos] of the numeric columns at the frequency grid
    is scikit-learn's Ridge on the same features, built independently; the codes column is
    not read; a smooth function of one column is fitted far better than by the columns."""
    X, y = _mixed_rows()
    w = torch.linspace(0.2, 2.0, len(X), dtype=torch.float64) if weighted else None
    lambdas = (1e-4, 1e-2, 1.0)
    pop = _periodic(lambdas)
    s = pop.structure
    assert s.plr_columns == (0, 1, 2) and s.dense_columns == tuple(range(8))
    assert solved_inputs(s, pop.params, X).shape == (len(X), 8 + 3 * 12)  # one for all
    pop.train_epoch(X, y, w)
    features = _periodic_features(X[:, :8].numpy(), [0, 1, 2], 6, 1.0)
    for p, lam in enumerate(lambdas):
        ridge = Ridge(alpha=lam, solver="svd").fit(
            features, y.numpy(), sample_weight=None if w is None else w.numpy())
        np.testing.assert_allclose(pop.params["W0"][p, :, 0].numpy(), ridge.coef_,
                                   atol=1e-8)
        assert pop.params["b0"][p].item() == pytest.approx(ridge.intercept_, abs=1e-8)
        np.testing.assert_allclose(pop.decision_function(X)[p, :, 0].numpy(),
                                   ridge.predict(features), atol=1e-8)
    grads = pop.gradients(X, y, weight=w)  # a minimum of its cost in what is solved
    assert grads["W0"].abs().max() < 1e-8 and grads["b0"].abs().max() < 1e-8
    X_new, y_new = _mixed_rows(seed=1)
    columns = Ridge(alpha=1e-4).fit(X[:, :8].numpy(), y.numpy())
    rmse = float((pop.decision_function(X_new)[0, :, 0] - y_new).square().mean().sqrt())
    linear = float(np.sqrt(np.mean((columns.predict(X_new[:, :8].numpy()) - y_new.numpy()) ** 2)))
    assert rmse < 0.1 < 0.3 < linear, (rmse, linear)


def test_members_of_another_sigma_read_their_own_features():
    X, y = _mixed_rows()
    pop = Population("regression", LAYOUT, [
        {"hidden_layer_sizes": [], "solver": "exact", "numeric_embedding": "periodic",
         "plr_frequencies": 4, "plr_sigma": sigma, "l2": 0.1} for sigma in (0.3, 2.0)],
        dtype=torch.float64)
    assert solved_inputs(pop.structure, pop.params, X).shape == (2, len(X), 8 + 3 * 8)
    pop.train_epoch(X, y)
    for p, sigma in enumerate((0.3, 2.0)):
        features = _periodic_features(X[:, :8].numpy(), [0, 1, 2], 4, sigma)
        ridge = Ridge(alpha=0.1, solver="svd").fit(features, y.numpy())
        np.testing.assert_allclose(pop.params["W0"][p, :, 0].numpy(), ridge.coef_, atol=1e-8)


def test_the_solve_reads_at_most_its_cap_of_periodic_features():
    """The solve's cost grows with the square of its inputs: many numeric columns get fewer
    frequencies each, the gradient's networks all they ask for."""
    columns = 40
    layout = InputLayout(columns, (), tuple(range(columns)))
    member = {"hidden_layer_sizes": [], "numeric_embedding": "periodic", "plr_frequencies": 32}
    solved = Population("regression", layout, [{**member, "solver": "exact"}]).structure
    assert solved.plr_frequencies == EXACT_PERIODIC_FEATURES // (2 * columns) == 12
    assert solved.n_features == columns + columns * 2 * 12 <= columns + EXACT_PERIODIC_FEATURES
    stepped = Population("regression", layout, [member]).structure
    assert stepped.plr_frequencies == 32


def test_a_tune_keeps_the_solved_periodic_network_for_a_smooth_function_of_a_column(tmp_path):
    """A target that is a smooth function of one column (a square and a wave): the warm
    start's periodic trials, solved in one group for their four λ, fit it far closer than
    the networks of a short search or the linear ones; the model saves, loads and exports
    to ONNX with the same predictions."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    n = 1000
    df = pd.DataFrame({"x": rng.uniform(0, 10, n), "noise": rng.normal(size=n),
                       "kind": rng.choice(["a", "b"], n)})
    df["y"] = (df["x"] - 5) ** 2 + 3 * np.sin(df["x"]) + 2 * (df["kind"] == "a")
    result = tune(df.iloc[:800], "y", test=df.iloc[800:], trials=12, seed=0,
                  out=tmp_path / "run")
    trials = result.study.trials
    periodic = [t for t in trials if t.user_attrs["hyperparameters"]["numeric_embedding"]
                == "periodic"]
    assert sorted(t.user_attrs["hyperparameters"]["l2"] for t in periodic) == [
        1e-4, 1e-2, 1.0, 1e2]
    best = min(trials, key=lambda t: t.value if t.value is not None else np.inf)
    assert best in periodic
    others = [t.value for t in trials if t not in periodic and t.value is not None]
    assert best.value < 0.1 * min(others)  # validation loss: far below any other trial's
    assert result.test_scores["rmse"] < 0.05 * df["y"].std()
    model = load_model(tmp_path / "run" / "model")
    test = df.iloc[800:]
    np.testing.assert_allclose(model.predict(test), result.model.predict(test), rtol=1e-5,
                               atol=1e-4)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (values,) = session.run(None, {"features": model.preprocessor.transform(test)})
    np.testing.assert_allclose(values.ravel(), model.predict(test), rtol=1e-4, atol=1e-3)


def test_the_solved_warm_networks_of_one_structure_share_one_group():
    """The warm start's solved networks train each alone among the search's groups, but
    those of one structure together: one XᵀX for the three λ of the linear ones, one for the
    four of the periodic ones, and each the same one epoch it would be alone."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    table["y"] = table["a"] ** 2 + rng.normal(size=300)
    space = default_space()
    tuner = Tuner(optuna.create_study(), space, prepare(table, "y", seed=0),
                  Budget(None, None, 0.0), 16, None, seed=0,
                  warm=warm_start(space, rows=180, task="regression"))
    tuner.fill()
    solved = sorted((g for g in tuner.groups if g.shape.exact), key=lambda g: g.population.size)
    assert [g.population.size for g in solved] == [3, 4] and all(g.solo for g in solved)
    assert solved[1].shape.plr_columns and not solved[0].shape.plr_columns
    assert sorted(h["l2"] for h in solved[1].population.hyperparameters) == [1e-4, 1e-2, 1, 1e2]
    unsolved = [g for g in tuner.groups if g.solo and not g.shape.exact]
    # the other warm networks: the two decayed ones (σ = 0.1 and 1) share a group too
    assert [g.population.size for g in unsolved] == [1, 1, 2]
    decayed = unsolved[2]
    assert decayed.full_schedule
    assert [h["plr_sigma"] for h in decayed.population.hyperparameters] == [0.1, 1.0]


def test_the_sums_go_chunk_by_chunk_with_the_same_solve(monkeypatch):
    """The solve reads its inputs a chunk of rows at a time (a large table's periodic
    features never exist at once), and its sums give what one pass gives: Ridge's fit, for
    members with their own features (two σ) and their own row weights (a bag)."""
    from caviar.engine import exact

    monkeypatch.setattr(exact, "CHUNK_ROWS", 64)
    X, y = _mixed_rows(n=300)
    weights = torch.stack([torch.ones(len(X), dtype=torch.float64),
                           (torch.arange(len(X)) % 3 != 0).double()])
    pop = Population("regression", LAYOUT, [
        {"hidden_layer_sizes": [], "solver": "exact", "numeric_embedding": "periodic",
         "plr_frequencies": 4, "plr_sigma": sigma, "l2": 0.1} for sigma in (0.3, 2.0)],
        dtype=torch.float64)
    read = []
    original = exact._chunks

    def counted(rows, y, w):
        for xc, yc, wc in original(rows, y, w):
            read.append(len(yc))
            yield xc, yc, wc

    monkeypatch.setattr(exact, "_chunks", counted)
    pop.train_epoch(X, y, weights)
    assert max(read) == 64 and sum(read) == 2 * len(X)  # two passes: means, then products
    for p, sigma in enumerate((0.3, 2.0)):
        features = _periodic_features(X[:, :8].numpy(), [0, 1, 2], 4, sigma)
        ridge = Ridge(alpha=0.1, solver="svd").fit(features, y.numpy(),
                                                   sample_weight=weights[p].numpy())
        np.testing.assert_allclose(pop.params["W0"][p, :, 0].numpy(), ridge.coef_, atol=1e-8)
        assert pop.params["b0"][p].item() == pytest.approx(ridge.intercept_, abs=1e-8)
