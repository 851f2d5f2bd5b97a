"""``tune()``: read the table, open the study, run the scheduler, keep the model.

It wires the parts: the data (``caviar.data.prepare``), the study and its archive
(``study``), the sampler and pruner over an in-memory working copy, the scheduler
(``scheduler.Tuner``) and the kept model (``ensemble``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ..data import check_target, infer_task, prepare, read_table
from ..files import jsonable, replace_file
from ..metrics import ValidationScorer, get_metric
from ..model import CaviarModel
from ..training import train_network
from .samplers import make_sampler, sampler_key
from .scheduler import Budget, TuneProgress, Tuner, make_pruner, structure_quota
from .space import Space, default_space
from .study import keys
from .study.archive import TrialArchive
from .study.store import elapsed, leaderboard, open_study, record_run, saved_model, working_copy

__all__ = ["TuneProgress", "TuneResult", "tune"]


@dataclass
class TuneResult:
    """What ``tune`` returns: the (database) study, the model and where they are."""

    study: optuna.Study
    model: CaviarModel
    out: Path
    model_dir: Path
    leaderboard: pd.DataFrame
    test_scores: dict[str, float]
    storage: str
    study_name: str
    extra: dict[str, Any] = field(default_factory=dict)


def tune(data: pd.DataFrame | str | Path, target: str, *, time_budget: float | None = None,
         trials: int | None = None, population: int = 32, sampler: str = "coarse-to-fine",
         pruner: str = "asha", space: Space | str | Path | Mapping | None = None,
         storage: str | None = None, study_name: str | None = None,
         out: str | Path = "runs/tune", seed: int = 0, categorical: Sequence[str] = (),
         drop: Sequence[str] = (), task: str | None = None,
         trials_per_structure: int | None = None, ensemble: int = 5,
         on_progress: Callable[[TuneProgress], None] | None = None,
         metric: str | None = None, validation: pd.DataFrame | str | Path | None = None,
         test: pd.DataFrame | str | Path | None = None, split: str | None = None,
         group: str | None = None, weight: str | None = None,
         class_weight: str | Mapping | None = None, verbose: bool = False) -> TuneResult:
    """Tune a network for ``target`` on a table, many trials at once.

    Args:
        data: a CSV/Parquet path or a DataFrame.
        target: the column to predict.
        time_budget: seconds for the whole study (resumed runs count what they spent).
        trials: the number of trials for the whole study (same).
            With neither budget, 64 trials.
        population: how many trials train at once.
        sampler: "random", "grid", "coarse-to-fine" or "tpe".
        pruner: "asha" (successive halving), "median" or "none".
        space: a ``Space``, a TOML file, a dict, or None for ``default_space()``.
        storage, study_name: an Optuna storage URL (default SQLite in ``out``) and study name
            (default "<data name>-<target>"). The same study is resumed when it exists.
        out: the run directory: ``model/``, ``leaderboard.csv``, ``run.json``, ``study.db``.
        seed: seeds the data split, the sampler and the networks.
        trials_per_structure: trials a population of one structure takes before it drains
            (default 2 × population).
        ensemble: the model averages the predictions of this many networks, those with the
            best validation scores (1: the best network alone).
        on_progress: called with a ``TuneProgress`` after every epoch.
        metric: what the search optimizes, the pruner sees and the kept networks are ranked
            and chosen by: a short name ("auc", "accuracy", "f1", "log_loss", "rmse", "mae",
            "r2", ...) or a scikit-learn scorer name ("roc_auc", "neg_log_loss", ...); None:
            log-loss for classifiers, RMSE for regression. The loss is still what trains.
        validation, test: tables (or files) used as the validation and test rows instead of
            rows carved from ``data``.
        split: "time:COL" trains on the earliest rows by COL and validates and tests on the
            later ones (no shuffling); group: a column none of whose values is in two parts
            (and which is not a feature).
        weight: a column of row weights (not a feature): they weight the training loss and
            the validation metric. class_weight: "balanced" (n / (k · n_class)) or
            ``{label: weight}``, on the training loss only.
        verbose: show the live progress display (a terminal or a notebook), as the command
            line does, when ``on_progress`` is not given.

    Returns a ``TuneResult`` with the study, the model and its held-out test scores.

    Example:
        >>> result = tune("wage.csv", "wage", drop=["logwage"], time_budget=60)  # doctest: +SKIP
        >>> result.test_scores  # doctest: +SKIP
    """
    if population < 1:
        raise ValueError(f"population must be at least 1, got {population}")
    if trials is not None and trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time budget must be positive, got {time_budget}")
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1 network, got {ensemble}")
    if trials is None and time_budget is None:
        trials = 64
    pruner_obj = make_pruner(pruner)
    space_obj = _load_space(space)
    out = Path(out)
    _check_not_another_run(out)
    out.mkdir(parents=True, exist_ok=True)
    source = str(data) if not isinstance(data, pd.DataFrame) else "DataFrame"
    frame = read_table(data)
    name = (Path(source).name.split(".")[0] if source != "DataFrame" else "data")
    study_name = study_name or f"{name}-{target}"
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"

    check_target(frame, target)
    if metric is not None:  # an unknown name fails before the work
        get_metric(metric, task or infer_task(frame[target].dropna()))
    prepared = prepare(frame, target, task=task, categorical=categorical, drop=drop, seed=seed,
                       validation=None if validation is None else read_table(validation),
                       test=None if test is None else read_table(test), split=split,
                       group=group, weight=weight, class_weight=class_weight)
    pre, test = prepared.preprocessor, prepared.test
    metric_obj = get_metric(metric, pre.task_)
    key = ("val_" + ("weighted_" if prepared.w_val is not None else "") + metric_obj.name)

    with _optuna_warnings_only():
        # (trials left RUNNING by a dead process are marked failed)
        study, interrupted = open_study(storage, study_name, metric_obj.direction, key)
        record_run(study, task=pre.task_, metric=key, direction=metric_obj.direction,
                   sampler=sampler, pruner=pruner, space=space_obj.to_dict(), data={
                       "source": source, "rows": int(len(frame)),
                       "columns": int(frame.shape[1]), "target": target, "task": pre.task_,
                       "roles": pre.roles_.by_column(), "split": prepared.split})
        budget = Budget(trials, time_budget, elapsed(study))
        replace_file(out / "run.json", json.dumps({
            "kind": "tune", "study_name": study_name, "storage": storage, "data": source,
            "target": target, "seed": seed, "sampler": sampler, "pruner": pruner,
            "population": population, "time_budget": time_budget, "trials": trials,
            "ensemble": ensemble, "metric": metric_obj.name,
            "direction": metric_obj.direction} | _usage(split, group, weight, class_weight,
                                                        validation, test), indent=1))

        # the coarse round spans two groups, so that it compares two structures
        sampler_options = ({"n_coarse": 2 * structure_quota(population, trials_per_structure)}
                           if sampler_key(sampler) == "coarse-to-fine" else {})
        working = working_copy(study, make_sampler(sampler, space_obj, seed=seed,
                                                   **sampler_options), pruner_obj)
        archive = TrialArchive(study, out / "pending-trials.jsonl", storage)  # recovers
        working.add_trials(study.get_trials(deepcopy=False))  # a killed run's too
        saved = saved_model(out, study_name, prepared.X_train.shape[1])  # a resumed run's
        tuner = Tuner(working, space_obj, prepared, budget, population, out, seed,
                      trials_per_structure=trials_per_structure, on_progress=on_progress,
                      archive=archive, ensemble=ensemble, saved=saved, metric=metric_obj)
        try:
            with _display(tuner, verbose):
                tuner.run()
        finally:
            tuner.save_study_state()
            tuner.save_model()
            archive.close()

        model = _final_model(study, tuner, seed)
        test_scores = model.scores(test) if len(test) else {}
        if len(test) and metric_obj.name not in test_scores:  # the chosen metric's, too
            pre_y = pre.encode_target(test[target])
            test_scores[metric_obj.name] = ValidationScorer(
                metric_obj, pre_y, pre.task_, prepared.target_std, prepared.target_mean
            )(model._outputs(test))
        study.set_user_attr(keys.BEST, jsonable(_best_record(study, model, test_scores, test)))
        board = leaderboard(study)
    replace_file(out / "leaderboard.csv", board.to_csv(index=False))
    return TuneResult(study=study, model=model, out=out, model_dir=out / "model",
                      leaderboard=board, test_scores=test_scores, storage=storage,
                      study_name=study_name,
                      extra={"interrupted_trials": interrupted,
                             "recovered_trials": archive.recovered})


def _usage(split: str | None, group: str | None, weight: str | None,
           class_weight: str | Mapping | None, validation: Any, test: Any) -> dict[str, Any]:
    """The split and weight options run.json records (those given)."""
    given = {"split": split, "group": group, "weight": weight,
             "class_weight": class_weight if isinstance(class_weight, str) else (
                 None if class_weight is None else {str(k): v for k, v in class_weight.items()}),
             "validation": None if validation is None else (
                 "DataFrame" if isinstance(validation, pd.DataFrame) else str(validation)),
             "test": None if test is None else (
                 "DataFrame" if isinstance(test, pd.DataFrame) else str(test))}
    return {k: v for k, v in given.items() if v is not None}


@contextlib.contextmanager
def _display(tuner: Tuner, verbose: bool) -> Iterator[None]:
    """``verbose``: the command line's live display (Rich: a terminal redraws in place, a
    notebook shows a live cell output, a log gets a line every 10 s), unless the caller
    follows the progress itself."""
    if not verbose or tuner.on_progress is not None:
        yield
        return
    from ..cli.display import TuneDisplay, console

    with TuneDisplay(console()) as display:
        tuner.on_progress = display.update
        try:
            yield
        finally:
            tuner.on_progress = None


@contextlib.contextmanager
def _optuna_warnings_only() -> Iterator[None]:
    """Optuna's INFO lines ("A new study created ...") would interleave with the caller's
    progress display; warnings still show. The caller's level comes back afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _load_space(space: Space | str | Path | Mapping | None) -> Space:
    if space is None:
        return default_space()
    if isinstance(space, Space):
        return space
    if isinstance(space, Mapping):
        return Space.from_dict(space)
    return Space.from_toml(space)


