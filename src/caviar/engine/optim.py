"""SGD, momentum, RMSprop, Adam and AdamW as one update with per-member hyperparameters.

Each member picks its optimizer; the update is written once, in the seeds' notation, and the
choice becomes per-member coefficients:

    v ← β₁·v + (1 − β₁)·dW                     (β₁ = 0 for SGD and RMSprop, β for momentum)
    s ← β₂·s + (1 − β₂)·dW²                    (RMSprop, Adam, AdamW)
    W ← W − α · (v / c₁) / (√(s / c₂) + ε)     (c = 1 − β^t for Adam's bias correction, else 1;
                                                the denominator is 1 without s)

For dense weights dW also carries the penalties, dW += (λ₂/m)·W + (λ₁/2m)·sign(W)
(``add_penalty_gradient``, applied before the step), and the decoupled weight decay shrinks
W ← W − α·wd·W before the step (as torch.optim.AdamW does). A parameter may step at a
multiple of α (``lr_factors``: RealMLP's front scale), its decay then at that step too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..hyperparams import OPTIMIZERS
from .layers import per_member

OPTIMIZER_CODES = {name: code for code, name in enumerate(OPTIMIZERS)}


@dataclass
class Coefficients:
    """Per-member ``(P,)`` coefficients of the update, derived from the hyperparameters."""

    beta1: torch.Tensor
    beta2: torch.Tensor
    uses_second_moment: torch.Tensor
    bias_corrected: torch.Tensor
    epsilon: torch.Tensor
    l2: torch.Tensor
    l1: torch.Tensor
    weight_decay: torch.Tensor

    @classmethod
    def from_hyperparameters(cls, members: Sequence[Mapping[str, Any]], dtype: torch.dtype,
                             device: torch.device | str = "cpu") -> Coefficients:
        def column(fn) -> torch.Tensor:
            return torch.tensor([float(fn(h)) for h in members], dtype=dtype, device=device)

        def beta1(h: Mapping[str, Any]) -> float:
            return {"momentum": h["momentum"], "adam": h["beta1"], "adamw": h["beta1"]}.get(
                h["optimizer"], 0.0)

        return cls(
            beta1=column(beta1),
            beta2=column(lambda h: h["beta2"] if h["optimizer"] in ("rmsprop", "adam", "adamw")
                         else 0.0),
            uses_second_moment=column(lambda h: h["optimizer"] in ("rmsprop", "adam", "adamw")),
            bias_corrected=column(lambda h: h["optimizer"] in ("adam", "adamw")),
            epsilon=column(lambda h: h["epsilon"]),
            l2=column(lambda h: h["l2"]),
            l1=column(lambda h: h["l1"]),
            weight_decay=column(lambda h: h["weight_decay"]),
        )


def penalty(W: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
    """``(P,)`` (λ₂/2)·‖W‖²_F + (λ₁/2)·Σ|w| of one dense weight ``(P, n_in, n_out)``: the L2
    and L1 penalties of the cost without their 1/m (divide by the number of training rows)."""
    return l2 / 2 * W.pow(2).sum(dim=(1, 2)) + l1 / 2 * W.abs().sum(dim=(1, 2))


def add_penalty_gradient(dW: torch.Tensor, W: torch.Tensor, l2: torch.Tensor,
                         l1: torch.Tensor, n_train: int, use_l2: bool = True,
                         use_l1: bool = True) -> torch.Tensor:
    """dW += (λ₂/m)·W + (λ₁/2m)·sign(W), in place: the gradient of ``penalty(W)/m`` with
    m = ``n_train``. ``use_l2``/``use_l1`` False skip a term no member uses."""
    if use_l2:
        dW.addcmul_(W, per_member(l2 / n_train))  # d/dW of (λ/2m)‖W‖²
    if use_l1:
        dW.addcmul_(W.sign(), per_member(l1 / (2 * n_train)))  # d/dW of (λ/2m)Σ|w|
    return dW


def update(params: list[torch.Tensor], grads: list[torch.Tensor], vs: list[torch.Tensor],
           ss: list[torch.Tensor], decays: list[torch.Tensor | None], rate_v: torch.Tensor,
           rate_s: torch.Tensor, neg_steps: list[torch.Tensor], denom_scale: torch.Tensor,
           denom_shift: torch.Tensor, second_moment: bool) -> None:
    """One step of every parameter for every member, in place on ``params``, ``vs`` and ``ss``
    (the ``grads`` are used up as scratch space). The coefficients are ``(P, 1, 1)``:

        v ← β₁·v + (1 − β₁)·dW                  rate_v = 1 − β₁
        s ← β₂·s + (1 − β₂)·dW²                 rate_s = 1 − β₂ (when ``second_moment``)
        W ← decay·W                             decay = 1 − α·wd, decoupled weight decay
                                                (None for tensors it leaves alone)
        W ← W − (α/c₁)·v / (√s/√c₂ + ε)          neg_steps: −α/c₁ per tensor (times its
                                                lr factor), the denominator as
                                                denom_scale·√s + denom_shift (0·√s + 1 for a
                                                member without s)

    A loop over the tensors with one operation per line, as torch.optim's
    ``_single_tensor_adam``: torch.compile fuses each tensor's step into one loop
    (``kernels.py``); eagerly each line is one pass, in place where it can be.
    """
    for param, grad, v, s, decay, neg_step in zip(params, grads, vs, ss, decays, neg_steps):
        v.lerp_(grad, rate_v)
        if decay is not None:
            param.mul_(decay)
        if not second_moment:
            param.addcmul_(v, neg_step)
            continue
        s.lerp_(grad.mul_(grad), rate_s)
        # separate passes: one op with two (P, 1, 1) operands (addcmul) is 3× slower on a CPU
        denominator = s.sqrt().mul_(denom_scale).add_(denom_shift)
        param.addcdiv_(v * neg_step, denominator)


class PopulationOptimizer:
    """Holds the moment estimates v, s and the step count t of every member."""

    def __init__(self, params: dict[str, torch.Tensor], weight_names: set[str],
                 lr_factors: Mapping[str, float] | None = None):
        self.weight_names = weight_names
        self.lr_factors = dict(lr_factors or {})  # a tensor's step over α (absent: 1)
        self.v = {name: torch.zeros_like(p) for name, p in params.items()}
        self.s = {name: torch.zeros_like(p) for name, p in params.items()}
        first = next(iter(params.values()))
        self.t = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
             coef: Coefficients, lr: torch.Tensor, active: torch.Tensor,
             flags: dict[str, bool], update_fn: Callable[..., None] = update) -> None:
        """One update of every parameter from its gradient (the penalties already added, see
        ``add_penalty_gradient``); the gradients are used up as scratch space. ``lr`` and
        ``active`` (1.0 or 0.0) are ``(P,)``; a member with active 0 keeps its weights and
        moments. ``flags`` says which optional terms any member uses, so unused terms cost
        nothing. ``update_fn``: :func:`update` or its compiled version (``kernels.py``)."""
        self.t += active
        c1 = torch.where(coef.bias_corrected > 0, 1.0 - coef.beta1.pow(self.t), 1.0)
        c2 = torch.where(coef.bias_corrected > 0, 1.0 - coef.beta2.pow(self.t), 1.0)
        rate_v = per_member((1.0 - coef.beta1) * active)
        rate_s = per_member((1.0 - coef.beta2) * active)
        neg_step = per_member(-lr * active / c1)
        # the denominator √(s/c₂) + ε as one fused a·√s + b, with a = 0, b = 1 for members
        # without a second moment
        uses_s = coef.uses_second_moment
        denom_scale = per_member(uses_s / c2.sqrt())
        denom_shift = per_member(uses_s * coef.epsilon + (1.0 - uses_s))
        names = list(params)

        def decay(factor: float) -> torch.Tensor:  # 1 − α·wd at the tensor's step, never < 0
            return per_member((1.0 - factor * lr * coef.weight_decay * active).clamp_(min=0.0))

        factors = [self.lr_factors.get(k, 1.0) for k in names]
        decays: list[torch.Tensor | None] = [None] * len(names)
        if flags["weight_decay"]:
            plain = decay(1.0)
            decays = [(plain if f == 1.0 else decay(f)) if k in self.weight_names else None
                      for k, f in zip(names, factors)]
        update_fn([params[k] for k in names], [grads[k] for k in names],
                  [self.v[k] for k in names], [self.s[k] for k in names], decays,
                  rate_v, rate_s, [neg_step if f == 1.0 else neg_step * f for f in factors],
                  denom_scale, denom_shift, flags["second_moment"])

    def copy_member(self, source: int, target: int) -> None:
        for state in (self.v, self.s):
            for tensor in state.values():
                tensor[target] = tensor[source]
        self.t[target] = self.t[source]

    def reset_member(self, index: int) -> None:
        for state in (self.v, self.s):
            for tensor in state.values():
                tensor[index] = 0.0
        self.t[index] = 0.0

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at indices ``keep`` (in that order)."""
        self.v = {k: t[keep].clone() for k, t in self.v.items()}
        self.s = {k: t[keep].clone() for k, t in self.s.items()}
        self.t = self.t[keep].clone()

    def append(self, count: int) -> None:
        """Add fresh (zero) state for ``count`` new members."""
        def grow(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((count, *t.shape[1:]))])

        self.v = {k: grow(t) for k, t in self.v.items()}
        self.s = {k: grow(t) for k, t in self.s.items()}
        self.t = grow(self.t)
