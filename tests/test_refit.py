"""The end of a tuning run: the kept configurations trained again on more rows (vectorized,
each for its own epochs), the budget that holds time back for that end, and the first
trials of a study, which start from known-good configurations."""

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import invoke
from wine import WINE_SPACE

from caviar import CaviarClassifier, load_model
from caviar.data import prepare
from caviar.engine import Population
from caviar.hyperparams import (
    DEFAULTS,
    ESTIMATOR_NETWORK,
    MIN_STEPS,
    PATIENCE,
    REALMLP_LIKE,
    TABM_K,
    epochs_by_steps,
)
from caviar.search import Space, choice, default_space, log_uniform
from caviar.search import fixed as fixed_value
from caviar.search.budget import Budget, epoch_cost, refit_cost
from caviar.search.samplers import QueuedTrial, warm_start
from caviar.search.study import keys
from caviar.search.tune import _rows, tune
from caviar.training import refit_networks


def _member(seed: int, **hyperparameters) -> Population:
    return Population("binary", 5, [hyperparameters], seed=seed).export_member(0)


@pytest.fixture
def rows():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=gen)
    return X, (X[:, 0] - X[:, 1] > 0).float()


def test_refit_trains_one_population_per_structure_as_each_would_alone(rows):
    X, y = rows
    a = _member(1, hidden_layer_sizes=[8], epochs=9, lr_decay="cosine", learning_rate=0.01)
    b = _member(2, hidden_layer_sizes=[8], epochs=6, learning_rate=0.003, dropout=0.0)
    c = _member(3, hidden_layer_sizes=[4], epochs=5)
    together = refit_networks([a, b, c], X, y, [4, 6, 2], seed=3)
    alone = refit_networks([a], X, y, [4], seed=3)
    assert [int(n.epoch[0]) for n in together] == [4, 6, 2]  # each its own epochs
    assert [n.hyperparameters[0]["epochs"] for n in together] == [4, 6, 2]
    assert [n.structure.hidden_layer_sizes for n in together] == [(8,), (8,), (4,)]
    for name, weights in alone[0].params.items():  # a and b shared one population
        torch.testing.assert_close(together[0].params[name], weights)
    # the cosine decay is the searched one (over 9 epochs), cut at epoch 4
    rates = [r["learning_rate"] for r in together[0].history[0]]
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 9)) for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-6)


def test_refit_keeps_the_networks_input_layout():
    # column 2 holds a categorical's codes (levels 1..3); an embedding network must read it
    # as codes again when refit, not as a number
    from caviar.engine.network import Categorical, InputLayout

    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(1, 4, (200,), generator=gen).float()
    X = torch.cat([torch.randn(200, 2, generator=gen), codes[:, None]], dim=1)
    y = (codes == 2).float()
    layout = InputLayout(3, (Categorical("c", 2, 3, ()),))
    searched = Population("binary", layout, [{"encoding": "embedding", "epochs": 30,
                                              "learning_rate": 0.05}], seed=0).export_member(0)
    (refit,) = refit_networks([searched], X, y, [30], seed=1)
    assert refit.inputs == layout and refit.structure.embeddings
    accuracy = (refit.predict(X)[0].argmax(-1).float() == y).float().mean()  # (B, 2) probabilities
    assert accuracy == 1.0  # the label is the code: only an embedding of it learns it


def test_refit_cost_counts_each_structure_once_per_epoch(rows):
    a = _member(1, hidden_layer_sizes=[8], epochs=9)
    a.epoch[0] = 3
    b = _member(2, hidden_layer_sizes=[8], epochs=9)
    b.epoch[0] = 5
    fixed = epoch_cost(a, 1000, members=0)
    member = epoch_cost(a, 1000, members=1) - fixed
    assert refit_cost([a, b], 1000) == pytest.approx(5 * fixed + 8 * member)
    assert epoch_cost(a, 1000, members=2) == pytest.approx(fixed + 2 * member)


def test_the_budget_holds_back_its_reserve():
    budget = Budget(None, 10.0, spent=0.0)
    assert not budget.out_of_time()
    budget.reserve = 10.0
    assert budget.out_of_time() and not budget.may_ask(0)
    assert Budget(None, 10.0, spent=0.0, start=budget.start - 11).out_of_time()


