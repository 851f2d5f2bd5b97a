"""Layers with a leading member axis, each a forward and a hand-written backward.

Shapes: activations ``(P, B, n)``, dense weights ``(P, n_in, n_out)``, per-feature vectors
(bias, γ, β, running statistics) ``(P, 1, n)``, per-member hyperparameters ``(P,)`` viewed as
``(P, 1, 1)``. Every operation acts on each member separately, so nothing one member computes
reaches another.

The backward passes are written out (as in micrograd or cs231n) rather than left to autograd:
autograd keeps more intermediates and makes more passes over memory, which is what a step of
a population costs. tests/test_gradients.py checks each against finite differences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEAKY_SLOPE = 0.01


def per_member(values: torch.Tensor) -> torch.Tensor:
    """View a ``(P,)`` hyperparameter as ``(P, 1, 1)`` so it broadcasts over ``(P, B, n)``."""
    return values.view(-1, 1, 1)


def init_dense(n_in: int, n_out: int, activation: str, generator: torch.Generator,
               dtype: torch.dtype) -> torch.Tensor:
    """One member's weights: He normal for relu-like activations (variance 2/n_in), Xavier
    normal for tanh, sigmoid and the output layer (variance 2/(n_in + n_out))."""
    if activation in ("relu", "leaky_relu", "gelu"):
        std = math.sqrt(2.0 / n_in)
    else:
        std = math.sqrt(2.0 / (n_in + n_out))
    return torch.randn(n_in, n_out, generator=generator, dtype=dtype) * std


# ------------------------------------------------------------------------- dense

def dense_forward(a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """z = a·W + b. ``a`` is the shared input ``(B, d)`` (one broadcast product serves every
    member) or the members' activations ``(P, B, n)`` (a batched product)."""
    z = torch.matmul(a, W) if a.dim() == 2 else torch.bmm(a, W)
    return z if b is None else z.add_(b)


def dense_backward(dz: torch.Tensor, a: torch.Tensor, W: torch.Tensor, need_da: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """dW = aᵀ·dz, db = Σ_batch dz, da = dz·Wᵀ."""
    dW = torch.matmul(a.t(), dz) if a.dim() == 2 else torch.bmm(a.transpose(1, 2), dz)
    db = dz.sum(dim=1, keepdim=True)
    da = torch.bmm(dz, W.transpose(1, 2)) if need_da else None
    return dW, db, da


# ------------------------------------------------------------------------- batch norm

def batch_norm_forward(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, tuple, torch.Tensor, torch.Tensor]:
    """Batch norm of z over the minibatch, as the seed writes it:
    μ = mean(z), σ² = mean((z − μ)²), z_norm = (z − μ)/√(σ² + ε), z̃ = γ·z_norm + β.
    Returns z̃, the cache for backward, and the minibatch μ and σ² (for running averages)."""
    B = z.shape[1]
    mu = z.mean(dim=1, keepdim=True)
    z_norm = z.sub_(mu)  # z is not needed again: centre it in place
    var = torch.linalg.vecdot(z_norm, z_norm, dim=1).unsqueeze(1) / B
    inv_std = torch.rsqrt(var + eps)
    z_norm.mul_(inv_std)
    return torch.addcmul(beta, z_norm, gamma), (z_norm, inv_std), mu, var


def batch_norm_backward(dz_tilde: torch.Tensor, cache: tuple, gamma: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dγ = Σ dz̃·z_norm, dβ = Σ dz̃, and through the minibatch statistics
    dz = (γ/√(σ²+ε))·(dz̃ − mean(dz̃) − z_norm·mean(dz̃·z_norm)),
    where mean(dz̃) = dβ/B and mean(dz̃·z_norm) = dγ/B."""
    z_norm, inv_std = cache
    B = dz_tilde.shape[1]
    dgamma = torch.linalg.vecdot(dz_tilde, z_norm, dim=1).unsqueeze(1)
    dbeta = dz_tilde.sum(dim=1, keepdim=True)
    dz = torch.addcmul(dz_tilde - dbeta / B, z_norm, dgamma / -B)
    return dz.mul_(gamma * inv_std), dgamma, dbeta


def batch_norm_eval(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                    running_mean: torch.Tensor, running_var: torch.Tensor, eps: float
                    ) -> torch.Tensor:
    """Batch norm at test time: the running estimates replace the minibatch statistics."""
    return torch.addcmul(beta, (z - running_mean) * torch.rsqrt(running_var + eps), gamma)


def update_running(running: torch.Tensor, batch_value: torch.Tensor, m: torch.Tensor) -> None:
    """μ_run ← m·μ_run + (1 − m)·μ, in place; ``m`` is ``(P, 1, 1)`` (a frozen member passes
    m = 1 and keeps its statistics)."""
    running.lerp_(batch_value, 1.0 - m)


# ------------------------------------------------------------------------- activations

def activation_forward(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, LEAKY_SLOPE)
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "gelu":
        return F.gelu(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(da: torch.Tensor, z: torch.Tensor, a: torch.Tensor, name: str
                        ) -> torch.Tensor:
    """dz = da·g'(z), with g' from the output where that is cheaper."""
    if name == "relu":
        return torch.ops.aten.threshold_backward(da, a, 0.0)  # da where a > 0, else 0
    if name == "leaky_relu":
        return torch.where(z > 0, da, da * LEAKY_SLOPE)
    if name == "tanh":
        return da.mul_(1.0 - a * a)  # tanh' = 1 − a²
    if name == "sigmoid":
        return da.mul_(a * (1.0 - a))  # σ' = a(1 − a)
    return torch.ops.aten.gelu_backward(da, z)


# ------------------------------------------------------------------------- dropout

def dropout_mask(shape: tuple[int, ...], keep_prob: torch.Tensor, generator: torch.Generator,
                 dtype: torch.dtype) -> torch.Tensor:
    """Inverted dropout: mask ~ Bernoulli(keep_prob)/keep_prob, so the expected activation is
    unchanged and nothing needs scaling at test time.

    Each random byte decides one unit (eight units per 64-bit draw: the generator, not the
    arithmetic, is what dropout costs), so keep_prob is rounded to a multiple of 1/256 and the
    mask is divided by that rounded value: the expectation stays exact.
    """
    numel = math.prod(shape)
    draws = torch.empty((numel + 7) // 8, dtype=torch.int64)
    draws.random_(-(2**63), None, generator=generator)  # all 64 bits uniform
    random_bytes = draws.view(torch.uint8)[:numel].view(shape)
    keep_count = (keep_prob * 256).round().clamp(1, 256)  # keep when byte < keep_count
    threshold = per_member((keep_count - 1).to(torch.uint8))
    scale = per_member(256.0 / keep_count).to(dtype)
    keep = random_bytes <= threshold
    return keep.to(dtype).mul_(scale)  # scale or 0 (3× faster than torch.where broadcasting)
