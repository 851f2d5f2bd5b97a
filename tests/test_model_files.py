"""Model directories (``caviar.io``): exact round trips, no pickle, one-line errors naming the
bad file, atomic replacement, and what predicting on the wrong columns does."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

import caviar
from caviar.data import DataError
from caviar.datasets import load_dataset
from caviar.io import ModelFileError
from caviar.model import fit_model

FILES = {"model.json", "network.safetensors", "preprocessor.safetensors"}
QUICK = {"epochs": 3, "hidden_layer_sizes": [16], "learning_rate": 1e-2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wage():
    return load_dataset("wage")


@pytest.fixture(scope="module")
def wage_model(wage):
    return fit_model(wage.iloc[:2400], "wage", QUICK, drop=["logwage"])


@pytest.fixture(scope="module")
def default_model():
    return fit_model(load_dataset("default").iloc[:8000], "default", QUICK)


@pytest.fixture(scope="module")
def saved(wage_model, tmp_path_factory):
    return wage_model.save(tmp_path_factory.mktemp("models") / "wage")


def test_regressor_round_trip_is_exact(wage, wage_model, saved):
    test = wage.iloc[2400:]
    loaded = caviar.load_model(saved)
    before, after = wage_model.predict_frame(test), loaded.predict_frame(test)
    assert list(after.columns) == ["prediction"] and len(after) == len(test)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert loaded.task == "regression" and loaded.target == "wage"
    assert loaded.hyperparameters == wage_model.hyperparameters

    # unseen categories and missing values at prediction time
    odd = test.head(4).copy()
    odd["education"] = ["6. Doctorate", np.nan, "1. < HS Grad", "6. Doctorate"]
    odd["race"] = np.nan
    odd.loc[odd.index[0], "age"] = np.nan
    frame = loaded.predict_frame(odd)
    assert np.isfinite(frame["prediction"]).all()
    pd.testing.assert_frame_equal(wage_model.predict_frame(odd), frame, check_exact=True)


def test_classifier_round_trip_is_exact(default_model, tmp_path):
    test = load_dataset("default").iloc[8000:]
    loaded = caviar.load_model(default_model.save(tmp_path / "default"))
    before, after = default_model.predict_frame(test), loaded.predict_frame(test)
    assert list(after.columns) == ["prediction", "proba_No", "proba_Yes"]
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert set(after["prediction"]) <= {"No", "Yes"}
    np.testing.assert_allclose(after[["proba_No", "proba_Yes"]].sum(axis=1), 1.0, atol=1e-6)
    assert loaded.classes == ["No", "Yes"]

    unseen = test.head(3).assign(student=["Maybe", np.nan, "Yes"])
    pd.testing.assert_frame_equal(default_model.predict_frame(unseen),
                                  loaded.predict_frame(unseen), check_exact=True)


def test_directory_holds_json_and_safetensors_only_and_loads_without_pickle(saved, monkeypatch):
    assert {p.name for p in saved.iterdir()} == FILES
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format"] == "caviar-model"
    assert meta["target"] == "wage" and meta["task"] == "regression"

    def refuse(*args, **kwargs):
        raise AssertionError("load_model must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert caviar.load_model(saved).task == "regression"


def test_model_of_several_networks_averages_them_and_round_trips(wage, tmp_path):
    train, test = wage.iloc[:2400], wage.iloc[2400:]
    one = fit_model(train, "wage", QUICK, drop=["logwage"], seed=1)
    two = fit_model(train, "wage", {**QUICK, "hidden_layer_sizes": [8, 8]}, drop=["logwage"],
                    seed=2)
    both = caviar.CaviarModel(one.preprocessor, [one.network, two.network], {"trial": 3})
    # the same preprocessor: the average of the two networks' predictions
    mean = (one.predict(test) + two.predict(test)) / 2
    np.testing.assert_allclose(both.predict(test), mean, rtol=1e-5)
    # each network's own outputs, in the model's order: the first is the best network's
    X = one.preprocessor.transform(test)
    each = both.network_outputs(X)
    assert each.shape == (2, len(test))  # a regressor: one standardized value a row
    np.testing.assert_array_equal(each[0], one.outputs(X))
    np.testing.assert_array_equal(each[1], two.outputs(X))
    np.testing.assert_allclose(both.outputs(X), each.mean(0), rtol=1e-6)
    saved = both.save(tmp_path / "pair")
    assert {p.name for p in saved.iterdir()} == FILES | {"network-1.safetensors"}
    loaded = caviar.load_model(saved)
    assert len(loaded.networks) == 2 and loaded.hyperparameters == one.hyperparameters
    pd.testing.assert_frame_equal(both.predict_frame(test), loaded.predict_frame(test),
                                  check_exact=True)
    (saved / "network-1.safetensors").unlink()
    with pytest.raises(ModelFileError, match="network-1.safetensors is missing"):
        caviar.load_model(saved)


def test_format_version_1_files_still_load(wage, saved, tmp_path):
    old = _copy(saved, tmp_path)
    meta = json.loads((old / "model.json").read_text())
    meta["format_version"], meta["network"] = 1, meta.pop("networks")[0]
    (old / "model.json").write_text(json.dumps(meta))
    pd.testing.assert_frame_equal(caviar.load_model(old).predict_frame(wage.iloc[2400:]),
                                  caviar.load_model(saved).predict_frame(wage.iloc[2400:]),
                                  check_exact=True)


def test_networks_of_different_tasks_cannot_be_averaged(wage_model, default_model):
    with pytest.raises(ValueError, match="share the task"):
        caviar.CaviarModel(wage_model.preprocessor, [wage_model.network,
                                                    default_model.network])


def _copy(saved, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    for name in FILES:
        (target / name).write_bytes((saved / name).read_bytes())
    return target


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_meta(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


DAMAGE = {
    "missing directory": (lambda d: d.rename(d.with_name("elsewhere")), "model"),
    "no model.json": (lambda d: (d / "model.json").unlink(), "model.json"),
    "garbage model.json": (
        lambda d: (d / "model.json").write_bytes(b"\x00\xff\xfe garbage \x89PNG\r\n"),
        "model.json"),
    "truncated model.json": (lambda d: _truncate(d / "model.json"), "model.json"),
    "foreign json": (lambda d: (d / "model.json").write_text('{"hello": 1}'), "model.json"),
    "json list": (lambda d: (d / "model.json").write_text("[1, 2]"), "model.json"),
    "model.json is a folder": (
        lambda d: ((d / "model.json").unlink(), (d / "model.json").mkdir()), "model.json"),
    "bad format_version": (lambda d: _set_meta(d / "model.json", format_version="1"),
                           "model.json"),
    "newer format_version": (lambda d: _set_meta(d / "model.json", format_version=99),
                             "model.json"),
    "truncated network": (lambda d: _truncate(d / "network.safetensors"),
                          "network.safetensors"),
    "empty network": (lambda d: (d / "network.safetensors").write_bytes(b""),
                      "network.safetensors"),
    "truncated preprocessor": (lambda d: _truncate(d / "preprocessor.safetensors"),
                               "preprocessor.safetensors"),
    "missing network": (lambda d: (d / "network.safetensors").unlink(),
                        "network.safetensors"),
    "missing preprocessor": (lambda d: (d / "preprocessor.safetensors").unlink(),
                             "preprocessor.safetensors"),
    "inconsistent meta": (lambda d: _set_meta(d / "model.json", networks=[{"nothing": 1}]),
                          "model"),
    "no networks": (lambda d: _set_meta(d / "model.json", networks=[]), "model.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_directory_gives_one_line_error_naming_the_file(saved, tmp_path, damage):
    directory = _copy(saved, tmp_path)
    harm, name = DAMAGE[damage]
    harm(directory)
    with pytest.raises(ModelFileError) as info:
        caviar.load_model(directory)
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    assert str(directory) in message


def test_a_file_is_not_a_model_directory(tmp_path):
    file = tmp_path / "model.json"
    file.write_text("{}")
    with pytest.raises(ModelFileError, match="model.json"):
        caviar.load_model(file)


def test_saving_over_a_model_replaces_it_atomically(wage, wage_model, default_model,
                                                     tmp_path, monkeypatch):
    path = tmp_path / "model"
    default_model.save(path)
    default_rows = load_dataset("default").head(20)
    expected = default_model.predict_frame(default_rows)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(safetensors.torch, "save_file", broken)
        with pytest.raises(OSError, match="disk full"):
            wage_model.save(path)
    # the old model is intact and nothing half-written is left next to it
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    pd.testing.assert_frame_equal(caviar.load_model(path).predict_frame(default_rows), expected,
                                  check_exact=True)

    # a successful save replaces it
    wage_model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert {p.name for p in path.iterdir()} == FILES
    rows = wage.tail(10)
    pd.testing.assert_frame_equal(caviar.load_model(path).predict_frame(rows),
                                  wage_model.predict_frame(rows), check_exact=True)


def test_saving_refuses_to_replace_what_is_not_a_model(wage_model, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    file = tmp_path / "data.csv"
    file.write_text("a,b\n1,2\n")
    for path in (folder, file):
        with pytest.raises(ModelFileError, match="not a caviar model directory"):
            wage_model.save(path)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert file.read_text() == "a,b\n1,2\n"
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert {p.name for p in wage_model.save(tmp_path / "empty").iterdir()} == FILES


def test_missing_columns_raise_and_extra_columns_warn(wage, wage_model):
    rows = wage.tail(5)
    with pytest.raises(DataError) as info:
        wage_model.predict_frame(rows.drop(columns=["age", "education"]))
    message = str(info.value)
    assert "'age'" in message and "'education'" in message and "\n" not in message

    with pytest.warns(UserWarning, match="shoe_size"):
        frame = wage_model.predict_frame(rows.assign(shoe_size=42))
    pd.testing.assert_frame_equal(frame, wage_model.predict_frame(rows), check_exact=True)
