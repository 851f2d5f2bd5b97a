"""The tuner: trials share populations, budgets hold, studies resume, killed runs lose
nothing that completed."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from wine import WINE_SPACE

from caviar import CaviarModel, load_model
from caviar.data import prepare, split_frame
from caviar.engine import Population
from caviar.search.budget import REPORT_TRIAL_S, Budget, epoch_cost, structure_epoch_cost
from caviar.search.samplers import warm_start
from caviar.search.scheduler import EPOCH_SHARE, WRITER_BACKLOG, Tuner
from caviar.search.space import Space
from caviar.search.study import keys
from caviar.search.tune import tune

SPACE = WINE_SPACE




def test_the_end_s_test_records_are_what_the_saved_model_makes_of_the_table(wine_csv,
                                                                            tmp_path):
    """The end preprocesses the test rows once (``PreparedTable.test_inputs``) for the
    model's test scores, its best network's alone and the confusion matrix: each is what the
    saved model makes of the test rows read from the table."""
    result = tune(wine_csv, "cultivar", trials=24, population=8, sampler="random", space=SPACE,
                  out=tmp_path / "run", seed=3)
    model = load_model(tmp_path / "run" / "model")
    assert len(model.networks) > 1  # (this seed's ensemble) so the best one's scores are kept
    _, _, test = split_frame(pd.read_csv(wine_csv), "cultivar", "multiclass", 0.2, 0.2, 3)
    best = result.study.user_attrs["best"]
    assert best["test_scores"] == pytest.approx(model.scores(test))
    assert best["confusion_matrix"] == model.confusion_matrix(test)
    alone = CaviarModel(model.preprocessor, model.network)
    assert best["best_network_test_scores"] == pytest.approx(alone.scores(test))
    assert best["best_network_test_scores"] != pytest.approx(best["test_scores"])


def test_tune_trains_trials_in_full_populations(wine_csv, tmp_path):
    seen = []
    result = tune(wine_csv, "cultivar", trials=24, population=8, sampler="random", space=SPACE,
                  out=tmp_path / "run", seed=0, on_progress=seen.append)
    states = result.leaderboard["state"].value_counts().to_dict()
    assert sum(states.values()) == 24
    assert max(p.running for p in seen) == 8  # the vectorized batch is kept full
    assert all(p.running <= 8 for p in seen)
    assert result.test_scores["accuracy"] > 0.85
    study = result.study
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        curve = t.user_attrs["curve"]
        assert len(curve) == t.user_attrs["hyperparameters"]["epochs"]
        # a trial's value is its best epoch's: the network kept is that epoch's
        assert t.value == pytest.approx(min(r["val_log_loss"] for r in curve))
    best = study.user_attrs["best"]
    assert best["trial"] == study.best_trial.number
    assert set(best["confusion_matrix"]["labels"]) == {"barolo", "grignolino", "barbera"}
    model = load_model(tmp_path / "run" / "model")
    assert model.info["trial"] == study.best_trial.number
    frame = pd.read_csv(wine_csv)
    _, val, _ = split_frame(frame, "cultivar", "multiclass", 0.2, 0.2, 0)
    # its first network is the best trial's; the model averages those chosen by the join rule
    best_alone = CaviarModel(model.preprocessor, model.network)
    assert best_alone.scores(val)["log_loss"] == pytest.approx(study.best_value, rel=1e-4)
    assert model.scores(val)["log_loss"] == pytest.approx(model.info["ensemble_value"],
                                                          rel=1e-4)
    assert [m["trial"] for m in best["members"]] == [m["trial"] for m in model.info["members"]]
    assert set(model.predict(frame)) <= {"barolo", "grignolino", "barbera"}
    assert (tmp_path / "run" / "leaderboard.csv").exists()


def test_same_seed_same_study(wine_csv, tmp_path):
    runs = [tune(wine_csv, "cultivar", trials=10, population=4, sampler="coarse-to-fine",
                 space=SPACE, out=tmp_path / f"run{i}", seed=3) for i in range(2)]
    a, b = (r.leaderboard[["trial", "state", "value", "learning_rate"]] for r in runs)
    pd.testing.assert_frame_equal(a, b)


def test_running_again_resumes_the_study_and_its_budget(wine_csv, tmp_path):
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=6, population=4, space=SPACE, out=out, seed=1)
    result = tune(wine_csv, "cultivar", trials=10, population=4, space=SPACE, out=out, seed=1)
    assert len(result.study.trials) == 10
    assert len(result.leaderboard) == 10


def test_a_lost_model_is_refit_from_the_best_trial(wine_csv, tmp_path):
    out = tmp_path / "run"
    first = tune(wine_csv, "cultivar", trials=6, population=4, space=SPACE, out=out, seed=1)
    for file in (out / "model").iterdir():
        file.unlink()
    (out / "model").rmdir()
    again = tune(wine_csv, "cultivar", trials=6, population=4, space=SPACE, out=out, seed=1)
    assert len(again.study.trials) == 6  # the budget was spent: nothing new ran
    # the study's artifacts hold the networks: the model comes back without training
    assert "refit" not in again.model.info
    assert again.model.info["trial"] == first.study.best_trial.number
    import shutil

    shutil.rmtree(out / "model")
    shutil.rmtree(out / "artifacts")  # the networks lost too: the best trial is refit
    again = tune(wine_csv, "cultivar", trials=6, population=4, space=SPACE, out=out, seed=1)
    assert again.model.info["refit"] == first.study.best_trial.number
    assert again.test_scores["accuracy"] > 0.8
    assert (out / "model" / "model.json").exists()


def test_resuming_with_other_columns_starts_a_new_model(wine_csv, tmp_path):
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, out=out, seed=1)
    fewer = tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE, out=out, seed=1,
                 drop=["alcohol", "hue"])
    assert fewer.model.network.structure.n_inputs == 11  # 13 wine features less the two
    assert fewer.test_scores["accuracy"] > 0.5


def test_resuming_with_another_scaling_keeps_no_network_of_the_old_one(wine_csv, tmp_path):
    out = tmp_path / "run"
    tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, out=out, seed=1,
         numeric="quantile")
    saved = (out / "model" / "model.json").read_text()
    # no trial left to train with the new scaling: refused, and the saved model is untouched
    with pytest.raises(ValueError, match="no trial completed"):
        tune(wine_csv, "cultivar", trials=4, population=4, space=SPACE, out=out, seed=1,
             numeric="asinh")
    assert (out / "model" / "model.json").read_text() == saved
    assert load_model(out / "model").preprocessor.numeric == "quantile"
    # more trials: the model holds only networks that read the new inputs, and loads
    again = tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE, out=out, seed=1,
                 numeric="asinh")
    model = load_model(out / "model")
    assert model.preprocessor.numeric == "asinh"
    assert {n.hyperparameters[0]["numeric"] for n in model.networks} == {"asinh"}
    assert {m["trial"] for m in model.info["members"]} <= {4, 5, 6, 7}
    np.testing.assert_allclose(model.predict_proba(pd.read_csv(wine_csv)),
                               again.model.predict_proba(pd.read_csv(wine_csv)), rtol=1e-5)


def test_ensemble_of_one_keeps_the_best_network_alone(wine_csv, tmp_path):
    result = tune(wine_csv, "cultivar", trials=8, population=4, space=SPACE,
                  out=tmp_path / "run", seed=2, ensemble=1)
    assert len(result.model.networks) == 1
    assert result.model.info["trial"] == result.study.best_trial.number


def test_diverging_trials_fail_with_a_reason_and_the_others_go_on(wine_csv, tmp_path):
    space = dict(SPACE, optimizer={"value": "sgd"}, momentum={"value": 0.9},
                 learning_rate={"kind": "choice", "values": [1e-2, 1e9]})
    result = tune(wine_csv, "cultivar", trials=12, population=6, sampler="random",
                  space=space, out=tmp_path / "run", seed=0, pruner="none")
    trials = result.study.trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert failed and complete
    assert all("diverged" in t.user_attrs["failure"] for t in failed)
    assert all(t.params["learning_rate"] == 1e9 for t in failed)
    assert all(t.params["learning_rate"] == 1e-2 for t in complete)


def test_grid_sampler_covers_the_grid(wine_csv, tmp_path):
    space = dict(SPACE, learning_rate={"kind": "choice", "values": [1e-3, 1e-2]},
                 optimizer={"value": "adam"}, dropout={"value": 0.0},
                 epochs={"value": 3})
    space.pop("momentum")
    result = tune(wine_csv, "cultivar", trials=50, population=8, sampler="grid", space=space,
                  out=tmp_path / "run", seed=0, pruner="none")
    points = {(t.params["learning_rate"], t.params["width"]) for t in result.study.trials}
    assert points == {(lr, w) for lr in (1e-3, 1e-2) for w in (8, 16)}


@pytest.mark.slow
def test_a_killed_run_loses_no_completed_trial(wine_csv, tmp_path):
    out = tmp_path / "run"
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SPACE))
    code = (
        "import json, sys; from caviar.search.tune import tune; "
        f"tune({str(wine_csv)!r}, 'cultivar', trials=400, population=4, out={str(out)!r}, "
        f"space=json.load(open({str(space_file)!r})), seed=0)")
    # its own process group, so that the kill takes the database writer process too: the
    # journal, not the writer, must bring back what the database missed
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ},
                            start_new_session=True)
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    finished = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="wine-cultivar", storage=storage)
            finished = [t for t in study.trials if t.state.is_finished()]
        except Exception:  # the database or the study may not exist yet
            continue
        if len(finished) >= 6:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(finished) >= 6, "the tuning process did not finish trials in time"
    before = {t.number: (t.state, t.value) for t in optuna.load_study(
        study_name="wine-cultivar", storage=storage).trials if t.state.is_finished()}

    result = tune(wine_csv, "cultivar", trials=len(before) + 8, population=4, space=SPACE,
                  out=out, seed=0)
    after = {t.number: t for t in result.study.trials}
    for number, (state, value) in before.items():  # nothing finished was lost or changed
        assert after[number].state == state and after[number].value == value
    # trials that finished but were not yet in the database when the process died come
    # back from the journal; those running are in the study (created when asked) and end
    # failed, interrupted, and are re-queued; the budget counts them all (a copy for the
    # trial it replaces), and new ones fill the rest
    assert all(t.state.is_finished() for t in after.values())
    recovered = result.extra["recovered_trials"]
    interrupted = result.extra["interrupted_trials"]
    assert interrupted <= 4  # at most a population
    assert len(after) == max(len(before) + recovered + interrupted,
                             len(before) + 8) + interrupted


def test_time_budget_stops_running_trials_and_keeps_the_best(wine_csv, tmp_path):
    space = dict(SPACE, epochs={"value": 400})  # long trials: the budget ends them
    space["learning_rate"] = {"kind": "log_uniform", "low": 1e-3, "high": 1e-2}
    started = time.monotonic()
    # 2 s of the 3 are the end's (END_S): no trial completes, and the run says so
    with pytest.warns(UserWarning, match="no trial completed: the model is barely trained"):
        result = tune(wine_csv, "cultivar", time_budget=3, population=4, sampler="random",
                      pruner="none", space=space, out=tmp_path / "short", seed=1)
    assert time.monotonic() - started < 60
    stopped = [t for t in result.study.trials if t.user_attrs.get("stopped") == "time budget"]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in stopped)
    assert stopped  # 400 epochs: the budget ended them
    assert (tmp_path / "short" / "model" / "model.json").exists()
    # the search stopped early enough for the end of the run to fit in the budget too
    assert 0 < result.study.user_attrs["elapsed_s"] < 3.5  # (ending the stopped trials)


def test_only_a_run_that_writes_the_report_holds_its_time_back(wine_csv, tmp_path):
    # the report's part grows with the trials (seconds for thousands): a run without a
    # report, as tune() by default, keeps that time for its search
    data = prepare(pd.read_csv(wine_csv), "cultivar", seed=0)
    reserves = {}
    for report in (True, False):
        tuner = Tuner(optuna.create_study(), Space.from_dict(WINE_SPACE), data,
                      Budget(None, 60.0, 0.0), 4, None, seed=0, report=report)
        tuner.finished[optuna.trial.TrialState.PRUNED] = 2000
        reserves[report] = tuner.end_reserve()
    assert reserves[True] - reserves[False] == pytest.approx(2000 * REPORT_TRIAL_S)
    # tune(report=True) writes it, within the run, as the command line does
    result = tune(wine_csv, "cultivar", trials=4, population=4, space=WINE_SPACE,
                  out=tmp_path / "r", report=True)
    assert result.report == tmp_path / "r" / "report.html" and result.report.is_file()
    assert "<html" in result.report.read_text()[:2000].lower()
    plain = tune(wine_csv, "cultivar", trials=4, population=4, space=WINE_SPACE,
                 out=tmp_path / "p")
    assert plain.report is None and not (tmp_path / "p" / "report.html").exists()


def _cheap_and_costly_groups(measured: bool = True) -> tuple[Tuner, Budget, Any, Any]:
    """A tuner (speed 1, unless not ``measured``: no epoch run yet) with a group of one
    cheap network and one of a costly one."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(5000, 8)), columns=[f"x{j}" for j in range(8)])
    table["y"] = table.sum(axis=1) + rng.normal(size=5000)
    space = Space.from_dict({"width": {"kind": "choice", "values": [8, 1024]},
                             "depth": {"kind": "choice", "values": [1, 3]},
                             "batch_size": {"value": 256}, "epochs": {"value": 50},
                             "learning_rate": {"kind": "log_uniform", "low": 1e-3,
                                               "high": 1e-2}})
    cheap, costly = ({"hidden_layer_sizes": (8,), "batch_size": 256, "epochs": 50},
                     {"hidden_layer_sizes": (1024,) * 3, "batch_size": 256, "epochs": 50})
    budget = Budget(None, 1000.0, 0.0)
    # the end priced as on an idle core: the tests set the time left from the reserve, which
    # another process's load would otherwise change between their reading and the tuner's
    budget.slowdown = lambda: 1.0
    tuner = Tuner(optuna.create_study(), space, prepare(table, "y", seed=0), budget, 2, None,
                  seed=0, warm=warm_start(space, [cheap, costly]))
    tuner.fill()
    small, large = sorted(tuner.groups, key=lambda g: g.population.structure.layer_sizes[1])
    if measured:
        tuner._measured, tuner._estimated, tuner._warm = 1.0, 1.0, True  # speed 1 from now
    return tuner, budget, small, large


