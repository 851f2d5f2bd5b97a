"""Writing files so that a reader never sees half of one: JSON-safe values, atomic JSON files
and atomic directories (write a temporary sibling, then rename it into place)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any, finite: bool = False) -> Any:
    """``value`` with tuples as lists, numpy scalars as Python numbers and keys as strings;
    with ``finite``, NaN and infinities become None (strict JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, finite) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as strict JSON (NaN as null) to ``path`` through a renamed temporary
    file, so a process killed mid-write leaves the previous file whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(jsonable(data, finite=True), indent=1, allow_nan=False))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_directory_atomically(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_dir)`` then move the finished directory to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
