"""The hyperparameter vocabulary: one table read by the engine, search spaces, TOML files,
``--set KEY=VALUE``, the estimators and the reports (DESIGN.md, "Hyperparameter names").

Each row gives a name's kind, default, valid values, a one-line help, and whether it is

- *structural*: it fixes tensor shapes or the computation graph (layer sizes, activation,
  batch norm on/off, batch size, the categoricals' encoding, the numeric columns' scaling and
  embedding), so the members of one population share it;
- *per member*: each member holds its own value in a ``(P,)`` tensor, so members with
  different values still train in one vectorized computation.

``resolve(overrides)`` validates values once, where they come in (the command line, a
search space's draw, an estimator's ``fit``, a model file), and returns a read-only
:class:`Config` that the code further in trusts. This module imports no torch: reading a
table or parsing a command line needs the names, not the engine.

    >>> config = resolve({"learning_rate": 3e-4})
    >>> config["learning_rate"], config["optimizer"], config["hidden_layer_sizes"]
    (0.0003, 'adam', (64, 64))
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TASKS = ("binary", "multiclass", "regression")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
LR_DECAYS = ("none", "inverse_time", "exponential", "step", "cosine")
ENCODINGS = ("onehot", "embedding", "mixed")
NUMERIC_EMBEDDINGS = ("none", "plr", "periodic")
SOLVERS = ("gradient", "exact")
KINDS = ("int", "float", "choice", "bool", "sizes")
# how numeric columns are scaled (caviar.data.preprocess), the default first
NUMERIC = ("robust", "asinh", "quantile", "standard", "robust-or-quantile")
# every numeric column read twice, robust-scaled and quantile-transformed: the network takes
# the straight values where the target is near-linear in them and the ranks where a column
# is skewed (bench/README.md, "Robust and quantile inputs side by side")
BOTH_SCALINGS = "robust+quantile"
NUMERIC_READS = (*NUMERIC, BOTH_SCALINGS)  # what a network's ``numeric`` may be


def scalings_read(numeric: str) -> tuple[str, ...]:
    """The scalings (of ``NUMERIC``) a network of ``numeric`` reads: one, or those joined
    by "+" (``BOTH_SCALINGS``), the first of them the one a periodic embedding takes."""
    return tuple(numeric.split("+"))


@dataclass(frozen=True)
class Hyperparameter:
    """One row of the vocabulary, in the spirit of scikit-learn's ``_parameter_constraints``.

    ``kind`` is "int", "float", "choice", "bool" or "sizes" (a list of layer widths). Numbers
    lie in the interval from ``low`` to ``high`` (None: unbounded), ``closed`` at the "left",
    "right", "both" or "neither" end as in ``sklearn.utils._param_validation.Interval``.
    ``optional``: None is valid too.
    """

    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    closed: str = "left"
    choices: tuple[str, ...] = ()
    structural: bool = False
    optional: bool = False

    @property
    def values(self) -> tuple | None:
        """Every valid value, when there are finitely many (choices and booleans)."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "bool":
            return (True, False)
        return None

    @property
    def rule(self) -> str:
        """What a valid value is, in words: the end of "NAME must be ..." messages."""
        if self.kind == "choice":
            rule = f"one of {', '.join(self.choices)}"
            return f"{rule} or null" if self.optional else rule
        if self.kind == "bool":
            return "true or false"
        if self.kind == "sizes":
            return "a list of positive widths such as [64, 64]"
        if self.kind == "int" and self.low == 1 and self.high is None:
            rule = "a positive integer"
        else:
            left_open = self.closed in ("right", "neither")
            if self.high is None:
                interval = f"{'>' if left_open else '>='} {self.low:g}"
            else:
                right = "]" if self.closed in ("right", "both") else ")"
                interval = f"in {'(' if left_open else '['}{self.low:g}, {self.high:g}{right}"
            rule = f"{'an integer' if self.kind == 'int' else 'a number'} {interval}"
        return f"{rule} or null" if self.optional else rule

    def check(self, name: str, value: Any) -> Any:
        """``value`` if valid (integers as int, layer sizes as a tuple of int), else a
        ValueError with a one-line message naming ``name`` and the rule."""
        if value is None and self.optional:
            return None
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ValueError(f"{name} must be {self.rule}, got {value!r}"
                             f"{close_names(str(value), self.choices)}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError(f"{name} must be {self.rule}, got {value!r}")
        if self.kind == "sizes":
            sizes = _widths(value)
            if sizes is None:
                raise ValueError(f"{name} must be {self.rule}, got {value!r}")
            return sizes
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                self._in_range(value) and (self.kind == "float" or value == int(value))):
            raise ValueError(f"{name} must be {self.rule}, got {value!r}")
        return int(value) if self.kind == "int" else value

    def _in_range(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.closed in ("right", "neither")
                                     else value < self.low):
            return False
        return self.high is None or (value <= self.high if self.closed in ("right", "both")
                                     else value < self.high)


