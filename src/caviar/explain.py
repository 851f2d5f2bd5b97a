"""Which columns a model relies on: permutation importance (``caviar explain MODEL DATA``).

Shuffle one column of the table and score the model again: the importance of the column is
how much worse the score gets, averaged over ``n_repeats`` shuffles. The score is the
model's own validation score, log-loss for classifiers and RMSE in the target's units for
regression; an importance near 0 means the model does not use the column on these rows,
a negative one that shuffling it helped, by chance.

Columns are the ORIGINAL columns of the table, so a categorical column counts once, however
many one-hot or target-encoded features it becomes: they are shuffled together, which is
shuffling the column before preprocessing. Score on rows the model was not trained on (the
test rows), with the target.

Example:
    >>> from caviar import load_model, permutation_importance       # doctest: +SKIP
    >>> permutation_importance(load_model("runs/tune/model"), "test.csv")  # doctest: +SKIP
         column  importance_mean  importance_std
    0    income           0.2210          0.0093
    1   balance           0.0405          0.0041
    2   student           0.0003          0.0002
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import get_scorer, log_loss, make_scorer

from .data import DataError, read_table, row_weights

if TYPE_CHECKING:
    from .model import CaviarModel


# what ``caviar tune`` computes for its report: enough to rank columns, quick on big tables
IMPORTANCE_ROWS, IMPORTANCE_REPEATS = 2000, 3


class _Classifier(ClassifierMixin, BaseEstimator):
    """A fitted CaviarModel as scikit-learn sees a classifier of ``ImportanceRows``' row
    numbers; classes are the indices 0..C-1 (the target is encoded once, up front)."""

    def __init__(self, rows: Any = None):
        self.rows = rows

    def fit(self, X: Any = None, y: Any = None) -> _Classifier:
        return self  # fitted already

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(len(self.rows.model.classes))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.rows.outputs(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


class _Regressor(RegressorMixin, BaseEstimator):
    """A fitted CaviarModel as scikit-learn sees a regressor of ``ImportanceRows``' row
    numbers, answering in the target's units."""

    def __init__(self, rows: Any = None):
        self.rows = rows

    def fit(self, X: Any = None, y: Any = None) -> _Regressor:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.rows.model.preprocessor.predicted_values(self.rows.outputs(X))


def permutation_importance(model: CaviarModel | str | Path, data: pd.DataFrame | str | Path,
                           n_repeats: int = 5, seed: int = 0,
                           weight: str | None = None) -> pd.DataFrame:
    """Permutation importance of each original column of ``data`` for ``model`` (a
    ``CaviarModel`` or a model directory), on the rows of ``data``, which must hold the
    target column.

    Returns a DataFrame with ``column``, ``importance_mean`` and ``importance_std`` (over the
    ``n_repeats`` shuffles, seeded by ``seed``), most important first; its ``attrs`` hold
    ``metric`` ("log_loss" or "rmse"), ``baseline`` (the score of the unshuffled rows) and
    ``rows``. ``weight``: a column of ``data`` holding row weights (not a feature of the
    model); the scores are then weighted means, as a search under ``--weight`` scores.
    """
    if isinstance(model, (str, Path)):
        from .model import load_model

        model = load_model(model)
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    return importance_of(ImportanceRows(model, data, weight), n_repeats, seed)


