"""The best configuration trained again from new initializations after the search (a deep
ensemble): ``ensemble.train_seeds`` and what ``tune`` does with the seeds."""

import inspect
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import invoke
from wine import WINE_SPACE

from caviar import load_model
from caviar.cli import commands
from caviar.data import prepare
from caviar.engine import Population
from caviar.files import jsonable
from caviar.metrics import ValidationScorer, get_metric
from caviar.search import Space
from caviar.search.budget import SEED_SHARE, Budget, epoch_cost
from caviar.search.ensemble import KeptNetwork, seed_epochs, train_seeds
from caviar.search.scheduler import Tuner
from caviar.search.tune import tune

CONFIG = {"hidden_layer_sizes": [8], "epochs": 12, "learning_rate": 0.03, "dropout": 0.1}


@pytest.fixture
def rows():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 5, generator=gen)
    y = ((X[:, 0] - X[:, 1] + 0.5 * torch.randn(300, generator=gen)) > 0).float()
    return X[:200], y[:200], X[200:], y[200:]


@pytest.fixture
def best(rows) -> KeptNetwork:
    """A searched network: trained for its epochs, kept at its best validation loss."""
    X, y, X_val, y_val = rows
    population = Population("binary", 5, [CONFIG], seed=1)
    while bool(population.trainable.any()):
        population.fit_epoch(X, y, X_val, y_val)
        population.remember_best(torch.tensor([population.history[0][-1]["val_loss"]]))
    network = population.export_member(0, at_best=True)
    outputs = network.predict(X_val)[0]
    return KeptNetwork(float(population.best_score[0]), 7, network, outputs)


def _scorer(y_val: torch.Tensor) -> ValidationScorer:
    return ValidationScorer(get_metric(None, "binary"), y_val.numpy(), "binary")


def test_seeds_are_new_draws_of_the_best_configuration_each_at_its_best_epoch(rows, best):
    X, y, X_val, y_val = rows
    scorer = _scorer(y_val)
    seen: list[list[float]] = []  # each epoch's validation log-loss of every seed

    def pace(population: Population, epoch) -> bool:
        epoch()
        seen.append(scorer.members(population.predict(X_val)))
        return True

    seeded = train_seeds(best, X, y, X_val, 3, seed=5, scorer=scorer, pace=pace)
    assert len(seeded) == 3 and len(seen) == seed_epochs(best.network)
    assert seed_epochs(best.network) == min(CONFIG["epochs"], 2 * int(best.network.epoch[0]))
    for k, (network, value) in enumerate(seeded):
        assert network.hyperparameters[0] == best.network.hyperparameters[0]
        curve = [epoch[k] for epoch in seen]
        # the network returned is the one of its lowest validation loss, at that epoch
        assert value == pytest.approx(min(curve))
        assert int(network.epoch[0]) == curve.index(min(curve)) + 1
        assert scorer(network.predict(X_val)[0]) == pytest.approx(value)
    first = [network.params["W0"] for network, _ in seeded]
    assert not torch.allclose(first[0], best.network.params["W0"])
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])


def test_seeds_stop_when_their_time_is_up(rows, best):
    X, y, X_val, y_val = rows
    allowed = iter([True, True])  # two epochs fit, then none

    def pace(population: Population, epoch) -> bool:
        if next(allowed, False):
            epoch()
            return True
        return False

    seeded = train_seeds(best, X, y, X_val, 4, seed=5, scorer=_scorer(y_val), pace=pace)
    assert len(seeded) == 4 and all(int(n.epoch[0]) <= 2 for n, _ in seeded)
    never = train_seeds(best, X, y, X_val, 4, seed=5, scorer=_scorer(y_val),
                        pace=lambda population, epoch: False)
    assert never == []  # no network that never trained


def test_tune_adds_seeds_of_the_best_trial_to_the_model(wine_csv, tmp_path):
    result = tune(wine_csv, "cultivar", trials=8, population=4, space=WINE_SPACE,
                  out=tmp_path / "seeds", seed=0, ensemble=2, seed_ensemble=3)
    members = result.model.info["members"]
    seeds = [m for m in members if "seed" in m]
    assert seeds, members  # new draws of the best configuration join the average
    assert len(result.model.networks) == len(members) <= 2 + 3
    (trial,) = {m["trial"] for m in seeds}  # all of one trial's configuration
    searched = result.study.trials[trial].user_attrs["hyperparameters"]
    for m, network in zip(members, result.model.networks):
        if "seed" in m:
            assert jsonable(dict(network.hyperparameters[0])) == searched
    saved = load_model(tmp_path / "seeds" / "model")  # the model file holds them
    assert saved.info["members"] == members
    assert len(saved.networks) == len(members)
    plain = tune(wine_csv, "cultivar", trials=8, population=4, space=WINE_SPACE,
                 out=tmp_path / "plain", seed=0, ensemble=2, seed_ensemble=0)
    assert not any("seed" in m for m in plain.model.info["members"])
    assert len(plain.model.networks) <= 2


