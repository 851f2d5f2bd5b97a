"""Writing files so that a reader never sees half of one, and a failed write (a full disk, a
quota, a kill) leaves the old file as it was: write a temporary sibling, then rename it into
place. Also JSON-safe values and atomic directories.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "out.txt"
>>> replace_file(path, "hello") == path and path.read_text()
'hello'
"""

from __future__ import annotations

import errno
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


def replace_file(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``.

    Raises ``IsADirectoryError`` if ``path`` is a folder, and the ``OSError`` of a failed
    write (``ENOSPC``, ``EFBIG``, ``EACCES``, ...), with the old file untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomically(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as strict JSON (NaN and infinities as null) with ``replace_file``."""
    return replace_file(path, json.dumps(jsonable(data, finite=True), indent=1,
                                         allow_nan=False))


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