def test_before_a_second_epoch_ends_the_first_epoch_s_pace_decides_what_fits():
    """The first epoch is not counted in the speed (it pays for warming up), but until
    another ends it is the one pace measured: an epoch that it says would end past the
    budget does not start (a 30 s tune of 400,000 rows took 40 s: its second epoch of 10 s
    started unchecked)."""
    tuner, budget, small, large = _cheap_and_costly_groups(measured=False)
    small.cost, large.cost = 0.0, 1.0  # the cheap group's turn
    assert tuner.train_next_epoch() is small and tuner._estimated == 0.0
    first = tuner._pace() * epoch_cost(small.population, tuner._cost_rows)  # its seconds
    assert first > 0
    # time left: the end's reserve and half the first epoch's seconds
    budget.start = time.monotonic() - 1000.0 + tuner.end_reserve() + first / 2
    assert tuner.train_next_epoch() is None
    assert small.population.epoch.tolist() == [1] and large.population.epoch.tolist() == [0]
    budget.start += first + 1.0  # a second more: the cheap epoch fits (its turn first)
    assert tuner.train_next_epoch() is small
    assert small.population.epoch.tolist() == [2] and large.population.epoch.tolist() == [0]
    assert tuner._estimated > 0  # from now on the speed of the epochs after the first


