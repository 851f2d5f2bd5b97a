"""From a table to the float32 matrix the network sees, built from scikit-learn parts.

- numeric columns: ``SimpleImputer(strategy="median", add_indicator=True)`` then one of
  (``numeric=``, fitted on the training rows only, applied to values and indicators):
  ``"robust"`` (the default), :class:`SmoothClipScaler`: (x − median) / IQR, then
  x / √(1 + (x/3)²), RealMLP's scaling, so heavy-tailed counts and money stay within ±3;
  ``"asinh"``, :class:`AsinhScaler`: the same (x − median) / IQR, then asinh(x), about x
  near the median and logarithmic in the tails (order and ratios kept where clipping merges
  them; measured neutral against robust in a search, bench/README.md, "asinh tails");
  ``"quantile"``, :class:`QuantileNormalScaler`: to a normal by the training rows'
  quantiles, as the tabular deep-learning benchmarks do it (a value many rows share maps to
  its middle rank, not to the bound −5.2);
  ``"standard"``: ``StandardScaler`` (μ, σ; models saved before ``numeric`` existed).
  Measured with one fixed network on ten tables (bench/encoding.py), robust and standard
  tested alike on average (robust ahead on digits and diamonds, behind on baseball), so the
  default is the one that bounds heavy tails; quantile wins on skewed counts (hpc_data, 6%)
  and loses on diamonds (15%) and snmesp (5%), so a tune can search the scaling per
  network (``--numeric search``): with ``numeric_alternatives`` the matrix also holds the
  numeric values scaled the other ways, as last blocks before the codes
  (:meth:`TablePreprocessor.numeric_alternative_columns`);
- categoricals with at most ``onehot_limit(rows, max_onehot)`` levels (see
  :func:`caviar.data.roles.onehot_limit`: by default while levels have 4 training rows each
  on average, up to 1,000 levels): ``OneHotEncoder(handle_unknown="ignore")``, left as 0/1;
- categoricals with more levels (identifiers): ``TargetEncoder`` (smoothed toward the global
  mean, out-of-fold on the training rows, one column per class for several classes) then
  ``StandardScaler``.

With ``codes=True`` (what ``prepare`` asks for), each categorical of more than two levels
also gets a last column ``code__COL`` of integer codes, 1..levels in the order of its known
levels and 0 for a level unseen in training, for networks that embed it
(``encoding="embedding"``, or ``"mixed"`` for the target-encoded ones);
:meth:`TablePreprocessor.input_layout` says which columns those are and which one-hot or
target-encoded columns stand for the same categorical. The codes
come from the encoders' own categories, so they need no state of their own.

Each block is computed in float64 and ends in float32 (``_float32``), the network's precision,
so the blocks are stacked in float32.

Date and time columns (the ``datetime`` role) become numeric columns before all this:
year, month, day of week, hour (when the training times are not all midnight) and the time in
days since the earliest training date (``expand_dates``); they are then imputed and
standardized like the others. Missing categorical values become a level of their own
(``MISSING_LEVEL``). A fitted
preprocessor saves without pickle: :meth:`TablePreprocessor.to_state` gives a JSON-ready dict
and named arrays, and :meth:`TablePreprocessor.from_state` rebuilds it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    QuantileTransformer,
    StandardScaler,
    TargetEncoder,
)
from sklearn.utils.fixes import parse_version
from sklearn.utils.validation import check_is_fitted

from caviar.data.dates import as_seconds, expand_dates, fit_dates
from caviar.data.errors import DataError, quote_names
from caviar.data.numbers import read_numbers
from caviar.data.read import read_table
from caviar.data.roles import (
    MISSING_LEVEL,
    Roles,
    category_strings,
    check_target,
    drop_missing_target,
    infer_roles,
    infer_task,
)
from caviar.data.scalers import RobustOrQuantileScaler, SmoothClipScaler, numeric_scaler
from caviar.files import jsonable
from caviar.hyperparams import NUMERIC

__all__ = ["TablePreprocessor", "make_target_encoder", "NUMERIC"]

STATE_FORMAT = "caviar.TablePreprocessor"
# 2: the numeric transform (``numeric``); version 1 states load as "standard"; 3: ``codes``;
# 4: ``numeric_alternatives``
STATE_VERSION = 4
CODE_MIN_LEVELS = 3  # categoricals with this many levels or more get codes (codes=True)


_TARGET_TYPE = {"binary": "binary", "multiclass": "multiclass", "regression": "continuous"}
_SPLITTER_AS_CV = parse_version(sklearn.__version__).release >= (1, 9)


def make_target_encoder(
    task: str, smooth: float | str = "auto", cv: int = 5, random_state: int = 0,
    stratify: bool = True,
) -> TargetEncoder:
    """The ``TargetEncoder`` caviar uses for ``task``.

    A category becomes the mean of the target over its rows (for a binary target, the share of
    positives; for several classes, one column per class), mixed with the global mean: with
    ``n`` rows in the category, ``(sum + smooth·mean) / (n + smooth)``. ``smooth=0`` gives the
    plain category means; ``"auto"`` picks it by empirical Bayes. ``fit_transform`` encodes each
    row with a model fitted on the other ``cv - 1`` folds (shuffled with ``random_state``),
    stratified by class unless ``stratify`` is false (a target whose every class has fewer
    rows than folds cannot be stratified).

    >>> enc = make_target_encoder("binary", smooth=0)
    >>> X = np.array([["a"], ["a"], ["b"], ["b"]], dtype=object)
    >>> enc.fit(X, [1, 0, 1, 1]).transform(X).ravel().tolist()
    [0.5, 0.5, 1.0, 1.0]
    """
    target_type = _TARGET_TYPE[task]
    if _SPLITTER_AS_CV:  # scikit-learn >= 1.9 takes the splitter itself
        splitter = StratifiedKFold if task != "regression" and stratify else KFold
        return TargetEncoder(target_type=target_type, smooth=smooth,
                             cv=splitter(cv, shuffle=True, random_state=random_state))
    if task != "regression" and not stratify:  # older ones always stratify classes
        raise DataError(f"no class of the target has {cv} training rows, so its categories "
                        "cannot be target-encoded out of fold: upgrade scikit-learn to 1.9 or "
                        "later, or choose a target with repeated classes")
    return TargetEncoder(target_type=target_type, smooth=smooth, cv=cv, shuffle=True,
                         random_state=random_state)


def as_float32(X: np.ndarray) -> np.ndarray:
    """``X`` in float32, the network's precision."""
    return np.asarray(X, dtype=np.float32)


