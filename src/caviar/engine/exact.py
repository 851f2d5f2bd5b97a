"""The exact minimizer of a linear network's cost: the normal equations for a regression, and
for a classifier the seeds' softmax regression minimized to convergence.

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

A classifier with no hidden layer is the seeds' softmax regression (a logistic regression
for two classes): the same J with the cross-entropy L = −Σⱼ yⱼ log ŷⱼ, ŷ = softmax(x·W + b),
in place of the squared error. It is convex too, but has no closed form: its minimizer is
found by L-BFGS on the whole table (``torch.optim.LBFGS``, a strong Wolfe line search), with
the seeds' gradient dJ/dz = w·(ŷ − y)/m, dJ/dW = xᵀ·dJ/dz + (λ/m)·W
(``softmax_regression``; scikit-learn's ``LogisticRegression(C=1/λ)`` minimizes the same
cost). Minibatch steps on it stop short where the classes are nearly separable or the
columns collinear, as they do on a regression.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import losses

# Rows per chunk of the sums: the inputs of a large table, periodic features and all, never
# exist in float64 at once (a million rows of 1,024 features would be 8 GB a copy).
CHUNK_ROWS = 8192

Inputs = torch.Tensor | Callable[[slice], torch.Tensor]

# L-BFGS's iterations at most, and the memory of its curvature pairs: scikit-learn's
# LogisticRegression defaults (max_iter=100, and SciPy's L-BFGS-B keeps 10); it stops earlier
# once no gradient entry exceeds GRADIENT_TOLERANCE.
LBFGS_ITERATIONS, LBFGS_HISTORY, GRADIENT_TOLERANCE = 100, 10, 1e-7


def least_squares(x: Inputs, y: torch.Tensor, l2: torch.Tensor,
                  weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's W ``(P, d, 1)`` and b ``(P,)`` minimizing J above, for inputs x
    ``(n, d)`` (or each member's own, ``(P, n, d)``; or a function giving those of a slice
    of the rows, called chunk by chunk), targets y ``(n,)``, λ ``(P,)`` and row weights
    ``(n,)`` or ``(P, n)`` (None: all 1). Solved in float64 and returned in y's dtype (the
    inputs' own); a singular system (λ = 0 and collinear columns) takes the least-norm
    solution."""
    rows = x if callable(x) else (lambda part: x[..., part, :])
    return _solve(*_moments(rows, y.double(), weight), l2.double(), y.dtype)