def test_near_the_budget_s_end_a_cheaper_group_trains_when_the_fair_one_would_not_fit():
    tuner, budget, small, large = _cheap_and_costly_groups()
    small.cost, large.cost = 1.0, 0.0  # the costly group's turn: it has used less time
    rows = tuner._cost_rows
    small_s, large_s = epoch_cost(small.population, rows), epoch_cost(large.population, rows)
    assert large_s > 10 * small_s
    # time left: the end's reserve and the costly epoch's half
    budget.start = time.monotonic() - 1000.0 + tuner.end_reserve() + large_s / 2
    assert tuner.train_next_epoch() is small
    assert small.population.epoch.tolist() == [1] and large.population.epoch.tolist() == [0]
    assert small.cost == 1.0 + small_s and large.cost == 0.0
    budget.start -= large_s  # now not even the cheap epoch fits: nothing trains
    assert tuner.train_next_epoch() is None
    assert small.population.epoch.tolist() == [1] and large.population.epoch.tolist() == [0]


def test_the_first_epoch_runs_unpriced_but_ends_at_the_budget_s_deadline():
    """A model needs one epoch, so the first is not priced; but where one epoch outlasts the
    budget (a 30 s tune of a million rows took 58 s, its epoch 30 s), it stops its
    minibatches at the time held back for the end, and still counts and reports."""
    tuner, budget, small, large = _cheap_and_costly_groups(measured=False)
    small.cost, large.cost = 1.0, 0.0  # the costly group's turn
    budget.start = time.monotonic() - 1000.0 + tuner.end_reserve()  # no time left but the end's
    assert tuner.train_next_epoch() is large
    assert large.population.epoch.tolist() == [1]
    assert large.population.optimizer.t.tolist() == [1.0]  # one minibatch of its many
    assert len(tuner.data.X_train) > 4 * 256
    assert large.trials[0].number in {t.number for t in tuner.study.get_trials()
                                      if t.intermediate_values}
    assert tuner.train_next_epoch() is None  # and nothing more starts


