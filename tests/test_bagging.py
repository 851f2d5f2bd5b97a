"""Bagging over folds (``tune(refit="bag")``): each kept configuration trained again as K
networks on the training and validation rows, each holding out one fold, which it never
learns from and on which it stops."""

import time

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import invoke
from wine import WINE_SPACE

from caviar import CaviarModel, load_model
from caviar.data import prepare
from caviar.engine import Population
from caviar.metrics import ValidationScorer, get_metric
from caviar.search import Space
from caviar.search.bagging import (
    BAG_FOLDS,
    NOT_BAGGED,
    assign_folds,
    bag_model,
    bag_networks,
    fold_weights,
)
from caviar.search.budget import (
    BAG_FACTOR,
    BAG_SHARE,
    Budget,
    bag_declined,
    epoch_cost,
    prefix_costs,
    refit_cost,
)
from caviar.search.scheduler import Tuner
from caviar.search.tune import _rows, tune


def summed(rows: int = 300, slope: float = 1.0, noise: float = 1.0):
    """A prepared regression table: four standard normal columns, y their sum × ``slope``
    plus normal noise of scale ``noise``."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(rows, 4)), columns=[f"x{j}" for j in range(4)])
    table["y"] = slope * table.sum(axis=1) + rng.normal(scale=noise, size=rows)
    return prepare(table, "y", seed=0), table


def test_folds_are_stratified_and_keep_groups_whole():
    y = torch.tensor([0] * 40 + [1] * 10 + [2] * 5)
    fold = assign_folds(y, "multiclass", 5, seed=0)
    for k in range(5):  # every class in every fold, in its share
        held = y[torch.as_tensor(fold == k)]
        assert torch.bincount(held, minlength=3).tolist() == [8, 2, 1]
    groups = np.repeat(np.arange(11), 5)
    fold = assign_folds(y, "multiclass", 5, seed=0, groups=groups)
    for g in range(11):
        assert len(set(fold[groups == g])) == 1
    with pytest.raises(ValueError, match="needs 5 groups or more"):
        assign_folds(y, "multiclass", 5, seed=0, groups=np.arange(55) % 3)


def test_fold_weights_leave_the_fold_out_and_keep_the_loss_scale():
    fold = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    weight = torch.arange(1.0, 11.0)
    w = fold_weights(fold, 3, weight)
    for k in range(3):
        assert (w[k][torch.as_tensor(fold == k)] == 0).all()
        kept = torch.as_tensor(fold != k)
        assert float(w[k].mean()) == pytest.approx(1.0)  # J = (1/B)·Σ w·L keeps its scale
        ratio = w[k][kept] / weight[kept]  # in proportion to the rows' own weights
        torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))


def test_a_held_out_row_never_moves_the_network_that_holds_it_out():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=g)
    y = (X[:, 0] > 0).float()
    fold = np.arange(64) % 2
    w = fold_weights(fold, 2, None)
    twisted = y.clone()
    twisted[torch.as_tensor(fold == 0)] = 1 - twisted[torch.as_tensor(fold == 0)]
    trained = []
    for labels in (y, twisted):  # fold 0's labels flipped: member 0 never learns them
        pop = Population("binary", 4, [{"hidden_layer_sizes": (6,), "batch_norm": True,
                                        "dropout": 0.1, "batch_size": 16}] * 2, seed=3)
        for _ in range(3):
            pop.train_epoch(X, labels, w)
        trained.append(pop)
    for name, p in trained[0].params.items():
        torch.testing.assert_close(p[0], trained[1].params[name][0])
    assert not torch.allclose(trained[0].params["W0"][1], trained[1].params["W0"][1])


def test_tune_bags_the_kept_configurations_and_averages_those_the_out_of_fold_score_chooses(
        wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    result = tune(wine_csv, "cultivar", trials=8, population=4, space=WINE_SPACE,
                  out=tmp_path / "bag", seed=0, refit="bag")
    info, model = result.model.info, result.model
    prepared = prepare(frame, "cultivar", seed=0)
    assert info["trained_on"] == "bag" and info["folds"] == BAG_FOLDS
    assert info["bag_rows"] == len(prepared.train) + len(prepared.validation)
    # every trial was a candidate (8 trials: fewer than the 4 × 5 kept), each bagged whole,
    # and the model averages the 5 fold networks of each configuration it chose
    board = pd.read_csv(tmp_path / "bag" / "leaderboard.csv")
    assert info["bag_candidates"] == len(board) == 8
    chosen = [m["trial"] for m in info["bag_members"]]
    assert 1 <= len(chosen) <= 5 and len(set(chosen)) == len(chosen)
    assert len(model.networks) == BAG_FOLDS * len(chosen)
    params = {int(t.number): t.user_attrs["hyperparameters"]
              for t in result.study.get_trials(deepcopy=False)}
    assert [n.hyperparameters[0]["learning_rate"] for n in model.networks] == [
        params[t]["learning_rate"] for t in chosen for _ in range(BAG_FOLDS)]
    # each member's out-of-fold score, and the average's, are the study's metric on every
    # row, each row predicted by the networks that held it out; the best of them leads
    X, y, _ = _rows(prepared, False, None, None)
    fold = assign_folds(y, "multiclass", BAG_FOLDS, seed=0)
    scorer = ValidationScorer(get_metric(None, "multiclass"), y.numpy(), "multiclass")
    oofs = []
    for i, member in enumerate(info["bag_members"]):
        oof = torch.zeros(len(y), 3)
        for k in range(BAG_FOLDS):
            rows = torch.as_tensor(fold == k)
            oof[rows] = model.networks[i * BAG_FOLDS + k].predict(X[rows])[0]
        assert member["bag_value"] == pytest.approx(scorer(oof), rel=1e-5)
        oofs.append(oof)
    assert info["bag_value"] == pytest.approx(scorer(torch.stack(oofs).mean(0)), rel=1e-5)
    assert info["bag_members"][0]["bag_value"] == min(m["bag_value"]
                                                      for m in info["bag_members"])
    # the saved model is the bag, and the test score is its own, on rows no network saw
    saved = load_model(tmp_path / "bag" / "model")
    assert len(saved.networks) == len(model.networks)
    assert result.test_scores["log_loss"] == pytest.approx(
        saved.scores(prepared.test)["log_loss"])


def test_the_bag_chooses_by_out_of_fold_score_not_by_a_lucky_validation_score():
    # two configurations: one that learns, and one that cannot (a step too small to move)
    # whose searched validation score was the better, as a lucky draw on a few rows can be;
    # scored on every row out of fold, the one that learns leads and the other stays out
    data, table = summed(slope=2.0, noise=0.5)
    X, y, _ = _rows(data, False, None, None)
    learns = Population("regression", data.inputs, [
        {"hidden_layer_sizes": (16,), "epochs": 40, "learning_rate": 0.01}])
    stuck = Population("regression", data.inputs, [
        {"hidden_layer_sizes": (16,), "epochs": 40, "learning_rate": 1e-7}])
    for network in (learns, stuck):
        network.epoch[0] = 20
    model = CaviarModel(data.preprocessor, [stuck, learns],
                        {"members": [{"trial": 7, "value": 0.1}, {"trial": 3, "value": 0.2}]})
    bagged = bag_model(model, X, y, get_metric(None, "regression"), seed=0,
                       target_std=data.target_std, target_mean=data.target_mean)
    members = bagged.info["bag_members"]
    assert [m["trial"] for m in members] == [3]
    assert members[0]["value"] == 0.2  # its searched score, kept beside the out-of-fold one
    assert len(bagged.networks) == BAG_FOLDS
    assert bagged.scores(data.test)["rmse"] < 0.5 * float(table["y"].std())


def test_a_bag_keeps_a_regressions_scores_in_the_targets_units(tmp_path):
    g = np.random.default_rng(0)
    frame = pd.DataFrame({"a": g.normal(size=300), "b": g.normal(size=300)})
    frame["y"] = 1000 + 300 * frame["a"] - 200 * frame["b"] + g.normal(scale=30, size=300)
    prepared = prepare(frame, "y", seed=0)
    X, y, _ = _rows(prepared, False, None, None)
    searched = tune(frame, "y", trials=4, population=4, out=tmp_path / "r", seed=0)
    bagged = bag_model(searched.model, X, y, get_metric(None, "regression"), seed=0,
                       target_std=prepared.target_std, target_mean=prepared.target_mean)
    # an RMSE in the target's units, near the test rows' (not a standardized ~0.1)
    test_rmse = bagged.scores(prepared.test)["rmse"]
    assert 0.5 * test_rmse < bagged.info["bag_value"] < 2 * test_rmse
    assert test_rmse < 0.5 * float(frame["y"].std())


def test_a_time_split_refuses_a_bag_and_the_command_line_takes_it(wine_csv, tmp_path):
    with pytest.raises(ValueError, match="time split forbids"):
        tune(wine_csv, "cultivar", trials=2, out=tmp_path / "t", refit="bag",
             split="time:alcohol")
    assert not (tmp_path / "t").exists()
    few = pd.read_csv(wine_csv).assign(site=lambda f: np.arange(len(f)) % 4)
    with pytest.raises(ValueError, match="hold 3 groups|hold 2 groups"):
        tune(few, "cultivar", trials=2, out=tmp_path / "g", refit="bag", group="site")
    assert not (tmp_path / "g").exists()  # refused before the search, not after it
    out = tmp_path / "cli"
    result = invoke("tune", wine_csv, "--target", "cultivar", "--trials", 4, "--population",
                    4, "--refit", "bag", "--out", out)
    assert result.exit_code == 0, result.output
    saved = load_model(out / "model")
    info = saved.info
    assert info["trained_on"] == "bag"
    assert f"({len(saved.networks)} networks averaged)" in " ".join(result.output.split())
    assert (f"bagged over {BAG_FOLDS} folds of the training and validation rows "
            f"({len(info['bag_members'])} of {info['bag_candidates']} configurations, chosen "
            f"by out-of-fold score; the average's {info['bag_value']:.4g})"
            ) in " ".join(result.output.split())
    assert len(saved.networks) == BAG_FOLDS * len(info["bag_members"])
    bad = invoke("tune", wine_csv, "--target", "cultivar", "--refit", "bag", "--split",
                 "time:alcohol", "--out", tmp_path / "t2")
    assert bad.exit_code != 0 and "time split forbids" in bad.output
    assert "Traceback" not in bad.output


def test_a_bag_with_no_time_left_keeps_the_searched_model_and_says_so(wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    searched = tune(wine_csv, "cultivar", trials=4, population=4, space=WINE_SPACE,
                    out=tmp_path / "s", seed=0).model
    prepared = prepare(frame, "cultivar", seed=0)
    X, y, _ = _rows(prepared, False, None, None)
    metric = get_metric(None, "multiclass")
    none_left = bag_model(searched, X, y, metric, seconds=-1.0)
    assert none_left.info["bag"] == NOT_BAGGED
    assert none_left.networks == searched.networks
    started = time.monotonic()
    some = bag_model(searched, X, y, metric, seconds=0.5)  # a few epochs, then it stops
    assert time.monotonic() - started < 5.0
    # a bag of what those epochs made, or (on a loaded machine) the searched model, saying so
    assert some.info.get("bag_seconds", 0.0) < 5.0
    assert "bag_seconds" in some.info or some.info["bag"] == NOT_BAGGED


def test_a_configuration_the_time_cut_short_is_left_out_of_the_bag_whole():
    # a fold network stopped before the epochs its configuration needed in the search is a
    # worse network than the searched one: its configuration is not bagged at all
    data, _ = summed(rows=200)
    X, y, _ = _rows(data, False, None, None)
    cheap = Population("regression", data.inputs, [{"hidden_layer_sizes": (8,), "epochs": 6}])
    cheap.epoch[0] = 3  # its best epoch in the search: the bag trains 6
    costly = Population("regression", data.inputs,
                        [{"hidden_layer_sizes": (2048, 2048), "epochs": 400}])
    costly.epoch[0] = 200  # needed 200 epochs in the search; 3 s give it a few
    fold = assign_folds(y, "regression", BAG_FOLDS, seed=0)
    scorers = [ValidationScorer(get_metric(None, "regression"), y[fold == k].numpy(),
                                "regression") for k in range(BAG_FOLDS)]
    out = bag_networks([cheap, costly], X, y, fold, BAG_FOLDS, scorers,
                       deadline=time.monotonic() + 3.0)
    assert all(isinstance(n, Population) for n in out[0])
    assert out[1] == [None] * BAG_FOLDS  # cut short: left out, every fold of it


def test_population_based_training_bags_its_kept_model_too(wine_csv, tmp_path):
    result = tune(wine_csv, "cultivar", trials=8, population=4, space=WINE_SPACE,
                  out=tmp_path / "pbt", seed=0, scheduler="pbt", refit="bag")
    assert result.model.info["trained_on"] == "bag"
    assert len(result.model.networks) % BAG_FOLDS == 0


def test_the_bag_goes_ahead_as_the_search_last_estimated_it():
    # the tuner's verdict is the one that shaped the search's end (the time it held back),
    # not one made again once the budget's stopped trials have joined the candidates
    data, _ = summed()
    space = Space.from_dict({"width": {"value": 64}, "epochs": {"value": 4}})
    rows = len(data.train) + len(data.validation)
    budget = Budget(None, 100.0, 0.0)
    tuner = Tuner(optuna.create_study(), space, data, budget, 4, None, seed=0,
                  refit_rows=rows, bag_folds=BAG_FOLDS)
    tuner._measured, tuner._estimated, tuner._warm = 1.0, 1.0, True  # speed 1
    cheap = Population("regression", data.inputs, [{"hidden_layer_sizes": (8,), "epochs": 4}])
    cheap.fit(data.X_train, data.y_train)
    tuner.keep(cheap.export_member(0), 0, 1.0)
    held = tuner.refit_seconds()
    assert held == pytest.approx(BAG_FACTOR * refit_cost([cheap], rows, BAG_FOLDS))
    assert 0 < held < BAG_SHARE * 100.0 and tuner.bag_fits()
    # a costly network joins the model at the end: the bag still goes ahead (its time was
    # held back; it trains what fits)
    costly = Population("regression", data.inputs,
                        [{"hidden_layer_sizes": (4096, 4096), "epochs": 400}])
    costly.epoch[0] = 400
    tuner.keep(costly.export_member(0), 1, 0.5)
    assert bag_declined(BAG_FACTOR * refit_cost([costly], rows, BAG_FOLDS), 100.0)
    assert tuner.bag_fits()
    # estimated again during a search, it is declined, and no time is held back for it
    assert tuner.refit_seconds() == 0.0 and not tuner.bag_fits()


def test_a_structures_refit_cost_pays_its_overhead_once_and_each_member_its_epochs():
    # prefix_costs, against the cost model written out: per structure, the per-step
    # overhead for its most epochs, and each member's own epochs × the folds
    data = prepare(pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0) % 7}), "y",
                   seed=0)
    a, b, c = (Population("regression", data.inputs, [{"hidden_layer_sizes": h,
                                                         "epochs": 100}]) for h in
               [(8,), (8,), (64, 64)])
    for network, best in zip((a, b, c), (10, 30, 5)):
        network.epoch[0] = best  # a bag trains twice the best epoch (seed_epochs)
    fixed = [epoch_cost(n, 500, members=0) for n in (a, c)]
    member = [epoch_cost(n, 500, 1) - f for n, f in zip((a, c), fixed)]
    expected = [20 * fixed[0] + 20 * member[0] * 5,
                60 * fixed[0] + (20 + 60) * member[0] * 5]
    expected.append(expected[1] + 10 * fixed[1] + 10 * member[1] * 5)
    assert prefix_costs([a, b, c], 500, BAG_FOLDS) == pytest.approx(expected)
    assert refit_cost([a, b, c], 500, BAG_FOLDS) == pytest.approx(expected[-1])


def test_the_bag_takes_more_kept_configurations_only_as_its_share_of_the_budget_affords():
    data, _ = summed()
    space = Space.from_dict({"width": {"value": 64}, "epochs": {"value": 4}})
    rows = len(data.train) + len(data.validation)
    tuner = Tuner(optuna.create_study(), space, data, Budget(None, 100.0, 0.0), 4, None,
                  seed=0, refit_rows=rows, bag_folds=BAG_FOLDS, ensemble=2)
    tuner._measured, tuner._estimated, tuner._warm = 1.0, 1.0, True  # speed 1

    def network(hidden: tuple[int, ...], best: int) -> Population:
        made = Population("regression", data.inputs, [{"hidden_layer_sizes": hidden,
                                                       "epochs": 2 * best}])
        made.epoch[0] = best
        return made.export_member(0)

    # four cheap configurations, then one too costly for a quarter of 100 s, then a cheap one
    for trial, hidden in enumerate([(8,), (8,), (16,), (8,), (4096, 4096), (8,)]):
        tuner.keep(network(hidden, 400 if hidden[0] == 4096 else 4), trial, 1.0 + trial / 10)
    chosen = [k.trial for k in tuner.kept.chosen()[0]]
    candidates = tuner.bag_candidates()
    trials = [k.trial for k in candidates]
    # the searched ensemble first, then the others best first, up to the costly one
    assert trials[:len(chosen)] == chosen
    assert sorted(trials) == [0, 1, 2, 3]
    assert tuner.refit_seconds() == pytest.approx(
        BAG_FACTOR * refit_cost([k.network for k in candidates], rows, BAG_FOLDS))
    assert tuner.refit_seconds() <= BAG_SHARE * 100.0 and tuner.bag_fits()
