"""Splits: shuffled and stratified (``split_frame``), by time (``time_split``) and by group
(``group_split``), each as (train, validation, test) frames that keep the rows' labels.

>>> import pandas as pd
>>> df = pd.DataFrame({"x": range(100), "y": [0, 1] * 50})
>>> [len(part) for part in split_frame(df, "y", "binary")]
[60, 20, 20]
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from caviar.data.dates import as_datetimes, date_order
from caviar.data.errors import DataError
from caviar.data.roles import category_strings, drop_missing_target, infer_task
from caviar.files import jsonable

__all__ = ["split_frame", "time_split", "group_split", "holdout", "time_order"]


def holdout(
    frame: pd.DataFrame, target: str, task: str, size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle ``frame`` and set aside ``size`` of its rows: ``(kept, held_out)``.

    For classification, every class keeps a row in ``kept`` (a network can't learn a class it
    never sees): a class with a single row stays there, and the others are stratified when
    every class has enough rows for it.

    >>> df = pd.DataFrame({"x": range(10), "y": ["a"] * 9 + ["b"]})
    >>> kept, held = holdout(df, "y", "binary", 0.5, seed=0)
    >>> sorted(kept["y"].unique()), len(held)
    (['a', 'b'], 5)
    """
    from sklearn.model_selection import train_test_split

    if size == 0 or len(frame) < 2:  # a single row is kept: holding it out leaves none
        return frame, frame.iloc[:0]
    if task == "regression":
        return tuple(train_test_split(frame, test_size=size, random_state=seed))
    counts = frame[target].map(frame[target].value_counts())
    alone, rest = frame[counts < 2], frame[counts >= 2]
    n_held = int(np.ceil(size * len(frame)))
    n_classes = rest[target].nunique()
    stratify = None
    if n_held >= n_classes and len(rest) - n_held >= n_classes:
        stratify = rest[target]
    if n_held >= len(rest):
        kept, held = rest.iloc[:0], rest
    else:
        kept, held = train_test_split(rest, test_size=n_held, random_state=seed,
                                      stratify=stratify)
    lost = held[~held[target].isin(kept[target].unique())]  # classes with no row kept
    back = lost.index[~lost[target].duplicated()]
    return pd.concat([alone, kept, held.loc[back]]), held.drop(back)


