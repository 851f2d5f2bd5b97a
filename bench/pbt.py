"""Population-based training: caviar's PBT against its default scheduler, and against a
process-based PBT.

1. Quality at a fixed budget: ``tune(..., scheduler="pbt")`` against the default (ASHA +
   coarse-to-fine), ``--budget`` seconds each, on ``wage`` (regression, RMSE) and ``default``
   (binary, log-loss), for each of ``--seeds``; the kept models' test scores (tune's own
   60/20/20 split, the same for both schedulers at a seed).
2. Speed: member-epochs per second of PBT on wage's training rows (P members, a 64 × 64 Adam
   network, batch 128, exploit/explore every 2 epochs): caviar's (one ``Population``; exploit
   is ``copy_member``) against a minimal process-based PBT written here, the way Ray Tune
   runs it: one process per member-interval (a ``multiprocessing`` pool, one worker per core,
   one torch thread each), each loading its member's checkpoint (model and optimizer,
   ``torch.save``) from disk, training, saving it; exploit copies a checkpoint file. (Ray Tune
   itself was not installed for this bench.) Each side gets the machine's cores: caviar one
   process with that many torch threads, the process-based PBT that many processes of one.
3. The interval (``--intervals 2 4 8``): the PBT model's test score on both tables for each
   ``pbt_interval`` at the budget, which chose the default (``caviar.search.pbt.INTERVAL``).

Run:  .venv/bin/python bench/pbt.py [--budget 20] [--seeds 0 1] [--members 16]
      .venv/bin/python bench/pbt.py --skip-quality --intervals 2 4 8 --budget 20
Prints one JSON object to stdout and a summary to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

# caviar sets this when it is imported before torch; here torch comes first (see
# caviar/__init__.py: spinning OpenMP threads on a busy machine)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from caviar.data import prepare  # noqa: E402
from caviar.datasets import load_dataset  # noqa: E402
from caviar.engine import Population  # noqa: E402
from caviar.search.tune import tune  # noqa: E402

TABLES = {"wage": ("wage", ("logwage",), "rmse"), "default": ("default", (), "log_loss")}
NET = {"hidden_layer_sizes": (64, 64), "batch_size": 128, "optimizer": "adam",
       "batch_norm": False, "dropout": 0.0}
INTERVAL = 2


# ----------------------------------------------------------------------------- quality


def intervals(budget: float, seeds: list[int], values: list[int]) -> dict:
    """The PBT model's test score for each interval, per table and seed; and epochs trained."""
    out: dict = {}
    for name, (target, drop, metric) in TABLES.items():
        frame = load_dataset(name)
        for interval in values:
            scores, epochs = [], []
            for seed in seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    result = tune(frame, target, time_budget=budget, population=32, out=tmp,
                                  seed=seed, drop=drop, scheduler="pbt", pbt_interval=interval)
                scores.append(result.test_scores[metric])
                epochs.append(max(len(t.user_attrs.get("curve", []))
                                  for t in result.study.trials))
                print(f"{name} interval {interval} seed {seed}: test {metric} "
                      f"{scores[-1]:.4f} ({epochs[-1]} epochs)", file=sys.stderr)
            out.setdefault(name, {})[interval] = {"metric": metric, "scores": scores,
                                                  "mean": statistics.mean(scores),
                                                  "epochs": epochs}
    return out


def quality(budget: float, seeds: list[int]) -> dict:
    out: dict = {}
    for name, (target, drop, metric) in TABLES.items():
        frame = load_dataset(name)
        for scheduler in ("asha", "pbt"):
            scores = []
            for seed in seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    result = tune(frame, target, time_budget=budget, population=32,
                                  out=tmp, seed=seed, drop=drop, scheduler=scheduler)
                    scores.append(result.test_scores[metric])
                    print(f"{name} {scheduler} seed {seed}: test {metric} "
                          f"{scores[-1]:.4f} ({len(result.study.trials)} trials, "
                          f"{time.perf_counter() - start:.1f} s)", file=sys.stderr)
            out.setdefault(name, {})[scheduler] = {"metric": metric, "scores": scores,
                                                   "mean": statistics.mean(scores)}
    return out


# ----------------------------------------------------------------------------- speed


def _tensors():
    d = prepare(load_dataset("wage"), "wage", drop=["logwage"], seed=0)
    return d.X_train, d.y_train, d.X_val, d.y_val


