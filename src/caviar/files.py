"""Writing output files so that a failed write leaves the old file as it was.

A full disk, a quota or a kill in the middle of ``Path.write_text`` leaves a truncated file
where a good one was; :func:`replace_file` writes a temporary sibling and renames it into
place, so the path holds either the old content or the new, never a part.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "out.txt"
>>> replace_file(path, "hello") == path and path.read_text()
'hello'
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["replace_file"]


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
