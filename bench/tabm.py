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

Run:  PYTHONPATH=src .venv/bin/python bench/tabm.py --tables hpc_data wage --seeds 0 1
      [--k 1 8 32] [--max-rows 8000] [--threads 1]
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
from sklearn import metrics
from tables import ANY_TABLE, load_table

from caviar import CaviarClassifier, CaviarRegressor
from caviar.data import split_frame

BACKBONE = {"batch_norm": False, "dropout": 0.1, "optimizer": "adamw", "learning_rate": 2e-3,
            "weight_decay": 1e-5, "batch_size": 256, "activation": "relu"}


def score(task: str, y: pd.Series, model, X: pd.DataFrame) -> float:
    if task == "regression":
        return float(np.sqrt(metrics.mean_squared_error(y, model.predict(X))))
    return float(metrics.log_loss(y, model.predict_proba(X), labels=model.classes_))


def run(name: str, seed: int, ks: list[int], width: int, epochs: int, patience: int,
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
        model = estimator(hidden_layer_sizes=(width,) * 3, epochs=epochs, tabm_k=k,
                          n_iter_no_change=patience, validation_fraction=0.25,
                          categorical=list(spec.categorical), random_state=seed,
                          **BACKBONE).fit(X, y)
        out[f"k{k}"] = {"test": score(spec.task, y_test, model, X_test),
                        "epochs": model.n_iter_,
                        "seconds": round(time.perf_counter() - start, 2)}
        print(f"[{name} seed {seed}] k={k}: {out[f'k{k}']}", file=sys.stderr, flush=True)
    return out


def summarize(runs: dict, ks: list[int]) -> dict:
    """Per table: each variant's mean test score over seeds and its ratio to k = 1; over
    tables: the geometric mean of the ratios and on how many tables each variant is better."""
    tables, ratios = {}, {k: [] for k in ks}
    names = sorted({t for seed_runs in runs.values() for t in seed_runs})
    for name in names:
        per_seed = [seed_runs[name] for seed_runs in runs.values() if name in seed_runs]
        row = {}
        for k in ks:
            mean = float(np.mean([r[f"k{k}"]["test"] for r in per_seed]))
            row[f"k{k}"] = {"test": mean, "seconds": float(np.mean(
                [r[f"k{k}"]["seconds"] for r in per_seed]))}
        for k in ks:
            row[f"k{k}"]["ratio"] = row[f"k{k}"]["test"] / row[f"k{ks[0]}"]["test"]
            ratios[k].append(row[f"k{k}"]["ratio"])
        tables[name] = row
    overall = {f"k{k}": {"geometric_mean_ratio": math.exp(float(np.mean(np.log(r)))),
                         "better": sum(x < 1 for x in r), "tables": len(r)}
               for k, r in ratios.items()}
    return {"tables": tables, "overall": overall}


def table(summary: dict, ks: list[int]) -> str:
    lines = ["| table | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "| --- |" + " --- |" * len(ks)]
    for name, row in summary["tables"].items():
        cells = [f"{row[f'k{k}']['test']:.4g} ({row[f'k{k}']['ratio']:.3f}; "
                 f"{row[f'k{k}']['seconds']:.0f} s)" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    overall = summary["overall"]
    lines.append("| geometric mean / k = 1 (better on) | " + " | ".join(
        f"{overall[f'k{k}']['geometric_mean_ratio']:.3f} ({overall[f'k{k}']['better']} of "
        f"{overall[f'k{k}']['tables']})" for k in ks) + " |")
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
        runs = {str(seed): {name: run(name, seed, ks, args.width, args.epochs, args.patience,
                                      args.max_rows) for name in args.tables}
                for seed in args.seeds}
        result = {"k": ks, "width": args.width, "epochs": args.epochs,
                  "patience": args.patience, "max_rows": args.max_rows, "backbone": BACKBONE,
                  "runs": runs, "summary": summarize(runs, ks)}
    print(json.dumps(result, indent=1))
    print(table(result["summary"], ks), file=sys.stderr)


if __name__ == "__main__":
    main()
