"""``solver="exact"``: a regression network with no hidden layer takes the minimizer of its
L2-penalized cost from the normal equations (``caviar.engine.exact``).

Checked against scikit-learn's ``Ridge`` (the same cost: ‖y − Xw − b‖²_Ω + α‖w‖², α = λ),
against the engine's own hand-written gradients (zero at a minimum), and through a tune: the
warm start's linear trials, and a model that fits a linear target to the digit.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

from caviar import CaviarRegressor, load_model, tune
from caviar.engine import Population
from caviar.hyperparams import LINEAR_EXACT
from caviar.search import default_space
from caviar.search.samplers import warm_start

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


@pytest.mark.parametrize("task, member, why", [
    ("binary", {"hidden_layer_sizes": []}, "a regression task"),
    ("regression", {}, "no hidden layer"),
    ("regression", {"hidden_layer_sizes": [], "front_scale": True}, "columns read as they are"),
])
def test_a_network_it_cannot_solve_is_refused_in_one_line(task, member, why):
    with pytest.raises(ValueError, match=f"solver=exact needs {why}") as error:
        Population(task, 4, [{"solver": "exact", **member}])
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
    space = default_space()
    regression = warm_start(space, rows=500, task="regression")
    classification = warm_start(space, rows=500, task="binary")
    assert regression[:len(classification)] == classification
    linear = regression[len(classification):]
    assert len(linear) == len(LINEAR_EXACT) == 3
    for known, config in zip(linear, LINEAR_EXACT):
        # the axes cannot hold no hidden layer and one epoch: those train as configured
        assert known.outside == {"solver": "exact", "hidden_layer_sizes": (), "epochs": 1}
        assert known.params["l2"] == config["l2"]
        assert known.params["depth"] == 1 and known.params["epochs"] == 10  # axes' floors
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
    solved = [t for t in trials if t.user_attrs["hyperparameters"]["solver"] == "exact"]
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