# every block's last step, computed in float64 and then cast: the blocks side by side are
# then float32 too, half the bytes to stack (640,000 rows of 170 columns: 8.2 s to 6.2 s a
# fit, the same matrix), where one float64 block would make the whole matrix float64
def _float32() -> tuple[str, FunctionTransformer]:
    return ("float32", FunctionTransformer(as_float32, feature_names_out="one-to-one",
                                           check_inverse=False))


def _column_transformer(roles: Roles, task: str, smooth: float | str, cv: int,
                        random_state: int, numeric: str, n_rows: int,
                        dates: Iterable[str] = (),
                        alternatives: Iterable[str] = (),
                        stratify: bool = True) -> ColumnTransformer:
    """``dates``: the numeric columns the date columns expand into (``expand_dates``);
    ``alternatives``: other scalings of the numeric values, as last blocks ``num_NAME``;
    ``stratify``: the target encoder's folds by class (see :func:`make_target_encoder`)."""
    parts = []
    numeric_columns = [*roles.numeric, *dates]
    if numeric_columns:
        numbers = Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", numeric_scaler(numeric, n_rows, random_state)),
            _float32(),
        ])
        parts.append(("num", numbers, numeric_columns))
    if roles.onehot:
        # One-hot columns stay 0/1: they are already on a unit scale, and standardizing a rare
        # level would blow it up to ~1/√p (30 for a level on 0.1% of rows); all zeros for an
        # unseen level also keeps its meaning ("none of the known levels").
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        parts.append(("onehot", onehot, list(roles.onehot)))
    if roles.target_encoded:
        encoded = Pipeline([
            ("encode", make_target_encoder(task, smooth, cv, random_state, stratify)),
            ("scale", StandardScaler()),
            _float32(),
        ])
        parts.append(("te", encoded, list(roles.target_encoded)))
    for name in alternatives if numeric_columns else ():
        # the same imputed values, scaled another way (no indicators: the first block has them)
        scaled = Pipeline([("impute", SimpleImputer(strategy="median")),
                           ("scale", numeric_scaler(name, n_rows, random_state)),
                           _float32()])
        parts.append((f"num_{name}", scaled, numeric_columns))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0,
                             verbose_feature_names_out=True)


def _n_folds(task: str, y: np.ndarray, cv: int) -> tuple[int, bool]:
    """``cv`` folds, fewer when the smallest class (or the table) is smaller than that, and
    whether they can be stratified: some class must have a row in each fold (an identifier
    as the target, every class a single row, cannot)."""
    if task == "regression":
        return max(2, min(cv, len(y))), False
    counts = np.bincount(y)
    folds = max(2, min(cv, int(counts[counts > 0].min())))
    return folds, int(counts.max()) >= folds


def _label_array(values: list[Any]) -> np.ndarray:
    """Class labels from JSON back to the array type fitting produced."""
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


