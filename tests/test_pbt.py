"""Population-based training: exploit is a row copy, explore stays in the space on its scale,
a seeded run repeats, a decaying learning rate is found, the lineage reaches the study; after
a coarse search, the populations start from its best structures and trials."""

import json
import math
import random
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from commandline import assert_one_error_line, invoke
from wine import WINE_SPACE, wine_frame

from caviar.data import prepare
from caviar.search import Space, ema_beta, log_uniform, uniform
from caviar.search.budget import Budget
from caviar.search.pbt import PopulationBasedTraining, explore, replay
from caviar.search.study import keys
from caviar.search.tune import tune

SPACE = {**WINE_SPACE, "epochs": {"value": 6}}


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return wine_frame()


def _pbt(frame: pd.DataFrame, tmp_path, population: int = 4) -> PopulationBasedTraining:
    data = prepare(frame, "cultivar", seed=0)
    return PopulationBasedTraining(optuna.create_study(), Space.from_dict(SPACE), data,
                                   Budget(population, None, 0.0), population, tmp_path, seed=0,
                                   structures=1, coarse=0)


def _state(pop) -> dict[str, torch.Tensor]:
    out = {f"param.{k}": t.clone() for k, t in pop.params.items()}
    out.update({f"buffer.{k}": t.clone() for k, t in pop.buffers.items()})
    out.update({f"v.{k}": t.clone() for k, t in pop.optimizer.v.items()})
    out.update({f"s.{k}": t.clone() for k, t in pop.optimizer.s.items()})
    out["t"] = pop.optimizer.t.clone()
    return out


def test_exploit_copies_one_row_and_leaves_the_others_bitwise(wine, tmp_path):
    pbt = _pbt(wine, tmp_path)
    (p,) = pbt._start_round()
    assert p.population.structure.batch_norm  # batch-norm statistics are part of the copy
    for _ in range(2):
        pbt._epoch(p)
    before = _state(p.population)
    worst = max(range(4), key=lambda i: (p.scores[i], i))
    best = min(range(4), key=lambda i: (p.scores[i], i))
    pbt.exploit_and_explore(p, epoch=2)
    after = _state(p.population)
    (event,) = p.events  # a quarter of 4 members: one copy, worst from best
    assert event["member"] == p.members[worst].id and event["copied_from"] == p.members[best].id
    for name in before:
        for i in range(4):
            expected = before[name][best] if i == worst else before[name][i]
            assert torch.equal(after[name][i], expected), (name, i)
    # then explore changed the copy's hyperparameters, and only its
    assert p.members[worst].schedule[-1]["copied_from"] == p.members[best].id
    changed = p.members[worst].schedule[-1]["hyperparameters"]
    for name, value in changed.items():
        assert p.population.hyperparameters[worst][name] == value


def test_explore_moves_on_the_sampling_scale_and_stays_in_bounds():
    space = Space({"learning_rate": log_uniform(1e-4, 1e-1), "beta2": ema_beta(0.99, 0.9999),
                   "dropout": uniform(0.0, 0.5)})
    rng = random.Random(0)
    start = {"learning_rate": 1e-2, "beta2": 0.999, "dropout": 0.2}
    for _ in range(50):
        new = explore(start, space, rng, resample=0.0)
        assert min(abs(new["learning_rate"] / 1e-2 - f) for f in (0.8, 1.25)) < 1e-9
        # ema_beta: 1 − β is what is multiplied
        assert min(abs((1 - new["beta2"]) / 1e-3 - f) for f in (0.8, 1.25)) < 1e-6
        assert min(abs(new["dropout"] / 0.2 - f) for f in (0.8, 1.25)) < 1e-9
    edge = {"learning_rate": 1e-1, "beta2": 0.9999, "dropout": 0.5}
    for _ in range(200):  # perturbed and resampled values stay inside the bounds
        for values in (edge, start):
            new = explore(values, space, rng)
            assert 1e-4 <= new["learning_rate"] <= 1e-1
            assert 0.99 <= new["beta2"] <= 0.9999
            assert 0.0 <= new["dropout"] <= 0.5


