"""scikit-learn estimators: one caviar network behind the estimator API.

They take numeric arrays or DataFrames with string categories and missing values as they
are: the table preprocessing (imputation, one-hot and out-of-fold target encoding, input
normalization) is fitted inside ``fit`` on the training rows.

Example:
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.model_selection import cross_val_score
    >>> from caviar import CaviarClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> scores = cross_val_score(CaviarClassifier(epochs=20, random_state=0), X, y, cv=3)
    >>> bool(scores.mean() > 0.9)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_regressor
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .data import NUMERIC, nested_kind, prepare
from .data.dates import as_seconds
from .data.prepare import validation_share
from .data.roles import check_classes
from .hyperparams import (
    DEFAULTS,
    ESTIMATOR_NETWORK,
    HYPERPARAMETERS,
    PATIENCE,
    TABM_K,
    epochs_by_steps,
)
from .metrics import in_target_units
from .model import CaviarModel
from .training import train_network

# The numeric embedding the estimators fit by default: ESTIMATOR_NETWORK's (PLR), where the
# vocabulary's (what ``caviar train`` and a search's drawn trials take) is none.
NUMERIC_EMBEDDING = ESTIMATOR_NETWORK["numeric_embedding"]

_TARGET = "__caviar_target__"
_WEIGHT = "__caviar_weight__"


def _check_sample_weight(sample_weight: Any, frame: pd.DataFrame) -> np.ndarray:
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape != (len(frame),):
        raise ValueError(f"sample_weight has {w.size} values for {len(frame)} samples; pass "
                         "one weight a sample")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample_weight must be finite numbers >= 0, not all zero")
    return w


class _EpochLine:
    """``verbose``: one line per epoch (as scikit-learn's MLP prints its iterations)."""

    def __init__(self, epochs: int, target_std: float | None):
        self.epochs, self.target_std = epochs, target_std

    def __call__(self, record: dict[str, Any]) -> None:
        shown = in_target_units(record, self.target_std)
        parts = [f"epoch {record['epoch']}/{self.epochs}"]
        parts += [f"{k} {v:.4g}" for k, v in shown.items()
                  if k.startswith(("train_loss", "val_")) and isinstance(v, float)]
        print("  ".join(parts), flush=True)


class _CaviarEstimator(BaseEstimator):
    # The estimator's own parameters, checked at the start of fit as scikit-learn checks its
    # own (one line naming the parameter, what it may be and what it got); the network's
    # hyperparameters are the vocabulary's (caviar.hyperparams), which checks them alike.
    _parameter_constraints: dict = {
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both"), None],
        "verbose": ["verbose"],
    }

    # the hyperparameters' defaults are the vocabulary's (caviar.hyperparams)
    def __init__(self, hidden_layer_sizes: Sequence[int] = DEFAULTS["hidden_layer_sizes"],
                 activation: str = DEFAULTS["activation"],
                 batch_norm: bool = DEFAULTS["batch_norm"],
                 dropout: float = DEFAULTS["dropout"],
                 l1: float = DEFAULTS["l1"],
                 l2: float = DEFAULTS["l2"],
                 weight_decay: float = DEFAULTS["weight_decay"],
                 optimizer: str = DEFAULTS["optimizer"],
                 learning_rate: float = DEFAULTS["learning_rate"],
                 momentum: float = DEFAULTS["momentum"],
                 beta1: float = DEFAULTS["beta1"],
                 beta2: float = DEFAULTS["beta2"],
                 epsilon: float = DEFAULTS["epsilon"],
                 lr_decay: str = DEFAULTS["lr_decay"],
                 decay_rate: float | None = DEFAULTS["decay_rate"],
                 decay_steps: int = DEFAULTS["decay_steps"],
                 bn_momentum: float = DEFAULTS["bn_momentum"],
                 batch_size: int = DEFAULTS["batch_size"],
                 epochs: int | None = None,
                 encoding: str = DEFAULTS["encoding"],
                 embedding_dim: int | None = DEFAULTS["embedding_dim"],
                 numeric_embedding: str = NUMERIC_EMBEDDING,
                 plr_frequencies: int = DEFAULTS["plr_frequencies"],
                 plr_dim: int = DEFAULTS["plr_dim"],
                 plr_sigma: float = DEFAULTS["plr_sigma"],
                 tabm_k: int | None = None,
                 front_scale: bool = DEFAULTS["front_scale"],
                 solver: str = DEFAULTS["solver"],
                 early_stopping: bool = True, validation_fraction: float | None = None,
                 n_iter_no_change: int = PATIENCE, categorical: Sequence[str] = (),
                 numeric: str | None = DEFAULTS["numeric"], random_state: int | None = None,
                 verbose: bool | int = False, device: str = "cpu"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.l1 = l1
        self.l2 = l2
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lr_decay = lr_decay
        self.decay_rate = decay_rate
        self.decay_steps = decay_steps
        self.bn_momentum = bn_momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.encoding = encoding
        self.embedding_dim = embedding_dim
        self.numeric_embedding = numeric_embedding
        self.plr_frequencies = plr_frequencies
        self.plr_dim = plr_dim
        self.plr_sigma = plr_sigma
        self.tabm_k = tabm_k
        self.front_scale = front_scale
        self.solver = solver
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.categorical = categorical
        self.numeric = numeric
        self.random_state = random_state
        self.verbose = verbose
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed (median + indicator)
        tags.input_tags.string = True  # string columns become categoricals
        tags.non_deterministic = self.random_state is None
        return tags

    def _frame(self, X: Any, y: Any = None, reset: bool = True) -> pd.DataFrame:
        """Validate X (and y) the scikit-learn way, and keep a DataFrame's own columns."""
        # infinities pass: the preprocessor treats them as missing, naming the column
        kwargs = {"dtype": None, "ensure_all_finite": False, "reset": reset}
        if isinstance(X, pd.DataFrame) and X.shape[1] == 0:
            raise ValueError(f"X has no columns (shape {X.shape}); pass at least one feature")
        if isinstance(y, pd.Series) and (kind := nested_kind(y)) is not None:  # Parquet lists
            raise ValueError(f"y holds {kind}s, not single values; pass one value per sample")
        checked = X
        if isinstance(X, pd.DataFrame):  # numpy has no common type of durations and numbers
            durations = [c for c in X.columns if pd.api.types.is_timedelta64_dtype(X[c])]
            if durations:
                checked = X.copy()
                for c in durations:
                    checked[c] = as_seconds(X[c])
        try:
            if y is None:
                array = validate_data(self, checked, **kwargs)
            else:
                array, _ = validate_data(self, checked, y, y_numeric=is_regressor(self),
                                         **kwargs)
        except ValueError as error:  # scikit-learn's message goes on with the whole array
            if str(error).startswith("Complex data not supported"):
                raise ValueError("Complex data not supported: X holds complex numbers; pass "
                                 "real numbers (the real and imaginary parts as two columns)"
                                 ) from None
            raise
        if isinstance(X, pd.DataFrame):
            frame = X.copy()
            frame.columns = [str(c) for c in frame.columns]
        else:
            frame = pd.DataFrame(array, columns=[f"x{j}" for j in range(array.shape[1])])
            frame = frame.infer_objects()
        if reset and len(array) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to fit; "
                             f"got {len(array)} sample")
        return frame.reset_index(drop=True)

    def _fit(self, frame: pd.DataFrame, y: np.ndarray, task: str,
             sample_weight: Any = None) -> _CaviarEstimator:
        frame[_TARGET] = y
        if sample_weight is not None:  # a column prepare splits with the rows, not a feature
            frame[_WEIGHT] = _check_sample_weight(sample_weight, frame)
        seed = (self.random_state if self.random_state is not None
                else int(np.random.randint(0, 2**31 - 1)))
        hyperparameters = {k: getattr(self, k) for k in DEFAULTS}
        hyperparameters["numeric"] = numeric = self.numeric or NUMERIC[0]
        hyperparameters["tabm_k"] = self._tabm_k()
        hyperparameters["batch_size"] = batch = min(int(self.batch_size), len(frame))
        # too few rows to hold some back, or no class with a second row to validate on
        early_stopping = (self.early_stopping and len(frame) >= 20
                          and (task == "regression" or pd.Series(y).value_counts().max() > 1))
        self.validation_fraction_ = 0.0
        if early_stopping:  # None: 10% up to 25,000 rows, then 2,500 rows (at least 1%)
            self.validation_fraction_ = (
                self.validation_fraction if self.validation_fraction is not None
                else validation_share(len(frame), tuning=False))
        prepared = prepare(frame, _TARGET, task=task, categorical=self.categorical, seed=seed,
                           val_size=self.validation_fraction_,
                           test_size=0.0, weight=_WEIGHT if sample_weight is not None else None,
                           numeric=numeric)
        hyperparameters["epochs"] = epochs = self._epochs(len(prepared.train), batch)
        # early stopping on the weighted validation loss when the rows are weighted
        scorer = prepared.validation_scorer() if prepared.w_val is not None else None
        network = train_network(prepared.X_train, prepared.y_train, prepared.task,
                                hyperparameters, n_classes=prepared.n_classes,
                                X_val=prepared.X_val, y_val=prepared.y_val, seed=seed,
                                patience=self.n_iter_no_change if early_stopping else None,
                                weight=prepared.w_train, scorer=scorer,
                                on_epoch=_EpochLine(int(epochs), prepared.target_std)
                                if self.verbose else None, device=self.device,
                                inputs=prepared.inputs)
        self.model_ = CaviarModel(prepared.preprocessor, network)
        self.history_ = network.history[0]
        self.n_iter_ = len(self.history_)
        return self

    def _epochs(self, rows: int, batch_size: int) -> int:
        """``epochs``, or when None the vocabulary's 50, or as many as
        ``hyperparams.MIN_STEPS`` optimizer steps of ``batch_size`` take on ``rows`` training
        rows if those are more."""
        if self.epochs is not None:
            return self.epochs  # the vocabulary's check rejects a bad value in one line
        return epochs_by_steps(DEFAULTS["epochs"], batch_size, rows)

    def _tabm_k(self) -> int:
        """k of TabM-mini: ``tabm_k``, or when None ``TABM_K`` with hidden layers, else 1."""
        if self.tabm_k is not None:
            return self.tabm_k
        # the vocabulary's check first: a bad value is its one-line error, not a TypeError
        sizes = HYPERPARAMETERS["hidden_layer_sizes"].check("hidden_layer_sizes",
                                                            self.hidden_layer_sizes)
        return TABM_K if sizes else 1

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_._outputs(self._frame(X, reset=False))

    def save(self, path: str) -> None:
        """Save the fitted model as a safe directory (see ``caviar.io``); load it with
        ``caviar.load_model``."""
        check_is_fitted(self, "model_")
        self.model_.save(path)


class CaviarClassifier(ClassifierMixin, _CaviarEstimator):
    """A neural network classifier (softmax output, or sigmoid for two classes) trained by
    caviar's engine. Hyperparameters use caviar's vocabulary (see DESIGN.md); ``device`` is
    where it trains and predicts: "cpu", "cuda" or "auto" (CUDA when available);
    ``numeric`` how numeric columns are scaled: "robust" (median and IQR, smoothly clipped to
    ±3; None, the default, means it), "asinh" (median and IQR, then asinh), "quantile" (to
    a normal), "standard", "robust+quantile" (each column read both ways) or
    "robust-or-quantile" (robust, but quantile for a column with over 5% of its training rows
    beyond the clip's knee); ``tabm_k``
    the sub-networks of TabM-mini (None, the default: ``TABM_K`` = 4 when there are hidden
    layers, else 1; 1 fits one plain network); ``numeric_embedding`` "plr" by default
    (periodic embeddings of the numeric columns; "none" takes them as they are); ``epochs``
    the most epochs early stopping lets it train (None, the default: 50, or on a small table
    as many as ``MIN_STEPS`` = 1,000 optimizer steps take); ``validation_fraction`` the share
    of the rows early stopping validates on (None, the default: 10% up to 25,000 rows, then
    2,500 rows, never under 1%: AutoGluon's holdout when it does not tune).

    Learned attributes: ``classes_``, ``model_`` (a ``CaviarModel``), ``history_`` (one dict
    per epoch), ``n_iter_``, ``n_features_in_``, ``validation_fraction_`` (the share early
    stopping validated on; 0 without early stopping).
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CaviarClassifier:
        """Fit on ``X`` and ``y``; ``sample_weight`` (one number ≥ 0 a row) weights each row's
        loss, and the validation loss early stopping watches."""
        self._validate_params()
        frame = self._frame(X, y)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"the target has only one class "
                             f"({np.asarray(self.classes_[0]).item()!r}); "
                             "a classifier needs at least 2 classes")
        task = check_classes("binary" if len(self.classes_) == 2 else "multiclass", "y",
                             len(self.classes_))
        return self._fit(frame, y, task, sample_weight)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._outputs(X)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class CaviarRegressor(RegressorMixin, _CaviarEstimator):
    """A neural network regressor (linear output, squared error) trained by caviar's engine;
    the target is standardized for training and predictions are in its own units. Its
    hyperparameters are ``CaviarClassifier``'s (TabM-mini with ``TABM_K`` sub-networks by
    default)."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CaviarRegressor:
        """Fit on ``X`` and ``y``; ``sample_weight`` (one number ≥ 0 a row) weights each row's
        loss, and the validation loss early stopping watches."""
        self._validate_params()
        frame = self._frame(X, y)
        y = column_or_1d(y, warn=True).astype(np.float64)
        if np.unique(y).size < 2:
            raise ValueError(f"the target has a single value ({float(y[0])!r}); there is "
                             "nothing to learn")
        return self._fit(frame, y, "regression", sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        values = self._outputs(X)
        return self.model_.preprocessor.predicted_values(values).astype(np.float64)