def test_a_costly_epoch_that_no_longer_fits_does_not_end_the_search():
    """After the costly group's epoch, another would not fit, but the cheap one's would: the
    run is not out of time (digits at 10 s once stopped after one epoch of every network)."""
    tuner, budget, small, large = _cheap_and_costly_groups()
    small.cost, large.cost = 1.0, 0.0
    assert tuner.train_next_epoch() is large
    large_s = epoch_cost(large.population, tuner._cost_rows)
    budget.start = time.monotonic() - 1000.0 + tuner.end_reserve() + large_s / 2
    assert not budget.out_of_time()
    assert tuner.train_next_epoch() is small


def test_a_group_s_epoch_stays_a_small_share_of_the_time_budget():
    """Fair time takes turns by epochs: one epoch of 30 wide networks took 6-8 s of a 10 s
    tune (snmesp). Members of a costly structure split into groups whose epoch fits
    EPOCH_SHARE of the budget; without a time budget, one group takes them all."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(2000, 8)), columns=[f"x{j}" for j in range(8)])
    table["y"] = table.sum(axis=1) + rng.normal(size=2000)
    space = Space.from_dict({"width": {"value": 512}, "depth": {"value": 2},
                             "batch_size": {"value": 256}, "epochs": {"value": 5}})
    data = prepare(table, "y", seed=0)
    untimed = Tuner(optuna.create_study(), space, data, Budget(8, None, 0.0), 8, None, seed=0)
    untimed.fill()
    assert [g.population.size for g in untimed.groups] == [8]
    one = untimed.groups[0].population.structure
    rows = untimed._cost_rows
    seconds = (structure_epoch_cost(one, rows, 3) + structure_epoch_cost(one, rows, 4)) / (
        2 * EPOCH_SHARE)  # 3 members fit, not 4
    assert structure_epoch_cost(one, rows, 3) <= EPOCH_SHARE * seconds
    assert structure_epoch_cost(one, rows, 4) > EPOCH_SHARE * seconds
    timed = Tuner(optuna.create_study(), space, data, Budget(None, seconds, 0.0), 8, None,
                  seed=0)
    timed.fill()
    assert sorted(g.population.size for g in timed.groups) == [2, 3, 3]
    assert len({g.key for g in timed.groups}) == 1  # one structure, in three groups
    assert all(g.shape == g.population.structure for g in timed.groups)  # what is costed
    assert timed.running == 8


def _one_known_network(epochs: int) -> tuple[Any, Space, list]:
    """A small regression table, a space of two widths, and a warm start of one network."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(300, 4)), columns=[f"x{j}" for j in range(4)])
    table["y"] = table.sum(axis=1) + rng.normal(size=300)
    space = Space.from_dict({"width": {"kind": "choice", "values": [8, 16]},
                             "depth": {"value": 1}, "batch_size": {"value": 64},
                             "epochs": {"value": epochs}})
    known = {"hidden_layer_sizes": (8,), "batch_size": 64, "epochs": epochs}
    return prepare(table, "y", seed=0), space, warm_start(space, [known])


