"""Numbers in tables: whole numbers, text that writes numbers the way spreadsheets export
them ($1,234.50, 12%), and columns that hold containers instead of values.

>>> to_numbers(pd.Series(["1,234.5", "12%", "n/a"])).tolist()
[1234.5, 0.12, nan]
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

__all__ = ["to_numbers", "read_numbers", "bad_numbers", "nested_kind", "is_integral",
           "is_text"]


def is_integral(values: pd.Series) -> bool:
    """Whether a numeric series holds whole numbers only (ints, or floats like 3.0)."""
    if pd.api.types.is_integer_dtype(values):
        return True
    v = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(v)) and np.all(v == np.round(v)))


def is_text(s: pd.Series) -> bool:
    """Whether ``s`` holds text or other objects: not numbers, booleans, times or durations."""
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s)
                or pd.api.types.is_timedelta64_dtype(s))


# A number as spreadsheets write it: thousands separators (1,234.5), a currency sign before
# it ($12, -€3.50, $-3.50), a percent after it (12.5%), or an accountant's negative in
# parentheses (($1,234.00)); ``to_numbers`` reads these.
_FORMATTED_NUMBER = re.compile(
    r"^(?P<sign>[-+(]?)[$€£¥]?(?P<sign2>[-+]?)"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?P<percent>%?)(?P<close>\)?)$")


# A clock time or a duration as spreadsheets write them, h:mm or h:mm:ss (7:42, 2:31:38,
# -0:00:05.2): ``to_numbers`` reads these as seconds, so that a time of day or a race time is
# an ordered number, not a category per minute
_CLOCK = re.compile(r"^(?P<sign>-?)(?P<hours>\d+):(?P<minutes>[0-5]\d)"
                    r"(?::(?P<seconds>[0-5]\d(?:\.\d*)?))?$")


def _formatted_number(text: str) -> float:
    """The number ``text`` writes in one of the forms above, or NaN."""
    clock = _CLOCK.match(text.strip())
    if clock is not None:
        hours, minutes, seconds = clock.group("hours", "minutes", "seconds")
        total = 3600 * int(hours) + 60 * int(minutes) + float(seconds or 0)
        return -total if clock.group("sign") else total
    match = _FORMATTED_NUMBER.match(text.strip())
    if match is None:
        return math.nan
    sign, sign2, digits, percent, close = match.group("sign", "sign2", "digits", "percent",
                                                      "close")
    if (sign == "(") != (close == ")") or (sign and sign2):
        return math.nan  # "(12", "-$-3": not a number
    number = float(digits.replace(",", ""))
    number = -number if "-" in (sign, sign2) or sign == "(" else number
    return number / 100 if percent else number


def to_numbers(s: pd.Series) -> pd.Series:
    """``s`` as float64 numbers, NaN where a value is missing or is not a number.

    Text is read as pandas reads numbers, and also in the forms spreadsheets export: with
    thousands separators, a currency sign, a percent (a share: 12% is 0.12), or an
    accountant's parentheses for a negative, so that a price column saved as "$1,234" is the
    number 1234, not 1,000 levels of a category; and clock times and durations (h:mm,
    h:mm:ss) as seconds.

    >>> to_numbers(pd.Series(["1,234.5", "$12", "-€3.50", "(£40)", "12%", "7", None, "n/a"])
    ...            ).tolist()
    [1234.5, 12.0, -3.5, -40.0, 0.12, 7.0, nan, nan]
    >>> to_numbers(pd.Series(["2:31:38", "7:42", "0:00:05.5", "12:75"])).tolist()
    [9098.0, 27720.0, 5.5, nan]
    """
    if pd.api.types.infer_dtype(s, skipna=True) == "string":
        # every value text: each distinct one read once (a million rows of a column of 30
        # labels took 0.5 s a column read row by row; the roles read every text column)
        codes, levels = pd.factorize(s)  # a missing value's code is -1: the NaN appended
        read = np.append(_read_each(pd.Series(levels, dtype=object)).to_numpy(), np.nan)
        return pd.Series(read[codes], index=s.index, name=s.name)
    return _read_each(s)


def _read_each(s: pd.Series) -> pd.Series:
    """``to_numbers`` value by value."""
    parsed = pd.to_numeric(s, errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    unread = (parsed.isna() & s.notna()).to_numpy()
    if unread.any() and is_text(s):  # read once per distinct value, not per row
        text = s[unread]
        levels = pd.Series(text.unique())
        # one vectorized match first, so that a text column of labels or IDs (a million
        # distinct values) costs no Python call per value
        stripped = levels.astype(str).str.strip()
        written = levels[stripped.str.match(_FORMATTED_NUMBER) | stripped.str.match(_CLOCK)]
        if len(written):
            read = {level: _formatted_number(str(level)) for level in written}
            values[unread] = text.map(read).to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.Series(values, index=s.index, name=s.name)


def read_numbers(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``to_numbers(s)``, and the non-missing values of ``s`` it does not read as numbers (to
    name them in an error), from one pass."""
    numbers = to_numbers(s)
    return numbers, s[s.notna() & numbers.isna()]


def bad_numbers(s: pd.Series) -> pd.Series:
    """The non-missing values of ``s`` that ``to_numbers`` does not read as numbers."""
    return read_numbers(s)[1]


def nested_kind(s: pd.Series) -> str | None:
    """The kind of container ``s`` holds (a Parquet list or struct column: "list", "dict",
    ...), or None when its values are single values. Such values cannot be counted, compared
    or scaled, so the column cannot be a feature as it is."""
    # pandas' own scan (C) names a column of one scalar type; only a mix can hold containers,
    # so the value-by-value look below runs on those alone (0.34 s on a 1M-value text column)
    if s.dtype != object or pd.api.types.infer_dtype(s, skipna=True) not in (
            "mixed", "mixed-integer", "unknown-array"):
        return None
    kinds = (list, tuple, dict, set, np.ndarray)
    found = next((v for v in s.array if isinstance(v, kinds)), None)
    return None if found is None else type(found).__name__
