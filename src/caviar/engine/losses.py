"""Output activations and losses, one cost per member.

All three pair an output activation with a loss whose gradient at the output is dz = ŷ − y
(per example; the cost J = (1/B)·Σ L divides it by B): softmax with cross-entropy, sigmoid
with binary cross-entropy, and a linear output with the squared error ½(ŷ − y)².

With sample weights wᵢ (normalized to mean 1 over the training rows) the cost is
J = (1/B)·Σ wᵢLᵢ, so dzᵢ = wᵢ(ŷᵢ − yᵢ)/B. Why over B and not over Σ wᵢ: a minibatch's Σ wᵢ
varies, and dividing by it would make each step a ratio (a biased estimate, and 0/0 for a
batch of zero weights); with weights of mean 1 the cost stays on the unweighted scale, so
learning rates and the L2 term (λ/2m) keep their meaning, and equal weights change nothing.

Outputs are ``(P, B, C)``. Softmax and argmax over a short last axis (a few classes) are
slow reductions on the CPU (softmax of a (64, 128, 10) tensor: 1.8 ms, against 0.09 ms with
the classes in the middle), so they run on a class-major copy ``(P, C, B)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def output_size(task: str, n_classes: int) -> int:
    return n_classes if task == "multiclass" else 1


def _transposed(z: torch.Tensor) -> torch.Tensor:
    """``(P, B, C)`` ↔ ``(P, C, B)``, contiguous."""
    return z.transpose(1, 2).contiguous()


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log ŷ with ŷ = softmax(z) over the classes, computed stably: ``(P, C, B)``."""
    return F.log_softmax(_transposed(z), dim=1)


def member_losses(z: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-example losses ``(P, B)`` from output pre-activations ``z`` of shape ``(P, B, C)``.

    multiclass: L = −Σ_j y_j log ŷ_j with ŷ = softmax(z) (log-softmax, computed stably);
    binary: L = −y log ŷ − (1 − y) log(1 − ŷ) with ŷ = sigmoid(z);
    regression: L = ½(ŷ − y)² with ŷ = z.
    """
    P, B, _ = z.shape
    if task == "multiclass":
        return -_log_softmax(z).gather(1, y.view(1, 1, B).expand(P, 1, B)).squeeze(1)
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


def loss_and_gradient(z: torch.Tensor, y: torch.Tensor, task: str,
                      weight: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses ``(P, B)`` (as :func:`member_losses`, unweighted) and dJ/dz
    ``(P, B, C)`` for J = (1/B)·Σ_b w_b·L_b: the seed's dz = ŷ − y, times w_b (``weight``
    ``(B,)``, or ``(P, B)``: each member its own, as a bag's folds are; None: all 1), over
    B. One softmax serves both."""
    P, B, _ = z.shape
    if weight is not None:
        weight = weight.to(z.dtype).view(-1, B)  # (1, B) or (P, B)
    if task != "multiclass":
        losses = member_losses(z, y, task)
        y_hat = torch.sigmoid(z) if task == "binary" else z
        dz = y_hat - y.to(z.dtype).view(1, B, 1)
        if weight is not None:
            dz.mul_(weight.unsqueeze(2))
        return losses, dz.div_(B)
    log_probs = _log_softmax(z)
    index = y.view(1, 1, B).expand(P, 1, B)
    losses = -log_probs.gather(1, index).squeeze(1)
    dz = log_probs.exp_()  # ŷ, then ŷ − one_hot(y), class-major (P, C, B)
    dz.scatter_add_(1, index, torch.full((P, 1, B), -1.0, dtype=z.dtype, device=z.device))
    if weight is not None:
        dz.mul_(weight.unsqueeze(1))
    return losses, dz.div_(B).transpose(1, 2)


def predicted_class(z: torch.Tensor) -> torch.Tensor:
    """``(P, B)`` argmax of ``z`` ``(P, B, C)`` over the classes, the first on ties (as
    torch.argmax). Computed class-major: the largest of (z_j == max)·(C − j) marks the first
    class at the maximum, and max is a fast reduction there (argmax is not)."""
    C = z.shape[2]
    zt = _transposed(z)
    at_max = zt == zt.amax(dim=1, keepdim=True)
    ranks = torch.arange(C, 0, -1, dtype=z.dtype, device=z.device).view(1, C, 1)
    # bool → float through uint8: the direct conversion is a slow kernel on the CPU
    return C - at_max.view(torch.uint8).to(z.dtype).mul_(ranks).amax(dim=1).long()


def correct(z: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """``(P,)`` count of correctly classified rows."""
    if task == "binary":
        guess = (z.squeeze(2) > 0).to(y.dtype)
    else:
        guess = predicted_class(z)
    return (guess == y).sum(dim=1).to(z.dtype)


def predictions(z: torch.Tensor, task: str) -> torch.Tensor:
    """ŷ from z: class probabilities ``(P, N, C)`` for classifiers (C = 2 for binary, the
    columns P(class 0), P(class 1)), values ``(P, N)`` for regression."""
    if task == "multiclass":
        # row by row, not class-major: a vectorized loop over rows computes its tail rows
        # otherwise, so a row's probabilities would depend on its position (by an ulp)
        return torch.softmax(z, dim=2)
    if task == "binary":
        p1 = torch.sigmoid(z)
        return torch.cat([1.0 - p1, p1], dim=2)
    return z.squeeze(2)


def mean_of_heads(z: torch.Tensor, k: int, task: str) -> torch.Tensor:
    """TabM-mini's prediction as one z ``(P, B, C)``: the mean of its k sub-networks'
    predictions, from their outputs ``(P, k·B, C)`` (rows i·B..(i+1)·B are sub-network i's).
    Regression: the mean value; multiclass: log p̄ with p̄ the mean of the softmax
    probabilities (softmax(log p̄) = p̄, as p̄ sums to 1); binary: the logit of the mean
    probability, log p̄ − log(1 − p̄). Computed from log-probabilities (logsumexp), so a
    confident sub-network does not overflow."""
    P, rows, C = z.shape
    z = z.view(P, k, rows // k, C)
    if task == "regression":
        return z.mean(dim=1)
    if task == "multiclass":
        return torch.logsumexp(torch.log_softmax(z, dim=3), dim=1) - math.log(k)
    # log p̄ − log(1 − p̄): the two log k of the means cancel
    return torch.logsumexp(F.logsigmoid(z), dim=1) - torch.logsumexp(F.logsigmoid(-z), dim=1)
