"""CaviarClassifier and CaviarRegressor as scikit-learn estimators: the estimator checks,
pipelines and model selection, raw DataFrames with strings and missing values, early stopping.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import caviar
from caviar import CaviarClassifier, CaviarRegressor
from caviar.datasets import load_dataset
from caviar.hyperparams import DEFAULTS, MIN_STEPS, TABM_K

# Small and quick, but enough for the estimator checks' training-quality thresholds
# (check_classifiers_train: accuracy > 0.83 on blobs; check_regressors_train: R² > 0.5).
FAST = {"epochs": 20, "learning_rate": 1e-2, "hidden_layer_sizes": (32,), "random_state": 0}

SUBSET_INVARIANCE = (
    "float32 matrix products round differently for different row counts, so predictions of "
    "one row alone and of the same row in a batch differ by ~1 ulp (~1e-7 relative); the "
    "check's tolerance is 1e-7"
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These networks are tiny: with several intra-op threads on a busy machine torch spends
    more time synchronizing threads than computing (check_estimator took ~4 min instead of
    ~10 s on two loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# as for scikit-learn's own SGD estimators: a weight of 2 doubles a row's loss, but a repeated
# row also changes the minibatches, the validation split and the number of steps
WEIGHTS_NOT_REPEATS = ("stochastic minibatch training: weighting a row by 2 is not the same "
                       "run as repeating it")


@pytest.mark.parametrize(
    "estimator, expected_failed_checks",
    [
        # The classifier passes check_methods_subset_invariance here by a hair (predict_proba
        # differs by 1.2e-7 where ~2e-7 is allowed); listed so that another CPU's rounding
        # does not fail the suite. A listed check still runs and is reported as xfail.
        (CaviarClassifier(**FAST), {"check_methods_subset_invariance": SUBSET_INVARIANCE,
                                    "check_sample_weight_equivalence_on_dense_data":
                                    WEIGHTS_NOT_REPEATS}),
        (CaviarRegressor(**FAST), {"check_methods_subset_invariance": SUBSET_INVARIANCE,
                                   "check_sample_weight_equivalence_on_dense_data":
                                   WEIGHTS_NOT_REPEATS}),
    ],
    ids=["classifier", "regressor"],
)
def test_check_estimator(estimator, expected_failed_checks):
    results = check_estimator(estimator, expected_failed_checks=expected_failed_checks,
                              on_skip=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed
    ran = {r["check_name"] for r in results if r["status"] in ("passed", "xfail")}
    assert {"check_fit_idempotent", "check_estimators_pickle"} <= ran


@pytest.fixture(scope="module")
def wage():
    """wage with some missing values (it has none as published), logwage dropped: it is
    log(wage), a target leak."""
    df = load_dataset("wage").drop(columns=["logwage"])
    rng = np.random.RandomState(1)  # not 0: the splits below use 0's permutation
    df.loc[rng.choice(len(df), 150, replace=False), "age"] = np.nan
    df.loc[rng.choice(len(df), 150, replace=False), "education"] = np.nan
    return df


@pytest.mark.parametrize("estimator", [CaviarClassifier, CaviarRegressor])
def test_defaults_are_the_vocabulary_defaults(estimator):
    """Every hyperparameter is a constructor argument with the vocabulary's default, except
    tabm_k (None: TabM-mini's TABM_K sub-networks where there are hidden layers), epochs
    (None: the vocabulary's 50, or on a small table as many as MIN_STEPS steps take) and
    numeric_embedding (PLR, where the vocabulary's is none)."""
    params = estimator().get_params()
    assert set(DEFAULTS) <= set(params)
    own = {"tabm_k": None, "epochs": None, "numeric_embedding": "plr"}
    for name, default in DEFAULTS.items():
        assert params[name] == own.get(name, default), name
    assert DEFAULTS["numeric_embedding"] == "none"


@pytest.mark.parametrize("hidden, k, expected", [((64, 64), None, TABM_K), ((), None, 1),
                                                 ((64, 64), 1, 1), ((16,), 2, 2)])
def test_fitted_network_is_tabm_mini_by_default(wage, hidden, k, expected):
    """By default the estimator fits TabM-mini; a network without hidden layers (softmax
    regression), or tabm_k=1, is one plain network; an explicit k is kept."""
    df = wage.sample(300, random_state=0)
    reg = CaviarRegressor(hidden_layer_sizes=hidden, tabm_k=k, epochs=2, random_state=0)
    reg.fit(df.drop(columns=["wage"]), df["wage"])
    assert reg.model_.network.structure.tabm_k == expected
    assert reg.get_params()["tabm_k"] == k


@pytest.mark.parametrize("hidden", [None, 64])
def test_bad_hidden_layer_sizes_is_the_vocabularys_one_line_error(wage, hidden):
    """Deciding the default tabm_k reads hidden_layer_sizes: a bad value is still the
    vocabulary's one-line error naming it, not a TypeError."""
    df = wage.sample(100, random_state=0)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be a list of positive"):
        CaviarRegressor(hidden_layer_sizes=hidden, epochs=1).fit(df.drop(columns=["wage"]),
                                                                 df["wage"])


def test_pipeline_cross_val_and_grid_search(wage):
    df = wage.sample(600, random_state=0)
    X, y = df.drop(columns=["wage"]), df["wage"]
    columns = make_column_transformer(
        (make_pipeline(StandardScaler()), ["year", "age"]),
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["education", "jobclass"]),
    )
    pipe = make_pipeline(columns, CaviarRegressor(**{**FAST, "hidden_layer_sizes": (16,)}))

    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()

    search = GridSearchCV(pipe, {"caviarregressor__l2": [0.0, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_["caviarregressor__l2"] in (0.0, 1e-2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict(X.head(5)).shape == (5,)
    fitted = search.best_estimator_[-1]
    assert fitted.n_features_in_ == search.best_estimator_[0].transform(X.head(1)).shape[1]

    # get_params / set_params / clone through the pipeline
    params = pipe.get_params()
    assert params["caviarregressor__hidden_layer_sizes"] == (16,)
    pipe.set_params(caviarregressor__dropout=0.25)
    copy = clone(pipe)
    assert copy.get_params()["caviarregressor__dropout"] == 0.25
    assert not hasattr(copy[-1], "model_")


def test_scaler_pipeline_classifier_cross_val():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), CaviarClassifier(**FAST))
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.9


def test_grid_search_classifier_on_strings():
    df = load_dataset("default").sample(4000, random_state=0)
    X, y = df.drop(columns=["default"]), df["default"]
    est = CaviarClassifier(**{**FAST, "hidden_layer_sizes": (16,)})
    search = GridSearchCV(est, {"dropout": [0.0, 0.2]}, cv=2, scoring="roc_auc").fit(X, y)
    assert search.best_params_["dropout"] in (0.0, 0.2)
    assert search.best_score_ > 0.8
    assert set(search.predict(X.head(50))) <= {"No", "Yes"}


def test_regressor_takes_raw_dataframe_with_strings_and_missing_values(wage):
    train, test = train_test_split(wage, test_size=0.2, random_state=0)
    X, y = train.drop(columns=["wage"]), train["wage"]
    assert X["education"].isna().any() and X["age"].isna().any()
    est = CaviarRegressor(**FAST).fit(X, y)
    assert list(est.feature_names_in_) == list(X.columns)
    pred = est.predict(test.drop(columns=["wage"]))
    assert pred.dtype == np.float64 and np.isfinite(pred).all()
    assert est.score(test.drop(columns=["wage"]), test["wage"]) > 0.1

    unseen = test.drop(columns=["wage"]).head(3).copy()
    unseen["education"] = ["9. Unheard of", np.nan, "1. < HS Grad"]  # training had missing
    with pytest.warns(UserWarning, match=r"^1 of 3 row\(s\) hold categories unseen in "
                                         r"training, .*: 'education' \('9. Unheard of' in 1 "
                                         r"row\)$"):
        assert np.isfinite(est.predict(unseen)).all()
    with warnings.catch_warnings():  # held-out scores (a search's own test rows) are silent
        warnings.simplefilter("error")
        est.model_.scores(unseen.assign(**{est.model_.target: 100.0}))


def test_classifier_string_labels_and_probabilities():
    df = load_dataset("default")  # student is Yes/No, default is Yes/No with 3% Yes
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=df["default"])
    est = CaviarClassifier(**FAST).fit(train.drop(columns=["default"]), train["default"])
    assert list(est.classes_) == ["No", "Yes"]
    X_test = test.drop(columns=["default"])
    proba = est.predict_proba(X_test)
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = est.predict(X_test)
    assert set(pred) <= {"No", "Yes"}
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(axis=1)])
    assert est.score(X_test, test["default"]) == pytest.approx((pred == test["default"]).mean())
    assert roc_auc_score(test["default"] == "Yes", proba[:, 1]) > 0.9


def test_multiclass_string_labels(wage):
    df = wage.dropna(subset=["education"]).sample(800, random_state=0)
    X, y = df.drop(columns=["education"]), df["education"]
    est = CaviarClassifier(**FAST).fit(X, y)
    assert list(est.classes_) == sorted(y.unique())
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), y.nunique())
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(est.predict(X)) <= set(y)
    assert est.score(X, y) > 1 / y.nunique()  # better than guessing


