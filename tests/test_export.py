"""ONNX export: onnxruntime on the exported graph predicts what caviar predicts, for every
task, activation, batch norm on and off, dropout, and models averaging several networks;
errors are one line that names the fix.

Each comparison records its largest difference (``record_property("max_abs_diff", ...)``),
so ``pytest tests/test_export.py --junitxml=FILE`` lists them.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from commandline import assert_one_error_line, invoke

from caviar.engine import Population
from caviar.export import (
    BN_EPSILON,
    ExportError,
    MissingExtraError,
    export_model,
    export_onnx,
    sidecar_path,
)
from caviar.model import CaviarModel, fit_model

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
PROBA_TOL = 1e-5  # float32 probabilities; measured differences are ~1e-7
VALUE_TOL = 1e-5  # regression, in target standard deviations


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Numbers with missing values, a one-hot and a target-encoded categorical, and three
    targets: three classes, two (booleans), and a value around a million."""
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame({
        "x1": rng.normal(size=n), "x2": rng.normal(2.0, 3.0, size=n),
        "color": rng.choice(["red", "green", "blue"], n),
        "city": rng.choice([f"city{i}" for i in range(20)], n),
    })
    df.loc[::9, "x1"] = np.nan
    signal = df["x2"] / 3 + (df["color"] == "red") - df["x1"].fillna(0)
    df["grade"] = np.where(signal > 0.8, "high", np.where(signal < -0.3, "low", "mid"))
    df["late"] = signal + rng.normal(0, 0.5, n) > 0.3
    df["price"] = 1e6 + 250.0 * signal + rng.normal(0, 20.0, n)
    return df


TARGETS = {"grade": ["late", "price"], "late": ["grade", "price"], "price": ["grade", "late"]}


def fit(table: pd.DataFrame, target: str, **hp) -> CaviarModel:
    hp = {"epochs": 3, "hidden_layer_sizes": [8, 6], "batch_size": 32, "learning_rate": 0.01,
          **hp}
    return fit_model(table, target, hp, drop=TARGETS[target])


def onnx_outputs(path, X: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": X})


def compare(model: CaviarModel, table: pd.DataFrame, tmp_path, record_property=None) -> float:
    """Export, run with onnxruntime and compare with caviar; returns the largest difference
    (probabilities, or regression values in target standard deviations)."""
    path = export_onnx(model, tmp_path / "model.onnx")
    X = model.preprocessor.transform(table)
    outputs = onnx_outputs(path, X)
    if model.task == "regression":
        (prediction,) = outputs
        assert prediction.dtype == np.float64 and prediction.shape == (len(table),)
        diff = float(np.abs(prediction - model.predict(table)).max())
        scaled = diff / model.preprocessor.target_std_
        assert scaled < VALUE_TOL, (diff, scaled)
        if record_property is not None:
            record_property("max_abs_diff_in_target_std", scaled)
    else:
        probabilities, label_index = outputs
        expected = model.predict_proba(table)
        assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
        diff = float(np.abs(probabilities - expected).max())
        assert diff < PROBA_TOL, diff
        assert label_index.dtype == np.int64
        np.testing.assert_array_equal(np.asarray(model.classes)[label_index],
                                      model.predict(table))
    if record_property is not None:
        record_property("max_abs_diff", diff)
    return diff


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_multiclass_each_activation(table, tmp_path, record_property, activation, batch_norm):
    model = fit(table, "grade", activation=activation, batch_norm=batch_norm)
    compare(model, table, tmp_path, record_property)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_binary(table, tmp_path, record_property, activation, batch_norm):
    model = fit(table, "late", activation=activation, batch_norm=batch_norm)
    assert model.task == "binary"
    compare(model, table, tmp_path, record_property)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_regression_in_target_units(table, tmp_path, record_property, activation, batch_norm):
    """A target around 10⁶ with a standard deviation of ~300: float32 would round the
    prediction to 0.06, far coarser than the network's precision; the graph decodes in
    float64 as caviar does."""
    model = fit(table, "price", activation=activation, batch_norm=batch_norm)
    assert model.task == "regression"
    compare(model, table, tmp_path, record_property)


def test_regression_clamped_as_caviar_clamps(table, tmp_path):
    """Rows far outside the training inputs: the graph clamps to the training target's range
    where caviar does, and to its exact bounds."""
    model = fit(table, "price", epochs=20)
    far = table.assign(x2=table["x2"] * 50, x1=table["x1"] * 50)
    lowest, highest = table["price"].min(), table["price"].max()
    predicted = model.predict(far)
    assert (predicted == lowest).any() or (predicted == highest).any()
    compare(model, far, tmp_path)


@pytest.mark.parametrize("target", ["grade", "late"])
def test_dropout_has_no_effect_at_test_time(table, tmp_path, record_property, target):
    model = fit(table, target, dropout=0.5, hidden_layer_sizes=[16])
    compare(model, table, tmp_path, record_property)


@pytest.mark.parametrize("target", list(TARGETS))
def test_model_averaging_several_networks(table, tmp_path, record_property, target):
    """Networks of different shapes, activations and batch norm, averaged as caviar does."""
    models = [fit(table, target, activation="relu", batch_norm=True),
              fit(table, target, activation="tanh", batch_norm=False,
                  hidden_layer_sizes=[5]),
              fit(table, target, activation="gelu", hidden_layer_sizes=[4, 4, 4], dropout=0.2)]
    model = CaviarModel(models[0].preprocessor, [m.network for m in models])
    compare(model, table, tmp_path, record_property)
    # the average differs from each network alone: the graph really holds all three
    single = CaviarModel(models[0].preprocessor, models[0].network)
    assert not np.allclose(single.predict(table[:20]) if model.task == "regression"
                           else single.predict_proba(table[:20]),
                           model.predict(table[:20]) if model.task == "regression"
                           else model.predict_proba(table[:20]))


def test_batch_norm_epsilon(table, tmp_path, record_property):
    """Running variances of ε, with γ rescaled so that the network computes the same function:
    there a graph with another ε (or none) would be far off."""
    model = fit(table, "grade", batch_norm=True, hidden_layer_sizes=[6, 6])
    tensors = {k: t.clone() for k, t in model.network.state_tensors().items()}
    for layer in (0, 1):
        var = tensors[f"buffer.running_var{layer}"]
        # γ/√(σ² + ε) unchanged when σ² becomes ε and γ becomes γ·√(2ε/(σ² + ε))
        tensors[f"param.gamma{layer}"] *= torch.sqrt(2 * BN_EPSILON / (var + BN_EPSILON))
        tensors[f"buffer.running_var{layer}"] = torch.full_like(var, BN_EPSILON)
    tiny = CaviarModel(model.preprocessor,
                       Population.from_state(model.network.state_meta(), tensors))
    np.testing.assert_allclose(tiny.predict_proba(table), model.predict_proba(table), atol=1e-4)
    compare(tiny, table, tmp_path, record_property)


def test_single_row_and_model_directory(table, tmp_path):
    model = fit(table, "grade")
    model.save(tmp_path / "model")
    path = export_onnx(tmp_path / "model", tmp_path / "single.onnx")  # a directory loads
    X = model.preprocessor.transform(table[:1])
    probabilities, _ = onnx_outputs(path, X)
    np.testing.assert_allclose(probabilities, model.predict_proba(table[:1]), atol=PROBA_TOL)


# ----------------------------------------------------------------------------- the files


def test_graph_and_sidecar(table, tmp_path):
    model = fit(table, "grade")
    path = export_onnx(model, tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import] == [17]
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["probabilities", "label_index"]

    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "model.onnx.json"
    assert sidecar["task"] == "multiclass" and sidecar["target"] == "grade"
    assert sidecar["classes"] == ["high", "low", "mid"] == model.classes
    assert sidecar["input"]["features"] == model.preprocessor.feature_names_out_
    assert len(sidecar["input"]["features"]) == model.network.structure.n_inputs
    assert sidecar["columns"] == ["x1", "x2", "color", "city"]
    assert sidecar["networks"] == 1 and sidecar["onnx_file"] == "model.onnx"
    # the same description travels inside the graph
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["caviar"]) == sidecar


