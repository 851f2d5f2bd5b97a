"""Export a model to serve it outside caviar: ONNX (``caviar export MODEL --format onnx``).

The graph holds the networks; the preprocessing stays in caviar.

    input    ``features``: float32 ``(rows, n_features)``, the PREPROCESSED matrix,
             ``model.preprocessor.transform(frame)``, columns in the sidecar's
             ``input.features`` order
    outputs  a classifier: ``probabilities`` float32 ``(rows, classes)``, columns in the
             sidecar's ``classes`` order, and ``label_index`` int64 ``(rows,)``, the argmax
             (the label is ``classes[label_index]``);
             a regressor: ``prediction`` float64 ``(rows,)``, in the target's units (the
             target's mean and standard deviation are folded into the graph, and decoded in
             float64 as caviar decodes them, so a large target mean loses no precision;
             clamped to the training target's range, as caviar predicts)

These are what ``CaviarModel.predict_proba`` and ``predict`` return: the graph averages
all of the model's networks (test-time forward: running batch-norm statistics, no dropout).

Why the preprocessing stays in caviar: the numeric part (median imputation, missing-value
indicators, standard scaling) would be a few cheap nodes, but one-hot and target encoding
take strings, which many ONNX runtimes handle poorly or not at all, and splitting the table
into a numeric input and string inputs would make a second contract beside the first. One
contract, exactly caviar's, is easier to get right: preprocess with caviar, run the graph
anywhere. The sidecar ``<file>.json`` (also stored in the graph's metadata under
``caviar``) lists the input features in order, the original columns, the classes and the
outputs.

Example:
    >>> import onnxruntime as ort                                        # doctest: +SKIP
    >>> from caviar import export_onnx, load_model                       # doctest: +SKIP
    >>> model = load_model("runs/tune/model")                            # doctest: +SKIP
    >>> export_onnx(model, "model.onnx")                                 # doctest: +SKIP
    >>> session = ort.InferenceSession("model.onnx")                     # doctest: +SKIP
    >>> X = model.preprocessor.transform(frame)                          # doctest: +SKIP
    >>> probabilities, label_index = session.run(None, {"features": X})  # doctest: +SKIP

Needs the ``onnx`` extra: ``pip install 'caviar-ml[onnx]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import __version__
from .engine.layers import LEAKY_SLOPE
from .engine.network import BN_EPSILON
from .files import jsonable, write_json_atomically

INT64 = 7  # onnx.TensorProto.INT64 (onnx is imported only when exporting)

if TYPE_CHECKING:
    from .engine import Population
    from .model import CaviarModel

FORMATS = ("onnx",)
SIDECAR_FORMAT = "caviar-onnx"
INPUT = "features"
# opset 17 and IR version 8: what ONNX Runtime has run since 1.12 (2022) and most other
# runtimes support; nothing here needs a newer operator (GELU is written with Erf)
OPSET = 17
IR_VERSION = 8


class ExportError(ValueError):
    """A model that cannot be exported where or as asked."""


class MissingExtraError(ExportError, ImportError):
    """An optional package the export needs is not installed."""


def sidecar_path(path: str | Path) -> Path:
    """Where the JSON sidecar of an exported ``path`` goes: ``model.onnx`` → ``model.onnx.json``
    (not ``model.json``, the name of caviar's own model file)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_model(model: CaviarModel | str | Path, path: str | Path,
                 format: str = "onnx") -> Path:
    """Export ``model`` (a ``CaviarModel`` or a model directory, loaded after the checks) in
    ``format`` (one of ``FORMATS``); returns the written file."""
    if format != "onnx":
        raise ExportError(f"unknown export format {format!r}; the formats: "
                          f"{', '.join(FORMATS)}")
    return export_onnx(model, path)


