"""The study: the archive (journal, then database), opening a study, the keys it stores."""

import subprocess
import sys
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from caviar.search.study import keys
from caviar.search.study.archive import TrialArchive, _to_line
from caviar.search.study.store import INTERRUPTED, leaderboard, mark_interrupted, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


LR = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}


def _running(url: str, n: int) -> tuple[optuna.Study, list[tuple[int, int]]]:
    """A database study with ``n`` trials RUNNING (as workers create them when they ask);
    their (trial id, number)."""
    study = optuna.create_study(storage=url, study_name="s")
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name("s")
    numbers = [study.ask(LR).number for _ in range(n)]
    return study, [(storage.get_trial_id_from_study_id_trial_number(study_id, k), k)
                   for k in numbers]


def _finished(value: float) -> optuna.trial.FrozenTrial:
    """A trial as the working copy finished it."""
    return create_trial(value=value, params={"lr": value / 10}, distributions=LR)


def test_journaled_trials_the_database_missed_are_recovered(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, ids = _running(url, 4)
    done = [_finished(v) for v in (0.03, 0.02, 0.01)]
    study.tell(0, 0.03)  # the database got the first trial only
    journal = tmp_path / "pending-trials.jsonl"
    lines = [_to_line(t, i, k, "s", None) for t, (i, k) in zip(done, ids)]
    journal.write_text("".join(lines) + lines[0][:20])  # and the kill cut a line short
    archive = TrialArchive(url, "s", journal)
    assert archive.recovered == 2
    assert [t.value for t in study.trials[:3]] == [0.03, 0.02, 0.01]
    trial_id, number = ids[3]
    assert archive.put(_finished(0.04), trial_id, number) == 0  # its first journal line
    deadline = time.monotonic() + 60
    while archive.backlog and time.monotonic() < deadline:  # written while the run goes on
        time.sleep(0.05)
    assert archive.backlog == 0
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    archive.close()
    assert study.trials[3].value == 0.04 and not journal.exists()


def test_a_database_the_writer_cannot_reach_loses_no_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, ids = _running(url, 3)
    journal = tmp_path / "pending-trials.jsonl"
    archive = TrialArchive(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}", "s", journal)
    for value, (trial_id, number) in zip((0.03, 0.02, 0.01), ids):
        archive.put(_finished(value), trial_id, number)
    with pytest.raises(RuntimeError, match="could not write trials to the study.*running "
                                           "again adds them"):
        archive.close()
    assert journal.exists()
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 3
    again = TrialArchive(url, "s", journal)  # the next run adds what was journaled
    again.close()
    assert again.recovered == 3
    assert [t.value for t in study.trials] == [0.03, 0.02, 0.01]


def test_the_writer_process_imports_optuna_not_torch():
    # it starts at every tune; torch would cost it seconds of a core the training needs
    code = ("import sys, caviar.search.study.archive; "
            "sys.exit('torch' in sys.modules or 'pandas' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_trials_a_dead_process_left_running_are_failed_with_the_reason(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    old = optuna.create_study(storage=storage, study_name="s")
    old.tell(old.ask(), 1.0)
    old.ask()  # its process died while the trial ran
    study = open_study(storage, "s")
    store = optuna.storages.get_storage(storage)
    assert mark_interrupted(store, study) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs[keys.FAILURE] == INTERRUPTED
    assert mark_interrupted(store, study) == 0  # and only once


def test_the_round_is_read_from_either_layout():
    dist = {"x": FloatDistribution(0, 1)}
    new = create_trial(value=1.0, params={"x": 0.5}, distributions=dist,
                       user_attrs={keys.ROUND: 2})
    old = create_trial(value=1.0, params={"x": 0.5}, distributions=dist,
                       system_attrs={keys.ROUND: 1})  # written before the fix
    none = create_trial(value=1.0, params={"x": 0.5}, distributions=dist)
    assert [keys.trial_round(t) for t in (new, old, none)] == [2, 1, None]


def test_leaderboard_orders_completed_pruned_failed():
    study = optuna.create_study()
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for state, value, lr in ((TrialState.FAIL, None, 0.1), (TrialState.COMPLETE, 0.5, 0.01),
                             (TrialState.PRUNED, None, 0.02), (TrialState.COMPLETE, 0.3, 0.03)):
        study.add_trial(create_trial(
            state=state, value=value, params={"lr": lr}, distributions=dist,
            user_attrs={keys.HYPERPARAMETERS: {"learning_rate": lr,
                                               "hidden_layer_sizes": [8, 8]},
                        keys.CURVE: [{"epoch": 1}, {"epoch": 2}], keys.DURATION_S: 1.5}))
    board = leaderboard(study)
    assert list(board["trial"]) == [3, 1, 2, 0]
    assert list(board["state"]) == ["complete", "complete", "pruned", "fail"]
    assert list(board["learning_rate"]) == [0.03, 0.01, 0.02, 0.1]
    assert board["hidden_layer_sizes"][0] == "[8, 8]" and board["epochs_run"][0] == 2
    assert leaderboard(optuna.create_study()).empty