def test_regression_outputs_one_named_value(table, tmp_path):
    path = export_onnx(fit(table, "price"), tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["prediction"]
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["classes"] is None and list(sidecar["outputs"]) == ["prediction"]


def test_export_replaces_an_existing_file(table, tmp_path):
    model = fit(table, "late")
    path = tmp_path / "model.onnx"
    path.write_text("old")
    export_onnx(model, path)
    onnx.checker.check_model(onnx.load(str(path)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ----------------------------------------------------------------------------- errors


def test_unknown_format(table, tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'pmml'; the formats: onnx"):
        export_model(fit(table, "late"), tmp_path / "model.pmml", "pmml")


def test_missing_directory(table, tmp_path):
    with pytest.raises(ExportError, match="does not exist; create it first"):
        export_onnx(fit(table, "late"), tmp_path / "nowhere" / "model.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(fit(table, "late"), tmp_path)


def test_missing_onnx_package(table, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'caviar-ml\[onnx\]'") as info:
        export_onnx(fit(table, "late"), tmp_path / "model.onnx")
    assert isinstance(info.value, ImportError)  # also what library users would catch
    assert not (tmp_path / "model.onnx").exists()


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def model_dir(table, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "model"
    fit(table, "grade").save(path)
    return path


def test_cli_export(model_dir, table, tmp_path):
    out = tmp_path / "deploy" / "grade.onnx"
    out.parent.mkdir()
    result = invoke("export", model_dir, "--format", "onnx", "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} and {out}.json" in result.stdout
    from caviar.model import load_model

    model = load_model(model_dir)
    probabilities, _ = onnx_outputs(out, model.preprocessor.transform(table))
    np.testing.assert_allclose(probabilities, model.predict_proba(table), atol=PROBA_TOL)


def test_cli_export_help():
    result = invoke("export", "--help")
    assert result.exit_code == 0
    for text in ("--format", "--output", "preprocessor.transform", "caviar-ml[onnx]"):
        assert text in result.stdout, text


def test_cli_export_errors(model_dir, tmp_path, monkeypatch):
    assert_one_error_line(invoke("export", model_dir, "--format", "pmml"),
                          "unknown export format 'pmml'", "onnx")
    assert_one_error_line(invoke("export", model_dir, "-o", tmp_path / "no" / "m.onnx"),
                          "does not exist", "create it first")
    assert_one_error_line(invoke("export", tmp_path / "missing", "-o", tmp_path / "m.onnx"),
                          "not a caviar model directory")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert_one_error_line(invoke("export", model_dir, "-o", tmp_path / "m.onnx"),
                          "needs the onnx package", "pip install 'caviar-ml[onnx]'")