def split_frame(
    df: pd.DataFrame,
    target: str,
    task: str | None = None,
    test_size: float = 0.2,
    val_size: float = 0.2,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle and split ``df`` into (train, validation, test) frames.

    ``test_size`` and ``val_size`` are shares of all rows (either may be 0, giving an empty
    frame). Classification splits are stratified on the target when every class has enough
    rows, and every class keeps rows in training (see :func:`holdout`); a class with a single
    row is trained on but can't be validated or tested, and a warning says so. Rows with a
    missing target are dropped first (with a warning). The frames keep the original row
    labels.

    >>> df = pd.DataFrame({"x": range(100), "y": [0, 1] * 50})
    >>> [len(part) for part in split_frame(df, "y", "binary")]
    [60, 20, 20]
    """
    _check_shares(test_size, val_size)
    df = drop_missing_target(df, target)
    task = infer_task(df[target], task)
    if task != "regression":
        counts = df[target].value_counts()
        single = counts.index[counts == 1].tolist()
        if len(single) == len(counts) and (test_size or val_size):
            raise DataError(
                f"every class of target {target!r} has a single row, such as "
                f"{jsonable(single[0])!r}: no row can be validated or tested; is it an ID? "
                f"pick the column that holds the labels")
        if single and (test_size or val_size):
            warnings.warn(
                f"{len(single)} class(es) of the target have a single row, such as "
                f"{jsonable(single[0])!r}: they are trained on but never validated or "
                f"tested; add rows of them, or drop those rows", stacklevel=2)
    rest, test = holdout(df, target, task, test_size, seed)
    train, val = holdout(rest, target, task, val_size / (1 - test_size), seed + 1)
    if len(train) == 0:
        raise DataError(f"no training rows left from {len(df)} rows; lower test_size/val_size")
    return train, val, test


def _check_shares(test_size: float, val_size: float) -> None:
    if not (0 <= test_size < 1 and 0 <= val_size < 1 and test_size + val_size < 1):
        raise DataError(
            f"test_size and val_size must be in [0, 1) with a sum below 1, got {test_size} "
            f"and {val_size}"
        )


def time_order(values: pd.Series) -> pd.Series:
    """A time column as something that sorts: dates and date strings as datetimes, numbers
    (a year, a fractional date) as they are. DataError for missing or unreadable values."""
    if values.isna().any():
        raise DataError(f"the time column {values.name!r} has {int(values.isna().sum())} "
                        "missing value(s); fill or drop those rows for a time split")
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    order = date_order(values)
    if order is not None:  # ISO, or as spreadsheets write dates (03/31/2021)
        return as_datetimes(values, order)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers
    raise DataError(f"the time column {values.name!r} holds values that are neither dates nor "
                    f"numbers, such as {values[numbers.isna()].iloc[0]!r}; use a date column "
                    "(2020-01-31) or a number")


def time_split(df: pd.DataFrame, column: str, test_size: float = 0.2, val_size: float = 0.2
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split by time, without shuffling: the earliest rows train, the next validate, the
    latest test (shares of all rows). Rows are sorted by ``column`` (stable, so ties keep the
    table's order); no validation or test row is earlier than a training row, which is how
    the model will meet the future.

    >>> df = pd.DataFrame({"t": [5, 1, 4, 2, 3], "y": [0, 1, 0, 1, 0]})
    >>> [part["t"].tolist() for part in time_split(df, "t", 0.2, 0.2)]
    [[1, 2, 3], [4], [5]]
    """
    _check_shares(test_size, val_size)
    order = time_order(df[column]).reset_index(drop=True).sort_values(kind="stable").index
    ordered = df.iloc[order.to_numpy()]
    n = len(ordered)
    n_test = int(np.ceil(test_size * n)) if test_size else 0
    n_val = int(np.ceil(val_size * n)) if val_size else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(f"no training rows left from {n} rows; lower test_size/val_size")
    return (ordered.iloc[:n_train], ordered.iloc[n_train:n_train + n_val],
            ordered.iloc[n_train + n_val:])


def group_split(df: pd.DataFrame, column: str, test_size: float = 0.2, val_size: float = 0.2,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split so that no group (the values of ``column``: a firm, a patient) is in two parts,
    as scikit-learn's ``GroupShuffleSplit`` does: the shares are of the groups, so the parts'
    row counts follow the groups' sizes. A missing value is a group of its own.

    >>> df = pd.DataFrame({"g": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "y": range(10)})
    >>> parts = group_split(df, "g", 0.2, 0.2)
    >>> sorted(len(set(p["g"])) for p in parts)
    [1, 1, 3]
    """
    from sklearn.model_selection import GroupShuffleSplit

    _check_shares(test_size, val_size)
    groups = category_strings(df[column])
    n_groups = groups.nunique()
    if n_groups < 1 + (test_size > 0) + (val_size > 0):
        raise DataError(f"the group column {column!r} has {n_groups} group(s), too few to "
                        "split into training, validation and test; choose a column with more")

    def cut(frame: pd.DataFrame, size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        if size == 0:
            return frame, frame.iloc[:0]
        n = groups.loc[frame.index].nunique()
        held = max(1, min(n - 1, int(round(size * n))))  # at least one group each side
        splitter = GroupShuffleSplit(n_splits=1, test_size=held, random_state=seed)
        kept, out = next(splitter.split(frame, groups=groups.loc[frame.index]))
        return frame.iloc[kept], frame.iloc[out]

    if df.index.has_duplicates:
        raise DataError("the table's row labels repeat; reset its index first")
    rest, test = cut(df, test_size, seed)
    train, val = cut(rest, val_size / (1 - test_size), seed + 1)
    return train, val, test
