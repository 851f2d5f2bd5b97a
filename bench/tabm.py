"""TabM-mini (``tabm_k`` sub-networks sharing one backbone) against the same network alone.

For each table and seed: the rows are split 80/20 (``split_frame``, the split ``search.py``
scores on), ``CaviarClassifier``/``CaviarRegressor`` fits on the 80% (a quarter of it
validates for early stopping: restore-best, ``--patience`` epochs without improvement, at
most ``--epochs``) and is scored on the 20%: RMSE in the target's units or log-loss. The
network is TabM's own default backbone (Gorishniy et al. 2024, TabM-D in pytabkit: three
layers of ``--width``, ReLU, dropout 0.1, AdamW at 2e-3, batch 256, no batch norm), read
through caviar's default preprocessing; only ``tabm_k`` changes between the variants.
``--max-rows N`` keeps a random N rows of a larger table first (seeded), so the large tables
take minutes, not hours, on a CPU.

``--configs-from SEARCH.json`` (a ``search.py`` output with caviar runs) takes instead each
table's best searched configuration (its leaderboard's first row) for the network, at most
twice its epochs, on that run's tables and seeds and all their rows: would TabM-mini of the
searched network do better than it alone, and than the search's own model (``search``)?

Run:  PYTHONPATH=src .venv/bin/python bench/tabm.py --tables hpc_data wage --seeds 0 1
      [--k 1 8 32] [--max-rows 8000] [--threads 1] [--configs-from SEARCH.json]
      --merge A.json B.json   (one report of runs split over processes)
Prints one JSON object to stdout and a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd
import torch
from tables import ANY_TABLE, load_table, test_score

from caviar import CaviarClassifier, CaviarRegressor
from caviar.data import split_frame
from caviar.hyperparams import HYPERPARAMETERS, resolve

BACKBONE = {"batch_norm": False, "dropout": 0.1, "optimizer": "adamw", "learning_rate": 2e-3,
            "weight_decay": 1e-5, "batch_size": 256, "activation": "relu"}


def searched_config(best: dict) -> dict:
    """The hyperparameters of a ``search.py`` leaderboard row (numbers, lists and booleans
    written as text there) as the vocabulary's values."""
    config = {}
    for name, row in HYPERPARAMETERS.items():
        if name not in best:
            continue
        value = best[name]
        if isinstance(value, str) and row.kind in ("sizes", "int", "bool"):
            value = json.loads(value.lower()) if row.kind == "bool" else json.loads(value)
        config[name] = value
    return dict(resolve(config))


def run(name: str, seed: int, ks: list[int], network: dict, patience: int,
        max_rows: int | None) -> dict:
    spec = ANY_TABLE[name]
    df = load_table(name).drop(columns=list(spec.drop))
    if max_rows and len(df) > max_rows:
        df = df.sample(max_rows, random_state=seed).reset_index(drop=True)
    train, val, test = split_frame(df, spec.target, spec.task, test_size=0.2, val_size=0.2,
                                   seed=seed)
    fit = pd.concat([train, val])
    X, y = fit.drop(columns=[spec.target]), fit[spec.target]
    X_test, y_test = test.drop(columns=[spec.target]), test[spec.target]
    estimator = CaviarRegressor if spec.task == "regression" else CaviarClassifier
    out = {"task": spec.task, "rows": len(df)}
    for k in ks:
        start = time.perf_counter()
        model = estimator(**{**network, "tabm_k": k}, n_iter_no_change=patience,
                          validation_fraction=0.25, categorical=list(spec.categorical),
                          random_state=seed).fit(X, y)
        out[f"k{k}"] = {"test": test_score(model, X_test, y_test, spec.task),
                        "epochs": model.n_iter_,
                        "seconds": round(time.perf_counter() - start, 2)}
        print(f"[{name} seed {seed}] k={k}: {out[f'k{k}']}", file=sys.stderr, flush=True)
    return out


def main_score(scores: dict) -> float:
    """The score ``search.py`` ranks by: RMSE, else log-loss."""
    return scores["rmse"] if "rmse" in scores else scores["log_loss"]


