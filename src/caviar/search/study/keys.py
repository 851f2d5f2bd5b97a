"""The keys a caviar study stores, named once: the tuner, the coarse-to-fine sampler and the
leaderboard write or read them here, and so does the report (``caviar.report.source``).

Everything caviar stores is an Optuna *user* attribute, of the study (what the run was and
what it found) or of a trial. User attributes are Optuna's public place for a user's data
(Optuna 5 keeps system attributes for itself: ``Trial.set_system_attr`` is gone) and the ones
optuna-dashboard shows.

This module imports nothing, so the archive's writer process and the report stay light.
"""

from __future__ import annotations

from typing import Any

# -- the study's user attributes ------------------------------------------------------------

TASK = "task"  # "binary", "multiclass" or "regression"
METRIC = "metric"  # the validation score's history key: "val_log_loss", "val_rmse", "val_auc"
DIRECTION = "direction"  # "minimize" (a loss) or "maximize" (AUC, accuracy, R²)
SAMPLER = "sampler"  # the sampler's name, as given to tune()
PRUNER = "pruner"  # "asha", "median" or "none"
SPACE = "space"  # the search space, Space.to_dict(); read it back with Space.from_dict
DATA = "data"  # source, rows, columns, target, task, roles (by column), split
ELAPSED_S = "elapsed_s"  # seconds all runs of the study have spent (the time budget counts them)
BOXES = "c2f_boxes"  # coarse to fine: one record per round (see CoarseToFineSampler)
# numeric="auto": {"scaling": the one chosen, "from_trial": the first trial asked after the
# choice, "best": the best validation score of the warm-start networks of each scaling}
SCALING = "numeric_scaling"
# other processes kept the cores busy, so the search trained on one thread from then on
# (Tuner.share_busy_cores): {"elapsed_s": when, "wait_share": the main thread's wait for a core
# over its running}
BUSY = "busy_machine"
BEST = "best"  # the model a run kept: the fields below, written when the run ends
SPLIT_SEED = "split_seed"  # the seed that split the rows (a resumed or joined run must match)
FINGERPRINT = "data_sha256"  # sha256 of the table as read (store.fingerprint)
SPEC = "worker_spec"  # what a worker needs to join: data path, target, space, seed, ...
SCHEDULER = "scheduler"  # "pbt" for population-based training (absent: the default tuner)
PBT = "pbt"  # PBT's settings: interval, epochs, truncation (studies before workers: populations)
# PBT: one attribute per population, its id after the prefix ("pbt_population:w1-3.0"):
# {"id", "structure", "members", "events": the copies}. Each is written once, by the worker
# that trained it, so workers never overwrite each other's lineage.
PBT_POPULATION = "pbt_population:"

# the fields of BEST
BEST_TRIAL = "trial"  # the trial of the model's best network
BEST_VALUE = "value"  # its validation score
HYPERPARAMETERS = "hyperparameters"  # its configuration (also a trial attribute, below)
MEMBERS = "members"  # the networks the model averages: [{"trial", "value", "epoch"}, ...]
TEST_SCORES = "test_scores"  # the model's scores on the held-out test rows
BEST_NETWORK_TEST_SCORES = "best_network_test_scores"  # the best network's alone
TEST_WEIGHT = "test_weight"  # the column that weights the test scores (--weight), if any
# a constant prediction's test scores (PreparedTable.constant_outputs)
CONSTANT_TEST_SCORES = "constant_test_scores"
CONFUSION_MATRIX = "confusion_matrix"  # classifiers: {"labels": [...], "matrix": [[...]]}
# permutation importance of the model's columns on the test rows: {"metric", "baseline",
# "rows", "repeats", "columns": [{"column", "importance_mean", "importance_std"}, ...]}
FEATURE_IMPORTANCE = "feature_importance"

# -- a trial's user attributes ----------------------------------------------------------------

# HYPERPARAMETERS: the resolved configuration it trained, in caviar's names
CURVE = "curve"  # one dict per epoch: epoch, train_/val_ loss and metrics (RMSE in target units)
DURATION_S = "duration_s"  # seconds from joining a population to finishing
FAILURE = "failure"  # why it failed: diverged, invalid hyperparameters, interrupted
STOPPED = "stopped"  # why it was stopped while running ("time budget"); its state is PRUNED
ROUND = "c2f_round"  # the coarse-to-fine round it was drawn in (0 is the coarse round)
WORKER = "worker"  # the process that ran it: "host:pid"
WARM = "warm_start"  # True: a known-good network of the warm start (samplers.warm_start)
# True: the warm start's estimators' network, which trains first when a short budget would
# end it before its turns do (scheduler.Tuner.behind)
FIRST = "estimators_network"
# True: a warm-start network that trains to the end of its schedule, not stopped at a plateau
# of its validation score (samplers.FULL_SCHEDULE)
FULL_SCHEDULE = "full_schedule"
# a warm-start trial's values of hyperparameters its space does not name, {name: value}:
# its configuration is what the space draws updated by these (samplers.QueuedTrial)
OUTSIDE_SPACE = "outside_space"
NETWORK = "network"  # its best-epoch network, a candidate for the model: {"value", "epoch",
# "stopped"}; the network itself is the trial's Optuna artifact (study.artifacts)
# PBT: the member's id, "round.population.slot" ("w1-round.population.slot" from worker 1)
PBT_MEMBER = "pbt_member"
# PBT: the segments its network trained, [{"epoch", "member", "copied_from",
# "hyperparameters"}, ...], inherited ones included; the trial's params are the final values
PBT_SCHEDULE = "pbt_schedule"


def trial_round(trial: Any) -> int | None:
    """The coarse-to-fine round a trial (an Optuna ``FrozenTrial``) was drawn in, or None.

    Studies written before caviar stored the round as a user attribute hold it as a system
    attribute; it is read from there too, so that they resume and report the same."""
    value = trial.user_attrs.get(ROUND)
    if value is None:
        value = trial.system_attrs.get(ROUND)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def pbt_lineage(attrs: dict[str, Any]) -> dict[str, Any]:
    """A PBT study's lineage from its user attributes ``attrs``: the settings and every
    population (every worker's, in order of worker and round); empty if not PBT.

    Example:
        >>> pbt_lineage({"pbt": {"interval": 4}, "pbt_population:w1-0.0": {"id": "w1-0.0"},
        ...              "pbt_population:1.0": {"id": "1.0"}, "pbt_population:0.1": {"id": "0.1"}})
        {'interval': 4, 'populations': [{'id': '0.1'}, {'id': '1.0'}, {'id': 'w1-0.0'}]}
    """
    settings = attrs.get(PBT)
    if not isinstance(settings, dict):
        return {}
    populations = [p for p in settings.get("populations", []) if isinstance(p, dict)]
    populations += [v for k, v in attrs.items()
                    if k.startswith(PBT_POPULATION) and isinstance(v, dict)]
    return {**settings, "populations": sorted(populations, key=_population_order)}


def _population_order(population: dict[str, Any]) -> tuple[str, int, int]:
    """("w1", 3, 0) for "w1-3.0": by worker, then round, then population."""
    prefix, _, rest = str(population.get("id", "")).rpartition("-")
    numbers = [int(n) if n.isdigit() else 0 for n in rest.split(".")] + [0, 0]
    return prefix, numbers[0], numbers[1]
