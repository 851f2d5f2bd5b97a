"""How numeric columns are scaled (``numeric=``), each a scikit-learn transformer fitted on
the training rows: robust with smooth clipping (RealMLP's, the default), robust then asinh,
quantiles to a normal (the tabular deep-learning benchmarks'), robust or quantile per column,
and scikit-learn's ``StandardScaler``. ``numeric_scaler`` builds the one a name asks for.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted

from caviar.data.errors import DataError
from caviar.hyperparams import NUMERIC

__all__ = ["SmoothClipScaler", "AsinhScaler", "QuantileNormalScaler", "RobustOrQuantileScaler",
           "numeric_scaler", "MAX_QUANTILES"]

MAX_QUANTILES = 1000  # QuantileTransformer's default number of quantiles


class SmoothClipScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Robust scaling with smooth clipping, as RealMLP (Holzmüller et al., 2024) takes numbers.

    Each column becomes ``x = (v − median) / s`` with ``s`` its interquartile range (half its
    range where the quartiles meet, as for a column that is mostly zeros), then
    ``x / √(1 + (x/3)²)``: about ``x`` near the median, never beyond ±3, so an income of
    millions or a count in the thousands is a large input, not one that swamps the others.
    A constant column becomes 0.

    >>> v = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    >>> SmoothClipScaler().fit_transform(v).round(3).ravel().tolist()
    [-0.949, -0.493, 0.0, 0.493, 2.994]
    """

    KNEE = 3.0  # interquartile ranges from the median where the clip bends the values

    def fit(self, X: np.ndarray, y: None = None) -> SmoothClipScaler:
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.median_ = np.median(X, axis=0)
        spread = np.quantile(X, 0.75, axis=0) - np.quantile(X, 0.25, axis=0)
        flat = spread == 0
        spread[flat] = 0.5 * (X.max(axis=0) - X.min(axis=0))[flat]
        with np.errstate(divide="ignore"):
            self.factor_ = np.where(spread > 0, 1.0 / spread, 0.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self._squash(self._scaled(X))

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "factor_")
        return (np.asarray(X, dtype=np.float64) - self.median_) * self.factor_

    @staticmethod
    def _squash(x: np.ndarray) -> np.ndarray:
        return x / np.sqrt(1 + (x / SmoothClipScaler.KNEE) ** 2)


class AsinhScaler(SmoothClipScaler):
    """Robust scaling as :class:`SmoothClipScaler`, then ``asinh(x)`` instead of clipping.

    ``asinh(x) = log(x + √(x² + 1))`` is about ``x`` near the median and about ``log(2x)``
    in the tails: a count a thousand IQRs out is a 7.6, not a 3 like every other large count,
    so the tails keep their order and their ratios (what quantile scaling keeps, without its
    steps on columns of few values).

    >>> v = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    >>> AsinhScaler().fit_transform(v).round(3).ravel().tolist()
    [-0.881, -0.481, 0.0, 0.481, 4.585]
    """

    @staticmethod
    def _squash(x: np.ndarray) -> np.ndarray:
        return np.arcsinh(x)


