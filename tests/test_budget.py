"""A machine busy with other work: the end of a run, priced in an idle core's seconds, is held
back slowed by the share of a core the run gets, and training goes to one thread."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Iterator

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from wine import WINE_SPACE

from caviar.data import prepare
from caviar.engine.threads import (
    BUSY_WAIT_SHARE,
    BUSY_WINDOW_S,
    OneThreadWhenBusy,
    main_thread_cpu,
)
from caviar.panda import train_run
from caviar.search.budget import END_S, Budget, end_seconds, short_budget_warning
from caviar.search.scheduler import Tuner
from caviar.search.space import Space
from caviar.search.study import keys
from caviar.search.tune import _threads_restored, tune
from caviar.training import train_network

needs_schedstat = pytest.mark.skipif(main_thread_cpu() is None,
                                     reason="the kernel does not count run and wait times")


def _spin() -> None:
    while True:
        pass


def _busy_for(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


@contextlib.contextmanager
def _one_core() -> Iterator[multiprocessing.Process]:
    """This thread on one core, and a spinning process (started by the caller) forked from it,
    so on the same core; the affinity and PyTorch's threads as they were afterwards."""
    threads, before = torch.get_num_threads(), os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    spinner = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    try:
        yield spinner
    finally:
        if spinner.pid is not None:
            spinner.kill()
            spinner.join()
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


@needs_schedstat
def test_a_core_shared_with_a_busy_process_slows_the_run_about_twofold():
    with _one_core() as spinner:
        spinner.start()
        budget = Budget(None, 60.0, 0.0)
        _busy_for(1.0)
        shared = budget.slowdown()
    # half of the core (or less, where the machine is busier still): twice the time or more
    assert shared >= 1.6


@needs_schedstat
def test_the_slowdown_is_one_until_the_run_has_run_enough_to_say():
    assert Budget(None, 60.0, 0.0).slowdown() == 1.0


def test_a_busy_machine_holds_back_the_idle_priced_end_slowed(wine_csv, monkeypatch):
    """The end's part priced on an idle core (``END_S``) is held back times the slowdown;
    the importance (timed) and the refit (at the measured speed) are not again."""
    data = prepare(pd.read_csv(wine_csv), "cultivar", seed=0)
    budget = Budget(None, 60.0, 0.0)
    tuner = Tuner(optuna.create_study(), Space.from_dict(WINE_SPACE), data, budget, 4, None,
                  seed=0, report=True)
    tuner.finished[optuna.trial.TrialState.PRUNED] = 1000
    monkeypatch.setattr(budget, "slowdown", lambda: 1.0)
    idle = tuner.end_reserve()
    monkeypatch.setattr(budget, "slowdown", lambda: 2.5)
    busy = tuner.end_reserve()
    # END_S, fitted on an idle machine; not the per-trial parts, fitted with both cores busy
    assert busy - idle == pytest.approx(1.5 * END_S)
    assert end_seconds(1000, True, 2.5) - end_seconds(1000, True) == pytest.approx(1.5 * END_S)


@needs_schedstat
def test_a_search_whose_cores_are_busy_trains_on_one_thread_and_says_so(wine_csv):
    """PyTorch's threads spin-wait for each other while one waits for a core: once the main
    thread waits a quarter of its running or more, the search goes on one thread, and the
    study records when; tune() gives back the caller's threads."""
    data = prepare(pd.read_csv(wine_csv), "cultivar", seed=0)
    study = optuna.create_study()
    tuner = Tuner(study, Space.from_dict(WINE_SPACE), data, Budget(None, 60.0, 0.0), 4, None,
                  seed=0)
    threads = torch.get_num_threads()
    with _one_core() as spinner:
        torch.set_num_threads(2)
        tuner._threads, tuner._one_thread = 2, OneThreadWhenBusy(skip_first=True)  # as run()
        _busy_for(BUSY_WINDOW_S * 1.2)  # the first window (a run's own start) is not judged
        tuner.share_busy_cores()
        assert torch.get_num_threads() == 2
        spinner.start()
        _busy_for(BUSY_WINDOW_S * 2.5)  # half the core: at least the window's running
        tuner.share_busy_cores()
        assert torch.get_num_threads() == 1 and tuner._threads == 1
        assert study.user_attrs[keys.BUSY]["wait_share"] >= BUSY_WAIT_SHARE
    # the run's end predicts on that one thread too; tune() gives the caller's back after
    torch.set_num_threads(2)
    with _threads_restored():
        torch.set_num_threads(1)  # as share_busy_cores leaves them
    assert torch.get_num_threads() == 2
    torch.set_num_threads(threads)


def _estimators_loop(on_epoch) -> None:
    X, y = torch.randn(2000, 20), torch.randn(2000)
    train_network(X, y, "regression", {"hidden_layer_sizes": (64, 64), "epochs": 60,
                                       "batch_size": 64}, on_epoch=lambda _: on_epoch())


def _panda_loop(on_epoch, folder) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(2500, 20)), columns=[f"x{j}" for j in range(20)])
    table["y"] = table.sum(axis=1)
    train_run(table, "y", {"hidden_layer_sizes": (64, 64), "batch_size": 64}, folder / "run",
              epochs=60, on_epoch=lambda _: on_epoch())


@needs_schedstat
@pytest.mark.parametrize("loop", ["estimators", "panda"])
def test_a_network_trains_on_one_thread_once_the_cores_are_busy(loop, tmp_path):
    """The estimators' loop (``train_network``) and panda's go to one thread as the tuner
    does, and give the caller's threads back when they return."""
    threads_each_epoch: list[int] = []
    with _one_core() as spinner:
        torch.set_num_threads(2)
        spinner.start()
        record = lambda: threads_each_epoch.append(torch.get_num_threads())  # noqa: E731
        if loop == "estimators":
            _estimators_loop(record)
        else:
            _panda_loop(record, tmp_path)
        after = torch.get_num_threads()
    assert threads_each_epoch[-1] == 1  # it began on 2 (set above), and went to one
    assert after == 2


def test_a_budget_too_short_to_search_in_is_named_with_one_that_is_not():
    # 3.1 s to prepare, 0.7 s to search, 1.2 s held back for the end: 4.3 s fixed
    line = short_budget_warning(5.0, 3.1, 0.7, 1.2, completed=0)
    assert line is not None and "budget of 5 s left 0.7 s to search" in line
    assert line.endswith("give a time budget of 10 s or more")  # twice the 4.3 s, rounded up
    assert short_budget_warning(5.0, 3.1, 0.7, 1.2, completed=1) is None  # a model trained
    # a large table: 10 s to prepare and trials the budget stopped, but searched for longer
    assert short_budget_warning(30.0, 10.0, 17.0, 3.0, completed=0) is None


def test_a_tune_too_short_to_search_warns_and_the_budget_it_names_trains(wine_csv, tmp_path):
    with pytest.warns(UserWarning, match="barely trained") as caught:
        short = tune(wine_csv, "cultivar", time_budget=1.0, population=4, out=tmp_path / "a")
    assert (tmp_path / "a" / "model" / "model.json").exists()  # a model all the same
    assert not any(t.state == optuna.trial.TrialState.COMPLETE for t in short.study.trials)
    message = next(str(w.message) for w in caught if "barely trained" in str(w.message))
    suggested = int(re.search(r"time budget of (\d+) s or more", message).group(1))
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        enough = tune(wine_csv, "cultivar", time_budget=suggested, population=4,
                      out=tmp_path / "b")
    assert not [w for w in later if "barely trained" in str(w.message)]
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in enough.study.trials)
