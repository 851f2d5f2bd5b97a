"""Date and time columns as numbers: the calendar (year, month, day of week, hour) for
seasonal effects and the days since the earliest training date for trends; durations as
seconds.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from caviar.data.errors import DataError
from caviar.data.numbers import is_text

__all__ = ["DATE_PARTS", "date_layout", "date_order", "as_datetimes", "fit_dates", "expand_dates",
           "as_seconds"]


DATE_PARTS = {"year": "year", "month": "month", "dayofweek": "day_of_week", "hour": "hour"}


# ISO 8601: 2021-03-31, 2021-03-31 14:05, 2021-03-31T14:05:00.5+02:00
ISO_DATE = r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
# Dates as spreadsheets and other locales write them: day and month with a four-digit year,
# separated by slashes, dots or dashes (03/31/2021, 31.03.2021, 31-03-2021), or the year
# first with slashes or dots (2021/03/31), and an optional time (14:05, 14:05:00)
_WRITTEN_DATE = re.compile(r"^(?P<a>\d{1,4})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{1,4})"
                           r"(?:[ T](?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?$")


def date_order(values: pd.Series) -> str | None:
    """The layout of a text column's dates, every value present written one way: "iso"
    (2021-03-31, or Python dates and datetimes, whose text is ISO), "ymd" (2021/03/31),
    "dmy" or "mdy"; None when they are not all dates.

    Day and month are told apart by the values: a first number above 12 somewhere makes
    them day-first, a second above 12 month-first, dots day-first (31.03.2021, as written
    where they are used). Where every day is 12 or less, slashes and dashes read month-first
    (the US habit, and pandas'); a two-digit year is not read as a date (which century?).

    >>> date_order(pd.Series(["03/31/2021", "04/01/2021"]))
    'mdy'
    >>> date_order(pd.Series(["31/03/2021", "01/04/2021 14:05"]))
    'dmy'
    >>> date_order(pd.Series(["2021-03-31", "2021-04-01"])), date_order(pd.Series(["3/31"]))
    ('iso', None)
    """
    present = values.dropna()
    if not len(present):
        return None
    if all(isinstance(v, datetime.date) for v in present):  # datetimes are dates too
        return "iso"
    if not all(isinstance(v, str) for v in present.head(100)):
        return None
    # the first hundred values first: a column of labels or IDs fails there, without a
    # regular expression over its every row (a million-row text column: seconds)
    sample = present.head(100).astype(str).str.strip()
    iso, written = sample.str.match(ISO_DATE).all(), sample.str.match(_WRITTEN_DATE).all()
    if not (iso or written):
        return None
    text = present.astype(str).str.strip()
    if iso and text.str.match(ISO_DATE).all():
        return "iso"
    parts = text.str.extract(_WRITTEN_DATE)
    if parts["a"].isna().any() or parts["sep"].nunique() != 1:
        return None
    a, b, c = (parts[k].astype(int) for k in "abc")
    if (parts["a"].str.len() == 4).all() and (parts["c"].str.len() <= 2).all():
        order = "ymd"
    elif not (parts["c"].str.len() == 4).all():
        return None
    elif parts["sep"].iloc[0] == "." or (a.max() > 12 >= b.max()):
        order = "dmy"
    else:
        order = "mdy"
    month, day = {"ymd": (b, c), "dmy": (b, a), "mdy": (a, b)}[order]
    if not (month.between(1, 12).all() and day.between(1, 31).all()):
        return None
    return order


def date_layout(values: pd.Series) -> str | None:
    """How a column holds dates or times, every value present written one way: "iso" for
    datetimes, ISO text (2021-03-31, 2021-03-31 14:05:00) and date objects (a Parquet file's
    ``date32`` column reads as Python dates); "mdy", "dmy" or "ymd" as spreadsheets write
    them (03/31/2021, 31.03.2021, 2021/03/31: ``date_order``); None for no dates. So a column
    parses as dates the same way on every table."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return "iso"
    return date_order(values) if is_text(values) else None


def _iso_text(values: pd.Series, order: str) -> pd.Series:
    """Written dates (``order`` "ymd", "dmy" or "mdy") as ISO text; others as missing."""
    parts = values.astype("string").str.strip().str.extract(_WRITTEN_DATE)
    year, month, day = {"ymd": "abc", "dmy": "cba", "mdy": "cab"}[order]
    iso = (parts[year].str.zfill(4) + "-" + parts[month].str.zfill(2) + "-"
           + parts[day].str.zfill(2))
    time = parts["time"].str.replace(r"^(\d):", r"0\1:", regex=True)  # 9:05 as 09:05
    return iso.where(time.isna(), iso + " " + time)


def as_datetimes(values: pd.Series, order: str = "iso") -> pd.Series:
    """Dates and date strings (ISO, or written in ``order``: ``date_order``) as
    timezone-naive datetimes (UTC for aware ones); what does not parse becomes missing."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        text = (values.astype("string").str.strip() if order == "iso"
                else _iso_text(values, order))
        values = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def fit_dates(df: pd.DataFrame, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What ``expand_dates`` needs of each date column, learned from the training rows: the
    earliest date (the origin of the continuous time), whether to add the hour (not when
    every time is midnight: plain dates) and, for dates written other than ISO, their order
    (``date_layout``: kept, so that rows to predict read the same way, whatever they hold)."""
    out = {}
    for col in columns:
        order = date_layout(df[col]) or "iso"
        t = as_datetimes(df[col], order).dropna()
        if not len(t):
            raise DataError(f"the date column {col!r} has no readable date in the training "
                            "rows; fix its values (2021-03-31) or drop it")
        out[col] = {"origin": t.min().isoformat(), "hour": bool((t.dt.hour != 0).any())} | (
            {} if order == "iso" else {"order": order})
    return out


def expand_dates(values: pd.Series, origin: str, hour: bool, order: str = "iso"
                 ) -> dict[str, np.ndarray]:
    """A date column as numeric columns ``COL.year``, ``.month``, ``.dayofweek`` (0 is
    Monday), ``.hour`` (when ``hour``) and ``.days`` (days since ``origin``, fractional):
    the calendar for seasonal effects, the continuous time for trends; text read as ISO or
    in ``order``. Missing or unreadable dates are missing values (imputed, with an
    indicator)."""
    t = as_datetimes(values, order)
    name = values.name
    out = {f"{name}.{part}": getattr(t.dt, attr).to_numpy(dtype=np.float64, na_value=np.nan)
           for part, attr in DATE_PARTS.items() if part != "hour" or hour}
    days = (t - pd.Timestamp(origin)) / pd.Timedelta(days=1)
    out[f"{name}.days"] = days.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def as_seconds(values: pd.Series) -> pd.Series:
    """A duration column (``timedelta64``: Parquet's ``duration``, pandas' ``Timedelta``) as
    seconds, float; missing durations (NaT) become NaN."""
    return values.dt.total_seconds()