def caviar_pbt(members: int, epochs: int) -> float:
    """Member-epochs per second of PBT in one population (exploit: copy_member)."""
    X, y, Xv, yv = _tensors()
    rng = random.Random(0)
    lrs = [10 ** rng.uniform(-4, -2) for _ in range(members)]
    pop = Population("regression", X.shape[1], [{**NET, "learning_rate": lr, "epochs": epochs}
                                                for lr in lrs], seed=0)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        records = pop.fit_epoch(X, y, Xv, yv)
        if epoch % INTERVAL == 0:
            order = sorted(range(members), key=lambda i: records[i]["val_rmse"])
            q = members // 4
            for target in order[-q:]:
                source = rng.choice(order[:q])
                pop.copy_member(source, target)
                lr = pop.hyperparameters[source]["learning_rate"] * rng.choice((0.8, 1.25))
                pop.set_hyperparameters(target, learning_rate=lr)
    return members * epochs / (time.perf_counter() - start)


def _net(n_in: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def _train_interval(args: tuple) -> float:
    """One member's interval in a worker process: load the checkpoint, train, save it."""
    path, lr, epochs, data_path = args
    torch.set_num_threads(1)
    X, y, Xv, yv = torch.load(data_path)
    net = _net(X.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if os.path.exists(path):
        state = torch.load(path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:
            group["lr"] = lr
    for _ in range(epochs):
        order = torch.randperm(len(X))
        for i in range(0, len(X), NET["batch_size"]):
            idx = order[i:i + NET["batch_size"]]
            opt.zero_grad()
            loss = 0.5 * ((net(X[idx]).squeeze(1) - y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    with torch.no_grad():
        val = float(((net(Xv).squeeze(1) - yv) ** 2).mean().sqrt())
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, path)
    return val


def _warm(_: int) -> int:
    torch.set_num_threads(1)
    return torch.ones(1).numel()


def process_pbt(members: int, epochs: int, workers: int) -> float:
    """Member-epochs per second of a process-based PBT (checkpoints on disk)."""
    rng = random.Random(0)
    lrs = [10 ** rng.uniform(-4, -2) for _ in range(members)]
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.pt")
        torch.save(_tensors(), data_path)
        paths = [os.path.join(tmp, f"member-{i}.pt") for i in range(members)]
        with mp.get_context("spawn").Pool(workers) as pool:
            # started and warm (torch imported in each worker) before the clock starts: what
            # is timed is the per-interval work, checkpoints and copies, not the start-up
            pool.map(_warm, range(workers))
            start = time.perf_counter()
            for _ in range(epochs // INTERVAL):
                scores = pool.map(_train_interval, [(p, lr, INTERVAL, data_path)
                                                    for p, lr in zip(paths, lrs)])
                order = sorted(range(members), key=lambda i: scores[i])
                q = members // 4
                for target in order[-q:]:
                    source = rng.choice(order[:q])
                    shutil.copyfile(paths[source], paths[target])  # exploit: the checkpoint
                    lrs[target] = lrs[source] * rng.choice((0.8, 1.25))
            elapsed = time.perf_counter() - start
        return members * epochs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--intervals", type=int, nargs="*", default=[])
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    torch.set_num_threads(workers)
    speed = {"members": args.members, "epochs": args.epochs, "workers": workers,
             "torch_threads": torch.get_num_threads(),
             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
             "load_before": os.getloadavg()[0],
             "caviar_member_epochs_per_s": caviar_pbt(args.members, args.epochs),
             "process_member_epochs_per_s": process_pbt(args.members, args.epochs, workers)}
    speed["speedup"] = speed["caviar_member_epochs_per_s"] / speed["process_member_epochs_per_s"]
    print(f"speed: caviar {speed['caviar_member_epochs_per_s']:.1f} member-epochs/s, "
          f"process-based {speed['process_member_epochs_per_s']:.1f} "
          f"({speed['speedup']:.1f}x)", file=sys.stderr)
    speed["load_after"] = os.getloadavg()[0]
    result = {"speed": speed, "budget_s": args.budget, "seeds": args.seeds}
    if args.intervals:
        result["intervals"] = intervals(args.budget, args.seeds, args.intervals)
        for name, by in result["intervals"].items():
            print(f"{name}: " + ", ".join(f"interval {i} {v['metric']} {v['mean']:.4f}"
                                          for i, v in by.items()), file=sys.stderr)
    if not args.skip_quality:
        result["quality"] = quality(args.budget, args.seeds)
        for name, by in result["quality"].items():
            print(f"{name}: " + ", ".join(f"{s} {v['metric']} {v['mean']:.4f}"
                                          for s, v in by.items()), file=sys.stderr)
    print(json.dumps(result, indent=1, default=lambda x: None if math.isnan(x) else x))


if __name__ == "__main__":
    main()
