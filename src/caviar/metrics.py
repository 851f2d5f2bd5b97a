"""The validation score, defined once: what early stopping, the tuner, the pruner, the kept
model and panda's best epoch all compare.

By default it is the validation loss, lower is better: log-loss for classifiers, RMSE for
regression; ``tune(metric=...)`` chooses another (:func:`get_metric`: AUC, F1, MAE, R², ...),
computed from the validation predictions with ``sklearn.metrics``. Losses stay the training
objective; the metric chooses.
The engine trains on a standardized target, so its RMSE is in standard deviations; users read
it in the target's own units (× the target's standard deviation), converted here and nowhere
else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

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


# --------------------------------------------------------------------------------------------
# the metric a study optimizes (tune --metric)


@dataclass(frozen=True)
class Metric:
    """A validation metric: what the search optimizes, the pruner sees, and the kept networks
    are ranked and chosen by. Its values are stored as they are (an AUC, an RMSE in the
    target's units) with the direction to optimize them in.

    ``score(y, outputs, weight)`` takes class indices and probabilities ``(N, C)``, or values
    in the target's units; ``row_loss`` gives per-row losses whose (weighted) mean the metric
    is a monotone function of (log-loss, squared error, ...), or is None when the metric does
    not decompose into rows (AUC, F1)."""

    name: str  # the short name shown: "auc", "log_loss", "rmse"
    scorer: str  # scikit-learn's scorer name: "roc_auc", "neg_log_loss", ...
    direction: str  # "minimize" or "maximize"
    tasks: tuple[str, ...]
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    row_loss: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def loss(self, value: float) -> float:
        """The value as a loss, lower is better (what ranking and early stopping compare)."""
        return -value if self.maximize else value

    def natural(self, loss: float) -> float:
        """The inverse of :meth:`loss`."""
        return -loss if self.maximize else loss


def _labels(outputs: np.ndarray) -> np.ndarray:
    return outputs.argmax(axis=1)


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    from sklearn.metrics import roc_auc_score

    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1], sample_weight=w))
    return float(roc_auc_score(y, p, sample_weight=w, multi_class="ovr",
                               labels=np.arange(p.shape[1])))


def _log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    from sklearn.metrics import log_loss

    p = np.clip(p, 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)  # float32 rounding: sums of 1 ± 1e-7
    return float(log_loss(y, p, sample_weight=w, labels=np.arange(p.shape[1])))


def _classes(fn_name: str, **kwargs: Any) -> Callable:
    """A scikit-learn metric of predicted labels."""
    def score(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
        from sklearn import metrics

        return float(getattr(metrics, fn_name)(y, _labels(p), sample_weight=w, **kwargs))
    return score


def _values(fn_name: str, root: bool = False) -> Callable:
    """A scikit-learn metric of predicted values."""
    def score(y: np.ndarray, v: np.ndarray, w: np.ndarray | None) -> float:
        from sklearn import metrics

        value = float(getattr(metrics, fn_name)(y, v, sample_weight=w))
        return math.sqrt(value) if root else value
    return score


def _squared(y: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v - y) ** 2


CLASSIFIERS = ("binary", "multiclass")
_ACCURACY_LOSS = lambda y, p: (_labels(p) != y).astype(np.float64)  # noqa: E731
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("log_loss", "neg_log_loss", "minimize", CLASSIFIERS, _log_loss,
           lambda y, p: -np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))),
    Metric("auc", "roc_auc", "maximize", CLASSIFIERS, _auc),
    Metric("accuracy", "accuracy", "maximize", CLASSIFIERS, _classes("accuracy_score"),
           _ACCURACY_LOSS),
    Metric("balanced_accuracy", "balanced_accuracy", "maximize", CLASSIFIERS,
           _classes("balanced_accuracy_score")),
    Metric("f1", "f1", "maximize", ("binary",), _classes("f1_score")),
    Metric("precision", "precision", "maximize", ("binary",), _classes("precision_score",
                                                                         zero_division=0)),
    Metric("recall", "recall", "maximize", ("binary",), _classes("recall_score")),
    *(Metric(f"f1_{avg}", f"f1_{avg}", "maximize", CLASSIFIERS,
             _classes("f1_score", average=avg)) for avg in ("macro", "micro", "weighted")),
    Metric("rmse", "neg_root_mean_squared_error", "minimize", ("regression",),
           _values("mean_squared_error", root=True), _squared),
    Metric("mse", "neg_mean_squared_error", "minimize", ("regression",),
           _values("mean_squared_error"), _squared),
    Metric("mae", "neg_mean_absolute_error", "minimize", ("regression",),
           _values("mean_absolute_error"), lambda y, v: np.abs(v - y)),
    # R² = 1 − SSE/SST: for fixed rows, a monotone function of the squared errors
    Metric("r2", "r2", "maximize", ("regression",), _values("r2_score"), _squared),
)}
_ALIASES = {m.scorer: m.name for m in METRICS.values()} | {
    "roc_auc_ovr": "auc", "logloss": "log_loss", "acc": "accuracy",
    "root_mean_squared_error": "rmse", "mean_absolute_error": "mae",
    "mean_squared_error": "mse"}


def metric_names(task: str | None = None) -> list[str]:
    """The short names of the metrics for ``task`` (all of them for None)."""
    return [n for n, m in METRICS.items() if task is None or task in m.tasks]


def get_metric(name: str | None, task: str) -> Metric:
    """The metric called ``name`` (a short name or a scikit-learn scorer name) for ``task``;
    None: the default, log-loss for classifiers and RMSE for regression. ValueError naming the
    valid ones for an unknown name or one that does not fit the task."""
    if name is None:
        return METRICS[default_metric(task)]
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    valid = ", ".join(metric_names(task))
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; for a {task} target choose one of {valid} "
                         "(or their scikit-learn scorer names, e.g. roc_auc, neg_log_loss)")
    metric = METRICS[key]
    if task not in metric.tasks:
        raise ValueError(f"metric {name!r} does not fit a {task} target; choose one of {valid}")
    return metric


def default_metric(task: str) -> str:
    """Today's score: "rmse" for regression, "log_loss" for classifiers."""
    return "rmse" if task == "regression" else "log_loss"


class ValidationScorer:
    """A metric bound to the validation rows: it scores predictions as the network gives
    them (class probabilities, or standardized values, converted here to the target's units
    with ``target_std`` and ``target_mean``), weighted by ``weight`` when given."""

    def __init__(self, metric: Metric, y: Any, task: str, target_std: float | None = None,
                 target_mean: float = 0.0, weight: Any = None):
        self.metric, self.task = metric, task
        self.scale, self.shift = (target_std or 1.0), target_mean
        self.y = self._values(np.asarray(y))
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)

    @property
    def default(self) -> bool:
        """Whether this is the unweighted default score, which the epoch records hold."""
        return self.weight is None and self.metric.name == default_metric(self.task)

    def _values(self, outputs: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return outputs.astype(np.float64) * self.scale + self.shift
        return outputs.astype(np.float64) if outputs.ndim == 2 else outputs.astype(np.int64)

    def __call__(self, outputs: Any) -> float:
        """The metric of one network's (or an average's) predictions."""
        values = self._values(_numpy(outputs))
        if not np.isfinite(values).all():
            return math.nan
        try:
            return self.metric.score(self.y, values, self.weight)
        except ValueError:  # e.g. AUC on rows of a single class
            return math.nan

    def members(self, predictions: Any) -> list[float]:
        """The metric of each member's predictions ``(P, N, ...)``."""
        return [self(p) for p in _numpy(predictions)]

    def row_losses(self, outputs: Any) -> np.ndarray | None:
        """Per-row losses (weighted, weights of mean 1), or None for a metric that does not
        decompose into rows."""
        if self.metric.row_loss is None:
            return None
        losses = self.metric.row_loss(self.y, self._values(_numpy(outputs)))
        if self.weight is not None:
            losses = losses * self.weight / max(self.weight.mean(), 1e-300)
        return losses


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
