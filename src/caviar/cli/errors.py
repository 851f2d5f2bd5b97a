"""The error policy: every error a user can cause prints one red line ``error: ...`` on stderr
and exits with code 1 (Typer's usage errors exit with 2); ``caviar --debug ...`` or
``CAVIAR_DEBUG=1`` shows the traceback instead. Warnings print as one yellow line each;
Ctrl-C prints ``warning: interrupted`` and exits with 130.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

DEBUG_ENV = "CAVIAR_DEBUG"

# caviar's own files: their deprecation warnings are shown, other libraries' are not
CAVIAR_DIR = str(Path(__file__).resolve().parent.parent)


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


_state = {"debug": _debug_env()}


def set_debug(flag: bool) -> None:
    """Show tracebacks when ``flag`` or ``CAVIAR_DEBUG`` is set (``caviar --debug``)."""
    _state["debug"] = flag or _debug_env()


def err_console() -> Console:
    """A console on stderr, without Rich's automatic highlighting."""
    return Console(stderr=True, highlight=False)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


def error_line(message: object) -> None:
    """``error: message`` in red on stderr, on one line whatever the terminal width."""
    err_console().print(f"error: {one_line(message)}", style="bold red", markup=False,
                        soft_wrap=True)


def warning_line(message: object) -> None:
    """``warning: message`` in yellow on stderr, on one line."""
    err_console().print(f"warning: {one_line(message)}", style="yellow", markup=False,
                        soft_wrap=True)


_OS_HINTS = {  # what to do about the OSErrors a user's paths and disks cause
    errno.EEXIST: " (a file where a folder is needed); choose another output path",
    errno.ENOTDIR: " (a file where a folder is needed); choose another output path",
    errno.EISDIR: " (a folder where a file is needed); pass a file path",
    errno.EACCES: "; check its permissions or choose another path",
    errno.EROFS: "; choose a path on a writable disk",
    errno.ENOSPC: "; free some disk space or choose another output path",
    errno.EFBIG: "; free some disk space or choose another output path",
    errno.EDQUOT: "; free some disk space or choose another output path",
}


_DISK_FULL = re.compile(r"disk I/O error|database or disk is full")


def _disk_full(exc: BaseException) -> str | None:
    """SQLite's words for a write the disk refused, in ``exc`` or the errors that caused it
    (Optuna raises its own StorageInternalError from SQLAlchemy's, which holds SQLite's)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        found = _DISK_FULL.search(one_line(cause))
        if found:
            return found[0]
        cause = cause.__cause__ or cause.__context__
    return None


def _message(exc: BaseException) -> str:
    """One line for an exception: caviar's own messages as they are, others with their type."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}{_OS_HINTS.get(exc.errno or 0, '')}"
    text = one_line(exc)
    if isinstance(exc, ValueError) and text:  # DataError, ModelFileError, SpaceError, ...
        return text
    disk_full = _disk_full(exc)
    if disk_full:  # SQLite hides the errno of a failed write
        return (f"the study's database could not be written ({disk_full}); "
                "free some disk space or choose another output path")
    hint = f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    return f"{type(exc).__name__}: {text}{hint}" if text else f"{type(exc).__name__}{hint}"


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show each distinct warning once, as one yellow line; hide other libraries'
    deprecation notices unless debugging."""
    seen: set[str] = set()
    quiet = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if (issubclass(category, quiet) and not str(filename).startswith(CAVIAR_DIR)
                and not _state["debug"]):
            return
        text = one_line(message)
        if text not in seen:
            seen.add(text)
            warning_line(text)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn what a user can cause into one red line and exit code 1."""
    try:
        with _warnings_as_lines():
            yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # Typer's own exits and usage errors (code 2)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        warning_line("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        error_line(_message(exc))
        raise typer.Exit(1) from None
