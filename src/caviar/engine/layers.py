"""Layers with a leading member axis, each a forward and a hand-written backward.

Shapes: activations ``(P, B, n)``, dense weights ``(P, n_in, n_out)``, per-feature vectors
(bias, γ, β, running statistics) ``(P, 1, n)``, per-member hyperparameters ``(P,)`` viewed as
``(P, 1, 1)``. Every operation acts on each member separately, so nothing one member computes
reaches another.

The backward passes are written out (as in micrograd or cs231n) rather than left to autograd:
autograd keeps more intermediates and makes more passes over memory, which is what a step of
a population costs. tests/test_gradients.py checks each against finite differences.

A hidden layer is a product and an elementwise part:

    z = a·W + b                                          dense_forward (a batched product)
    z̃ = γ·(z − μ)/√(σ² + ε) + β,  a = g(z̃),  a = a·mask   hidden_forward (batch norm,
                                                         activation, dropout)

Beside the products, the elementwise part is what a step costs: each of its operations is a
pass over a ``(P, B, n)`` tensor. So it overwrites tensors it owns (z, the activation) where
the backward pass does not need them, and ``hidden_forward``/``hidden_backward`` are
functions of tensors alone (no module state), which ``kernels.py`` can hand to torch.compile
to fuse each into a few loops.
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
    return torch.randn(n_in, n_out, generator=generator, dtype=dtype,
                       device=generator.device) * std


def init_linear_default(n_in: int, n_out: int, generator: torch.Generator,
                        dtype: torch.dtype) -> torch.Tensor:
    """One member's weights as ``torch.nn.Linear`` draws its own, U(−1/√n_in, 1/√n_in)
    (variance 1/(3·n_in), a sixth of He's): how TabM's reference trains its layers; with He's
    larger start a TabM-mini network of 8 sub-networks scored 0.456 on hpc_data's test rows
    against 0.441 (bench/README.md, "TabM-mini")."""
    bound = 1.0 / math.sqrt(n_in)
    W = torch.rand(n_in, n_out, generator=generator, dtype=dtype, device=generator.device)
    return W.mul_(2 * bound).sub_(bound)


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


def heads_forward(a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """TabM-mini's output layers: z_i = a_i·W_i + b_i for each of k sub-networks, from the
    activations ``(P, k·B, n)`` (rows i·B..(i+1)·B are sub-network i's), the weights stacked
    flat ``(P, k·n, C)`` and the biases ``(P, k, C)``: one batched product over P·k."""
    P, rows, n = a.shape
    C = W.shape[2]
    z = torch.bmm(a.reshape(P * k, rows // k, n), W.reshape(P * k, n, C))
    return z.view(P, k, rows // k, C).add_(b.unsqueeze(2)).view(P, rows, C)


def heads_backward(dz: torch.Tensor, a: torch.Tensor, W: torch.Tensor, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dW_i = a_iᵀ·dz_i, db_i = Σ_batch dz_i, da_i = dz_i·W_iᵀ of :func:`heads_forward`."""
    P, rows, n = a.shape
    C = W.shape[2]
    dz_k = dz.reshape(P * k, rows // k, C)
    dW = torch.bmm(a.reshape(P * k, rows // k, n).transpose(1, 2), dz_k).view(P, k * n, C)
    db = dz_k.sum(dim=1).view(P, k, C)
    da = torch.bmm(dz_k, W.reshape(P * k, n, C).transpose(1, 2)).view(P, rows, n)
    return dW, db, da


# ------------------------------------------------------------------------- embeddings

def init_embedding(levels: int, k: int, generator: torch.Generator,
                   dtype: torch.dtype) -> torch.Tensor:
    """One member's table ``(levels + 1, k)`` for a categorical with ``levels`` known levels:
    rows 1..levels ~ N(0, 1) (torch.nn.Embedding's initialization, the scale of a
    standardized input), row 0, the code of a level unseen in training, zeros: like an
    all-zero one-hot row, an unknown level adds nothing to the first layer."""
    table = torch.randn(levels + 1, k, generator=generator, dtype=dtype,
                        device=generator.device)
    table[0] = 0.0
    return table


def embedding_forward(codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """e = E[codes]: each member's rows of its table ``(P, levels + 1, k)`` for the rows'
    integer codes ``(B,)`` → ``(P, B, k)``. A gather: the product of the one-hot rows with E,
    without the zeros."""
    return table.index_select(1, codes)


def embedding_backward(de: torch.Tensor, codes: torch.Tensor, rows: int) -> torch.Tensor:
    """dE ``(P, rows, k)`` from de ``(P, B, k)``: the transpose of the gather, a scatter-add.
    Row r of dE sums de over the minibatch rows whose code is r (``index_add_``); rows no
    code names get 0."""
    return de.new_zeros(de.shape[0], rows, de.shape[2]).index_add_(1, codes, de)


# ------------------------------------------------------------------------- periodic (PLR)

def init_frequencies(n: int, k: int, sigma: float, generator: torch.Generator,
                     dtype: torch.dtype) -> torch.Tensor:
    """One member's learned frequencies ``C (n, k)`` ~ N(0, σ²) for ``n`` numeric columns
    (Gorishniy et al. 2022: σ is the one hyperparameter of the initialization)."""
    return torch.randn(n, k, generator=generator, dtype=dtype, device=generator.device) * sigma


def init_plr(n: int, k: int, m: int, sigma: float, generator: torch.Generator,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One member's PLR parameters for ``n`` numeric columns: frequencies ``C (n, k)``
    (:func:`init_frequencies`), and per column a linear layer 2k → m, ``W (n·2k, m)`` and
    ``b (n, m)``, drawn as torch.nn.Linear draws its own: U(−1/√(2k), 1/√(2k)). W is stored
    flat (three axes with the member's) so the optimizers' ``(P, 1, 1)`` coefficients
    broadcast over it."""
    device, bound = generator.device, 1.0 / math.sqrt(2 * k)
    C = init_frequencies(n, k, sigma, generator, dtype)
    W = torch.rand(n * 2 * k, m, generator=generator, dtype=dtype, device=device)
    b = torch.rand(n, m, generator=generator, dtype=dtype, device=device)
    return {"C": C, "W": W.mul_(2 * bound).sub_(bound), "b": b.mul_(2 * bound).sub_(bound)}


def frequency_grid(n: int, k: int, sigma: float, dtype: torch.dtype,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Frequencies ``C (n, k)`` that are never trained (``solver="exact"``): the k quantiles
    (i + ½)/k of the half-normal |N(0, σ²)|, the same for every column. They spread as a
    draw of N(0, σ²) would, without its gaps and near-repeats (sin and cos of −c span what
    those of c span, so only |c| counts), and every member with the same σ reads the same
    features, so that one solve serves all their λ."""
    quantiles = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    half_normal = math.sqrt(2.0) * torch.special.erfinv(quantiles)  # |z|'s quantile function
    return (sigma * half_normal).to(dtype=dtype, device=device).expand(n, k).clone()


def periodic_forward(x: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The periodic features of the numeric columns ``x (B, n)``, each member with its own
    frequencies ``C (P, n, k)`` (Gorishniy et al. 2022's "P"):

        θ_j = 2π·c_j·x_j,   v_j = [sin θ_j, cos θ_j]

    Returns v ``(P, n, B, 2k)``, column-major as :func:`plr_forward` reads it, and the cache
    for :func:`periodic_backward`."""
    x2pi = (2 * math.pi) * x.t()  # (n, B)
    theta = C.unsqueeze(2) * x2pi.unsqueeze(2)  # (P, n, B, k)
    v = torch.cat([theta.sin(), theta.cos_()], dim=3)  # (P, n, B, 2k)
    return v, (x2pi, v)


def periodic_backward(dv: torch.Tensor, cache: tuple) -> torch.Tensor:
    """dC ``(P, n, k)`` from dv ``(P, n, B, 2k)``, the gradient of :func:`periodic_forward`'s
    output: dθ = dsin·cos θ − dcos·sin θ, dc_j = Σ_batch dθ_j·2π·x_j."""
    x2pi, v = cache
    k = v.shape[3] // 2
    sin, cos = v[..., :k], v[..., k:]
    dtheta = dv[..., :k] * cos - dv[..., k:] * sin  # (P, n, B, k)
    return torch.matmul(dtheta.transpose(2, 3), x2pi.unsqueeze(2)).squeeze(3)


def columns_side_by_side(t: torch.Tensor) -> torch.Tensor:
    """``(P, n, B, m)`` → ``(P, B, n·m)``: column j's m values together, as the first layer
    reads them."""
    P, n, B, m = t.shape
    return t.permute(0, 2, 1, 3).reshape(P, B, n * m)


def by_column(dt: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of :func:`columns_side_by_side` for a gradient: ``(P, B, n·m)`` →
    ``(P, n, B, m)``."""
    P, B, nm = dt.shape
    return dt.view(P, B, n, nm // n).permute(0, 2, 1, 3)


def plr_forward(x: torch.Tensor, C: torch.Tensor, W: torch.Tensor, b: torch.Tensor
                ) -> tuple[torch.Tensor, tuple]:
    """Periodic embeddings of the numeric columns ``x (B, n)``, each member with its own
    frequencies ``C (P, n, k)``, linear layers ``W (P, n·2k, m)`` and ``b (P, n, m)``:

        v_j = [sin θ_j, cos θ_j] (:func:`periodic_forward`),   h_j = ReLU(v_j·W_j + b_j)

    Returns h ``(P, B, n·m)`` (column j's m values together, as the first layer reads them)
    and the cache for :func:`plr_backward`. Column-major inside: ``(P, n, B, ·)``, so each
    column's linear layer is one slice of a batched product over P·n."""
    P, n, k = C.shape
    m, B = W.shape[2], x.shape[0]
    v, periodic = periodic_forward(x, C)
    u = torch.bmm(v.view(P * n, B, 2 * k), W.view(P * n, 2 * k, m))
    h = u.view(P, n, B, m).add_(b.unsqueeze(2)).relu_()
    return columns_side_by_side(h), (periodic, h)


def plr_backward(dh: torch.Tensor, cache: tuple, W: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dC, dW and db from dh ``(P, B, n·m)``, the gradient of :func:`plr_forward`'s output:

        du = dh·[h > 0],  db_j = Σ_batch du_j,  dW_j = v_jᵀ·du_j,  dv_j = du_j·W_jᵀ

    and dC from dv (:func:`periodic_backward`)."""
    periodic, h = cache
    v = periodic[1]
    P, n, B, m = h.shape
    k = v.shape[3] // 2
    du = torch.ops.aten.threshold_backward(by_column(dh, n), h, 0.0)  # (P, n, B, m)
    db = du.sum(dim=2)
    du = du.reshape(P * n, B, m)
    dW = torch.bmm(v.view(P * n, B, 2 * k).transpose(1, 2), du).view(P, n * 2 * k, m)
    dv = torch.bmm(du, W.view(P * n, 2 * k, m).transpose(1, 2)).view(P, n, B, 2 * k)
    return periodic_backward(dv, periodic), dW, db


# ------------------------------------------------------------------------- batch norm

def batch_norm_forward(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, tuple, torch.Tensor, torch.Tensor]:
    """Batch norm of z over the minibatch, as the seed writes it:
    μ = mean(z), σ² = mean((z − μ)²), z_norm = (z − μ)/√(σ² + ε), z̃ = γ·z_norm + β.
    Returns z̃, the cache for backward (z − μ and 1/√(σ² + ε): z_norm is their product, never
    stored), and the minibatch μ and σ² (for running averages). Overwrites z."""
    B = z.shape[1]
    mu = z.mean(dim=1, keepdim=True)
    centred = z.sub_(mu)  # z is not needed again
    var = torch.linalg.vecdot(centred, centred, dim=1).unsqueeze(1) / B
    inv_std = torch.rsqrt(var + eps)
    # z̃ = γ·z_norm + β = (γ/√(σ² + ε))·(z − μ) + β: one pass
    return torch.addcmul(beta, centred, gamma * inv_std), (centred, inv_std), mu, var


def batch_norm_backward(dz_tilde: torch.Tensor, cache: tuple, gamma: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dγ = Σ dz̃·z_norm, dβ = Σ dz̃, and through the minibatch statistics
    dz = (γ/√(σ²+ε))·(dz̃ − mean(dz̃) − z_norm·mean(dz̃·z_norm)),
    where mean(dz̃) = dβ/B and mean(dz̃·z_norm) = dγ/B. With z_norm = (z − μ)·inv_std this is
    dz = A·dz̃ + C·(z − μ) + D, per feature A = γ·inv_std, C = −A·inv_std·dγ/B, D = −A·dβ/B:
    two passes after the sums."""
    centred, inv_std = cache
    B = dz_tilde.shape[1]
    dgamma = torch.linalg.vecdot(dz_tilde, centred, dim=1).unsqueeze(1) * inv_std
    dbeta = dz_tilde.sum(dim=1, keepdim=True)
    scale = gamma * inv_std  # A
    dz = torch.addcmul(scale * dbeta / -B, centred, scale * inv_std * dgamma / -B)
    return dz.addcmul_(dz_tilde, scale), dgamma, dbeta


def batch_norm_eval(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                    running_mean: torch.Tensor, running_var: torch.Tensor, eps: float
                    ) -> torch.Tensor:
    """Batch norm at test time: the running estimates replace the minibatch statistics,
    z̃ = γ·(z − μ_run)/√(σ²_run + ε) + β, as one pass z·scale + shift."""
    scale = gamma * torch.rsqrt(running_var + eps)
    return torch.addcmul(beta - running_mean * scale, z, scale)


def update_running(running: torch.Tensor, batch_value: torch.Tensor, m: torch.Tensor) -> None:
    """μ_run ← m·μ_run + (1 − m)·μ, in place; ``m`` is ``(P, 1, 1)`` (a frozen member passes
    m = 1 and keeps its statistics)."""
    running.lerp_(batch_value, 1.0 - m)


# ------------------------------------------------------------------------- activations

def activation_forward(z: torch.Tensor, name: str) -> torch.Tensor:
    """a = g(z). Overwrites z, except for gelu, whose derivative needs z."""
    if name == "relu":
        return z.relu_()
    if name == "leaky_relu":
        return F.leaky_relu_(z, LEAKY_SLOPE)
    if name == "tanh":
        return z.tanh_()
    if name == "sigmoid":
        return z.sigmoid_()
    if name == "gelu":
        return F.gelu(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(da: torch.Tensor, z: torch.Tensor | None, a: torch.Tensor, name: str
                        ) -> torch.Tensor:
    """dz = da·g'(z), with g' from the output a where that is cheaper (z is only read for
    gelu). For relu only a > 0 matters, so a may be scaled by a dropout mask (≥ 0) first."""
    if name == "relu":
        return torch.ops.aten.threshold_backward(da, a, 0.0)  # da where a > 0, else 0
    if name == "leaky_relu":
        return torch.where(a > 0, da, da * LEAKY_SLOPE)
    if name == "tanh":
        return da.mul_(1.0 - a * a)  # tanh' = 1 − a²
    if name == "sigmoid":
        return da.mul_(a * (1.0 - a))  # σ' = a(1 − a)
    return torch.ops.aten.gelu_backward(da, z)


# ------------------------------------------------------------------------- dropout

def random_bytes(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform random bytes of ``shape``, on the generator's device: eight per 64-bit draw
    (the generator, not the arithmetic, is what dropout costs)."""
    numel = math.prod(shape)
    draws = torch.empty((numel + 7) // 8, dtype=torch.int64, device=generator.device)
    draws.random_(-(2**63), None, generator=generator)  # all 64 bits uniform
    return draws.view(torch.uint8)[:numel].view(shape)


def keep_count(keep_prob: torch.Tensor) -> torch.Tensor:
    """``(P,)`` keep_prob in 256ths, rounded (at least 1): a unit is kept when its random byte
    is below this count."""
    return (keep_prob * 256).round().clamp(1, 256)


def mask_from_bytes(random_bytes: torch.Tensor, keep_count: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
    """Inverted dropout: mask ~ Bernoulli(keep_prob)/keep_prob, so the expected activation is
    unchanged and nothing needs scaling at test time.

    A unit is kept when its byte is below ``keep_count`` (keep_prob rounded to a multiple of
    1/256) and then scaled by 1/that rounded keep_prob: the expectation stays exact. The
    comparison writes 1.0 or 0.0 in place into a float copy of the bytes: comparing bytes, or
    converting booleans, are slow elementwise kernels on the CPU.
    """
    count = per_member(keep_count).to(dtype)
    return random_bytes.to(dtype).lt_(count).mul_(256.0 / count)


def dropout_mask(shape: tuple[int, ...], keep_prob: torch.Tensor, generator: torch.Generator,
                 dtype: torch.dtype) -> torch.Tensor:
    """A mask of ``shape`` ``(P, ...)`` for the ``(P,)`` keep_prob, drawn from ``generator``:
    0 for a dropped unit, 1/keep_prob (rounded as in :func:`mask_from_bytes`) for a kept one."""
    return mask_from_bytes(random_bytes(shape, generator), keep_count(keep_prob), dtype)


# ------------------------------------------------------------------------- a hidden layer

def hidden_forward(z: torch.Tensor, activation: str, gamma: torch.Tensor | None = None,
                   beta: torch.Tensor | None = None, random_bytes: torch.Tensor | None = None,
                   keep_count: torch.Tensor | None = None, eps: float = 1e-5
                   ) -> tuple[torch.Tensor, tuple, torch.Tensor | None, torch.Tensor | None]:
    """The elementwise part of a hidden layer in training: batch norm (with ``gamma`` and
    ``beta``), the activation, and dropout (with ``random_bytes`` and ``keep_count``).
    Returns a, the cache for :func:`hidden_backward`, and the minibatch μ and σ² of batch norm
    (None without it). Overwrites z."""
    mu = var = bn_cache = None
    if gamma is not None:
        z, bn_cache, mu, var = batch_norm_forward(z, gamma, beta, eps)
    a = activation_forward(z, activation)
    z_tilde = z if activation == "gelu" else None  # the others overwrote it: g' comes from a
    if random_bytes is None:
        return a, (bn_cache, z_tilde, a, None, None), mu, var
    mask = mask_from_bytes(random_bytes, keep_count, a.dtype)
    if activation == "relu":
        # relu' reads only a > 0, which a·mask keeps (dropped units get 0 either way): mask in
        # place, and keep for the backward pass only the per-member scale 1/keep_prob
        a = a.mul_(mask)
        return a, (bn_cache, None, a, None, per_member(256.0 / keep_count).to(a.dtype)), mu, var
    return a * mask, (bn_cache, z_tilde, a, mask, None), mu, var


def hidden_backward(da: torch.Tensor, cache: tuple, activation: str,
                    gamma: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """dz, dγ and dβ (None without batch norm) from da, the gradient of the layer's output.
    Overwrites da."""
    bn_cache, z_tilde, a, mask, scale = cache
    if mask is not None:
        da = da.mul_(mask)  # dropout: the same mask (and 1/keep_prob) on the way back
    dz = activation_backward(da, z_tilde, a, activation)  # dz̃ = da·g'(z̃)
    if scale is not None:
        dz = dz.mul_(scale)  # dropout after relu: dropped units are 0 already, 1/keep_prob
    if bn_cache is None:
        return dz, None, None
    return batch_norm_backward(dz, bn_cache, gamma)  # through z̃ = γ·z_norm + β and μ, σ²