def test_early_stopping():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] + 0.3 * rng.normal(size=400)  # learned in a few epochs, then only noise left
    est = CaviarRegressor(**{**FAST, "epochs": 200, "hidden_layer_sizes": (16,)},
                          n_iter_no_change=3).fit(X, y)
    assert est.n_iter_ < 200
    assert len(est.history_) == est.n_iter_
    assert all(isinstance(h, dict) for h in est.history_)
    assert [h["epoch"] for h in est.history_] == list(range(1, est.n_iter_ + 1))
    # it stopped n_iter_no_change epochs after the best validation loss
    val_loss = [h["val_loss"] for h in est.history_]
    assert est.n_iter_ == int(np.argmin(val_loss)) + 1 + 3
    assert est.score(X, y) > 0.8

    no_stop = CaviarRegressor(**{**FAST, "epochs": 7}, early_stopping=False).fit(X, y)
    assert no_stop.n_iter_ == len(no_stop.history_) == 7


def test_a_large_table_validates_early_stopping_on_2500_rows(monkeypatch):
    """validation_fraction=None: 10% of the rows up to 25,000 (scikit-learn's share), then
    2,500 rows (AutoGluon's holdout without tuning); a share given is kept."""
    import caviar.estimators as estimators

    real, carved = estimators.prepare, []

    def recording(*args, **kwargs):  # the real prepare, its split's row counts kept
        prepared = real(*args, **kwargs)
        carved.append((len(prepared.train), len(prepared.validation)))
        return prepared

    monkeypatch.setattr(estimators, "prepare", recording)
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50_000, 2))
    y = X[:, 0] + 0.1 * rng.normal(size=50_000)
    quick = {"hidden_layer_sizes": (), "tabm_k": 1, "numeric_embedding": "none", "epochs": 1,
             "random_state": 0}
    large = CaviarRegressor(**quick).fit(X, y)
    assert CaviarRegressor().get_params()["validation_fraction"] is None
    assert carved[-1] == (47_500, 2_500) and large.validation_fraction_ == 0.05
    small = CaviarRegressor(**quick).fit(X[:3000], y[:3000])
    assert carved[-1] == (2_700, 300) and small.validation_fraction_ == 0.1
    CaviarRegressor(**quick, validation_fraction=0.1).fit(X, y)
    assert carved[-1] == (45_000, 5_000)
    assert CaviarRegressor(**quick, early_stopping=False).fit(X, y).validation_fraction_ == 0
    assert carved[-1] == (50_000, 0)


