"""Reading tables: CSV (plain or compressed), TSV, Parquet and Excel (.xlsx) files, or a
DataFrame, by what their bytes are rather than their names.

>>> import pandas as pd
>>> read_table(pd.DataFrame({"a": [1, 2]})).shape
(2, 1)
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from caviar.data.errors import DataError, one_line, quote_names
from caviar.data.numbers import is_text, nested_kind
from caviar.hyperparams import close_names

__all__ = ["read_table", "MISSING_MARKERS"]

# What files write in a value's place when there is none, beyond the NA strings pandas reads
# as missing already (NA, N/A, NULL, #N/A, ...): the question mark of the UCI repository's
# tables, and the error values a spreadsheet saves in a cell whose formula failed. As text
# they would make a column of numbers a category (a value per number) or an error.
MISSING_MARKERS = ("?", "#DIV/0!", "#VALUE!", "#REF!", "#NUM!", "#NAME?", "#NULL!")


def read_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read a CSV (also compressed, e.g. ``.csv.gz``), TSV, Parquet or Excel workbook (its
    first sheet) file, or copy a DataFrame.

    Column names become strings; ``MISSING_MARKERS`` in text columns become missing values
    (one warning names the columns). Raises :class:`DataError` for a missing, empty or
    unreadable file.

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
        raise DataError(f"{name} has duplicate column names {quote_names(dupes)}; rename them")
    if df.shape[1] == 0:
        raise DataError(f"{name} has no columns; check that it is the right table")
    if len(df) == 0:
        raise DataError(f"{name} has a header but no rows; check that it is the right table")
    return _blank_missing_markers(df, name)


def _blank_missing_markers(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """``df`` with ``MISSING_MARKERS`` as missing values (a text column of numbers then
    becomes numbers), and one warning naming the columns that held them."""
    found: dict[str, int] = {}
    markers: set[str] = set()
    for col in df.columns:
        s = df[col]
        if (not is_text(s) or isinstance(s.dtype, pd.CategoricalDtype)
                or nested_kind(s) is not None):  # lists hold no marker, and cannot be hashed
            continue
        levels = pd.Series(s.dropna().unique()).astype(str).str.strip()  # each value once
        if not levels.isin(MISSING_MARKERS).any():
            continue
        markers.update(levels[levels.isin(MISSING_MARKERS)])
        marked = s.notna() & s.astype(str).str.strip().isin(MISSING_MARKERS)
        found[col] = int(marked.sum())
        s = s.mask(marked)
        numbers = pd.to_numeric(s, errors="coerce")
        df[col] = numbers if bool((numbers.notna() == s.notna()).all()) else s
    if found:
        shown = " ".join(repr(m) for m in MISSING_MARKERS if m in markers)
        warnings.warn(f"{name}: read {sum(found.values())} value(s) {shown} as missing, in "
                      f"{quote_names(found)}", stacklevel=3)
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
    if suffixes and suffixes[-1] in (".xls", ".json", ".feather", ".pkl", ".pickle"):
        raise DataError(
            f"can't read {shown}: {suffixes[-1]} files are not supported; save it as CSV, "
            "Parquet or .xlsx"
        )
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"PAR1"):
            return _read_parquet(path, shown)
        if _is_workbook(path, magic, suffixes):
            return _read_workbook(path, shown, suffixes)
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
                        f"({one_line(e)[:120]}); download or compress it again") from None
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
        raise DataError(f"can't read {shown} as CSV ({one_line(e)[:200]}); check the file or "
                        "save it again as CSV or Parquet") from None
    except (ValueError, OSError) as e:
        raise DataError(f"can't read {shown} as CSV ({one_line(e)[:200]}); check the file or "
                        "save it again as CSV or Parquet") from None
    except Exception as e:  # a missing codec (zstd), pyarrow's own errors, ...
        raise DataError(f"can't read {shown} ({one_line(e)[:200]}); save it as CSV or "
                        "Parquet") from None


def _is_workbook(path: Path, magic: bytes, suffixes: list[str]) -> bool:
    """Whether the file is an Excel workbook (.xlsx: a ZIP archive holding xl/workbook.xml),
    or claims to be one by its name."""
    if suffixes and suffixes[-1] == ".xlsx":
        return True
    if not magic.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _read_workbook(path: Path, shown: str, suffixes: list[str]) -> pd.DataFrame:
    """The first sheet of an Excel workbook (openpyxl), with a warning when it has more, or
    when its name says it is something else."""
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = book.sheet_names
            df = pd.read_excel(book, sheet_name=sheets[0])
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise DataError(f"can't read {shown} as an Excel workbook ({one_line(e)[:120]}); "
                        "open it in a spreadsheet and save it again, or as CSV") from None
    if suffixes and suffixes[-1] != ".xlsx":
        warnings.warn(f"{shown} holds an Excel workbook, not {suffixes[-1][1:]}: reading it "
                      "as one", stacklevel=4)
    if len(sheets) > 1:
        warnings.warn(f"{shown} has {len(sheets)} sheets: reading the first, {sheets[0]!r}; "
                      "save the one you mean alone (or as CSV) to use another", stacklevel=4)
    return df


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip",
          b"\x28\xb5\x2f\xfd": "zstd"}
_COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}


def _compression(magic: bytes, suffixes: list[str], shown: str) -> str | None:
    """The compression the file's first bytes show (None: plain)."""
    found = next((kind for start, kind in _MAGIC.items() if magic.startswith(start)), None)
    named = _COMPRESSED.get(suffixes[-1]) if suffixes else None
    if found == "zip" and named != "zip":
        raise DataError(f"can't read {shown}: it is a ZIP archive, not CSV text; unzip it, "
                        "or name it .zip if it holds one CSV file")
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
        what = (f"it is not a valid Parquet file ({one_line(e)[:120]})" if complete else
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
        if is_text(values) and len(values):
            text = values.astype(str).str.strip()
            if text.str.match(_DECIMAL_COMMA).all() and text.str.contains(",").any():
                return True
    return False
