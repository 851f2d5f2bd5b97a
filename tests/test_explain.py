"""Permutation importance by original column: the column that determines the target ranks
first, a noise column scores ~0, a categorical column is one row; the command prints a
table, writes a CSV, and its errors are one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from commandline import assert_one_error_line, invoke
from sklearn.metrics import log_loss

from caviar.data import DataError
from caviar.explain import permutation_importance
from caviar.model import fit_model

HP = {"epochs": 30, "hidden_layer_sizes": [16], "batch_size": 32, "learning_rate": 0.01}
COLUMNS = ["signal", "noise", "[b]shade"]  # brackets: printed as they are, not as markup


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """``signal`` determines every target; ``noise`` and ``[b]shade`` (a categorical of five
    levels, one-hot encoded into five features) are independent of them."""
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n),
                       "[b]shade": rng.choice(["ash", "bone", "clay", "dusk", "ecru"], n)})
    df["grade"] = np.where(df["signal"] > 0.5, "high",
                           np.where(df["signal"] < -0.5, "low", "mid"))
    df["late"] = df["signal"] + rng.normal(0, 0.3, n) > 0
    df["price"] = 50.0 + 10.0 * df["signal"] + rng.normal(0, 1.0, n)
    return df


TARGETS = {"grade": "log_loss", "late": "log_loss", "price": "rmse"}


@pytest.fixture(scope="module")
def models(table) -> dict:
    train = table[:400]
    return {target: fit_model(train, target, HP, drop=[t for t in TARGETS if t != target])
            for target in TARGETS}


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_determining_column_ranks_first(models, table, target):
    model, test = models[target], table[400:]
    result = permutation_importance(model, test, n_repeats=5, seed=0)
    assert list(result.columns) == ["column", "importance_mean", "importance_std"]
    # one row per original column: the five one-hot features of "[b]shade" count once
    assert sorted(result["column"]) == sorted(COLUMNS)
    assert len(model.preprocessor.feature_names_out_) > len(COLUMNS)
    assert result["column"].iloc[0] == "signal"
    assert list(result["importance_mean"]) == sorted(result["importance_mean"], reverse=True)
    importance = result.set_index("column")["importance_mean"]
    assert importance["signal"] > 0.5 * result.attrs["baseline"]
    for column in ("noise", "[b]shade"):  # ~0: small beside the signal, whatever its sign
        assert abs(importance[column]) < 0.05 * importance["signal"], result
    # the baseline is the model's own score on these rows, in the model's units
    assert result.attrs["metric"] == TARGETS[target]
    assert result.attrs["rows"] == len(test)
    assert result.attrs["baseline"] == pytest.approx(
        model.scores(test)[TARGETS[target]], rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("target", list(TARGETS))
def test_equals_scikit_learn_shuffling_the_table_itself(models, table, target, weighted):
    """The oracle: scikit-learn's permutation importance of an estimator that preprocesses
    the whole table again for every shuffle gives the same importances (with a weight
    column, scikit-learn's weighted scores)."""
    from sklearn.base import BaseEstimator
    from sklearn.inspection import permutation_importance as sklearn_importance

    model, test = models[target], table[400:].reset_index(drop=True)
    features = list(model.preprocessor.roles_.features)
    w = None
    if weighted:  # a quarter of the rows weigh 10
        w = test["w"] = 1.0 + 9.0 * (np.arange(len(test)) % 4 == 0)

    class Raw(BaseEstimator):
        def fit(self, X, y=None):
            return self

        def __sklearn_is_fitted__(self):
            return True

        def predict(self, X):
            return model.predict(X)

    if model.task == "regression":
        y, scoring = test[target].to_numpy(), "neg_root_mean_squared_error"
    else:
        y = model.preprocessor.encode_target(test[target])
        scoring = lambda estimator, X, y, sample_weight=None: -log_loss(  # noqa: E731
            y, model.predict_proba(X), labels=list(range(len(model.classes))),
            sample_weight=sample_weight)
    raw = sklearn_importance(Raw(), test[features], y, scoring=scoring, n_repeats=3,
                             random_state=4, sample_weight=w)
    ours = permutation_importance(model, test, n_repeats=3, seed=4,
                                  weight="w" if weighted else None)
    assert ours.attrs["baseline"] == pytest.approx(
        model.scores(test, weight="w" if weighted else None)[TARGETS[target]], rel=1e-6)
    ours = ours.set_index("column")
    np.testing.assert_allclose(ours.loc[features, "importance_mean"], raw.importances_mean,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.loc[features, "importance_std"], raw.importances_std,
                               rtol=1e-5, atol=1e-7)


def test_seeded_and_repeatable(models, table):
    a = permutation_importance(models["grade"], table[400:], n_repeats=2, seed=3)
    b = permutation_importance(models["grade"], table[400:], n_repeats=2, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_rows_lacking_a_class_are_scored_against_all_classes(models, table):
    """The log-loss labels are fixed: a test set without one class still scores."""
    test = table[400:]
    result = permutation_importance(models["grade"], test[test["grade"] != "mid"], n_repeats=2)
    assert result["column"].iloc[0] == "signal"


def test_a_model_directory_and_a_file(models, table, tmp_path):
    models["price"].save(tmp_path / "model")
    table[400:].to_csv(tmp_path / "test.csv", index=False)
    result = permutation_importance(tmp_path / "model", tmp_path / "test.csv", n_repeats=2)
    assert result["column"].iloc[0] == "signal"


def test_errors(models, table):
    with pytest.raises(DataError, match="no column 'grade', the model's target: explain "
                                        r"\(permutation importance\) needs the target"):
        permutation_importance(models["grade"], table[400:].drop(columns="grade"))
    with pytest.raises(DataError, match="lacks 1 column.*'noise'"):
        permutation_importance(models["grade"], table[400:].drop(columns="noise"))
    with pytest.raises(DataError, match="unknown at training"):
        permutation_importance(models["grade"], table[400:].assign(grade="other"))
    with pytest.raises(DataError, match="no row of the table has a value"):
        permutation_importance(models["grade"], table[400:].assign(grade=None))
    with pytest.raises(DataError, match="regression target must be numbers"):
        permutation_importance(models["price"], table[400:].assign(price="dear"))


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def files(models, table, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    models["grade"].save(root / "model")
    table[400:].to_csv(root / "test.csv", index=False)
    table[400:].drop(columns="grade").to_csv(root / "unlabelled.csv", index=False)
    return root


def test_cli_prints_the_table_and_writes_a_csv(files, tmp_path):
    out = tmp_path / "importance.csv"
    result = invoke("explain", files / "model", files / "test.csv", "--repeats", "3",
                    "-o", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "permutation importance on 200 rows" in lines[0] and "log-loss" in lines[0]
    assert lines[1].split() == ["column", "importance", "±", "std"]
    assert [line.split()[0] for line in lines[2:5]][0] == "signal"
    assert sorted(line.split()[0] for line in lines[2:5]) == sorted(COLUMNS)
    assert f"wrote {out}" in result.stdout
    written = pd.read_csv(out)
    assert list(written.columns) == ["column", "importance_mean", "importance_std"]
    assert written["column"].iloc[0] == "signal"


def test_cli_errors(files, tmp_path):
    assert_one_error_line(invoke("explain", files / "model", files / "unlabelled.csv"),
                          "no column 'grade', the model's target", "needs the target")
    assert_one_error_line(invoke("explain", files / "model", tmp_path / "missing.csv"))
    assert_one_error_line(invoke("explain", tmp_path / "nothing", files / "test.csv"),
                          "not a caviar model directory")
    assert_one_error_line(invoke("explain", files / "model", files / "test.csv", "-o",
                                 tmp_path / "no" / "importance.csv"),
                          "does not exist", "create it first")
    assert_one_error_line(invoke("explain", files / "model", files / "test.csv", "--weight",
                                 "w"), "weight column 'w' is missing")


def test_cli_help():
    result = invoke("explain", "--help")
    assert result.exit_code == 0
    for text in ("--repeats", "--seed", "--output", "target"):
        assert text in result.stdout, text