def _lineage(result):
    trials = sorted(result.study.trials, key=lambda t: t.user_attrs[keys.PBT_MEMBER])
    return ([(t.user_attrs[keys.PBT_MEMBER], t.value, t.params) for t in trials],
            keys.pbt_lineage(result.study.user_attrs))


@pytest.fixture(scope="module")
def runs(wine, tmp_path_factory):
    """Two PBT runs with the same seed (PBT alone: members from random draws)."""
    return [tune(wine, "cultivar", trials=8, population=8, space=SPACE, seed=3,
                 out=tmp_path_factory.mktemp(f"pbt{i}"), scheduler="pbt", pbt_interval=2,
                 pbt_coarse=0)
            for i in range(2)]


def test_a_seeded_pbt_run_repeats_and_records_its_lineage(wine, runs):
    assert _lineage(runs[0]) == _lineage(runs[1])
    study = runs[0].study
    lineage = keys.pbt_lineage(study.user_attrs)
    assert lineage["interval"] == 2 and study.user_attrs[keys.SCHEDULER] == "pbt"
    assert [p["id"] for p in lineage["populations"]] == ["0.0", "0.1"]
    assert [len(p["members"]) for p in lineage["populations"]] == [4, 4]
    # two exploit steps (epochs 2 and 4), one copy each per population of 4
    assert sorted(e["epoch"] for p in lineage["populations"] for e in p["events"]) == [2, 2, 4, 4]
    assert len(study.trials) == 8 and all(t.state.name == "COMPLETE" for t in study.trials)
    for t in study.trials:  # the params are the final values; the schedule starts at epoch 0
        schedule = t.user_attrs[keys.PBT_SCHEDULE]
        assert schedule[0]["epoch"] == 0 and schedule[0]["copied_from"] is None
        assert t.params["learning_rate"] == pytest.approx(
            t.user_attrs[keys.HYPERPARAMETERS]["learning_rate"])
    info = runs[0].model.info
    assert info["pbt"]["schedule"] == study.trials[info["trial"]].user_attrs[keys.PBT_SCHEDULE]
    again = replay(info["pbt"], wine, "cultivar")  # trains along the winner's schedule
    assert math.isfinite(again.info["value"]) and again.info["value"] < 1.0


def _replayed_rates(run_dir) -> list[float]:
    return [r["learning_rate"] for r in json.loads((run_dir / "run.json").read_text())["history"]]


def test_caviar_train_schedule_replays_the_rates_pbt_applied(runs, wine_csv, tmp_path):
    """The kept model's schedule, and any member's from its trial, replayed as a panda run:
    the learning rate of every epoch is the one the PBT member trained with (its curve, the
    copied ancestors' epochs included), and each change is in run.json at its epoch."""
    study, info = runs[0].study, runs[0].model.info
    winner = study.trials[info["trial"]]
    result = invoke("train", wine_csv, "--target", "cultivar", "--seed", 3, "--schedule",
                    runs[0].out / "model", "--out", tmp_path / "best")
    assert result.exit_code == 0, result.output
    assert _replayed_rates(tmp_path / "best") == pytest.approx(
        [r["learning_rate"] for r in winner.user_attrs[keys.CURVE]], rel=1e-6)

    member = max(study.trials, key=lambda t: len(t.user_attrs[keys.PBT_SCHEDULE]))
    schedule = member.user_attrs[keys.PBT_SCHEDULE]
    assert len(schedule) >= 3  # copied at epochs 2 and 4
    file = tmp_path / "schedule.json"
    file.write_text(json.dumps({"hyperparameters": member.user_attrs[keys.HYPERPARAMETERS],
                                "schedule": schedule}))
    result = invoke("train", wine_csv, "--target", "cultivar", "--schedule", file,
                    "--out", tmp_path / "member")
    assert result.exit_code == 0, result.output
    rates = _replayed_rates(tmp_path / "member")
    assert rates == pytest.approx([r["learning_rate"] for r in member.user_attrs[keys.CURVE]],
                                  rel=1e-6)
    assert len(set(rates)) > 1  # the schedule changed it
    run = json.loads((tmp_path / "member" / "run.json").read_text())
    assert [c["epoch"] for c in run["changes"]] == [s["epoch"] for s in schedule[1:]]
    assert all(c["scheduled"] for c in run["changes"])
    for change, segment in zip(run["changes"], schedule[1:]):
        for name, value in segment["hyperparameters"].items():
            if name in change["changes"]:
                assert change["changes"][name][1] == pytest.approx(value)