class TablePreprocessor(BaseEstimator):
    """Turns a table into the float32 matrix (and target) a network trains on.

    ``fit`` learns everything from the rows it is given, the training rows, and nothing else:
    column roles, medians, means and variances, categories, target encodings, classes.
    ``fit_transform`` returns the training matrix with *out-of-fold* target encoding, so no
    training row is encoded with its own target; ``transform`` encodes any other rows with the
    encodings fitted on all training rows.

    Parameters
    ----------
    target : the target column.
    task : ``"binary"``, ``"multiclass"``, ``"regression"``, or None to infer it.
    categorical : columns to treat as categorical (e.g. integer IDs).
    drop : columns to leave out (e.g. a target leak).
    random_state : seeds the folds of the out-of-fold target encoding.
    smooth : the ``TargetEncoder`` smoothing (``"auto"`` or a number ≥ 0).
    max_onehot : categoricals with at most this many levels are one-hot encoded, others
        target encoded; None (the default): while each level has ``MIN_ROWS_PER_LEVEL``
        training rows on average, and always up to ``MAX_ONEHOT_LEVELS`` levels (see
        :func:`caviar.data.roles.onehot_limit`).
    cv : folds of the out-of-fold target encoding.
    numeric : how numeric columns are scaled: ``"robust"`` (median and IQR, then smooth
        clipping to ±3; :class:`SmoothClipScaler`), ``"quantile"`` (to a normal distribution
        by the training rows' quantiles), or ``"standard"`` (mean and standard deviation).
    numeric_alternatives : other scalings (of ``NUMERIC``) to emit too: after the encoded
        categoricals, one block per scaling holding every numeric value column scaled that
        way, so networks with another ``numeric`` hyperparameter read the same table (see
        :meth:`numeric_alternative_columns`; a tune searching the scaling asks for these).
    codes : also emit, as the last columns, the integer codes of each categorical with at
        least ``CODE_MIN_LEVELS`` levels (for embeddings; see :meth:`input_layout`).

    Examples
    --------
    >>> from caviar.datasets import load_dataset
    >>> df = load_dataset("default")
    >>> pre = TablePreprocessor(target="default")
    >>> X = pre.fit_transform(df)
    >>> X.shape, X.dtype, pre.task_, pre.classes_.tolist()
    ((10000, 4), dtype('float32'), 'binary', ['No', 'Yes'])
    >>> pre.encode_target(df["default"])[:3].tolist()
    [0, 0, 0]
    """

    def __init__(
        self,
        target: str,
        task: str | None = None,
        categorical: Iterable[str] = (),
        drop: Iterable[str] = (),
        random_state: int = 0,
        smooth: float | str = "auto",
        max_onehot: int | None = None,
        cv: int = 5,
        numeric: str = NUMERIC[0],
        numeric_alternatives: Iterable[str] = (),
        codes: bool = False,
    ) -> None:
        self.target = target
        self.task = task
        self.categorical = categorical
        self.drop = drop
        self.random_state = random_state
        self.smooth = smooth
        self.max_onehot = max_onehot
        self.cv = cv
        self.numeric = numeric
        self.numeric_alternatives = numeric_alternatives
        self.codes = codes

    # ---------------------------------------------------------------------------------- fit

    def fit(self, df: pd.DataFrame, y: None = None) -> TablePreprocessor:
        """Learn the preprocessing from the training rows ``df`` (the target is a column)."""
        self._fit(df)
        return self

    def fit_transform(self, df: pd.DataFrame, y: None = None) -> np.ndarray:
        """Fit on ``df`` and return its matrix, target encoded out-of-fold (float32).

        Rows with a missing target are dropped (with a warning), so the matrix lines up with
        ``encode_target`` of the rows that remain.
        """
        return self._fit(df)

    def _fit(self, df: pd.DataFrame) -> np.ndarray:
        df = read_table(df)
        check_target(df, self.target)
        scalings = [self.numeric, *self.numeric_alternatives]
        wrong = [name for name in scalings if name not in NUMERIC]
        if wrong:
            raise DataError(f"numeric must be one of {', '.join(NUMERIC)}, got {wrong[0]!r}")
        if len(set(scalings)) < len(scalings):
            raise DataError(f"numeric scalings must differ, got {', '.join(scalings)}")
        df = drop_missing_target(df, self.target)
        self.task_ = infer_task(df[self.target], self.task)
        self.roles_ = infer_roles(df, self.target, self.categorical, self.drop, self.task_,
                                  self.max_onehot)
        self.columns_ = {col: df[col].dtype.kind for col in df.columns}
        self.dates_ = fit_dates(df, self.roles_.datetime)
        y = df[self.target]
        if self.task_ == "regression":
            values = self.target_values(y)
            self.target_mean_ = float(values.mean())
            self.target_std_ = float(values.std())
            self.target_range_ = (float(values.min()), float(values.max()))
            y_encoder = values  # the target encoder works in the user's units
        else:
            self.classes_ = np.unique(self._labels(y))
            y_encoder = self.encode_target(y)
        folds, stratify = _n_folds(self.task_, y_encoder, self.cv)
        self.column_transformer_ = _column_transformer(self.roles_, self.task_, self.smooth,
                                                       folds, self.random_state, self.numeric,
                                                       len(df), self._date_columns(),
                                                       self.numeric_alternatives, stratify)
        inputs = self._inputs(df)
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            # a class with fewer rows than folds is fine for the target encoder
            warnings.filterwarnings("ignore", message="The least populated class")
            out = self.column_transformer_.fit_transform(inputs, y_encoder)
        self._set_feature_names()
        out = self._finite(out, inputs)
        # a column of two values is already as expressive as any embedding of it: any
        # function of it is linear in it
        self.numeric_columns_ = [j for j in self._numeric_values() if _more_than_two(out[:, j])]
        return self._with_codes(out, inputs)

    def _numeric_values(self) -> list[int]:
        """The output columns of numeric values (dates' parts included; not the missing-value
        indicators)."""
        names = self.column_transformer_.output_indices_.get("num", slice(0, 0))
        return [j for j in range(names.start, names.stop)
                if not self.feature_names_out_[j].startswith("num__missingindicator_")]

    def numeric_columns(self) -> list[int]:
        """The output columns a periodic embedding may take (``numeric_embedding="plr"``):
        numeric values with more than two distinct values in the training rows. Not the
        missing-value indicators, binary numbers or one-hot columns: a column of two values
        gains nothing from an embedding (the first layer's weight on it is already any
        function of it), and would cost 2k·m weights."""
        check_is_fitted(self, "column_transformer_")
        kept = getattr(self, "numeric_columns_", None)
        return list(self._numeric_values() if kept is None else kept)

    def numeric_alternative_columns(self) -> dict[str, dict[str, list[int]]]:
        """For each of ``numeric_alternatives``: its block's output ``columns``, and its
        ``numeric`` ones, the columns standing for :meth:`numeric_columns` (in their order).
        A network scaled that way reads those instead and skips the rest of the block."""
        check_is_fitted(self, "column_transformer_")
        values = self._numeric_values()
        slices = self.column_transformer_.output_indices_
        out = {}
        for name in getattr(self, "numeric_alternatives", ()):
            block = slices.get(f"num_{name}", slice(0, 0))
            out[name] = {"columns": list(range(block.start, block.stop)),
                         "numeric": [block.start + values.index(j)
                                     for j in self.numeric_columns()]}
        return out

    def feature_columns(self) -> dict[str, list[int]]:
        """For each feature of the table (``roles_.features``), the output columns made from
        it: its values in every numeric scaling and its missing-value indicator, its one-hot
        or target-encoded columns and its code, or the parts of a date. Every output column
        belongs to exactly one feature, and depends on that feature of its own row only, so
        shuffling a feature's rows shuffles its output columns alike
        (``explain.permutation_importance`` relies on it)."""
        check_is_fitted(self, "column_transformer_")
        source = {col: col for col in self.roles_.features}  # an encoder's input -> feature
        for col, how in getattr(self, "dates_", {}).items():
            source.update((part, col) for part in
                          expand_dates(pd.Series([], dtype=object, name=col), **how))
        out: dict[str, list[int]] = {col: [] for col in self.roles_.features}
        named = self.column_transformer_.named_transformers_
        for block, where in self.column_transformer_.output_indices_.items():
            columns = iter(range(where.start, where.stop))
            if block == "onehot":  # one column per known level, column by column
                for col, cats in zip(self.roles_.onehot, named["onehot"].categories_):
                    out[col] += [next(columns) for _ in cats]
            elif block == "te":  # one column (per class, for several classes) per column
                width = len(self.classes_) if self.task_ == "multiclass" else 1
                for col in self.roles_.target_encoded:
                    out[col] += [next(columns) for _ in range(width)]
            else:  # numeric blocks: "num__COL", "num__missingindicator_COL", "num_NAME__COL"
                for j in columns:
                    name = self.feature_names_out_[j].split("__", 1)[1]
                    name = name.removeprefix("missingindicator_") if name not in source else name
                    out[source[name]].append(j)
        levels = self._code_levels()
        first = self.n_features_out_ - len(levels)
        for i, col in enumerate(levels):
            out[col].append(first + i)
        return out

    def _set_feature_names(self) -> None:
        self.feature_names_out_ = [str(n) for n in
                                   self.column_transformer_.get_feature_names_out()]
        self.feature_names_out_ += [f"code__{col}" for col in self._code_levels()]
        self.n_features_out_ = len(self.feature_names_out_)

    def _known_levels(self) -> dict[str, np.ndarray]:
        """Each categorical's levels seen in training: the fitted one-hot or target encoder's
        categories, so nothing more is saved."""
        named = self.column_transformer_.named_transformers_
        levels = {}
        if "onehot" in named:
            levels.update(zip(self.roles_.onehot, named["onehot"].categories_))
        if "te" in named:
            levels.update(zip(self.roles_.target_encoded,
                              named["te"].named_steps["encode"].categories_))
        return levels

    def _code_levels(self) -> dict[str, np.ndarray]:
        """The known levels of each categorical that gets codes (none unless ``codes``)."""
        if not getattr(self, "codes", False):
            return {}
        return {col: cats for col, cats in self._known_levels().items()
                if len(cats) >= CODE_MIN_LEVELS}

    def _unseen_levels(self, inputs: pd.DataFrame) -> tuple[int, dict[str, pd.Series]]:
        """Of ``inputs`` (categoricals as :meth:`_inputs` writes them): how many rows hold a
        level unseen in training, and per such column how many rows hold each unseen level,
        most first."""
        unseen, rows = {}, np.zeros(len(inputs), dtype=bool)
        for col, known in self._known_levels().items():
            new = ~inputs[col].isin(known)
            if new.any():
                unseen[col] = inputs.loc[new, col].value_counts()
                rows |= new.to_numpy()
        return int(rows.sum()), unseen

    def _with_codes(self, matrix: np.ndarray, inputs: pd.DataFrame) -> np.ndarray:
        """``matrix`` with the code columns appended: level i of the known levels is i + 1,
        an unseen one 0 (the index's -1 for "not found", plus one)."""
        levels = self._code_levels()
        if not levels:
            return matrix
        codes = [pd.Index(cats).get_indexer(inputs[col]).astype(np.float32) + 1
                 for col, cats in levels.items()]
        return np.column_stack([matrix, *codes])

    def input_layout(self) -> list[dict[str, Any]]:
        """The categoricals that have codes, as plain data: for each its ``name``, the
        ``code_column``, its number of known ``levels``, and the ``dense_columns`` (its
        one-hot columns, or its target-encoded ones: one, or one per class) that stand for
        it otherwise, and whether those are ``target_encoded``; what
        ``caviar.engine.InputLayout`` is made from."""
        check_is_fitted(self, "column_transformer_")
        levels = self._code_levels()
        named = self.column_transformer_.named_transformers_
        slices = self.column_transformer_.output_indices_
        dense: dict[str, list[int]] = {}
        if "onehot" in named:
            start = slices["onehot"].start
            for col, cats in zip(self.roles_.onehot, named["onehot"].categories_):
                dense[col] = list(range(start, start + len(cats)))
                start += len(cats)
        if "te" in named:  # scikit-learn's TargetEncoder: one column per class, by feature
            width = len(self.classes_) if self.task_ == "multiclass" else 1
            start = slices["te"].start
            for col in self.roles_.target_encoded:
                dense[col] = list(range(start, start + width))
                start += width
        first = self.n_features_out_ - len(levels)
        return [{"name": col, "code_column": first + i, "levels": len(cats),
                 "dense_columns": dense[col],
                 "target_encoded": col in self.roles_.target_encoded}
                for i, (col, cats) in enumerate(levels.items())]

    # ------------------------------------------------------------------------- transform

    def transform(self, df: pd.DataFrame, *, warn_unseen: bool = False) -> np.ndarray:
        """The float32 matrix for the rows of ``df`` (any rows; the target may be absent).

        Missing training columns raise DataError; columns unknown at training are ignored with
        a warning; unseen categories become all zeros (one-hot), the global mean (target
        encoding) or the zero embedding, with a warning that names them if ``warn_unseen``
        (what predicting asks for; the search's own validation rows do not).
        """
        check_is_fitted(self, "column_transformer_")
        df = read_table(df)
        lacking = [c for c in self.roles_.features if c not in df.columns]
        if lacking:
            raise DataError(
                f"the table lacks {len(lacking)} column(s) the model was trained on: "
                f"{quote_names(lacking)}; add them (values may be missing)"
            )
        extra = [c for c in df.columns if c not in self.columns_]
        if extra:
            warnings.warn(f"ignoring {len(extra)} column(s) unknown at training: "
                          f"{quote_names(extra)}", stacklevel=2)
        inputs = self._inputs(df)
        if warn_unseen:
            rows, unseen = self._unseen_levels(inputs)
            if unseen:
                warnings.warn(_unseen_message(rows, len(inputs), unseen), stacklevel=2)
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.column_transformer_.transform(inputs)
        return self._with_codes(self._finite(out, inputs), inputs)

    def _finite(self, out: np.ndarray, inputs: pd.DataFrame) -> np.ndarray:
        """``out`` as float32; DataError naming the column whose numbers are too large for it
        (their squares overflow when standardizing, or the result overflows float32)."""
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = np.asarray(out, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=0))
        if len(bad) == 0:
            return matrix
        numeric = self.column_transformer_.output_indices_.get("num", slice(0, 0))
        j = int(bad[0]) - numeric.start
        if not 0 <= j < len(self.roles_.numeric):  # not a numeric column's values
            raise DataError(f"feature {self.feature_names_out_[bad[0]]!r} is not finite; check "
                            f"the table for numbers too large to use")
        col = self.roles_.numeric[j]
        size = np.abs(inputs[col].to_numpy())
        row = inputs.index[int(np.nanargmax(size))]
        raise DataError(f"column {col!r} holds numbers too large to use, such as "
                        f"{inputs[col].loc[row]:.3g} (row {row}); rescale it (change its units "
                        f"or take its log)")

    def _date_columns(self) -> list[str]:
        """The numeric columns the date columns expand into, in order."""
        dates = getattr(self, "dates_", {})
        return [name for col, how in dates.items()
                for name in expand_dates(pd.Series([], dtype=object, name=col), **how)]

    def _inputs(self, df: pd.DataFrame) -> pd.DataFrame:
        """The feature columns, cleaned: numeric ones as float64, categorical ones as strings."""
        cols = {}
        for col in self.roles_.numeric:
            s = df[col]
            if pd.api.types.is_timedelta64_dtype(s):
                s = as_seconds(s)
            elif pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
                numbers, bad = read_numbers(s)
                if len(bad):
                    raise DataError(
                        f"numeric column {col!r} holds text such as {bad.iloc[0]!r} (row "
                        f"{bad.index[0]}); fix or blank those values"
                    )
                s = numbers
            values = s.to_numpy(dtype=np.float64, na_value=np.nan)
            infinite = np.isinf(values)
            if infinite.any():  # the missing-value indicator still tells the network
                warnings.warn(f"column {col!r} holds infinite values (inf or -inf): treated "
                              f"as missing; replace them if they mean something else",
                              stacklevel=3)
                values = np.where(infinite, np.nan, values)
            cols[col] = values
        for col, how in getattr(self, "dates_", {}).items():
            cols.update(expand_dates(df[col], **how))
        for col in self.roles_.categorical:
            cols[col] = category_strings(df[col]).to_numpy()
        return pd.DataFrame(cols, index=df.index, columns=[
            *self.roles_.numeric, *self._date_columns(), *self.roles_.categorical])

    # ---------------------------------------------------------------------------- target

    @staticmethod
    def _labels(y: pd.Series) -> np.ndarray:
        """Class labels in one canonical type: bool, int64 (whole numbers), float, or str."""
        if pd.api.types.is_bool_dtype(y):
            return y.to_numpy(dtype=bool)
        if pd.api.types.is_numeric_dtype(y):
            v = y.to_numpy(dtype=np.float64)
            return v.astype(np.int64) if np.all(v == np.round(v)) else v
        return category_strings(y).to_numpy()

    def encode_target(self, y: pd.Series | np.ndarray | list) -> np.ndarray:
        """Class indices (int64, into ``classes_``) or the standardized target (float32).

        >>> df = pd.DataFrame({"x": range(8), "y": [3.5, 5.5] * 4})
        >>> pre = TablePreprocessor("y", task="regression").fit(df)
        >>> pre.encode_target([3.5, 5.5, 4.5]).tolist()
        [-1.0, 1.0, 0.0]
        """
        check_is_fitted(self, "task_")
        y = pd.Series(y) if not isinstance(y, pd.Series) else y
        if y.isna().any():
            raise DataError(f"the target has {int(y.isna().sum())} missing value(s); drop "
                            f"those rows first")
        if self.task_ == "regression":
            values = self.target_values(y)
            return ((values - self.target_mean_) / self.target_std_).astype(np.float32)
        if self.classes_.dtype.kind in "iuf" and not pd.api.types.is_numeric_dtype(y):
            numbers, bad = read_numbers(y)
            if len(bad):
                raise DataError(f"the target holds class {bad.iloc[0]!r}, unknown at training; "
                                f"known classes: {self._known_classes()}; "
                                f"{self._unknown_class_fix()}")
            y = numbers
        elif self.classes_.dtype.kind == "O" and pd.api.types.is_numeric_dtype(y):
            y = category_strings(y)
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        labels = self._labels(y)
        unknown = [v for v in pd.unique(labels) if v not in index]
        if unknown:
            raise DataError(
                f"the target holds {len(unknown)} class(es) unknown at training, such as "
                f"{jsonable(unknown[0])!r}; known classes: {self._known_classes()}; "
                f"{self._unknown_class_fix()}"
            )
        return np.array([index[v] for v in labels.tolist()], dtype=np.int64)

    def _unknown_class_fix(self) -> str:
        """What to do about rows of a class the training rows lack; where the classes are
        numbers (a year, a count), the target may be a quantity taken for labels."""
        fix = "drop those rows, or train on rows that hold them"
        if self.classes_.dtype.kind in "iuf":
            fix += "; if the target is a quantity, not labels, train with --task regression"
        return fix

    def _known_classes(self) -> str:
        labels = jsonable(self.classes_.tolist())
        more = f" and {len(labels) - 8} more" if len(labels) > 8 else ""
        return ", ".join(repr(v) for v in labels[:8]) + more

    def target_values(self, y: pd.Series | np.ndarray | list) -> np.ndarray:
        """A regression target in its units as float64 (text such as "$1,234" read as the
        number it writes); DataError for a value that is not a number.

        >>> pre = TablePreprocessor("y", task="regression").fit(
        ...     pd.DataFrame({"x": range(4), "y": ["$1,000", "$2,500", "$3,000", "$900"]}))
        >>> pre.target_values(["$1,200", 700]).tolist()
        [1200.0, 700.0]
        """
        y = pd.Series(y) if not isinstance(y, pd.Series) else y
        numbers, bad = read_numbers(y)
        if len(bad):
            raise DataError(f"the target holds text such as {bad.iloc[0]!r}; a regression "
                            f"target must be numbers")
        return numbers.to_numpy()

    def decode_target(self, values: np.ndarray | list) -> np.ndarray:
        """Inverse of :meth:`encode_target`: class indices to labels, or back to target units."""
        check_is_fitted(self, "task_")
        values = np.asarray(values)
        if self.task_ == "regression":
            return values.astype(np.float64) * self.target_std_ + self.target_mean_
        return self.classes_[values.astype(np.int64)]

    def predicted_values(self, outputs: np.ndarray) -> np.ndarray:
        """A regressor's outputs (standardized) as predictions in the target's units, clamped
        to the range of the training target (RealMLP-TD's ``clamp_output``).

        Why: a network's linear output extrapolates past every value the training rows hold
        (a balance below zero, a price below the cheapest), and for any true value inside
        their range the bound is closer than such a prediction (bench/README.md, "Clamped
        regression predictions": never worse in 12 paired runs).
        Models saved before the range was kept are not clamped."""
        values = self.decode_target(outputs)
        return values if self.target_range_ is None else np.clip(values, *self.target_range_)

    # ----------------------------------------------------------------------------- state

    def _steps(self) -> dict[str, Any]:
        named = self.column_transformer_.named_transformers_
        steps = {}
        if "num" in named:
            steps["impute"] = named["num"].named_steps["impute"]
            steps["num_scale"] = named["num"].named_steps["scale"]
        if "onehot" in named:
            steps["onehot"] = named["onehot"]
        if "te" in named:
            steps["encode"] = named["te"].named_steps["encode"]
            steps["te_scale"] = named["te"].named_steps["scale"]
        for name in getattr(self, "numeric_alternatives", ()):
            if f"num_{name}" in named:
                steps[f"num_{name}_impute"] = named[f"num_{name}"].named_steps["impute"]
                steps[f"num_{name}"] = named[f"num_{name}"].named_steps["scale"]
        return steps

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What the fitted preprocessor learned: a JSON-serializable dict and named arrays.

        :meth:`from_state` rebuilds a preprocessor that transforms exactly as this one does.

        >>> import json
        >>> df = pd.DataFrame({"x": [1.0, None, 3.0, 4.0] * 3, "y": ["a", "b", "c"] * 4})
        >>> pre = TablePreprocessor("y").fit(df)
        >>> meta, arrays = pre.to_state()
        >>> again = TablePreprocessor.from_state(json.loads(json.dumps(meta)), arrays)
        >>> bool((again.transform(df) == pre.transform(df)).all())
        True
        """
        check_is_fitted(self, "column_transformer_")
        params = {k: (list(v) if isinstance(v, (tuple, list)) else v)
                  for k, v in self.get_params().items()}
        meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": params,
            "task": self.task_,
            "roles": self.roles_.to_dict(),
            "columns": dict(self.columns_),
            "feature_names_out": list(self.feature_names_out_),
            "numeric_columns": self.numeric_columns(),
        } | ({"dates": dict(self.dates_)} if getattr(self, "dates_", None) else {})
        arrays: dict[str, np.ndarray] = {}
        if self.task_ == "regression":
            meta["target_mean"] = self.target_mean_  # JSON keeps floats exactly (repr)
            meta["target_std"] = self.target_std_
            if self.target_range_ is not None:
                meta["target_range"] = list(self.target_range_)
        else:
            meta["classes"] = jsonable(self.classes_.tolist())
        steps = self._steps()
        if "impute" in steps:
            indicator = steps["impute"].indicator_
            meta["indicator_features"] = [] if indicator is None else [
                int(i) for i in indicator.features_]
            arrays["num.median"] = np.asarray(steps["impute"].statistics_, dtype=np.float64)
            arrays.update(_numeric_arrays(steps["num_scale"]))
        for name in self.numeric_alternatives:  # their medians are the first block's
            if f"num_{name}" in steps:
                arrays.update(_numeric_arrays(steps[f"num_{name}"], f"num_{name}"))
        if "onehot" in steps:
            meta["onehot_categories"] = [jsonable(list(c)) for c in steps["onehot"].categories_]
        if "encode" in steps:
            encoder = steps["encode"]
            meta["te_categories"] = [jsonable(list(c)) for c in encoder.categories_]
            for i, encoding in enumerate(encoder.encodings_):
                arrays[f"te.encodings.{i}"] = np.asarray(encoding, dtype=np.float64)
            arrays["te.target_mean"] = np.atleast_1d(np.asarray(encoder.target_mean_,
                                                                dtype=np.float64))
            arrays.update(_scaler_arrays("te.scale", steps["te_scale"]))
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TablePreprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_state`'s dict and arrays.

        The scikit-learn parts are fitted on a small synthetic table that has the same columns,
        categories and missing-value indicators, then their learned numbers (medians, means,
        variances, encodings) are set from the state, so ``transform`` runs the same code on
        the same numbers as the original.
        """
        version = meta.get("version")
        if (meta.get("format") == STATE_FORMAT and isinstance(version, int)
                and version > STATE_VERSION):
            raise DataError(f"the preprocessor was saved by a newer caviar (state version "
                            f"{version}); upgrade caviar to load it")
        if meta.get("format") != STATE_FORMAT or version not in range(1, STATE_VERSION + 1):
            raise DataError(
                f"not a saved TablePreprocessor (format {meta.get('format')!r}, version "
                f"{version!r}); save it again with this version of caviar"
            )
        params = dict(meta["params"])
        # saved before these parameters existed: standardized numbers, the 10-level rule (the
        # roles are saved, so the rule only shows in get_params)
        params.setdefault("numeric", "standard")
        params.setdefault("max_onehot", 10)
        params.setdefault("codes", False)
        # lists in JSON, tuples in the constructor
        for name in ("categorical", "drop", "numeric_alternatives"):
            if isinstance(params.get(name), list):
                params[name] = tuple(params[name])
        pre = cls(**params)
        pre.task_ = meta["task"]
        pre.roles_ = Roles.from_dict(meta["roles"])
        pre.columns_ = dict(meta["columns"])
        pre.dates_ = dict(meta.get("dates", {}))  # none in models saved before dates
        if pre.task_ == "regression":
            pre.target_mean_ = float(meta["target_mean"])
            pre.target_std_ = float(meta["target_std"])
            bounds = meta.get("target_range")  # none in models saved before the clamp
            pre.target_range_ = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        else:
            pre.classes_ = _label_array(meta["classes"])
        template, y = _template(pre, meta)
        ct = _column_transformer(pre.roles_, pre.task_, pre.smooth, 2, pre.random_state,
                                 pre.numeric, len(template), pre._date_columns(),
                                 pre.numeric_alternatives)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ct.fit(template, y)
        pre.column_transformer_ = ct
        steps = pre._steps()
        if "impute" in steps:
            indicator = steps["impute"].indicator_
            features = [] if indicator is None else indicator.features_.tolist()
            _same("missing indicators", features, meta["indicator_features"])
            steps["impute"].statistics_ = np.array(arrays["num.median"], dtype=np.float64)
            _set_numeric(steps["num_scale"], arrays)
            for name in pre.numeric_alternatives:
                steps[f"num_{name}_impute"].statistics_ = steps["impute"].statistics_.copy()
                _set_numeric(steps[f"num_{name}"], arrays, f"num_{name}")
        if "onehot" in steps:
            _same("one-hot categories", [c.tolist() for c in steps["onehot"].categories_],
                  meta["onehot_categories"])
        if "encode" in steps:
            encoder = steps["encode"]
            _same("target-encoded categories", [c.tolist() for c in encoder.categories_],
                  meta["te_categories"])
            n = len(encoder.encodings_)
            encoder.encodings_ = [np.array(arrays[f"te.encodings.{i}"], dtype=np.float64)
                                  for i in range(n)]
            mean = np.array(arrays["te.target_mean"], dtype=np.float64)
            encoder.target_mean_ = mean if pre.task_ == "multiclass" else mean[0]
            _set_scaler(steps["te_scale"], "te.scale", arrays)
        pre._set_feature_names()
        _same("output features", pre.feature_names_out_, meta["feature_names_out"])
        # saved before PLR: every numeric value column (the counts of values are not saved)
        if "numeric_columns" in meta:
            pre.numeric_columns_ = [int(j) for j in meta["numeric_columns"]]
        check_is_fitted(ct)
        return pre


