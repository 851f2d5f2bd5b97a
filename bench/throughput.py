"""Throughput of a caviar population against training the same networks one at a time, and
against torch.func.vmap over stacked modules, on the CPU or a GPU.

What is measured: P networks (64 -> H -> H -> 10, batch norm, ReLU, dropout, Adam, batch size 128)
trained for E epochs on scikit-learn's digits (a fixed 1400/397 train/validation split, inputs
standardized with the training rows' mean and std), with a validation evaluation every epoch, as
a tuner would run them. Each member has its own learning rate, 10^U[-4, -2], and dropout rate,
U[0, 0.5), drawn from ``--seed``.

- caviar: one ``caviar.engine.Population`` of P members on ``--device``,
  ``pop.fit_epoch(X, y, X_val, y_val)`` per epoch (the data moved to the device once). Beside
  its time, ``products_seconds``: the same sequence of batched matrix products a step does
  (forward, backward, the validation pass), with tensors of the same shapes and nothing else:
  the arithmetic floor; ``seconds / products_seconds`` is what the elementwise work (batch
  norm, dropout, Adam, the loss) and the Python around it cost on top.
  ``--compile`` sets ``CAVIAR_COMPILE=1`` (torch.compile kernels); the uncounted warm-up
  epoch then includes compiling (``warmup_seconds``).
- torch_sequential: the same P configurations one after another, each a ``torch.nn.Sequential``
  (Linear without bias, BatchNorm1d, ReLU, Dropout, twice, then Linear) with ``torch.optim.Adam``,
  reshuffled every epoch, ``model.train()`` / ``model.eval()`` and a validation pass every epoch:
  what an Optuna objective does.
- torch_vmap: the P models of torch_sequential stacked (``torch.func.stack_module_state``) and
  trained as one by ``vmap(grad_and_value(functional_call ...))``, each with its own dropout
  rate (a per-member buffer) and learning rate (Adam written with ``torch._foreach_*`` ops
  over the stacked parameters), the same minibatches for all: the PyTorch way to train an
  ensemble at once.

Each side runs in a fresh subprocess, so its peak memory (``ru_maxrss``, which includes the
Python interpreter and torch, about 300 MiB; on a GPU also ``torch.cuda.max_memory_allocated``)
belongs to that run alone. Times are wall-clock (``time.perf_counter``, after
``torch.cuda.synchronize`` on a GPU) from building the models to the last evaluation, after an
uncounted warm-up (one epoch of the population or the stack, or of one sequential model);
``cpu_seconds`` is the process's CPU time (steadier than wall-clock on a shared machine, with
``--threads 1``). One-at-a-time cost is linear in P, so the sequential baseline is timed on the
first k = min(P, 16) members when P > 64 and scaled by P/k (``torch_sequential_measured_members``
says k).

Run:
    .venv/bin/python bench/throughput.py --population 64 --hidden 128 --epochs 10
    .venv/bin/python bench/throughput.py --sweep --hidden 128 --epochs 5
    .venv/bin/python bench/throughput.py --device cuda --sweep --sweep-populations 64 512 4096 \\
        --sweep-hidden 128 1024 --epochs 3
Each prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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
SIDES = ("caviar", "torch_sequential", "torch_vmap")


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- caviar


def run_caviar(configs, hidden, epochs, seed, data, device) -> float:
    """Train the population; returns the best member's final validation accuracy."""
    from caviar.engine import Population

    members = [{**c, "hidden_layer_sizes": (hidden, hidden), "batch_norm": True,
                "batch_size": BATCH_SIZE, "optimizer": "adam", "epochs": epochs}
               for c in configs]
    pop = Population("multiclass", n_inputs=data[0].shape[1], n_classes=N_CLASSES,
                     members=members, seed=seed, device=device)
    X, y, X_val, y_val = pop.to_device(*data)
    records = [pop.fit_epoch(X, y, X_val, y_val) for _ in range(epochs)][-1]
    return max(r["val_accuracy"] for r in records)


def run_products(population, hidden, epochs, seed, data, device) -> None:
    """The batched products of ``run_caviar``'s steps and evaluations, in the same order and
    shapes (as ``caviar.engine.layers.dense_forward``/``dense_backward`` call them), with
    random tensors and no elementwise work in between."""
    from caviar.engine.population import eval_chunk_rows

    X, _, X_val, _ = (t.to(device) for t in data)
    g = torch.Generator(device=device).manual_seed(seed)
    sizes = (X.shape[1], hidden, hidden, N_CLASSES)
    W = [torch.randn(population, n_in, n_out, generator=g, device=device)
         for n_in, n_out in zip(sizes, sizes[1:])]
    chunk = eval_chunk_rows(population, max(sizes), device)

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        a = [torch.matmul(x, W[0])]  # the shared input times every member's weights
        for w in W[1:]:
            a.append(torch.bmm(a[-1], w))
        return a

    for _ in range(epochs):
        for start in range(0, len(X), BATCH_SIZE):
            x = X[start:start + BATCH_SIZE]
            if len(x) < 2:
                continue
            a = forward(x)
            dz = a[-1]
            for layer in range(len(W) - 1, 0, -1):  # dW = aᵀ·dz, da = dz·Wᵀ
                torch.bmm(a[layer - 1].transpose(1, 2), dz)
                dz = torch.bmm(dz, W[layer].transpose(1, 2))
            torch.matmul(x.t(), dz)
        for start in range(0, len(X_val), chunk):
            forward(X_val[start:start + chunk])