def test_a_warm_start_network_trains_alone_and_the_search_fills_the_other_slots():
    """A known-good network is not a leader others join: with 15 random draws beside it, a
    short budget gave it a sixteenth of its epochs. Alone, it gets its group's turns."""
    data, space, warm = _one_known_network(epochs=5)
    tuner = Tuner(optuna.create_study(), space, data, Budget(None, 1000.0, 0.0), 8, None,
                  seed=0, warm=warm)
    tuner.fill()
    solo = [g for g in tuner.groups if g.solo]
    assert [g.population.size for g in solo] == [1]
    assert solo[0].trials[0].number == 0  # the warm start's trial, the study's first
    assert sum(g.population.size for g in tuner.groups if not g.solo) == 7
    while solo[0] in tuner.groups:  # when it ends, its slot goes to the search, not to it
        tuner.train_next_epoch()
        tuner.fill()
    assert all(not g.solo for g in tuner.groups) and tuner.running == 8


def test_a_warm_start_network_is_never_pruned():
    """The known-good network is the short tune's floor: the estimators' defaults learn
    slowly at first (digits: log-loss 2.05 after one epoch) and were pruned at the first rung.
    With a pruner that prunes every trial, it still runs all its epochs."""
    data, space, warm = _one_known_network(epochs=4)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    tuner = Tuner(study, space, data, Budget(8, 1000.0, 0.0), 4, None, seed=0, warm=warm)
    tuner.run()
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == optuna.trial.TrialState.COMPLETE  # the warm start's
    assert len(trials[0].intermediate_values) == 4
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in trials[1:])
    assert all(len(t.intermediate_values) == 1 for t in trials[1:])


