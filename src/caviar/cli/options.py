"""What the commands share: the table options of ``train`` and ``tune``, the choices, and the
parsing of option values (``--set KEY=VALUE``, ``--drop a,b``, ``--time-budget 10m``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from caviar.hyperparams import help_text


class Task(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class SamplerName(str, Enum):
    random = "random"
    grid = "grid"
    coarse_to_fine = "coarse-to-fine"
    tpe = "tpe"


class PrunerName(str, Enum):
    asha = "asha"
    median = "median"
    none = "none"


class SchedulerName(str, Enum):
    asha = "asha"
    pbt = "pbt"


class RefitName(str, Enum):
    none = "none"
    train_valid = "train+valid"
    bag = "bag"
    all = "all"


class Numeric(str, Enum):
    robust = "robust"
    asinh = "asinh"
    quantile = "quantile"
    standard = "standard"
    robust_quantile = "robust+quantile"
    robust_or_quantile = "robust-or-quantile"
    auto = "auto"  # tune only
    search = "search"  # tune only


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


# The help texts are rendered as Markdown (the app's rich_markup_mode): no <...>, which
# Markdown takes for HTML and drops, and no Rich [tags], which it prints as they are.
SET_HELP = ("A hyperparameter, KEY=VALUE; repeat for more. Values are JSON when they parse "
            "(3e-4, true, [64,64]), comma lists (hidden_layer_sizes=64,64), else text "
            "(optimizer=adamw). " + help_text())
CATEGORICAL_HELP = ("Columns to treat as categorical (e.g. integer codes), comma-separated; "
                    "may be repeated.")
DROP_HELP = "Columns to leave out (e.g. an ID or a target leak), comma-separated; may be repeated."
TASK_HELP = "The task; inferred from the target column when left out."

# the table options `train` and `tune` share
DataArgument = Annotated[str, typer.Argument(
    metavar="DATA", show_default=False,
    help="The table: a CSV (also .csv.gz), TSV, Parquet or Excel (.xlsx) file.")]
TargetOption = Annotated[str, typer.Option("--target", "-t", show_default=False,
                                           help="The column to predict.")]
TaskOption = Annotated[Task, typer.Option("--task", show_default=False, help=TASK_HELP)]
CategoricalOption = Annotated[list[str], typer.Option("--categorical", metavar="COLS",
                                                      show_default=False, help=CATEGORICAL_HELP)]
DropOption = Annotated[list[str], typer.Option("--drop", metavar="COLS", show_default=False,
                                               help=DROP_HELP)]
DeviceOption = Annotated[Device, typer.Option(
    "--device", help="Where the networks train: cpu, cuda (a GPU) or auto (CUDA when "
                     "available). The preprocessing stays on the CPU; models load on either.")]

# how rows are split and weighted (`train` and `tune`)
SplitOption = Annotated[str, typer.Option(
    "--split", metavar="time:COL", show_default=False,
    help="time:COL sorts the rows by COL (a date or a number) and trains on the past, "
         "validates and tests on the future, without shuffling. Default: a random split.")]
GroupOption = Annotated[str, typer.Option(
    "--group", metavar="COL", show_default=False,
    help="No value of COL (a firm, a patient) is in two of train/validation/test; COL is "
         "then not a feature.")]
WeightOption = Annotated[str, typer.Option(
    "--weight", metavar="COL", show_default=False,
    help="Row weights (not a feature): they weight the training loss and the validation "
         "score.")]
MaxOnehotOption = Annotated[int, typer.Option(
    "--max-onehot", metavar="N", min=1, show_default=False,
    help="One-hot categoricals with at most N levels, target-encode those with more (default: "
         "max(10, min(training rows / 4, 1000)): one-hot while levels have 4 rows each).")]
NumericOption = Annotated[Numeric, typer.Option(
    "--numeric", show_default=False,
    help="How numeric columns are scaled: robust (median and IQR, smoothly clipped to +-3: "
         "heavy tails stay bounded), asinh (median and IQR, then asinh: tails logarithmic, "
         "so large values keep their order and ratios), quantile (to a normal by the "
         "training rows' quantiles: may suit skewed counts), standard (mean and standard "
         "deviation), robust+quantile (each column read both ways), robust-or-quantile (robust, "
         "but quantile for a column with over 5% of its rows beyond the clip) or, for tune, auto "
         "(robust and quantile tried on the known-good networks, the search going on with "
         "the better) or search (robust and quantile, one per population). "
         "Default: robust (train: --set numeric=..., else robust).")]
ClassWeightOption = Annotated[str, typer.Option(
    "--class-weight", metavar="balanced", show_default=False,
    help="balanced: weigh each class n / (k * n_class) in the training loss (classifiers).")]


def columns(values: Sequence[str] | None) -> list[str]:
    """``--drop a,b --drop c`` → ``["a", "b", "c"]``."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def _value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true/false, null, lists), a list for
    comma-separated values, else the string itself."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if "," in text:
        return [_value(part) for part in text.strip("[]()").split(",") if part.strip()]
    return text


def parse_sets(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["learning_rate=1e-3", "hidden_layer_sizes=64,64"]`` → a hyperparameter dict.

    A pair without ``=`` is a usage error (exit code 2); an unknown name or a bad value is a
    ValueError naming the close names (exit code 1). The one place ``--set`` is read."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. learning_rate=3e-4)",
                                     param_hint="'--set'")
        value = _value(text)
        if key == "hidden_layer_sizes" and isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        out[key] = value
    return out  # validated once, by the run it starts (before any work)


def parse_duration(text: str | None) -> float | None:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"`` → seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], None)
    number = raw[:-1] if scale else raw
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 600, 90s, 10m or 1.5h",
                                 param_hint="'--time-budget'") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise typer.BadParameter(f"{text!r} must be a positive duration",
                                 param_hint="'--time-budget'")
    return seconds


def free_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no run yet."""
    if not (base / "run.json").exists():
        return base
    n = 2
    while (base.with_name(f"{base.name}-{n}") / "run.json").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")
