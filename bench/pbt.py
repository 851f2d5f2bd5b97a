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
   ``torch.save``) from disk, training, saving it; exploit copies a checkpoint file; and
   Ray Tune's own ``PopulationBasedTraining`` (``pip install 'ray[tune]'``; skipped when it is
   not installed or with ``--skip-ray``) on the same members, one CPU per trial. Each side
   gets the machine's cores: caviar one process with that many torch threads, the others
   that many processes of one.
3. The interval (``--intervals 2 4 8``): the PBT model's test score on both tables for each
   ``pbt_interval`` at the budget, which chose the default (``caviar.search.pbt.INTERVAL``).

Run:  .venv/bin/python bench/pbt.py [--budget 20] [--seeds 0 1] [--members 16]
      .venv/bin/python bench/pbt.py --skip-quality --intervals 2 4 8 --budget 20
Prints one JSON object to stdout and a summary to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
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

# set before torch starts OpenMP: spinning OpenMP threads are slow on a busy machine (the
# README says when to set it; caviar leaves it to the environment)
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
        _epoch(net, opt, X, y)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, path)
    return _val_rmse(net, Xv, yv)


def _epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor,
           y: torch.Tensor) -> None:
    order = torch.randperm(len(X))
    for i in range(0, len(X), NET["batch_size"]):
        idx = order[i:i + NET["batch_size"]]
        opt.zero_grad()
        loss = 0.5 * ((net(X[idx]).squeeze(1) - y[idx]) ** 2).mean()
        loss.backward()
        opt.step()


def _val_rmse(net: torch.nn.Module, Xv: torch.Tensor, yv: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((net(Xv).squeeze(1) - yv) ** 2).mean().sqrt())


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


def _ray_member(config: dict) -> None:
    """One Ray Tune trial: restore its checkpoint (a copied one after an exploit), train
    epoch by epoch, report the validation RMSE with a checkpoint each epoch."""
    from ray import tune as ray_tune

    torch.set_num_threads(1)
    X, y, Xv, yv = torch.load(config["data"])
    net = _net(X.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
    start = 0
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"))
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:  # the explored rate, not the copied one
            group["lr"] = config["lr"]
        start = state["epoch"]
    for epoch in range(start, config["epochs"]):
        _epoch(net, opt, X, y)
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                        "epoch": epoch + 1}, os.path.join(folder, "state.pt"))
            ray_tune.report({"val_rmse": _val_rmse(net, Xv, yv)},
                            checkpoint=ray_tune.Checkpoint.from_directory(folder))


def ray_pbt(members: int, epochs: int, workers: int) -> float | None:
    """Member-epochs per second of Ray Tune's PopulationBasedTraining on the same members
    (one CPU per trial, a checkpoint each epoch, exploit every INTERVAL epochs, the rate
    perturbed ×0.8/×1.25); None when Ray Tune is not installed. ``ray.init`` is not timed;
    ``Tuner.fit`` is, whole (its trial processes, checkpoints and bookkeeping: what a user
    of it waits for)."""
    try:
        import ray
        from ray import tune as ray_tune
        from ray.tune.schedulers import PopulationBasedTraining
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.pt")
        torch.save(_tensors(), data_path)
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        try:
            scheduler = PopulationBasedTraining(
                time_attr="training_iteration", perturbation_interval=INTERVAL,
                quantile_fraction=0.25, resample_probability=0.0,
                hyperparam_mutations={"lr": ray_tune.loguniform(1e-4, 1e-2)})
            tuner = ray_tune.Tuner(
                ray_tune.with_resources(_ray_member, {"cpu": 1}),
                param_space={"lr": ray_tune.loguniform(1e-4, 1e-2), "data": data_path,
                             "epochs": epochs},
                tune_config=ray_tune.TuneConfig(scheduler=scheduler, metric="val_rmse",
                                                mode="min", num_samples=members,
                                                reuse_actors=True),
                run_config=ray_tune.RunConfig(storage_path=os.path.join(tmp, "ray"),
                                              verbose=0))
            start = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # Ray's tables; stdout is the JSON
                results = tuner.fit()
            elapsed = time.perf_counter() - start
            if results.errors:
                raise RuntimeError(f"Ray Tune trials failed: {results.errors[0]}")
        finally:
            ray.shutdown()
    return members * epochs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-ray", action="store_true", help="not Ray Tune's PBT")
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
    if not args.skip_ray:
        ray_speed = ray_pbt(args.members, args.epochs, workers)
        speed["ray_tune_member_epochs_per_s"] = ray_speed
        if ray_speed is None:
            print("Ray Tune is not installed: pip install 'ray[tune]'", file=sys.stderr)
        else:
            speed["speedup_vs_ray_tune"] = speed["caviar_member_epochs_per_s"] / ray_speed
            print(f"       Ray Tune PBT {ray_speed:.1f} member-epochs/s "
                  f"({speed['speedup_vs_ray_tune']:.1f}x)", file=sys.stderr)
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