class QuantileNormalScaler(QuantileTransformer):
    """Quantiles to a normal as the tabular deep-learning benchmarks take numbers (Gorishniy
    et al.'s TabR and TabM code, pytabkit's ``quantile_tabr``, TabM-D's default): scikit-learn's
    ``QuantileTransformer(output_distribution="normal")`` with max(min(n // 30, 1000), 10)
    quantiles, fitted on the training values plus a tie-breaking jitter.

    Why the jitter: scikit-learn sends every value at the lowest (highest) quantile to the
    normal's bound, ±5.2. Where many rows share the smallest value (a count that is 0 in 76% of
    rows, a blank pixel, a missing-value indicator) those rows all became −5.2, an outlier of
    the column's own majority, and the others landed near +0.7. Fitted on values jittered by
    10⁻³ of the column's standard deviation, the shared value spans several quantiles and maps
    to its middle rank (−0.31 for 76% zeros), as values shared inside the range already did.
    (The benchmarks' code jitters by 10⁻³/σ, which on a column of small spread, σ = 0.01,
    would be ten times that spread; 10⁻³·σ breaks the ties on every scale.) The jitter is
    drawn from ``random_state``; transforming uses the fitted quantiles alone.

    >>> v = np.r_[np.zeros(76), np.arange(1.0, 25.0)].reshape(-1, 1)
    >>> plain = QuantileTransformer(n_quantiles=10, output_distribution="normal").fit(v)
    >>> plain.transform([[0.0]]).round(2)
    array([[-5.2]])
    >>> QuantileNormalScaler(n_quantiles=10, random_state=0).fit(v).transform([[0.0]]).round(2)
    array([[-0.35]])
    """

    JITTER = 1e-3  # of each column's standard deviation

    def __init__(self, *, n_quantiles: int = MAX_QUANTILES, random_state: int | None = None):
        super().__init__(n_quantiles=n_quantiles, output_distribution="normal",
                         subsample=None, random_state=random_state)

    @staticmethod
    def quantile_count(n_rows: int) -> int:
        """The benchmarks' count: about 30 training rows a quantile, from 10 up to 1,000 (no
        more than the rows, which scikit-learn would warn of)."""
        return min(max(n_rows // 30, 10), MAX_QUANTILES, max(n_rows, 2))

    def fit(self, X: np.ndarray, y: None = None) -> QuantileNormalScaler:
        X = np.asarray(X, dtype=np.float64)
        rng = np.random.default_rng(self.random_state)
        return super().fit(X + self.JITTER * X.std(axis=0) * rng.standard_normal(X.shape))


class RobustOrQuantileScaler(SmoothClipScaler):
    """Each column robust-scaled and smoothly clipped (:class:`SmoothClipScaler`), except a
    column the clip flattens: one with more than ``TAIL_SHARE`` of its training rows beyond
    the clip's knee (3 interquartile ranges from the median) goes to a normal by its
    quantiles (:class:`QuantileNormalScaler`) instead.

    Why per column: the clip keeps a near-linear column straight (money, sizes: what small
    tables live on, where quantiles bend it), but it maps every value of a heavy tail to
    about ±3, so a count whose top tenth spans 100 to 10,000 loses the order within that
    tenth; its quantiles keep it. Which of the two a column gets is decided by the clip's
    own knee, on the training rows, never by the target.

    >>> v = np.c_[np.arange(100.0), np.r_[np.arange(90.0), 1000.0 * np.arange(1, 11)]]
    >>> scaler = RobustOrQuantileScaler(random_state=0).fit(v)
    >>> scaler.tails_.tolist()
    [False, True]
    """

    TAIL_SHARE = 0.05  # of the training rows beyond the knee: one row in twenty

    def __init__(self, *, n_quantiles: int = MAX_QUANTILES, random_state: int | None = None):
        self.n_quantiles, self.random_state = n_quantiles, random_state

    def fit(self, X: np.ndarray, y: None = None) -> RobustOrQuantileScaler:
        X = np.asarray(X, dtype=np.float64)
        super().fit(X)
        self.tails_ = (np.abs(self._scaled(X)) > self.KNEE).mean(axis=0) > self.TAIL_SHARE
        self.quantile_ = QuantileNormalScaler(n_quantiles=self.n_quantiles,
                                              random_state=self.random_state).fit(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = super().transform(X)
        if self.tails_.any():  # else every column is the clip's: no quantiles to look up
            out[:, self.tails_] = self.quantile_.transform(X)[:, self.tails_]
        return out


def numeric_scaler(numeric: str, n_rows: int, random_state: int) -> BaseEstimator:
    """The scaler of ``numeric`` (one of NUMERIC) for ``n_rows`` training rows."""
    if numeric == "robust":
        return SmoothClipScaler()
    if numeric == "robust-or-quantile":
        return RobustOrQuantileScaler(
            n_quantiles=QuantileNormalScaler.quantile_count(n_rows), random_state=random_state)
    if numeric == "asinh":
        return AsinhScaler()
    if numeric == "quantile":
        return QuantileNormalScaler(n_quantiles=QuantileNormalScaler.quantile_count(n_rows),
                                    random_state=random_state)
    if numeric == "standard":
        return StandardScaler()
    raise DataError(f"numeric must be one of {', '.join(NUMERIC)}, got {numeric!r}")