def _widths(value: Any) -> tuple[int, ...] | None:
    """Layer widths as a tuple of positive ints, or None if ``value`` is not such a list."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    sizes = []
    for n in value:
        whole = isinstance(n, numbers.Integral) or (isinstance(n, float) and n.is_integer())
        if isinstance(n, bool) or not whole or n < 1:
            return None
        sizes.append(int(n))
    return tuple(sizes)


H = Hyperparameter
_SIZES = (64, 64)

# The vocabulary. Order: structural names, then per-member ones (error messages list them so).
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "hidden_layer_sizes": H("sizes", _SIZES, "the hidden layers' widths ([] for none)",
                            structural=True),
    "activation": H("choice", "relu", "g(z) of the hidden layers", choices=ACTIVATIONS,
                    structural=True),
    "batch_norm": H("bool", True, "batch norm on z before each hidden activation",
                    structural=True),
    "batch_size": H("int", 128, "rows per minibatch", low=1, structural=True),
    "encoding": H("choice", "onehot", "categoricals of more than 2 levels: onehot (one-hot up "
                  "to the table's limit, target-encoded beyond), embedding (a learned table "
                  "of k numbers per level) or mixed (one-hot up to the limit, embedded "
                  "beyond)", choices=ENCODINGS, structural=True),
    "embedding_dim": H("int", None, "k of the embeddings (null: round(1.6·levels^0.56), at "
                       "most 16)", low=1, structural=True, optional=True),
    "numeric": H("choice", None, "how numeric columns of more than two values are scaled: "
                 "robust (median and IQR, smoothly clipped), asinh (median and IQR, then "
                 "asinh: logarithmic tails), quantile (to a normal), standard or "
                 "robust+quantile (each column read both ways); null: the table's own "
                 "(--numeric); tune --numeric search searches robust and quantile",
                 choices=NUMERIC_READS, structural=True, optional=True),
    "numeric_embedding": H("choice", "none", "numeric columns of more than two values: none "
                           "(read as they are), plr (periodic: sin and cos of k learned "
                           "frequencies, a linear layer to plr_dim and ReLU, per column) or "
                           "periodic (the 2k sin and cos themselves, beside the column; "
                           "under solver=exact at fixed frequencies)",
                           choices=NUMERIC_EMBEDDINGS, structural=True),
    "plr_frequencies": H("int", 16, "k, the frequencies per numeric column of plr and periodic",
                         low=1, structural=True),
    "plr_dim": H("int", 16, "the width of each numeric column's plr embedding", low=1,
                 structural=True),
    "tabm_k": H("int", 1, "k of TabM-mini (Gorishniy et al. 2024): k sub-networks share the "
                "hidden layers, each scales the first layer's input by its own vector "
                "(random signs at first) and has its own output layer; they train on the mean "
                "of their losses and predict the mean of their predictions (1: one network)",
                low=1, structural=True),
    "front_scale": H("bool", False, "RealMLP's scaling layer (Holzmüller et al. 2024): the "
                     "first layer's input multiplied by a learned factor per input (1 at "
                     "first), stepped faster than the weights and decayed as they are; a soft "
                     "choice of which inputs count", structural=True),
    "solver": H("choice", "gradient", "how the weights are found: gradient (minibatch steps "
                "of the optimizer) or exact (a network with no hidden layer, on the columns "
                "and with numeric_embedding=periodic their periodic features: the minimizer "
                "of its L2-penalized cost, each epoch on all rows; the normal equations for a "
                "regression, L-BFGS for a classifier's softmax regression)",
                choices=SOLVERS, structural=True),
    "learning_rate": H("float", 1e-3, "α, the step size", low=0, closed="neither"),
    "optimizer": H("choice", "adam", "the update rule", choices=OPTIMIZERS),
    "momentum": H("float", 0.9, "β of momentum: v ← βv + (1 − β)dW", low=0, high=1),
    "beta1": H("float", 0.9, "Adam's β₁ (first moment)", low=0, high=1),
    "beta2": H("float", 0.999, "β₂ of RMSprop and Adam: s ← β₂s + (1 − β₂)dW²", low=0, high=1),
    "epsilon": H("float", 1e-8, "ε of the denominator √s + ε", low=0, closed="neither"),
    "lr_decay": H("choice", "none", "the learning-rate schedule", choices=LR_DECAYS),
    "decay_rate": H("float", None, "the schedule's rate (null: its own, 1 for inverse_time, "
                    "0.95 for exponential, 0.5 for step)", low=0, optional=True),
    "decay_steps": H("int", 10, "epochs per step of the step schedule", low=1),
    "l2": H("float", 0.0, "λ of the L2 penalty (λ/2m)·Σ‖W‖²", low=0),
    "l1": H("float", 0.0, "λ of the L1 penalty (λ/2m)·Σ|w|", low=0),
    "weight_decay": H("float", 0.0, "decoupled decay W ← W − α·wd·W each step (AdamW's)", low=0),
    "dropout": H("float", 0.0, "the drop probability (keep_prob = 1 − dropout)", low=0, high=1),
    "bn_momentum": H("float", 0.9, "m of μ_run ← m·μ_run + (1 − m)·μ (PyTorch's momentum is "
                     "1 − m)", low=0, high=1),
    "epochs": H("int", 50, "epochs to train", low=1),
    "plr_sigma": H("float", 0.1, "σ of the initial frequencies c ~ N(0, σ²) of plr and "
                   "periodic (under solver=exact, of their fixed grid; inputs are scaled to "
                   "about ±3)", low=0, closed="neither"),
}

# Names only a search space uses: hidden_layer_sizes = (width,) * depth.
SPACE_ONLY: dict[str, Hyperparameter] = {
    "depth": H("int", len(_SIZES), "the number of hidden layers", low=1, structural=True),
    "width": H("int", _SIZES[0], "the units of each hidden layer", low=1, structural=True),
}
del H

# Members of one population share these; everything else is a per-member (P,) tensor.
STRUCTURAL = tuple(name for name, h in HYPERPARAMETERS.items() if h.structural)
# The same in a search space's terms (a trial's structure, as Optuna sees it).
SPACE_STRUCTURAL = (*SPACE_ONLY, *STRUCTURAL)


def structural_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The structural names of a trial's Optuna ``params``: what fixes a population's shape,
    and what ``study.enqueue_trial`` fixes to ask a trial of that structure."""
    return {k: v for k, v in params.items() if k in SPACE_STRUCTURAL}

