"""One path from a table to training tensors, used by the tuner, panda, the model and the
estimators: split the rows, fit the preprocessor on the training rows only, make tensors.

The same inputs give the same split and matrices (the split and the preprocessor are seeded),
which is what makes resuming a run exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from caviar.data.errors import DataError
from caviar.data.numbers import to_numbers
from caviar.data.preprocess import NUMERIC, TablePreprocessor
from caviar.data.roles import check_names, drop_missing_target, infer_task
from caviar.data.splits import group_split, split_frame, time_split
from caviar.hyperparams import NUMERIC_READS, scalings_read

if TYPE_CHECKING:
    import torch

    from caviar.engine.network import InputLayout
    from caviar.metrics import Metric, ValidationScorer

# The validation rows a search chooses by: a fifth of the table, but no more than
# VALIDATION_ROWS once a fifth is more, and at least 2% (AutoGluon's holdout when it tunes,
# min(0.2, 2·max(0.01, min(0.1, 2500/n)))). Past a few thousand rows the validation score's
# standard error is small beside the gaps between the configurations it ranks, and the rows
# are worth more to the networks' training (bench/README.md, "Validation rows"). One network's
# early stopping (the estimators) holds back half of it, AutoGluon's holdout when it does not
# tune: 10% up to 25,000 rows (scikit-learn's default), then 2,500 rows, at least 1%
# (bench/README.md, "The estimators' validation rows").
VALIDATION_ROWS = 5000


def validation_share(rows: int, tuning: bool = True) -> float:
    """The share of ``rows`` rows held back for validation by default: with ``tuning`` (what
    ``prepare`` carves for a search) 0.2 up to 25,000 rows, then VALIDATION_ROWS rows, never
    under 2%; without (one network's early stopping) half of that.

    >>> validation_share(10_000), validation_share(50_000), validation_share(1_000_000)
    (0.2, 0.1, 0.02)
    >>> validation_share(10_000, tuning=False), validation_share(50_000, tuning=False)
    (0.1, 0.05)
    """
    share = max(0.02, min(0.2, VALIDATION_ROWS / max(rows, 1)))
    return share if tuning else share / 2


@dataclass(frozen=True)
class PreparedTable:
    """A table split and preprocessed for training. ``train``, ``validation`` and ``test``
    are the raw rows (the test rows stay raw: the model scores them from the table);
    the tensors hold the preprocessed training and validation rows (validation ones are None
    when there are no validation rows). ``w_train``, ``w_val`` and ``w_test`` are the rows'
    weights (None: unweighted): the training ones normalized to mean 1, what the weighted loss
    expects; the validation and test ones as given (they weight the scores);
    ``how`` says how the rows were split ("random", "time:COL", "group:COL", "given")."""

    preprocessor: TablePreprocessor
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor | None
    y_val: torch.Tensor | None
    seed: int
    w_train: torch.Tensor | None = None
    w_val: torch.Tensor | None = None
    how: str = "random"
    w_test: torch.Tensor | None = None

    @property
    def task(self) -> str:
        return self.preprocessor.task_

    @property
    def n_classes(self) -> int | None:
        return None if self.task == "regression" else len(self.preprocessor.classes_)

    @property
    def inputs(self) -> InputLayout:
        """What the columns of X are (which hold categorical codes), for
        ``Population(task, prepared.inputs, ...)``: code columns are never read as numbers,
        and members with ``encoding="embedding"`` embed them."""
        from caviar.engine.network import inputs_from

        return inputs_from(self.preprocessor)

    @cached_property
    def test_inputs(self) -> np.ndarray:
        """The test rows as the preprocessor makes them, made once: the end of a run reads
        them for the model's test scores, its best network's alone and a classifier's
        confusion matrix (on a million rows' 200,000 test rows each making took 2 s)."""
        return self.preprocessor.transform(self.test, warn_unseen=False)

    @property
    def target_std(self) -> float | None:
        """The regression target's scale (RMSEs × this are in the target's units)."""
        return self.preprocessor.target_std_ if self.task == "regression" else None

    @property
    def target_mean(self) -> float:
        """The regression target's mean (0 for classifiers)."""
        return self.preprocessor.target_mean_ if self.task == "regression" else 0.0

    def validation_scorer(self, metric: Metric | None = None) -> ValidationScorer:
        """The scorer of predictions for the validation rows by ``metric`` (None: the default
        loss), in the target's units and weighted when the rows are."""
        from caviar.metrics import ValidationScorer, get_metric

        return ValidationScorer(metric or get_metric(None, self.task), self.y_val, self.task,
                                self.target_std, self.target_mean, self.w_val)

    def constant_outputs(self, rows: int) -> np.ndarray:
        """What a model that ignores every column outputs for ``rows`` rows: the training
        rows' (weighted) class shares, or their (weighted) mean target, in the networks'
        output form (probabilities, or standardized values). Scored on the test rows, these
        say what the columns add: a model no better has learned nothing that holds."""
        y = self.y_train.numpy().astype(np.float64)
        w = None if self.w_train is None else self.w_train.numpy()
        if self.task == "regression":
            return np.full((rows, 1), np.average(y.reshape(len(y), -1)[:, 0], weights=w))
        shares = np.bincount(y.astype(np.int64), weights=w, minlength=self.n_classes)
        return np.tile(shares / shares.sum(), (rows, 1))

    @property
    def split(self) -> dict[str, int | str]:
        out = {"seed": self.seed, "train_rows": len(self.train),
               "val_rows": len(self.validation), "test_rows": len(self.test)}
        return out | ({"how": self.how} if self.how != "random" else {})


def as_tensors(X: np.ndarray, y: np.ndarray | None = None, task: str = "regression"
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 inputs; int64 class indices for multiclass, float32 targets otherwise."""
    import torch  # here, so that reading and preprocessing tables never imports torch

    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    if y is None:
        return X_t, None
    dtype = np.int64 if task == "multiclass" else np.float32
    return X_t, torch.from_numpy(np.ascontiguousarray(y, dtype=dtype))


def prepare(table: pd.DataFrame, target: str, *, task: str | None = None,
            categorical: Sequence[str] = (), drop: Sequence[str] = (), seed: int = 0,
            val_size: float | None = None, test_size: float = 0.2,
            validation: pd.DataFrame | None = None,
            test: pd.DataFrame | None = None, split: str | None = None,
            group: str | None = None, weight: str | None = None,
            class_weight: str | Mapping | None = None,
            max_onehot: int | None = None, numeric: str | Sequence[str] = NUMERIC[0],
            codes: bool = True) -> PreparedTable:
    """Split ``table`` (shares of all rows, stratified for classifiers), fit the preprocessor
    on the training rows only, and make the tensors. ``val_size`` None: the table's
    ``validation_share`` (a fifth, at most VALIDATION_ROWS rows on a large table).

    ``validation`` and ``test``, when given, are used as they are instead of rows carved from
    ``table`` (their rows with a missing target are dropped). Either share may be 0 (no such
    rows). ``split="time:COL"`` sorts by COL and trains on the earliest rows, validates on the
    next and tests on the latest (no shuffling); ``group=COL`` keeps each value of COL in one
    part only (the column is then not a feature: the model meets new groups).

    ``weight=COL``: the rows' weights (not a feature); they weight the training loss and the
    validation score. ``class_weight="balanced"`` (or ``{label: weight}``) multiplies the
    training weights by n / (k · n_class), as scikit-learn does; it does not weight the
    validation score (choose a metric for that, such as balanced_accuracy).
    ``max_onehot``: categoricals with more levels are target-encoded (None: the measured
    rule, ``caviar.data.roles.onehot_limit``). ``numeric``: how numeric columns are scaled,
    ``"robust"`` (median and IQR, smoothly clipped to ±3), ``"asinh"`` (median and IQR, then
    asinh), ``"quantile"`` (to a normal) or
    ``"standard"``, ``"robust-or-quantile"`` (robust, quantile for a heavy-tailed column:
    ``RobustOrQuantileScaler``) (``TablePreprocessor``'s ``numeric``), ``"robust+quantile"``
    (the two blocks, for networks that read both); several (a tune searching the
    scaling): the first scales the table, and the others are added as alternative blocks
    (``numeric_alternatives``) for networks that ask for them. ``codes``: the categoricals of more
    than two levels also get a column of integer codes, for networks that embed them
    (``inputs`` says which columns those are)."""
    if isinstance(numeric, str) and numeric not in NUMERIC_READS:
        raise DataError(f"numeric must be one of {', '.join(NUMERIC_READS)}, got {numeric!r}")
    scalings = list(scalings_read(numeric)) if isinstance(numeric, str) else list(numeric)
    if not scalings:
        raise DataError(f"numeric names no scaling; choose one of {', '.join(NUMERIC)}")
    table = drop_missing_target(table, target)
    task = infer_task(table[target], task)
    time_column = _time_column(split)
    if time_column is not None and group is not None:
        raise DataError("choose a time split or a group split, not both (split=time:COL, "
                        "group=COL)")
    for column, argument in ((time_column, "split"), (group, "group"), (weight, "weight")):
        check_names(table, [column] if column else [], argument, target)
    if weight:  # every row's, before a split: the error counts the table's bad values
        row_weights(table, weight)
    not_features = [c for c in (group, weight) if c]
    if val_size is None:
        val_size = validation_share(len(table))
    carve_val = 0.0 if validation is not None else val_size
    carve_test = 0.0 if test is not None else test_size
    how = "given" if validation is not None and test is not None else "random"
    if carve_val or carve_test:
        if time_column is not None:
            train, carved_val, carved_test = time_split(table, time_column, carve_test,
                                                        carve_val)
            how = f"time:{time_column}"
        elif group is not None:
            train, carved_val, carved_test = group_split(table, group, carve_test, carve_val,
                                                         seed)
            how = f"group:{group}"
        else:
            train, carved_val, carved_test = split_frame(table, target, task,
                                                         test_size=carve_test,
                                                         val_size=carve_val, seed=seed)
    else:
        train, carved_val, carved_test = table, table.iloc[:0], table.iloc[:0]
    if len(train) < 2:  # else the target check below would blame one training row on the table
        raise DataError(f"the table has too few rows ({len(table)}) to train on: "
                        f"{len(carved_val)} go to validation and {len(carved_test)} to testing, "
                        f"leaving {len(train)}; use a larger table")
    validation = (carved_val if validation is None
                  else drop_missing_target(validation, target))
    test = carved_test if test is None else drop_missing_target(test, target)

    pre = TablePreprocessor(target=target, task=task, categorical=categorical,
                            drop=[*drop, *(c for c in not_features if c not in drop)],
                            max_onehot=max_onehot, numeric=scalings[0],
                            numeric_alternatives=tuple(scalings[1:]), random_state=seed,
                            codes=codes)
    X_train, y_train = as_tensors(pre.fit_transform(train), pre.encode_target(train[target]),
                                  pre.task_)
    for col, why in ((group, "the group column (group=...)"),
                     (weight, "the weight column (weight=...)")):
        if col and col in pre.roles_.ignored:
            pre.roles_.ignored[col] = why
    X_val = y_val = None
    if len(validation):
        X_val, y_val = as_tensors(pre.transform(validation),
                                  pre.encode_target(validation[target]), pre.task_)
    w_train = _train_weights(train, weight, class_weight, y_train, pre)
    w_val = row_weights(validation, weight) if weight and len(validation) else None
    w_test = row_weights(test, weight) if weight and len(test) else None
    return PreparedTable(pre, train, validation, test, X_train, y_train, X_val, y_val, seed,
                         w_train=w_train, w_val=w_val, how=how, w_test=w_test)


def _time_column(split: str | None) -> str | None:
    """``"time:COL"`` → ``"COL"``; None or ``"random"`` → None."""
    if split is None or split == "random":
        return None
    kind, sep, column = split.partition(":")
    if kind.strip() != "time" or not sep or not column.strip():
        raise DataError(f"unknown split {split!r}; use time:COL (train on the past, validate "
                        "and test on the future) or random (for groups, use group=COL)")
    return column.strip()


def row_weights(frame: pd.DataFrame, column: str) -> torch.Tensor:
    """The weight column of ``frame`` as float32; DataError unless its values are finite
    numbers ≥ 0, not all zero."""
    import torch

    if column not in frame.columns:
        raise DataError(f"the weight column {column!r} is missing from a table; add it "
                        "(validation and test files need it too, and rows scored with it) "
                        "or name another")
    values = to_numbers(frame[column]).to_numpy()
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        shown = frame[column].iloc[int(np.flatnonzero(bad)[0])]
        shown = shown.item() if isinstance(shown, np.generic) else shown  # -1.0, not np.float64
        raise DataError(f"the weight column {column!r} must hold numbers >= 0, but has "
                        f"{int(bad.sum())} other value(s), such as {shown!r}; fix or drop "
                        "those rows")
    if values.sum() <= 0:
        raise DataError(f"the weight column {column!r} is all zeros in {len(frame)} rows; "
                        "nothing to learn from or score there: give some of them weight")
    return torch.from_numpy(values.astype(np.float32))


def _train_weights(train: pd.DataFrame, weight: str | None, class_weight: str | Mapping | None,
                   y: torch.Tensor, pre: TablePreprocessor) -> torch.Tensor | None:
    """The training rows' weights (column × class weight), normalized to mean 1, or None.

    Mean 1 keeps the weighted cost Σ wᵢLᵢ / m on the scale of the unweighted one, so learning
    rates and the L2 term mean what they did (and weights all equal change nothing)."""
    import torch

    if weight is None and class_weight is None:
        return None
    w = row_weights(train, weight) if weight else torch.ones(len(train))
    if class_weight is not None:
        if pre.task_ == "regression":
            raise DataError("class_weight applies to classifiers; for a regression target "
                            "use a weight column (weight=COL)")
        w = w * _class_weights(class_weight, y, pre)
    if float(w.sum()) <= 0:
        raise DataError("the weights of the training rows are all zero; nothing to learn from")
    return (w / w.mean()).to(torch.float32)


def _class_weights(class_weight: str | Mapping, y: torch.Tensor, pre: TablePreprocessor
                   ) -> torch.Tensor:
    """Each row's class weight: "balanced" gives n / (k · n_class) (scikit-learn's), a
    mapping gives {label: weight} (classes it leaves out weigh 1)."""
    import torch

    index = y.long()
    k = len(pre.classes_)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise DataError(f"unknown class_weight {class_weight!r}; use balanced (or a "
                            "{class: weight} mapping)")
        counts = torch.bincount(index, minlength=k).to(torch.float64)
        per_class = len(index) / (k * counts.clamp_min(1))
    else:
        labels = [str(c) for c in pre.classes_.tolist()]
        unknown = [c for c in class_weight if str(c) not in labels]
        if unknown:
            raise DataError(f"class_weight names class {unknown[0]!r}, not in the target; "
                            f"classes: {', '.join(labels)}")
        given = {str(c): float(v) for c, v in class_weight.items()}
        per_class = torch.tensor([given.get(c, 1.0) for c in labels], dtype=torch.float64)
    return per_class[index].to(torch.float32)
