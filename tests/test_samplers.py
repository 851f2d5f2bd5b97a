"""Samplers: make_sampler and the coarse-to-fine sampler (caviar.search.samplers)."""

import math

import optuna
import pytest

from caviar.hyperparams import resolve
from caviar.search import (
    AskTellGridSampler,
    CoarseToFineSampler,
    Space,
    choice,
    default_space,
    ema_beta,
    integer,
    log_uniform,
    make_sampler,
    uniform,
)
from caviar.search.study import keys

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A toy objective with a known optimum: learning rate 10^-2.5, dropout 0.3.
TOY = Space({"learning_rate": log_uniform(1e-5, 1e-1), "dropout": uniform(0.0, 0.5)})
OPTIMUM = {"learning_rate": -2.5, "dropout": 0.3}  # in sampling space (r)


def toy(params):
    return ((math.log10(params["learning_rate"]) + 2.5) / 4) ** 2 + ((params["dropout"] - 0.3)
                                                                     / 0.5) ** 2


def run(sampler, n_trials=80, space=TOY, objective=toy, direction="minimize"):
    study = optuna.create_study(sampler=sampler, direction=direction)
    for _ in range(n_trials):
        trial = study.ask()
        study.tell(trial, objective(space.suggest(trial)))
    return study


def c2f(seed, **options):
    return CoarseToFineSampler(n_coarse=20, n_per_round=10, seed=seed, **options)


def rounds(study):
    return study.user_attrs[keys.BOXES]


def inside(study, trial):
    """Whether each of the trial's numeric params lies in its round's box (in r)."""
    record = rounds(study)[trial.user_attrs[keys.ROUND]]
    for name, value in trial.params.items():
        dist = trial.distributions[name]
        if name in record["box"] and not isinstance(dist, optuna.distributions
                                                    .CategoricalDistribution):
            r = math.log10(value) if dist.log else value
            low, high = record["box"][name]
            if not low - 1e-9 <= r <= high + 1e-9:
                return False
    return True


