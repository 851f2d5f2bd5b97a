"""Write the hostile-file corpus of this folder: ``python tests/data/bad/make_corpus.py``.

The files are committed; this script documents how each was made and remakes them byte for
byte. Most share one schema, a reference table's: ``x`` (numbers), ``k`` (a category a/b/c)
and ``y`` (the target, no/yes), so a model trained on ``reference.csv`` can predict them.
MANIFEST.toml says what caviar must answer for each one.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROWS = 30


def reference(rows: int = ROWS) -> pd.DataFrame:
    """x, k, y: a learnable binary task (y is mostly x > 0)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=rows).round(3)
    k = rng.choice(["a", "b", "c"], size=rows)
    y = np.where(x + rng.normal(scale=0.3, size=rows) > 0, "yes", "no")
    return pd.DataFrame({"x": x, "k": k, "y": y})


def csv(df: pd.DataFrame, **kwargs) -> bytes:
    return df.to_csv(index=False, lineterminator="\n", **kwargs).encode()


def parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def workbook(sheets: dict[str, pd.DataFrame]) -> bytes:
    """An Excel workbook (openpyxl) of these sheets, in order; the same bytes every time (its
    archive's dates and the document's own created and modified times fixed)."""
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        for name, df in sheets.items():
            df.to_excel(writer, sheet_name=name, index=False)
    fixed = io.BytesIO()
    with zipfile.ZipFile(buf) as made, zipfile.ZipFile(fixed, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in made.infolist():
            data = made.read(entry)
            if entry.filename == "docProps/core.xml":
                data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2026-01-01T00:00:00Z", data)
            out.writestr(zipfile.ZipInfo(entry.filename, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return fixed.getvalue()


def files() -> dict[str, bytes]:
    ref = reference()
    out: dict[str, bytes] = {"reference.csv": csv(ref)}

    # ------------------------------------------------------------------ empty and tiny
    out["empty.csv"] = b""
    out["blank_lines.csv"] = b"\n\n   \n"
    out["header_only.csv"] = b"x,k,y\n"
    out["one_row.csv"] = csv(ref.head(1))
    out["four_rows.csv"] = csv(ref.head(4))
    out["three_rows_numbers.csv"] = csv(ref.head(3).assign(y=[0.5, 1.5, 2.5]))
    out["two_rows_numbers.csv"] = csv(ref.head(2).assign(y=[0.5, 1.5]))

    # ------------------------------------------------------------------ columns
    dup = ref.copy()
    dup.insert(1, "x ", dup["x"] * 2)
    out["duplicate_columns.csv"] = csv(dup).replace(b"x,x ,k", b"x,x,k", 1)
    out["target_absent.csv"] = csv(ref.rename(columns={"y": "label"}))
    out["target_only.csv"] = csv(ref[["y"]])
    out["all_missing_column.csv"] = csv(ref.assign(z=np.nan))
    out["unnamed_index.csv"] = ref.to_csv(lineterminator="\n").encode()  # ",x,k,y"
    out["header_spaces.csv"] = csv(ref).replace(b"x,k,y", b" x , k , y ", 1)
    out["reordered_columns.csv"] = csv(ref[["y", "k", "x"]])
    out["missing_feature.csv"] = csv(ref[["x", "y"]])
    out["extra_column.csv"] = csv(ref.assign(z=np.arange(ROWS) % 4))

    # ------------------------------------------------------------------ the target
    out["target_constant.csv"] = csv(ref.assign(y=3.0))
    out["target_all_missing.csv"] = csv(ref.assign(y=np.nan))
    out["single_class.csv"] = csv(ref.assign(y="yes"))
    one = ref.copy()
    one.loc[2, "y"] = "maybe"  # a third class with a single row
    out["class_with_one_row.csv"] = csv(one)
    rare = ref.copy()
    rare["y"] = "no"
    rare.loc[[3, 17], "y"] = "yes"  # a binary target with two positives
    out["rare_positive.csv"] = csv(rare)
    inf_target = ref.assign(y=(ref["x"] * 10).round(2))
    inf_target.loc[4, "y"] = np.inf
    out["target_inf.csv"] = csv(inf_target)
    typo = ref.assign(y=(ref["x"] * 10).round(2).astype(object))
    typo.loc[5, "y"] = "oops"  # numbers, and one typo that would make every number a class
    out["target_numbers_with_a_typo.csv"] = csv(typo)
    out["every_class_one_row.csv"] = csv(ref.assign(y=[f"id{i}" for i in range(ROWS)]))
    # an order number as the target: 1,001 classes of two rows each
    many = reference(2002).assign(y=[f"order{i // 2}" for i in range(2002)])
    out["too_many_classes.csv"] = csv(many)
    # three classes of two rows, the rest of one, and a 15-level category to target-encode
    out["nearly_every_class_one_row.csv"] = csv(ref.assign(
        k=[f"k{i % 15}" for i in range(ROWS)], y=[f"id{i % (ROWS - 3)}" for i in range(ROWS)]))

    # ------------------------------------------------------------------ values
    text = csv(ref).decode().splitlines(keepends=True)
    text[8] = text[8].replace(text[8].split(",")[0], "?", 1)  # a UCI-style missing value
    out["text_in_numeric.csv"] = "".join(text).encode()
    marked = ref.astype({"x": object})
    marked.loc[::3, "x"] = "?"
    out["question_marks.csv"] = csv(marked)
    mixed = ref.assign(code=[str(i) if i % 2 else f"A{i}" for i in range(ROWS)])
    out["mixed_types.csv"] = csv(mixed)
    inf = ref.copy().astype({"x": object})
    inf.loc[2, "x"], inf.loc[11, "x"] = "inf", "-inf"
    out["infinity.csv"] = csv(inf)
    huge = ref.assign(x=ref["x"] * 1e307)
    out["huge_numbers.csv"] = csv(huge)
    out["unseen_category.csv"] = csv(ref.assign(k=["d", "a", "e"] * (ROWS // 3)))
    quoted = ref.copy().astype({"k": object})
    quoted.loc[[1, 6], "k"] = ["a\nsecond line", 'say "b"\nthen c']
    out["quoted_newlines.csv"] = csv(quoted)

    # ------------------------------------------------------------------ encodings, dialects
    accents = ref.assign(k=ref["k"].map({"a": "café", "b": "crème", "c": "ñandú"}))
    out["latin1.csv"] = csv(accents).decode().encode("latin-1")
    out["utf8_bom.csv"] = b"\xef\xbb\xbf" + csv(accents)
    out["utf16_excel.txt"] = csv(accents, sep="\t").decode().encode("utf-16")  # with a BOM
    out["semicolon_decimal_comma.csv"] = csv(ref, sep=";", decimal=",")
    # x as a spreadsheet exports an amount: "$0.386", "-$1.234" (the same numbers)
    dollars = ["-$" + f"{-v:,}" if v < 0 else "$" + f"{v:,}" for v in ref["x"]]
    out["currency_numbers.csv"] = csv(ref.assign(x=dollars))
    out["tab_separated.csv"] = csv(ref, sep="\t")
    out["crlf.csv"] = csv(ref).replace(b"\n", b"\r\n")
    out["cr_only.csv"] = csv(ref).replace(b"\n", b"\r")
    lines = csv(ref).decode().splitlines(keepends=True)
    lines[12] = lines[12].rstrip("\n") + ",extra\n"
    out["ragged_rows.csv"] = "".join(lines).encode()
    lines = csv(ref).decode().splitlines(keepends=True)
    lines[20] = lines[20].replace(",", ',"', 1)  # a quote that is never closed
    out["unbalanced_quote.csv"] = "".join(lines).encode()

    # ------------------------------------------------------------------ formats
    out["parquet_named.csv"] = parquet(ref)
    out["truncated_parquet.parquet"] = parquet(ref)[: len(parquet(ref)) // 2]
    out["csv_named.parquet"] = csv(ref)
    out["list_column.parquet"] = parquet(ref.assign(tags=[[i, i + 1] for i in range(ROWS)]))
    out["list_target.parquet"] = parquet(ref.assign(y=[[i] for i in range(ROWS)]))
    packed = gzip.compress(csv(ref), mtime=0)
    out["truncated.csv.gz"] = packed[: len(packed) // 2]
    out["not_gzip.csv.gz"] = csv(ref)
    out["png_named.csv"] = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00"
                            b"\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
    out["workbook.xlsx"] = workbook({"data": ref})
    out["workbook_sheets.xlsx"] = workbook({"data": ref, "notes": pd.DataFrame(
        {"note": ["made by make_corpus.py"]})})
    out["workbook_named.csv"] = out["workbook.xlsx"]  # an Excel file saved as "data.csv"
    out["damaged_workbook.xlsx"] = b"PK\x03\x04" + b"\x00" * 26
    return out


def main() -> None:
    for name, data in files().items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files())} files to {HERE}")


if __name__ == "__main__":
    main()