def test_the_estimators_network_goes_first_where_its_turns_would_not_end_it_in_time():
    """Groups take turns by time, so a warm-start network gets one turn in as many as there
    are groups. The estimators' network (``first``) trains before every other group where,
    at that pace, it would not end its epochs within the time budget, so a short tune holds
    as much of it as fits; with time to spare it takes its turns like the others."""
    data, space, warm = _one_known_network(epochs=100_000)
    warm = [dataclasses.replace(w, first=True) for w in warm]
    for seconds, behind in ((1e9, False), (30.0, True)):
        tuner = Tuner(optuna.create_study(), space, data, Budget(None, seconds, 0.0), 8, None,
                      seed=0, warm=warm)
        tuner.fill()
        (solo,) = [g for g in tuner.groups if g.solo]
        assert solo.first and len(tuner.groups) > 1
        turns = [tuner.train_next_epoch() for _ in range(6)]
        assert tuner.behind(solo) is behind
        assert all(group is solo for group in turns) is behind


def test_the_full_schedule_networks_go_first_only_where_that_ends_their_schedule():
    """The warm start's networks on RealMLP's decaying schedule are there for its last
    epochs' fine fit. Where one turn in as many as there are groups would not reach them
    within the time budget but training first would, they go before every other group;
    where they could not end their schedule even alone, they take their turns like the
    others, and the search keeps its time."""
    # epochs enough that half the group's time alone (the margins below) is seconds, far
    # beyond how much the end's reserve moves between two epochs on a busy machine
    data, space, warm = _one_known_network(epochs=20_000)
    warm = [dataclasses.replace(w, full_schedule=True) for w in warm]
    tuner = Tuner(optuna.create_study(), space, data, Budget(None, 1e9, 0.0), 8, None,
                  seed=0, warm=warm)
    tuner.fill()
    (solo,) = [g for g in tuner.groups if g.solo]
    assert solo.full_schedule and len(tuner.groups) > 1
    for _ in range(6):
        tuner.train_next_epoch()
    assert not tuner.behind(solo)  # time to spare: its turns end it
    pop = solo.population
    alone = ((pop.hyperparameters[0]["epochs"] - int(pop.epoch[0]))
             * epoch_cost(pop, tuner._cost_rows) * tuner.speed)
    spent = tuner.budget.elapsed + tuner.budget.reserve
    tuner.budget.time_budget = spent + 1.5 * alone  # alone it ends; by turns it would not
    assert tuner.behind(solo)
    assert all(tuner.train_next_epoch() is solo for _ in range(4))
    tuner.budget.time_budget = spent + 0.5 * alone  # not even alone: its turns, no more
    assert not tuner.behind(solo)


