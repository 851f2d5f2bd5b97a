"""The one error a problem with the user's data raises, and the helpers its messages use.

Every problem with the user's data is a :class:`DataError` whose message is one line naming the
problem and the fix, so the command line can print it as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["DataError", "one_line", "quote_names"]


class DataError(ValueError):
    """A problem with the user's data; the message is one line naming the problem and the fix."""


def one_line(text: object) -> str:
    """``text`` on one line, its whitespace runs made single spaces."""
    return " ".join(str(text).split())


def quote_names(cols: Iterable[Any], limit: int = 8) -> str:
    """The first ``limit`` names quoted and joined, and how many more there are."""
    cols = [str(c) for c in cols]
    shown = ", ".join(repr(c) for c in cols[:limit])
    return shown + (f" and {len(cols) - limit} more" if len(cols) > limit else "")