def export_onnx(model: CaviarModel | str | Path, path: str | Path) -> Path:
    """Write ``model`` (a ``CaviarModel`` or a model directory) as an ONNX graph at ``path``
    and its sidecar at ``sidecar_path(path)``; returns ``path``. See the module docstring for
    the graph's input and outputs."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a directory; name the ONNX file to write, e.g. "
                          f"{path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise ExportError(f"the directory {path.parent} does not exist; create it first or "
                          "write the ONNX file elsewhere")
    onnx = _import_onnx()
    model = _as_model(model)
    sidecar = _sidecar(model, path)
    graph = _graph(onnx, model)
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="caviar", producer_version=__version__)
    onnx.helper.set_model_props(proto, {"caviar": json.dumps(sidecar)})
    onnx.checker.check_model(proto)
    # a temporary sibling renamed into place: a reader never sees half a file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    write_json_atomically(sidecar_path(path), sidecar)
    return path


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise MissingExtraError("ONNX export needs the onnx package, which is not installed: "
                                "pip install 'caviar-ml[onnx]' (onnx, and onnxruntime to run "
                                "the graph)") from None
    return onnx


def _as_model(model: CaviarModel | str | Path) -> CaviarModel:
    if isinstance(model, (str, Path)):
        from .model import load_model

        return load_model(model)
    return model


def _sidecar(model: CaviarModel, path: Path) -> dict[str, Any]:
    pre = model.preprocessor
    if model.task == "regression":
        outputs = {"prediction": "float64 (rows,): the prediction in the target's units"}
    else:
        outputs = {"probabilities": "float32 (rows, classes): class probabilities, columns in "
                                    "the order of classes",
                   "label_index": "int64 (rows,): the predicted class, an index into classes"}
    return jsonable({
        "format": SIDECAR_FORMAT, "format_version": 1, "caviar_version": __version__,
        "onnx_file": path.name, "task": model.task, "target": model.target,
        "classes": model.classes, "networks": len(model.networks),
        "input": {"name": INPUT, "dtype": "float32", "features": list(pre.feature_names_out_)},
        "outputs": outputs,
        "columns": list(pre.roles_.features),
        "preprocessing": "not in the graph: the input is caviar's preprocessed matrix, "
                         "caviar.load_model(MODEL_DIR).preprocessor.transform(table), "
                         "float32, from a table with the original columns",
    }, finite=True)


class _Graph:
    """Nodes and initializers of one ONNX graph, with unique names."""

    def __init__(self, onnx: Any):
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant, shared by every node that uses the same value."""
        name = f"scalar_{value!r}"
        if name not in {t.name for t in self.initializers}:
            self.constant(name, np.array(value, dtype=np.float32))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        self.count += 1
        out = output or f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _graph(onnx: Any, model: CaviarModel) -> Any:
    g = _Graph(onnx)
    outputs = [_network(g, network, f"net{i}") for i, network in enumerate(model.networks)]
    # the mean of the networks' probabilities (or standardized values), as CaviarModel does
    mean = g.op("Mean", *outputs)
    TensorProto = onnx.TensorProto
    rows = "rows"
    if model.task == "regression":
        pre = model.preprocessor
        value = g.op("Cast", mean, to=TensorProto.DOUBLE)
        value = g.op("Mul", value, g.constant("target_std", np.array(pre.target_std_)))
        value = g.op("Add", value, g.constant("target_mean", np.array(pre.target_mean_)))
        bounds = pre.target_range_
        if bounds is not None:  # clamped to the training target's range, as caviar predicts
            value = g.op("Max", value, g.constant("target_min", np.array(bounds[0])))
            value = g.op("Min", value, g.constant("target_max", np.array(bounds[1])))
        g.op("Reshape", value, g.constant("flat", np.array([-1], dtype=np.int64)),
             output="prediction")
        graph_outputs = [onnx.helper.make_tensor_value_info("prediction", TensorProto.DOUBLE,
                                                            [rows])]
    else:
        g.op("Identity", mean, output="probabilities")
        g.op("ArgMax", mean, output="label_index", axis=1, keepdims=0)
        graph_outputs = [
            onnx.helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                               [rows, len(model.classes)]),
            onnx.helper.make_tensor_value_info("label_index", TensorProto.INT64, [rows])]
    graph_input = onnx.helper.make_tensor_value_info(
        INPUT, TensorProto.FLOAT, [rows, model.network.structure.n_inputs])
    return onnx.helper.make_graph(g.nodes, "caviar", [graph_input], graph_outputs,
                                  initializer=g.initializers)


