"""What a worker needs to join a study: stored in the study (``keys.SPEC``) by the run that
made it, so ``caviar worker`` on any machine needs only the storage and the study's name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerSpec:
    """The study a worker trains for, and how (JSON-able, for other processes and machines).

    ``data`` must be reachable at the same path from every worker (or overridden);
    ``artifacts``: the directory of the networks' artifact store, shared by all workers;
    ``out``: where a worker keeps its journal (local to its machine)."""

    data: str
    target: str
    storage: str
    study_name: str
    out: str
    artifacts: str
    seed: int = 0
    population: int = 32
    sampler: str = "coarse-to-fine"
    pruner: str = "asha"
    space: dict[str, Any] = field(default_factory=dict)
    trials: int | None = None
    time_budget: float | None = None
    trials_per_structure: int | None = None
    ensemble: int = 5
    task: str | None = None
    categorical: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    threads: int | None = None  # torch threads per worker (None: torch's default)
    scheduler: str = "asha"  # or "pbt" (one process: search/pbt.py)
    pbt_interval: int | None = None
    pbt_coarse: float | None = None  # None: budget.COARSE_SHARE
    metric: str | None = None  # None: the default loss (caviar.metrics)
    validation: str | None = None  # a table of validation rows (a path every worker reads)
    test: str | None = None
    split: str | None = None  # "time:COL"
    group: str | None = None
    weight: str | None = None
    class_weight: str | dict[str, float] | None = None
    max_onehot: int | None = None
    # the numeric scalings the networks may read, the table's own first (``Space.scalings``;
    # caviar.data.NUMERIC[0] written out: this module imports no data code)
    numeric: list[str] = field(default_factory=lambda: ["robust"])
    # numeric="auto": the warm start's networks choose among ``numeric`` (search.scaling)
    choose_scaling: bool = False
    # whether worker 0 starts the study from the known-good networks (samplers.warm_start):
    # the study had no trials when the run began (the coordinator decides, not a worker)
    warm_start: bool = True
    device: str = "cpu"  # "cpu", "cuda" or "auto", resolved by each worker on its machine
    report: bool = True  # whether the run's end writes the report (its time is held back)

    def prepare_options(self) -> dict[str, Any]:
        """The keyword arguments of ``caviar.data.prepare`` this spec fixes (every worker
        splits and weights the rows alike)."""
        from ..data import read_table

        return {"task": self.task, "categorical": self.categorical, "drop": self.drop,
                "seed": self.seed, "split": self.split, "group": self.group,
                "weight": self.weight, "class_weight": self.class_weight,
                "max_onehot": self.max_onehot, "numeric": self.numeric,
                "validation": None if self.validation is None else read_table(self.validation),
                "test": None if self.test is None else read_table(self.test)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> WorkerSpec:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