def _best_record(study: optuna.Study, model: CaviarModel, test_scores: dict[str, float],
                 test: pd.DataFrame) -> dict[str, Any]:
    """The study's ``best`` attribute: the model's best network, its members, test scores."""
    best = study.trials[model.info["trial"]]  # the best network's trial (maybe a stopped one)
    record = {keys.BEST_TRIAL: best.number, keys.BEST_VALUE: model.info["value"],
              keys.HYPERPARAMETERS: best.user_attrs.get(keys.HYPERPARAMETERS, {}),
              keys.MEMBERS: model.info.get("members", []), keys.TEST_SCORES: test_scores}
    if len(model.networks) > 1 and len(test):
        alone = CaviarModel(model.preprocessor, model.network)
        record[keys.BEST_NETWORK_TEST_SCORES] = alone.scores(test)
    if model.preprocessor.task_ != "regression" and len(test):
        record[keys.CONFUSION_MATRIX] = model.confusion_matrix(test)
    return record


def _final_model(study: optuna.Study, tuner: Tuner, seed: int) -> CaviarModel:
    """The model of the networks the tuner kept (the one ``OUT/model`` holds). If the best
    completed trial of the (database) study is not among them (a killed run finished it
    after its model was last saved), its configuration is refit and joins by the same rule."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    loss = tuner.metric.loss
    best = min(done, key=lambda t: loss(t.value)) if done else None
    kept = tuner.kept.networks
    if best is None or any(k.trial == best.number for k in kept) or (
            kept and loss(best.value) >= loss(kept[0].value)):
        if not kept:
            raise RuntimeError("no trial completed within the budget: give it more time "
                               "(--time-budget) or more trials (--trials)")
        return tuner.model()
    data, pre = tuner.data, tuner.pre
    params = best.user_attrs[keys.HYPERPARAMETERS]
    network = train_network(data.X_train, data.y_train, pre.task_,
                            params, n_classes=tuner.n_classes, X_val=data.X_val,
                            y_val=data.y_val, seed=seed, weight=data.w_train,
                            scorer=tuner.scorer,
                            patience=int(params["epochs"]))  # all epochs, best one kept
    tuner.keep(network, best.number, best.value)
    model = tuner.model()
    model.info["refit"] = best.number
    model.save(tuner.out / "model")
    return model


def _check_not_another_run(out: Path) -> None:
    """ValueError if ``out`` holds a run that is not a tuning run (a panda run, say), which
    tuning there would overwrite."""
    file = out / "run.json"
    if not file.is_file():
        return
    try:
        kind = json.loads(file.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "tune":
        what = f"a {kind} run" if isinstance(kind, str) else "a run.json that is not caviar's"
        raise ValueError(f"{str(out)!r} holds {what}, which tuning there would overwrite; "
                         "choose another output directory (--out)")
