"""The hyperparameter vocabulary shared by the engine, search spaces, TOML files, the CLI and
the estimators (DESIGN.md, "Hyperparameter names").

Two kinds of hyperparameters:

- *structural* ones fix tensor shapes or the computation graph (layer sizes, activation, batch
  norm on/off, batch size). Members of one population share them.
- *per-member* ones are numbers (or small choices) that each member holds in a ``(P,)`` tensor,
  so members with different values still train in one vectorized computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

TASKS = ("binary", "multiclass", "regression")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
LR_DECAYS = ("none", "inverse_time", "exponential", "step", "cosine")

STRUCTURAL = ("hidden_layer_sizes", "activation", "batch_norm", "batch_size")

DEFAULTS: dict[str, Any] = {
    # structural
    "hidden_layer_sizes": (64, 64),
    "activation": "relu",
    "batch_norm": True,
    "batch_size": 128,
    # per member
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "momentum": 0.9,  # β of the momentum optimizer: v ← βv + (1 − β)dW
    "beta1": 0.9,
    "beta2": 0.999,  # also RMSprop's β₂
    "epsilon": 1e-8,
    "lr_decay": "none",
    "decay_rate": None,  # None: the schedule's own default (DEFAULT_DECAY_RATE)
    "decay_steps": 10,  # epochs per step of the "step" schedule
    "l2": 0.0,  # λ of (λ/2m)·Σ‖W‖²_F
    "l1": 0.0,  # λ of (λ/2m)·Σ|w|
    "weight_decay": 0.0,  # decoupled: W ← W − α·wd·W each step
    "dropout": 0.0,  # drop probability; keep_prob = 1 − dropout
    "bn_momentum": 0.9,  # m of μ_run ← m·μ_run + (1 − m)·μ (PyTorch's momentum is 1 − m)
    "epochs": 50,
}

# decay_rate when left as None: inverse time α₀/(1 + 1·epoch) as in the lecture, exponential
# α₀·0.95^epoch, step α₀·0.5^⌊epoch/decay_steps⌋; cosine ignores it.
DEFAULT_DECAY_RATE = {"none": 0.0, "inverse_time": 1.0, "exponential": 0.95, "step": 0.5,
                      "cosine": 0.0}

PER_MEMBER = tuple(k for k in DEFAULTS if k not in STRUCTURAL)

_CHOICES = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "lr_decay": LR_DECAYS}


def close_names(name: str, names) -> str:
    """A ' (did you mean ...?)' hint for a misspelt name, or ''."""
    import difflib

    near = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults updated by ``overrides``, validated; raises ValueError with a one-line message."""
    params = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise ValueError(
                f"unknown hyperparameter {key!r}{close_names(key, DEFAULTS)}; "
                f"known: {', '.join(DEFAULTS)}"
            )
        params[key] = value
    validate(params)
    # decay_rate stays None ("the schedule's default") so that changing lr_decay later
    # changes the rate with it; effective_decay_rate() reads it.
    params["hidden_layer_sizes"] = tuple(int(n) for n in params["hidden_layer_sizes"])
    return params


def effective_decay_rate(params: Mapping[str, Any]) -> float:
    """decay_rate, or the default rate of the member's lr_decay when it is None."""
    rate = params["decay_rate"]
    return float(DEFAULT_DECAY_RATE[params["lr_decay"]] if rate is None else rate)


def validate(params: Mapping[str, Any]) -> None:
    for key, allowed in _CHOICES.items():
        if params[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {params[key]!r}")
    sizes = params["hidden_layer_sizes"]
    if isinstance(sizes, (int, str)) or not all(int(n) >= 1 for n in sizes):
        raise ValueError(
            f"hidden_layer_sizes must be a list of positive widths such as [64, 64], got {sizes!r}"
        )

    def check(key: str, ok, rule: str) -> None:
        value = params[key]
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number {rule}, got {value!r}")
        if not math.isfinite(float(value)) or not ok(float(value)):
            raise ValueError(f"{key} must be {rule}, got {value!r}")

    check("learning_rate", lambda v: v > 0, "> 0")
    for key in ("momentum", "beta1", "beta2", "bn_momentum"):
        check(key, lambda v: 0 <= v < 1, "in [0, 1)")
    check("epsilon", lambda v: v > 0, "> 0")
    for key in ("l2", "l1", "weight_decay"):
        check(key, lambda v: v >= 0, ">= 0")
    check("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
    check("batch_size", lambda v: v >= 1 and v == int(v), "a positive integer")
    check("epochs", lambda v: v >= 1 and v == int(v), "a positive integer")
    check("decay_steps", lambda v: v >= 1 and v == int(v), "a positive integer")
    if params["decay_rate"] is not None:
        check("decay_rate", lambda v: v >= 0, ">= 0")
    if not isinstance(params["batch_norm"], bool):
        raise ValueError(f"batch_norm must be true or false, got {params['batch_norm']!r}")


def structure_key(params: Mapping[str, Any]) -> tuple:
    """Members whose keys are equal can share one population."""
    return (tuple(params["hidden_layer_sizes"]), params["activation"], params["batch_norm"],
            int(params["batch_size"]))
