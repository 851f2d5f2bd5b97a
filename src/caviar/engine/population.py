"""A population of P networks with equal layer shapes, trained as one vectorized computation.

Each member has its own hyperparameters (learning rate, optimizer and its β's, decay, L1, L2,
weight decay, dropout, batch-norm averaging, epochs). All members see the same minibatches;
the first layer is one broadcast product of the shared input with every member's weights,
later layers are batched products. Members never mix: a member that diverges is flagged and
frozen while the others go on exactly as they would have without it.

The math of a forward and backward pass is in ``network.py``; this module keeps the members
(add, remove, replace, copy, export), their hyperparameters as ``(P,)`` tensors, their
histories and best epochs, and their state for saving.

Example:
    >>> import torch
    >>> from caviar.engine import Population
    >>> X, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    >>> pop = Population("multiclass", n_inputs=8, n_classes=3, members=[
    ...     {"learning_rate": lr, "hidden_layer_sizes": (16,), "epochs": 3}
    ...     for lr in (1e-3, 1e-2)])
    >>> records = pop.fit(X, y, X, y)
    >>> pop.history[1][-1]["epoch"]
    3
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from ..hyperparams import STRUCTURAL, TASKS, Config, effective_decay_rate, resolve, structure_key
from . import allocator, exact, kernels, losses, network, optim
from .network import InputLayout
from .optim import Coefficients, PopulationOptimizer
from .schedules import DECAY_CODES, learning_rate_at

# rows per evaluation chunk × P × width stays under this: on a CPU, tensors of 4 MiB reuse
# freed memory (larger ones are returned to the system and fault in again: twice the time at
# width 32); on a GPU, larger chunks mean fewer kernel launches
EVAL_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
DEVICES = ("cpu", "cuda", "auto")


def eval_chunk_rows(size: int, width: int, device: torch.device) -> int:
    """Rows per chunk when evaluating ``size`` members whose widest layer is ``width``."""
    return max(1, EVAL_CHUNK_ELEMENTS[device.type] // (size * width))


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"`` (or ``"cuda:1"``) or ``"auto"`` (CUDA when available) as a
    torch.device; a clear error for CUDA on a machine without it."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine; use --device cpu or auto")
    return resolved


class Population:
    """P networks trained together; see the module docstring.

    Args:
        task: "binary", "multiclass" or "regression".
        n_inputs: the number of columns of X, all dense features; or the table's
            :class:`~caviar.engine.network.InputLayout` (``PreparedTable.inputs``), which says
            which columns hold categorical codes: never read as numbers, and embedded by
            members with ``encoding="embedding"``.
        members: one hyperparameter mapping per member (missing names take the defaults of
            ``caviar.hyperparams.DEFAULTS``); all must share the structural ones. A
            ``caviar.hyperparams.Config`` is used as it is (it was validated when made).
        n_classes: number of classes (multiclass only).
        seed: seeds every member's initial weights (member k from ``(seed, k)``, so a member's
            start does not depend on P) and the minibatch order and dropout masks, with
            generators on the device (a seed gives other draws on a GPU than on a CPU).
        dtype: torch.float32, or torch.float64 for gradient checks.
        device: where the tensors live and the arithmetic runs: "cpu", "cuda" or "auto"
            (CUDA when available); see :func:`resolve_device`. Inputs may come from any
            device: move them once with :meth:`to_device` rather than every epoch.
        compile: fuse the elementwise work with torch.compile (see ``kernels.py``); None
            reads the ``CAVIAR_COMPILE`` environment variable (off unless it is 1).
    """

    def __init__(self, task: str, n_inputs: int | InputLayout,
                 members: Sequence[Mapping[str, Any]],
                 n_classes: int | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 compile: bool | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "multiclass" and (n_classes is None or n_classes < 2):
            raise ValueError("a multiclass population needs n_classes >= 2")
        if not members:
            raise ValueError("a population needs at least one member")
        resolved = [resolve(m) for m in members]
        first = resolved[0]
        self.inputs = (n_inputs if isinstance(n_inputs, InputLayout)
                       else InputLayout(int(n_inputs)))
        self.structure = network.make_structure(
            task, self.inputs, losses.output_size(task, n_classes or 2), first)
        self.n_classes = n_classes if task == "multiclass" else (2 if task == "binary" else None)
        self.seed = seed
        self.dtype = dtype
        self.device = resolve_device(device)
        if self.device.type == "cpu":  # reuse freed tensor memory instead of faulting it in
            allocator.keep_freed_memory()
        self.kernels = kernels.select(compile)
        # the minibatch order and the dropout masks, drawn where they are used
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.hyperparameters: list[Config] = []
        self.member_ids: list[int] = []
        self.history: list[list[dict[str, Any]]] = []
        self.failure: list[str | None] = []
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.epoch = torch.zeros(0, dtype=torch.long, device=self.device)
        self.diverged = torch.zeros(0, dtype=torch.bool, device=self.device)
        # early stopping's "restore best weights": each member's lowest score so far, its
        # epoch, and a copy of its weights and batch-norm statistics then (see remember_best)
        self.best_score = torch.zeros(0, dtype=dtype, device=self.device)
        self.best_epoch = torch.zeros(0, dtype=torch.long, device=self.device)
        self._best: dict[str, torch.Tensor] | None = None
        self._next_id = 0
        self._append(resolved)
        self.optimizer = PopulationOptimizer(self.params, self.weight_names,
                                             self.structure.lr_factors)

    # ----------------------------------------------------------------- members

    @property
    def size(self) -> int:
        return len(self.hyperparameters)

    @property
    def weight_names(self) -> set[str]:
        """Dense weights, embedding tables and PLR's linear weights: the tensors L1, L2 and
        weight decay act on."""
        return self.structure.weight_names

    @property
    def trainable(self) -> torch.Tensor:
        """``(P,)`` bool: not diverged and not past its own number of epochs."""
        return ~self.diverged & (self.epoch < self._hp["epochs"].long())

    def _new_member(self, member_id: int, config: Config) -> tuple[dict, dict]:
        """Fresh parameters and buffers for one member (no member axis), seeded by its id,
        drawn on the population's device (on a GPU, 4,096 members of width 1,024 take a
        moment there and half a minute on a CPU); ``config`` gives its PLR σ."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + member_id)
        return network.init_member(self.structure, gen, self.dtype, config["plr_sigma"])

    def _check_structure(self, resolved: list[Config]) -> None:
        key = structure_key(self.hyperparameters[0] if self.hyperparameters else resolved[0])
        for h in resolved:
            if structure_key(h) != key:
                raise ValueError(
                    f"members of one population must share {', '.join(STRUCTURAL)}; "
                    f"got {structure_key(h)} and {key}: train them in separate populations")

    def _append(self, resolved: list[Config]) -> list[int]:
        self._check_structure(resolved)
        start = self.size
        new = [self._new_member(self._next_id + i, h) for i, h in enumerate(resolved)]
        for name in new[0][0]:
            stacked = torch.stack([p[name] for p, _ in new])
            old = self.params.get(name)
            self.params[name] = stacked if old is None else torch.cat([old, stacked])
        for name in new[0][1]:
            stacked = torch.stack([b[name] for _, b in new])
            old = self.buffers.get(name)
            self.buffers[name] = stacked if old is None else torch.cat([old, stacked])
        self.hyperparameters += resolved
        self.member_ids += list(range(self._next_id, self._next_id + len(resolved)))
        self._next_id += len(resolved)
        self.history += [[] for _ in resolved]
        self.failure += [None for _ in resolved]
        count, device = len(resolved), self.device
        self.epoch = torch.cat([self.epoch, self.epoch.new_zeros(count)])
        self.diverged = torch.cat([self.diverged, self.diverged.new_zeros(count)])
        self.best_score = torch.cat([self.best_score, torch.full((count,), math.inf,
                                                                 dtype=self.dtype, device=device)])
        self.best_epoch = torch.cat([self.best_epoch, self.best_epoch.new_zeros(count)])
        if self._best is not None:
            weights = self._weights()
            self._best = {k: torch.cat([t, weights[k][start:]]) for k, t in self._best.items()}
        self._refresh()
        return list(range(start, self.size))

    def add_members(self, members: Sequence[Mapping[str, Any]]) -> list[int]:
        """Add new members (fresh weights, zero optimizer state); returns their indices."""
        indices = self._append([resolve(m) for m in members])
        self.optimizer.append(len(indices))
        return indices

    def remove_members(self, indices: Sequence[int]) -> None:
        """Remove members; the others keep their state and order (indices shift down)."""
        drop = set(indices)
        keep = [i for i in range(self.size) if i not in drop]
        if not keep:
            raise ValueError("cannot remove every member of a population")
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.params = {k: p[index].clone() for k, p in self.params.items()}
        self.buffers = {k: b[index].clone() for k, b in self.buffers.items()}
        self.optimizer.select(index)
        self.epoch = self.epoch[index].clone()
        self.diverged = self.diverged[index].clone()
        self.best_score = self.best_score[index].clone()
        self.best_epoch = self.best_epoch[index].clone()
        if self._best is not None:
            self._best = {k: t[index].clone() for k, t in self._best.items()}
        for name in ("hyperparameters", "member_ids", "history", "failure"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        self._refresh()

    @torch.no_grad()
    def replace_members(self, indices: Sequence[int],
                        members: Sequence[Mapping[str, Any]]) -> None:
        """Put new members (fresh weights, zero optimizer state, epoch 0, empty history) in
        the slots ``indices``, in place. This is how the tuner refills the slot of a trial
        that ended: unlike remove + add it copies no other member's tensors."""
        if len(indices) != len(members):
            raise ValueError(f"{len(indices)} slots for {len(members)} members")
        if len(set(indices)) != len(indices) or not all(0 <= i < self.size for i in indices):
            raise ValueError(f"slots must be distinct indices below {self.size}, got {indices}")
        resolved = [resolve(m) for m in members]
        self._check_structure(resolved)
        for index, h in zip(indices, resolved):
            params, buffers = self._new_member(self._next_id, h)
            for name, t in params.items():
                self.params[name][index] = t
            for name, t in buffers.items():
                self.buffers[name][index] = t
            self.optimizer.reset_member(index)
            self.epoch[index] = 0
            self.diverged[index] = False
            self.best_score[index] = math.inf
            self.best_epoch[index] = 0
            self.hyperparameters[index] = h
            self.member_ids[index] = self._next_id
            self.history[index] = []
            self.failure[index] = None
            self._next_id += 1
        self._refresh()

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        """Copy a member's whole state (weights, batch-norm statistics, optimizer state, epoch
        count, hyperparameters, history) into another slot, as population-based training
        copies a winner into a loser. The target keeps its member id."""
        for tensors in (self.params, self.buffers):
            for t in tensors.values():
                t[target] = t[source]
        self.optimizer.copy_member(source, target)
        self.epoch[target] = self.epoch[source]
        self.diverged[target] = self.diverged[source]
        self.best_score[target] = self.best_score[source]
        self.best_epoch[target] = self.best_epoch[source]
        for t in (self._best or {}).values():
            t[target] = t[source]
        self.hyperparameters[target] = self.hyperparameters[source]  # read-only: shared
        self.history[target] = [dict(r) for r in self.history[source]]
        self.failure[target] = self.failure[source]
        self._refresh()

    @torch.no_grad()
    def load_member(self, index: int, other: Population, source: int = 0) -> None:
        """Put member ``source`` of ``other``, a network of this structure (weights,
        batch-norm statistics, epoch count, its history to that epoch), in slot ``index``,
        which keeps its hyperparameters and member id, with zero optimizer state: how PBT
        after a coarse search starts from the networks it kept, exported at their best epoch
        without their optimizer state (``export_member(at_best=True)``)."""
        self._check_structure([other.hyperparameters[source]])
        for mine, theirs in ((self.params, other.params), (self.buffers, other.buffers)):
            for name, t in mine.items():
                t[index] = theirs[name][source]
        self.optimizer.reset_member(index)
        epoch = int(other.epoch[source])
        self.epoch[index] = epoch
        self.diverged[index] = False
        self.best_score[index] = math.inf
        self.best_epoch[index] = 0
        self.history[index] = [dict(r) for r in other.history[source] if r["epoch"] <= epoch]
        self.failure[index] = None
        self._refresh()

    def set_hyperparameters(self, index: int, **changes: Any) -> None:
        """Change per-member hyperparameters of one member between epochs (a lower learning
        rate, more dropout); structural ones cannot change inside a population."""
        structural = [k for k in changes if k in STRUCTURAL]
        if structural:
            raise ValueError(f"{', '.join(structural)} cannot change inside a population: "
                             "they fix the tensor shapes; start a new population instead")
        self.hyperparameters[index] = self.hyperparameters[index].replace(**changes)
        self._refresh()

    def _refresh(self) -> None:
        """Rebuild the per-member ``(P,)`` hyperparameter tensors after any change."""
        hp, dt, device = self.hyperparameters, self.dtype, self.device

        def column(key: str, fn: Callable = float) -> torch.Tensor:
            return torch.tensor([fn(h[key]) for h in hp], dtype=dt, device=device)

        self._hp = {
            "learning_rate": column("learning_rate"),
            "lr_decay": torch.tensor([DECAY_CODES[h["lr_decay"]] for h in hp], device=device),
            "decay_rate": torch.tensor([effective_decay_rate(h) for h in hp], dtype=dt,
                                       device=device),
            "decay_steps": column("decay_steps"),
            "epochs": column("epochs"),
            "keep_prob": 1.0 - column("dropout"),
            "bn_momentum": column("bn_momentum"),
        }
        self._coef = Coefficients.from_hyperparameters(hp, dt, device)
        self._flags = {
            "l2": any(h["l2"] > 0 for h in hp),
            "l1": any(h["l1"] > 0 for h in hp),
            "weight_decay": any(h["weight_decay"] > 0 for h in hp),
            "second_moment": any(h["optimizer"] in ("rmsprop", "adam", "adamw") for h in hp),
            "dropout": any(h["dropout"] > 0 for h in hp),
        }

    # ----------------------------------------------------------------- forward, backward

    def _forward(self, X: torch.Tensor, training: bool, sub_batches: bool = False
                 ) -> torch.Tensor:
        """Output pre-activations ``(P, B, C)``; in training, with dropout if a member uses
        it and the running batch-norm statistics left alone."""
        keep_prob = self._hp["keep_prob"] if training and self._flags["dropout"] else None
        return network.forward(self.structure, self.params, self.buffers, X,
                               training=training, keep_prob=keep_prob, generator=self.generator,
                               kernels=self.kernels, sub_batches=sub_batches)

    def _gradients(self, X: torch.Tensor, y: torch.Tensor, n_train: int,
                   active: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                   sub_batches: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One training-mode forward and backward pass: the output z, the per-example losses
        and every member's dJ/dθ, the data cost of this batch (rows weighted by ``weight``)
        plus the L2 and L1 penalties with m = ``n_train``.
        The ``(P,)`` bool ``active`` members update their running batch-norm statistics;
        ``sub_batches``: X holds each TabM-mini sub-network's own rows (``network.forward``).
        This is what ``train_epoch`` hands the optimizer and what ``gradients`` returns."""
        bn_momentum = None
        if active is not None and self.structure.batch_norm:
            bn_momentum = torch.where(active, self._hp["bn_momentum"], 1.0)  # frozen: m = 1
        keep_prob = self._hp["keep_prob"] if self._flags["dropout"] else None
        z, example_losses, grads = network.forward_backward(
            self.structure, self.params, self.buffers, X, y, bn_momentum=bn_momentum,
            keep_prob=keep_prob, generator=self.generator, kernels=self.kernels,
            weight=weight, sub_batches=sub_batches)
        for name in self.weight_names:
            optim.add_penalty_gradient(grads[name], self.params[name], self._coef.l2,
                                       self._coef.l1, n_train, self._flags["l2"],
                                       self._flags["l1"])
        return z, example_losses, grads

    def to_device(self, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """The tensors on this population's device (as they are if already there): move a
        data set once before training rather than every epoch."""
        return tuple(None if t is None else torch.as_tensor(t, device=self.device)
                     for t in tensors)

    def _check_data(self, X: torch.Tensor, y: torch.Tensor | None = None) -> tuple:
        X = torch.as_tensor(X, dtype=self.dtype, device=self.device)
        if X.dim() != 2 or X.shape[1] != self.structure.n_inputs:
            raise ValueError(f"X must have shape (rows, {self.structure.n_inputs}), "
                             f"got {tuple(X.shape)}")
        if y is None:
            return X, None
        y = torch.as_tensor(y, device=self.device)
        y = y.long() if self.structure.task == "multiclass" else y.to(self.dtype)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        return X, y

    @torch.no_grad()
    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Output pre-activations z ``(P, N, C)`` in evaluation mode, computed in chunks."""
        X, _ = self._check_data(X)
        chunk = eval_chunk_rows(self.size, self.structure.widest, self.device)
        return torch.cat([self._forward(X[i:i + chunk], training=False)
                          for i in range(0, max(len(X), 1), chunk)], dim=1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(P, N, C)``, or predicted values ``(P, N)`` for regression."""
        return losses.predictions(self.decision_function(X), self.structure.task)

    # ----------------------------------------------------------------- training

    def learning_rates(self) -> torch.Tensor:
        """Each member's α for its next epoch, after learning-rate decay."""
        hp = self._hp
        return learning_rate_at(self.epoch, hp["learning_rate"], hp["lr_decay"],
                                hp["decay_rate"], hp["decay_steps"], hp["epochs"])

    def penalty(self) -> torch.Tensor:
        """``(P,)`` (λ₂/2)·Σ‖W‖²_F + (λ₁/2)·Σ|w| over dense weights and embedding tables: the
        cost's L2 and L1
        terms times m (divide by the number of training rows m)."""
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for name in self.weight_names:
            total = total + optim.penalty(self.params[name], self._coef.l2, self._coef.l1)
        return total

    def cost(self, X: torch.Tensor, y: torch.Tensor, n_train: int | None = None,
             weight: torch.Tensor | None = None, sub_batches: bool = False) -> torch.Tensor:
        """``(P,)`` cost J = (1/B)·Σ w·L + penalty/m of one batch in training mode (dropout off
        unless some member uses it; ``weight`` None: all 1). For gradient checks. TabM-mini:
        the mean of the sub-networks' costs, each on all of X, or with ``sub_batches`` on
        its own block of X's rows."""
        X, y = self._check_data(X, y)
        z = self._forward(X, training=True, sub_batches=sub_batches)
        k = 1 if sub_batches else self.structure.tabm_k
        y_rows, weight_rows = network.sub_network_rows(y, weight, k)
        per_row = losses.member_losses(z, y_rows, self.structure.task)
        if weight_rows is not None:
            per_row = per_row * weight_rows.to(self.dtype)
        return per_row.mean(dim=1) + self.penalty() / (n_train or len(X))

    def gradients(self, X: torch.Tensor, y: torch.Tensor, n_train: int | None = None,
                  weight: torch.Tensor | None = None, sub_batches: bool = False
                  ) -> dict[str, torch.Tensor]:
        """dJ/dθ of ``cost`` as the optimizer receives it in training: the same forward,
        hand-written backward and penalty gradients as a step of ``train_epoch`` (running
        batch-norm statistics left alone). For gradient checks against ``cost``."""
        X, y = self._check_data(X, y)
        return self._gradients(X, y, n_train or len(X), weight=weight,
                               sub_batches=sub_batches)[2]

    @torch.no_grad()
    def train_epoch(self, X: torch.Tensor, y: torch.Tensor,
                    weight: torch.Tensor | None = None, until: float | None = None
                    ) -> dict[str, torch.Tensor]:
        """One pass over shuffled minibatches for every trainable member; ``weight`` ``(n,)``:
        the rows' weights in the loss (mean 1; None: all 1), or ``(P, n)``: each member's own
        (a zero leaves a row out of a member's loss: a bag's held-out fold). ``until``
        (``time.monotonic()``): no minibatch starts after it, so a time budget can end an
        epoch part way (it still counts as one).

        Returns ``(P,)`` training metrics averaged over the epoch's minibatches (training mode,
        as Keras reports them). Members that diverge are flagged, frozen and reset to zero
        weights so that they cost nothing but arithmetic; the others are untouched by them.
        """
        X, y = self._check_data(X, y)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        if self.structure.exact:
            return self._solve_epoch(X, y, weight)
        s, task = self.structure, self.structure.task
        n = len(X)
        active_mask = self.trainable
        active = active_mask.to(self.dtype)
        lr = self.learning_rates()
        loss_sum = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        correct = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        rows = 0
        y_seen = []
        # TabM-mini: each sub-network its own order of the rows, its minibatches k blocks of
        # one batch; the training metrics are the sub-networks' means
        k = s.tabm_k
        orders = torch.stack([torch.randperm(n, generator=self.generator, device=self.device)
                              for _ in range(k)])
        for start in range(0, n, s.batch_size):
            index = orders[:, start:start + s.batch_size]
            if s.batch_norm and index.shape[1] < 2:
                continue  # batch statistics of a single row are meaningless
            index = index.reshape(-1)
            xb, yb = X[index], y[index]
            wb = weight[..., index] if weight is not None else None
            z, example_losses, grads = self._gradients(xb, yb, n, active_mask, wb,
                                                       sub_batches=k > 1)
            loss_sum += example_losses.sum(dim=1) / k
            if task != "regression":
                correct += losses.correct(z, yb, task) / k
            self.optimizer.step(self.params, grads, self._coef, lr, active, self._flags,
                                self.kernels.update)
            rows += len(index) // k
            y_seen.append(yb[:len(index) // k])
            if until is not None and time.monotonic() >= until:
                break
        self.epoch += active_mask.long()
        metrics = {"loss": loss_sum / max(rows, 1)}
        if task == "regression":
            seen = torch.cat(y_seen) if y_seen else y[:0]
            metrics.update(_regression_metrics(2 * loss_sum, seen))
        else:
            metrics.update({"log_loss": metrics["loss"], "accuracy": correct / max(rows, 1)})
        self._freeze_diverged(metrics["loss"], active_mask)
        return metrics

    def _solve_epoch(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
                     ) -> dict[str, torch.Tensor]:
        """``train_epoch`` of ``solver="exact"``: every trainable member's weights set to the
        minimizer of its cost on all the rows (``exact.least_squares`` for a regression,
        ``exact.softmax_regression`` for a classifier), so the next epochs change nothing;
        the training metrics are the cost's data term there."""
        s, active = self.structure, self.trainable
        def inputs(rows: slice) -> torch.Tensor:  # computed chunk by chunk by the solve
            return network.solved_inputs(s, self.params, X[rows])

        if s.task == "regression":
            W, b = exact.least_squares(inputs, y, self._coef.l2, weight)
        else:
            W, b = exact.softmax_regression(inputs(slice(None)), y, s.task, self._coef.l2,
                                            s.layer_sizes[-1], weight)
        keep = active.view(-1, 1, 1)
        W0, b0 = self.params["W0"], self.params["b0"]
        W0.copy_(torch.where(keep, W, W0))  # in place, as an optimizer step updates them
        b0.copy_(torch.where(keep, b.view_as(b0), b0))
        self.epoch += active.long()
        z = self.decision_function(X)  # (P, n, C), in chunks
        row_losses = losses.member_losses(z, y, s.task)
        if weight is not None:
            row_losses = weight * row_losses
        metrics = {"loss": row_losses.mean(dim=1)}
        if s.task == "regression":  # the rows' ½(ŷ − y)²
            metrics.update(_regression_metrics(2 * row_losses.sum(dim=1), y))
        else:
            metrics.update({"log_loss": metrics["loss"],
                            "accuracy": losses.correct(z, y, s.task) / len(y)})
        self._freeze_diverged(metrics["loss"], active)
        return metrics

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(P,)`` loss and metrics in evaluation mode (running batch-norm statistics, no
        dropout): log_loss and accuracy for classifiers, rmse and r2 for regression (in the
        units of ``y``)."""
        X, y = self._check_data(X, y)
        task = self.structure.task
        z = self.decision_function(X)
        per_example = losses.member_losses(z, y, task)
        metrics = {"loss": per_example.mean(dim=1)}
        if task == "regression":
            metrics.update(_regression_metrics(2 * per_example.sum(dim=1), y))
        else:
            metrics.update({"log_loss": metrics["loss"],
                            "accuracy": losses.correct(z, y, task) / len(y)})
        return metrics

    @torch.no_grad()
    def _freeze_diverged(self, loss: torch.Tensor, trained: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss)
        for p in self.params.values():
            bad |= ~torch.isfinite(p).flatten(1).all(dim=1)
        newly = bad & trained & ~self.diverged
        if not newly.any():
            return
        for i in newly.nonzero().flatten().tolist():
            self.failure[i] = (f"diverged at epoch {int(self.epoch[i])}: loss "
                               f"{float(loss[i])} (learning_rate "
                               f"{self.hyperparameters[i]['learning_rate']:g})")
            for t in (*self.params.values(), *self.buffers.values()):
                t[i] = 0.0
            self.optimizer.reset_member(i)
        self.diverged |= newly

    def fit_epoch(self, X: torch.Tensor, y: torch.Tensor, X_val: torch.Tensor | None = None,
                  y_val: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  until: float | None = None) -> list[dict[str, Any] | None]:
        """Train one epoch (``weight``: the training rows' loss weights; ``until``: as
        ``train_epoch``'s), evaluate, and append a record to each trained member's history.
        Returns the records (None for members that did not train this epoch)."""
        trained = self.trainable.tolist()
        lrs = self.learning_rates().tolist()
        train = self.train_epoch(X, y, weight, until)
        val = self.evaluate(X_val, y_val) if X_val is not None else {}
        columns = {f"train_{k}": v.tolist() for k, v in train.items()}
        columns.update({f"val_{k}": v.tolist() for k, v in val.items()})
        epochs = self.epoch.tolist()
        records: list[dict[str, Any] | None] = []
        for i in range(self.size):
            if not trained[i]:
                records.append(None)
                continue
            record = {"epoch": epochs[i], "learning_rate": lrs[i]}
            record.update({k: v[i] for k, v in columns.items()})
            if self.failure[i] is not None and self.diverged[i]:
                record["diverged"] = True
            self.history[i].append(record)
            records.append(record)
        return records

    def fit(self, X: torch.Tensor, y: torch.Tensor, X_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None,
            on_epoch: Callable[[Population, list], None] | None = None) -> Population:
        """Train until every member has run its own ``epochs`` (or diverged)."""
        X, y = self._check_data(X, y)  # converted and moved to the device once
        if X_val is not None:
            X_val, y_val = self._check_data(X_val, y_val)
        while bool(self.trainable.any()):
            records = self.fit_epoch(X, y, X_val, y_val)
            if on_epoch is not None:
                on_epoch(self, records)
        return self

    def _weights(self) -> dict[str, torch.Tensor]:
        """What a network predicts with: its parameters and batch-norm statistics."""
        return {**{f"param.{k}": p for k, p in self.params.items()},
                **{f"buffer.{k}": b for k, b in self.buffers.items()}}

    @torch.no_grad()
    def remember_best(self, scores: torch.Tensor) -> torch.Tensor:
        """Early stopping's "restore best weights", for every member at once: where
        ``scores`` (``(P,)``, lower is better, NaN or inf for members to skip) beats a
        member's best so far, keep a copy of its weights and batch-norm statistics and the
        epoch. ``export_member(i, at_best=True)`` returns that network. Returns the ``(P,)``
        bool mask of members that improved."""
        scores = torch.as_tensor(scores, dtype=self.dtype, device=self.device)
        if scores.shape != (self.size,):
            raise ValueError(f"scores must have shape ({self.size},), got {tuple(scores.shape)}")
        improved = torch.isfinite(scores) & (scores < self.best_score)
        if not improved.any():
            return improved
        weights = self._weights()
        if self._best is None:
            self._best = {k: t.clone() for k, t in weights.items()}
        else:
            for k, t in weights.items():
                self._best[k][improved] = t[improved]
        self.best_score = torch.where(improved, scores, self.best_score)
        self.best_epoch = torch.where(improved, self.epoch, self.best_epoch)
        return improved

    # ----------------------------------------------------------------- state

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the population, flat and contiguous, on the CPU (for safetensors:
        a model saved from a GPU loads anywhere)."""
        return {k: t.cpu() for k, t in self._state_tensors().items()}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the population, on its device (the generator's state: the CPU)."""
        out = {f"param.{k}": p.contiguous() for k, p in self.params.items()}
        out.update({f"buffer.{k}": b.contiguous() for k, b in self.buffers.items()})
        out.update({f"optim.v.{k}": t.contiguous() for k, t in self.optimizer.v.items()})
        out.update({f"optim.s.{k}": t.contiguous() for k, t in self.optimizer.s.items()})
        out["optim.t"] = self.optimizer.t.contiguous()
        out["epoch"] = self.epoch.contiguous()
        out["diverged"] = self.diverged.to(torch.uint8)
        out["generator"] = self.generator.get_state()
        return out

    def state_meta(self) -> dict[str, Any]:
        """Everything else, JSON-serializable."""
        return {
            "structure": asdict(self.structure), "n_classes": self.n_classes, "seed": self.seed,
            "inputs": self.inputs.to_dict(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "generator_device": self.device.type,  # the kind of the saved generator state
            "hyperparameters": [{**h, "hidden_layer_sizes": list(h["hidden_layer_sizes"])}
                                for h in self.hyperparameters],
            "member_ids": self.member_ids, "next_id": self._next_id,
            "history": self.history, "failure": self.failure,
        }

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                   device: str | torch.device = "cpu", compile: bool | None = None
                   ) -> Population:
        """Rebuild a population saved with ``state_meta`` and ``state_tensors`` (from any
        device) on ``device``. The random generator goes on where it stopped on the same
        kind of device; moved between a CPU and a GPU (whose generators differ) it is
        seeded from the saved state instead, so training goes on reproducibly but with
        other minibatch orders and masks than it would have had."""
        s = meta["structure"]
        # saved before input layouts: every column dense
        inputs = (InputLayout.from_dict(meta["inputs"]) if "inputs" in meta
                  else InputLayout(int(s["n_inputs"])))
        pop = cls(s["task"], inputs, meta["hyperparameters"],
                  n_classes=meta["n_classes"], seed=meta["seed"],
                  dtype=getattr(torch, meta["dtype"]), device=device, compile=compile)
        with torch.no_grad():
            for k, p in pop.params.items():
                p.copy_(tensors[f"param.{k}"])
            for k, b in pop.buffers.items():
                b.copy_(tensors[f"buffer.{k}"])
            for k in pop.optimizer.v:
                pop.optimizer.v[k].copy_(tensors[f"optim.v.{k}"])
                pop.optimizer.s[k].copy_(tensors[f"optim.s.{k}"])
        pop.optimizer.t = tensors["optim.t"].to(pop.device, pop.dtype, copy=True)
        pop.epoch = tensors["epoch"].to(pop.device, torch.long, copy=True)
        pop.diverged = tensors["diverged"].to(pop.device, torch.bool, copy=True)
        state = tensors["generator"].cpu()
        if meta.get("generator_device", "cpu") == pop.device.type:
            pop.generator.set_state(state.clone())
        else:
            digest = hashlib.blake2b(state.numpy().tobytes(), digest_size=8).digest()
            pop.generator.manual_seed(int.from_bytes(digest, "little") >> 1)
        pop.member_ids = list(meta["member_ids"])
        pop._next_id = meta["next_id"]
        pop.history = [list(h) for h in meta["history"]]
        pop.failure = list(meta["failure"])
        return pop

    def to(self, device: str | torch.device, copy: bool = False) -> Population:
        """This population on ``device``: itself if it is there already (unless ``copy``),
        else a copy (weights, statistics, optimizer state, history and the remembered best
        epochs), as ``torch.Tensor.to`` does. The tuner trains on its device and keeps its
        networks on the CPU, where the ensemble, the model files and the study's artifacts
        are made."""
        device = resolve_device(device)
        if device == self.device and not copy:
            return self
        pop = Population.from_state({**self.state_meta(), "hyperparameters":
                                     self.hyperparameters}, self._state_tensors(), device,
                                    compile=self.kernels is kernels.COMPILED)
        pop.best_score = self.best_score.to(device, copy=True)
        pop.best_epoch = self.best_epoch.to(device, copy=True)
        if self._best is not None:
            pop._best = {k: t.to(device, copy=True) for k, t in self._best.items()}
        return pop

    def export_member(self, index: int, at_best: bool = False) -> Population:
        """A standalone one-member population holding a copy of member ``index``'s state.

        ``at_best``: the network of the member's best epoch as ``remember_best`` kept it
        (weights and batch-norm statistics; epoch count set to that epoch, optimizer moments
        zero, history complete), for predicting; without a remembered epoch, the current one."""
        tensors = {k: (v[index:index + 1] if k not in ("generator",) else v)
                   for k, v in self._state_tensors().items()}
        if at_best and self._best is not None and math.isfinite(self.best_score[index]):
            tensors.update({k: t[index:index + 1] for k, t in self._best.items()})
            tensors.update({k: torch.zeros_like(t) for k, t in tensors.items()
                            if k.startswith("optim.")})
            tensors["epoch"] = self.best_epoch[index:index + 1]
        meta = self.state_meta()
        for key in ("member_ids", "history", "failure"):
            meta[key] = [meta[key][index]]
        meta["hyperparameters"] = [self.hyperparameters[index]]  # a Config: not checked again
        return Population.from_state(meta, tensors, self.device,
                                     compile=self.kernels is kernels.COMPILED)


def _regression_metrics(sse: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMSE and R² = 1 − SSE/SST from each member's sum of squared errors."""
    n = max(len(y), 1)
    sst = float(((y - y.mean()) ** 2).sum()) if len(y) > 1 else math.nan
    return {"rmse": (sse / n).sqrt(), "r2": 1.0 - sse / sst if sst > 0 else sse * math.nan}
