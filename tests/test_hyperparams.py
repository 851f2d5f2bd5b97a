"""The vocabulary: one table, validated once, read-only configs, no torch to import it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caviar import hyperparams
from caviar.hyperparams import (
    DEFAULTS,
    HYPERPARAMETERS,
    SPACE_ONLY,
    SPACE_STRUCTURAL,
    STRUCTURAL,
    Config,
    help_text,
    resolve,
    structure_key,
)
from caviar.io import jsonable


def test_every_default_is_valid_and_structural_names_come_from_the_table():
    for name, row in {**HYPERPARAMETERS, **SPACE_ONLY}.items():
        assert row.kind in hyperparams.KINDS, name
        assert row.check(name, row.default) == row.default, name
    assert STRUCTURAL == ("hidden_layer_sizes", "activation", "batch_norm", "batch_size",
                          "encoding", "embedding_dim", "numeric", "numeric_embedding",
                          "plr_frequencies", "plr_dim", "tabm_k", "front_scale", "solver")
    assert set(SPACE_STRUCTURAL) == {"depth", "width", *STRUCTURAL}
    assert dict(DEFAULTS) == {name: row.default for name, row in HYPERPARAMETERS.items()}


def test_resolve_fills_defaults_and_normalizes():
    config = resolve({"hidden_layer_sizes": [32.0, 16], "batch_size": 64.0, "decay_rate": None})
    assert isinstance(config, Config)
    assert config["hidden_layer_sizes"] == (32, 16) and config["batch_size"] == 64
    assert type(config["batch_size"]) is int
    assert config["optimizer"] == DEFAULTS["optimizer"]
    assert resolve({"hidden_layer_sizes": []})["hidden_layer_sizes"] == ()
    assert structure_key(config) == ((32, 16), "relu", True, 64, "onehot", None, None, "none",
                                     16, 16, 1, False, "gradient")


@pytest.mark.parametrize("overrides, words", [
    ({"learnig_rate": 1e-3}, ["unknown hyperparameter 'learnig_rate'", "learning_rate"]),
    ({"learning_rate": 0}, ["learning_rate", "> 0"]),
    ({"learning_rate": "fast"}, ["learning_rate", "a number"]),
    ({"learning_rate": float("nan")}, ["learning_rate"]),
    ({"momentum": 1.0}, ["momentum", "[0, 1)"]),
    ({"dropout": -0.1}, ["dropout", "[0, 1)"]),
    ({"l2": -1}, ["l2", ">= 0"]),
    ({"epochs": 2.5}, ["epochs", "positive integer"]),
    ({"batch_size": 0}, ["batch_size", "positive integer"]),
    ({"batch_size": True}, ["batch_size"]),
    ({"optimizer": "adma"}, ["optimizer", "one of sgd", "did you mean adam"]),
    ({"batch_norm": "yes"}, ["batch_norm", "true or false"]),
    ({"hidden_layer_sizes": 64}, ["hidden_layer_sizes", "positive widths"]),
    ({"hidden_layer_sizes": [64, 0]}, ["hidden_layer_sizes", "positive widths"]),
    ({"hidden_layer_sizes": None}, ["hidden_layer_sizes", "positive widths"]),
    ({"decay_rate": -1}, ["decay_rate", ">= 0 or null"]),
])
def test_invalid_values_fail_with_one_line(overrides, words):
    with pytest.raises(ValueError) as info:
        resolve(overrides)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_config_is_a_read_only_mapping_that_serializes():
    config = resolve({"learning_rate": 3e-4})
    with pytest.raises(TypeError):
        config["learning_rate"] = 1.0  # type: ignore[index]
    assert dict(config)["learning_rate"] == 3e-4 and {**config}["epochs"] == 50
    assert config == {**DEFAULTS, "learning_rate": 3e-4}
    assert json.loads(json.dumps(jsonable(config)))["hidden_layer_sizes"] == [64, 64]
    assert resolve(config) is config  # validated once: a Config is trusted as it is
    changed = config.replace(dropout=0.2)
    assert changed["dropout"] == 0.2 and config["dropout"] == 0.0
    with pytest.raises(ValueError, match="dropout"):
        config.replace(dropout=2.0)
    with pytest.raises(ValueError, match="did you mean dropout"):
        config.replace(dropuot=0.2)


def test_a_config_is_not_validated_again_inside(monkeypatch):
    from caviar.engine import Population

    configs = [resolve({"hidden_layer_sizes": (4,), "learning_rate": lr}) for lr in (1e-3, 1e-2)]
    calls = []
    original = hyperparams.Hyperparameter.check
    monkeypatch.setattr(hyperparams.Hyperparameter, "check",
                        lambda self, name, value: calls.append(name) or original(self, name, value))
    pop = Population("regression", 3, configs)
    pop.add_members(configs[:1])
    pop.replace_members([0], configs[1:])
    pop.export_member(2)
    assert calls == []
    pop.set_hyperparameters(1, learning_rate=0.5)  # a change is new input: only it is checked
    assert calls == ["learning_rate"]


def test_help_text_lists_every_name_with_its_rule_and_default():
    text = help_text()
    for name, row in HYPERPARAMETERS.items():
        assert f"{name} ({row.rule}; default " in text, name
    assert "\n" not in text
    assert text.index("learning_rate") < text.index("Structural") < text.index("batch_size")


def test_the_vocabulary_and_the_data_package_import_without_torch():
    code = ("import sys, caviar.hyperparams, caviar.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    src = str(Path(hyperparams.__file__).parents[1])  # this caviar, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == "[]"
