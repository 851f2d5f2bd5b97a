"""Search spaces over caviar's hyperparameters, sampled on the right scale (DESIGN.md,
"Sampling scales").

Every numeric parameter has a *sampling-space* coordinate ``r`` in which it is drawn uniformly:

===========  =================  ================  =========================================
kind         value              r                 Optuna parameter
===========  =================  ================  =========================================
uniform      x                  r = x             ``name``: float
log_uniform  α = 10^r           r = log10 α       ``name``: float, log=True
ema_beta     β = 1 − 10^r       r = log10(1 − β)  ``"1-" + name``: float, log=True, holds 1 − β
int          n                  r = n             ``name``: int
log_int      n ≈ 10^r           r = log10 n       ``name``: int, log=True
choice       one of the values  (none)            ``name``: categorical
fixed        the value          (none)            (not suggested)
===========  =================  ================  =========================================

Optuna's log-uniform sampling *is* the lecture's rule r ~ U[log10 low, log10 high], α = 10^r;
``ema_beta`` suggests 1 − β log-uniformly, so β ∈ [0.9, 0.999] spends as many trials on
[0.9, 0.99] as on [0.99, 0.999]. In a space, ``depth`` and ``width`` stand for
``hidden_layer_sizes = (width,) * depth`` and keep their names in Optuna. Choices that are not
scalars (``hidden_layer_sizes`` values such as ``[64, 64]``) go to Optuna as JSON strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .. import hyperparams
from ..files import jsonable
from ..hyperparams import HYPERPARAMETERS, NUMERIC, close_names, scalings_read

KINDS = ("uniform", "log_uniform", "ema_beta", "int", "log_int", "choice", "fixed")
SCALES = {"uniform": "linear", "int": "linear", "log_uniform": "log", "log_int": "log",
          "ema_beta": "ema_beta", "choice": "categorical", "fixed": "fixed"}
SPACE_ONLY = tuple(hyperparams.SPACE_ONLY)  # hidden_layer_sizes = (width,) * depth
_ROWS = {**HYPERPARAMETERS, **hyperparams.SPACE_ONLY}  # the vocabulary's row of each name
NAMES = tuple(_ROWS)  # every name a space may use

_NUMERIC = ("uniform", "log_uniform", "ema_beta", "int", "log_int")
_KEYS = {"uniform": ("low", "high"), "log_uniform": ("low", "high"), "ema_beta": ("low", "high"),
         "int": ("low", "high"), "log_int": ("low", "high"), "choice": ("values",),
         "fixed": ("value",)}
_INTEGER_NAMES = tuple(name for name, h in _ROWS.items() if h.kind == "int")
_CATEGORICAL_NAMES = tuple(name for name, h in _ROWS.items()
                           if h.kind in ("choice", "bool", "sizes"))
_INACTIVE = object()  # the value of a parameter whose condition does not hold


class SpaceError(ValueError):
    """A search space that cannot be used; the message is one line naming the parameter."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One axis of a :class:`Space`. Build it with :func:`uniform`, :func:`log_uniform`,
    :func:`ema_beta`, :func:`integer`, :func:`log_integer`, :func:`choice` or :func:`fixed`.

    ``when`` maps other hyperparameters to the values that make this one active, e.g.
    ``{"optimizer": ("momentum",)}``; every entry must hold. The Space fills in ``name`` and
    checks the bounds.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()
    value: Any = None
    when: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    name: str = ""

    @property
    def scale(self) -> str:
        """``"linear"``, ``"log"``, ``"ema_beta"``, ``"categorical"`` or ``"fixed"``."""
        return SCALES[self.kind]

    @property
    def optuna_name(self) -> str:
        """The name in Optuna: ``"1-" + name`` for ema_beta (the parameter holds 1 − β)."""
        return f"1-{self.name}" if self.kind == "ema_beta" else self.name

    @property
    def is_numeric(self) -> bool:
        return self.kind in _NUMERIC

    def optuna_bounds(self) -> tuple[float, float]:
        """(low, high) of the Optuna parameter: the bounds of 1 − β for ema_beta."""
        if self.kind == "ema_beta":
            return _one_minus(self.high), _one_minus(self.low)
        return self.low, self.high

    def r_bounds(self) -> tuple[float, float]:
        """The axis in sampling space, low to high (r of β = 0.999 is −3, of β = 0.9 is −1)."""
        a, b = self.to_r(self.low), self.to_r(self.high)
        return min(a, b), max(a, b)

    def to_r(self, value: float) -> float:
        """Sampling-space coordinate of a value (of β itself for ema_beta)."""
        if self.kind in ("log_uniform", "log_int"):
            return math.log10(value)
        if self.kind == "ema_beta":
            return math.log10(_one_minus(value))
        if self.kind in ("uniform", "int"):
            return float(value)
        raise SpaceError(f"{self.name}: a {self.kind} parameter has no sampling coordinate")

    def from_r(self, r: float) -> float | int:
        """The value at sampling-space coordinate ``r`` (β for ema_beta; ints rounded)."""
        if self.kind == "log_uniform":
            return 10.0**r
        if self.kind == "ema_beta":
            return _one_minus(10.0**r)
        if self.kind == "uniform":
            return float(r)
        if self.kind in ("int", "log_int"):
            n = round(10.0**r if self.kind == "log_int" else r)
            return int(min(max(n, self.low), self.high))
        raise SpaceError(f"{self.name}: a {self.kind} parameter has no sampling coordinate")

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter; returns caviar's value (β, not 1 − β)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(self.name, self._encoded()))
        low, high = self.optuna_bounds()
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.name, low, high, log=self.kind == "log_int")
        raw = trial.suggest_float(self.optuna_name, low, high, log=self.kind != "uniform")
        return self.decode(raw)

    def decode(self, raw: Any) -> Any:
        """Caviar's value from the Optuna parameter's value."""
        if self.kind == "ema_beta":
            return _one_minus(raw)
        if self.kind == "choice":
            encoded = self._encoded()
            return self.values[encoded.index(raw)] if raw in encoded else raw
        return raw

    def encode(self, value: Any) -> Any:
        """The Optuna parameter's value for caviar's ``value`` (the inverse of decode)."""
        if self.kind == "ema_beta":
            return _one_minus(value)
        return _encode_choice(value) if self.kind == "choice" else value

    def _encoded(self) -> list:
        return [_encode_choice(v) for v in self.values]

    def grid(self, points: int) -> list:
        """Optuna values evenly spaced in sampling space (every value of a choice)."""
        if self.kind == "choice":
            return self._encoded()
        if self.kind == "fixed":
            return [self.value]
        a, b = self.to_r(self.low), self.to_r(self.high)
        rs = [(a + b) / 2] if points == 1 else [a + (b - a) * i / (points - 1)
                                               for i in range(points)]
        lo, hi = self.optuna_bounds()
        # clamp so that rounding in 10**log10(x) never puts a point outside the distribution
        return sorted({min(max(self.encode(self.from_r(r)), lo), hi) for r in rs})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, read back by :meth:`Space.from_dict`."""
        d: dict[str, Any] = {"kind": self.kind}
        for key in _KEYS[self.kind]:
            d[key] = jsonable(getattr(self, key))
        if self.when:
            d["when"] = {k: jsonable(v) for k, v in self.when.items()}
        return d


def uniform(low: float, high: float, *, when: Mapping[str, Any] | None = None) -> Param:
    """x ~ U[low, high]."""
    return Param("uniform", low, high, when=_when(when))


def log_uniform(low: float, high: float, *, when: Mapping[str, Any] | None = None) -> Param:
    """α = 10^r with r ~ U[log10 low, log10 high]; bounds are values > 0 (e.g. 1e-4, 1e-1)."""
    return Param("log_uniform", low, high, when=_when(when))


def ema_beta(low: float, high: float, *, when: Mapping[str, Any] | None = None) -> Param:
    """β = 1 − 10^r for an exponentially weighted average; bounds are β values in (0, 1):
    ``ema_beta(0.9, 0.999)`` draws r ~ U[−3, −1]."""
    return Param("ema_beta", low, high, when=_when(when))


def integer(low: int, high: int, *, when: Mapping[str, Any] | None = None) -> Param:
    """An integer uniform on low..high (kind ``"int"``)."""
    return Param("int", low, high, when=_when(when))


def log_integer(low: int, high: int, *, when: Mapping[str, Any] | None = None) -> Param:
    """An integer ≈ 10^r, r ~ U[log10 low, log10 high] (kind ``"log_int"``)."""
    return Param("log_int", low, high, when=_when(when))


def choice(values: Any, *, when: Mapping[str, Any] | None = None) -> Param:
    """One of ``values``, each equally likely."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]  # Space reports it when the hyperparameter expects something else
    return Param("choice", values=tuple(_frozen(v) for v in values), when=_when(when))