def test_the_command_line_takes_seed_ensemble(wine_csv, tmp_path):
    # off unless asked for, in Python and on the command line alike
    default = inspect.signature(commands.tune).parameters["seed_ensemble"].default.default
    assert default == 0 == inspect.signature(tune).parameters["seed_ensemble"].default
    out = tmp_path / "cli"
    ran = invoke("tune", wine_csv, "--target", "cultivar", "--trials", 4, "--population", 4,
                 "--seed-ensemble", 2, "--out", out)
    assert ran.exit_code == 0, ran.output
    assert any("seed" in m for m in load_model(out / "model").info["members"])
    bad = invoke("tune", wine_csv, "--target", "cultivar", "--seed-ensemble", -1)
    assert bad.exit_code != 0 and "--seed-ensemble" in bad.output
    with pytest.raises(ValueError, match="seed_ensemble must be 0 or more"):
        tune(wine_csv, "cultivar", trials=2, out=tmp_path / "x", seed_ensemble=-1)
    pbt = invoke("tune", wine_csv, "--target", "cultivar", "--trials", 4, "--scheduler", "pbt",
                 "--seed-ensemble", 2, "--out", tmp_path / "pbt")
    assert pbt.exit_code != 0 and "seed ensemble needs the default scheduler" in pbt.output
    assert not (tmp_path / "pbt").exists()  # refused before anything was written


def _tuner_with_a_best_network(seconds: float) -> tuple[Tuner, Budget, Population, float]:
    """A tuner (speed 10, a time budget of ``seconds``, 4 seeds asked for) that has kept one
    trained network (256 × 2: an epoch's cost not all per-step overhead), just now."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(300, 4)), columns=[f"x{j}" for j in range(4)])
    table["y"] = table.sum(axis=1) + rng.normal(size=300)
    data = prepare(table, "y", seed=0)
    space = Space.from_dict({"width": {"value": 256}, "depth": {"value": 2},
                             "batch_size": {"value": 64}, "epochs": {"value": 6}})
    budget = Budget(None, seconds, 0.0)
    tuner = Tuner(optuna.create_study(), space, data, budget, 4, None, seed=0, seeds=4)
    tuner._measured, tuner._estimated, tuner._warm = 10.0, 1.0, True  # speed 10 from now
    population = Population("regression", data.inputs,
                            [{"hidden_layer_sizes": (256, 256), "batch_size": 64, "epochs": 6}])
    while bool(population.trainable.any()):
        population.fit_epoch(data.X_train, data.y_train, data.X_val, data.y_val)
        population.remember_best(torch.tensor([population.history[0][-1]["val_loss"]]))
    network = population.export_member(0, at_best=True)
    value = float(population.best_score[0])
    tuner.keep(network, 0, value)
    return tuner, budget, network, value


def _reserve_without_seeds(tuner: Tuner) -> float:
    seeds, tuner.seeds = tuner.seeds, 0
    reserve = tuner.end_reserve()
    tuner.seeds = seeds
    return reserve


def test_the_search_gives_its_end_to_the_seeds_only_once_it_stopped_improving():
    tuner, budget, network, _ = _tuner_with_a_best_network(100.0)
    rest = _reserve_without_seeds(tuner)
    seeds_s = seed_epochs(network) * epoch_cost(network, tuner._cost_rows, 4) * 10  # speed
    assert 0 < seeds_s < SEED_SHARE * 100.0
    # early in the run the seeds' time is held back
    assert tuner.end_reserve() == pytest.approx(rest + seeds_s)
    # near the end, with the best found long ago: still held back, and the seeds train
    budget.start = time.monotonic() - (100.0 - rest - seeds_s / 2)  # their time is due
    assert tuner.end_reserve() == pytest.approx(rest + seeds_s)
    added = tuner.add_seeds()
    assert added >= 1 and tuner.kept.seeds == added
    assert any(k.seed is not None for k in tuner.kept.networks)


def test_the_search_keeps_its_end_while_it_still_improves():
    tuner, budget, network, value = _tuner_with_a_best_network(100.0)
    rest = _reserve_without_seeds(tuner)
    seeds_s = seed_epochs(network) * epoch_cost(network, tuner._cost_rows, 4) * 10
    budget.start = time.monotonic() - (100.0 - rest - seeds_s / 2)  # their time is due
    tuner.keep(network.export_member(0), 1, value / 2)  # a better network, just now
    # the seeds are declined: the search's end is its own, and nothing trains after it
    assert tuner.end_reserve() == pytest.approx(rest)
    assert tuner.add_seeds() == 0 and tuner.kept.seeds == 0
    budget.start -= 30.0  # declined for good, even once the best is old
    assert tuner.end_reserve() == pytest.approx(_reserve_without_seeds(tuner))
