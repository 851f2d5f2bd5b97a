"""Tables in: reading files, the task, column roles, and splits.

Every problem with the user's data is a :class:`DataError` whose message is one line naming the
problem and the fix, so the command line can print it as is.

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

import bz2
import gzip
import lzma
import math
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caviar.hyperparams import TASKS, close_names

__all__ = [
    "DataError",
    "Roles",
    "read_table",
    "infer_task",
    "infer_roles",
    "check_target",
    "drop_missing_target",
    "split_frame",
    "time_split",
    "group_split",
    "holdout",
    "MAX_ONEHOT_LEVELS",
    "MIN_ROWS_PER_LEVEL",
    "MAX_ONEHOT_WIDTH",
    "onehot_limit",
    "MAX_CLASSES",
    "NUMERIC_SHARE",
    "MAX_LEVEL_LENGTH",
    "MISSING_LEVEL",
    "to_numbers",
]

MAX_ONEHOT_LEVELS = 10  # categoricals with at most this many levels are always one-hot
MIN_ROWS_PER_LEVEL = 4  # more levels are one-hot while they have this many rows on average
MAX_ONEHOT_WIDTH = 1000  # and up to this many levels (one-hot columns are dense float32)
MAX_CLASSES = 20  # an integer target with more distinct values is a regression target
NUMERIC_SHARE = 0.95  # a text column whose values parse as numbers this often is numeric
MAX_LEVEL_LENGTH = 1000  # a text column with longer values is free text, not a category
DROPPED = "dropped by the user (drop=...)"  # the reason of a column the user left out
MISSING_LEVEL = "__missing__"  # the level a missing categorical value becomes

_UNNAMED = re.compile(r"^Unnamed: \d+$")  # what pandas calls a column with an empty header


class DataError(ValueError):
    """A problem with the user's data; the message is one line naming the problem and the fix."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _names(cols: Iterable[Any], limit: int = 8) -> str:
    cols = [str(c) for c in cols]
    shown = ", ".join(repr(c) for c in cols[:limit])
    return shown + (f" and {len(cols) - limit} more" if len(cols) > limit else "")


# --------------------------------------------------------------------------------------------
# reading


def read_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read a CSV (also compressed, e.g. ``.csv.gz``), TSV or Parquet file, or copy a DataFrame.

    Column names become strings. Raises :class:`DataError` for a missing, empty or unreadable
    file.

    >>> read_table(pd.DataFrame({"a": [1, 2]})).shape
    (2, 1)
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy()
        name = "the DataFrame"
    elif isinstance(source, (str, Path)):
        df = _read_file(Path(source))
        name = repr(str(source))
    else:
        raise DataError(
            f"can't read a {type(source).__name__}; pass a CSV or Parquet path or a DataFrame"
        )
    df.columns = [str(c) for c in df.columns]
    dupes = df.columns[df.columns.duplicated()].unique().tolist()
    if dupes:
        raise DataError(f"{name} has duplicate column names {_names(dupes)}; rename them")
    if df.shape[1] == 0:
        raise DataError(f"{name} has no columns; check that it is the right table")
    if len(df) == 0:
        raise DataError(f"{name} has a header but no rows; check that it is the right table")
    return df