def _unseen_message(rows: int, n_rows: int, unseen: dict[str, pd.Series],
                    shown: int = 3) -> str:
    """One line: how many rows hold categories unseen in training, and which, by column."""

    def level(value: str, count: int) -> str:
        name = "missing" if value == MISSING_LEVEL else repr(value)
        return f"{name} in {count} row{'s' if count > 1 else ''}"

    parts = []
    for col, counts in unseen.items():
        levels = [level(v, int(c)) for v, c in counts.iloc[:shown].items()]
        if len(counts) > shown:
            levels.append(f"{len(counts) - shown} more level(s)")
        parts.append(f"{col!r} ({', '.join(levels)})")
    return (f"{rows} of {n_rows} row(s) hold categories unseen in training, predicted as no "
            f"known level: {'; '.join(parts)}")


def _more_than_two(values: np.ndarray) -> bool:
    """Whether ``values`` hold more than two distinct numbers (in linear time, unlike
    np.unique's sort)."""
    others = values[values != values[0]] if len(values) else values
    return len(others) > 0 and bool((others != others[0]).any())


def _scaler_arrays(prefix: str, scaler: StandardScaler) -> dict[str, np.ndarray]:
    return {f"{prefix}.mean": np.asarray(scaler.mean_, dtype=np.float64),
            f"{prefix}.var": np.asarray(scaler.var_, dtype=np.float64),
            f"{prefix}.scale": np.asarray(scaler.scale_, dtype=np.float64)}