def test_caviar_train_schedule_refuses_a_model_without_one(tmp_path, wine_csv):
    from caviar.model import fit_model

    fit_model(wine_csv, "cultivar", {"epochs": 1}).save(tmp_path / "model")
    assert_one_error_line(invoke("train", wine_csv, "--target", "cultivar", "--schedule",
                                 tmp_path / "model", "--out", tmp_path / "run"),
                          "not trained by population-based training")
    (tmp_path / "bad.json").write_text('{"schedule": 3}')
    assert_one_error_line(invoke("train", wine_csv, "--target", "cultivar", "--schedule",
                                 tmp_path / "bad.json", "--out", tmp_path / "run"),
                          "a PBT schedule is")


def test_a_resumed_run_goes_on_with_its_schedule(wine, tmp_path):
    from caviar.panda import resume_run, train_run

    hp = {"hidden_layer_sizes": [8], "learning_rate": 0.01}
    plan = {1: {"learning_rate": 0.005}, 3: {"learning_rate": 0.002}}
    run = train_run(wine, "cultivar", hp, tmp_path / "run", epochs=2, schedule=plan)
    resume_run(run, epochs=2)
    assert _replayed_rates(run) == pytest.approx([0.01, 0.005, 0.005, 0.002])
    with pytest.raises(ValueError, match="batch_size at epoch 2, which fixes the network's"):
        train_run(wine, "cultivar", hp, tmp_path / "other", schedule={2: {"batch_size": 64}})