def _read_file(path: Path) -> pd.DataFrame:
    """A file as a DataFrame. What the bytes are decides how they are read, not the name:
    Parquet by its magic number, compression by its header, text as UTF-8 (UTF-16 with a byte
    order mark; else Windows-1252 or Latin-1, with a warning), the separator from the header
    line (comma, semicolon with or without decimal commas, tab or bar)."""
    shown = repr(str(path))
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            hint = close_names(path.name, [p.name for p in path.parent.iterdir()])
        raise DataError(f"file {shown} not found{hint}; check the path")
    if path.is_dir():
        raise DataError(f"{shown} is a folder; pass a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"file {shown} is empty; pass a CSV or Parquet file with a header row")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".xlsx", ".xls", ".json", ".feather", ".pkl", ".pickle"):
        raise DataError(
            f"can't read {shown}: {suffixes[-1]} files are not supported; save it as CSV or Parquet"
        )
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"PAR1"):
            return _read_parquet(path, shown)
        compression = _compression(magic, suffixes, shown)
        head = _head(path, compression)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"  # Excel's "Unicode text"
        elif b"\x00" in head:
            raise DataError(f"can't read {shown}: it is a binary file, not CSV text; save it "
                            "as CSV (UTF-8) or Parquet")
        else:
            encoding = "utf-8"
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            warnings.warn(f"{shown} holds text, not Parquet: reading it as CSV", stacklevel=3)
        return _read_text(path, shown, suffixes, compression, encoding)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(
            f"file {shown} has no data; pass a CSV or Parquet file with a header row"
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
        raise DataError(f"can't read {shown}: the compressed data is truncated or damaged "
                        f"({_one_line(e)[:120]}); download or compress it again") from None
    except pd.errors.ParserError as e:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if fields:
            want, line, saw = fields.groups()
            raise DataError(f"can't read {shown}: line {line} has {saw} fields but the header "
                            f"has {want}; fix that line (an unquoted separator in a value?)"
                            ) from None
        quote = re.search(r"EOF inside string starting at row (\d+)", str(e))
        if quote:  # pandas counts lines from 0
            raise DataError(f"can't read {shown}: a quote (\") on line {int(quote[1]) + 1} "
                            "opens a value that never ends; close or remove that quote") from None
        raise DataError(f"can't read {shown} as CSV ({_one_line(e)[:200]}); check the file or "
                        "save it again as CSV or Parquet") from None
    except (ValueError, OSError) as e:
        raise DataError(f"can't read {shown} as CSV ({_one_line(e)[:200]}); check the file or "
                        "save it again as CSV or Parquet") from None
    except Exception as e:  # a missing codec (zstd), pyarrow's own errors, ...
        raise DataError(f"can't read {shown} ({_one_line(e)[:200]}); save it as CSV or "
                        "Parquet") from None


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip",
          b"\x28\xb5\x2f\xfd": "zstd"}
_COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}


def _compression(magic: bytes, suffixes: list[str], shown: str) -> str | None:
    """The compression the file's first bytes show (None: plain)."""
    found = next((kind for start, kind in _MAGIC.items() if magic.startswith(start)), None)
    named = _COMPRESSED.get(suffixes[-1]) if suffixes else None
    if found == "zip" and named != "zip":
        raise DataError(f"can't read {shown}: it is a ZIP archive (an Excel workbook?), not "
                        "CSV text; save it as CSV or Parquet")
    if named and found is None:
        warnings.warn(f"{shown} is not {named}-compressed despite its name: reading it as "
                      "plain text", stacklevel=4)
    return found


def _head(path: Path, compression: str | None, size: int = 1 << 16) -> bytes:
    """The first bytes of the file's content (decompressed), for the text checks."""
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression or "")
    if compression is not None and opener is None:
        return b""  # zip, zstd: left to pandas
    with (opener or open)(path, "rb") as f:
        return f.read(size)


def _read_parquet(path: Path, shown: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises its own error types
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4))
            complete = f.read(4) == b"PAR1"
        what = (f"it is not a valid Parquet file ({_one_line(e)[:120]})" if complete else
                "the Parquet file is truncated (it has no footer)")
        raise DataError(f"can't read {shown}: {what}; write it again") from None


_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$|^[+-]?\d+$")


def _read_text(path: Path, shown: str, suffixes: list[str], compression: str | None,
               encoding: str) -> pd.DataFrame:
    """Read CSV text in ``encoding``, falling back from UTF-8 to Windows-1252 or Latin-1."""
    try:
        return _read_csv(path, suffixes, compression=compression, encoding=encoding)
    except UnicodeDecodeError:
        if encoding != "utf-8":
            raise DataError(f"can't read {shown}: it is not valid {encoding} text; save it as "
                            "CSV (UTF-8) or Parquet") from None
    for fallback, name in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            df = _read_csv(path, suffixes, compression=compression, encoding=fallback)
        except UnicodeDecodeError:
            continue
        warnings.warn(f"{shown} is not UTF-8 text: read it as {name}; check its accented "
                      "letters, or save it as UTF-8", stacklevel=4)
        return df
    raise AssertionError("Latin-1 decodes any bytes")