def _set_scaler(scaler: StandardScaler, prefix: str, arrays: dict[str, np.ndarray]) -> None:
    for name in ("mean", "var", "scale"):
        _set_array(scaler, name, f"{prefix}.{name}", arrays)


def _set_array(step: BaseEstimator, attribute: str, key: str,
               arrays: dict[str, np.ndarray], shape: tuple[int, ...] | None = None) -> None:
    if key not in arrays:
        raise DataError(f"saved preprocessor is inconsistent: it lacks {key}; save it again")
    value = np.array(arrays[key], dtype=np.float64)
    expected = getattr(step, f"{attribute}_").shape if shape is None else shape
    if value.shape != expected:
        raise DataError(f"saved preprocessor is inconsistent: {key} has shape {value.shape}; "
                        f"save it again")
    setattr(step, f"{attribute}_", value)


# The numeric transform's learned numbers, by kind (keys of the saved arrays, under
# ``prefix``: "num" for the first block, "num_NAME" for an alternative one)
def _numeric_arrays(step: BaseEstimator, prefix: str = "num") -> dict[str, np.ndarray]:
    if isinstance(step, RobustOrQuantileScaler):  # both scalers' numbers, and which is used
        return {**_robust_arrays(step, prefix), **_numeric_arrays(step.quantile_, prefix),
                f"{prefix}.tails": step.tails_.astype(np.float64)}
    if isinstance(step, SmoothClipScaler):
        return _robust_arrays(step, prefix)
    if isinstance(step, QuantileTransformer):
        return {f"{prefix}.quantile.quantiles": np.asarray(step.quantiles_, dtype=np.float64),
                f"{prefix}.quantile.references": np.asarray(step.references_,
                                                            dtype=np.float64)}
    return _scaler_arrays(f"{prefix}.scale", step)


