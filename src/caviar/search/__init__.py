"""Search: spaces sampled on the right scale, samplers (coarse to fine) over Optuna.

Example::

    >>> import optuna
    >>> from caviar.search import default_space, make_sampler
    >>> space = default_space()
    >>> study = optuna.create_study(sampler=make_sampler("coarse-to-fine", space, seed=0))
    >>> trial = study.ask()
    >>> params = space.suggest(trial)       # caviar's names: learning_rate, momentum, ...
    >>> _ = study.tell(trial, 0.5)
"""

from .samplers import SAMPLERS, AskTellGridSampler, CoarseToFineSampler, make_sampler
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

__all__ = [
    "KINDS", "NAMES", "SAMPLERS", "AskTellGridSampler", "CoarseToFineSampler", "Param", "Space",
    "SpaceError", "choice", "default_space", "ema_beta", "fixed", "integer", "log_integer",
    "log_uniform", "make_sampler", "uniform",
]