def summarize(runs: dict, ks: list[int]) -> dict:
    """Per table: each variant's mean test score over seeds (``k1``, ``k8``, ...; ``search``,
    the search's own model, with ``--configs-from``) and its ratio to the first k; over
    tables: the geometric mean of the ratios and on how many tables each variant is better."""
    columns = [f"k{k}" for k in ks]
    if all("search" in r for seed_runs in runs.values() for r in seed_runs.values()):
        columns.append("search")
    tables, ratios = {}, {c: [] for c in columns}
    names = sorted({t for seed_runs in runs.values() for t in seed_runs})
    for name in names:
        per_seed = [seed_runs[name] for seed_runs in runs.values() if name in seed_runs]
        row = {}
        for c in columns:
            tests = [main_score(r[c]) if c == "search" else r[c]["test"] for r in per_seed]
            row[c] = {"test": float(np.mean(tests)), "seconds": float(np.mean(
                [r[c].get("seconds", math.nan) for r in per_seed]))}
        for c in columns:
            row[c]["ratio"] = row[c]["test"] / row[columns[0]]["test"]
            ratios[c].append(row[c]["ratio"])
        tables[name] = row
    overall = {c: {"geometric_mean_ratio": math.exp(float(np.mean(np.log(r)))),
                   "better": sum(x < 1 for x in r), "tables": len(r)}
               for c, r in ratios.items()}
    return {"columns": columns, "tables": tables, "overall": overall}


def table(summary: dict) -> str:
    columns = summary["columns"]
    lines = ["| table | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, row in summary["tables"].items():
        cells = [f"{row[c]['test']:.4g} ({row[c]['ratio']:.3f}; {row[c]['seconds']:.0f} s)"
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    overall = summary["overall"]
    lines.append(f"| geometric mean / {columns[0]} (better on) | " + " | ".join(
        f"{overall[c]['geometric_mean_ratio']:.3f} ({overall[c]['better']} of "
        f"{overall[c]['tables']})" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=list(ANY_TABLE), default=list(ANY_TABLE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 8], help="tabm_k values")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=16)
    parser.add_argument("--max-rows", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", nargs="+", metavar="JSON")
    parser.add_argument("--configs-from", metavar="SEARCH_JSON")
    args = parser.parse_args()
    if args.merge:
        parts = [json.load(open(path)) for path in args.merge]
        runs: dict = {}
        for part in parts:
            for seed, seed_runs in part["runs"].items():
                runs.setdefault(seed, {}).update(seed_runs)
        ks = parts[0]["k"]
        result = {**parts[0], "runs": runs, "summary": summarize(runs, ks)}
    else:
        torch.set_num_threads(args.threads)
        ks = args.k
        backbone = {**BACKBONE, "hidden_layer_sizes": (args.width,) * 3, "epochs": args.epochs}
        if args.configs_from:
            runs = {}
            for seed, seed_runs in json.load(open(args.configs_from))["runs"].items():
                runs[seed] = {}
                for name, result in seed_runs.items():
                    if name not in args.tables or "best" not in result.get("caviar", {}):
                        continue
                    network = searched_config(result["caviar"]["best"])
                    network["epochs"] *= 2  # room for early stopping to find its best
                    # every row, so the test rows are the search's
                    runs[seed][name] = {**run(name, int(seed), ks, network, args.patience,
                                              None), "network": network,
                                        "search": result["caviar"]["test"]}
        else:
            runs = {str(seed): {name: run(name, seed, ks, backbone, args.patience,
                                          args.max_rows) for name in args.tables}
                    for seed in args.seeds}
        result = {"k": ks, "width": args.width, "epochs": args.epochs,
                  "patience": args.patience, "max_rows": args.max_rows, "backbone": BACKBONE,
                  "runs": runs, "summary": summarize(runs, ks)}
    print(json.dumps(result, indent=1))
    print(table(result["summary"]), file=sys.stderr)


if __name__ == "__main__":
    main()
