"""The exact minimizer of a linear regression network's cost: the normal equations.

A network with no hidden layer and squared error, ŷ = x·W + b, has the cost the engine
trains (the seeds' L2-regularized cost, each row weighted by w):

    J(W, b) = (1/m)·Σᵢ wᵢ·½(xᵢ·W + b − yᵢ)² + (λ/2m)·‖W‖²

It is convex, and dJ/dW = 0, dJ/db = 0 give it in closed form (the bias is not penalized):

    b = ȳ − x̄·W                       (x̄, ȳ: the w-weighted means)
    (X̃ᵀΩX̃ + λI)·W = X̃ᵀΩỹ             (X̃ = X − x̄, ỹ = y − ȳ, Ω = diag(w))

Gradient steps only approach this point, and slowly where columns are nearly collinear;
solved, a target that is a linear function of the columns is fitted to the digit.
(``solver="exact"``; scikit-learn's ``Ridge(alpha=λ)`` minimizes the same cost.) The
columns may include fixed periodic features of the numeric ones
(``numeric_embedding="periodic"``, ``network.solved_inputs``): the same cost, solved the
same way, then fits a sum of smooth functions of one column each.
"""

from __future__ import annotations

import torch


def least_squares(x: torch.Tensor, y: torch.Tensor, l2: torch.Tensor,
                  weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's W ``(P, d, 1)`` and b ``(P,)`` minimizing J above, for inputs x
    ``(n, d)`` (or each member's own, ``(P, n, d)``), targets y ``(n,)``, λ ``(P,)`` and row
    weights ``(n,)`` or ``(P, n)`` (None: all 1). Solved in float64 and returned in x's
    dtype; a singular system (λ = 0 and collinear columns) takes the least-norm solution."""
    x64, y64, l2 = x.double(), y.double(), l2.double()  # one copy, whatever the members
    own_rows = x.dim() == 3
    if not own_rows and (weight is None or weight.dim() == 1):
        return _solve(*_moments(x64, y64, weight), l2, x.dtype)  # one Gram matrix for all
    solved = [_solve(*_moments(x64[p] if own_rows else x64, y64,
                               weight if weight is None or weight.dim() == 1 else weight[p]),
                     l2[p:p + 1], x.dtype)
              for p in range(len(l2))]
    return torch.cat([W for W, _ in solved]), torch.cat([b for _, b in solved])


def _moments(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
             ) -> tuple[torch.Tensor, ...]:
    """x̄ ``(d,)``, ȳ, X̃ᵀΩX̃ ``(d, d)`` and X̃ᵀΩỹ ``(d, 1)`` (Ω = diag(w), or I)."""
    w = torch.ones(len(x), dtype=x.dtype, device=x.device) if w is None else w.double()
    total = w.sum().clamp_min(torch.finfo(x.dtype).tiny)
    x_mean, y_mean = (w @ x) / total, (w @ y) / total
    xc = x - x_mean  # X̃
    weighted = xc * w.unsqueeze(1)  # ΩX̃
    return x_mean, y_mean, weighted.T @ xc, weighted.T @ (y - y_mean).unsqueeze(1)


def _solve(x_mean: torch.Tensor, y_mean: torch.Tensor, gram: torch.Tensor, rhs: torch.Tensor,
           l2: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """W from (X̃ᵀΩX̃ + λI)·W = X̃ᵀΩỹ for each λ (Cholesky; the pseudo-inverse where λ = 0,
    as X̃ᵀΩX̃ is singular wherever columns are collinear, one-hot levels among them), and
    b = ȳ − x̄·W."""
    P, d = len(l2), len(gram)
    A = gram.expand(P, d, d) + l2.view(P, 1, 1) * torch.eye(d, dtype=gram.dtype,
                                                             device=gram.device)
    L, info = torch.linalg.cholesky_ex(A)
    W = torch.cholesky_solve(rhs.expand(P, d, 1), L)
    singular = (info != 0) | (l2 <= 0)
    if bool(singular.any()):
        W[singular] = torch.linalg.pinv(A[singular], hermitian=True) @ rhs
    b = y_mean - (W.squeeze(2) @ x_mean)
    return W.to(dtype), b.to(dtype)
