"""Output activations and losses, one cost per member.

All three pair an output activation with a loss whose gradient at the output is dz = ŷ − y
(per example; the cost J = (1/B)·Σ L divides it by B): softmax with cross-entropy, sigmoid
with binary cross-entropy, and a linear output with the squared error ½(ŷ − y)².

With sample weights wᵢ (normalized to mean 1 over the training rows) the cost is
J = (1/B)·Σ wᵢLᵢ, so dzᵢ = wᵢ(ŷᵢ − yᵢ)/B. Why over B and not over Σ wᵢ: a minibatch's Σ wᵢ
varies, and dividing by it would make each step a ratio (a biased estimate, and 0/0 for a
batch of zero weights); with weights of mean 1 the cost stays on the unweighted scale, so
learning rates and the L2 term (λ/2m) keep their meaning, and equal weights change nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_size(task: str, n_classes: int) -> int:
    return n_classes if task == "multiclass" else 1


def member_losses(z: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-example losses ``(P, B)`` from output pre-activations ``z`` of shape ``(P, B, C)``.

    multiclass: L = −Σ_j y_j log ŷ_j with ŷ = softmax(z) (log-softmax, computed stably);
    binary: L = −y log ŷ − (1 − y) log(1 − ŷ) with ŷ = sigmoid(z);
    regression: L = ½(ŷ − y)² with ŷ = z.
    """
    P, B, _ = z.shape
    if task == "multiclass":
        log_probs = F.log_softmax(z, dim=2)
        return -log_probs.gather(2, y.view(1, B, 1).expand(P, B, 1)).squeeze(2)
    if task == "binary":
        return F.binary_cross_entropy_with_logits(
            z.squeeze(2), y.to(z.dtype).expand(P, B), reduction="none")
    residual = z.squeeze(2) - y.to(z.dtype)
    return 0.5 * residual * residual


def prediction_losses(y_hat: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-example losses ``(N,)`` of predictions ŷ as :func:`predictions` gives them, class
    probabilities ``(N, C)`` or values ``(N,)``, or an average of several networks' (which has
    no z): the losses of :func:`member_losses` with z = log ŷ for probabilities (softmax(log ŷ)
    = ŷ, as ŷ sums to 1), so L = −log ŷ_y with ŷ_y floored at 1e-15; z = ŷ for values, so
    L = ½(ŷ − y)²."""
    if task == "regression":
        return member_losses(y_hat.view(1, -1, 1), y, task)[0]
    log_probs = y_hat.clamp_min(1e-15).log()  # a confident mistake costs 34.5, not infinity
    return member_losses(log_probs.unsqueeze(0), y.long(), "multiclass")[0]


def output_gradient(z: torch.Tensor, y: torch.Tensor, task: str,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """dJ/dz for J = (1/B)·Σ_b w_b·L_b: the seed's dz = ŷ − y, times w_b (``weight`` ``(B,)``;
    None: all 1), over B."""
    P, B, _ = z.shape
    if task == "multiclass":
        dz = torch.softmax(z, dim=2)
        dz.scatter_add_(2, y.view(1, B, 1).expand(P, B, 1),
                        torch.full((P, B, 1), -1.0, dtype=z.dtype))  # ŷ − one_hot(y)
    elif task == "binary":
        dz = torch.sigmoid(z) - y.to(z.dtype).view(1, B, 1)
    else:
        dz = z - y.to(z.dtype).view(1, B, 1)
    if weight is not None:
        dz.mul_(weight.to(z.dtype).view(1, B, 1))
    return dz.div_(B)


def predictions(z: torch.Tensor, task: str) -> torch.Tensor:
    """ŷ from z: class probabilities ``(P, N, C)`` for classifiers (C = 2 for binary, the
    columns P(class 0), P(class 1)), values ``(P, N)`` for regression."""
    if task == "multiclass":
        return torch.softmax(z, dim=2)
    if task == "binary":
        p1 = torch.sigmoid(z)
        return torch.cat([1.0 - p1, p1], dim=2)
    return z.squeeze(2)
