"""One path from a table to training tensors, used by the tuner, panda, the model and the
estimators: split the rows, fit the preprocessor on the training rows only, make tensors.

The same inputs give the same split and matrices (the split and the preprocessor are seeded),
which is what makes resuming a run exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from caviar.data.preprocess import TablePreprocessor
from caviar.data.table import drop_missing_target, infer_task, split_frame

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PreparedTable:
    """A table split and preprocessed for training. ``train``, ``validation`` and ``test``
    are the raw rows (the test rows stay raw: the model scores them from the table);
    the tensors hold the preprocessed training and validation rows (validation ones are None
    when there are no validation rows)."""

    preprocessor: TablePreprocessor
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor | None
    y_val: torch.Tensor | None
    seed: int

    @property
    def task(self) -> str:
        return self.preprocessor.task_

    @property
    def n_classes(self) -> int | None:
        return None if self.task == "regression" else len(self.preprocessor.classes_)

    @property
    def target_std(self) -> float | None:
        """The regression target's scale (RMSEs × this are in the target's units)."""
        return self.preprocessor.target_std_ if self.task == "regression" else None

    @property
    def split(self) -> dict[str, int]:
        return {"seed": self.seed, "train_rows": len(self.train),
                "val_rows": len(self.validation), "test_rows": len(self.test)}


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
            val_size: float = 0.2, test_size: float = 0.2,
            validation: pd.DataFrame | None = None,
            test: pd.DataFrame | None = None) -> PreparedTable:
    """Split ``table`` (shares of all rows, stratified for classifiers), fit the preprocessor
    on the training rows only, and make the tensors.

    ``validation`` and ``test``, when given, are used as they are instead of rows carved from
    ``table`` (their rows with a missing target are dropped). Either share may be 0 (no such
    rows)."""
    table = drop_missing_target(table, target)
    task = infer_task(table[target], task)
    carve_val = 0.0 if validation is not None else val_size
    carve_test = 0.0 if test is not None else test_size
    if carve_val or carve_test:
        train, carved_val, carved_test = split_frame(table, target, task, test_size=carve_test,
                                                     val_size=carve_val, seed=seed)
    else:
        train, carved_val, carved_test = table, table.iloc[:0], table.iloc[:0]
    validation = (carved_val if validation is None
                  else drop_missing_target(validation, target))
    test = carved_test if test is None else drop_missing_target(test, target)

    pre = TablePreprocessor(target=target, task=task, categorical=categorical, drop=drop,
                            random_state=seed)
    X_train, y_train = as_tensors(pre.fit_transform(train), pre.encode_target(train[target]),
                                  pre.task_)
    X_val = y_val = None
    if len(validation):
        X_val, y_val = as_tensors(pre.transform(validation),
                                  pre.encode_target(validation[target]), pre.task_)
    return PreparedTable(pre, train, validation, test, X_train, y_train, X_val, y_val, seed)

