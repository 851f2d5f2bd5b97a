"""The elementwise functions of a training step, run eagerly or fused by torch.compile.

Beside its batched products, a step is elementwise work: batch norm, the activation and
dropout of each hidden layer (``layers.hidden_forward`` and ``hidden_backward``), the loss at
the output (``losses.loss_and_gradient``) and the optimizer's update (``optim.update``).
Eagerly, each operation in them is a pass over memory; torch.compile with the inductor
backend (C++ kernels built with the system's compiler) fuses the layer functions and the
update into a few loops each (the loss stays eager: compiled, it measured slower).

Measured on this project's 2-core CPU (P = 64, digits, two hidden layers, idle, one thread):
compiled, a run takes 1.8-1.9× the time of its matrix products alone at width 128 (eager:
2.0-2.1×, 1.7-1.9× since ``allocator.py``) and 2.5-3.0× at width 32 (eager: 2.2-2.8×;
bench/README.md). But compiling costs 40-50 s in a fresh environment and 7-10 s in every new
process once inductor's on-disk cache holds the kernels, and again for each new variant
(activation, batch norm or dropout on or off, float64): a 60 s tune of wage finished 83
trials compiled against 1,202 eager. So it is off unless asked for: ``CAVIAR_COMPILE=1`` or
``Population(compile=True)``.
Where compiling fails (no C++ compiler, an unsupported platform) the failure is reported once,
as a warning, and everything runs eagerly from then on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import layers, losses, optim

COMPILE_ENV = "CAVIAR_COMPILE"


@dataclass(frozen=True)
class Kernels:
    """The four elementwise functions a step calls (see the module docstring)."""

    hidden_forward: Callable[..., Any]
    hidden_backward: Callable[..., Any]
    loss_and_gradient: Callable[..., Any]
    update: Callable[..., None]


EAGER = Kernels(layers.hidden_forward, layers.hidden_backward, losses.loss_and_gradient,
                optim.update)

_compile_failed: list[str] = []  # the first failure's message, once there is one


class _Compiled:
    """``fn`` compiled on its first call (dynamic shapes: one compilation serves every P, B
    and width); ``fn`` itself once any compilation has failed."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if _compile_failed:
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=True)
        try:
            return self.compiled(*args)
        except Exception as e:  # compilers fail in many ways; a real error recurs eagerly
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            _compile_failed.append(f"{type(e).__name__}: {first_line}")
            warnings.warn(f"torch.compile failed ({_compile_failed[0]}); caviar runs the "
                          f"engine eagerly (set {COMPILE_ENV}=0 to skip compiling)",
                          RuntimeWarning, stacklevel=2)
            return self.fn(*args)


# the loss stays eager: compiled, its log-softmax and scatter measured slower
COMPILED = Kernels(_Compiled(layers.hidden_forward), _Compiled(layers.hidden_backward),
                   losses.loss_and_gradient, _Compiled(optim.update))


def compile_default() -> bool:
    """Whether populations compile when not told: ``CAVIAR_COMPILE=1`` (or true, yes, on)."""
    return os.environ.get(COMPILE_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def select(compile: bool | None = None) -> Kernels:
    """The compiled kernels if ``compile`` (None: :func:`compile_default`), else the eager."""
    return COMPILED if (compile_default() if compile is None else compile) else EAGER
