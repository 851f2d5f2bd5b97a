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

Categorical columns may enter as learned embeddings (``encoding="embedding"``; ``"mixed"``:
only those past the one-hot limit, which one-hot networks read target-encoded): X then holds
each such column's integer codes (1..levels, 0 for a level unseen in training), member p
looks them up in its own table ``E (P, levels + 1, k)``, and the first layer reads the dense
columns of X and the looked-up rows side by side, as one input [x, e₁, e₂, ...]:

    z = x·W_x + Σ_j e_j·W_j + b,   e_j = E_j[codes_j]          (a gather)
    dE_j[r] = Σ over the rows whose code is r of dz·W_jᵀ       (a scatter-add)

:class:`InputLayout` says which columns of X are codes and which dense columns stand for the
same categorical otherwise (its one-hot or target-encoded columns); :func:`make_structure`
picks, for a member's ``encoding``, the columns the network reads.

Numeric columns may enter as periodic embeddings (``numeric_embedding="plr"``, Gorishniy et
al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning"): each numeric
column x_j of more than two values (``InputLayout.numeric``) becomes

    h_j = ReLU([sin(2π·c_j·x_j), cos(2π·c_j·x_j)]·W_j + b_j)      (c_j: k learned frequencies)

m numbers that replace x_j in the first layer's input, after the categoricals' rows:
[x, e₁, ..., h₁, ..., h_n] (``layers.plr_forward``/``plr_backward``). With
``numeric_embedding="periodic"`` ("P" there) h_j is the 2k features [sin, cos] themselves,
and x_j stays in x beside them.
Under ``solver="exact"`` their frequencies are fixed (``layers.frequency_grid``) and only
the output layer is solved: an additive model of smooth one-column functions beside the
linear one, fitted exactly (``exact.py``).

A network may be TabM-mini (``tabm_k`` = k > 1; Gorishniy et al. 2024, "TabM: Advancing
Tabular Deep Learning with Parameter-Efficient Ensembling"): k sub-networks share the hidden
layers; sub-network i scales the first layer's input u = [x, e, h] by its own vector r_i
and has its own output layer:

    z_i = (u ⊙ r_i)·W₀ + b₀,  ...,  out_i = a_i·W_out,i + b_out,i
    J = (1/k)·Σ_i J_i          (training: each sub-network's loss, averaged)
    ŷ = (1/k)·Σ_i ŷ_i          (prediction: the mean of their probabilities or values)

The k sub-networks' rows travel as one batch of k·B rows through the shared layers (rows
i·B..(i+1)·B are sub-network i's), so a member's hidden layers cost k times their rows, and
its parameters grow only by r (k × the input width) and the k output layers. In training
each sub-network reads its own minibatch (``sub_batches``: X holds k minibatches of B rows,
drawn from k orders of the rows, as TabM trains by default: their different noise keeps the
sub-networks apart); otherwise every sub-network reads the same B rows. Batch norm's
statistics are those of the k·B rows. Backward: dr_i = Σ_rows du_i ⊙ u and du = Σ_i du_i ⊙ r_i
with du_i = dz_i·W₀ᵀ; the output layers' gradients are each sub-network's own.

A network may scale its first layer's input as RealMLP does (``front_scale``; Holzmüller et
al. 2024): a learned factor s_f per input f, 1 at first, z = (u ⊙ s)·W₀ + b₀. Written as the
first layer's weights W̃₀ = diag(s)·W₀, so the products (and the broadcast one over a shared
input) are those of a plain first layer:

    z = u·W̃₀ + b₀,  W̃₀ = s·W₀ (s as a column)                     (forward)
    dW₀ = s·dW̃₀,  ds_f = Σ_j dW̃₀[f, j]·W₀[f, j]                    (backward, dW̃₀ = uᵀ·dz)

RealMLP steps s six times faster than its weights, whose steps (its NTK parametrization)
are lr/√fan_in; in this engine's parametrization the first layer's step is α, so s steps
at 6·√F·α (F: the first layer's inputs), the same ratio (``Structure.lr_factors``). Decay
and the penalties act on s as on the weights, pulling an input that does not pay toward 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..hyperparams import scalings_read
from . import layers, losses
from .kernels import EAGER, Kernels

BN_EPSILON = 1e-5


# categoricals with more levels than this may be embedded; with two a one-hot column is
# already the best code (one number), and the preprocessor gives them no codes
EMBED_MIN_LEVELS = 3
MAX_EMBEDDING_DIM = 16
# RealMLP-TD's scale_lr_factor: its scaling layer's step over its weights' (see above)
FRONT_SCALE_LR = 6.0
# Under solver="exact" the periodic features of all the numeric columns number at most this:
# the solve's XᵀX costs rows·d² (1,024 on 50,000 rows: 0.6 s here), and past a few hundred
# features per column the ridge gains little (bench/README.md, "Periodic features, solved, in
# the warm start").
EXACT_PERIODIC_FEATURES = 1024


def embedding_width(levels: int, embedding_dim: int | None = None) -> int:
    """k for a categorical of ``levels`` levels: ``embedding_dim`` when set, else fast.ai's
    rule round(1.6·levels^0.56), at most ``MAX_EMBEDDING_DIM`` (3 levels: 3, 10: 6,
    50: 14, 100 and more: 16)."""
    if embedding_dim is not None:
        return int(embedding_dim)
    return max(1, min(MAX_EMBEDDING_DIM, round(1.6 * levels ** 0.56)))


@dataclass(frozen=True)
class Categorical:
    """A categorical column as X holds it: its integer codes in ``code_column`` (1..levels
    for the levels known in training, 0 for any other), and the ``dense_columns`` (its
    one-hot or target-encoded columns) that stand for it when it is not embedded;
    ``target_encoded``: those columns are a target encoding (past the one-hot limit)."""

    name: str
    code_column: int
    levels: int
    dense_columns: tuple[int, ...]
    target_encoded: bool = False


@dataclass(frozen=True)
class Scaled:
    """The numeric values scaled another way (``name``, one of caviar's ``NUMERIC``): the
    block's ``columns`` of X, and its ``numeric`` ones, standing for ``InputLayout.numeric``
    in their order."""

    name: str
    columns: tuple[int, ...]
    numeric: tuple[int, ...]


@dataclass(frozen=True)
class InputLayout:
    """What the ``n_columns`` columns of X are: the categoricals that have codes, and the
    ``numeric`` columns a periodic embedding may take (numeric values with more than two
    distinct values in training), scaled as ``scaling`` says, and the ``alternatives``: the
    same values scaled other ways, for networks whose ``numeric`` hyperparameter asks for
    one; every other column is a dense feature. (A plain width, ``InputLayout(d)``, is all
    dense and embeds no numeric column.)"""

    n_columns: int
    categoricals: tuple[Categorical, ...] = ()
    numeric: tuple[int, ...] = ()
    scaling: str | None = None  # None: not said (a plain width, or saved before it was)
    alternatives: tuple[Scaled, ...] = ()

    def holds(self, scaling: str | None) -> bool:
        """Whether a network of ``numeric=scaling`` can read these inputs (each of its
        scalings, for ``robust+quantile``)."""
        held = {self.scaling, *(a.name for a in self.alternatives)}
        return (scaling is None or self.scaling is None
                or all(name in held for name in scalings_read(scaling)))

    def scaled(self, scaling: str | None) -> tuple[tuple[int, ...], set[int]]:
        """The numeric columns a network of ``numeric=scaling`` reads (in place of
        ``numeric``; of ``robust+quantile``, the first scaling's, the second's block read as
        it is), and the columns it leaves unread: every other scaling's. None, or a layout
        that does not say its scaling, reads the first block."""
        if not self.holds(scaling):
            held = ", ".join([self.scaling, *(a.name for a in self.alternatives)])
            raise ValueError(f"numeric={scaling} is not a scaling these inputs hold ({held}); "
                             f"choose one of them, or prepare the table with numeric={scaling}")
        blocks = {a.name: a for a in self.alternatives}
        names = (self.scaling,) if scaling is None or self.scaling is None else scalings_read(
            scaling)
        unread = {j for a in self.alternatives if a.name not in names for j in a.columns}
        if self.scaling not in names:  # the first block's numeric values are another scaling
            unread |= set(self.numeric)
        first = names[0]
        return (self.numeric if first == self.scaling else blocks[first].numeric), unread

    def to_dict(self) -> dict[str, Any]:
        return {"n_columns": self.n_columns, "categoricals": [
            {"name": c.name, "code_column": c.code_column, "levels": c.levels,
             "dense_columns": list(c.dense_columns), "target_encoded": c.target_encoded}
            for c in self.categoricals],
            "numeric": list(self.numeric), "scaling": self.scaling, "alternatives": [
            {"name": a.name, "columns": list(a.columns), "numeric": list(a.numeric)}
            for a in self.alternatives]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputLayout:
        return cls(int(d["n_columns"]), tuple(
            Categorical(c["name"], int(c["code_column"]), int(c["levels"]),
                        tuple(int(j) for j in c["dense_columns"]),
                        bool(c.get("target_encoded", False)))  # not saved before "mixed"
            for c in d.get("categoricals", ())),
            tuple(int(j) for j in d.get("numeric", ())),  # none saved before PLR
            d.get("scaling"), tuple(  # neither saved before the scaling was searched
                Scaled(a["name"], tuple(int(j) for j in a["columns"]),
                       tuple(int(j) for j in a["numeric"]))
                for a in d.get("alternatives", ())))


def inputs_from(preprocessor: Any) -> InputLayout:
    """The layout of a fitted ``TablePreprocessor``'s matrix (its ``input_layout()``,
    ``numeric_columns()``, scaling and ``numeric_alternative_columns()``)."""
    return InputLayout(preprocessor.n_features_out_, tuple(
        Categorical(c["name"], c["code_column"], c["levels"], tuple(c["dense_columns"]),
                    c["target_encoded"])
        for c in preprocessor.input_layout()), tuple(preprocessor.numeric_columns()),
        preprocessor.numeric, tuple(
            Scaled(name, tuple(block["columns"]), tuple(block["numeric"]))
            for name, block in preprocessor.numeric_alternative_columns().items()))


@dataclass(frozen=True)
class Structure:
    """What every member of a population shares. ``n_inputs`` is the width of X;
    ``dense_columns`` the columns the first layer reads as they are (None: all of them),
    ``embeddings`` one (column of codes, table rows = levels + 1, k) per embedded
    categorical, whose looked-up rows follow the dense columns in the first layer's input;
    ``plr_columns`` the numeric columns embedded periodically (k = ``plr_frequencies``
    frequencies, m = ``plr_dim`` outputs each: those of PLR's linear layer and ReLU with
    ``plr_linear``, else the 2k periodic features, m = 2k), whose embeddings come last; ``tabm_k``
    sub-networks of TabM-mini (1: a plain network); ``front_scale``: the first layer's
    input scaled by a learned factor per input (RealMLP's scaling layer)."""

    task: str
    n_inputs: int
    n_outputs: int
    hidden_layer_sizes: tuple[int, ...]
    activation: str
    batch_norm: bool
    batch_size: int
    dense_columns: tuple[int, ...] | None = None
    embeddings: tuple[tuple[int, int, int], ...] = ()
    plr_columns: tuple[int, ...] = ()
    plr_frequencies: int = 0
    plr_dim: int = 0
    plr_linear: bool = True
    tabm_k: int = 1
    front_scale: bool = False
    exact: bool = False  # solver="exact": the weights solved, not stepped (``exact.py``)

    @property
    def n_dense(self) -> int:
        return self.n_inputs if self.dense_columns is None else len(self.dense_columns)

    @property
    def n_features(self) -> int:
        """The width of the first layer's input: dense columns and embedding widths."""
        return (self.n_dense + sum(k for _, _, k in self.embeddings)
                + len(self.plr_columns) * self.plr_dim)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden_layer_sizes, self.n_outputs)

    @property
    def widest(self) -> int:
        """The most numbers a member holds per row at once: the widest layer (k times, one
        per sub-network of TabM-mini), or PLR's sin and cos of every numeric column (n·2k)."""
        return max(max(self.layer_sizes) * self.tabm_k,
                   len(self.plr_columns) * 2 * self.plr_frequencies)

    @property
    def n_layers(self) -> int:
        return len(self.hidden_layer_sizes) + 1

    @property
    def weight_names(self) -> set[str]:
        """Dense weights, embedding tables and PLR's linear weights: the tensors L1, L2 and
        weight decay act on (an embedding is the first layer's weights for a one-hot column,
        looked up). Not PLR's frequencies: shrinking them would pull every column toward the
        constant sin 0, cos 0; σ of their initialization is their prior instead. The front
        scale too, as RealMLP decays it: an input that does not pay fades toward 0."""
        return ({f"W{layer}" for layer in range(self.n_layers)}
                | {f"E{j}" for j in range(len(self.embeddings))}
                | ({"plr_W"} if self.plr_columns and self.plr_linear else set())
                | ({"front_scale"} if self.front_scale else set()))

    @property
    def lr_factors(self) -> dict[str, float]:
        """Each parameter stepped at a multiple of the member's α: the front scale's
        6·√F (see the module docstring); the others at α."""
        if not self.front_scale:
            return {}
        return {"front_scale": FRONT_SCALE_LR * math.sqrt(self.n_features)}

    @functools.cached_property
    def _dense_selector(self) -> slice | tuple[int, ...]:
        """The dense columns as a slice when they are the first columns of X (a view)."""
        if self.dense_columns is None or self.dense_columns == tuple(range(self.n_dense)):
            return slice(0, self.n_dense)
        return self.dense_columns

    def dense_inputs(self, X: torch.Tensor) -> torch.Tensor:
        """The columns of X ``(B, n_inputs)`` the first layer reads as they are."""
        selector = self._dense_selector
        if isinstance(selector, slice):
            return X if selector.stop == X.shape[1] else X[:, selector]
        return X.index_select(1, torch.tensor(selector, device=X.device))

    def codes(self, X: torch.Tensor) -> list[torch.Tensor]:
        """Each embedded categorical's integer codes ``(B,)`` from its column of X."""
        return [X[:, column].long() for column, _, _ in self.embeddings]

    def numeric_inputs(self, X: torch.Tensor) -> torch.Tensor:
        """The columns of X the periodic embeddings read, ``(B, n)``."""
        return X.index_select(1, torch.tensor(self.plr_columns, device=X.device))


def make_structure(task: str, inputs: int | InputLayout, n_outputs: int,
                   config: Mapping[str, Any]) -> Structure:
    """The structure of members with ``config`` on inputs laid out as ``inputs``: code
    columns are never read as numbers; with ``encoding="embedding"`` every categorical with
    codes (more than two levels) is embedded instead of read through its dense columns, with
    ``"mixed"`` those past the one-hot limit (the target-encoded ones); the
    numeric columns are those of the member's ``numeric`` scaling (``InputLayout.scaled``),
    and with ``numeric_embedding="plr"`` or ``"periodic"`` they are embedded periodically
    (under ``solver="exact"``, with at most ``EXACT_PERIODIC_FEATURES`` features). TabM-mini
    (``tabm_k`` > 1) needs a hidden layer for its sub-networks to share; ``front_scale``
    scales the first layer's input."""
    if config["tabm_k"] > 1 and not config["hidden_layer_sizes"]:
        raise ValueError(f"tabm_k={config['tabm_k']} needs at least one hidden layer (its "
                         f"sub-networks share them); set hidden_layer_sizes or tabm_k=1")
    layout = inputs if isinstance(inputs, InputLayout) else InputLayout(int(inputs))
    embedded = [c for c in layout.categoricals if c.levels >= EMBED_MIN_LEVELS and (
        config["encoding"] == "embedding"
        or (config["encoding"] == "mixed" and c.target_encoded))]
    numeric, skip = layout.scaled(config["numeric"])
    kind, exact = config["numeric_embedding"], config["solver"] == "exact"
    plr = numeric if kind in ("plr", "periodic") else ()
    k = int(config["plr_frequencies"]) if plr else 0
    if exact and plr:  # a solve's cost grows with the square of its inputs: cap them
        k = max(1, min(k, EXACT_PERIODIC_FEATURES // (2 * len(plr))))
    skip |= {c.code_column for c in layout.categoricals}
    skip |= {j for c in embedded for j in c.dense_columns}
    if kind == "plr":  # PLR's embedding replaces the column; periodic features go beside it
        skip |= set(plr)
    dense = tuple(j for j in range(layout.n_columns) if j not in skip)
    structure = Structure(
        task=task, n_inputs=layout.n_columns, n_outputs=n_outputs,
        hidden_layer_sizes=config["hidden_layer_sizes"], activation=config["activation"],
        batch_norm=config["batch_norm"], batch_size=int(config["batch_size"]),
        dense_columns=None if len(dense) == layout.n_columns else dense,
        embeddings=tuple((c.code_column, c.levels + 1,
                          embedding_width(c.levels, config["embedding_dim"]))
                         for c in embedded),
        plr_columns=tuple(plr), plr_frequencies=k,
        plr_dim=int(config["plr_dim"]) if kind == "plr" else 2 * k, plr_linear=kind == "plr",
        tabm_k=int(config["tabm_k"]), front_scale=bool(config["front_scale"]), exact=exact)
    if structure.exact:
        _check_exact(structure)
    return structure


def _check_exact(s: Structure) -> None:
    """ValueError unless ``solver="exact"`` can solve networks of structure ``s``: a linear
    (or softmax) regression on the columns as they are, and on their periodic features if
    any."""
    why = ("no hidden layer (hidden_layer_sizes=[])" if s.hidden_layer_sizes
           else "columns read as they are or as periodic features (numeric_embedding=none or "
                "periodic, no embedded categorical, front_scale=false)"
           if s.embeddings or s.front_scale or (s.plr_columns and s.plr_linear)
           else None)
    if why is not None:
        raise ValueError(f"solver=exact needs {why}; use solver=gradient otherwise")


def solved_inputs(s: Structure, params: Mapping[str, torch.Tensor], X: torch.Tensor
                  ) -> torch.Tensor:
    """What ``solver="exact"`` solves the output layer on: the dense columns of X and beside
    them the periodic features [x, h] (``exact.least_squares``): one matrix ``(B, d)`` for
    every member when they read the same features (none, or the same frequencies: the
    grid's at one σ), else each member's own ``(P, B, d)``."""
    x = s.dense_inputs(X)
    if not s.plr_columns:
        return x
    C = params["plr_C"]
    shared = bool((C == C[:1]).all())
    v, _ = layers.periodic_forward(s.numeric_inputs(X), C[:1] if shared else C)
    h = layers.columns_side_by_side(v)
    if shared:
        return torch.cat([x, h[0]], dim=1)
    return torch.cat([x.expand(len(C), -1, -1), h], dim=2)


def init_member(s: Structure, generator: torch.Generator, dtype: torch.dtype,
                plr_sigma: float = 0.1
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One member's fresh parameters and batch-norm buffers (no member axis), on the
    generator's device; ``plr_sigma``: the member's σ of its initial PLR frequencies."""
    params, buffers = {}, {}
    sizes, device = s.layer_sizes, generator.device
    for layer in range(s.n_layers):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        is_output = layer == s.n_layers - 1
        heads = s.tabm_k if is_output else 1  # TabM-mini: an output layer per sub-network
        if s.tabm_k > 1:  # TabM's own start, stacked flat
            params[f"W{layer}"] = torch.cat([layers.init_linear_default(n_in, n_out, generator,
                                                                        dtype)
                                             for _ in range(heads)])
        else:
            params[f"W{layer}"] = layers.init_dense(
                n_in, n_out, "output" if is_output else s.activation, generator, dtype)
        if heads > 1:
            params[f"b{layer}"] = torch.zeros(heads, n_out, dtype=dtype, device=device)
        elif s.batch_norm and not is_output:
            # the dense layer feeding batch norm has no bias: β takes its place
            params[f"gamma{layer}"] = torch.ones(1, n_out, dtype=dtype, device=device)
            params[f"beta{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
            buffers[f"running_mean{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
            buffers[f"running_var{layer}"] = torch.ones(1, n_out, dtype=dtype, device=device)
        else:
            params[f"b{layer}"] = torch.zeros(1, n_out, dtype=dtype, device=device)
    for j, (_, rows, k) in enumerate(s.embeddings):
        params[f"E{j}"] = layers.init_embedding(rows - 1, k, generator, dtype)
    n = len(s.plr_columns)
    if s.exact and n:  # never trained: the frequencies are a grid, not a draw
        params["plr_C"] = layers.frequency_grid(n, s.plr_frequencies, plr_sigma, dtype, device)
    elif s.plr_linear and n:  # drawn last: members without PLR draw what they drew before it
        plr = layers.init_plr(n, s.plr_frequencies, s.plr_dim, plr_sigma, generator, dtype)
        params.update({f"plr_{name}": t for name, t in plr.items()})
    elif n:
        params["plr_C"] = layers.init_frequencies(n, s.plr_frequencies, plr_sigma, generator,
                                                  dtype)
    if s.tabm_k > 1:  # TabM's first adapter without numeric embeddings: random signs
        signs = torch.randint(0, 2, (s.tabm_k, s.n_features), generator=generator,
                              device=device)
        params["tabm_r"] = signs.to(dtype).mul_(2).sub_(1)
    if s.front_scale:  # 1 at first: the network starts as it would without it (no draw)
        params["front_scale"] = torch.ones(s.n_features, 1, dtype=dtype, device=device)
    return params, buffers


def first_weights(s: Structure, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The first layer's weights as its input meets them: W̃₀ = s·W₀ with the front scale,
    W₀ without."""
    W = params["W0"]
    return params["front_scale"] * W if s.front_scale else W


def input_forward(s: Structure, params: Mapping[str, torch.Tensor], X: torch.Tensor,
                  W: torch.Tensor, b: torch.Tensor | None, sub_batches: bool = False
                  ) -> tuple[torch.Tensor, Any]:
    """The first dense layer on X ``(B, n_inputs)``: z = x·W_x + Σ_j e_j·W_j + b, x the dense
    columns (one broadcast product for every member), e_j = E_j[codes_j] the embedded ones
    and then the numeric columns' periodic embeddings h (W's rows after the dense ones).
    Returns z and what :func:`input_backward` needs. (TabM-mini: ``sub_batches``, X holds
    each sub-network's own rows.)"""
    x = s.dense_inputs(X)
    if s.tabm_k > 1:
        return _tabm_input_forward(s, params, X, x, W, b, sub_batches)
    if not s.embeddings and not s.plr_columns:
        return layers.dense_forward(x, W, b), x
    e, codes, plr_cache = _embedded(s, params, X)
    d = s.n_dense
    if d:
        z = torch.matmul(x, W[:, :d]).baddbmm_(e, W[:, d:])  # x·W_x + e·W_e, in place
    else:
        z = torch.bmm(e, W)
    return (z if b is None else z.add_(b)), (x, e, codes, plr_cache)


def _embedded(s: Structure, params: Mapping[str, torch.Tensor], X: torch.Tensor
              ) -> tuple[torch.Tensor, list[torch.Tensor], Any]:
    """e ``(P, B, Σ)``: the embedded categoricals' looked-up rows E_j[codes_j], then the
    numeric columns' periodic embeddings h, side by side; with the codes and PLR's cache."""
    codes = s.codes(X)
    looked_up = [layers.embedding_forward(c, params[f"E{j}"]) for j, c in enumerate(codes)]
    plr_cache = None
    if s.plr_columns and s.plr_linear:
        h, plr_cache = layers.plr_forward(s.numeric_inputs(X), params["plr_C"],
                                          params["plr_W"], params["plr_b"])
        looked_up.append(h)
    elif s.plr_columns:  # the periodic features themselves
        v, plr_cache = layers.periodic_forward(s.numeric_inputs(X), params["plr_C"])
        looked_up.append(layers.columns_side_by_side(v))
    return (looked_up[0] if len(looked_up) == 1 else torch.cat(looked_up, dim=2)), codes, \
        plr_cache


def _embedded_backward(s: Structure, params: Mapping[str, torch.Tensor], de: torch.Tensor,
                       codes: list[torch.Tensor], plr_cache: Any,
                       grads: dict[str, torch.Tensor]) -> None:
    """Each table's dE_j, the scatter-add of de_j by the codes, and PLR's gradients from dh
    (``layers.plr_backward``), into ``grads``."""
    offset = 0
    for j, (_, rows, k) in enumerate(s.embeddings):
        grads[f"E{j}"] = layers.embedding_backward(de[:, :, offset:offset + k], codes[j], rows)
        offset += k
    if plr_cache is not None and s.plr_linear:
        grads["plr_C"], grads["plr_W"], grads["plr_b"] = layers.plr_backward(
            de[:, :, offset:], plr_cache, params["plr_W"])
    elif plr_cache is not None:
        grads["plr_C"] = layers.periodic_backward(
            layers.by_column(de[:, :, offset:], len(s.plr_columns)), plr_cache)


def _tabm_input_forward(s: Structure, params: Mapping[str, torch.Tensor], X: torch.Tensor,
                        x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                        sub_batches: bool) -> tuple[torch.Tensor, Any]:
    """TabM-mini's first layer: u = [x, e, h], each sub-network's u_i ⊙ r_i stacked as k·B
    rows ``(P, k·B, F)``, and z = (u ⊙ r)·W₀ + b₀. u_i is the i-th block of X's rows with
    ``sub_batches``, else all of them (a broadcast)."""
    r = params["tabm_r"]  # (P, k, F)
    P, k, F = r.shape
    e, codes, plr_cache = (_embedded(s, params, X) if s.embeddings or s.plr_columns
                           else (None, [], None))
    if e is None:
        u = x  # (rows, F): shared by every member
    else:
        u = torch.cat([x.expand(P, -1, -1), e], dim=2) if s.n_dense else e
    rows = u.shape[-2]
    # (…, k or 1, B, F): each sub-network's rows, or one block all of them read
    blocks = u.unflatten(-2, (k, rows // k)) if sub_batches else u.unsqueeze(-3)
    u_k = (blocks * r.unsqueeze(2)).reshape(P, -1, F)
    z = torch.bmm(u_k, W)
    return (z if b is None else z.add_(b)), (blocks, u_k, codes, plr_cache)


def _tabm_input_backward(s: Structure, params: Mapping[str, torch.Tensor], dz: torch.Tensor,
                         a_in: Any, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """dW₀ = (u ⊙ r)ᵀ·dz, db₀ = Σ dz; du_i = dz_i·W₀ᵀ, dr_i = Σ_rows du_i ⊙ u, and for the
    embeddings du = Σ_i du_i ⊙ r_i."""
    blocks, u_k, codes, plr_cache = a_in
    r = params["tabm_r"]
    P, k, F = r.shape
    grads = {"W": torch.bmm(u_k.transpose(1, 2), dz), "b": dz.sum(dim=1, keepdim=True)}
    du_k = torch.bmm(dz, W.transpose(1, 2)).view(P, k, -1, F)
    grads["tabm_r"] = (du_k * blocks).sum(dim=2)
    if codes or plr_cache is not None:
        du = du_k * r.unsqueeze(2)  # each row's du from the sub-networks that read it
        du = du.sum(dim=1) if blocks.shape[-3] == 1 else du.reshape(P, -1, F)
        _embedded_backward(s, params, du[:, :, s.n_dense:], codes, plr_cache, grads)
    return grads


def input_backward(s: Structure, params: Mapping[str, torch.Tensor], dz: torch.Tensor,
                   a_in: Any, W: torch.Tensor) -> dict[str, torch.Tensor]:
    """dW, db, each table's dE and PLR's gradients of the first layer (keys without the layer
    number): dW = [x, e, h]ᵀ·dz, [de, dh] = dz·W_ehᵀ, then dE_j the scatter-add of de_j by the
    codes, and PLR's from dh (``layers.plr_backward``); TabM-mini's dr too."""
    if s.tabm_k > 1:
        return _tabm_input_backward(s, params, dz, a_in, W)
    if not s.embeddings and not s.plr_columns:
        dW, db, _ = layers.dense_backward(dz, a_in, W, need_da=False)
        return {"W": dW, "b": db}
    x, e, codes, plr_cache = a_in
    d = s.n_dense
    dW = torch.bmm(e.transpose(1, 2), dz)
    if d:
        dW = torch.cat([torch.matmul(x.t(), dz), dW], dim=1)
    grads = {"W": dW, "b": dz.sum(dim=1, keepdim=True)}
    de = torch.bmm(dz, W[:, d:].transpose(1, 2))  # (P, B, Σk)
    _embedded_backward(s, params, de, codes, plr_cache, grads)
    return grads


def forward(s: Structure, params: Mapping[str, torch.Tensor],
            buffers: Mapping[str, torch.Tensor], X: torch.Tensor, *, training: bool,
            bn_momentum: torch.Tensor | None = None, keep_prob: torch.Tensor | None = None,
            generator: torch.Generator | None = None, tape: list | None = None,
            kernels: Kernels = EAGER, sub_batches: bool = False) -> torch.Tensor:
    """Output pre-activations z ``(P, B, C)`` of every member for the shared input X ``(B, d)``.

    ``training``: batch norm normalizes with the minibatch's μ and σ², and, with
    ``bn_momentum`` (each member's ``(P,)`` m; 1 leaves a member's estimates alone), updates
    the running estimates in place; otherwise it uses the running estimates.
    ``keep_prob`` ``(P,)``: inverted dropout after each hidden activation, masks drawn from
    ``generator`` (training only). ``tape``: when a list, what :func:`backward` needs is
    appended to it, layer by layer. ``kernels``: the elementwise functions, eager or compiled.

    TabM-mini (``tabm_k`` = k > 1): in training, z holds the k sub-networks' outputs as k·B
    rows ``(P, k·B, C)``, each on its own block of X's rows with ``sub_batches`` (X then
    holds k·B rows), on all of X otherwise; in evaluation, the z of their mean prediction
    ``(P, B, C)`` (``losses.mean_of_heads``).
    """
    a = X
    counts = layers.keep_count(keep_prob) if training and keep_prob is not None else None
    last = s.n_layers - 1
    for layer in range(s.n_layers):
        W, b = params[f"W{layer}"], params.get(f"b{layer}")
        if layer == 0:  # z = x·W + Σ e·W_e + b (W = s·W₀ with the front scale)
            W = first_weights(s, params)
            z, a_in = input_forward(s, params, X, W, b, sub_batches and training)
        elif layer == last and s.tabm_k > 1:  # z_i = a_i·W_i + b_i, each sub-network's own
            z, a_in = layers.heads_forward(a, W, b, s.tabm_k), a
        else:  # z = a·W + b
            z, a_in = layers.dense_forward(a, W, b), a
        if layer == last:
            if tape is not None:
                tape.append(a_in)
            if training or s.tabm_k == 1:
                return z
            return losses.mean_of_heads(z, s.tabm_k, s.task)
        gamma, beta = params.get(f"gamma{layer}"), params.get(f"beta{layer}")
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
    raise AssertionError("unreachable: the output layer returns")


def backward(s: Structure, params: Mapping[str, torch.Tensor], dz: torch.Tensor, tape: list,
             kernels: Kernels = EAGER) -> dict[str, torch.Tensor]:
    """Gradients of Σ_p J_p for every parameter, from dz = dJ/dz at the output and the tape
    of a training-mode :func:`forward`; member p's gradient is its own dJ_p/dθ_p."""
    grads: dict[str, torch.Tensor] = {}
    last = s.n_layers - 1
    da = None  # the gradient of the layer's output, from the layer above
    for layer in range(last, -1, -1):
        if layer < last:
            a_in, cache = tape[layer]
            # back through dropout, g and batch norm: dz from da
            dz, dgamma, dbeta = kernels.hidden_backward(da, cache, s.activation,
                                                        params.get(f"gamma{layer}"))
            if dgamma is not None:
                grads[f"gamma{layer}"], grads[f"beta{layer}"] = dgamma, dbeta
        else:
            a_in = tape[-1]
        W = params[f"W{layer}"]
        if layer == 0:  # dW, db and the tables' dE
            first = input_backward(s, params, dz, a_in, first_weights(s, params))
            dW = first.pop("W")  # of W̃₀ = s·W₀ with the front scale
            if s.front_scale:  # ds_f = Σ_j dW̃₀[f, j]·W₀[f, j], dW₀ = s·dW̃₀
                grads["front_scale"] = (dW * W).sum(dim=2, keepdim=True)
                dW.mul_(params["front_scale"])
            grads["W0"] = dW
            db = first.pop("b")
            grads.update(first)
        elif layer == last and s.tabm_k > 1:  # each sub-network's output layer
            grads[f"W{layer}"], db, da = layers.heads_backward(dz, a_in, W, s.tabm_k)
        else:  # dW = aᵀ·dz, db = Σ dz, da = dz·Wᵀ
            grads[f"W{layer}"], db, da = layers.dense_backward(dz, a_in, W, need_da=True)
        if f"b{layer}" in params:
            grads[f"b{layer}"] = db
    return grads


def forward_backward(s: Structure, params: Mapping[str, torch.Tensor],
                     buffers: Mapping[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor, *,
                     bn_momentum: torch.Tensor | None = None,
                     keep_prob: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, kernels: Kernels = EAGER,
                     weight: torch.Tensor | None = None, sub_batches: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode pass over a minibatch: the output z ``(P, B, C)``, each member's
    per-example losses ``(P, B)`` (unweighted) and its gradient of its data cost
    J = (1/B)·Σ w·L (``weight`` ``(B,)`` or ``(P, B)``, None: all 1; see :func:`forward`
    for the options).

    TabM-mini: J = (1/k)·Σ_i J_i, each sub-network's cost averaged, the mean over the k·B
    rows. With ``sub_batches`` X, y and the weights hold the k sub-networks' rows (k·B), and
    so do z and the losses; otherwise each sub-network reads all of X, the losses are each
    row's mean over them and z that of their mean prediction."""
    tape: list = []
    z = forward(s, params, buffers, X, training=True, bn_momentum=bn_momentum,
                keep_prob=keep_prob, generator=generator, tape=tape, kernels=kernels,
                sub_batches=sub_batches)
    k = 1 if sub_batches else s.tabm_k
    y_rows, weight_rows = sub_network_rows(y, weight, k)
    example_losses, dz = kernels.loss_and_gradient(z, y_rows, s.task, weight_rows)  # w·(ŷ−y)/B
    grads = backward(s, params, dz, tape, kernels)
    if k > 1:
        P = z.shape[0]
        return (losses.mean_of_heads(z.detach(), k, s.task),
                example_losses.view(P, k, -1).mean(dim=1), grads)
    return z, example_losses, grads


def sub_network_rows(y: torch.Tensor, weight: torch.Tensor | None, k: int
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The targets and weights of a minibatch as TabM-mini's k sub-networks read it, k
    copies one after another (rows i·B..(i+1)·B are sub-network i's); as they are for k = 1."""
    if k == 1:
        return y, weight
    return y.repeat(k), None if weight is None else weight.repeat(
        *([1] * (weight.dim() - 1)), k)