def importance_of(rows: ImportanceRows, n_repeats: int, seed: int = 0) -> pd.DataFrame:
    """``permutation_importance`` of rows already checked and preprocessed."""
    from sklearn.inspection import permutation_importance as sklearn_importance

    # sklearn's scores are −loss (greater is better), so each importance, the baseline score
    # minus the shuffled one, is how much the loss grows
    result = sklearn_importance(rows.estimator, rows.X, rows.y, scoring=rows.scorer,
                                n_repeats=n_repeats, random_state=seed,
                                sample_weight=rows.weights)
    out = pd.DataFrame({"column": rows.features, "importance_mean": result.importances_mean,
                        "importance_std": result.importances_std})
    out = out.sort_values("importance_mean", ascending=False, kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update({"metric": rows.metric, "baseline": rows.baseline(), "rows": len(rows.X),
                      "weight": rows.weight})
    return out


class ImportanceRows:
    """The rows ``permutation_importance`` scores: checked, the target encoded, and the
    features preprocessed once. scikit-learn's permutation importance sees them as a matrix
    of row numbers, one column per feature (``X``), and shuffles a column of it; the networks
    then see each feature's output columns (``feature_columns``) taken from the rows its
    column names. That is exactly the matrix of the table with that feature shuffled, since
    each output column depends on one feature of its own row, and it spares preprocessing the
    table again for every feature and shuffle (loans: 24 s to 4 s).

    ``model`` may be replaced by another with the same preprocessor (the tuner times the
    importance of its model of the moment on the same rows). ``weight``: the column of
    ``data`` that weights the scores (None: unweighted)."""

    def __init__(self, model: CaviarModel, data: pd.DataFrame | str | Path,
                 weight: str | None = None):
        df = read_table(data)
        target = model.target
        if target not in df.columns:
            raise DataError(f"the table has no column {target!r}, the model's target: explain "
                            "(permutation importance) needs the target to score the model; "
                            "pass rows with their target, e.g. held-out test rows")
        df = df[df[target].notna()]
        if df.empty:
            raise DataError(f"no row of the table has a value in the target column "
                            f"{target!r}; explain needs rows with their target")
        self.features = list(model.preprocessor.roles_.features)
        lacking = [c for c in self.features if c not in df.columns]
        if lacking:
            raise DataError(f"the table lacks {len(lacking)} column(s) the model was trained "
                            f"on: {', '.join(map(repr, lacking[:8]))}; add them (values may "
                            "be missing)")
        self.model, self.weight = model, weight
        self.weights = row_weights(df, weight).numpy() if weight else None
        started = time.monotonic()
        self.encoded = model.preprocessor.transform(df[self.features])
        self.prepare_seconds = time.monotonic() - started
        made_from = model.preprocessor.feature_columns()
        self.columns = [np.asarray(made_from[c], dtype=np.intp) for c in self.features]
        self.X = np.repeat(np.arange(len(df))[:, None], len(self.features), axis=1)
        if model.task == "regression":
            self.estimator: BaseEstimator = _Regressor(self)
            self.y = model.preprocessor.target_values(df[target])  # DataError for text
            self.scorer: Any = get_scorer("neg_root_mean_squared_error")
            self.metric = "rmse"
        else:
            self.estimator = _Classifier(self)
            self.y = model.preprocessor.encode_target(df[target])  # DataError: unknown class
            # the labels fixed: rows that lack a class are still scored against all of them
            self.scorer = make_scorer(log_loss, greater_is_better=False,
                                      response_method="predict_proba",
                                      labels=list(range(len(model.classes))))
            self.metric = "log_loss"

    def outputs(self, rows: np.ndarray) -> np.ndarray:
        """The model's outputs when feature j of row i is that of row ``rows[i, j]``."""
        matrix, unshuffled = self.encoded.copy(), np.arange(len(rows))
        for j, columns in enumerate(self.columns):
            if not np.array_equal(rows[:, j], unshuffled):
                matrix[:, columns] = self.encoded[np.ix_(rows[:, j], columns)]
        return self.model.outputs(matrix)

    def baseline(self) -> float:
        """The loss of the unshuffled rows (scikit-learn does not return its own)."""
        if self.weights is None:
            return -float(self.scorer(self.estimator, self.X, self.y))
        return -float(self.scorer(self.estimator, self.X, self.y, sample_weight=self.weights))

    def shuffle_seconds(self) -> float:
        """Seconds of one shuffle's prediction and score, timed warm (the second run)."""
        self.baseline()
        started = time.monotonic()
        self.baseline()
        return time.monotonic() - started