def test_make_sampler_names():
    space = TOY
    assert isinstance(make_sampler("random", space, 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("tpe", space, 0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("grid", space, 0), AskTellGridSampler)
    sampler = make_sampler("coarse-to-fine", space, 0, n_coarse=8, top_k=3)
    assert isinstance(sampler, CoarseToFineSampler) and sampler.n_coarse == 8
    assert isinstance(make_sampler("coarse_to_fine", space, 0), CoarseToFineSampler)
    with pytest.raises(ValueError, match="unknown sampler 'rando' .*did you mean random"):
        make_sampler("rando", space, 0)
    with pytest.raises(ValueError, match="no option 'n_corse'.*did you mean n_coarse"):
        make_sampler("coarse-to-fine", space, 0, n_corse=3)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        CoarseToFineSampler(top_k=0)


def test_boxes_shrink_around_the_optimum():
    full = TOY.box()
    hits = total = 0
    for seed in range(5):
        study = run(c2f(seed))
        records = rounds(study)
        assert [r["round"] for r in records] == list(range(len(records)))
        assert len(records) == 7  # 20 coarse trials, then a round every 10
        assert records[0]["box"] == {}  # round 0: the whole space
        for record in records[1:]:
            for name, (low, high) in record["box"].items():
                full_low, full_high = full[name]
                assert full_low <= low < high <= full_high
                assert high - low < full_high - full_low  # strictly smaller
            total += 1
            hits += all(record["box"][n][0] <= OPTIMUM[n] <= record["box"][n][1]
                        for n in OPTIMUM)
        last = records[-1]["box"]
        assert last["learning_rate"][1] - last["learning_rate"][0] < 0.25 * 4  # of 4 decades
    assert hits / total >= 0.9, (hits, total)


def test_round_k_samples_lie_in_round_k_box():
    study = run(c2f(3))
    assert {t.user_attrs[keys.ROUND] for t in study.trials} == set(range(7))
    assert all(inside(study, t) for t in study.trials)


def test_same_seed_same_params():
    params = [t.params for t in run(c2f(7), n_trials=50).trials]
    assert params == [t.params for t in run(c2f(7), n_trials=50).trials]
    assert params != [t.params for t in run(c2f(8), n_trials=50).trials]


def test_beats_random_search_on_the_toy_objective():
    seeds = range(5)
    best_c2f = [run(c2f(s)).best_value for s in seeds]
    best_random = [run(make_sampler("random", TOY, s)).best_value for s in seeds]
    # c2f is about 20 times closer on average; ask for 4 times
    assert sum(best_c2f) < 0.25 * sum(best_random), (best_c2f, best_random)


def test_maximize_is_respected():
    study = run(c2f(1), direction="maximize", objective=lambda p: -toy(p))
    box = rounds(study)[-1]["box"]
    assert all(box[n][0] <= OPTIMUM[n] <= box[n][1] for n in OPTIMUM)
    assert study.best_value > -0.01


def test_ask_and_tell_with_16_in_flight():
    space = default_space()
    sampler = make_sampler("coarse-to-fine", space, seed=0, n_coarse=16, n_per_round=8, top_k=4)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(5):
        trials = [study.ask() for _ in range(16)]  # 16 asked before any is told
        params = [space.suggest(t) for t in trials]
        for p in params:
            resolve(p)
        for trial, p in zip(trials, params):
            score = -abs(math.log10(p["learning_rate"]) + 3) - p.get("dropout", 0)
            study.tell(trial, score)
    by_round = [t.user_attrs[keys.ROUND] for t in study.trials]
    # a round's number is fixed at ask: the 16 asked before any tell are all coarse, and
    # each later batch of 16 is one round (it starts at its first ask)
    assert by_round == [k for k in range(5) for _ in range(16)]
    assert all(inside(study, t) for t in study.trials)
    box = rounds(study)[-1]["box"]["learning_rate"]
    assert box[1] - box[0] < 0.5 * (math.log10(3e-2) + 4)


def test_rounds_wait_for_trials_of_the_current_round():
    sampler = CoarseToFineSampler(n_coarse=4, n_per_round=4, top_k=2, seed=0)
    study = optuna.create_study(sampler=sampler)
    first = [study.ask() for _ in range(8)]  # all round 0: nothing has finished
    for t in first[:4]:
        study.tell(t, TOY.suggest(t)["dropout"])

    def round_of_next_ask():
        number = study.ask().number
        return study.trials[number].user_attrs[keys.ROUND]

    assert round_of_next_ask() == 1  # 4 of round 0 finished
    for old in first[4:]:  # round-0 trials finishing later do not advance round 1
        study.tell(old, TOY.suggest(old)["dropout"])
    assert round_of_next_ask() == 1


def test_the_coarse_round_ends_when_its_time_is_up():
    """Under a time budget, round 0 ends once its share of the time has passed (tune: half
    the budget), with far fewer than n_coarse trials, as soon as top_k of them rank."""
    over = [False]
    sampler = CoarseToFineSampler(n_coarse=100, n_per_round=4, top_k=3, seed=0,
                                  coarse_over=lambda: over[0])
    study = run(sampler, n_trials=10)
    assert [r["round"] for r in rounds(study)] == [0]  # 10 of 100 coarse trials: still coarse
    over[0] = True

    def next_trial():
        trial = study.ask()
        study.tell(trial, toy(TOY.suggest(trial)))
        return study.trials[trial.number]

    first = next_trial()
    assert first.user_attrs[keys.ROUND] == 1 and inside(study, first)
    assert rounds(study)[1]["n_complete"] == 10
    # later rounds keep their own count: the next starts after n_per_round trials of round 1
    assert [next_trial().user_attrs[keys.ROUND] for _ in range(4)] == [1, 1, 1, 2]


def test_share_passed_reads_the_budget_clock():
    """What tune hands the sampler as ``coarse_over``: whether a share of the time budget
    has passed, earlier runs' seconds included."""
    from caviar.search.budget import Budget

    assert Budget(None, None, 0.0).share_passed(0.5) is None  # no time budget: by count
    budget = Budget(None, 10.0, 0.0)
    assert budget.share_passed(0.5)() is False
    assert Budget(None, 10.0, spent=5.0).share_passed(0.5)() is True  # earlier runs count


def test_pruned_and_failed_trials():
    sampler = CoarseToFineSampler(n_coarse=6, n_per_round=6, top_k=3, seed=0)
    study = optuna.create_study(sampler=sampler)
    for i in range(40):
        trial = study.ask()
        params = TOY.suggest(trial)
        if i % 3 == 0:  # pruned with a tempting intermediate value: not used in the ranking
            trial.report(-100.0, step=1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif i % 3 == 1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, toy(params))
    records = rounds(study)
    assert len(records) >= 4  # pruned ones count toward finishing a round, failed ones not
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert records[1]["n_complete"] == 3 and len(complete) == 13
    assert all(inside(study, t) for t in study.trials)


def test_categorical_and_integer_axes_narrow():
    space = Space({"optimizer": choice(["adam", "momentum", "rmsprop"]), "depth": integer(1, 8),
                   "momentum": ema_beta(0.8, 0.999, when={"optimizer": ["momentum"]})})

    def objective(p):
        return (p["optimizer"] != "rmsprop") + abs(len(p["hidden_layer_sizes"]) - 5)

    study = run(c2f(0), n_trials=60, space=space, objective=objective)
    last = rounds(study)[-1]
    assert last["choices"]["optimizer"] == ["rmsprop"]
    late = [t for t in study.trials if t.user_attrs[keys.ROUND] == len(rounds(study)) - 1]
    assert late and all(t.params["optimizer"] == "rmsprop" and "1-momentum" not in t.params
                        for t in late)
    low, high = last["box"]["depth"]
    assert low == int(low) and high == int(high) and low <= 5 <= high and high - low < 7
    assert all(inside(study, t) for t in study.trials)


def test_explore_keeps_all_choices_possible():
    space = Space({"optimizer": choice(["adam", "momentum", "rmsprop"])})
    study = run(c2f(0, explore=0.5), n_trials=80, space=space,
                objective=lambda p: float(p["optimizer"] != "adam"))
    late = [t.params["optimizer"] for t in study.trials[50:]]
    assert rounds(study)[-1]["choices"]["optimizer"] == ["adam"]
    assert set(late) == {"adam", "momentum", "rmsprop"}


def test_a_new_sampler_resumes_the_rounds():
    study = run(c2f(0), n_trials=40)
    n_rounds = len(rounds(study))
    study.sampler = c2f(0)
    for _ in range(10):
        trial = study.ask()
        study.tell(trial, toy(TOY.suggest(trial)))
    assert len(rounds(study)) == n_rounds + 1
    assert all(inside(study, t) for t in study.trials)


def test_a_study_that_kept_its_rounds_as_system_attrs_resumes_them():
    # caviar stored the round as a trial system attribute before it became a user attribute
    first = run(c2f(0), n_trials=40)
    resumed = []
    for attrs in ("user_attrs", "system_attrs"):
        study = optuna.create_study(sampler=c2f(0))
        study.set_user_attr(keys.BOXES, rounds(first))
        for t in first.trials:
            study.add_trial(optuna.trial.create_trial(
                value=t.value, params=t.params, distributions=t.distributions,
                **{attrs: {keys.ROUND: t.user_attrs[keys.ROUND]}}))
        for _ in range(10):
            trial = study.ask()
            study.tell(trial, toy(TOY.suggest(trial)))
        resumed.append([(t.user_attrs[keys.ROUND], t.params) for t in study.trials[40:]])
    assert resumed[0] == resumed[1]
    assert resumed[0][-1][0] == len(rounds(first))  # one round more, as without the move


def test_multi_objective_is_refused():
    study = optuna.create_study(sampler=c2f(0), directions=["minimize", "minimize"])
    with pytest.raises(ValueError):
        study.ask()


def test_works_with_hyperband_and_tpe_on_the_default_space():
    space = default_space()
    for sampler in (c2f(0), make_sampler("tpe", space, 0)):
        study = optuna.create_study(sampler=sampler, pruner=optuna.pruners.HyperbandPruner())
        for _ in range(2):
            trials = [study.ask() for _ in range(16)]
            for trial in trials:
                params = resolve(space.suggest(trial))
                study.tell(trial, params["learning_rate"] * params["epochs"])
        assert len(study.trials) == 32
