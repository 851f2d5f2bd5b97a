"""Which columns a model relies on: permutation importance (``caviar explain MODEL DATA``).

Shuffle one column of the table and score the model again: the importance of the column is
how much worse the score gets, averaged over ``n_repeats`` shuffles. The score is the
model's own validation score, log-loss for classifiers and RMSE in the target's units for
regression; an importance near 0 means the model does not use the column on these rows,
a negative one that shuffling it helped, by chance.

Columns are the ORIGINAL columns of the table, shuffled before preprocessing, so a
categorical column counts once, however many one-hot or target-encoded features it
becomes. Score on rows the model was not trained on (the test rows), with the target.

Example:
    >>> from caviar import load_model, permutation_importance       # doctest: +SKIP
    >>> permutation_importance(load_model("runs/tune/model"), "test.csv")  # doctest: +SKIP
         column  importance_mean  importance_std
    0    income           0.2210          0.0093
    1   balance           0.0405          0.0041
    2   student           0.0003          0.0002
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import get_scorer, log_loss, make_scorer

from .data import DataError, read_table

if TYPE_CHECKING:
    from .model import CaviarModel


# what ``caviar tune`` computes for its report: enough to rank columns, quick on big tables
IMPORTANCE_ROWS, IMPORTANCE_REPEATS = 2000, 3


class _Classifier(ClassifierMixin, BaseEstimator):
    """A fitted CaviarModel as scikit-learn sees a classifier: ``predict_proba`` takes the
    raw table; classes are the indices 0..C-1 (the target is encoded once, up front)."""

    def __init__(self, model: Any = None):
        self.model = model

    def fit(self, X: Any = None, y: Any = None) -> _Classifier:
        return self  # fitted already

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(len(self.model.classes))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


class _Regressor(RegressorMixin, BaseEstimator):
    """A fitted CaviarModel as scikit-learn sees a regressor: ``predict`` takes the raw table
    and answers in the target's units."""

    def __init__(self, model: Any = None):
        self.model = model

    def fit(self, X: Any = None, y: Any = None) -> _Regressor:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict(X)


def permutation_importance(model: CaviarModel | str | Path, data: pd.DataFrame | str | Path,
                           n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Permutation importance of each original column of ``data`` for ``model`` (a
    ``CaviarModel`` or a model directory), on the rows of ``data``, which must hold the
    target column.

    Returns a DataFrame with ``column``, ``importance_mean`` and ``importance_std`` (over the
    ``n_repeats`` shuffles, seeded by ``seed``), most important first; its ``attrs`` hold
    ``metric`` ("log_loss" or "rmse"), ``baseline`` (the score of the unshuffled rows) and
    ``rows``.
    """
    from sklearn.inspection import permutation_importance as sklearn_importance

    if isinstance(model, (str, Path)):
        from .model import load_model

        model = load_model(model)
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    df = read_table(data)
    target = model.target
    if target not in df.columns:
        raise DataError(f"the table has no column {target!r}, the model's target: explain "
                        "(permutation importance) needs the target to score the model; pass "
                        "rows with their target, e.g. held-out test rows")
    df = df[df[target].notna()]
    if df.empty:
        raise DataError(f"no row of the table has a value in the target column {target!r}; "
                        "explain needs rows with their target")
    features = list(model.preprocessor.roles_.features)
    lacking = [c for c in features if c not in df.columns]
    if lacking:
        raise DataError(f"the table lacks {len(lacking)} column(s) the model was trained on: "
                        f"{', '.join(map(repr, lacking[:8]))}; add them (values may be missing)")
    X = df[features].reset_index(drop=True)  # only what the model reads: each one shuffled
    if model.task == "regression":
        estimator: BaseEstimator = _Regressor(model)
        model.preprocessor.encode_target(df[target])  # DataError for text in the target
        y = pd.to_numeric(df[target]).to_numpy(dtype=np.float64)
        scorer: Any = get_scorer("neg_root_mean_squared_error")
        metric = "rmse"
    else:
        estimator = _Classifier(model)
        y = model.preprocessor.encode_target(df[target])  # DataError for unknown classes
        # the labels fixed: rows that lack a class are still scored against all of them
        scorer = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba",
                             labels=list(range(len(model.classes))))
        metric = "log_loss"
    # sklearn's scores are −loss (greater is better), so each importance, the baseline score
    # minus the shuffled one, is how much the loss grows
    result = sklearn_importance(estimator, X, y, scoring=scorer, n_repeats=n_repeats,
                                random_state=seed)
    out = pd.DataFrame({"column": features, "importance_mean": result.importances_mean,
                        "importance_std": result.importances_std})
    out = out.sort_values("importance_mean", ascending=False, kind="stable")
    out = out.reset_index(drop=True)
    baseline = -float(scorer(estimator, X, y))  # sklearn does not return its own
    out.attrs.update({"metric": metric, "baseline": baseline, "rows": len(X)})
    return out