# decay_rate when left as None: inverse time α₀/(1 + 1·epoch) as in the lecture, exponential
# α₀·0.95^epoch, step α₀·0.5^⌊epoch/decay_steps⌋; cosine ignores it.
DEFAULT_DECAY_RATE = {"none": 0.0, "inverse_time": 1.0, "exponential": 0.95, "step": 0.5,
                      "cosine": 0.0}


def close_names(name: str, names: Iterable[str]) -> str:
    """A ' (did you mean ...?)' hint for a misspelt name, or ''."""
    near = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def check(name: str, value: Any) -> Any:
    """``value`` validated for ``name`` (a vocabulary or search-space name); see
    :meth:`Hyperparameter.check`."""
    row = HYPERPARAMETERS.get(name) or SPACE_ONLY.get(name)
    if row is None:
        raise ValueError(_unknown(name))
    return row.check(name, value)


def _unknown(name: str) -> str:
    return (f"unknown hyperparameter {name!r}{close_names(name, HYPERPARAMETERS)}; "
            f"known: {', '.join(HYPERPARAMETERS)}")


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in changes.items():
        if name not in HYPERPARAMETERS:
            raise ValueError(_unknown(name))
        out[name] = HYPERPARAMETERS[name].check(name, value)
    return out


class Config(Mapping[str, Any]):
    """Every hyperparameter of one network, validated: what :func:`resolve` returns.

    Read-only; a Mapping, so ``config["epochs"]``, ``dict(config)`` and ``{**config}`` work.
    ``Config(overrides)`` validates ``overrides`` and fills in the defaults.
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._values = {**_DEFAULT_VALUES, **_checked(overrides or {})}

    def replace(self, **changes: Any) -> Config:
        """A new config with ``changes`` validated and applied; the other values are trusted."""
        new = Config.__new__(Config)
        new._values = {**self._values, **_checked(changes)}
        return new

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


_DEFAULT_VALUES = {name: h.default for name, h in HYPERPARAMETERS.items()}
DEFAULTS = Config()

# A known-good tabular MLP in this vocabulary, after RealMLP-TD (Holzmüller et al. 2024):
# three wide layers without batch norm, a little dropout, AdamW with a small decoupled weight
# decay, batch 256, a cosine decay of the learning rate, and periodic embeddings of the numeric
# columns with RealMLP-TD's own σ = 0.1 of the initial frequencies. Tuning starts from it and
# from ESTIMATOR_NETWORK (``caviar.search.samplers.warm_start``).
REALMLP_LIKE = Config({
    "hidden_layer_sizes": (256, 256, 256), "activation": "relu", "batch_norm": False,
    "batch_size": 256, "dropout": 0.15, "optimizer": "adamw", "learning_rate": 2e-3,
    "weight_decay": 1e-2, "lr_decay": "cosine", "epochs": 50,
    "numeric_embedding": "plr", "plr_sigma": 0.1})

# The estimators fit TabM-mini (Gorishniy et al. 2024) by default: their network with 4
# sub-networks sharing its hidden layers scored 0.921 of the same network alone on the ten
# tables and 0.808 on eight check tables (geometric means of test RMSE or log-loss over seeds
# 1-4, better in 65 of 72 runs; k chosen on the ten tables' seeds 1 and 2), for about 1.6
# times the seconds (bench/README.md, "The estimators' network as TabM-mini"). A network
# without hidden layers has nothing to share.
TABM_K = 4

# The network ``CaviarClassifier()`` and ``CaviarRegressor()`` fit, and a search's warm start
# tries first (``caviar.search.samplers.warm_start``): the defaults as TabM-mini, with the
# numeric columns embedded periodically (PLR, RealMLP-TD's σ = 0.1): 0.936× the test RMSE or
# log-loss on the ten tables and 0.897× on the eleven check tables over four seeds, better in
# 64 of 84 runs, for about 1.9× the seconds (bench/README.md, "PLR in the estimators' default
# network"). Its epochs are a floor: see :func:`epochs_by_steps`.
ESTIMATOR_NETWORK = DEFAULTS.replace(tabm_k=TABM_K, numeric_embedding="plr")

# The same network on RealMLP's schedule: the rate's cosine decay to 0 over all its epochs
# from a peak of 3e-3, run to the end (no early stopping at a plateau), the best epoch kept.
# Where a target is close to a function of the columns, the fine fit of the schedule's last
# epochs is what counts; where it is noisy, stopping at the first plateau does as well. A
# search's warm start tries both and the validation rows choose: 0.927x the test score on 51
# tables and targets drawn at random (15 s tunes; regression 0.891x), 1.0005x on 17 named
# tables at 60 s (bench/README.md, "The estimators' network on RealMLP's schedule in the
# warm start"). The estimators keep the constant rate: on their own, the schedule lost a few
# percent on small noisy tables and took 2.4x the seconds ("The estimators on RealMLP's
# schedule").
ESTIMATOR_NETWORK_DECAYED = ESTIMATOR_NETWORK.replace(lr_decay="cosine", learning_rate=3e-3)

# The same with its PLR frequencies drawn at σ = 1, the scale of the robust-scaled inputs (as
# PERIODIC_EXACT's), not RealMLP-TD's 0.1: where a target is close to a smooth function of the
# columns, its detail needs frequencies that vary within a column's range (the EPICA ice
# core's deuterium from its temperature: 0.41x the test RMSE of σ = 0.1), and where it is
# noisy they fit the noise (1.06x on average over 105 targets drawn at random, better by over
# 5% on 20, worse on 40; bench/README.md, "The decayed network at σ = 1 beside σ = 0.1").
# Neither serves every target, so a search's warm start trains both, in one group, and the
# validation rows choose.
ESTIMATOR_NETWORK_DECAYED_SIGMA1 = ESTIMATOR_NETWORK_DECAYED.replace(plr_sigma=1.0)

# The seeds' linear regression (no hidden layer) with its L2-penalized cost solved exactly
# (``solver="exact"``: one epoch is the minimizer), at λ = 10^r for r = -2, 0, 2. Where the
# target is close to a linear function of the columns, gradient steps on any network stop
# short of it (ridge regression on caviar's inputs beat a 15 s tune by 10-91% on 5 of a
# random sweep's 28 regression targets; in the warm start, by a rule: 0.953x on 28 others,
# bench/README.md, "The seeds' linear regression, solved, in the warm start"); where it is
# not, the validation rows leave it out of the model.
LINEAR_EXACT = tuple(DEFAULTS.replace(hidden_layer_sizes=(), solver="exact", epochs=1, l2=l2)
                     for l2 in (1e-2, 1.0, 1e2))

# The same solve on each numeric column and beside it 2·32 periodic features of it, sin and cos
# of 2π·c·x at fixed frequencies c (``numeric_embedding="periodic"``; σ = 1, the scale of the
# inputs, as random Fourier features take it): an additive model of smooth one-column
# functions, exact. Where a target is such a function (a square, a log, a day of the year from
# a date), a 15 s search's networks miss it by orders of magnitude; where it is not, the
# validation rows leave it out. λ reaches down to 1e-4, since those targets are fitted best
# with almost no penalty. By a rule: 0.822x the test RMSE over 86 regression targets drawn at
# random (15 s tunes; better by over 5% on 19, worse on 10; bench/README.md, "Periodic
# features, solved, in the warm start").
PERIODIC_EXACT = tuple(DEFAULTS.replace(hidden_layer_sizes=(), solver="exact", epochs=1, l2=l2,
                                        numeric_embedding="periodic", plr_frequencies=32,
                                        plr_sigma=1.0)
                       for l2 in (1e-4, 1e-2, 1.0, 1e2))

# The estimators' network trains at least this many optimizer steps: an epoch is
# ⌈rows / batch⌉ steps, so on a small table 50 epochs are few (240 training rows at batch 128:
# 100 steps in all) and the network stops long before it has fit; where 50 epochs hold as many
# steps it changes nothing (bench/README.md, "The estimators' epochs by optimizer steps").
MIN_STEPS = 1000


def epochs_by_steps(epochs: int, batch_size: int, rows: int) -> int:
    """``epochs``, or as many as :data:`MIN_STEPS` optimizer steps of ``batch_size`` take on
    ``rows`` training rows if those are more."""
    steps_per_epoch = math.ceil(rows / min(batch_size, rows))
    return max(int(epochs), math.ceil(MIN_STEPS / steps_per_epoch))


# The estimators' early stopping (their ``n_iter_no_change``): training ends when this many
# epochs have not improved the validation score, and the best epoch's network is kept. A
# search's warm-start networks stop alike (``caviar.search.scheduler``).
PATIENCE = 10


def resolve(overrides: Mapping[str, Any] | None = None) -> Config:
    """The defaults updated by ``overrides``, validated (ValueError with a one-line message).
    A :class:`Config` is returned as it is: it was validated when it was made.

    ``decay_rate`` stays None ("the schedule's default") so that changing ``lr_decay`` later
    changes the rate with it; :func:`effective_decay_rate` reads it.
    """
    return overrides if isinstance(overrides, Config) else Config(overrides)


def effective_decay_rate(config: Mapping[str, Any]) -> float:
    """decay_rate, or the default rate of the member's lr_decay when it is None."""
    rate = config["decay_rate"]
    return float(DEFAULT_DECAY_RATE[config["lr_decay"]] if rate is None else rate)


def structure_key(config: Config) -> tuple:
    """The structural values: members whose keys are equal can share one population."""
    return tuple(config[name] for name in STRUCTURAL)


def help_text() -> str:
    """The names ``--set KEY=VALUE`` takes, for the command line's help, rendered from the
    table: per-member ones, then the structural ones (which a resumed run cannot change)."""

    def entry(name: str, h: Hyperparameter) -> str:
        default = h.default if isinstance(h.default, str) else json.dumps(
            list(h.default) if isinstance(h.default, tuple) else h.default)
        return f"{name} ({h.rule}; default {default}): {h.help}"

    per_member = [entry(n, h) for n, h in HYPERPARAMETERS.items() if not h.structural]
    structural = [entry(n, h) for n, h in HYPERPARAMETERS.items() if h.structural]
    return (f"Names: {'; '.join(per_member)}. Structural (they fix the network's shape): "
            f"{'; '.join(structural)}.")
