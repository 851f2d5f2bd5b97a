"""Date and time columns as numbers: the calendar (year, month, day of week, hour) for
seasonal effects and the days since the earliest training date for trends; durations as
seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from caviar.data.errors import DataError

__all__ = ["DATE_PARTS", "as_datetimes", "fit_dates", "expand_dates", "as_seconds"]


DATE_PARTS = {"year": "year", "month": "month", "dayofweek": "day_of_week", "hour": "hour"}


def as_datetimes(values: pd.Series) -> pd.Series:
    """Dates and ISO date strings as timezone-naive datetimes (UTC for aware ones); what does
    not parse becomes missing."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = pd.to_datetime(values.astype("string").str.strip(), errors="coerce",
                                format="ISO8601", utc=True)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def fit_dates(df: pd.DataFrame, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What ``expand_dates`` needs of each date column, learned from the training rows: the
    earliest date (the origin of the continuous time) and whether to add the hour (not when
    every time is midnight: plain dates)."""
    out = {}
    for col in columns:
        t = as_datetimes(df[col]).dropna()
        if not len(t):
            raise DataError(f"the date column {col!r} has no readable date in the training "
                            "rows; fix its values (2021-03-31) or drop it")
        out[col] = {"origin": t.min().isoformat(), "hour": bool((t.dt.hour != 0).any())}
    return out


def expand_dates(values: pd.Series, origin: str, hour: bool) -> dict[str, np.ndarray]:
    """A date column as numeric columns ``COL.year``, ``.month``, ``.dayofweek`` (0 is
    Monday), ``.hour`` (when ``hour``) and ``.days`` (days since ``origin``, fractional):
    the calendar for seasonal effects, the continuous time for trends. Missing or unreadable
    dates are missing values (imputed, with an indicator)."""
    t = as_datetimes(values)
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
