"""The validation score, defined once: what early stopping, the tuner, the pruner, the kept
model and panda's best epoch all compare.

It is the validation loss, lower is better: log-loss for classifiers, RMSE for regression.
The engine trains on a standardized target, so its RMSE is in standard deviations; users read
it in the target's own units (× the target's standard deviation), converted here and nowhere
else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RMSE_KEYS = ("train_rmse", "val_rmse")


def validation_metric(task: str) -> str:
    """The history key of the validation score: "val_rmse" or "val_log_loss"."""
    return "val_rmse" if task == "regression" else "val_log_loss"


def validation_score(record: Mapping[str, Any], task: str,
                     target_std: float | None = None) -> float:
    """A history record's validation score (minimized); a regression RMSE in the target's
    units when ``target_std`` is given, else in standard deviations."""
    value = record[validation_metric(task)]
    return value * target_std if target_std is not None else value


def in_target_units(record: Mapping[str, Any], target_std: float | None) -> dict[str, Any]:
    """A history record with its RMSEs in the target's units (``target_std``: the
    standardized target's scale; None for classifiers, whose records need no change)."""
    out = dict(record)
    if target_std is not None:
        for key in RMSE_KEYS:
            if isinstance(out.get(key), (int, float)):
                out[key] = out[key] * target_std
    return out