def _decay_table(rows: int = 1000, pairs: int = 8, gap: float = 0.1) -> pd.DataFrame:
    """Least squares on pairs of nearly equal features, with noisy targets: the signal along
    each pair's difference (a direction of little variance) is learned only with large
    steps, and the noise of small minibatches is averaged away only with small ones. On
    it, SGD at 1.0 decayed by 0.85 an epoch reaches 0.43 validation RMSE (standardized),
    the best constant rate 0.47 (0.3; 0.03: 0.79, 0.6: 0.46-0.53, two seeds each)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(rows, pairs))
    a = z + gap * rng.normal(size=(rows, pairs))
    b = z + gap * rng.normal(size=(rows, pairs))
    y = (a - b).sum(axis=1) / gap + z.sum(axis=1) + 2.0 * rng.normal(size=rows)
    frame = pd.DataFrame(np.concatenate([a, b], axis=1),
                         columns=[f"x{i}" for i in range(2 * pairs)])
    frame["y"] = y
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pbt_finds_a_decaying_learning_rate(tmp_path, seed):
    """Whatever the seed: the schedule of the kept network was changed by PBT, and its
    learning rate ends lower than it started (8 of 8 seeds measured)."""
    space = {"learning_rate": {"kind": "log_uniform", "low": 1e-3, "high": 1.0},
             "optimizer": "sgd", "hidden_layer_sizes": {"value": []}, "batch_norm": False,
             "batch_size": 8, "epochs": 24}
    result = tune(_decay_table(), "y", trials=16, population=16, space=space, out=tmp_path,
                  seed=seed, scheduler="pbt", pbt_interval=3, pbt_coarse=0)
    schedule = result.model.info["pbt"]["schedule"]
    rates = [s["hyperparameters"]["learning_rate"] for s in schedule]
    assert len(rates) > 1 and rates[-1] < rates[0], rates


def test_cli_tune_with_pbt_writes_a_model_and_a_report_with_the_lineage(wine, tmp_path):
    from typer.testing import CliRunner

    from caviar import load_model
    from caviar.cli import app

    data, space = tmp_path / "wine.csv", tmp_path / "space.toml"
    wine.to_csv(data, index=False)
    space.write_text('[learning_rate]\nkind = "log_uniform"\nlow = 1e-3\nhigh = 3e-2\n\n'
                     '[dropout]\nkind = "uniform"\nlow = 0.0\nhigh = 0.3\n\n'
                     "[hidden_layer_sizes]\nvalue = [8]\n\n[epochs]\nvalue = 4\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "tune", str(data), "--target", "cultivar", "--scheduler", "pbt", "--pbt-interval", "2",
        "--pbt-coarse", "0", "--trials", "8", "--population", "8", "--space", str(space),
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load_model(out / "model")
    assert model.info["pbt"]["schedule"][0]["epoch"] == 0
    html = (out / "report.html").read_text()
    assert 'id="pbt"' in html and "fig-pbt-lineage" in html and "fig-pbt-schedule" in html


@pytest.mark.slow
def test_two_workers_run_pbt_on_one_study(wine_csv, tmp_path, monkeypatch):
    """Each worker trains its own populations (exploit stays inside one); their member ids
    and lineages do not collide, and the coordinator's model keeps the best member's
    schedule. (A time budget: each worker trains rounds for its whole budget, where with a
    trials budget the first worker up may take every round of these tiny ones.)"""
    from test_workers import _env

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    result = tune(wine_csv, "cultivar", time_budget=8, population=8, space=SPACE, seed=0,
                  out=tmp_path / "run", scheduler="pbt", pbt_interval=2, pbt_coarse=0,
                  workers=2)
    study = result.study
    trials = study.get_trials(deepcopy=False)
    assert len(trials) >= 16 and all(t.state.is_finished() for t in trials)
    members = [t.user_attrs[keys.PBT_MEMBER] for t in trials]
    assert len(set(members)) == len(members)
    assert {m.split("-")[0] for m in members} == {"w0", "w1"}
    for t in trials:  # a worker's ids are its own
        assert t.user_attrs[keys.PBT_MEMBER].startswith(
            {s["worker"]: f"w{s['index']}-" for s in result.extra["workers"]}[
                t.user_attrs[keys.WORKER]])
    pops = keys.pbt_lineage(study.user_attrs)["populations"]
    assert sorted(m for p in pops for m in p["members"]) == sorted(members)
    assert {"w0-0.0", "w0-0.1", "w1-0.0", "w1-0.1"} <= {p["id"] for p in pops}
    for p in pops:  # a copy stays inside its population, at an exploit epoch
        assert all(e["copied_from"] in p["members"] and e["member"] in p["members"]
                   and e["epoch"] in (2, 4) for e in p["events"])
    assert any(p["events"] for p in pops)
    best = study.trials[result.model.info["trial"]]
    assert result.model.info["pbt"]["schedule"] == best.user_attrs[keys.PBT_SCHEDULE]
    assert result.test_scores["accuracy"] > 0.8


def test_the_first_round_starts_from_the_known_good_networks(wine, tmp_path):
    """A new study's first population takes a warm start's structure, with that network as
    its first member; the others draw their own per-member values."""
    from caviar.search.samplers import warm_start

    space = Space.from_dict(SPACE)
    known = {"hidden_layer_sizes": [16], "learning_rate": 0.01, "optimizer": "adam",
             "dropout": 0.1, "batch_size": 32, "epochs": 6}
    warm = warm_start(space, [known])
    assert warm  # the configuration is in the space
    data = prepare(wine, "cultivar", seed=0)
    pbt = PopulationBasedTraining(optuna.create_study(), space, data, Budget(8, None, 0.0), 8,
                                  tmp_path, seed=0, structures=1, warm=warm, coarse=0)
    (population,) = pbt._start_round()
    first = population.population.hyperparameters[0]
    assert first["hidden_layer_sizes"] == (16,) and first["learning_rate"] == 0.01
    assert first["dropout"] == pytest.approx(0.1)
    assert all(h["hidden_layer_sizes"] == (16,) for h in population.population.hyperparameters)
    assert len({h["learning_rate"] for h in population.population.hyperparameters}) == 8
    assert pbt._start_round()[0].members[0].params != warm[0].params  # used once


def test_explore_leaves_alone_what_only_shapes_the_initial_weights():
    from caviar.search.pbt import explorable

    space = Space.from_dict({"numeric_embedding": {"kind": "choice", "values": ["none", "plr"]},
                             "plr_sigma": {"kind": "log_uniform", "low": 0.01, "high": 1.0,
                                           "when": {"numeric_embedding": ["plr"]}},
                             "learning_rate": {"kind": "log_uniform", "low": 1e-4,
                                               "high": 1e-1}})
    params = {space[n].optuna_name: v for n, v in
              {"numeric_embedding": "plr", "plr_sigma": 0.1, "learning_rate": 0.01}.items()}
    assert explorable(space, params) == ["learning_rate"]


def _best_loss(trial) -> float:
    return min(trial.intermediate_values.values())


def test_after_a_coarse_search_pbt_refines_its_best_structures_from_their_best_trials(
        wine, tmp_path):
    """By default the first half of the trials is the default tuner's search; then each
    population takes one of the two best structures it trained, and its members start from
    that structure's trials, best first (explored copies of the best when there are fewer),
    going on from their networks where the kept model holds them."""
    space = {**WINE_SPACE, "width": {"kind": "choice", "values": [4, 8, 16]}}  # 3-6 epochs
    result = tune(wine, "cultivar", trials=24, population=8, space=space, seed=1,
                  out=tmp_path, scheduler="pbt", pbt_interval=6, trials_per_structure=4)
    trials = sorted(result.study.trials, key=lambda t: t.number)  # (interval 6: no copies)
    coarse = [t for t in trials if keys.PBT_MEMBER not in t.user_attrs]
    members = [t for t in trials if keys.PBT_MEMBER in t.user_attrs]
    assert len(coarse) == 12 and len(members) == 12
    assert max(t.number for t in coarse) < min(t.number for t in members)
    # the coarse search is ASHA's: epochs drawn per trial, some stopped early
    assert len({len(t.intermediate_values) for t in coarse}) > 1
    lineage = keys.pbt_lineage(result.study.user_attrs)
    assert lineage["coarse"] == 0.5

    ranked = sorted(coarse, key=lambda t: (_best_loss(t), t.number))
    best_widths = list(dict.fromkeys(t.params["width"] for t in ranked))[:2]
    by_id = {t.user_attrs[keys.PBT_MEMBER]: t for t in members}
    pops = [p for p in lineage["populations"] if p["id"].startswith("0.")]  # round 0
    assert len(best_widths) == 2 and [p["structure"]["width"] for p in pops] == best_widths
    continued = 0
    for p in pops:
        starts = [t for t in ranked if t.params["width"] == p["structure"]["width"]]
        for slot, member_id in enumerate(p["members"]):
            first = by_id[member_id].user_attrs[keys.PBT_SCHEDULE][0]
            assert first["member"] == member_id and first["copied_from"] is None
            start = first["hyperparameters"]
            if slot >= len(starts):  # the best again, explored: within the space's bounds
                assert 1e-3 <= start["learning_rate"] <= 3e-2
                continue
            source = starts[slot]  # the structure's slot-th best trial, as it was
            assert start["learning_rate"] == pytest.approx(source.params["learning_rate"])
            assert start["dropout"] == pytest.approx(source.params["dropout"])
            # it goes on from that trial's network (the kept model holds the best 20) at its
            # best epoch: its curve starts with the trial's to that epoch, then trains on
            losses = [source.intermediate_values[e] for e in sorted(source.intermediate_values)]
            epoch = int(np.argmin(losses)) + 1
            curve = by_id[member_id].user_attrs[keys.CURVE]
            if epoch < 6:  # the horizon: a network at it has nothing left to train
                assert curve[:epoch] == source.user_attrs[keys.CURVE][:epoch]
                assert len(curve) > epoch
                continued += 1
    assert continued >= 2
    assert math.isfinite(result.test_scores["log_loss"])


def test_the_coarse_search_takes_its_share_of_what_is_left():
    budget = Budget(40, 100.0, 20.0, start=time.monotonic() - 10.0)  # 30 s spent in all
    first = budget.first(0.5, started=8, reason="coarse")
    assert first.trials == 8 + 16  # half the 32 trials left
    assert first.time_budget == pytest.approx(30.0 + 0.5 * 70.0, abs=0.1)
    assert first.spent == 20.0 and first.start == budget.start
    assert first.reason == "coarse" and budget.reason == "time budget"
    assert Budget(None, None, 0.0).first(0.5, 0, "coarse").time_budget is None
    with pytest.raises(ValueError, match=r"share of the budget must be in \[0, 1\)"):
        PopulationBasedTraining(optuna.create_study(), Space.from_dict(SPACE),
                                prepare(wine_frame(), "cultivar", seed=0),
                                Budget(8, None, 0.0), 8, None, seed=0, coarse=1.0)


def test_with_a_time_budget_the_coarse_search_stops_its_trials_then_pbt_trains(wine, tmp_path):
    """The trials running when the coarse search's share of the seconds ends are stopped,
    and say why; PBT's members come after them."""
    result = tune(wine, "cultivar", time_budget=4, population=8, space=SPACE, seed=0,
                  out=tmp_path, scheduler="pbt", pbt_interval=2)
    trials = result.study.get_trials(deepcopy=False)
    coarse = [t for t in trials if keys.PBT_MEMBER not in t.user_attrs]
    members = [t for t in trials if keys.PBT_MEMBER in t.user_attrs]
    assert coarse and members
    assert any(t.user_attrs.get(keys.STOPPED) == "the coarse search's share" for t in coarse)
    assert max(t.number for t in coarse) < min(t.number for t in members)


