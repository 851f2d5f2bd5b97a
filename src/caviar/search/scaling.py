"""``numeric="auto"``: the numeric columns' scaling chosen by the known-good networks.

Robust scaling keeps near-linear columns straight, and small tables live on them (Credit's
balance against the credit limit: the quantile transform bent it, 2.2× the error); the
benchmarks' quantile transform spreads log-normal counts that clipping squeezes into one
value (hpc_data: 6-8% better). Neither wins on every table, and searching the scaling as a
structural choice splits every population in two (bench/README.md, "Quantile inputs as the
benchmarks make them"). So the choice is made once, as a user would make it: the warm start
trains each known-good configuration under every scaling (``samplers.warm_start``), and once
all of them have finished, the search goes on with the scaling of the best of them on the
validation rows. A choice between two, by networks trained to their end, has little room
for the winner's curse that a choice among hundreds of trials has.

Until the choice, new structures take the table's own (first) scaling; after it they take the
chosen one, and groups of the other scaling take no more trials (their running trials
finish, and stay candidates for the model). Every worker of a study makes the same choice
from the same trials: the first worker's warm-start trials, marked ``keys.WARM``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from .space import Space
from .study import keys


class ScalingChoice:
    """Chooses the scaling once the ``expected`` warm-start trials have finished."""

    def __init__(self, space: Space, expected: int, loss: Callable[[float], float]):
        """``space``: its ``numeric`` axis a choice among the scalings (the first the
        table's own); ``expected``: how many warm-start networks the study starts from
        (``len(samplers.warm_start(space))``); ``loss``: a validation score as a loss
        (lower is better: −AUC for AUC)."""
        axis = space["numeric"]
        self.name, self.encode = axis.optuna_name, axis.encode
        self.scalings = space.numeric_values()
        self.expected, self.loss = expected, loss
        self.finished: dict[int, tuple[str, float | None]] = {}  # trial → scaling, value
        self.chosen: str | None = None if expected else self.scalings[0]

    @property
    def scaling(self) -> str:
        """The scaling new structures take now."""
        return self.chosen or self.scalings[0]

    def fixed(self) -> dict[str, Any]:
        """The Optuna parameter a new structure's first trial is asked with."""
        return {self.name: self.encode(self.scaling)}

    def see(self, trial: FrozenTrial) -> bool:
        """Take in a finished trial; True when it completed the choice."""
        if self.chosen is not None or not trial.user_attrs.get(keys.WARM):
            return False
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            return False
        scaling = trial.user_attrs[keys.HYPERPARAMETERS]["numeric"] or self.scalings[0]
        # a warm network stopped by the end of the run has no value: it does not vote
        value = trial.value if trial.state == TrialState.COMPLETE else None
        self.finished[trial.number] = scaling, (value if value is not None
                                                 and math.isfinite(value) else None)
        if len(self.finished) < self.expected:
            return False
        best = self.best()
        # ties go to the table's own scaling (the first)
        self.chosen = (min(best, key=lambda s: (self.loss(best[s]), self.scalings.index(s)))
                       if best else self.scalings[0])
        return True

    def best(self) -> dict[str, float]:
        """The best validation score of the finished warm-start networks of each scaling."""
        out: dict[str, float] = {}
        for scaling, value in self.finished.values():
            if value is not None and scaling in self.scalings and (
                    scaling not in out or self.loss(value) < self.loss(out[scaling])):
                out[scaling] = value
        return out