def _robust_arrays(step: SmoothClipScaler, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.robust.median": np.asarray(step.median_, dtype=np.float64),
            f"{prefix}.robust.factor": np.asarray(step.factor_, dtype=np.float64)}


def _set_numeric(step: BaseEstimator, arrays: dict[str, np.ndarray],
                 prefix: str = "num") -> None:
    if isinstance(step, SmoothClipScaler):
        _set_array(step, "median", f"{prefix}.robust.median", arrays)
        _set_array(step, "factor", f"{prefix}.robust.factor", arrays)
        if isinstance(step, RobustOrQuantileScaler):
            _set_numeric(step.quantile_, arrays, prefix)
            _set_array(step, "tails", f"{prefix}.tails", arrays)
            step.tails_ = step.tails_ > 0.5
    elif isinstance(step, QuantileTransformer):
        # the template had fewer rows, hence fewer quantiles: take the saved number of them
        n = len(np.asarray(arrays.get(f"{prefix}.quantile.references", ())))
        _set_array(step, "references", f"{prefix}.quantile.references", arrays, (n,))
        _set_array(step, "quantiles", f"{prefix}.quantile.quantiles", arrays,
                   (n, step.n_features_in_))
        step.n_quantiles_ = n
    else:
        _set_scaler(step, f"{prefix}.scale", arrays)


