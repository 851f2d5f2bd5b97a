"""Tables in, tensors out: reading tables, the task, column roles, splits, preprocessing,
and ``prepare``, the one path from a table to training tensors.

>>> from caviar.data import TablePreprocessor, infer_roles, read_table, split_frame
"""

from caviar.data.errors import DataError
from caviar.data.numbers import nested_kind, to_numbers
from caviar.data.prepare import PreparedTable, as_tensors, prepare, row_weights
from caviar.data.preprocess import NUMERIC, TablePreprocessor, make_target_encoder
from caviar.data.read import read_table
from caviar.data.roles import (
    MAX_ONEHOT_LEVELS,
    MISSING_LEVEL,
    Roles,
    check_target,
    drop_missing_target,
    infer_roles,
    infer_task,
)
from caviar.data.splits import split_frame

__all__ = [
    "DataError",
    "MAX_ONEHOT_LEVELS",
    "MISSING_LEVEL",
    "NUMERIC",
    "PreparedTable",
    "Roles",
    "TablePreprocessor",
    "as_tensors",
    "check_target",
    "drop_missing_target",
    "infer_roles",
    "infer_task",
    "make_target_encoder",
    "nested_kind",
    "prepare",
    "read_table",
    "row_weights",
    "split_frame",
    "to_numbers",
]
