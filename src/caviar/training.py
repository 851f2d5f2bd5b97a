"""Training one network from preprocessed arrays: the shared loop behind the estimators, the
panda trainer and the tuner's refit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .engine import Population


def as_tensors(X: np.ndarray, y: np.ndarray | None = None, task: str = "regression"
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 inputs; int64 class indices for multiclass, float32 targets otherwise."""
    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    if y is None:
        return X_t, None
    dtype = np.int64 if task == "multiclass" else np.float32
    return X_t, torch.from_numpy(np.ascontiguousarray(y, dtype=dtype))


def validation_score(record: Mapping[str, Any], task: str) -> float:
    """The number early stopping and the tuner watch: validation loss (lower is better)."""
    return record["val_loss"]


def train_network(X: np.ndarray, y: np.ndarray, task: str, hyperparameters: Mapping[str, Any],
                  n_classes: int | None = None, X_val: np.ndarray | None = None,
                  y_val: np.ndarray | None = None, seed: int = 0,
                  patience: int | None = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Population:
    """Train one network for ``hyperparameters["epochs"]`` epochs.

    With validation data and ``patience``, training stops when the validation loss has not
    improved for ``patience`` epochs and the network of the best epoch is returned (its
    history still holds every epoch run).
    """
    Xt, yt = as_tensors(X, y, task)
    Xv, yv = as_tensors(X_val, y_val, task) if X_val is not None else (None, None)
    network = Population(task, Xt.shape[1], [dict(hyperparameters)], n_classes=n_classes,
                         seed=seed)
    best, best_loss, since_best = None, float("inf"), 0
    while bool(network.trainable.any()):
        record = network.fit_epoch(Xt, yt, Xv, yv)[0]
        if on_epoch is not None:
            on_epoch(record)
        if network.diverged[0]:
            break
        if patience is None or Xv is None:
            continue
        loss = validation_score(record, task)
        if loss < best_loss:
            best, best_loss, since_best = network.export_member(0), loss, 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best is not None:
        best.history = [list(network.history[0])]
        return best
    return network
