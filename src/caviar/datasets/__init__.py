"""Small real tables bundled with caviar, for examples, tests and benchmarks.

Each file is a gzip-compressed CSV exactly as published; ``PROVENANCE.md`` next to them says
where each comes from, its license, and the mess in it (row-index columns, a target leak,
missing values). They are returned raw: :func:`caviar.data.infer_roles` is what sorts the
columns out.

>>> from caviar.datasets import list_datasets, load_dataset
>>> list_datasets()  # doctest: +NORMALIZE_WHITESPACE
['baseball', 'default', 'diamonds', 'hi', 'hpc_data', 'loans_full_schema', 'snmesp',
 'txhousing', 'wage']
>>> load_dataset("default").shape
(10000, 4)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

__all__ = ["list_datasets", "load_dataset", "dataset_path"]

_SUFFIX = ".csv.gz"


def list_datasets() -> list[str]:
    """The names of the bundled datasets, sorted."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[: -len(_SUFFIX)] for f in files if f.name.endswith(_SUFFIX))


def dataset_path(name: str) -> Path:
    """The path of the bundled file for ``name``; ValueError naming the known ones if unknown.

    >>> dataset_path("wage").name
    'wage.csv.gz'
    """
    known = list_datasets()
    if name not in known:
        from caviar.hyperparams import close_names

        raise ValueError(
            f"unknown dataset {name!r}{close_names(name, known)}; known: {', '.join(known)}"
        )
    return Path(str(resources.files(__name__) / f"{name}{_SUFFIX}"))


def load_dataset(name: str) -> pd.DataFrame:
    """The bundled dataset ``name`` as a DataFrame, exactly as published (no cleaning).

    >>> df = load_dataset("wage")
    >>> df["wage"].dtype
    dtype('float64')
    """
    return pd.read_csv(dataset_path(name))