def _network(g: _Graph, network: Population, prefix: str) -> str:
    """One network's test-time forward (running batch-norm statistics, no dropout: inverted
    dropout needs no scaling at test time), from its saved tensors (``state_tensors``
    names); returns the name of its probabilities ``(rows, classes)`` or standardized values
    ``(rows, 1)``."""
    s = network.structure
    tensors = {k: v.detach().cpu()[0]  # drop the member axis
               for k, v in network.state_tensors().items()
               if k.startswith(("param.", "buffer."))}

    def constant(name: str, value: torch.Tensor) -> str:
        return g.constant(f"{prefix}_{name}", value.to(torch.float32).numpy())

    def dense(a: str, layer: int) -> str:
        W = tensors[f"param.W{layer}"]
        if layer == 0 and s.front_scale:  # the front scale folded in: W̃₀ = s·W₀
            W = tensors["param.front_scale"] * W
        z = g.op("MatMul", a, constant(f"W{layer}", W))
        if f"param.b{layer}" in tensors:  # none where batch norm follows (β replaces it)
            z = g.op("Add", z, constant(f"b{layer}", tensors[f"param.b{layer}"]))
        return z

    a = _inputs(g, s, tensors, prefix)
    if s.tabm_k > 1:  # TabM-mini: (k, rows, F), sub-network i's input scaled by its r_i
        a = g.op("Mul", g.op("Unsqueeze", a, g.constant(f"{prefix}_axis0",
                                                         np.array([0], dtype=np.int64))),
                 constant("tabm_r", tensors["param.tabm_r"].unsqueeze(1)))
    for layer in range(s.n_layers - 1):
        z = dense(a, layer)
        if s.batch_norm:
            # (z − μ_run)·(1/√(σ²_run + ε))·γ + β, in the engine's order of operations, with
            # 1/√(σ²_run + ε) computed by torch.rsqrt as the engine computes it
            inv_std = torch.rsqrt(tensors[f"buffer.running_var{layer}"] + BN_EPSILON)
            z = g.op("Sub", z, constant(f"running_mean{layer}",
                                        tensors[f"buffer.running_mean{layer}"]))
            z = g.op("Mul", z, constant(f"inv_std{layer}", inv_std))
            z = g.op("Mul", z, constant(f"gamma{layer}", tensors[f"param.gamma{layer}"]))
            z = g.op("Add", z, constant(f"beta{layer}", tensors[f"param.beta{layer}"]))
        a = _activation(g, z, s.activation)
    last = s.n_layers - 1
    if s.tabm_k == 1:
        return _output(g, dense(a, last), s.task)
    # each sub-network's output layer (k, h, C), its prediction, and their mean
    k, (_, C) = s.tabm_k, tensors[f"param.W{last}"].shape
    z = g.op("MatMul", a, constant(f"W{last}", tensors[f"param.W{last}"].view(k, -1, C)))
    z = g.op("Add", z, constant(f"b{last}", tensors[f"param.b{last}"].unsqueeze(1)))
    return g.op("ReduceMean", _output(g, z, s.task), axes=[0], keepdims=0)  # opset 17: axes


