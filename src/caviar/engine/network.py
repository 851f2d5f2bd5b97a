"""The math of P networks of one structure: parameters, one forward pass and its backward pass.

Pure functions over a :class:`Structure` and dicts of tensors with a leading member axis
(``W0 (P, n_in, n_out)``, ``b0``, ``gamma0``, ``beta0`` and the batch-norm running estimates,
``(P, 1, n)``); the bookkeeping of members lives in ``population.py``. A hidden layer l is

    z = a·W + b              (no b with batch norm: β replaces it)
    z̃ = γ·(z − μ)/√(σ² + ε) + β          (batch norm, μ and σ² of the minibatch)
    a = g(z̃)                 (the activation)
    a = a·mask/keep_prob     (inverted dropout, training only)

and the output layer is z = a·W + b, followed by the loss (softmax, sigmoid or squared error)
whose gradient at the output is dz = ŷ − y. Backward runs the same steps in reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from . import layers
from .kernels import EAGER, Kernels

BN_EPSILON = 1e-5


@dataclass(frozen=True)
class Structure:
    """What every member of a population shares."""

    task: str
    n_inputs: int
    n_outputs: int
    hidden_layer_sizes: tuple[int, ...]
    activation: str
    batch_norm: bool
    batch_size: int

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden_layer_sizes, self.n_outputs)

    @property
    def n_layers(self) -> int:
        return len(self.hidden_layer_sizes) + 1

    @property
    def weight_names(self) -> set[str]:
        """Dense weights: the only tensors L1, L2 and weight decay act on."""
        return {f"W{layer}" for layer in range(self.n_layers)}


def init_member(s: Structure, generator: torch.Generator, dtype: torch.dtype
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One member's fresh parameters and batch-norm buffers (no member axis), on the
    generator's device."""
    params, buffers = {}, {}
    sizes, device = s.layer_sizes, generator.device
    for layer in range(s.n_layers):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        is_output = layer == s.n_layers - 1
        params[f"W{layer}"] = layers.init_dense(
            n_in, n_out, "output" if is_output else s.activation, generator, dtype)
        if s.batch_norm and not is_output:
            # the dense layer feeding batch norm has no bias: β takes its place
            params[f"gamma{layer}"] = torch.ones(1, n_out, dtype=dtype, device=device)
            params[f"beta{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
            buffers[f"running_mean{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
            buffers[f"running_var{layer}"] = torch.ones(1, n_out, dtype=dtype, device=device)
        else:
            params[f"b{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
    return params, buffers


def forward(s: Structure, params: Mapping[str, torch.Tensor],
            buffers: Mapping[str, torch.Tensor], X: torch.Tensor, *, training: bool,
            bn_momentum: torch.Tensor | None = None, keep_prob: torch.Tensor | None = None,
            generator: torch.Generator | None = None, tape: list | None = None,
            kernels: Kernels = EAGER) -> torch.Tensor:
    """Output pre-activations z ``(P, B, C)`` of every member for the shared input X ``(B, d)``.

    ``training``: batch norm normalizes with the minibatch's μ and σ², and, with
    ``bn_momentum`` (each member's ``(P,)`` m; 1 leaves a member's estimates alone), updates
    the running estimates in place; otherwise it uses the running estimates.
    ``keep_prob`` ``(P,)``: inverted dropout after each hidden activation, masks drawn from
    ``generator`` (training only). ``tape``: when a list, what :func:`backward` needs is
    appended to it, layer by layer. ``kernels``: the elementwise functions, eager or compiled.
    """
    a = X
    counts = layers.keep_count(keep_prob) if training and keep_prob is not None else None
    for layer in range(s.n_layers - 1):
        z = layers.dense_forward(a, params[f"W{layer}"], params.get(f"b{layer}"))  # z = a·W + b
        gamma, beta = params.get(f"gamma{layer}"), params.get(f"beta{layer}")
        a_in = a
        if not training:
            if s.batch_norm:
                z = layers.batch_norm_eval(z, gamma, beta, buffers[f"running_mean{layer}"],
                                           buffers[f"running_var{layer}"], BN_EPSILON)
            a = layers.activation_forward(z, s.activation)
            continue
        random_bytes = None if counts is None else layers.random_bytes(z.shape, generator)
        # z̃ = BN(z), a = g(z̃), a = a·mask ~ Bernoulli(keep_prob)/keep_prob
        a, cache, mu, var = kernels.hidden_forward(z, s.activation, gamma, beta, random_bytes,
                                                   counts, BN_EPSILON)
        if s.batch_norm and bn_momentum is not None:  # μ_run ← m·μ_run + (1 − m)·μ, same σ²
            m = layers.per_member(bn_momentum)
            layers.update_running(buffers[f"running_mean{layer}"], mu, m)
            layers.update_running(buffers[f"running_var{layer}"], var, m)
        if tape is not None:
            tape.append((a_in, cache))
    last = s.n_layers - 1
    if tape is not None:
        tape.append(a)
    return layers.dense_forward(a, params[f"W{last}"], params[f"b{last}"])


def backward(s: Structure, params: Mapping[str, torch.Tensor], dz: torch.Tensor, tape: list,
             kernels: Kernels = EAGER) -> dict[str, torch.Tensor]:
    """Gradients of Σ_p J_p for every parameter, from dz = dJ/dz at the output and the tape
    of a training-mode :func:`forward`; member p's gradient is its own dJ_p/dθ_p."""
    grads = {}
    last = s.n_layers - 1
    # output layer: dW = aᵀ·dz, db = Σ dz, da = dz·Wᵀ
    grads[f"W{last}"], grads[f"b{last}"], da = layers.dense_backward(
        dz, tape[-1], params[f"W{last}"], need_da=last > 0)
    for layer in range(last - 1, -1, -1):
        a_in, cache = tape[layer]
        # back through dropout, g and batch norm: dz from da
        dz, dgamma, dbeta = kernels.hidden_backward(da, cache, s.activation,
                                                    params.get(f"gamma{layer}"))
        if dgamma is not None:
            grads[f"gamma{layer}"], grads[f"beta{layer}"] = dgamma, dbeta
        dW, db, da = layers.dense_backward(dz, a_in, params[f"W{layer}"], need_da=layer > 0)
        grads[f"W{layer}"] = dW
        if f"b{layer}" in params:
            grads[f"b{layer}"] = db
    return grads


def forward_backward(s: Structure, params: Mapping[str, torch.Tensor],
                     buffers: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor, *,
                     bn_momentum: torch.Tensor | None = None,
                     keep_prob: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, kernels: Kernels = EAGER,
                     weight: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode pass over a minibatch: the output z ``(P, B, C)``, each member's
    per-example losses ``(P, B)`` (unweighted) and its gradient of its data cost
    J = (1/B)·Σ w·L (``weight`` ``(B,)``, None: all 1; see :func:`forward` for the options)."""
    tape: list = []
    z = forward(s, params, buffers, X, training=True, bn_momentum=bn_momentum,
                keep_prob=keep_prob, generator=generator, tape=tape, kernels=kernels)
    example_losses, dz = kernels.loss_and_gradient(z, y, s.task, weight)  # w·(ŷ − y)/B
    return z, example_losses, backward(s, params, dz, tape, kernels)