def test_the_coarse_round_compares_structures(wine_csv, tmp_path):
    # one structure per population: a coarse round the size of one population would see a
    # single structure, and coarse-to-fine would then narrow every structural choice to it
    space = {**SPACE, "width": {"kind": "choice", "values": [8, 16, 32, 64]},
             "batch_size": {"kind": "choice", "values": [16, 32]}}
    result = tune(wine_csv, "cultivar", trials=80, population=16, sampler="coarse-to-fine",
                  space=space, out=tmp_path / "run", seed=0)
    # the round is a user attribute of every trial the database holds (the report reads it)
    assert all(isinstance(t.user_attrs.get(keys.ROUND), int) for t in result.study.trials)
    coarse = [t for t in result.study.trials if keys.trial_round(t) == 0]
    assert len(coarse) >= 64  # 2 × trials_per_structure (2 × population)
    assert len({(t.params["width"], t.params["batch_size"]) for t in coarse}) >= 2


def test_epoch_cost_grows_with_the_work_and_shares_the_step_cost():
    def population(width: int, depth: int, members: int) -> Population:
        return Population("regression", 10, [{"hidden_layer_sizes": (width,) * depth,
                                              "batch_size": 64}] * members)

    small, wide = population(32, 1, 8), population(256, 3, 8)
    assert epoch_cost(wide, 1000) > 5 * epoch_cost(small, 1000)  # measured ~11×
    assert epoch_cost(small, 2000) > epoch_cost(small, 1000)
    # one population of 8 costs less than 8 populations of one: that is the caviar approach
    assert epoch_cost(small, 1000) < 8 * epoch_cost(population(32, 1, 1), 1000)


def test_groups_take_turns_by_time_not_by_epochs(wine_csv, tmp_path, monkeypatch):
    # two structures whose epochs cost ~100× apart: the cheap one runs many epochs per epoch
    # of the costly one, and the group that runs is always the one that has used the least
    space = {**SPACE, "width": {"kind": "choice", "values": [4, 512]}, "depth": {"value": 3},
             "epochs": {"value": 4}}
    turns = []
    run_epoch = Tuner.run_epoch

    def recording(self, group, until=None):
        before = group.cost - epoch_cost(group.population, self._cost_rows)
        others = [g.cost for g in self.groups if g is not group]
        turns.append((group.key[0][0], before, others))
        return run_epoch(self, group, until)

    monkeypatch.setattr(Tuner, "run_epoch", recording)
    tune(wine_csv, "cultivar", trials=24, population=8, trials_per_structure=4, pruner="none",
         sampler="random", space=space, out=tmp_path / "run", seed=0)
    both = [(width, before, others) for width, before, others in turns if others]
    assert {width for width, _, _ in both} == {4, 512}, "the seed should draw both at once"
    widths = [width for width, _, _ in both]
    assert widths.count(4) > 3 * widths.count(512)
    assert all(before <= min(others) + 1e-12 for _, before, others in both)


def test_a_warm_start_network_trains_with_its_values_the_space_does_not_draw():
    """A known network of 4 TabM-mini sub-networks in a space that draws no tabm_k: the warm
    start's trial trains it as it is, and the search's own trials stay one network."""
    data, space, _ = _one_known_network(epochs=3)
    warm = warm_start(space, [{"hidden_layer_sizes": (8,), "batch_size": 64, "epochs": 3,
                               "tabm_k": 4}])
    assert warm[0].outside == {"tabm_k": 4}
    study = optuna.create_study()
    tuner = Tuner(study, space, data, Budget(6, None, 0.0), 3, None, seed=0, warm=warm)
    tuner.fill()
    (solo,) = [g for g in tuner.groups if g.solo]
    assert solo.population.hyperparameters[0]["tabm_k"] == 4
    assert solo.shape.tabm_k == 4  # four sub-networks, not a label on one
    tuner.run()
    trials = study.get_trials(deepcopy=False)
    assert [t.user_attrs[keys.HYPERPARAMETERS]["tabm_k"] for t in trials] == [4] + [1] * 5
    assert trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage:UserWarning")
