"""(A probe) How well ``budget.epoch_cost`` prices the epochs a real search runs, and the
constants a fit to those epochs gives.

`--seed S --count N`: ``caviar.tune`` on ``any_tables.py``'s draws and splits (a time budget
each, in this process), every epoch the scheduler runs timed (``Tuner.paced_epoch``) and
written as one JSON line: the table, the members, the counts ``budget.epoch_terms`` prices
(steps, multiply-adds, unit-rows, parameter-steps) and the seconds it took. A population's
first epoch (which pays for warming up) is marked.

`--fit FILE [FILE ...]`: the four constants fitted to the epochs of the even-numbered tables
(non-negative least squares on relative error), then, on the odd-numbered tables (not
fitted on), each epoch's estimate / measured seconds under the shipped constants and the
fitted ones, after each run's own speed (its measured / estimated seconds, as the tuner
scales its estimates): the median and third quartile of |log ratio|, by members. Solved
epochs (``solver="exact"``, priced by their own formula; recorded since seed 401) are left
out of the fit and reported apart: measured / (estimate × the run's speed).

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/epoch_cost.py --seed 391 --count 20 \
        > results.jsonl
    .venv/bin/python bench/epoch_cost.py --fit results.jsonl bench/results-epoch-cost-*.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).parent))
from any_tables import draw_tables, split  # noqa: E402

import caviar  # noqa: E402
from caviar.search import budget  # noqa: E402
from caviar.search.scheduler import Tuner  # noqa: E402

SHIPPED = (budget.STEP_S, budget.MAC_S, budget.UNIT_S, budget.PARAM_S)


def record_epochs(sink: list[dict]):
    """Wrap ``Tuner.paced_epoch`` so that every epoch it runs is timed into ``sink``."""
    paced = Tuner.paced_epoch

    def timed(self, population, train):
        s = population.structure
        first = int(population.epoch.max()) == 0

        def run():
            started = time.perf_counter()
            train()
            seconds = time.perf_counter() - started
            epoch = {"members": population.size, "plr": len(s.plr_columns),
                     "estimate": budget.epoch_cost(population, self._cost_rows),
                     "seconds": seconds}
            if s.exact:  # priced by its own formula: its estimate, not the terms
                sink.append({**epoch, "exact": True, "inputs": s.layer_sizes[0]})
            else:
                sink.append({**epoch, "first": first, "hidden": list(s.hidden_layer_sizes),
                             "batch": s.batch_size, "tabm_k": s.tabm_k,
                             "terms": budget.epoch_terms(s, self._cost_rows, population.size)})
        return paced(self, population, run)

    Tuner.paced_epoch = timed


def measure(seed: int, count: int, seconds: float, min_rows: int, max_rows: int) -> None:
    epochs: list[dict] = []
    record_epochs(epochs)
    for i, (name, df) in enumerate(draw_tables(count, seed, max_rows, min_rows)):
        target, train, _ = split(df, seed + i)
        epochs.clear()
        with tempfile.TemporaryDirectory() as folder:
            try:
                caviar.tune(train, target, time_budget=seconds, seed=seed, out=folder)
            except Exception as error:  # noqa: BLE001 - a table caviar refuses is skipped
                print(json.dumps({"table": name, "error": str(error)[:200]}), flush=True)
                continue
        for e in epochs:
            print(json.dumps({"table": name, "index": i, **e}), flush=True)


def features(r: dict, extended: bool) -> list[float]:
    """An epoch's priced counts: ``epoch_terms``', with ``extended`` an epoch's own fixed
    count (1) and its members (each reported, checked for pruning) before them."""
    return [1.0, float(r["members"]), *r["terms"]] if extended else list(r["terms"])


def fit_constants(rows: list[dict], extended: bool) -> np.ndarray:
    """Non-negative least squares on relative error (each row divided by its seconds)."""
    terms = np.array([features(r, extended) for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    scale = terms.max(axis=0)
    solved, _ = nnls(terms / scale / seconds[:, None], np.ones(len(rows)))
    return solved / scale


def speeds(rows: list[dict], estimate) -> dict[str, float]:
    """Each table's run speed as the tuner measures it: its epochs' measured seconds over
    their ``estimate``s."""
    totals: dict[str, list[float]] = {}
    for r in rows:
        measured, estimated = totals.setdefault(r["table"], [0.0, 0.0])
        totals[r["table"]] = [measured + r["seconds"], estimated + estimate(r)]
    return {table: measured / estimated for table, (measured, estimated) in totals.items()}


def log_errors(check: list[dict], part: list[dict], constants, extended: bool) -> np.ndarray:
    """|log(estimate × the run's speed / measured)| of each epoch of ``part``, each run's
    speed taken over all its epochs in ``check``."""
    def estimate(r):
        return float(np.dot(features(r, extended), constants))
    speed = speeds(check, estimate)
    return np.array([abs(np.log(estimate(r) * speed[r["table"]] / r["seconds"]))
                     for r in part])


def fit(files: list[str]) -> None:
    rows_all = [json.loads(line) for f in files
                for line in (gzip.open(f, "rt") if f.endswith(".gz") else open(f))]
    rows = [r for r in rows_all if "terms" in r and not r["first"]]
    train = [r for r in rows if r["index"] % 2 == 0]
    check = [r for r in rows if r["index"] % 2 == 1]
    models = {"shipped": (np.array(SHIPPED), False),
              "fitted": (fit_constants(train, False), False),
              "fitted with epoch and member terms": (fit_constants(train, True), True)}
    out = {"epochs fitted": len(train), "tables fitted": len({r["table"] for r in train}),
           "epochs checked": len(check), "tables checked": len({r["table"] for r in check})}
    for name, (constants, extended) in models.items():
        out[name] = {"constants": [float(f"{c:.3g}") for c in constants]}
        for label, part in (("all", check),
                            ("1 member", [r for r in check if r["members"] == 1]),
                            ("2-4", [r for r in check if 2 <= r["members"] <= 4]),
                            ("5+", [r for r in check if r["members"] >= 5])):
            e = log_errors(check, part, constants, extended)
            out[name][label] = {"epochs": len(part), "median": round(float(np.median(e)), 3),
                                "q75": round(float(np.quantile(e, 0.75)), 3)}
    out["solved epochs"] = solved_prices(rows_all)
    print(json.dumps(out, indent=1))


def solved_prices(rows: list[dict]) -> dict:
    """The solved epochs' (``solver="exact"``) measured seconds / (their estimate × their
    run's speed, taken over its stepped epochs): how far the exact path's own formula prices
    them from the networks' (quartiles), on the tables that ran both."""
    stepped = [r for r in rows if "terms" in r and not r["first"] and "estimate" in r]
    speed = speeds(stepped, lambda r: r["estimate"])
    ratios = [r["seconds"] / (r["estimate"] * speed[r["table"]]) for r in rows
              if r.get("exact") and r["table"] in speed]
    if not ratios:
        return {"epochs": 0}
    q = np.quantile(ratios, [0.25, 0.5, 0.75])
    return {"epochs": len(ratios), "quartiles": [round(float(x), 2) for x in q]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--budget", type=float, default=15.0)
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--fit", nargs="+")
    args = parser.parse_args()
    if args.fit:
        fit(args.fit)
        return
    torch.set_num_threads(1)
    measure(args.seed, args.count, args.budget, args.min_rows, args.max_rows)


if __name__ == "__main__":
    main()
