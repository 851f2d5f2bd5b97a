"""``numeric="auto"``: the known-good networks train under robust and quantile scaling, and
the search goes on with the scaling of the best of them (``caviar.search.scaling``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd
from commandline import invoke
from wine import WINE_WARM

from caviar.data import prepare
from caviar.metrics import get_metric
from caviar.search.budget import Budget
from caviar.search.samplers import warm_start
from caviar.search.scaling import ScalingChoice
from caviar.search.scheduler import Tuner
from caviar.search.space import Space
from caviar.search.study import keys

SCALINGS = ["robust", "quantile"]


def _skewed_table() -> pd.DataFrame:
    """A target linear in the log of a log-normal count: robust scaling's clipping squeezes
    the count's upper tail into one value, the quantile transform keeps its order."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"count": rng.lognormal(3.0, 2.0, size=400),
                          "x": rng.normal(size=400)})
    table["y"] = 2 * np.log(table["count"]) + table["x"] + rng.normal(scale=0.3, size=400)
    return table


def _auto_tuner(metric: str | None, trials: int, seed: int) -> tuple[Tuner, optuna.Study]:
    """A tuner of ``numeric="auto"``: the table holds both scalings, the space searches
    them, and one small known network is the warm start (one network per scaling)."""
    space = Space.from_dict({"width": {"kind": "choice", "values": [8, 16]},
                             "depth": {"value": 1}, "batch_size": {"value": 64},
                             "epochs": {"value": 30},
                             "numeric": {"kind": "choice", "values": SCALINGS}})
    warm = warm_start(space, [{"hidden_layer_sizes": (8,), "batch_size": 64, "epochs": 30}])
    metric_obj = get_metric(metric, "regression")
    study = optuna.create_study(direction=metric_obj.direction)
    data = prepare(_skewed_table(), "y", seed=0, numeric=SCALINGS)
    tuner = Tuner(study, space, data, Budget(trials, None, 0.0), 4, None, seed=seed, warm=warm,
                  metric=metric_obj, scaling=ScalingChoice(space, len(warm), metric_obj.loss))
    return tuner, study


def _scaling(trial: optuna.trial.FrozenTrial) -> str:
    return trial.user_attrs[keys.HYPERPARAMETERS]["numeric"]


def _check_the_choice(study: optuna.Study, best_of: Callable, warm_count: int) -> str:
    """The choice the run recorded, against the one recomputed from its trials: the scaling
    of the best warm-start network (ties: robust, the table's own); every trial asked after
    the choice reads it; every one before it, the warm start aside, reads robust."""
    trials = study.get_trials(deepcopy=False)
    warm = [t for t in trials if t.user_attrs.get(keys.WARM)]
    # each known-good configuration under each scaling: the study's first trials
    assert [t.number for t in warm] == list(range(warm_count))
    assert sorted(map(_scaling, warm)) == sorted(SCALINGS * (warm_count // 2))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in warm)
    best = {s: best_of([t.value for t in warm if _scaling(t) == s]) for s in SCALINGS}
    expected = "robust" if best_of([best["robust"], best["quantile"]]) == best["robust"] \
        else "quantile"
    chosen = study.user_attrs[keys.SCALING]
    assert chosen["scaling"] == expected
    assert chosen["best"] == best
    before = [t for t in trials if warm_count <= t.number < chosen["from_trial"]]
    assert {_scaling(t) for t in before} <= {"robust"}
    after = [t for t in trials if t.number >= chosen["from_trial"]]
    assert {_scaling(t) for t in after} <= {expected}
    return expected


def test_the_search_goes_on_with_the_scaling_of_the_best_warm_start_network():
    tuner, study = _auto_tuner(None, trials=40, seed=6)
    tuner.run()
    # RMSE, lower is better; at this seed quantile's network wins (1.54 against 6.84), so the
    # search switches from robust to it
    assert _check_the_choice(study, min, warm_count=2) == "quantile"
    assert len(study.trials) == 40
    # the choice came early enough for most of the search to read it
    assert study.user_attrs[keys.SCALING]["from_trial"] < 20


def test_a_maximized_metric_chooses_the_higher_score():
    tuner, study = _auto_tuner("r2", trials=24, seed=0)
    tuner.run()
    # R² 0.61 against 0.11: the lower would be quantile's
    assert _check_the_choice(study, max, warm_count=2) == "robust"


def test_the_groups_of_the_other_scaling_take_no_more_trials():
    tuner, study = _auto_tuner(None, trials=200, seed=6)
    while tuner.scaling.chosen is None:
        tuner.fill()
        tuner.train_next_epoch()
    chosen = tuner.scaling.chosen
    assert chosen == "quantile" and any(g.numeric == "robust" for g in tuner.groups)
    assert all(g.retired for g in tuner.groups if not g.solo and g.numeric != chosen)
    tuner.fill()
    for group in tuner.groups:
        if group.numeric != chosen:
            assert not group.joining


def test_the_command_line_says_what_auto_chose(wine_csv, tmp_path):
    """The default space's warm start (the estimators' network on its two schedules and the
    RealMLP-like network, each under both scalings) through ``caviar tune --numeric auto``."""
    run = invoke("tune", wine_csv, "--target", "cultivar", "--trials", 12, "--population", 8,
                 "--numeric", "auto", "--out", tmp_path / "run", "--seed", 5)
    assert run.exit_code == 0, run.output
    study = optuna.load_study(study_name=None,
                              storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    chosen = _check_the_choice(study, min, warm_count=2 * WINE_WARM)
    said = " ".join(run.stdout.split())  # the console wraps long lines
    best = study.user_attrs[keys.SCALING]["best"]
    assert set(best) == {"robust", "quantile"}
    scores = ", ".join(f"{scaling} {value:.4g}" for scaling, value in best.items())
    assert (f"numeric scaling {chosen}, chosen by the warm start's best validation score "
            f"({scores}), from trial {study.user_attrs[keys.SCALING]['from_trial']} on") in said
    # the report's banner says it too
    page = (tmp_path / "run" / "report.html").read_text()
    assert (f'<div class="k">numeric scaling</div><div class="v">{chosen} <small>(the warm '
            f"start's best; from trial #{study.user_attrs[keys.SCALING]['from_trial']})"
            "</small>") in page


def test_a_resumed_run_goes_on_with_the_scaling_chosen_before(wine_csv, tmp_path):
    """The choice is made from the study's warm-start trials, so a resumed run (or another
    worker, which sees them through ``refresh``) makes the same one without a warm start."""
    from caviar.search.tune import tune

    out = tmp_path / "run"
    first = tune(wine_csv, "cultivar", trials=12, population=8, out=out, seed=7,
                 numeric="auto")
    # at this seed a warm network reading quantiles wins
    chosen = _check_the_choice(first.study, min, warm_count=2 * WINE_WARM)
    assert chosen == "quantile"
    again = tune(wine_csv, "cultivar", trials=20, population=8, out=out, seed=7,
                 numeric="auto")
    trials = again.study.get_trials(deepcopy=False)
    assert len(trials) == 20
    assert sum(bool(t.user_attrs.get(keys.WARM)) for t in trials) == 2 * WINE_WARM
    assert {_scaling(t) for t in trials[12:]} == {chosen}
    assert again.study.user_attrs[keys.SCALING]["from_trial"] == 12
