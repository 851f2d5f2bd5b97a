"""Classifiers start at the training rows' prior: the output layer's bias holds the log of
the class shares (``losses.prior_logits``), so an untrained network predicts the base rate.
Checked against the shares counted by numpy and scikit-learn's ``DummyClassifier``, in every
member a population makes (first, refilled, added, TabM-mini's heads), through a saved model,
and wired into the estimators and the tuner."""

import numpy as np
import pandas as pd
import pytest
import torch
from gradcheck import LAYOUT, make_data
from sklearn.dummy import DummyClassifier

from caviar import CaviarClassifier, CaviarRegressor, load_model, tune
from caviar.engine import Population
from caviar.engine.losses import prior_logits

SHARES = np.array([0.7, 0.2, 0.1])


def _labels(n: int, shares: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(shares), size=n, p=shares)


def test_prior_logits_are_the_log_class_shares_with_one_added_to_each_class():
    y = _labels(500, SHARES)
    counts = np.bincount(y, minlength=3)
    laplace = (counts + 1) / (counts.sum() + 3)
    logits = prior_logits(torch.as_tensor(y), "multiclass", 3)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(), laplace, rtol=1e-12)
    # with many rows the one added is nothing: the base rate DummyClassifier predicts
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(y), 1)), y)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(),
                               dummy.predict_proba(np.zeros((1, 1)))[0], atol=5e-3)
    # binary: one output, the log-odds of class 1; weighted rows count by their weight
    yb = np.array([0, 0, 0, 1])
    w = np.array([1.0, 1.0, 1.0, 3.0])
    (logit,) = prior_logits(torch.as_tensor(yb, dtype=torch.float32), "binary",
                            weight=torch.as_tensor(w))
    assert logit == pytest.approx(np.log((3 + 1) / (3 + 1)))
    (logit,) = prior_logits(torch.as_tensor(yb, dtype=torch.float32), "binary")
    assert logit == pytest.approx(np.log((1 + 1) / (3 + 1)))
    # a class absent from the rows still has a finite logit; regression has no prior
    assert np.isfinite(prior_logits(torch.tensor([0, 0, 1]), "multiclass", 4)).all()
    assert prior_logits(torch.zeros(5), "regression") is None


@pytest.mark.parametrize("tabm_k", [1, 3])
def test_every_member_predicts_the_prior_until_its_weights_speak(tabm_k):
    """With the output layer's weights at 0 a member outputs its bias alone: every member
    a population makes (at first, refilled, added) predicts the prior's shares exactly."""
    X, _ = make_data("multiclass", n=12, dtype=torch.float32)
    bias = prior_logits(torch.as_tensor(_labels(300, SHARES)), "multiclass", 3)
    expected = torch.softmax(torch.tensor(bias), 0)
    member = {"hidden_layer_sizes": (5,), "tabm_k": tabm_k}
    pop = Population("multiclass", LAYOUT, [member] * 2, n_classes=3, seed=2, output_bias=bias)
    pop.replace_members([1], [member])
    pop.add_members([member])
    last = pop.structure.n_layers - 1
    assert pop.params[f"b{last}"].shape == (3, tabm_k, 3)
    with torch.no_grad():
        pop.params[f"W{last}"].zero_()
    proba = pop.predict(X)
    torch.testing.assert_close(proba, expected.expand_as(proba).to(proba.dtype))
    # the same population without it predicts equal classes
    plain = Population("multiclass", LAYOUT, [member], n_classes=3, seed=2)
    with torch.no_grad():
        plain.params[f"W{last}"].zero_()
    torch.testing.assert_close(plain.predict(X), torch.full((1, 12, 3), 1 / 3))


def test_a_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match="output_bias has 2 values for 3 outputs"):
        Population("multiclass", 4, [{}], n_classes=3, output_bias=(0.0, 1.0))


def _imbalanced(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=n) > 1.6, "rare", "common")
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y})


def test_the_estimators_start_at_the_prior():
    frame = _imbalanced()
    X, y = frame[["a", "b", "c"]], frame["label"]
    model = CaviarClassifier(epochs=1, random_state=0).fit(X, y)
    share = float((y == "rare").mean())  # classes_ sorted: "common" is 0, "rare" is 1
    assert model.model_.network.output_bias == pytest.approx(
        (np.log((share * len(y) + 1) / ((1 - share) * len(y) + 1)),), abs=0.05)
    assert CaviarRegressor(epochs=1).fit(X, frame["a"]).model_.network.output_bias is None


def test_the_tuner_starts_every_network_at_the_prior_and_the_model_file_keeps_it(tmp_path):
    frame = _imbalanced(seed=1)
    result = tune(frame, "label", trials=4, population=4, out=tmp_path / "run", seed=0)
    rare = float((frame["label"] == "rare").mean())
    loaded = load_model(tmp_path / "run" / "model")
    for network in loaded.networks:
        (logit,) = network.output_bias
        # the training rows' log-odds (60% of the table), near the whole table's
        assert logit == pytest.approx(np.log(rare / (1 - rare)), abs=0.3)
        assert network.output_bias == result.model.networks[0].output_bias
