"""``tune()``: read the table, open the study, run the scheduler, keep the model.

It wires the parts: the data (``caviar.data.prepare``), the study and its archive
(``study``), the sampler and pruner over an in-memory working copy, the scheduler
(``scheduler.Tuner``) and the kept model (``ensemble``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from ..data import (
    PreparedTable,
    as_tensors,
    check_target,
    infer_task,
    prepare,
    read_table,
)
from ..data.errors import DataError
from ..data.roles import category_strings
from ..engine import resolve_device
from ..files import jsonable, replace_file
from ..hyperparams import NUMERIC_READS
from ..metrics import Metric, get_metric
from ..model import CaviarModel
from ..training import train_network
from ..workers.spec import WorkerSpec
from .bagging import BAG_FOLDS, bag_model, check_groups
from .budget import (
    BAG_SHARE,
    COARSE_SHARE,
    Budget,
    end_seconds,
    importance_repeats,
    short_budget_warning,
)
from .ensemble import KeptNetworks, refit_model
from .pbt import PopulationBasedTraining
from .samplers import make_sampler, sampler_key, warm_start
from .scaling import ScalingChoice
from .scheduler import TuneProgress, Tuner, make_pruner, structure_quota
from .space import SEARCHED_ENCODINGS, SEARCHED_SCALINGS, Space, choice, default_space
from .study import keys
from .study.archive import TrialArchive, recover_journal
from .study.artifacts import add_study_networks
from .study.shared import SharedStudy
from .study.storage import patiently
from .study.store import (
    check_data,
    check_metric,
    dead_here,
    elapsed,
    fingerprint,
    leaderboard,
    mark_interrupted,
    open_storage,
    open_study,
    record_run,
    saved_model,
    worker_name,
    working_copy,
)

__all__ = ["NoTrialCompleted", "TuneProgress", "TuneResult", "tune", "work"]

SCHEDULERS = ("asha", "pbt")
# What the kept networks train on at the end (bench/README.md, "Refit"): "none" keeps the
# searched networks (the training rows), "train+valid" trains their configurations again on
# the training and validation rows, "bag" trains them as K networks each cross-fitted over
# folds of those rows (``bagging.bag_model``), "all" on every row after the test score is
# taken. "none" is the default: the refit's gain measured within the noise, its cost not.
REFITS = ("none", "train+valid", "bag", "all")


class NoTrialCompleted(ValueError):
    """No network the model could hold finished within the budget (a ValueError, so the
    command line says it in one line: the budget is the user's to raise)."""

    def __init__(self) -> None:
        super().__init__("no trial completed within the budget: give it more time "
                         "(--time-budget) or more trials (--trials)")


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
    report: Path | None = None  # the HTML report, when tune wrote one (report=True)


def tune(data: pd.DataFrame | str | Path, target: str, *, time_budget: float | None = None,
         trials: int | None = None, population: int = 32, sampler: str = "coarse-to-fine",
         pruner: str = "asha", space: Space | str | Path | Mapping | None = None,
         storage: str | None = None, study_name: str | None = None,
         out: str | Path = "runs/tune", seed: int = 0, categorical: Sequence[str] = (),
         drop: Sequence[str] = (), task: str | None = None,
         trials_per_structure: int | None = None, ensemble: int = 5,
         on_progress: Callable[[TuneProgress], None] | None = None, workers: int = 1,
         dask: str | None = None, artifacts: str | Path | None = None,
         scheduler: str = "asha", pbt_interval: int | None = None,
         pbt_coarse: float | None = None,
         metric: str | None = None, validation: pd.DataFrame | str | Path | None = None,
         test: pd.DataFrame | str | Path | None = None, split: str | None = None,
         group: str | None = None, weight: str | None = None,
         class_weight: str | Mapping | None = None, max_onehot: int | None = None,
         numeric: str | None = None, device: str = "cpu", refit: str = "none",
         seed_ensemble: int = 0, verbose: bool = False, report: bool = False,
         started: float | None = None) -> TuneResult:
    """Tune a network for ``target`` on a table, many trials at once.

    Args:
        data: a CSV/Parquet path or a DataFrame.
        target: the column to predict.
        time_budget: seconds for the whole study (resumed runs count what they spent).
        trials: the number of trials for the whole study (same).
            With neither budget, 64 trials.
        population: how many trials train at once (in each worker).
        sampler: "random", "grid", "coarse-to-fine" or "tpe".
        pruner: "asha" (successive halving), "median" or "none".
        space: a ``Space``, a TOML file, a dict, or None for ``default_space()`` (which,
            on a table with categoricals past the one-hot limit, also searches ``encoding``
            over ``SEARCHED_ENCODINGS``).
        storage, study_name: an Optuna storage URL (default SQLite in ``out``) and study name
            (default "<data name>-<target>"). The same study is resumed when it exists.
        out: the run directory: ``model/``, ``leaderboard.csv``, ``run.json``, ``study.db``.
        seed: seeds the data split, the sampler and the networks.
        trials_per_structure: trials a population of one structure takes before it drains
            (default 2 × population).
        ensemble: the model averages the predictions of this many networks, those with the
            best validation scores (1: the best network alone).
        on_progress: called with a ``TuneProgress`` after every epoch (one worker only).
        workers: worker processes on this machine tuning the study together (each with
            cores / workers torch threads); 1 tunes in this process.
        dask: a Dask scheduler address: one worker loop on each Dask worker instead (use a
            storage every machine reaches, PostgreSQL).
        artifacts: the directory of the kept networks' artifact store (default
            ``out/artifacts``; with Dask, a path every machine shares).
        scheduler: "asha", the default tuner (slot refill, with ``pruner``), or "pbt":
            population-based training (``caviar.search.pbt``): the default tuner searches
            the first ``pbt_coarse`` of the budget, then PBT populations refine the best
            structures from their best trials' hyperparameters.
        pbt_interval: PBT's epochs between exploit and explore steps (default 4).
        pbt_coarse: the share of the budget (trials or seconds) PBT's coarse search spends
            first (default 0.5; 0: none, members start from random draws of the space).
        metric: what the search optimizes, the pruner sees and the kept networks are ranked
            and chosen by: a short name ("auc", "accuracy", "f1", "log_loss", "rmse", "mae",
            "r2", ...) or a scikit-learn scorer name ("roc_auc", "neg_log_loss", ...); None:
            log-loss for classifiers, RMSE for regression. The loss is still what trains.
        validation, test: tables (or files) used as the validation and test rows instead of
            rows carved from ``data``: a fifth each, the validation at most 5,000 rows
            (``caviar.data.prepare.validation_share``; the rest trains).
        split: "time:COL" trains on the earliest rows by COL and validates and tests on the
            later ones (no shuffling); group: a column none of whose values is in two parts
            (and which is not a feature).
        weight: a column of row weights (not a feature): they weight the training loss and
            the validation metric. class_weight: "balanced" (n / (k · n_class)) or
            ``{label: weight}``, on the training loss only.
        max_onehot: categoricals with more levels are target-encoded (None: the measured
            rule, max(10, min(training rows // 4, 1000))).
        numeric: how numeric columns are scaled: "robust" (median and IQR, smoothly clipped
            to ±3), "asinh" (median and IQR, then asinh: the tails logarithmic, not
            clipped), "quantile" (to a normal) or "standard" (mean and standard deviation), for
            every network; "auto": robust and quantile on the known-good networks of the
            warm start, then the search goes on with the scaling of the best of them
            (``search.scaling``); "search": robust and quantile, each population reading
            its own (the table holds both; the validation rows choose); None (the default):
            as the space's ``numeric`` axis says (the default space's: robust).
        device: where the populations train: "cpu", "cuda" (a GPU) or "auto" (CUDA when
            available); each worker resolves it on its own machine. The preprocessing, the
            kept networks and the model files stay on the CPU (the model loads anywhere).
        refit: what the model's networks train on once the search has chosen them: "none"
            (the default), the searched networks as they are, trained on the training rows;
            "train+valid", each configuration trained again on the training and validation
            rows for the epochs its searched network ran to its best validation score (the
            test score is still of rows no network saw); "bag", each kept configuration (up
            to ``4 × ensemble``) as ``BAG_FOLDS`` networks on those rows, each with one fold
            held out and kept at its best epoch there, and the model averages the bags of
            up to ``ensemble`` of them, chosen by their out-of-fold scores as the search
            chose on the validation rows (``info["bag_members"]``; ``info["bag_value"]``
            is the average's out-of-fold score; a group split keeps groups whole, a time
            split refuses
            it: folds would train on the future; under a time budget the search holds its
            estimated time back, a bag estimated at more than ``BAG_SHARE`` of the budget
            is declined, ``info["bag"]`` says so, and a bag trains the epochs that fit,
            leaving out a configuration the time cut short of its searched epochs);
            "all", then once more on every
            row, after the test scores are taken (AutoGluon's ``refit_full``: the scores
            are those of the train+valid refit; the model you get also learned the test
            rows). "none" by default (bench/README.md, "Refit"): at equal search the refit
            gained 0.5% on average, within a seed's noise; after a short search it lost (a
            network chosen among many on the validation rows, drawn again); and its time
            comes out of a time budget's search.
        seed_ensemble: after the search, the best network's configuration trains again
            from this many new initializations on the same rows (a deep ensemble; under a
            time budget, as many as fit in at most a quarter of it, held back from the
            search), and they join the networks the model may average, by the same rule.
            The search gives them its end only if it has stopped improving (its best
            not better within the last quarter of the budget). 0 (none) by default
            (bench/README.md, "Seeds of the best network"): given the time, 16 seeds made
            the model better on 7 tables of 8 (up to 9%), never worse; at equal time they
            were a wash (20 runs: better 4, worse 5). The default
            scheduler in one process only: a PBT network's schedule is not one
            configuration, and with ``workers`` or ``dask`` the model is the workers'
            networks.
        verbose: show the live progress display (a terminal or a notebook), as the command
            line does, when ``on_progress`` is not given.
        report: write the HTML report (``caviar.report.write_report``) to
            ``out/report.html`` at the end, within the time budget, as the command line does;
            without it the search holds back no time for one (on a table of thousands of
            trials, its share of the report is seconds).
        started: when the run began (``time.monotonic()``; default: this call), from which
            ``time_budget`` counts; the command line passes its own start, before its
            imports. The search stops early enough for the end of the run (the refit, the
            test scores, the archive writer; estimated at this machine's measured speed) to
            fit in the budget too.

    Returns a ``TuneResult`` with the study, the model and its held-out test scores.

    Example:
        >>> result = tune("wage.csv", "wage", drop=["logwage"], time_budget=60)  # doctest: +SKIP
        >>> result.test_scores  # doctest: +SKIP
    """
    # the budget counts the data's preparation and the end (the final model) too
    started = time.monotonic() if started is None else started
    if population < 1:
        raise ValueError(f"population must be at least 1, got {population}")
    if trials is not None and trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time budget must be positive, got {time_budget}")
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1 network, got {ensemble}")
    if seed_ensemble < 0:
        raise ValueError(f"seed_ensemble must be 0 or more networks, got {seed_ensemble}")
    if seed_ensemble and (scheduler == "pbt" or workers > 1 or dask is not None):
        raise ValueError("the seed ensemble needs the default scheduler in one process; drop "
                         "--seed-ensemble, or --scheduler pbt, --workers and --dask")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if refit not in REFITS:
        raise ValueError(f"unknown refit {refit!r}; choose one of {', '.join(REFITS)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of "
                         f"{', '.join(SCHEDULERS)}")
    if trials is None and time_budget is None:
        trials = 64
    resolved_device = resolve_device(device)  # a machine without CUDA fails before any work
    make_pruner(pruner)  # an unknown name fails before anything is written
    space_obj = _load_space(space)
    if numeric is not None:  # one scaling for every network, or the searched ones
        if numeric not in (*NUMERIC_READS, "auto", "search"):
            raise ValueError(f"unknown numeric scaling {numeric!r}; choose one of "
                             f"{', '.join(NUMERIC_READS)}, auto or search")
        space_obj = space_obj.replace({"numeric": numeric if numeric in NUMERIC_READS
                                       else choice(list(SEARCHED_SCALINGS))})
    scalings = list(space_obj.scalings())  # the first scales the table, the others are added
    out = Path(out)
    _check_not_another_run(out)
    single = workers == 1 and dask is None
    source = str(data) if not isinstance(data, pd.DataFrame) else "DataFrame"
    name = (Path(source).name.split(".")[0] if source != "DataFrame" else "data")
    frame = read_table(data)
    check_target(frame, target)
    if metric is not None:  # an unknown name fails before the work
        get_metric(metric, task or infer_task(frame[target].dropna()))
    prepared = prepare(frame, target, task=task, categorical=categorical, drop=drop, seed=seed,
                       validation=None if validation is None else read_table(validation),
                       test=None if test is None else read_table(test), split=split,
                       group=group, weight=weight, class_weight=class_weight,
                       max_onehot=max_onehot, numeric=scalings)
    if prepared.X_val is None:  # the search chooses by the validation rows: it needs some
        raise DataError(f"no validation rows in {len(frame)} rows (a class with a single row "
                        "is never validated); add rows, or pass --validation FILE")
    # the test rows preprocessed now, not at the end: the search's deadline then counts
    # their time as spent, where the end's price (END_S) would not hold a large table's
    _ = prepared.test_inputs if len(prepared.test) else None
    if space is None and any(c.target_encoded for c in prepared.inputs.categoricals):
        space_obj = space_obj.replace({"encoding": choice(list(SEARCHED_ENCODINGS))})
    if refit == "bag" and prepared.how.startswith("time:"):
        raise ValueError("refit='bag' shuffles rows into folds, which a time split forbids "
                         "(networks would train on the future); use refit='train+valid'")
    groups = _groups(prepared) if refit == "bag" else None  # a bag's folds keep them whole
    if groups is not None:
        check_groups(groups)  # before the search, not after it
    # the run folder is made once the data and the options are known to be good: a run
    # refused for its input leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(data, pd.DataFrame) and not single:  # other processes read it from a file
        data.to_csv(out / "data.csv", index=False)
        data = out / "data.csv"
    study_name = study_name or f"{name}-{target}"
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    spec = WorkerSpec(
        data=str(Path(data).resolve()) if not isinstance(data, pd.DataFrame) else source,
        target=target, storage=storage, study_name=study_name, out=str(out.resolve()),
        artifacts=str(Path(artifacts or out / "artifacts").resolve()), seed=seed,
        population=population, sampler=sampler, pruner=pruner, space=space_obj.to_dict(),
        trials=trials, time_budget=time_budget, trials_per_structure=trials_per_structure,
        ensemble=ensemble, task=task, categorical=list(categorical), drop=list(drop),
        threads=None if single else max(1, _cores() // workers), scheduler=scheduler,
        pbt_interval=pbt_interval, pbt_coarse=pbt_coarse, metric=metric,
        validation=_path(validation, single),
        test=_path(test, single), split=split, group=group, weight=weight,
        class_weight=class_weight, max_onehot=max_onehot, numeric=scalings,
        choose_scaling=numeric == "auto", device=str(device), report=report)

    pre, test = prepared.preprocessor, prepared.test
    metric_obj = get_metric(metric, pre.task_)
    key = ("val_" + ("weighted_" if prepared.w_val is not None else "") + metric_obj.name)

    with _optuna_warnings_only(), _threads_restored():
        store = open_storage(storage)
        study = open_study(store, study_name, metric_obj.direction)
        check_metric(study, metric_obj.direction, key)
        check_data(study, seed, fingerprint(frame), prepared.split)
        record_run(study, task=pre.task_, metric=key, direction=metric_obj.direction,
                   sampler=sampler, pruner=pruner, space=space_obj.to_dict(), data={
                       "source": source, "rows": int(len(frame)),
                       "columns": int(frame.shape[1]), "target": target, "task": pre.task_,
                       "roles": pre.roles_.by_column(), "split": prepared.split})
        # decided here, not by each worker: a worker that starts late would find the others'
        # trials and skip the warm start, and every other worker would wait for it
        spec.warm_start = not study.get_trials(deepcopy=False)
        study.set_user_attr(keys.SPEC, spec.to_dict())
        replace_file(out / "run.json", json.dumps({
            "kind": "tune", "study_name": study_name, "storage": storage, "data": source,
            "target": target, "seed": seed, "sampler": sampler, "pruner": pruner,
            "population": population, "time_budget": time_budget, "trials": trials,
            "ensemble": ensemble, "workers": workers, "dask": dask,
            "artifacts": spec.artifacts, "scheduler": scheduler, "metric": metric_obj.name,
            "numeric": scalings, "choose_scaling": spec.choose_scaling,
            "direction": metric_obj.direction,
            "device": resolved_device.type} | _usage(split, group, weight, class_weight,
                                                        validation, test), indent=1))
        extra: dict[str, Any] = {}
        clock = Budget(trials, time_budget, elapsed(study), start=started)  # the run's
        if single:
            search_started = clock.elapsed
            with _progress(on_progress, verbose) as progress:
                tuner, extra = work(spec, 0, prepared=prepared, store=store, study=study,
                                    on_progress=progress, single=True, started=started,
                                    refit_rows=_refit_rows(prepared, refit),
                                    seeds=seed_ensemble,
                                    bag_folds=BAG_FOLDS if refit == "bag" else 0)
            if time_budget is not None:  # the tuner counted its finished trials
                short = short_budget_warning(time_budget, search_started,
                                             clock.elapsed - search_started,
                                             tuner.budget.reserve,
                                             tuner.finished[TrialState.COMPLETE])
                if short:
                    warnings.warn(short, stacklevel=2)
            model = _final_model(study, store, tuner, seed, spec.artifacts)
            candidates = tuner.bag_candidates() if refit == "bag" else []
            bag = refit == "bag" and tuner.bag_fits()  # or declined: too costly for the budget
            if tuner.add_seeds():
                model = tuner.model()
                model.save(out / "model")
        else:
            recover_journals(spec)  # a killed coordinator's workers
            if dask is not None:
                from ..workers.cluster import run_dask

                extra["workers"] = run_dask(spec, dask)
            else:
                from ..workers.local import run_local

                extra["workers"] = run_local(spec, workers)
            extra["recovered_trials"] = recover_journals(spec)
            model, kept = _model_from_study(study, store, prepared, spec, metric_obj)
            candidates = kept.networks  # the bag trains what fits in the time left
            model.save(out / "model")
            bag = refit == "bag"  # the workers held no time back: it trains what is left

        def time_left() -> float | None:
            """Seconds of the budget left but the rest of the end's (None: no budget)."""
            return (None if time_budget is None else time_budget - clock.elapsed
                    - end_seconds(len(study.get_trials(deepcopy=False)), report,
                                  clock.slowdown()))

        if refit != "none" and len(prepared.validation):
            X, y, w = _rows(prepared, False, weight, class_weight)
            if bag:  # in the time left but the end's, as many epochs as fit
                model = bag_model(model, X, y, metric_obj, candidates=candidates,
                                  size=ensemble, seed=seed, weight=w,
                                  groups=groups, target_std=prepared.target_std,
                                  target_mean=prepared.target_mean, seconds=time_left())
            elif refit == "bag":
                model.info["bag"] = f"declined: over {BAG_SHARE:.0%} of the time budget"
            else:
                model = refit_model(model, X, y, "train+valid", seed=seed, weight=w)
            model.save(out / "model")

        # each network's outputs for the test rows, once: the model's scores, its confusion
        # matrix and the best network's scores all read them (200,000 rows: 0.35 s a pass)
        each = model.network_outputs(prepared.test_inputs) if len(test) else None
        test_scores, constant_scores = (model.test_scores(prepared, metric_obj,
                                                          outputs=each.mean(0))
                                        if each is not None else ({}, {}))
        # what is left of the time budget for the importance, after the report's part
        best = jsonable(_best_record(study, model, test_scores, test, each, time_left(),
                                     weight))
        if constant_scores:
            best[keys.CONSTANT_TEST_SCORES] = jsonable(constant_scores)
        patiently(lambda: study.set_user_attr(keys.BEST, best))  # waits out a locked storage
        if refit == "all" and len(test):  # the scores above stay those of the train+valid fit
            X, y, w = _rows(prepared, True, weight, class_weight)
            model = refit_model(model, X, y, "all", seed=seed, weight=w)
            model.info["test_scores_of"] = "train+valid"
            model.save(out / "model")
        board = leaderboard(study)
    replace_file(out / "leaderboard.csv", board.to_csv(index=False))
    report_path = None
    if report:
        from ..report import write_report

        # the study as it is open here: its storage's cache holds the trials just read back
        report_path = write_report(out, out / "report.html", study=study)
    return TuneResult(study=study, model=model, out=out, model_dir=out / "model",
                      leaderboard=board, test_scores=test_scores, storage=storage,
                      study_name=study_name, extra=extra, report=report_path)


def work(spec: WorkerSpec, index: int, *, prepared: PreparedTable | None = None,
         store: optuna.storages.BaseStorage | None = None, study: optuna.Study | None = None,
         on_progress: Callable[[TuneProgress], None] | None = None,
         single: bool = False, started: float | None = None,
         refit_rows: int = 0, seeds: int = 0, bag_folds: int = 0
         ) -> tuple[Tuner, dict[str, Any]]:
    """One worker: train populations for the study of ``spec`` until its budget is spent
    and no other worker runs a trial that may come back. ``index`` seeds its sampler
    (seed + index), so workers draw different parameters. ``single``: the only worker of
    a ``tune`` in this process (its journal and model in ``spec.out``, as before workers);
    ``started``: when its budget's clock started (default now); ``refit_rows``: the rows the
    kept networks train on after the search, whose time the budget holds back (as a bag of
    ``bag_folds`` folds, when not 0); ``seeds``:
    the new initializations of the best configuration the caller trains after it
    (``Tuner.add_seeds``), whose time it holds back too.
    Returns the tuner and what the worker did (trials, seconds in the storage)."""
    began, cpu_started = time.perf_counter(), time.process_time()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    with _optuna_warnings_only():
        if prepared is None:
            frame = read_table(spec.data)
            check_target(frame, spec.target)
            prepared = prepare(frame, spec.target, **spec.prepare_options())
            store = open_storage(spec.storage)
            study = open_study(store, spec.study_name)
            check_data(study, spec.seed, fingerprint(frame), prepared.split)
        out = Path(spec.out)
        journal = (out / "pending-trials.jsonl" if single
                   else out / "workers" / worker_name().replace(":", "-") / "pending-trials.jsonl")
        archive = TrialArchive(spec.storage, spec.study_name, journal, spec.artifacts)  # recovers
        interrupted = mark_interrupted(store, study)  # left RUNNING by a dead process here
        space = Space.from_dict(spec.space)
        budget = Budget(spec.trials, spec.time_budget, elapsed(study), start=started)
        # the coarse round spans two groups, so that it compares two structures, and under a
        # time budget ends with the budget's first half (a large table trains few trials)
        sampler_options = ({"n_coarse": 2 * structure_quota(spec.population,
                                                             spec.trials_per_structure),
                            "coarse_over": budget.share_passed(COARSE_SHARE)}
                           if sampler_key(spec.sampler) == "coarse-to-fine" else {})
        working = working_copy(study, make_sampler(spec.sampler, space, seed=spec.seed + index,
                                                   **sampler_options), make_pruner(spec.pruner))
        shared = SharedStudy(store, study, working, worker_name(), lock=out / "ask.lock")
        saved = (saved_model(out, spec.study_name, prepared.preprocessor) if single
                 else None)  # a resumed run's
        if saved is not None and saved.info.get("trained_on", "train") != "train":
            saved = None  # refit on the validation rows: the artifacts hold the searched ones
        metric = get_metric(spec.metric, prepared.task)
        # a new study starts from known-good networks (the first worker's first trials)
        grid = sampler_key(spec.sampler) == "grid"
        known = [] if grid else warm_start(space, rows=len(prepared.train),
                                          task=prepared.task)
        warm = known if index == 0 and spec.warm_start else []
        # numeric="auto": every worker chooses from the first worker's warm-start trials
        scaling = (ScalingChoice(space, len(known), metric.loss)
                   if spec.choose_scaling and not grid else None)
        if spec.scheduler == "pbt":
            tuner: Tuner = PopulationBasedTraining(
                working, space, prepared, budget, spec.population, out if single else None,
                spec.seed + 1000 * index, interval=spec.pbt_interval,
                coarse=COARSE_SHARE if spec.pbt_coarse is None else spec.pbt_coarse,
                trials_per_structure=spec.trials_per_structure, on_progress=on_progress,
                archive=archive, ensemble=spec.ensemble, saved=saved, shared=shared,
                metric=metric, device=spec.device, prefix="" if single else f"w{index}-",
                warm=warm, refit_rows=refit_rows, bag_folds=bag_folds, report=spec.report,
                scaling=scaling)
        else:
            tuner = Tuner(working, space, prepared, budget, spec.population,
                          out if single else None, spec.seed + 1000 * index,
                          trials_per_structure=spec.trials_per_structure,
                          on_progress=on_progress, archive=archive, ensemble=spec.ensemble,
                          saved=saved, shared=shared, metric=metric, device=spec.device,
                          refit_rows=refit_rows, warm=warm, seeds=seeds,
                          bag_folds=bag_folds, report=spec.report, scaling=scaling)
        tuner.refresh(force=True)  # every worker's finished trials, a killed run's too
        try:
            tuner.run()
        finally:
            shared.close()
            tuner.save_study_state()
            tuner.save_model()
            writer_s = archive.close()
    return tuner, {"worker": worker_name(), "index": index,
                   "trials": shared.created,
                   "wall_s": round(time.perf_counter() - began, 3),
                   "cpu_s": round(time.process_time() - cpu_started, 3),
                   "storage_s": round(shared.seconds, 3),
                   "storage_thread_s": round(shared.background_seconds, 3),
                   "writer_storage_s": round(writer_s, 3),
                   "interrupted_trials": interrupted, "recovered_trials": archive.recovered}


def recover_journals(spec: WorkerSpec) -> int:
    """Write the trials that dead workers of this machine journaled but never wrote;
    returns how many."""
    added = 0
    for journal in sorted((Path(spec.out) / "workers").glob("*/pending-trials.jsonl")):
        host, _, pid = journal.parent.name.rpartition("-")
        if dead_here(f"{host}:{pid}"):
            added += recover_journal(journal, spec.storage, spec.study_name, spec.artifacts)
    return added


def _rows(prepared: PreparedTable, with_test: bool, weight: str | None,
          class_weight: str | Mapping | None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The refit's rows (training, validation, and with ``with_test`` the test rows) as the
    preprocessor fitted on the training rows makes them, and their weights (None when the
    study has none; normalized over all of them, as the training rows' are)."""
    from ..data.prepare import _train_weights

    pre = prepared.preprocessor
    X, y = [prepared.X_train, prepared.X_val], [prepared.y_train, prepared.y_val]
    frames = [prepared.train, prepared.validation]
    if with_test:
        test = prepared.test[prepared.test[pre.target].notna()]
        X_test, y_test = as_tensors(pre.transform(test), pre.encode_target(test[pre.target]),
                                    pre.task_)
        X.append(X_test)
        y.append(y_test)
        frames.append(test)
    X_all, y_all = torch.cat(X), torch.cat(y)
    w = (None if prepared.w_train is None else
         _train_weights(pd.concat(frames), weight, class_weight, y_all, pre))
    return X_all, y_all, w


def _groups(prepared: PreparedTable) -> pd.Series | None:
    """The group of each training and validation row, when the rows were split by group (a
    bag's folds keep each group whole, as the split did); None otherwise."""
    kind, _, column = prepared.how.partition(":")
    if kind != "group":
        return None
    return category_strings(pd.concat([prepared.train[column], prepared.validation[column]]))


def _refit_rows(prepared: PreparedTable, refit: str) -> int:
    """The rows the refits after the search train on, all of them together ("all" refits
    twice: on the training and validation rows, then on every row)."""
    if refit == "none" or not len(prepared.validation):
        return 0
    rows = len(prepared.train) + len(prepared.validation)
    return rows + (rows + len(prepared.test) if refit == "all" else 0)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
def _progress(on_progress: Callable[[TuneProgress], None] | None,
              verbose: bool) -> Iterator[Callable[[TuneProgress], None] | None]:
    """What follows the progress: the caller's ``on_progress``, or with ``verbose`` the
    command line's live display (Rich: a terminal redraws in place, a notebook shows a live
    cell output, a log gets a line every 10 s)."""
    if on_progress is not None or not verbose:
        yield on_progress
        return
    from ..cli.display import TuneDisplay, console

    with TuneDisplay(console()) as display:
        yield display.update


def _path(table: pd.DataFrame | str | Path | None, single: bool) -> str | None:
    """A validation or test table as the workers' spec names it: its file's path (other
    processes read it); a DataFrame only in one process."""
    if table is None:
        return None
    if isinstance(table, pd.DataFrame):
        if not single:
            raise ValueError("with several workers, pass validation and test rows as files "
                             "(--valid FILE, --test FILE) that every worker can read")
        return "DataFrame"
    return str(Path(table).resolve())


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


@contextlib.contextmanager
def _threads_restored() -> Iterator[None]:
    """PyTorch's threads as the caller had them afterwards: a search on a busy machine trains
    and ends its run on one (``Tuner.share_busy_cores``)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _load_space(space: Space | str | Path | Mapping | None) -> Space:
    if space is None:
        return default_space()
    if isinstance(space, Space):
        return space
    if isinstance(space, Mapping):
        return Space.from_dict(space)
    return Space.from_toml(space)


def _best_record(study: optuna.Study, model: CaviarModel, test_scores: dict[str, float],
                 test: pd.DataFrame, each: np.ndarray | None,
                 seconds: float | None = None, weight: str | None = None) -> dict[str, Any]:
    """The study's ``best`` attribute: the model's best network, its members, test scores
    (weighted by the column ``weight`` when given), and the permutation importance of its
    columns (within ``seconds``; None: no limit). ``each``: each network's outputs for the
    test rows (``CaviarModel.network_outputs``; None when there are none)."""
    best = study.trials[model.info["trial"]]  # the best network's trial (maybe a stopped one)
    record = {keys.BEST_TRIAL: best.number, keys.BEST_VALUE: model.info["value"],
              keys.HYPERPARAMETERS: best.user_attrs.get(keys.HYPERPARAMETERS, {}),
              keys.MEMBERS: model.info.get("members", []), keys.TEST_SCORES: test_scores}
    if weight:
        record[keys.TEST_WEIGHT] = weight
    if len(model.networks) > 1 and len(test):
        alone = CaviarModel(model.preprocessor, model.network)
        record[keys.BEST_NETWORK_TEST_SCORES] = alone.scores(test, weight, outputs=each[0])
    if model.preprocessor.task_ != "regression" and len(test):
        record[keys.CONFUSION_MATRIX] = model.confusion_matrix(test, each.mean(0))
    if len(test):
        record[keys.FEATURE_IMPORTANCE] = _feature_importance(model, test, seconds, weight)
    return record


def _feature_importance(model: CaviarModel, test: pd.DataFrame, seconds: float | None,
                        weight: str | None = None) -> dict[str, Any]:
    """Permutation importance of the model's original columns on (up to 2,000 of) the test
    rows, for the report (``caviar explain`` computes it for any rows): as many shuffles of
    each column as end within ``seconds`` (``importance_repeats``), up to 3; none, and the
    reason, when not one does. ``weight``: the column that weights the scores."""
    from ..explain import IMPORTANCE_ROWS, ImportanceRows, importance_of

    sample = test.sample(IMPORTANCE_ROWS, random_state=0) if len(test) > IMPORTANCE_ROWS else test
    rows = ImportanceRows(model, sample, weight)
    per_repeat = len(rows.features) * rows.shuffle_seconds() if seconds is not None else 0.0
    repeats = importance_repeats(None if seconds is None else seconds - rows.prepare_seconds,
                                 per_repeat)
    if repeats == 0:
        return {"skipped": f"one shuffle of each column takes {per_repeat:.1f} s, more than "
                           f"the time budget had left ({max(seconds, 0.0):.1f} s)"}
    frame = importance_of(rows, repeats)
    return {**frame.attrs, "repeats": repeats, "columns": frame.to_dict(orient="records")}


def _final_model(study: optuna.Study, store: optuna.storages.BaseStorage, tuner: Tuner,
                 seed: int, artifacts: str) -> CaviarModel:
    """The model of the networks the tuner kept (the one ``OUT/model`` holds), with any
    better network other workers stored in the study. If the best completed trial of the
    (database) study is not among them (a killed run finished it after its model was last
    saved, and its network never reached the artifacts), its configuration is refit and
    joins by the same rule."""
    if Path(artifacts).is_dir() and add_study_networks(tuner.kept, study, store, artifacts,
                                                       tuner.pre):
        tuner.save_model()
    # trials this run's table can train again (a resumed run may scale numbers another way)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if tuner.data.inputs.holds(t.user_attrs[keys.HYPERPARAMETERS].get("numeric"))]
    loss = tuner.metric.loss
    best = min(done, key=lambda t: loss(t.value)) if done else None
    kept = tuner.kept.networks
    if best is None or any(k.trial == best.number for k in kept) or (
            kept and loss(best.value) >= loss(kept[0].value)):
        if not kept:
            raise NoTrialCompleted
        return tuner.model()
    data, pre = tuner.data, tuner.pre
    params = best.user_attrs[keys.HYPERPARAMETERS]
    network = train_network(data.X_train, data.y_train, pre.task_,
                            params, n_classes=tuner.n_classes, X_val=data.X_val,
                            y_val=data.y_val, seed=seed, weight=data.w_train,
                            scorer=tuner.scorer, inputs=data.inputs, device=tuner.device,
                            patience=int(params["epochs"]))  # all epochs, best one kept
    tuner.keep(network, best.number, best.value)
    model = tuner.model()
    model.info["refit"] = best.number
    model.save(tuner.out / "model")
    return model


def _model_from_study(study: optuna.Study, store: optuna.storages.BaseStorage,
                      prepared: PreparedTable, spec: WorkerSpec, metric: Metric
                      ) -> tuple[CaviarModel, KeptNetworks]:
    """The model of every worker's networks, read from the study's artifacts: the same
    ensemble selection on the validation rows (by the study's metric) as one process makes;
    and the kept networks it chose among."""
    kept = KeptNetworks(prepared.X_val, prepared.y_val, prepared.task, spec.ensemble,
                        prepared.validation_scorer(metric))
    if not Path(spec.artifacts).is_dir() or not add_study_networks(
            kept, study, store, spec.artifacts, prepared.preprocessor):
        raise NoTrialCompleted
    model = kept.model(prepared.preprocessor, study.study_name)
    best = study.trials[model.info["trial"]].user_attrs
    if keys.PBT_SCHEDULE in best:  # population-based training: what ``replay`` trains again
        model.info["pbt"] = {"hyperparameters": best[keys.HYPERPARAMETERS],
                             "schedule": best[keys.PBT_SCHEDULE]}
    return model, kept


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