def fixed(value: Any, *, when: Mapping[str, Any] | None = None) -> Param:
    """A constant; not suggested to Optuna."""
    return Param("fixed", value=_frozen(value), when=_when(when))


_BUILDERS: dict[str, Callable[..., Param]] = {
    "uniform": uniform, "log_uniform": log_uniform, "ema_beta": ema_beta, "int": integer,
    "log_int": log_integer, "choice": choice, "fixed": fixed}


class Space:
    """A search space: caviar hyperparameter names mapped to :class:`Param` axes.

    Example::

        >>> import optuna
        >>> from caviar.search import Space, choice, ema_beta, log_uniform
        >>> space = Space({
        ...     "learning_rate": log_uniform(1e-4, 1e-1),
        ...     "optimizer": choice(["adam", "momentum"]),
        ...     "momentum": ema_beta(0.9, 0.999, when={"optimizer": ["momentum"]}),
        ...     "epochs": 20,                      # a plain value is fixed
        ... })
        >>> study = optuna.create_study()
        >>> params = space.suggest(study.ask())    # e.g. {'learning_rate': 0.0031, ...}
        >>> sorted(params) in (["epochs", "learning_rate", "optimizer"],
        ...                    ["epochs", "learning_rate", "momentum", "optimizer"])
        True

    Conditions are checked against the values drawn so far; a condition on a hyperparameter
    the space does not name uses its fixed default (``caviar.hyperparams.DEFAULTS``).
    """

    def __init__(self, params: Mapping[str, Param | Any]) -> None:
        self._params: dict[str, Param] = {}
        for name, spec in params.items():
            if name not in NAMES:
                raise SpaceError(f"unknown hyperparameter {name!r}{close_names(name, NAMES)}; "
                                 f"a space may name: {', '.join(NAMES)}")
            param = spec if isinstance(spec, Param) else fixed(spec)
            param = dataclasses.replace(param, name=name)
            _check(param)
            if param.is_numeric:  # one type per kind, so equal spaces compare equal
                number = int if param.kind in ("int", "log_int") else float
                param = dataclasses.replace(param, low=number(param.low), high=number(param.high))
            self._params[name] = param
        if "hidden_layer_sizes" in self._params and set(SPACE_ONLY) & set(self._params):
            raise SpaceError("hidden_layer_sizes: give either hidden_layer_sizes or depth and "
                             "width, not both")
        self._check_conditions()
        self._order = self._topological_order()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Space:
        """A space from its dict form: ``{name: {"kind": ..., "low": ..., "high": ...,
        "values": [...], "value": ..., "when": {other: [values]}}}``; a plain value (or a table
        with only ``value``) is fixed. :meth:`to_dict` writes this form."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"a space must be a table of hyperparameters, got {data!r}")
        return cls({name: _param_from_spec(name, spec) for name, spec in data.items()})

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> Space:
        """A space from a TOML file: one table per hyperparameter, as :meth:`from_dict`.

        Example file::

            [learning_rate]
            kind = "log_uniform"
            low = 1e-4
            high = 1e-1

            [momentum]
            kind = "ema_beta"
            low = 0.9
            high = 0.999
            when = { optimizer = ["momentum"] }

            [epochs]
            value = 20
        """
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise SpaceError("reading a TOML space needs Python 3.11 or the tomli "
                                 "package (pip install tomli)") from None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise SpaceError(f"{os.fspath(path)}: no such space file") from None
        except tomllib.TOMLDecodeError as err:
            raise SpaceError(f"{os.fspath(path)}: bad TOML syntax: {err}") from None
        try:
            return cls.from_dict(data)
        except SpaceError as err:
            raise SpaceError(f"{os.fspath(path)}: {err}") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able; ``Space.from_dict(space.to_dict()) == space``."""
        return {name: p.to_dict() for name, p in self._params.items()}

    def replace(self, params: Mapping[str, Param | Any]) -> Space:
        """A new space with ``params`` added or replacing axes (plain values are fixed).
        Giving ``hidden_layer_sizes`` drops ``depth`` and ``width`` and the other way round."""
        kept = dict(self._params)
        if "hidden_layer_sizes" in params:
            for name in SPACE_ONLY:
                kept.pop(name, None)
        if set(SPACE_ONLY) & set(params):
            kept.pop("hidden_layer_sizes", None)
        kept.update(params)
        return Space(kept)

    # -- sampling -----------------------------------------------------------------------------

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw one configuration from an Optuna trial (``optuna.Trial``, e.g. ``study.ask()``).

        Returns caviar's vocabulary, ready for ``caviar.hyperparams.resolve``: β values
        (not 1 − β), ``hidden_layer_sizes`` from ``depth``/``width``, fixed values included,
        parameters whose condition fails left out (so their defaults apply).
        """
        return self._walk(lambda p: p.suggest(trial))

    def hyperparams(self, trial_params: Mapping[str, Any]) -> dict[str, Any]:
        """What :meth:`suggest` returned, rebuilt from Optuna's parameters of that trial
        (``frozen_trial.params``, ``study.best_params``)."""

        def read(p: Param) -> Any:
            if p.optuna_name not in trial_params:
                raise SpaceError(f"{p.name}: the trial has no parameter {p.optuna_name!r}; was "
                                 "it sampled from another space?")
            return p.decode(trial_params[p.optuna_name])

        return self._walk(read)

    def grid(self, points_per_axis: int = 3) -> dict[str, list]:
        """A search space for ``optuna.samplers.GridSampler``, keyed by Optuna name:
        ``points_per_axis`` values per numeric axis, evenly spaced in sampling space (log axes
        in log10, ema_beta axes in log10(1 − β)), every value of a choice; fixed ones left
        out. Conditional parameters are included, since GridSampler needs every name it sees.
        """
        if points_per_axis < 1:
            raise SpaceError(f"points_per_axis must be at least 1, got {points_per_axis}")
        return {p.optuna_name: p.grid(points_per_axis) for p in self._params.values()
                if p.kind != "fixed"}

    # -- sampling space -----------------------------------------------------------------------

    def box(self) -> dict[str, tuple[float, float]]:
        """The whole box in sampling space, ``{optuna_name: (r_low, r_high)}`` over numeric
        axes: the same terms as the coarse-to-fine sampler's recorded boxes."""
        return {p.optuna_name: p.r_bounds() for p in self._params.values() if p.is_numeric}

    def to_r(self, name: str, value: float) -> float:
        """Sampling-space coordinate of caviar's ``value`` (β for ema_beta): log10 α for log
        axes, log10(1 − β) for ema_beta, the value itself for linear axes."""
        return self[name].to_r(value)

    def from_r(self, name: str, r: float) -> float | int:
        """Caviar's value at sampling-space coordinate ``r`` (inverse of :meth:`to_r`)."""
        return self[name].from_r(r)

    def scale(self, name: str) -> str:
        """The axis to plot ``name`` on: ``"linear"``, ``"log"``, ``"ema_beta"`` (plot
        log10(1 − β), label β), ``"categorical"``, or ``"fixed"``. Takes caviar's or Optuna's
        name (``"1-beta1"`` → ``"ema_beta"``)."""
        return self[name].scale

    # -- mapping ------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._params)

    def __getitem__(self, name: str) -> Param:
        """The axis called ``name`` in caviar or in Optuna (``"1-beta1"``)."""
        if name in self._params:
            return self._params[name]
        for p in self._params.values():
            if p.optuna_name == name:
                return p
        raise KeyError(f"{name!r} is not in this space{close_names(name, self._params)}")

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._params == other._params

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}={p.kind}" for n, p in self._params.items())
        return f"Space({axes})"

    # -- internals ----------------------------------------------------------------------------

    def _walk(self, draw: Callable[[Param], Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self._order:
            p = self._params[name]
            if all(self._current(k, values) in allowed for k, allowed in p.when.items()):
                values[name] = p.value if p.kind == "fixed" else draw(p)
        depth, width = values.pop("depth", None), values.pop("width", None)
        if depth is not None or width is not None:
            values["hidden_layer_sizes"] = ((int(width or _default("width")),)
                                            * int(depth or _default("depth")))
        if "hidden_layer_sizes" in values:
            values["hidden_layer_sizes"] = tuple(values["hidden_layer_sizes"])
        return values

    def _current(self, name: str, values: Mapping[str, Any]) -> Any:
        if name in values:
            return values[name]
        if name in self._params:
            return _INACTIVE
        return _default(name)

    def _check_conditions(self) -> None:
        for p in self._params.values():
            for parent, allowed in p.when.items():
                if parent == p.name:
                    raise SpaceError(f"{p.name}: a condition cannot name the parameter itself")
                if parent not in NAMES:
                    raise SpaceError(f"{p.name}: when names unknown hyperparameter {parent!r}"
                                     f"{close_names(parent, NAMES)}")
                possible = self._possible(parent)
                for v in allowed:
                    if possible is not None and v not in possible:
                        raise SpaceError(
                            f"{p.name}: when {parent} = {v!r} can never hold; {parent} takes "
                            f"{', '.join(map(repr, possible))}"
                            f"{close_names(str(v), [str(x) for x in possible])}")

    def numeric_values(self) -> tuple[str, ...]:
        """The values the space's networks may take for ``numeric`` (None, the table's own,
        written out as the default scaling): what the warm start tries a configuration under."""
        p = self._params.get("numeric")
        values = () if p is None else p.values if p.kind == "choice" else (p.value,)
        return tuple(dict.fromkeys(v or NUMERIC[0] for v in values)) or (NUMERIC[0],)

    def scalings(self) -> tuple[str, ...]:
        """The numeric scalings the space's networks read, the first the table's own: what
        ``caviar.data.prepare(numeric=...)`` must give them (robust+quantile reads two)."""
        return tuple(dict.fromkeys(name for v in self.numeric_values()
                                   for name in scalings_read(v)))

    def _possible(self, name: str) -> tuple | None:
        """The values ``name`` may take, when there are finitely many: the vocabulary's list
        for choices and booleans (so fixing optimizer = "adam" leaves a momentum axis merely
        inactive), else the axis's values or the default."""
        if _ROWS[name].values is not None:
            return _ROWS[name].values
        p = self._params.get(name)
        if p is None:
            return (_default(name),)
        if p.kind == "choice":
            return p.values
        if p.kind == "fixed":
            return (p.value,)
        return None

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise SpaceError(f"{name}: its conditions form a cycle; a parameter's `when` "
                                 "must not depend on itself through others")
            visiting.add(name)
            for parent in self._params[name].when:
                if parent in self._params:
                    visit(parent)
            visiting.discard(name)
            order.append(name)

        for name in self._params:
            visit(name)
        return order


def _default(name: str) -> Any:
    return _ROWS[name].default


def _check(p: Param) -> None:
    """Raise SpaceError (one line, naming the parameter and the fix) if ``p`` is unusable."""
    name, kind = p.name, p.kind
    if kind not in KINDS:
        raise SpaceError(f"{name}: unknown kind {kind!r}{close_names(kind, KINDS)}; "
                         f"kinds: {', '.join(KINDS)}")
    if name in _INTEGER_NAMES and kind in ("uniform", "log_uniform", "ema_beta"):
        raise SpaceError(f'{name}: must be an integer; use kind = "int" or "log_int", not {kind}')
    if name in _CATEGORICAL_NAMES and kind in _NUMERIC:
        raise SpaceError(f'{name}: is not numeric; use kind = "choice" or a fixed value, '
                         f"not {kind}")
    if kind in _NUMERIC:
        for key in ("low", "high"):
            v = getattr(p, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpaceError(f"{name}: {key} must be a finite number, got {v!r}")
            if kind in ("int", "log_int") and v != int(v):
                raise SpaceError(f"{name}: {kind} bounds must be integers, got {key} = {v!r}")
        if p.low > p.high:
            raise SpaceError(f"{name}: low {p.low!r} is above high {p.high!r}; swap them")
        if kind in ("log_uniform", "log_int") and p.low <= 0:
            raise SpaceError(f"{name}: {kind} needs low > 0 (log of {p.low!r} is undefined); "
                             "use a small positive floor such as 1e-6, or a choice including 0")
        if kind == "ema_beta" and not (0 < p.low and p.high <= 1 - 1e-9):
            bad = p.low if p.low <= 0 else p.high
            raise SpaceError(f"{name}: ema_beta bounds are β values in (0, 1) (1 − β ≥ 1e-9), "
                             f"got {bad!r}; e.g. low = 0.9, high = 0.999")
        samples = [p.from_r(r) for r in p.r_bounds()] if kind != "int" else [p.low, p.high]
    elif kind == "choice":
        if not p.values:
            raise SpaceError(f"{name}: choice needs at least one value, e.g. values = [1, 2]")
        samples = list(p.values)
        encoded = p._encoded()
        if len(set(map(json.dumps, encoded))) < len(encoded):
            raise SpaceError(f"{name}: choice values repeat; list each value once")
    else:
        samples = [p.value]
    for v in samples:
        _check_value(name, v)


def _check_value(name: str, value: Any) -> None:
    """Whether the vocabulary accepts ``value`` for ``name``; one-line SpaceError if not."""
    try:
        hyperparams.check(name, value)
    except ValueError as err:
        raise SpaceError(f"{name}: {err}") from None


def _param_from_spec(name: str, spec: Any) -> Param:
    if not isinstance(spec, Mapping):
        return Param("fixed", value=_frozen(spec), name=name)
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind is None:
        if "value" in spec:
            kind = "fixed"
        elif "values" in spec:
            kind = "choice"
        else:
            raise SpaceError(f'{name}: missing kind; add kind = "..." (one of {", ".join(KINDS)})'
                             " or value = ... for a fixed value")
    if kind not in KINDS:
        raise SpaceError(f"{name}: unknown kind {kind!r}{close_names(str(kind), KINDS)}; "
                         f"kinds: {', '.join(KINDS)}")
    keys = _KEYS[kind]
    for key in spec:
        if key not in (*keys, "when"):
            raise SpaceError(f"{name}: unknown key {key!r} for kind {kind}"
                             f"{close_names(key, (*keys, 'when'))}; keys: {', '.join(keys)}, when")
    for key in keys:
        if key not in spec:
            raise SpaceError(f"{name}: {kind} needs {' and '.join(keys)}; {key} is missing")
    when = spec.get("when")
    if when is not None and not isinstance(when, Mapping):
        raise SpaceError(f'{name}: when must be a table such as {{ optimizer = ["adam"] }}, '
                         f"got {when!r}")
    if kind == "choice" and not isinstance(spec["values"], (list, tuple)):
        raise SpaceError(f"{name}: values must be a list, got {spec['values']!r}")
    param = _BUILDERS[kind](*(spec[k] for k in keys), when=when)
    return dataclasses.replace(param, name=name)


def _when(when: Mapping[str, Any] | None) -> dict[str, tuple]:
    out = {}
    for k, v in (when or {}).items():
        values = v if isinstance(v, (list, tuple)) else [v]
        out[k] = tuple(_frozen(x) for x in values)
    return out


def _one_minus(x: float) -> float:
    """1 − x to 12 significant digits: 1 − 0.999 is 0.001, not 0.0010000000000000009."""
    return float(f"{1.0 - x:.12g}")


def _frozen(value: Any) -> Any:
    """Lists become tuples, so that params compare equal and can be looked up."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _encode_choice(value: Any) -> Any:
    """Optuna's categorical values must be None, bool, int, float or str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(jsonable(value))


# the scalings ``numeric="search"`` (tune, --numeric search) tries, one per population
SEARCHED_SCALINGS = ("robust", "quantile")
# the encodings the default space tries on a table with categoricals past the one-hot limit:
# there a level is one mean (a target encoding) or numbers of its own (an embedding), and
# which reads a table's identifiers better differs by table (bench/README.md, "Identifier
# columns": 0.87-0.97x on three tables, 1.01-1.03x on three others)
SEARCHED_ENCODINGS = ("onehot", "mixed")


def default_space() -> Space:
    """The default space for tabular MLPs (what the lecture notes tune), as a :class:`Space`.

    Example::

        >>> from caviar.search import default_space
        >>> default_space().scale("beta2")
        'ema_beta'
    """
    adam_like = ["adam", "adamw"]
    return Space({
        # α: Adam-family optimizers on normalized inputs like 1e-4..1e-2; momentum SGD likes
        # larger steps. Above ~3e-2 most tabular nets diverge, so spend no trials there.
        "learning_rate": log_uniform(1e-4, 3e-2),
        # sgd left out: momentum with β near 0.8 already covers it.
        "optimizer": choice(["momentum", "rmsprop", "adam", "adamw"]),
        # β of v ← βv + (1 − β)dW averages over ~1/(1 − β) steps: 5 to 100 steps.
        "momentum": ema_beta(0.8, 0.99, when={"optimizer": ["momentum"]}),
        "beta1": ema_beta(0.8, 0.99, when={"optimizer": adam_like}),
        # β₂ averages squared gradients over longer windows; 0.999 (Adam's default) is central.
        "beta2": ema_beta(0.99, 0.9999, when={"optimizer": ["rmsprop", *adam_like]}),
        # exponential uses its default k = 0.95 per epoch (k is on another scale than the
        # inverse-time rate, and one name can have only one range); cosine needs no rate.
        "lr_decay": choice(["none", "inverse_time", "exponential", "cosine"]),
        "decay_rate": log_uniform(1e-2, 1.0, when={"lr_decay": ["inverse_time"]}),
        # λ of (λ/2m)Σ‖W‖²: the per-step decay is λ/m, so with 1e3..1e5 rows this reaches
        # from "off" (λ = 1e-4) to strong. A log floor replaces λ = 0. AdamW decays instead.
        "l2": log_uniform(1e-4, 1e2, when={"optimizer": ["momentum", "rmsprop", "adam"]}),
        # decoupled decay W ← W − α·wd·W, on the scale of PyTorch's AdamW (default 1e-2).
        "weight_decay": log_uniform(1e-4, 1e-1, when={"optimizer": ["adamw"]}),
        # L1 rarely helps dense tabular nets; a space file can tune it.
        "l1": fixed(0.0),
        "dropout": uniform(0.0, 0.5),
        # structural axes (each combination is a separate population): few distinct values.
        "batch_norm": choice([True, False]),
        # m of μ_run ← m·μ_run + (1 − m)·μ: averages over 10 to 1000 minibatches.
        "bn_momentum": ema_beta(0.9, 0.999, when={"batch_norm": [True]}),
        "depth": integer(1, 3),
        "width": choice([32, 64, 128, 256]),
        "batch_size": choice([64, 128, 256]),
        # encoding="embedding" is left out: with one fixed network it was 5-76% worse than
        # one-hot on snmesp and baseball (bench/README.md); a space file can search it.
        # Periodic numeric embeddings (PLR): with one fixed network, σ = 0.1 beat plain
        # columns on 8 of 10 tables (test score 0.94× on geometric mean, 0.81-1.01×), and the
        # best σ differs by table (hpc_data: 0.3; digits, snmesp: 0.1; σ = 1 was 1.08×);
        # σ only sets the initialization, so it is per member (bench/README.md, "PLR").
        "numeric_embedding": choice(["none", "plr"]),
        # The numeric columns' scaling. Searched (numeric="search": SEARCHED_SCALINGS, one per
        # population) it was 0.91-0.98x on hpc_data's skewed counts but 1.007x on the mean of
        # ten tables at 60 s (9 of 20 runs better): the populations split in two and the
        # quantile transform slows the end's permutation importance (bench/README.md, "The
        # numeric scaling, searched"); with the benchmarks' quantile transform, 1.008 on ten
        # tables and 1.002 on eight others ("Quantile inputs as the benchmarks make them").
        # So one scaling unless asked.
        "numeric": fixed(NUMERIC[0]),
        "plr_sigma": log_uniform(0.01, 1.0, when={"numeric_embedding": ["plr"]}),
        # per member, so any value shares a population; the pruner stops hopeless trials.
        "epochs": integer(10, 60),
    })