def _read_csv(path: Path, suffixes: list[str], **kwargs: Any) -> pd.DataFrame:
    """CSV with the separator the header line uses, and the header's names as written."""
    sep = "\t" if ".tsv" in suffixes else ","
    df = pd.read_csv(path, sep=sep, **kwargs)
    if df.shape[1] == 1 and sep == ",":
        other = next((s for s in (";", "\t", "|") if s in str(df.columns[0])), None)
        if other is not None:
            sep = other
            df = pd.read_csv(path, sep=sep, **kwargs)
    if sep == ";" and _has_decimal_commas(df):
        df = pd.read_csv(path, sep=sep, decimal=",", **kwargs)
    # pandas renames repeated names (x, x.1) and keeps spaces around names: take the header
    # row as written, stripped, so duplicates are caught and " y " is y
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, na_filter=False,
                         **kwargs)
    names = [str(v).strip() for v in header.iloc[0]] if len(header) else []
    if len(names) == df.shape[1]:
        df.columns = [name or str(old) for name, old in zip(names, df.columns)]
    return df


def _has_decimal_commas(df: pd.DataFrame) -> bool:
    """Whether a text column holds numbers written with a decimal comma (3,14)."""
    for col in df.columns:
        values = df[col].dropna()
        if _text_values(values) and len(values):
            text = values.astype(str).str.strip()
            if text.str.match(_DECIMAL_COMMA).all() and text.str.contains(",").any():
                return True
    return False


# --------------------------------------------------------------------------------------------
# the target and the task


def check_target(df: pd.DataFrame, target: str) -> None:
    """DataError, with close names, if ``target`` is not a column of ``df``."""
    if target not in df.columns:
        raise DataError(
            f"target column {target!r} not found{close_names(str(target), df.columns)}; "
            f"columns: {_names(df.columns)}"
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


def _integral(values: pd.Series) -> bool:
    """Whether a numeric series holds whole numbers only (ints, or floats like 3.0)."""
    if pd.api.types.is_integer_dtype(values):
        return True
    v = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(v)) and np.all(v == np.round(v)))


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
    text = _text_values(y) and not isinstance(y.dtype, pd.CategoricalDtype)
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
        return task
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
    return "binary" if n_levels == 2 else "multiclass"


def _looks_continuous(values: pd.Series, n_levels: int, rows: int) -> bool:
    """Numbers that are a regression target, not labels: not whole, or too many levels
    (``values``: the rows' numbers or their distinct ones; ``rows``: how many rows)."""
    return not _integral(values) or n_levels > MAX_CLASSES or n_levels > max(2, rows // 2)


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


_ISO_DATE = r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"


def is_date_text(s: pd.Series) -> bool:
    """Whether a text column holds ISO dates or times (2021-03-31, 2021-03-31 14:05:00), every
    value present, so that it parses as dates the same way on every table."""
    if not _text_values(s) or pd.api.types.is_datetime64_any_dtype(s):
        return False
    present = s.dropna()
    if not len(present) or not all(isinstance(v, str) for v in present.head(100)):
        return False
    return bool(present.astype(str).str.strip().str.match(_ISO_DATE).all())


def _text_values(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s)
                or pd.api.types.is_timedelta64_dtype(s))


# A number as spreadsheets write it: thousands separators (1,234.5), a currency sign before
# it ($12, -€3.50, $-3.50), a percent after it (12.5%), or an accountant's negative in
# parentheses (($1,234.00)); ``to_numbers`` reads these.
_FORMATTED_NUMBER = re.compile(
    r"^(?P<sign>[-+(]?)[$€£¥]?(?P<sign2>[-+]?)"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?P<percent>%?)(?P<close>\)?)$")


