"""Throughput of a caviar population against training the same networks one at a time.

What is measured: P networks (64 -> H -> H -> 10, batch norm, ReLU, dropout, Adam, batch size 128)
trained for E epochs on scikit-learn's digits (a fixed 1400/397 train/validation split, inputs
standardized with the training rows' mean and std), with a validation evaluation every epoch, as
a tuner would run them. Each member has its own learning rate, 10^U[-4, -2], and dropout rate,
U[0, 0.5), drawn from ``--seed``.

- caviar: one ``caviar.engine.Population`` of P members, ``pop.fit_epoch(X, y, X_val, y_val)``
  per epoch.
- torch_sequential: the same P configurations one after another, each a ``torch.nn.Sequential``
  (Linear without bias, BatchNorm1d, ReLU, Dropout, twice, then Linear) with ``torch.optim.Adam``,
  reshuffled every epoch, ``model.train()`` / ``model.eval()`` and a validation pass every epoch:
  what an Optuna objective does.

Each side runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``, which includes
the Python interpreter and torch, about 300 MiB) belongs to that run alone. Times are wall-clock
(``time.perf_counter``) from building the models to the last evaluation, after an uncounted
warm-up (one epoch of the population, or of one sequential model). One-at-a-time cost is linear
in P, so in ``--sweep`` mode the sequential baseline is timed on the first k = min(P, 16) members
when P > 64 and scaled by P/k (``torch_sequential_measured_members`` says k).

Run:
    .venv/bin/python bench/throughput.py --population 64 --hidden 128 --epochs 10
    .venv/bin/python bench/throughput.py --sweep --hidden 128 --epochs 5
Both print one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

N_TRAIN, BATCH_SIZE, N_CLASSES = 1400, 128, 10
FULL_BASELINE_UP_TO, BASELINE_SUBSET = 64, 16


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    """A fixed train/validation split of the 1797 digits, standardized on the training rows."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    mean, std = X[:N_TRAIN].mean(axis=0), X[:N_TRAIN].std(axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)  # some border pixels are always 0
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


def configurations(population: int, seed: int) -> list[dict[str, float]]:
    """Per-member learning rate and dropout; the first k of P configurations do not depend on P."""
    draws = np.random.default_rng(seed).uniform(size=(population, 2))
    return [{"learning_rate": float(10 ** (-4 + 2 * u)), "dropout": float(0.5 * v)}
            for u, v in draws]


def run_caviar(configs, hidden, epochs, seed, data) -> float:
    """Train the population; returns the best member's final validation accuracy."""
    from caviar.engine import Population

    X, y, X_val, y_val = data
    members = [{**c, "hidden_layer_sizes": (hidden, hidden), "batch_norm": True,
                "batch_size": BATCH_SIZE, "optimizer": "adam", "epochs": epochs}
               for c in configs]
    pop = Population("multiclass", n_inputs=X.shape[1], n_classes=N_CLASSES, members=members,
                     seed=seed)
    records = [pop.fit_epoch(X, y, X_val, y_val) for _ in range(epochs)][-1]
    return max(r["val_accuracy"] for r in records)


def sequential_model(n_inputs: int, hidden: int, dropout: float) -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(n_inputs, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, N_CLASSES))


def run_sequential(configs, hidden, epochs, seed, data) -> float:
    """Train each configuration alone; returns the best final validation accuracy."""
    X, y, X_val, y_val = data
    best = 0.0
    for k, config in enumerate(configs):
        torch.manual_seed(seed * 1_000_003 + k)
        model = sequential_model(X.shape[1], hidden, config["dropout"])
        optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(X))
            for start in range(0, len(X), BATCH_SIZE):
                index = order[start:start + BATCH_SIZE]
                if len(index) < 2:
                    continue  # batch norm needs two rows
                loss = torch.nn.functional.cross_entropy(model(X[index]), y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(X_val).argmax(dim=1) == y_val).float().mean().item()
        best = max(best, accuracy)
    return best


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints seconds, accuracy and peak memory."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = digits(args.seed)
    configs = configurations(args.population, args.seed)[:args.members or None]
    train = run_caviar if args.worker == "caviar" else run_sequential
    train(configs if args.worker == "caviar" else configs[:1], args.hidden, 1, args.seed, data)
    start = time.perf_counter()
    accuracy = train(configs, args.hidden, args.epochs, args.seed, data)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "val_accuracy": accuracy, "peak_memory_mib": peak_mib,
                      "members": len(configs), "threads": torch.get_num_threads()}))


def measure(side: str, population: int, members: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--population", str(population),
               "--members", str(members), "--hidden", str(args.hidden),
               "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{side} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(population: int, args: argparse.Namespace) -> dict:
    """Both sides at one population size (the baseline possibly on a subset, extrapolated)."""
    load = os.getloadavg()[0]
    ours = measure("caviar", population, population, args)
    k = population if population <= FULL_BASELINE_UP_TO else min(population, BASELINE_SUBSET)
    theirs = measure("torch_sequential", population, k, args)
    sequential_seconds = theirs["seconds"] * population / k
    model_epochs = population * args.epochs
    return {
        "population": population, "hidden": args.hidden, "epochs": args.epochs,
        "seconds": {"caviar": ours["seconds"], "torch_sequential": sequential_seconds},
        "speedup": sequential_seconds / ours["seconds"],
        "seconds_per_model_epoch": {"caviar": ours["seconds"] / model_epochs,
                                    "torch_sequential": sequential_seconds / model_epochs},
        "torch_sequential_measured_members": k,
        "val_accuracy": {"caviar_best": ours["val_accuracy"],
                         "torch_sequential_best": theirs["val_accuracy"]},
        "peak_memory_mib": {"caviar": ours["peak_memory_mib"],
                            "torch_sequential": theirs["peak_memory_mib"]},
        "threads": ours["threads"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # see bench/README.md
        "load_average_before": load,  # other work on the machine skews timings
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=64, help="P, the number of networks")
    parser.add_argument("--hidden", type=int, default=128, help="H, width of both hidden layers")
    parser.add_argument("--epochs", type=int, default=10, help="E, epochs per network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's own default)")
    parser.add_argument("--sweep", action="store_true",
                        help="compare at every population size of --sweep-populations")
    parser.add_argument("--sweep-populations", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--worker", choices=["caviar", "torch_sequential"], help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    elif args.sweep:
        rows = [compare(p, args) for p in args.sweep_populations]
        print(json.dumps({"hidden": args.hidden, "epochs": args.epochs, "seed": args.seed,
                          "rows": rows}, indent=1))
    else:
        print(json.dumps(compare(args.population, args), indent=1))


if __name__ == "__main__":
    main()