def test_a_requeued_warm_start_trial_trains_again_as_it_was(tmp_path):
    """A dead worker's warm-start trial, re-queued by Optuna's retry callback (which copies
    its params and user attributes), is trained by another worker as the same network:
    alone, first when behind (as the estimators' network), never pruned, with the values its
    space does not draw."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from caviar.search.study.archive import TrialArchive
    from caviar.search.study.shared import SharedStudy
    from caviar.search.study.storage import open_storage
    from caviar.search.study.store import open_study, working_copy

    data, space, _ = _one_known_network(epochs=3)
    (known,) = warm_start(space, [{"hidden_layer_sizes": (8,), "batch_size": 64,
                                   "epochs": 3, "tabm_k": 4}])
    known = dataclasses.replace(known, first=True)  # as the estimators' network is
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = open_storage(url)
    study = open_study(store, "s")
    # the dead worker's trial: asked as the warm start asks it, failed, re-queued
    study.enqueue_trial(known.params, user_attrs=known.attrs())
    dead = study.ask()
    space.suggest(dead)
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, study.trials[0])  # what caviar's storage uses
    assert study.trials[1].state == optuna.trial.TrialState.WAITING
    working = working_copy(study, optuna.samplers.RandomSampler(seed=0),
                           optuna.pruners.NopPruner())
    shared = SharedStudy(store, study, working, "survivor:1")
    archive = TrialArchive(url, "s", tmp_path / "journal.jsonl", str(tmp_path / "artifacts"))
    tuner = Tuner(working, space, data, Budget(3, None, 0.0), 2, None, seed=0,
                  archive=archive, shared=shared)
    tuner.fill()
    (solo,) = [g for g in tuner.groups if g.solo]
    assert solo.population.size == 1
    assert solo.population.hyperparameters[0]["tabm_k"] == 4
    assert solo.trials[0].user_attrs[keys.WARM] is True and solo.first
    assert all(g.population.hyperparameters[0]["tabm_k"] == 1 for g in tuner.groups
               if not g.solo)
    tuner.run()
    archive.close()
    retried = optuna.load_study(study_name="s", storage=url).trials[1]
    assert retried.state == optuna.trial.TrialState.COMPLETE
    assert retried.user_attrs[keys.HYPERPARAMETERS]["tabm_k"] == 4


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_on_one_core_the_search_waits_for_the_writer_as_soon_as_it_lags(tmp_path):
    """On one core with one torch thread the niced writer got next to no CPU beside training
    (a 10 s tune of a 400-row table had written nothing after 2.8 s), and the reserve held
    back for its backlog ended the search at 3 s. Now the search waits for it once it lags
    WRITER_BACKLOG lines, and the reserve prices a line at the writer's measured CPU time."""
    import torch

    from caviar.search.study.archive import TrialArchive
    from caviar.search.study.shared import SharedStudy
    from caviar.search.study.storage import open_storage
    from caviar.search.study.store import open_study, working_copy

    data, _, _ = _one_known_network(epochs=1)
    space = Space.from_dict({"width": {"value": 4}, "depth": {"value": 1},
                             "batch_size": {"value": 256}, "epochs": {"value": 1}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = open_storage(url)
    study = open_study(store, "s")
    working = working_copy(study, optuna.samplers.RandomSampler(seed=0),
                           optuna.pruners.NopPruner())
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cores)})  # the writer process inherits the one core
    torch.set_num_threads(1)
    backlogs: list[int] = []
    try:
        archive = TrialArchive(url, "s", tmp_path / "journal.jsonl")
        tuner = Tuner(working, space, data, Budget(400, None, 0.0), 16, None, seed=0,
                      archive=archive, shared=SharedStudy(store, study, working, "one:1"),
                      on_progress=lambda _: backlogs.append(archive.backlog))
        tuner.run()
        measured = tuner._writer_line_seconds()
        written, seconds = archive.written, archive.writer_seconds
        archive.close()
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
    assert len(backlogs) >= 20 and max(backlogs) <= WRITER_BACKLOG
    assert written >= WRITER_BACKLOG and measured == pytest.approx(seconds / written)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 400


def test_a_tune_of_a_large_table_trains_on_all_but_5000_validation_rows(tmp_path):
    # the validation rows are capped (data.prepare.validation_share): the rest train
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=30_000)})
    table["y"] = 2 * table["x"] + rng.normal(scale=0.1, size=30_000)
    result = tune(table, "y", trials=2, population=2, sampler="random", space=SPACE,
                  out=tmp_path / "run", seed=0)
    split = result.study.user_attrs[keys.DATA]["split"]  # what the report shows
    assert (split["train_rows"], split["val_rows"], split["test_rows"]) == (19_000, 5_000, 6_000)