def _formatted_number(text: str) -> float:
    """The number ``text`` writes in one of the forms above, or NaN."""
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
    number 1234, not 1,000 levels of a category.

    >>> to_numbers(pd.Series(["1,234.5", "$12", "-€3.50", "(£40)", "12%", "7", None, "n/a"])
    ...            ).tolist()
    [1234.5, 12.0, -3.5, -40.0, 0.12, 7.0, nan, nan]
    """
    parsed = pd.to_numeric(s, errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    unread = (parsed.isna() & s.notna()).to_numpy()
    if unread.any() and _text_values(s):  # read once per distinct value, not per row
        text = s[unread]
        levels = pd.Series(text.unique())
        # one vectorized match first, so that a text column of labels or IDs (a million
        # distinct values) costs no Python call per value
        written = levels[levels.astype(str).str.strip().str.match(_FORMATTED_NUMBER)]
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


def _row_index(s: pd.Series, position: int) -> str | None:
    """The reason ``s`` is a saved row index, or None.

    A row index is a column of distinct whole numbers that is unnamed (pandas reads an empty
    header as ``Unnamed: 0``), or a first column named ``index`` that counts 0..n-1 or 1..n.
    """
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or s.isna().any():
        return None
    if not (_integral(s) and s.is_unique):
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


def _check_names(df: pd.DataFrame, names: Iterable[str], argument: str, target: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in df.columns:
            raise DataError(
                f"unknown column {name!r} in {argument}{close_names(str(name), df.columns)}; "
                f"columns: {_names(df.columns)}"
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
    - other columns are numeric. A text column whose values are nearly all numbers (at least
      ``NUMERIC_SHARE`` of them) is a numeric column with typos: DataError naming a bad value.

    ``task`` is inferred from the target when None.

    >>> df = pd.DataFrame({"Unnamed: 0": range(6), "x": [1.0, 2, 3, 4, 5, 6],
    ...                    "k": ["a", "b"] * 3, "y": [0, 1] * 3})
    >>> r = infer_roles(df, "y")
    >>> r.numeric, r.onehot, list(r.ignored)
    (['x'], ['k'], ['Unnamed: 0'])
    """
    check_target(df, target)
    categorical = _check_names(df, categorical, "categorical", target)
    drop = _check_names(df, drop, "drop", target)
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
            roles.ignored[col] = "durations are not supported; convert them to numbers"
            continue
        if col not in categorical and (pd.api.types.is_datetime64_any_dtype(s)
                                       or is_date_text(s)):
            roles.datetime.append(col)
            roles.reasons[col] = "dates: year, month, day of week, hour, days since the first"
            continue
        is_category_dtype = isinstance(s.dtype, pd.CategoricalDtype)
        if col not in categorical and _text_values(s) and not is_category_dtype:
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
        if _text_values(s) and not is_category_dtype:
            longest = int(s.dropna().astype(str).str.len().max())
            if longest > MAX_LEVEL_LENGTH:
                roles.ignored[col] = (f"free text (values up to {longest:,} characters), "
                                      "not a category")
                continue
        is_categorical = (
            col in categorical or _text_values(s) or pd.api.types.is_bool_dtype(s)
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
            f"(ignored: {_names(roles.ignored)}); check the table and drop=..."
        )
    return roles


# --------------------------------------------------------------------------------------------
# splits


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

    if size == 0:
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
    if not (0 <= test_size < 1 and 0 <= val_size < 1 and test_size + val_size < 1):
        raise DataError(
            f"test_size and val_size must be in [0, 1) with a sum below 1, got {test_size} "
            f"and {val_size}"
        )
    df = drop_missing_target(df, target)
    task = infer_task(df[target], task)
    if task != "regression":
        counts = df[target].value_counts()
        single = counts.index[counts == 1].tolist()
        if len(single) == len(counts) and (test_size or val_size):
            raise DataError(
                f"every class of target {target!r} has a single row, such as "
                f"{_jsonable(single[0])!r}: no row can be validated or tested; is it an ID? "
                f"pick the column that holds the labels")
        if single and (test_size or val_size):
            warnings.warn(
                f"{len(single)} class(es) of the target have a single row, such as "
                f"{_jsonable(single[0])!r}: they are trained on but never validated or "
                f"tested; add rows of them, or drop those rows", stacklevel=2)
    rest, test = holdout(df, target, task, test_size, seed)
    train, val = holdout(rest, target, task, val_size / (1 - test_size), seed + 1)
    if len(train) == 0:
        raise DataError(f"no training rows left from {len(df)} rows; lower test_size/val_size")
    return train, val, test


def _shares(test_size: float, val_size: float) -> None:
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
    try:
        return pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError):
        pass
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
    _shares(test_size, val_size)
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

    _shares(test_size, val_size)
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


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