def _inputs(g: _Graph, s: Any, tensors: dict[str, torch.Tensor], prefix: str) -> str:
    """The first layer's input from the preprocessed matrix: its dense columns, then each
    embedded categorical's table rows for its codes (a Gather), then the numeric columns'
    periodic embeddings, side by side."""
    if s.dense_columns is None and not s.embeddings and not s.plr_columns:
        return INPUT
    parts = []
    if s.n_dense:
        columns = range(s.n_inputs) if s.dense_columns is None else s.dense_columns
        index = g.constant(f"{prefix}_dense_columns", np.array(list(columns), dtype=np.int64))
        parts.append(g.op("Gather", INPUT, index, axis=1))
    for j, (column, _, _) in enumerate(s.embeddings):
        index = g.constant(f"{prefix}_code_column{j}", np.array(column, dtype=np.int64))
        codes = g.op("Cast", g.op("Gather", INPUT, index, axis=1), to=INT64)  # (rows,)
        table = g.constant(f"{prefix}_E{j}", tensors[f"param.E{j}"].to(torch.float32).numpy())
        parts.append(g.op("Gather", table, codes, axis=0))  # (rows, k)
    if s.plr_columns:
        parts.append(_plr(g, s, tensors, prefix))
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)


def _plr(g: _Graph, s: Any, tensors: dict[str, torch.Tensor], prefix: str) -> str:
    """v = [sin θ, cos θ] with θ = 2π·c_j·x_j for each numeric column j, then (PLR) h =
    ReLU(v·W_j + b_j), as ``engine.layers.plr_forward``: ``(rows, n·m)``, column j's m values
    together; without PLR's linear layer (``numeric_embedding="periodic"``) v itself."""
    n, k, m = len(s.plr_columns), s.plr_frequencies, s.plr_dim

    def constant(name: str, value: torch.Tensor | np.ndarray) -> str:
        array = value.to(torch.float32).numpy() if isinstance(value, torch.Tensor) else value
        return g.constant(f"{prefix}_plr_{name}", array)

    columns = constant("columns", np.array(s.plr_columns, dtype=np.int64))
    x = g.op("Gather", INPUT, columns, axis=1)  # (rows, n)
    x = g.op("Unsqueeze", x, constant("axis", np.array([2], dtype=np.int64)))  # (rows, n, 1)
    theta = g.op("Mul", g.op("Mul", x, g.scalar(2 * float(np.pi))),
                 constant("C", tensors["param.plr_C"]))  # (rows, n, k)
    v = g.op("Concat", g.op("Sin", theta), g.op("Cos", theta), axis=2)  # (rows, n, 2k)
    if s.plr_linear:
        u = g.op("MatMul", g.op("Transpose", v, perm=[1, 0, 2]),
                 constant("W", tensors["param.plr_W"].reshape(n, 2 * k, m)))  # (n, rows, m)
        h = g.op("Relu", g.op("Add", u, constant("b", tensors["param.plr_b"].unsqueeze(1))))
        v = g.op("Transpose", h, perm=[1, 0, 2])  # (rows, n, m)
    return g.op("Reshape", v, constant("shape", np.array([0, n * m], dtype=np.int64)))


def _activation(g: _Graph, z: str, name: str) -> str:
    if name == "relu":
        return g.op("Relu", z)
    if name == "leaky_relu":
        return g.op("LeakyRelu", z, alpha=LEAKY_SLOPE)
    if name == "tanh":
        return g.op("Tanh", z)
    if name == "sigmoid":
        return g.op("Sigmoid", z)
    if name == "gelu":
        # exact GELU, x·Φ(x) = ½·x·(1 + erf(x/√2)), as torch's default; the Gelu operator
        # needs opset 20
        erf = g.op("Erf", g.op("Mul", z, g.scalar(float(np.sqrt(0.5)))))
        return g.op("Mul", g.op("Mul", z, g.scalar(0.5)), g.op("Add", erf, g.scalar(1.0)))
    raise ExportError(f"cannot export the activation {name!r}: no ONNX form for it here")


def _output(g: _Graph, z: str, task: str) -> str:
    if task == "multiclass":  # the last axis: (rows, C), or (k, rows, C) for TabM-mini
        return g.op("Softmax", z, axis=-1)
    if task == "binary":
        # one logit; the two columns are P(class 0) = 1 − σ(z) and P(class 1) = σ(z)
        p1 = g.op("Sigmoid", z)
        return g.op("Concat", g.op("Sub", g.scalar(1.0), p1), p1, axis=-1)
    return z  # regression: the standardized value, decoded after averaging