def test_tune_refits_the_kept_networks_on_training_and_validation_rows(wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    searched = tune(wine_csv, "cultivar", trials=12, population=6, space=WINE_SPACE,
                    out=tmp_path / "none", seed=0, refit="none")
    result = tune(wine_csv, "cultivar", trials=12, population=6, space=WINE_SPACE,
                  out=tmp_path / "tv", seed=0, refit="train+valid")
    prepared = prepare(frame, "cultivar", seed=0)
    info = result.model.info
    assert "trained_on" not in searched.model.info
    assert info["trained_on"] == "train+valid"
    assert info["refit_rows"] == len(prepared.train) + len(prepared.validation)
    # the same configurations (same trials), each for its searched network's best epochs
    assert [m["trial"] for m in info["members"]] == [
        m["trial"] for m in searched.model.info["members"]]
    assert info["refit_epochs"] == [int(n.epoch[0]) for n in searched.model.networks]
    assert [dict(n.hyperparameters[0], epochs=0) for n in result.model.networks] == [
        dict(n.hyperparameters[0], epochs=0) for n in searched.model.networks]
    # the honest test score is the returned (and saved) model's, on rows it never saw
    saved = load_model(tmp_path / "tv" / "model")
    np.testing.assert_allclose(saved.predict_proba(prepared.test),
                               result.model.predict_proba(prepared.test), rtol=1e-6)
    assert result.test_scores["log_loss"] == pytest.approx(
        saved.scores(prepared.test)["log_loss"])
    assert result.study.user_attrs["best"]["test_scores"] == result.test_scores


def test_refit_all_trains_on_every_row_after_the_test_score(wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    runs = {refit: tune(wine_csv, "cultivar", trials=8, population=4, space=WINE_SPACE,
                        out=tmp_path / refit.replace("+", "_"), seed=1, refit=refit)
            for refit in ("train+valid", "all")}
    info = runs["all"].model.info
    assert info["trained_on"] == "all" and info["refit_rows"] == len(frame)
    assert info["test_scores_of"] == "train+valid"
    assert load_model(tmp_path / "all" / "model").info["trained_on"] == "all"
    # the scores reported are the train+valid refit's (the same run with refit="train+valid")
    assert runs["all"].test_scores == pytest.approx(runs["train+valid"].test_scores)
    prepared = prepare(frame, "cultivar", seed=1)
    assert not np.allclose(runs["all"].model.predict_proba(prepared.test),
                           runs["train+valid"].model.predict_proba(prepared.test))


def test_a_resumed_run_does_not_take_refit_networks_as_searched_ones(wine_csv, tmp_path):
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=6, population=3, space=WINE_SPACE, out=out, seed=2,
         refit="train+valid")
    again = tune(wine_csv, "cultivar", trials=9, population=3, space=WINE_SPACE, out=out,
                 seed=2, refit="train+valid")
    assert len(again.study.trials) == 9
    assert again.model.info["trained_on"] == "train+valid"
    values = [m["value"] for m in again.model.info["members"]]
    trials = {t.number: t for t in again.study.trials}
    for m in again.model.info["members"]:  # validation scores of the searched networks
        assert m["value"] == pytest.approx(trials[m["trial"]].user_attrs["network"]["value"])
    assert values == sorted(values)


def test_the_command_line_takes_refit(wine_csv, tmp_path):
    out = tmp_path / "cli"
    result = invoke("tune", wine_csv, "--target", "cultivar", "--trials", 4, "--population",
                    4, "--refit", "none", "--out", out)
    assert result.exit_code == 0, result.output
    assert "trained_on" not in load_model(out / "model").info
    bad = invoke("tune", wine_csv, "--target", "cultivar", "--refit", "everything")
    assert bad.exit_code != 0 and "everything" in bad.output


def test_an_unknown_refit_is_one_clear_error(wine_csv, tmp_path):
    with pytest.raises(ValueError, match="unknown refit 'full'; choose one of none"):
        tune(wine_csv, "cultivar", trials=2, out=tmp_path / "x", refit="full")



def test_a_new_study_starts_from_the_estimators_network_on_both_schedules_and_a_realmlp_like_one(
        wine_csv, tmp_path):
    space = default_space()
    result = tune(wine_csv, "cultivar", trials=5, population=4, space=space,
                  out=tmp_path / "warm", seed=0, refit="none")
    first = sorted(result.study.trials, key=lambda t: t.number)[:4]
    rows = len(prepare(pd.read_csv(wine_csv), "cultivar", seed=0).train)  # tune's
    assert [t.params for t in first] == [w.params for w in warm_start(space, rows=rows)]
    made = [t.user_attrs["hyperparameters"] for t in first]
    estimators = CaviarClassifier().get_params()
    decayed = {**estimators, "lr_decay": "cosine", "learning_rate": 3e-3}  # RealMLP's schedule
    for config, hyperparameters in zip((estimators, REALMLP_LIKE, decayed, decayed), made):
        for name in ("hidden_layer_sizes", "optimizer", "learning_rate", "dropout",
                     "lr_decay", "batch_size", "batch_norm"):
            assert _plain(hyperparameters[name]) == _plain(config[name]), name
    # the estimators' network as CaviarClassifier() fits it on the tune's training rows:
    # PLR, and epochs by optimizer steps (wine's ~107 training rows are one step an epoch,
    # so the 50 default epochs become MIN_STEPS, past the space's epochs axis), on either
    # schedule; the RealMLP-like network embeds with PLR too, for its own 50 epochs
    expected = epochs_by_steps(DEFAULTS["epochs"], DEFAULTS["batch_size"], rows)
    assert expected == CaviarClassifier()._epochs(rows, DEFAULTS["batch_size"]) == MIN_STEPS
    assert [h["epochs"] for h in made] == [expected, REALMLP_LIKE["epochs"], expected, expected]
    assert [h["numeric_embedding"] for h in made] == ["plr"] * 4
    assert made[1]["plr_sigma"] == pytest.approx(REALMLP_LIKE["plr_sigma"])
    # the decayed network twice: its frequencies at RealMLP-TD's σ and at the inputs' scale
    assert [made[2]["plr_sigma"], made[3]["plr_sigma"]] == pytest.approx([0.1, 1.0])
    # the estimators' network as they fit it: TabM-mini, though the space draws no tabm_k
    # (the search's own trials are one network each)
    assert [h["tabm_k"] for h in made] == [TABM_K, 1, TABM_K, TABM_K]
    assert all(t.user_attrs["hyperparameters"]["tabm_k"] == 1 for t in result.study.trials[4:])
    # each trains alone and is never pruned (no other trial shares its population, so none
    # is compared with it); it ends at its last epoch or, as the estimators' early stopping
    # ends their fit, PATIENCE epochs after its best; the search's trials share the other
    # slots. On wine the estimators' network is past its best long before its 1,000 epochs.
    assert [t.state for t in first] == [optuna.trial.TrialState.COMPLETE] * 4
    for trial, hyperparameters in zip(first, made):
        curve = trial.intermediate_values  # epoch -> validation log-loss
        last, best = max(curve), min(curve, key=curve.get)
        assert last == hyperparameters["epochs"] or last - best == PATIENCE
        assert trial.value == pytest.approx(curve[best])
    assert max(first[0].intermediate_values) < made[0]["epochs"]
    # on RealMLP's schedule it trains to the end: the rate decays to 0 over all its epochs
    assert max(first[2].intermediate_values) == made[2]["epochs"]
    assert max(first[3].intermediate_values) == made[3]["epochs"]
    assert [t.user_attrs.get(keys.FULL_SCHEDULE, False) for t in first] == [False, False, True,
                                                                            True]
    # a resumed study does not start over from them
    again = tune(wine_csv, "cultivar", trials=6, population=2, space=space,
                 out=tmp_path / "warm", seed=0, refit="none")
    assert [t.params for t in again.study.trials[5:]] != [w.params for w in warm_start(space)]
    assert not any(t.user_attrs.get(keys.WARM) for t in again.study.trials[5:])


def test_warm_start_keeps_only_configurations_inside_the_space():
    assert warm_start(Space.from_dict(WINE_SPACE)) == []  # epochs 3..6, widths 8 and 16
    wide = default_space().replace({"width": choice([32, 64]), "l2": log_uniform(1e-5, 1.0)})
    # the defaults' 64 wide layers, on either schedule; not RealMLP's 256
    only, decayed, decayed_sigma1 = warm_start(wide)
    assert only.params["width"] == 64 and only.params["l2"] == 1e-5  # l2 = 0: the floor
    assert only.outside == {"tabm_k": TABM_K}  # the estimators' k: the space draws none
    assert decayed.params == only.params | {"learning_rate": 3e-3, "lr_decay": "cosine"}
    assert decayed_sigma1.params == decayed.params | {"plr_sigma": 1.0}
    fixed = default_space().replace({"optimizer": fixed_value("adamw")})
    (realmlp,) = warm_start(fixed)
    assert realmlp.params["width"] == 256 and "optimizer" not in realmlp.params
    assert realmlp.outside == {}
    # a searched scaling: each configuration under both
    searched = default_space().replace({"numeric": choice(["robust", "quantile"])})
    assert [w.params["numeric"] for w in warm_start(searched)] == ["robust", "quantile"] * 4
    # the estimators' network, under each scaling, is the one that may go first; on RealMLP's
    # schedule, the one that trains to the end of it
    assert [w.first for w in warm_start(searched)] == [True, True] + [False] * 6
    assert [w.full_schedule for w in warm_start(searched)] == [False] * 4 + [True] * 4
    # a dead worker's re-queued trial is asked as it was (Optuna copies its user attributes)
    for known in warm_start(searched):
        assert QueuedTrial.retried(known.params, known.attrs()) == known
    # networks reading both scalings: each configuration once, reading both (the table holds
    # the two blocks, but no network reads one alone)
    both = default_space().replace({"numeric": "robust+quantile"})
    assert both.scalings() == ("robust", "quantile")
    assert len(warm_start(both)) == len(warm_start(default_space())) == 4  # fixed: no param
    # a configuration's value of an axis the space does not name goes with its trial; one
    # the space fixes to another value leaves the configuration out
    estimators = DEFAULTS.replace(tabm_k=TABM_K)
    (tabm,) = warm_start(wide, [estimators])
    assert tabm.outside == {"tabm_k": TABM_K} and "tabm_k" not in tabm.params
    (drawn,) = warm_start(wide.replace({"tabm_k": choice([1, TABM_K])}), [estimators])
    assert drawn.params["tabm_k"] == TABM_K and drawn.outside == {}
    assert warm_start(wide.replace({"tabm_k": fixed_value(1)}), [estimators]) == []


def test_the_estimators_network_trains_the_epochs_the_estimators_give_it():
    """With the training rows known, the warm start's estimators' network trains as many
    epochs as ``CaviarRegressor()`` would on as many rows (at least MIN_STEPS optimizer
    steps), beyond the space's epochs axis if need be; the RealMLP-like network and a space
    that fixes the epochs are left alone."""
    space = default_space()
    big, _, big_decayed, _ = warm_start(space, rows=100_000)  # 782 steps an epoch: 50 epochs
    assert big.outside == big_decayed.outside == {"tabm_k": TABM_K}  # are plenty
    assert big == warm_start(space)[0]
    small, realmlp, small_decayed, _ = warm_start(space, rows=300)  # 3 steps an epoch: 334
    assert small.outside == {"tabm_k": TABM_K, "epochs": math.ceil(MIN_STEPS / 3)}
    assert small.params["epochs"] == space["epochs"].high  # the axis's top stands in
    assert small_decayed.outside == small.outside  # on RealMLP's schedule: the same epochs
    assert realmlp == warm_start(space)[1]
    fixed = space.replace({"epochs": fixed_value(20)})
    assert warm_start(fixed, rows=300) == warm_start(fixed)
    # the estimators' network carries PLR: the space draws numeric_embedding, so it is a param
    assert small.params["numeric_embedding"] == "plr"


def test_a_warm_start_trains_the_network_it_names_in_a_space_of_few_axes(wine_csv, tmp_path):
    """A space file that names only the learning rate: the RealMLP-like trial still trains
    RealMLP's layers, optimizer, dropout, decay and PLR (the values the space does not name
    go with the trial), not the vocabulary's defaults with RealMLP's learning rate."""
    space = Space({"learning_rate": log_uniform(1e-4, 1e-2)})
    estimators, realmlp, decayed, decayed_sigma1 = warm_start(space)
    assert estimators.outside == {"tabm_k": TABM_K, "numeric_embedding": "plr"}
    assert decayed.params == decayed_sigma1.params == {"learning_rate": pytest.approx(3e-3)}
    assert decayed.outside == estimators.outside | {"lr_decay": "cosine"}
    assert decayed_sigma1.outside == decayed.outside | {"plr_sigma": 1.0}
    assert realmlp.params == {"learning_rate": pytest.approx(2e-3)}
    assert realmlp.outside["optimizer"] == "adamw"
    result = tune(wine_csv, "cultivar", trials=2, population=2, space=space,
                  out=tmp_path / "few", seed=0, refit="none")
    made = [t.user_attrs["hyperparameters"] for t in result.study.trials]
    assert [t.user_attrs.get("warm_start") for t in result.study.trials] == [True, True]
    for name in ("hidden_layer_sizes", "optimizer", "weight_decay", "dropout", "lr_decay",
                 "batch_norm", "batch_size", "numeric_embedding"):
        assert _plain(made[0][name]) == _plain(ESTIMATOR_NETWORK[name]), name  # TabM-mini
        assert _plain(made[1][name]) == _plain(REALMLP_LIKE[name]), name
    assert made[1]["plr_sigma"] == pytest.approx(REALMLP_LIKE["plr_sigma"])
    assert [h["tabm_k"] for h in made] == [TABM_K, 1]


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def test_a_weighted_refit_weights_every_row(wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    frame["w"] = 1.0 + (np.arange(len(frame)) % 3)
    result = tune(frame, "cultivar", trials=4, population=4, space=WINE_SPACE, weight="w",
                  out=tmp_path / "weighted", seed=0, refit="train+valid")
    prepared = prepare(frame, "cultivar", weight="w", seed=0)
    X, y, w = _rows(prepared, False, "w", None)
    assert len(X) == len(y) == len(w) == result.model.info["refit_rows"]
    raw = pd.concat([prepared.train, prepared.validation])["w"].to_numpy()
    np.testing.assert_allclose(w.numpy(), raw / raw.mean(), rtol=1e-6)  # mean 1 over all