def _same(what: str, rebuilt: Any, saved: Any) -> None:
    if rebuilt != saved:
        raise DataError(f"saved preprocessor is inconsistent: its {what} differ when rebuilt; "
                        f"save it again")


def _template(pre: TablePreprocessor, meta: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """A small table whose fit gives the saved columns, categories and indicator columns.

    Numeric columns hold their saved median (and one missing value where training had an
    indicator); categorical columns cycle through their saved categories; the target cycles
    through the classes, five rows each at least, so stratified folds work.
    """
    roles = pre.roles_
    n_classes = 2 if pre.task_ == "regression" else len(pre.classes_)
    levels = meta.get("onehot_categories", []) + meta.get("te_categories", [])
    n = max([5 * n_classes, 2, *(len(c) for c in levels)])
    cols: dict[str, Any] = {}
    indicator = set(meta.get("indicator_features", []))
    numeric = [*roles.numeric, *pre._date_columns()]
    for i, col in enumerate(numeric):
        values = np.full(n, 0.0)  # replaced by the saved median
        if i in indicator:
            values[0] = np.nan
        cols[col] = values
    for col, cats in zip(roles.categorical, levels, strict=True):
        cols[col] = np.array([cats[i % len(cats)] for i in range(n)], dtype=object)
    y = np.arange(n) % n_classes
    return pd.DataFrame(cols, columns=[*numeric, *roles.categorical]), (y.astype(float)
                                                        if pre.task_ == "regression" else y)
