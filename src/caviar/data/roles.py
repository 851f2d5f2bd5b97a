"""Column roles: the task a target makes, and what each other column is for (numeric,
one-hot, target encoded, a date, or ignored and why).

>>> import pandas as pd
>>> df = pd.DataFrame({"size": [1.0, 2.5, None, 4.0] * 5, "color": list("rgbr") * 5,
...                    "sold": ["yes", "no"] * 10})
>>> infer_task(df["sold"])
'binary'
>>> roles = infer_roles(df, "sold")
>>> roles.numeric, roles.onehot
(['size'], ['color'])
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from caviar.data.dates import date_layout
from caviar.data.errors import DataError, quote_names
from caviar.data.numbers import bad_numbers, is_integral, is_text, nested_kind, to_numbers
from caviar.hyperparams import TASKS, close_names

__all__ = [
    "Roles",
    "infer_task",
    "infer_roles",
    "check_target",
    "check_names",
    "drop_missing_target",
    "category_strings",
    "onehot_limit",
    "MAX_ONEHOT_LEVELS",
    "MIN_ROWS_PER_LEVEL",
    "MAX_ONEHOT_WIDTH",
    "MAX_CLASSES",
    "MAX_TARGET_CLASSES",
    "check_classes",
    "NUMERIC_SHARE",
    "MAX_LEVEL_LENGTH",
    "DROPPED",
    "MISSING_LEVEL",
]

MAX_ONEHOT_LEVELS = 10  # categoricals with at most this many levels are always one-hot
MIN_ROWS_PER_LEVEL = 4  # more levels are one-hot while they have this many rows on average
MAX_ONEHOT_WIDTH = 1000  # and up to this many levels (one-hot columns are dense float32)
MAX_CLASSES = 20  # an integer target with more distinct values is a regression target
# the most classes a target may have: the softmax output is a one-hot of the target, and a
# multiclass target encoding makes a column per class of each encoded column
MAX_TARGET_CLASSES = MAX_ONEHOT_WIDTH
NUMERIC_SHARE = 0.95  # a text column whose values parse as numbers this often is numeric
MAX_LEVEL_LENGTH = 1000  # a text column with longer values is free text, not a category
DROPPED = "dropped by the user (drop=...)"  # the reason of a column the user left out
MISSING_LEVEL = "__missing__"  # the level a missing categorical value becomes

_UNNAMED = re.compile(r"^Unnamed: \d+$")  # what pandas calls a column with an empty header


# the target and the task


def check_target(df: pd.DataFrame, target: str) -> None:
    """DataError, with close names, if ``target`` is not a column of ``df``."""
    if target not in df.columns:
        raise DataError(
            f"target column {target!r} not found{close_names(str(target), df.columns)}; "
            f"columns: {quote_names(df.columns)}"
        )


def drop_missing_target(df: pd.DataFrame, target: str) -> pd.DataFrame:
    """``df`` without the rows whose target is missing, with a warning giving their count.

    Raises DataError if the target column is missing or has no values at all.
    """
    check_target(df, target)
    missing = df[target].isna()
    if missing.all():
        raise DataError(
            f"target column {target!r} is all missing; pick the column that holds the labels"
        )
    if missing.any():
        warnings.warn(
            f"dropped {int(missing.sum())} of {len(df)} rows whose target {target!r} is missing",
            stacklevel=2,
        )
        return df.loc[~missing]
    return df


def infer_task(y: pd.Series | Sequence[Any] | np.ndarray, task: str | None = None) -> str:
    """The learning task for target ``y``: ``"binary"``, ``"multiclass"`` or ``"regression"``.

    Strings, booleans and categories are labels: two levels make a binary task, more a
    multiclass one. Whole numbers with few distinct values (at most ``MAX_CLASSES``, and fewer
    than half the rows) are labels too; other numbers are a regression target. ``task``
    overrides the guess and is checked against the values. Missing values are ignored.

    >>> infer_task(["No", "Yes", "No"])
    'binary'
    >>> infer_task([0, 1, 2, 1, 0, 2, 1])
    'multiclass'
    >>> infer_task([1.5, 2.25, 3.0])
    'regression'
    """
    y = pd.Series(y) if not isinstance(y, pd.Series) else y
    name = f"target {y.name!r}" if y.name is not None else "the target"
    nested = nested_kind(y)
    if nested is not None:
        raise DataError(f"{name} holds {nested}s, not single values; pick a column of one "
                        "value per row")
    y = y.dropna()
    if len(y) == 0:
        raise DataError(f"{name} is all missing; pick the column that holds the labels")
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    n_levels = y.nunique()
    # a text target's numbers ("$1,234", "12%"), read once per distinct value (NaN: not a
    # number); none for numbers, booleans and a category dtype (labels the user declared)
    text = is_text(y) and not isinstance(y.dtype, pd.CategoricalDtype)
    levels = pd.Series(y.unique() if text else [], dtype=object)
    written = to_numbers(levels)
    numbers_as_text = len(levels) > 0 and bool(written.notna().all())
    infinite = (y[np.isinf(y.to_numpy(dtype=float))] if numeric
                else y[y.isin(levels[np.isinf(written)])])
    if len(infinite):
        raise DataError(
            f"{name} holds {len(infinite)} infinite value(s) ({infinite.iloc[0]} in row "
            f"{infinite.index[0]}); fix them, or blank them to leave those rows out"
        )
    if len(y) == 1:
        raise DataError(f"{name} has a value in a single row: there is nothing to learn; "
                        f"pass a table with more rows")
    if n_levels < 2:
        value = y.iloc[0].item() if isinstance(y.iloc[0], np.generic) else y.iloc[0]
        raise DataError(
            f"{name} has a single value ({value!r}): there is nothing to learn; check the "
            f"target column and the rows selected"
        )
    if task is not None:
        if task not in TASKS:
            raise DataError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "regression" and not (numeric or numbers_as_text):
            raise DataError(
                f"{name} holds labels such as {y.iloc[0]!r}, not numbers: it can't be a "
                f"regression target; use task='binary' or 'multiclass'"
            )
        if task == "binary" and n_levels != 2:
            raise DataError(
                f"task='binary' needs 2 classes but {name} has {n_levels}; use "
                f"task='multiclass' or 'regression'"
            )
        if task == "multiclass" and n_levels < 3:
            raise DataError(f"task='multiclass' needs 3 or more classes but {name} has 2; "
                            f"use task='binary'")
        return check_classes(task, name, n_levels)
    if numeric:
        if _looks_continuous(y, n_levels, len(y)):
            return "regression"
    elif numbers_as_text:  # a price saved as "$1,234": numbers, not labels
        if _looks_continuous(written, n_levels, len(y)):
            return "regression"
    elif written.notna().any():  # numbers but for a few values: a typo, not classes
        stray = y[y.isin(levels[written.isna()])]
        if _looks_continuous(written.dropna(), int(written.notna().sum()), len(y) - len(stray)):
            raise DataError(
                f"{name} is numbers except {len(stray)} value(s) such as {stray.iloc[0]!r} "
                f"(row {stray.index[0]}); fix them, or blank them to leave those rows out "
                f"(to treat the values as labels, pass task='multiclass')")
    return check_classes("binary" if n_levels == 2 else "multiclass", name, n_levels)


def check_classes(task: str, name: str, n_levels: int) -> str:
    """``task``, unless a multiclass target has more classes than caviar takes
    (``MAX_TARGET_CLASSES``): an order number or a timestamp picked as the target (21,350
    order ids of a 49,574-row table took minutes to encode, one column per class)."""
    if task == "multiclass" and n_levels > MAX_TARGET_CLASSES:
        raise DataError(
            f"{name} has {n_levels:,} classes, more than the {MAX_TARGET_CLASSES:,} caviar "
            f"takes: is it an ID? pick the column that holds the labels, or group rare "
            f"classes into one")
    return task


def _looks_continuous(values: pd.Series, n_levels: int, rows: int) -> bool:
    """Numbers that are a regression target, not labels: not whole, or too many levels
    (``values``: the rows' numbers or their distinct ones; ``rows``: how many rows)."""
    return not is_integral(values) or n_levels > MAX_CLASSES or n_levels > max(2, rows // 2)


# --------------------------------------------------------------------------------------------
# column roles


@dataclass
class Roles:
    """What each column is for: a feature of some kind, the target, or ignored (and why).

    ``numeric`` columns are imputed and standardized; ``onehot`` are low-cardinality
    categoricals; ``target_encoded`` are high-cardinality ones; ``datetime`` are dates and
    times, which the preprocessor expands into numeric features (year, month, ...);
    ``ignored`` maps a column to the reason it is left out; ``reasons`` says why each feature
    got its role.

    >>> roles = Roles(target="y", task="binary", numeric=["x"])
    >>> Roles.from_dict(roles.to_dict()) == roles
    True
    """

    target: str
    task: str
    numeric: list[str] = field(default_factory=list)
    onehot: list[str] = field(default_factory=list)
    target_encoded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    datetime: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        """The columns that feed the network."""
        return [*self.numeric, *self.onehot, *self.target_encoded, *self.datetime]

    @property
    def categorical(self) -> list[str]:
        return [*self.onehot, *self.target_encoded]

    def role(self, column: str) -> str:
        if column == self.target:
            return "target"
        for role in ("numeric", "onehot", "target_encoded", "datetime"):
            if column in getattr(self, role):
                return role
        if column in self.ignored:
            return "ignored"
        raise KeyError(column)

    def by_column(self) -> dict[str, dict[str, str]]:
        """``{column: {"role": ..., "reason": ...}}`` for every column, the target first (the
        form run files and reports store)."""
        rows = {self.target: {"role": "target", "reason": self.task}}
        rows.update({c: {"role": self.role(c), "reason": self.reasons.get(c, "")}
                     for c in self.features})
        rows.update({c: {"role": "ignored", "reason": why} for c, why in self.ignored.items()})
        return rows

    def describe(self) -> str:
        """A table, one line a column: its name, its role, and why.

        >>> print(Roles("y", "binary", numeric=["x"], reasons={"x": "numbers"}).describe())
        column  role     reason
        y       target   binary
        x       numeric  numbers
        """
        rows = [(self.target, "target", self.task)]
        rows += [(c, self.role(c), self.reasons.get(c, "")) for c in self.features]
        rows += list((c, "ignored", why) for c, why in self.ignored.items())
        rows = [("column", "role", "reason"), *rows]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; :meth:`from_dict` inverts it."""
        return {
            "target": self.target,
            "task": self.task,
            "numeric": list(self.numeric),
            "onehot": list(self.onehot),
            "target_encoded": list(self.target_encoded),
            "ignored": dict(self.ignored),
            "reasons": dict(self.reasons),
        } | ({"datetime": list(self.datetime)} if self.datetime else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Roles:
        return cls(
            target=d["target"],
            task=d["task"],
            numeric=list(d.get("numeric", [])),
            onehot=list(d.get("onehot", [])),
            target_encoded=list(d.get("target_encoded", [])),
            ignored=dict(d.get("ignored", {})),
            reasons=dict(d.get("reasons", {})),
            datetime=list(d.get("datetime", [])),  # none in models saved before dates
        )


def category_strings(values: pd.Series) -> pd.Series:
    """A categorical column as strings (object dtype), missing values as ``MISSING_LEVEL``.

    Numbers are written canonically so that the same level reads the same whether the column
    came as integers or floats (``7`` and ``7.0`` are both ``"7"``).

    >>> category_strings(pd.Series([7.0, None, 2.5])).tolist()
    ['7', '__missing__', '2.5']
    """

    def text(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return str(int(v)) if float(v).is_integer() else repr(float(v))
        return str(v)

    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # missing values get code -1
    levels = np.array([text(v) for v in uniques] + [MISSING_LEVEL], dtype=object)
    return pd.Series(levels[codes], index=values.index, name=values.name, dtype=object)


_WRITTEN_ORDERS = {"mdy": "month/day/year", "dmy": "day/month/year", "ymd": "year/month/day"}


def _row_index(s: pd.Series, position: int) -> str | None:
    """The reason ``s`` is a saved row index, or None.

    A row index is a column of distinct whole numbers that is unnamed (pandas reads an empty
    header as ``Unnamed: 0``), or a first column named ``index`` that counts 0..n-1 or 1..n.
    """
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or s.isna().any():
        return None
    if not (is_integral(s) and s.is_unique):
        return None
    name = str(s.name).strip()
    if _UNNAMED.match(name) or name == "":
        return "unnamed column of distinct whole numbers: a saved row index, not a feature"
    values = s.to_numpy()
    n = len(values)
    counts = np.array_equal(values, np.arange(n)) or np.array_equal(values, np.arange(1, n + 1))
    if position == 0 and name.lower() == "index" and counts:
        return f"counts the rows ({values[0]}..{values[-1]}): a saved row index, not a feature"
    return None


def check_names(df: pd.DataFrame, names: Iterable[str], argument: str, target: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in df.columns:
            raise DataError(
                f"unknown column {name!r} in {argument}{close_names(str(name), df.columns)}; "
                f"columns: {quote_names(df.columns)}"
            )
        if name == target:
            raise DataError(f"{argument} lists the target {target!r}; remove it from {argument}")
    return names


def onehot_limit(n_rows: int, max_onehot: int | None = None) -> int:
    """The most levels a categorical of ``n_rows`` training rows may have and be one-hot.

    ``max_onehot`` when given; otherwise ``n_rows // MIN_ROWS_PER_LEVEL`` levels (at least
    ``MAX_ONEHOT_LEVELS``, at most ``MAX_ONEHOT_WIDTH``). One-hot keeps each level's identity,
    which a target encoding reduces to one mean: hour 8 and hour 17 of a demand curve, a city,
    a firm. Measured (bench/encoding.py): better than target encoding for a city (46 levels),
    a protocol (14) and a firm (738 levels, 4.8 training rows each); worse for a player id
    (1,228 levels, 10.6 rows each) and a free-text job title (3,129 levels, 1.9 rows each),
    which the width cap and the rows per level keep target encoded.

    >>> onehot_limit(3000), onehot_limit(12), onehot_limit(10**6), onehot_limit(3000, 8)
    (750, 10, 1000, 8)
    """
    if max_onehot is not None:
        return int(max_onehot)
    return max(MAX_ONEHOT_LEVELS, min(n_rows // MIN_ROWS_PER_LEVEL, MAX_ONEHOT_WIDTH))


def infer_roles(
    df: pd.DataFrame,
    target: str,
    categorical: Iterable[str] = (),
    drop: Iterable[str] = (),
    task: str | None = None,
    max_onehot: int | None = None,
) -> Roles:
    """Decide the role of every column of ``df`` (see :class:`Roles`).

    - ``drop`` columns, constant columns, saved row indices (pandas' ``Unnamed: 0``, or a
      column that is just 0..n-1 or 1..n) and columns of lists or dicts (Parquet's nested
      types) are ignored, each with its reason;
    - text, boolean and category columns are categorical, and so are the ``categorical``
      columns (use it for integer codes such as IDs); a categorical with at most
      ``onehot_limit(len(df), max_onehot)`` levels is one-hot encoded, one with more is target
      encoded; a text column with a different value on every row is ignored as an identifier,
      and one with a value longer than ``MAX_LEVEL_LENGTH`` characters as free text;
    - date and time columns (datetimes, ISO date text, Python dates) are dates
      (``caviar.data.dates``), but for ``categorical`` ones;
    - other columns are numeric, durations as seconds. A text column whose values are nearly
      all numbers (at least ``NUMERIC_SHARE`` of them) is a numeric column with typos:
      DataError naming a bad value.

    ``task`` is inferred from the target when None.

    >>> df = pd.DataFrame({"Unnamed: 0": range(6), "x": [1.0, 2, 3, 4, 5, 6],
    ...                    "k": ["a", "b"] * 3, "y": [0, 1] * 3})
    >>> r = infer_roles(df, "y")
    >>> r.numeric, r.onehot, list(r.ignored)
    (['x'], ['k'], ['Unnamed: 0'])
    """
    check_target(df, target)
    categorical = check_names(df, categorical, "categorical", target)
    drop = check_names(df, drop, "drop", target)
    task = infer_task(df[target], task)
    roles = Roles(target=target, task=task)
    limit = onehot_limit(len(df), max_onehot)
    for position, col in enumerate(df.columns):
        if col == target:
            continue
        s = df[col]
        if col in drop:
            roles.ignored[col] = DROPPED
            continue
        nested = nested_kind(s)
        if nested is not None:
            roles.ignored[col] = (f"holds {nested}s, not single values; spread them into "
                                  "columns of their own to use them")
            continue
        n_distinct = s.nunique(dropna=False)
        if n_distinct <= 1:
            value = s.dropna().iloc[0] if s.notna().any() else None
            value = value.item() if isinstance(value, np.generic) else value
            roles.ignored[col] = ("all missing" if value is None
                                  else f"constant: a single value ({value!r})")
            continue
        if col not in categorical:
            why = _row_index(s, position)
            if why:
                roles.ignored[col] = why
                continue
        if pd.api.types.is_timedelta64_dtype(s):
            roles.numeric.append(col)
            roles.reasons[col] = "durations, in seconds"
            continue
        order = None if col in categorical else date_layout(s)
        if order is not None:
            roles.datetime.append(col)
            written = "" if order == "iso" else f" (read as {_WRITTEN_ORDERS[order]})"
            roles.reasons[col] = ("dates: year, month, day of week, hour, days since the "
                                  f"first{written}")
            continue
        is_category_dtype = isinstance(s.dtype, pd.CategoricalDtype)
        if col not in categorical and is_text(s) and not is_category_dtype:
            present = s.dropna()
            bad = bad_numbers(present)
            if len(bad) == 0:
                roles.numeric.append(col)
                roles.reasons[col] = "text holding numbers"
                continue
            if len(present) and 1 - len(bad) / len(present) >= NUMERIC_SHARE:
                row = bad.index[0]
                raise DataError(
                    f"column {col!r} holds numbers but {len(bad)} value(s) are text, such as "
                    f"{bad.iloc[0]!r} (row {row}); fix or blank them, or pass "
                    f"categorical=[{col!r}] to treat the column as categorical"
                )
        if is_text(s) and not is_category_dtype:
            longest = int(s.dropna().astype(str).str.len().max())
            if longest > MAX_LEVEL_LENGTH:
                roles.ignored[col] = (f"free text (values up to {longest:,} characters), "
                                      "not a category")
                continue
        is_categorical = (
            col in categorical or is_text(s) or pd.api.types.is_bool_dtype(s)
            or is_category_dtype
        )
        if not is_categorical:
            roles.numeric.append(col)
            roles.reasons[col] = f"numbers ({s.dtype})"
            continue
        levels = category_strings(s.dropna()).nunique()
        forced = " (categorical=...)" if col in categorical else ""
        if col not in categorical and levels == s.notna().sum() and levels >= 20:
            roles.ignored[col] = f"a different value on every row ({levels}): an identifier"
        elif levels <= limit:
            roles.onehot.append(col)
            roles.reasons[col] = f"categorical, {levels} levels (<= {limit}){forced}"
        else:
            roles.target_encoded.append(col)
            roles.reasons[col] = f"categorical, {levels} levels (> {limit}){forced}"
    if not roles.features and not roles.ignored:
        raise DataError(f"the table has no columns besides the target {target!r}; add the "
                        f"feature columns to predict it from")
    if not roles.features:
        raise DataError(
            f"no usable feature columns besides the target {target!r} "
            f"(ignored: {quote_names(roles.ignored)}); check the table and drop=..."
        )
    return roles