# ----------------------------------------------------------------------------- PyTorch peers


def sequential_model(n_inputs: int, hidden: int, dropout: float) -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(n_inputs, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, N_CLASSES))


def run_sequential(configs, hidden, epochs, seed, data, device) -> float:
    """Train each configuration alone; returns the best final validation accuracy."""
    X, y, X_val, y_val = (t.to(device) for t in data)
    best = 0.0
    for k, config in enumerate(configs):
        torch.manual_seed(seed * 1_000_003 + k)
        model = sequential_model(X.shape[1], hidden, config["dropout"]).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(X), device=device)
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


class MemberDropout(torch.nn.Module):
    """Inverted dropout whose keep probability is a buffer, so that stacked members each
    keep their own."""

    def __init__(self, dropout: float):
        super().__init__()
        self.register_buffer("keep_prob", torch.tensor(1.0 - dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * (torch.rand_like(x) < self.keep_prob) / self.keep_prob


def vmap_model(n_inputs: int, hidden: int, dropout: float) -> torch.nn.Sequential:
    model = sequential_model(n_inputs, hidden, dropout)
    for i in (3, 7):
        model[i] = MemberDropout(dropout)
    return model


def run_vmap(configs, hidden, epochs, seed, data, device) -> float:
    """Train the configurations as one stack under torch.func.vmap; returns the best final
    validation accuracy."""
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    X, y, X_val, y_val = (t.to(device) for t in data)
    models = []
    for k, config in enumerate(configs):
        torch.manual_seed(seed * 1_000_003 + k)
        with torch.device(device):  # initialized there: 4,096 wide models take long on a CPU
            models.append(vmap_model(X.shape[1], hidden, config["dropout"]))
    params, buffers = stack_module_state(models)
    params = {k: p.detach() for k, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")  # the structure; the stacks hold the values
    del models
    lr = torch.tensor([c["learning_rate"] for c in configs], device=device)
    lrs = {k: lr.view(-1, *[1] * (p.dim() - 1)) for k, p in params.items()}
    moments = {k: torch.zeros_like(p) for k, p in params.items()}
    squares = {k: torch.zeros_like(p) for k, p in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def loss(p, b, x, target):
        return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (x,)), target)

    step_all = vmap(grad_and_value(loss), in_dims=(0, 0, None, None), randomness="different")
    predict_all = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)),
                       in_dims=(0, 0, None))
    step = 0
    for _ in range(epochs):
        base.train()
        order = torch.randperm(len(X), device=device)
        for start in range(0, len(X), BATCH_SIZE):
            index = order[start:start + BATCH_SIZE]
            if len(index) < 2:
                continue
            grads, _ = step_all(params, buffers, X[index], y[index])
            step += 1
            names = list(params)  # Adam, as torch.optim's _multi_tensor_adam, per-member lr
            torch._foreach_lerp_([moments[k] for k in names], [grads[k] for k in names],
                                 1 - beta1)
            torch._foreach_mul_([squares[k] for k in names], beta2)
            torch._foreach_addcmul_([squares[k] for k in names], [grads[k] for k in names],
                                    [grads[k] for k in names], 1 - beta2)
            denominators = torch._foreach_sqrt([squares[k] for k in names])
            torch._foreach_div_(denominators, math.sqrt(1 - beta2 ** step))
            torch._foreach_add_(denominators, eps)
            steps = torch._foreach_mul([moments[k] for k in names], [lrs[k] for k in names])
            torch._foreach_addcdiv_([params[k] for k in names], steps, denominators,
                                    -1 / (1 - beta1 ** step))
        base.eval()
        with torch.no_grad():
            guesses = predict_all(params, buffers, X_val).argmax(dim=2)
            accuracy = (guesses == y_val).float().mean(dim=1).max().item()
    return accuracy


