"""Search spaces: sampling scales, conditions, TOML, validation, grids (caviar.search.space)."""

import json
import math

import optuna
import pytest
from optuna.trial import FixedTrial

from caviar.hyperparams import resolve
from caviar.search import (
    Space,
    SpaceError,
    choice,
    default_space,
    ema_beta,
    integer,
    log_uniform,
    make_sampler,
    uniform,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def draws():
    """4000 random draws of a log-uniform and an ema_beta axis, with their Optuna params."""
    space = Space({"learning_rate": log_uniform(1e-4, 1.0), "optimizer": "momentum",
                   "momentum": ema_beta(0.9, 0.999, when={"optimizer": ["momentum"]})})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(4000):
        trial = study.ask()
        out.append((space.suggest(trial), trial.params))
    return out


def test_log_uniform_spends_equal_effort_per_decade(draws):
    decades = [0] * 4
    for params, _ in draws:
        lr = params["learning_rate"]
        assert 1e-4 <= lr <= 1.0
        decades[min(int(math.floor(math.log10(lr))) + 4, 3)] += 1
    for count in decades:  # 25% each; one standard deviation is 0.7%
        assert abs(count / len(draws) - 0.25) < 0.03, decades


def test_ema_beta_spends_equal_effort_per_decade_of_one_minus_beta(draws):
    betas = [params["momentum"] for params, _ in draws]
    assert all(0.9 <= b <= 0.999 for b in betas)
    low = sum(b < 0.99 for b in betas) / len(betas)  # [0.9, 0.99) and [0.99, 0.999]
    assert abs(low - 0.5) < 0.04, low
    # Optuna holds 1 − β under "1-momentum", log-uniform: the dashboard shows that axis
    params, optuna_params = draws[0]
    assert set(optuna_params) == {"learning_rate", "1-momentum"}
    assert optuna_params["1-momentum"] == pytest.approx(1 - params["momentum"])


def test_conditions_leave_inactive_parameters_out():
    space = default_space()
    adam = space.suggest(FixedTrial({
        "learning_rate": 1e-3, "optimizer": "adam", "1-beta1": 0.1, "1-beta2": 0.001,
        "lr_decay": "none", "l2": 0.1, "dropout": 0.2, "batch_norm": False, "depth": 2,
        "width": 64, "batch_size": 128, "epochs": 20, "numeric_embedding": "none"}))
    assert "momentum" not in adam and "decay_rate" not in adam and "bn_momentum" not in adam
    assert "weight_decay" not in adam and "plr_sigma" not in adam
    assert adam["beta1"] == pytest.approx(0.9) and adam["beta2"] == pytest.approx(0.999)
    assert adam["hidden_layer_sizes"] == (64, 64) and "depth" not in adam
    assert adam["l1"] == 0.0 and adam["numeric"] == "robust"  # fixed values are included
    resolve(adam)

    momentum = space.suggest(FixedTrial({
        "learning_rate": 1e-2, "optimizer": "momentum", "1-momentum": 0.05,
        "lr_decay": "inverse_time", "decay_rate": 0.1, "l2": 1.0, "dropout": 0.0,
        "batch_norm": True, "1-bn_momentum": 0.01, "depth": 1, "width": 32, "batch_size": 64,
        "epochs": 10, "numeric_embedding": "plr", "plr_sigma": 0.2}))
    assert momentum["numeric_embedding"] == "plr" and momentum["plr_sigma"] == 0.2
    assert momentum["momentum"] == pytest.approx(0.95)
    assert momentum["bn_momentum"] == pytest.approx(0.99)
    assert momentum["decay_rate"] == 0.1
    assert "beta1" not in momentum and "beta2" not in momentum
    assert resolve(momentum)["hidden_layer_sizes"] == (32,)


def test_default_space_suggestions_resolve_and_round_trip_from_trial_params():
    space = default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    shapes = set()
    for _ in range(200):
        trial = study.ask()
        params = space.suggest(trial)
        resolved = resolve(params)
        shapes.add((resolved["hidden_layer_sizes"], resolved["batch_size"]))
        assert space.hyperparams(trial.params) == params
    assert len(shapes) <= 3 * 4 * 3  # depth × width × batch size: few populations


def test_scales_and_sampling_space():
    space = default_space()
    assert space.scale("learning_rate") == "log"
    assert space.scale("dropout") == "linear"
    assert space.scale("beta1") == space.scale("1-beta1") == "ema_beta"
    assert space.scale("optimizer") == "categorical"
    assert space.scale("l1") == "fixed"
    assert space["1-beta2"].name == "beta2"
    assert space.to_r("learning_rate", 1e-3) == pytest.approx(-3)
    assert space.to_r("bn_momentum", 0.99) == pytest.approx(-2)
    assert space.from_r("bn_momentum", -3) == pytest.approx(0.999)
    assert space.from_r("depth", 1.6) == 2
    box = space.box()
    assert box["1-bn_momentum"] == pytest.approx((-3, -1))
    assert box["learning_rate"] == pytest.approx((-4, math.log10(3e-2)))
    assert "optimizer" not in box and "l1" not in box


def test_toml_round_trip(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("""
epochs = 20                 # shorthand for a fixed value

[learning_rate]
kind = "log_uniform"
low = 1e-4
high = 1e-1

[optimizer]
kind = "choice"
values = ["adam", "momentum"]

[momentum]
kind = "ema_beta"
low = 0.9
high = 0.999
when = { optimizer = ["momentum"] }

[depth]
kind = "int"
low = 1
high = 3

[batch_size]
value = 128
""")
    space = Space.from_toml(path)
    assert space["momentum"].when == {"optimizer": ("momentum",)}
    assert space.scale("momentum") == "ema_beta" and space["epochs"].kind == "fixed"
    stored = json.loads(json.dumps(space.to_dict()))
    assert Space.from_dict(stored) == space
    params = space.suggest(FixedTrial({"learning_rate": 0.01, "optimizer": "adam", "depth": 3}))
    assert params == {"epochs": 20, "learning_rate": 0.01, "optimizer": "adam",
                      "batch_size": 128, "hidden_layer_sizes": (64, 64, 64)}


def test_default_space_round_trips_through_json():
    space = default_space()
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    hls = Space({"hidden_layer_sizes": choice([[64], [64, 64]])})
    assert Space.from_dict(json.loads(json.dumps(hls.to_dict()))) == hls
    params = hls.suggest(FixedTrial({"hidden_layer_sizes": "[64, 64]"}))
    assert params == {"hidden_layer_sizes": (64, 64)}


def test_replace_swaps_axes():
    space = default_space().replace({"hidden_layer_sizes": [32, 32], "epochs": 5})
    assert "depth" not in space and "width" not in space
    assert space["epochs"].kind == "fixed" and space["epochs"].value == 5
    back = space.replace({"depth": integer(1, 2)})
    assert "hidden_layer_sizes" not in back
    adam = default_space().replace({"optimizer": "adam"})  # momentum stays, inactive
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = adam.suggest(study.ask())
        assert "momentum" not in params and "beta1" in params


@pytest.mark.parametrize("spec, words", [
    ({"learning_rate": {"kind": "log_uniform", "low": 0.1, "high": 1e-4}},
     ["learning_rate", "above", "swap"]),
    ({"l2": {"kind": "log_uniform", "low": 0.0, "high": 1.0}}, ["l2", "low > 0"]),
    ({"beta2": {"kind": "ema_beta", "low": 0.9, "high": 1.0}}, ["beta2", "(0, 1)", "0.999"]),
    ({"momentum": {"kind": "ema_beta", "low": 0.0, "high": 0.9}}, ["momentum", "(0, 1)"]),
    ({"learning_rate": {"kind": "log-uniform", "low": 1e-4, "high": 1e-1}},
     ["learning_rate", "unknown kind", "did you mean log_uniform"]),
    ({"learnig_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1}},
     ["learnig_rate", "did you mean learning_rate"]),
    ({"dropout": {"kind": "uniform", "lo": 0.0, "high": 0.5}}, ["dropout", "did you mean low"]),
    ({"dropout": {"kind": "uniform", "high": 0.5}}, ["dropout", "low is missing"]),
    ({"dropout": {"low": 0.0, "high": 0.5}}, ["dropout", "missing kind"]),
    ({"dropout": {"kind": "uniform", "low": "0", "high": 0.5}}, ["dropout", "number"]),
    ({"dropout": {"kind": "uniform", "low": 0.0, "high": 1.0}}, ["dropout", "[0, 1)"]),
    ({"epochs": {"kind": "uniform", "low": 10, "high": 60}}, ["epochs", '"int"']),
    ({"epochs": {"kind": "int", "low": 10, "high": 60.5}}, ["epochs", "integers"]),
    ({"optimizer": {"kind": "choice", "values": ["adam", "adma"]}},
     ["optimizer", "did you mean adam"]),
    ({"optimizer": {"kind": "uniform", "low": 0, "high": 1}}, ["optimizer", "choice"]),
    ({"width": {"kind": "choice", "values": []}}, ["width", "at least one"]),
    ({"width": {"kind": "choice", "values": [0, 64]}}, ["width", "positive integer"]),
    ({"optimizer": {"kind": "choice", "values": ["adam", "momentum"]},
      "momentum": {"kind": "ema_beta", "low": 0.9, "high": 0.99,
                   "when": {"optimizer": ["momentun"]}}},
     ["momentum", "can never hold", "did you mean momentum"]),
    ({"momentum": {"kind": "ema_beta", "low": 0.9, "high": 0.99, "when": {"optimiser": "sgd"}}},
     ["momentum", "did you mean optimizer"]),
    ({"hidden_layer_sizes": [64], "depth": 2}, ["hidden_layer_sizes", "not both"]),
])
def test_validation_errors_are_one_line_and_name_the_parameter(spec, words):
    with pytest.raises(SpaceError) as info:
        Space.from_dict(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_condition_cycle_is_an_error():
    with pytest.raises(SpaceError, match="cycle"):
        Space({"batch_norm": choice([True, False], when={"dropout": [0.0]}),
               "dropout": choice([0.0, 0.1], when={"batch_norm": [True]})})


def test_python_constructors_validate_too():
    with pytest.raises(SpaceError, match="^learning_rate: .*above"):
        Space({"learning_rate": log_uniform(1e-1, 1e-4)})
    with pytest.raises(SpaceError, match="^bn_momentum: "):
        Space({"bn_momentum": ema_beta(0.9, 1.5)})


def test_bad_toml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[learning_rate]\nkind = "log_uniform"\nlow 1e-4\n')
    with pytest.raises(SpaceError) as info:
        Space.from_toml(path)
    message = str(info.value)
    assert "broken.toml" in message and "line 3" in message and "\n" not in message
    with pytest.raises(SpaceError, match="no such space file"):
        Space.from_toml(tmp_path / "missing.toml")
    path.write_text("[dropout]\nkind = \"uniform\"\nlow = 0.6\nhigh = 0.5\n")
    with pytest.raises(SpaceError, match=r"broken\.toml: dropout: low 0\.6 is above"):
        Space.from_toml(path)


def test_grid_spacing():
    space = Space({"learning_rate": log_uniform(1e-4, 1e-2), "beta2": ema_beta(0.9, 0.999),
                   "dropout": uniform(0.0, 0.5), "depth": integer(1, 3),
                   "optimizer": choice(["adam", "adamw"]), "epochs": 10})
    grid = space.grid(3)
    assert grid["learning_rate"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert grid["1-beta2"] == pytest.approx([1e-3, 1e-2, 1e-1])  # β = 0.999, 0.99, 0.9
    assert grid["dropout"] == pytest.approx([0.0, 0.25, 0.5])
    assert grid["depth"] == [1, 2, 3] and grid["optimizer"] == ["adam", "adamw"]
    assert "epochs" not in grid


def test_grid_sampler_covers_the_grid():
    space = Space({"learning_rate": log_uniform(1e-4, 1e-2), "momentum": ema_beta(0.9, 0.99),
                   "width": choice([32, 64])})
    study = optuna.create_study(sampler=make_sampler("grid", space, seed=0, points_per_axis=3))
    sampler = study.sampler
    assert sampler.n_points == 18
    seen = set()
    while not sampler.all_started(study):  # ask-and-tell, as the scheduler does
        trial = study.ask()
        params = space.suggest(trial)
        seen.add((round(math.log10(params["learning_rate"]), 6),
                  round(math.log10(1 - params["momentum"]), 6),
                  params["hidden_layer_sizes"]))
        study.tell(trial, 0.0)
    assert sampler.is_exhausted(study) and len(study.trials) == 18
    assert seen == {(a, b, w) for a in (-4, -3, -2) for b in (-2, -1.5, -1)
                    for w in ((32, 32), (64, 64))}


def test_grid_that_is_too_large_is_refused():
    with pytest.raises(SpaceError, match="grid points"):
        make_sampler("grid", default_space(), seed=0)