def _chunks(rows: Callable[[slice], torch.Tensor], y: torch.Tensor, w: torch.Tensor | None):
    """Each chunk's inputs ``(1 or P, b, d)`` in float64, targets ``(b,)`` and weights
    ``(1 or P, b)``."""
    for start in range(0, len(y), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        xc = rows(part).double()
        xc = xc.unsqueeze(0) if xc.dim() == 2 else xc
        yc = y[part]
        wc = (torch.ones(1, len(yc), dtype=xc.dtype, device=xc.device) if w is None
              else w[..., part].double().view(-1, len(yc)))
        yield xc, yc, wc


def _moments(rows: Callable[[slice], torch.Tensor], y: torch.Tensor, w: torch.Tensor | None
             ) -> tuple[torch.Tensor, ...]:
    """x̄ ``(P', d)``, ȳ ``(P',)``, X̃ᵀΩX̃ ``(P', d, d)`` and X̃ᵀΩỹ ``(P', d, 1)`` (Ω =
    diag(w), or I), summed over chunks: the weighted means first, then the centred products
    (centring before the products keeps them accurate). P' is 1 where every member reads the
    same rows with the same weights, so one Gram matrix serves them all."""
    total = x_sum = y_sum = None
    for xc, yc, wc in _chunks(rows, y, w):
        part = (wc.sum(dim=1), (wc.unsqueeze(1) @ xc).squeeze(1), wc @ yc)
        total, x_sum, y_sum = part if total is None else (total + part[0], x_sum + part[1],
                                                         y_sum + part[2])
    total = total.clamp_min(torch.finfo(total.dtype).tiny)
    x_mean, y_mean = x_sum / total.unsqueeze(1), y_sum / total
    gram = rhs = None
    for xc, yc, wc in _chunks(rows, y, w):
        centred = xc - x_mean.unsqueeze(1)  # X̃
        weighted = centred * wc.unsqueeze(2)  # ΩX̃
        part = (weighted.transpose(1, 2) @ centred,
                weighted.transpose(1, 2) @ (yc - y_mean.unsqueeze(1)).unsqueeze(2))
        gram, rhs = part if gram is None else (gram + part[0], rhs + part[1])
    return x_mean, y_mean, gram, rhs


def _solve(x_mean: torch.Tensor, y_mean: torch.Tensor, gram: torch.Tensor, rhs: torch.Tensor,
           l2: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """W from (X̃ᵀΩX̃ + λI)·W = X̃ᵀΩỹ for each λ (Cholesky; the pseudo-inverse where λ = 0,
    as X̃ᵀΩX̃ is singular wherever columns are collinear, one-hot levels among them), and
    b = ȳ − x̄·W."""
    P, d = len(l2), gram.shape[-1]
    A = gram.expand(P, d, d) + l2.view(P, 1, 1) * torch.eye(d, dtype=gram.dtype,
                                                             device=gram.device)
    rhs = rhs.expand(P, d, 1)
    L, info = torch.linalg.cholesky_ex(A)
    W = torch.cholesky_solve(rhs, L)
    singular = (info != 0) | (l2 <= 0)
    if bool(singular.any()):
        W[singular] = torch.linalg.pinv(A[singular], hermitian=True) @ rhs[singular]
    b = y_mean.expand(P) - (W.squeeze(2) * x_mean.expand(P, d)).sum(dim=1)
    return W.to(dtype), b.to(dtype)


def softmax_regression(x: torch.Tensor, y: torch.Tensor, task: str, l2: torch.Tensor,
                       n_outputs: int, weight: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's W ``(P, d, C)`` and b ``(P, 1, C)`` minimizing the classifier's J above
    (softmax cross-entropy for "multiclass", sigmoid for "binary": ``n_outputs`` C is the
    classes or 1), for inputs x ``(n, d)`` (or each member's own, ``(P, n, d)``), class
    indices y ``(n,)``, λ ``(P,)`` and row weights ``(n,)`` or ``(P, n)`` (None: all 1).
    Solved in float64 from zero weights (the cost is convex: the start changes only the
    time), one member at a time (one line search for several costs of other curvatures
    converged far slower), and returned in x's dtype."""
    n = len(y)
    xs = x.double()
    ws = None if weight is None else weight.double().view(-1, n)
    solved = [_lbfgs(xs[p] if xs.dim() == 3 else xs, y, task, float(l2[p]) / n, n_outputs,
                     None if ws is None else ws[p % len(ws)]) for p in range(len(l2))]
    return (torch.cat([W for W, _ in solved]).to(x.dtype),
            torch.cat([b for _, b in solved]).to(x.dtype))


def _lbfgs(x: torch.Tensor, y: torch.Tensor, task: str, decay: float, n_outputs: int,
           weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One member's W ``(1, d, C)`` and b ``(1, 1, C)`` from zero, minimizing
    (1/m)·Σᵢ wᵢ·Lᵢ + (decay/2)·‖W‖² (decay = λ/m) by L-BFGS, in x's dtype."""
    W = torch.zeros(1, x.shape[-1], n_outputs, dtype=x.dtype, device=x.device)
    b = torch.zeros(1, 1, n_outputs, dtype=x.dtype, device=x.device)
    solver = torch.optim.LBFGS([W, b], lr=1.0, max_iter=LBFGS_ITERATIONS,
                               history_size=LBFGS_HISTORY, tolerance_grad=GRADIENT_TOLERANCE,
                               tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def cost() -> torch.Tensor:  # J and its gradient, written by hand
        z = x @ W + b  # (1, n, C)
        row_losses, dz = losses.loss_and_gradient(z, y, task, weight)  # dz = w·(ŷ − y)/m
        data = (row_losses if weight is None else row_losses * weight).mean()
        W.grad = x.T @ dz + decay * W
        b.grad = dz.sum(dim=1, keepdim=True)
        return data + decay / 2 * W.pow(2).sum()

    with torch.no_grad():
        solver.step(cost)
    return W, b