# ----------------------------------------------------------------------------- measuring


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints seconds, accuracy and peak memory."""
    if args.threads:
        torch.set_num_threads(args.threads)
    from caviar.engine import resolve_device

    device = resolve_device(args.device)
    data = digits(args.seed)
    configs = configurations(args.population, args.seed)[:args.members or None]
    train = {"caviar": run_caviar, "torch_sequential": run_sequential,
             "torch_vmap": run_vmap}[args.worker]
    started = time.perf_counter()
    train(configs[:1] if args.worker == "torch_sequential" else configs, args.hidden, 1,
          args.seed, data, device)
    synchronize(device)
    warmup = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    accuracy = train(configs, args.hidden, args.epochs, args.seed, data, device)
    synchronize(device)
    out = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
           "warmup_seconds": warmup, "val_accuracy": accuracy, "members": len(configs),
           "threads": torch.get_num_threads(),
           "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.worker == "caviar":  # the products alone, same process, same shapes
        run_products(len(configs), args.hidden, 1, args.seed, data, device)  # warm-up
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        run_products(len(configs), args.hidden, args.epochs, args.seed, data, device)
        synchronize(device)
        out["products_seconds"] = time.perf_counter() - start
        out["products_cpu_seconds"] = time.process_time() - start_cpu
    print(json.dumps(out))


def measure(side: str, population: int, members: int, hidden: int,
            args: argparse.Namespace) -> dict:
    """One side's run in a fresh process; ``{"error": ...}`` if it failed (out of memory at
    the largest sizes, say), so that a sweep keeps its other rows."""
    command = [sys.executable, __file__, "--worker", side, "--population", str(population),
               "--members", str(members), "--hidden", str(hidden),
               "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--threads", str(args.threads), "--device", args.device]
    env = {**os.environ, "CAVIAR_COMPILE": "1" if args.compile else "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        print(f"{side} worker failed (P={population}, H={hidden}):\n{done.stderr}",
              file=sys.stderr)
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(population: int, hidden: int, args: argparse.Namespace) -> dict:
    """caviar and the chosen peers at one population size and width (the sequential
    baseline possibly on a subset, extrapolated)."""
    load = os.getloadavg()[0]
    runs = {"caviar": measure("caviar", population, population, hidden, args)}
    k = population if population <= FULL_BASELINE_UP_TO else min(population, BASELINE_SUBSET)
    if "torch_sequential" in args.peers:
        runs["torch_sequential"] = measure("torch_sequential", population, k, hidden, args)
        for key in ("seconds", "cpu_seconds"):
            if key in runs["torch_sequential"]:
                runs["torch_sequential"][key] *= population / k
    if "torch_vmap" in args.peers:
        runs["torch_vmap"] = measure("torch_vmap", population, population, hidden, args)
    errors = {side: r["error"] for side, r in runs.items() if "error" in r}
    runs = {side: r for side, r in runs.items() if "error" not in r}
    row = {"population": population, "hidden": hidden, "epochs": args.epochs,
           "device": args.device, "compile": args.compile}
    if errors:
        row["errors"] = errors
    if "caviar" not in runs:
        return row
    ours = runs["caviar"]
    model_epochs = population * args.epochs
    row |= {
        "seconds": {side: r["seconds"] for side, r in runs.items()},
        "cpu_seconds": {side: r["cpu_seconds"] for side, r in runs.items()},
        "caviar_products_seconds": ours["products_seconds"],
        "caviar_products_cpu_seconds": ours["products_cpu_seconds"],
        # how far the whole run is from its matrix products alone
        "caviar_over_products": ours["seconds"] / ours["products_seconds"],
        "caviar_warmup_seconds": ours["warmup_seconds"],
        "speedup": {side: r["seconds"] / ours["seconds"] for side, r in runs.items()
                    if side != "caviar"},
        "seconds_per_model_epoch": {side: r["seconds"] / model_epochs
                                    for side, r in runs.items()},
        "val_accuracy_best": {side: r["val_accuracy"] for side, r in runs.items()},
        "peak_memory_mib": {side: r["peak_memory_mib"] for side, r in runs.items()},
        "threads": ours["threads"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # see bench/README.md
        "load_average_before": load,  # other work on the machine skews timings
    }
    if "torch_sequential" in runs:
        row["torch_sequential_measured_members"] = k
    if "peak_gpu_memory_mib" in ours:
        row["peak_gpu_memory_mib"] = {side: r["peak_gpu_memory_mib"] for side, r in runs.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=64, help="P, the number of networks")
    parser.add_argument("--hidden", type=int, default=128, help="H, width of both hidden layers")
    parser.add_argument("--epochs", type=int, default=10, help="E, epochs per network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="caviar with torch.compile kernels (CAVIAR_COMPILE=1)")
    parser.add_argument("--peers", nargs="*", choices=SIDES[1:], default=list(SIDES[1:]),
                        help="the PyTorch peers to run (default: both)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's own default)")
    parser.add_argument("--sweep", action="store_true",
                        help="compare at every population size of --sweep-populations and "
                             "width of --sweep-hidden")
    parser.add_argument("--sweep-populations", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--sweep-hidden", type=int, nargs="+",
                        help="the widths of a sweep (default: --hidden)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from caviar.engine import resolve_device

    try:
        resolve_device(args.device)  # a machine without CUDA: one line, before any run
    except ValueError as e:
        parser.error(str(e))
    if args.sweep:
        rows = [compare(p, h, args) for h in args.sweep_hidden or [args.hidden]
                for p in args.sweep_populations]
        print(json.dumps({"epochs": args.epochs, "seed": args.seed, "device": args.device,
                          "rows": rows}, indent=1))
    else:
        print(json.dumps(compare(args.population, args.hidden, args), indent=1))


if __name__ == "__main__":
    main()
