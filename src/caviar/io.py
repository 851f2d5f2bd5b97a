"""Model files: a directory that loads without executing code.

    model.json               format, caviar version, task, target, hyperparameters, the
                             preprocessor's learned state, each network's structure and history
    network.safetensors      the (first) network's tensors (weights, batch-norm statistics,
                             optimizer moments, so training can resume)
    network-1.safetensors    the second network's, and so on, when the model averages
                             several (a tuned model)
    preprocessor.safetensors the preprocessor's numeric arrays

Format version 2 lists the networks (``"networks"``); version 1 files (one ``"network"``)
still load.

Directories are written to a temporary sibling and renamed into place, so a reader never sees
a half-written model, even if the writer is killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch

from . import __version__
from .data import TablePreprocessor
from .engine import Population, resolve_device
from .engine.network import inputs_from
from .files import jsonable, write_directory_atomically

FORMAT = "caviar-model"
FORMAT_VERSION = 2


class ModelFileError(ValueError):
    """A model directory that is missing, corrupted, truncated or not caviar's."""


def save_model(model: Any, path: str | Path) -> Path:
    """Write ``model`` (a ``caviar.model.CaviarModel``: its preprocessor, networks and info)
    as a directory; returns its path.

    An existing model directory at ``path`` is replaced; anything else there (a file, a
    directory with other contents) is refused rather than deleted.
    """
    path = Path(path)
    if path.exists() and not (path / "model.json").is_file() and (
            not path.is_dir() or any(path.iterdir())):
        raise ModelFileError(f"{path} exists and is not a caviar model directory; refusing to "
                             "replace it: save to a new path or remove it first")
    pre_meta, pre_arrays = model.preprocessor.to_state()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "caviar_version": __version__,
        "task": model.task, "target": model.target, "classes": model.classes,
        "hyperparameters": model.hyperparameters, "info": model.info,
        "preprocessor": pre_meta, "networks": [n.state_meta() for n in model.networks],
    }

    def write(tmp: Path) -> None:
        (tmp / "model.json").write_text(json.dumps(jsonable(meta), indent=1))
        for i, network in enumerate(model.networks):
            _save_tensors(safetensors.torch.save_file, network.state_tensors(),
                          tmp / _network_file(i))
        arrays = {k: np.ascontiguousarray(v) for k, v in pre_arrays.items()}
        _save_tensors(safetensors.numpy.save_file, arrays, tmp / "preprocessor.safetensors")

    return write_directory_atomically(path, write)


def _save_tensors(save: Any, tensors: dict, file: Path) -> None:
    """``save(tensors, file)``; safetensors reports a failed write (a full disk) as its own
    error type, raised here as the OSError it wraps."""
    try:
        save(tensors, str(file))
    except Exception as e:
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(file)) from None


def load_model_files(path: str | Path, device: Any = "cpu"
                     ) -> tuple[TablePreprocessor, list[Population], dict[str, Any] | None]:
    """Read a model directory written by ``save_model``: its preprocessor, networks (on
    ``device``: the tensors are read to the CPU, then moved) and info
    (``caviar.model.load_model`` makes the model of them)."""
    device = resolve_device(device)  # a bad device is the caller's error, not the file's
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"{path} is not a caviar model directory: it does not exist or "
                             "is a file; pass the directory that `caviar tune` or `save` wrote")
    meta_file = path / "model.json"
    if not meta_file.is_file():
        raise ModelFileError(f"{path} is not a caviar model directory: no model.json in it")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{meta_file} is corrupted or truncated ({e}); "
                             "save the model again") from None
    except OSError as e:
        raise ModelFileError(f"{meta_file} cannot be read ({e.strerror or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_file} is not a caviar model file (no \"format\": "
                             f"\"{FORMAT}\" in it)")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{meta_file} has an invalid format_version ({version!r}); "
                             "save the model again")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{meta_file} was written by a newer caviar "
                             f"({meta.get('caviar_version')}); upgrade caviar to load it")
    metas = meta.get("networks") if version >= 2 else [meta.get("network")]
    if not isinstance(metas, list) or not metas:
        raise ModelFileError(f"{meta_file} lists no networks; save the model again")
    arrays = _read_safetensors(path / "preprocessor.safetensors", safetensors.numpy.load_file)
    try:
        networks = [Population.from_state(m, _read_safetensors(
                        path / _network_file(i), safetensors.torch.load_file), device)
                    for i, m in enumerate(metas)]
        preprocessor = TablePreprocessor.from_state(meta["preprocessor"], arrays)
        _check_fits(preprocessor, networks[0])
    except ModelFileError:  # a missing or damaged network file, already named
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path} holds an inconsistent model ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); save it again"
                             ) from None
    return preprocessor, networks, meta.get("info")


def network_fits(preprocessor: TablePreprocessor, network: Population) -> bool:
    """Whether the network takes the preprocessor's features, laid out as it makes them
    (the same categorical codes and numeric scalings), and predicts its task's classes."""
    try:
        _check_fits(preprocessor, network)
    except ValueError:
        return False
    return True


def _check_fits(preprocessor: TablePreprocessor, network: Population) -> None:
    """ValueError unless the network takes the preprocessor's features and predicts its
    task's classes (a model.json edited by hand may disagree with the weights)."""
    n_classes = None if preprocessor.task_ == "regression" else len(preprocessor.classes_)
    expected = inputs_from(preprocessor)
    if not network.inputs.numeric:  # saved before numeric embeddings, or none to embed
        expected = dataclasses.replace(expected, numeric=())
    if network.inputs.scaling is None:  # saved before the numeric scaling was searched
        expected = dataclasses.replace(expected, scaling=None)
    if (network.structure.task, network.structure.n_inputs, network.n_classes) != (
            preprocessor.task_, preprocessor.n_features_out_, n_classes) or (
            network.inputs != expected):
        raise ValueError(f"the network ({network.structure.task}, "
                         f"{network.structure.n_inputs} inputs, {network.n_classes} classes) "
                         f"does not fit the preprocessor ({preprocessor.task_}, "
                         f"{preprocessor.n_features_out_} features, {n_classes} classes) or "
                         "its categorical code and numeric columns")


def _network_file(index: int) -> str:
    return "network.safetensors" if index == 0 else f"network-{index}.safetensors"


def _read_safetensors(file: Path, loader: Any) -> dict:
    if not file.exists():
        raise ModelFileError(f"{file.parent} is incomplete: {file.name} is missing")
    try:
        return loader(str(file))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelFileError(f"{file} is corrupted or truncated ({type(e).__name__}); "
                             "save the model again") from None