@pytest.mark.parametrize("estimator", [CaviarClassifier, CaviarRegressor])
@pytest.mark.parametrize("bad, allowed", [
    ({"validation_fraction": 1.5}, "a float in the range (0.0, 1.0) or None"),
    ({"validation_fraction": 0.0}, "a float in the range (0.0, 1.0) or None"),
    ({"n_iter_no_change": 0}, "an int in the range [1, inf)"),
    ({"random_state": -1}, "an int in the range [0, 4294967295] or None"),
    ({"early_stopping": "yes"}, "an instance of 'bool'"),
])
def test_a_bad_estimator_parameter_is_one_line_naming_it(estimator, bad, allowed):
    """The estimator's own parameters are checked as scikit-learn checks its own, before
    any work: one line naming the parameter, what it may be, and what it got."""
    X, y = np.arange(40.0).reshape(20, 2), np.array([0, 1] * 10)
    name = next(iter(bad))
    with pytest.raises(ValueError) as raised:
        estimator(**bad).fit(X, y)
    message = str(raised.value)
    assert "\n" not in message
    assert f"'{name}' parameter of {estimator.__name__} must be {allowed}" in message
    assert f"Got {bad[name]!r} instead" in message


def test_the_default_epochs_give_a_small_table_a_thousand_optimizer_steps():
    """epochs=None: 50, or as many as MIN_STEPS = 1,000 steps take. 300 rows at batch 128
    are 3 steps an epoch, so 334 epochs; 3,000 rows (24 steps an epoch) hold 1,200 in 50; a
    number given is what it trains."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(3000, 3))
    y = X[:, 0] + 0.3 * rng.normal(size=3000)
    fast = {**FAST, "hidden_layer_sizes": (8,), "tabm_k": 1, "early_stopping": False}
    del fast["epochs"]
    assert CaviarRegressor(**fast).get_params()["epochs"] is None
    assert MIN_STEPS == 1000
    small = CaviarRegressor(**fast).fit(X[:300], y[:300])
    assert small.n_iter_ == len(small.history_) == 334
    assert small.model_.hyperparameters["numeric_embedding"] == "plr"  # the default network
    assert small.model_.network.structure.plr_columns == (0, 1, 2)
    assert CaviarRegressor(**fast).fit(X, y).n_iter_ == 50
    assert CaviarRegressor(**fast, epochs=7).fit(X[:300], y[:300]).n_iter_ == 7
    # early stopping still stops it: 270 training rows, patience 10 epochs
    stopped = CaviarRegressor(**{**fast, "early_stopping": True}).fit(X[:300], y[:300])
    assert stopped.n_iter_ < 334


def test_fit_does_not_warn_on_clean_numeric_data():
    X, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CaviarClassifier(**{**FAST, "epochs": 2}).fit(X, y)


def test_predict_before_fit_and_wrong_columns():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CaviarRegressor().predict(np.zeros((2, 3)))
    X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3})
    est = CaviarRegressor(**{**FAST, "epochs": 2}).fit(X, X["a"] * 2)
    with pytest.raises(ValueError):
        est.predict(X[["a"]])


def test_regression_predictions_stay_within_the_training_targets_range(tmp_path):
    # y = 2x on x in [0, 1]: a network of plain inputs (no periodic embedding, which does not
    # run on linearly) extrapolates past both ends, the model clamps to the range the
    # training rows hold (RealMLP-TD's clamp_output), in every path that predicts
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 400)
    X, y = pd.DataFrame({"x": x}), 2 * x
    model = CaviarRegressor(hidden_layer_sizes=(16,), epochs=30, tabm_k=1,
                            numeric_embedding="none", random_state=0).fit(X, y)
    far = pd.DataFrame({"x": [-50.0, 0.5, 50.0]})
    raw = model.model_.preprocessor.decode_target(model._outputs(far))
    assert raw[0] < y.min() and raw[2] > y.max()  # what the network alone says out there
    clamped = model.predict(far)
    assert clamped[0] == y.min() and clamped[2] == y.max()
    assert clamped[1] == pytest.approx(raw[1])  # inside the range, nothing changes
    saved = caviar.load_model(model.model_.save(tmp_path / "model"))
    np.testing.assert_array_equal(saved.predict(far), clamped)
    assert saved.predict_frame(far)["prediction"].tolist() == clamped.tolist()
