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
from caviar.search.study.store import INTERRUPTED, leaderboard, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_journaled_trials_the_database_missed_are_recovered(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    scratch = optuna.create_study()
    scratch.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=3)
    study.add_trial(scratch.trials[0])  # the database got the first trial only
    journal = tmp_path / "pending-trials.jsonl"
    lines = [_to_line(t, i, "s") for i, t in enumerate(scratch.trials)]
    journal.write_text("".join(lines) + lines[0][:20])  # and the kill cut a line short
    archive = TrialArchive(study, journal, storage)
    assert archive.recovered == 2
    assert [t.params["lr"] for t in study.trials] == [t.params["lr"] for t in scratch.trials]
    assert archive.put(scratch.trials[0]) == 3
    deadline = time.monotonic() + 60
    while archive.backlog and time.monotonic() < deadline:  # written while the run goes on
        time.sleep(0.05)
    assert archive.backlog == 0 and len(study.trials) == 4
    archive.close()
    assert len(study.trials) == 4 and not journal.exists()


def test_a_database_the_writer_cannot_reach_loses_no_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    scratch = optuna.create_study()
    scratch.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=3)
    journal = tmp_path / "pending-trials.jsonl"
    archive = TrialArchive(study, journal, f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    numbers = [archive.put(t) for t in scratch.trials]
    with pytest.raises(RuntimeError, match="could not write trials to the study.*running "
                                           "again adds them"):
        archive.close()
    assert numbers == [0, 1, 2] and journal.exists() and len(study.trials) == 0
    again = TrialArchive(study, journal, storage)  # the next run adds what was journaled
    again.close()
    assert again.recovered == 3
    assert [t.params["lr"] for t in study.trials] == [t.params["lr"] for t in scratch.trials]


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
    study, interrupted = open_study(storage, "s")
    assert interrupted == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs[keys.FAILURE] == INTERRUPTED
    assert open_study(storage, "s")[1] == 0  # and only once


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