def test_a_population_takes_the_warm_starts_values_outside_the_space(wine, tmp_path):
    """PBT's members of one population share its structure: a warm start that trains the
    estimators' TabM-mini (tabm_k, which the space does not draw) makes its whole population
    TabM-mini, and the next round, refining that population's best trials, keeps it."""
    from caviar.search.samplers import warm_start

    space = Space.from_dict(SPACE)
    known = {"hidden_layer_sizes": [16], "optimizer": "adam", "batch_size": 32, "epochs": 6,
             "tabm_k": 4}
    (warm,) = warm_start(space, [known])
    assert warm.outside == {"tabm_k": 4}
    data = prepare(wine, "cultivar", seed=0)
    study = optuna.create_study()
    pbt = PopulationBasedTraining(study, space, data, Budget(8, None, 0.0), 4, tmp_path,
                                  seed=0, structures=1, warm=[warm], coarse=0)
    (population,) = pbt._start_round()
    assert [h["tabm_k"] for h in population.population.hyperparameters] == [4] * 4
    pbt._end_round([population], pbt._train([population]))
    assert all(t.user_attrs[keys.OUTSIDE_SPACE] == {"tabm_k": 4} for t in study.trials)
    (refined,) = pbt._start_round()
    assert [h["tabm_k"] for h in refined.population.hyperparameters] == [4] * 4
