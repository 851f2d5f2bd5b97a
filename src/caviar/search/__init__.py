"""Search: spaces sampled on the right scale, samplers (coarse to fine) over Optuna, and the
tuner that trains their trials in populations.

- ``space``: search spaces (``Space``) and their sampling scales;
- ``samplers``: random, grid, TPE and coarse-to-fine samplers for ask-and-tell;
- ``scheduler``: the ``Tuner``, which trains many trials at once in populations;
- ``ensemble``: the kept networks and the few the model averages;
- ``study``: what a study stores (``study.keys``), its database and archive, resume;
- ``tune``: ``tune()``, wiring the above (also ``caviar.tune``).

The names below load on first use (PEP 562), so that the archive's writer process
(``python -m caviar.search.study.archive``) imports Optuna alone, not torch. ``tune`` itself
is not among them: ``caviar.search.tune`` is the module; the function is
``caviar.search.tune.tune``, or ``caviar.tune``.

Example::

    >>> import optuna
    >>> from caviar.search import default_space, make_sampler
    >>> space = default_space()
    >>> study = optuna.create_study(sampler=make_sampler("coarse-to-fine", space, seed=0))
    >>> trial = study.ask()
    >>> params = space.suggest(trial)       # caviar's names: learning_rate, momentum, ...
    >>> _ = study.tell(trial, 0.5)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "SAMPLERS": "samplers", "AskTellGridSampler": "samplers",
    "CoarseToFineSampler": "samplers", "make_sampler": "samplers",
    "KINDS": "space", "NAMES": "space", "Param": "space", "Space": "space",
    "SpaceError": "space", "choice": "space", "default_space": "space", "ema_beta": "space",
    "fixed": "space", "integer": "space", "log_integer": "space", "log_uniform": "space",
    "uniform": "space",
    "TuneProgress": "scheduler", "Tuner": "scheduler", "make_pruner": "scheduler",
    "KeptNetwork": "ensemble", "select_ensemble": "ensemble",
    "leaderboard": "study.store",
    "TuneResult": "tune",
}

__all__ = [
    "KINDS", "NAMES", "SAMPLERS", "AskTellGridSampler", "CoarseToFineSampler", "KeptNetwork",
    "Param", "Space", "SpaceError", "TuneProgress", "TuneResult", "Tuner", "choice",
    "default_space", "ema_beta", "fixed", "integer", "leaderboard", "log_integer",
    "log_uniform", "make_pruner", "make_sampler", "select_ensemble", "uniform",
]

if TYPE_CHECKING:
    from .ensemble import KeptNetwork, select_ensemble
    from .samplers import SAMPLERS, AskTellGridSampler, CoarseToFineSampler, make_sampler
    from .scheduler import TuneProgress, Tuner, make_pruner
    from .space import (
        KINDS,
        NAMES,
        Param,
        Space,
        SpaceError,
        choice,
        default_space,
        ema_beta,
        fixed,
        integer,
        log_integer,
        log_uniform,
        uniform,
    )
    from .study.store import leaderboard
    from .tune import TuneResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'caviar.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
