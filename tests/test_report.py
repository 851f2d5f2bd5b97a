"""The HTML report: sources, sections, self-containment, and (with Chromium) that it draws.

Most tests read a study written by a real (tiny) tune; a hand-made study, laid out by the same
keys (``caviar.search.study.keys``), covers what a short tune does not produce on demand:
failures with reasons, a maximized score, three shrinking boxes, diverged scores, the layout
of studies written before the round became a user attribute.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import plotly.offline
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from sklearn.datasets import load_wine
from wine import WINE_SPACE

from caviar.report import figures as F
from caviar.report import load_run, render_report, write_report
from caviar.report.source import RunData
from caviar.search.space import Space
from caviar.search.study import keys
from caviar.search.tune import tune

optuna.logging.set_verbosity(optuna.logging.WARNING)

_spec = importlib.util.spec_from_file_location("browser", Path(__file__).with_name("browser.py"))
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)

STUDY = "adult-c2f"
SPACE = {
    "learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1},
    "l2": {"kind": "log_uniform", "low": 1e-6, "high": 1e-2},
    "dropout": {"kind": "uniform", "low": 0.0, "high": 0.5},
    "beta2": {"kind": "ema_beta", "low": 0.9, "high": 0.999},
    "optimizer": {"kind": "choice", "values": ["adam", "rmsprop", "momentum"]},
    "depth": {"kind": "int", "low": 1, "high": 3},
    "width": {"kind": "log_int", "low": 16, "high": 256},
    "batch_size": {"kind": "fixed", "value": 128},
}
DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
    "l2": FloatDistribution(1e-6, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "1-beta2": FloatDistribution(1e-3, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["adam", "rmsprop", "momentum"]),
    "depth": IntDistribution(1, 3),
    "width": IntDistribution(16, 256, log=True),
}
# boxes in sampling space: log10 for log params, log10(1 − β) for the ema_beta one
BOXES = [
    {"round": 1, "box": {"learning_rate": [-4, -1], "l2": [-6, -2], "dropout": [0.0, 0.5],
                         "beta2": [-3, -1], "depth": [1, 3], "width": [1.204, 2.408]}},
    {"round": 2, "box": {"learning_rate": [-3.4, -2.0], "l2": [-5.0, -3.0],
                         "dropout": [0.1, 0.35], "beta2": [-2.8, -1.6], "depth": [1, 3],
                         "width": [1.5, 2.3]}},
    {"round": 3, "box": {"learning_rate": [-3.0, -2.3], "l2": [-4.5, -3.5],
                         "dropout": [0.15, 0.3], "beta2": [-2.6, -2.0], "depth": [2, 3],
                         "width": [1.8, 2.2]}},
]
DATA = {
    "source": "adult.csv", "rows": 1000, "columns": 6, "target": "income", "task": "binary",
    "roles": {
        "age": {"role": "numeric", "reason": "numeric, 71 distinct values"},
        "workclass": {"role": "onehot", "reason": "8 categories"},
        "occupation": {"role": "target_encoded", "reason": "15 categories > 10"},
        "hours": {"role": "numeric", "reason": "numeric"},
        "id": {"role": "ignored", "reason": "unique per row"},
        "income": {"role": "target", "reason": "--target"},
    },
}
FAILURE = "loss became NaN at epoch 3 (learning_rate too large)"


def _accuracy(p: dict) -> float:
    """A made-up smooth validation accuracy with its optimum inside the space."""
    acc = (0.9 - 0.02 * (math.log10(p["learning_rate"]) + 2.6) ** 2
           - 0.004 * (math.log10(p["l2"]) + 4) ** 2 - 0.2 * (p["dropout"] - 0.22) ** 2
           - 0.01 * abs(math.log10(p["1-beta2"]) + 2.3) + 0.01 * (p["optimizer"] == "adam"))
    return max(0.5, min(0.95, acc))


def _curve(final: float, epochs: int) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        val_acc = final - (final - 0.5) * math.exp(-e / 4)
        train_acc = min(0.99, val_acc + 0.015 * e / epochs)
        rows.append({"epoch": e, "train_loss": 1.2 - train_acc, "val_loss": 1.22 - val_acc,
                     "train_accuracy": train_acc, "val_accuracy": val_acc,
                     "train_log_loss": 1.2 - train_acc, "val_log_loss": 1.22 - val_acc})
    return rows


def make_study(storage: str) -> optuna.Study:
    """30 trials over 3 coarse-to-fine rounds: complete, pruned and failed, with all attrs."""
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    rng = np.random.default_rng(0)
    number = 0
    for entry in BOXES:
        box = entry["box"]
        for _ in range(10):
            r = {k: rng.uniform(*v) for k, v in box.items()}
            params = {
                "learning_rate": 10 ** r["learning_rate"], "l2": 10 ** r["l2"],
                "dropout": r["dropout"], "1-beta2": 10 ** r["beta2"],
                "optimizer": ["adam", "rmsprop", "momentum"][number % 3],
                "depth": int(round(r["depth"])), "width": int(round(10 ** r["width"])),
            }
            hp = {k: v for k, v in params.items() if k != "1-beta2"}
            hp |= {"beta2": 1 - params["1-beta2"], "batch_size": 128}
            attrs = {keys.HYPERPARAMETERS: hp, keys.ROUND: entry["round"], keys.DURATION_S: 2.5}
            acc = _accuracy(params)
            if number % 7 == 3:
                state, value, inter = TrialState.FAIL, None, {}
                attrs[keys.FAILURE] = FAILURE
            elif number % 5 == 1:
                curve = _curve(acc - 0.05, 4)
                state, value = TrialState.PRUNED, None
                inter = {row["epoch"]: row["val_accuracy"] for row in curve}
                attrs[keys.CURVE] = curve
            else:
                curve = _curve(acc, 20)
                state, value = TrialState.COMPLETE, curve[-1]["val_accuracy"]
                inter = {row["epoch"]: row["val_accuracy"] for row in curve}
                attrs[keys.CURVE] = curve
            study.add_trial(create_trial(
                state=state, value=value, params=params, distributions=DISTRIBUTIONS,
                user_attrs=attrs, intermediate_values=inter))
            number += 1
    best = study.best_trial
    attrs = {
        keys.TASK: "binary", keys.METRIC: "val_accuracy", keys.DIRECTION: "maximize",
        keys.SAMPLER: "coarse-to-fine", keys.SPACE: SPACE, keys.DATA: DATA, keys.BOXES: BOXES,
        keys.BEST: {
            keys.BEST_TRIAL: best.number,
            keys.HYPERPARAMETERS: best.user_attrs[keys.HYPERPARAMETERS],
            keys.TEST_SCORES: {"accuracy": 0.861, "log_loss": 0.318},
            keys.BEST_NETWORK_TEST_SCORES: {"accuracy": 0.853, "log_loss": 0.334},
            keys.MEMBERS: [{"trial": best.number, "value": 0.9}, {"trial": 2, "value": 0.88}],
            keys.CONFUSION_MATRIX: {"labels": ["<=50K", ">50K"],
                                    "matrix": [[702, 48], [91, 159]]},
        },
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory) -> Path:
    """A tune run directory: study.db, run.json, leaderboard.csv."""
    run = tmp_path_factory.mktemp("tune") / "run"
    run.mkdir()
    storage = f"sqlite:///{run / 'study.db'}"
    make_study(storage)
    (run / "run.json").write_text(json.dumps({"study_name": STUDY, "storage": storage}))
    (run / "leaderboard.csv").write_text("trial,val_accuracy\n")
    return run


@pytest.fixture(scope="module")
def tune_html(tune_run, tmp_path_factory) -> tuple[Path, str]:
    out = write_report(tune_run, tmp_path_factory.mktemp("out") / "sub" / "report.html")
    return out, out.read_text()


# a tiny real tune: coarse to fine with a coarse round of 8 trials (2 × trials_per_structure),
# so that 24 trials make two rounds
REAL_SPACE = {**WINE_SPACE,
              "beta2": {"kind": "ema_beta", "low": 0.99, "high": 0.9999,
                        "when": {"optimizer": ["adam"]}}}


@pytest.fixture(scope="module")
def real_tune(tmp_path_factory):
    """A tune run directory written by ``tune`` itself (wine, 24 trials), and its result."""
    wine = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    data = tmp_path_factory.mktemp("data") / "wine.csv"
    wine.to_csv(data, index=False)
    out = tmp_path_factory.mktemp("real") / "run"
    result = tune(data, "cultivar", trials=24, population=4, trials_per_structure=4,
                  sampler="coarse-to-fine", space=REAL_SPACE, out=out, seed=0)
    return out, result


@pytest.fixture(scope="module")
def real_html(real_tune) -> tuple[Path, str]:
    out, _ = real_tune
    path = write_report(out, out / "report.html")
    return path, path.read_text()


@pytest.fixture(scope="module")
def panda_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("panda") / "panda-run"
    run.mkdir()
    history = []
    for e in range(1, 31):
        acc = 0.85 - 0.35 * math.exp(-e / 5) + (0.03 if e >= 12 else 0)
        history.append({"epoch": e, "train_loss": 1.1 - acc - 0.01, "val_loss": 1.1 - acc,
                        "train_accuracy": acc + 0.01, "val_accuracy": acc})
    info = {
        "kind": "panda", "task": "multiclass", "metric": "val_accuracy",
        "data": {**DATA, "task": "multiclass", "target": "grade"},
        "hyperparameters": {"learning_rate": 0.001, "dropout": 0.1, "l2": 1e-4,
                            "hidden_layer_sizes": [64, 64], "optimizer": "adam"},
        "history": history,
        "changes": [{"epoch": 12, "changes": {"learning_rate": [0.001, 0.0003]}},
                    {"epoch": 20, "changes": {"dropout": [0.1, 0.3], "l2": [1e-4, 1e-3]}}],
        "test_scores": {"accuracy": 0.83, "log_loss": 0.45},
        "confusion_matrix": {"labels": ["A", "B", "C"],
                             "matrix": [[50, 3, 1], [4, 40, 6], [0, 5, 41]]},
    }
    (run / "run.json").write_text(json.dumps(info))
    return run


# ----------------------------------------------------------------------------- tune reports


def test_a_real_tune_reports_its_coarse_to_fine_rounds(real_tune, real_html):
    out, result = real_tune
    # the sampler stores each trial's round where the report reads it (a user attribute)
    assert all(isinstance(t.user_attrs.get(keys.ROUND), int) for t in result.study.trials)
    run = load_run(out)
    rounds = [t.round for t in run.trials]
    assert None not in rounds and set(rounds) == {0, 1}
    assert [b["round"] for b in run.c2f_boxes] == [0, 1]
    figure = F.rounds_score_figure(run)
    assert {t.name for t in figure.data} >= {"round 0", "round 1"}
    page = real_html[1]
    assert ">Coarse-to-fine rounds" in page and 'id="fig-c2f-rounds"' in page
    assert "No trial stored its round." not in page
    assert 'id="fig-c2f-boxes"' in page and "Box per round" in page


def test_self_contained(real_html):
    _, page = real_html
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle[:300]) == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=[\"']?https?:", page)
    assert not re.search(r"<(img|iframe)[^>]*\bsrc=[\"']?https?:", page)
    assert page.count('class="plotly-graph-div"') == 8  # the seven figures and feature importance


def test_sections_and_header(real_tune, real_html):
    _, result = real_tune
    _, page = real_html
    for title in ("Learning curves", "Trials", "Hyperparameters vs. score",
                  "Coarse-to-fine rounds", "Parallel coordinates", "Hyperparameter importances",
                  "Best configuration", "Held-out test scores", "Confusion matrix", "Data",
                  "Column roles", "Feature importance"):
        assert f">{title}" in page, title
    for div in ("fig-curves", "fig-params", "fig-c2f-rounds", "fig-c2f-boxes", "fig-parallel",
                "fig-importance", "fig-confusion", "fig-features"):
        assert f'id="{div}"' in page, div
    assert "caviar report — wine-cultivar" in page
    assert "coarse-to-fine" in page
    states = result.leaderboard["state"].value_counts()
    assert (f'{states.get("complete", 0)} / <span class="pruned">{states.get("pruned", 0)}'
            f'</span> / <span class="failed">{states.get("fail", 0)}</span>') in page
    best = result.study.user_attrs[keys.BEST]
    assert f"(trial #{best[keys.BEST_TRIAL]})" in page
    assert F.fmt(result.test_scores["accuracy"]) in page  # the model's test accuracy
    members = best[keys.MEMBERS]
    if len(members) > 1:
        assert f"averages the predictions of {len(members)} networks" in page
        assert "best network alone" in page
    assert "wine.csv" in page and "cultivar" in page


def test_hand_made_study_header_and_best(tune_html):
    _, page = tune_html
    assert f"caviar report — {STUDY}" in page
    # 30 trials: i % 7 == 3 fail (4), i % 5 == 1 pruned (6), the rest complete (20)
    assert "20 / <span class=\"pruned\">6</span> / <span class=\"failed\">4</span>" in page
    assert "target_encoded" in page and "15 categories &gt; 10" in page
    assert "0.861" in page  # test accuracy
    # the averaged model: its members, and the best network alone beside it
    assert "averages the predictions of 2 networks" in page and "#2 (0.88)" in page
    assert "best network alone" in page and "0.853" in page
    assert FAILURE in page  # failures listed with their reason
    assert page.count('class="plotly-graph-div"') == 7


def test_a_real_tune_draws_its_scales_from_its_space(real_tune):
    run = load_run(real_tune[0])
    assert run.space == Space.from_dict(REAL_SPACE)
    fig = F.params_figure(run)
    titles = [a.text for a in fig.layout.annotations]
    types = {t: fig.layout[f"xaxis{i + 1 if i else ''}"].type for i, t in enumerate(titles)}
    assert types["learning_rate (log)"] == "log"
    assert types["1 − momentum (log)"] == "log"  # ema_beta: 1 − β on a log axis
    assert types["1 − beta2 (log)"] == "log"
    assert types["dropout"] in (None, "linear", "-")
    assert types["optimizer"] == "category" and types["width"] == "category"
    assert F.param_axis("epochs", run).integer


def test_log_axes_follow_the_space(tune_run, tune_html):
    run = load_run(tune_run)
    fig = F.params_figure(run)
    titles = [a.text for a in fig.layout.annotations]
    types = {t: fig.layout[f"xaxis{i + 1 if i else ''}"].type for i, t in enumerate(titles)}
    assert types["learning_rate (log)"] == "log"
    assert types["l2 (log)"] == "log"
    assert types["width (log)"] == "log"
    assert types["1 − beta2 (log)"] == "log"  # ema_beta: 1 − β on a log axis
    assert types["dropout"] in (None, "linear", "-")
    assert types["optimizer"] == "category"
    assert '"type":"log"' in tune_html[1].replace(" ", "")


def test_pruned_and_failed_are_visible(tune_run):
    run = load_run(tune_run)
    fig = F.params_figure(run)
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, 0)
        by_name[trace.name] += len(trace.x)
    n = len(F.param_names(run))
    assert by_name[F.STATE_STYLE["COMPLETE"]["name"]] == 20 * n
    assert by_name[F.STATE_STYLE["PRUNED"]["name"]] == 6 * n
    assert by_name[F.STATE_STYLE["FAIL"]["name"]] == 4 * n
    assert sum(t.showlegend is not False for t in fig.data) == 3  # one legend entry per state
    # no score far off the others: the whole axis, and no note about cutting it
    assert F.score_axis(run).limit is None and fig.layout.legend.title.text is None
    failed = [t for t in fig.data if t.name.startswith("failed")][0]
    assert all(y < min(t.score for t in run.trials if t.score is not None) for y in failed.y)
    assert any(FAILURE in text for text in failed.hovertext)


def test_top_curves_and_c2f(tune_run):
    run = load_run(tune_run)
    curves = F.top_curves_figure(run)
    names = {t.name for t in curves.data}
    assert len(names) == 5
    assert {t.line.dash for t in curves.data} == {"solid", "dash"}  # val and train
    assert [a.text for a in curves.layout.annotations] == ["loss", "accuracy"]
    boxes = F.box_rows(run)
    assert len(boxes) == 18
    lr = [(r, lo, hi) for r, name, lo, hi, _ in boxes if name == "learning_rate"]
    assert lr[0] == (1, pytest.approx(1e-4), pytest.approx(1e-1))
    widths = [math.log10(hi / lo) for _, lo, hi in lr]
    assert widths == sorted(widths, reverse=True)  # the box shrinks
    rounds = F.rounds_score_figure(run)
    assert {t.marker.color for t in rounds.data} == {F.round_color(r) for r in (1, 2, 3)}


def test_the_box_figure_draws_each_parameter_as_one_trace_of_boxes_and_one_of_trials(tune_run):
    # a long run has hundreds of rounds: two traces a parameter, not two a round
    run = load_run(tune_run)
    fig = F.boxes_figure(run)
    names = list(dict.fromkeys(name for _, name, *_ in F.box_rows(run)))
    assert len(fig.data) == 2 * len(names)
    bars, points = fig.data[0], fig.data[1]  # learning_rate's, the first box parameter
    lr = [(r, lo, hi) for r, name, lo, hi, _ in F.box_rows(run) if name == "learning_rate"]
    assert list(bars.x) == [x for r, _, _ in lr for x in (r, r, None)]  # a segment a round
    assert list(bars.y) == [y for _, lo, hi in lr for y in (lo, hi, None)]
    sampled = [t for t in run.trials if t.round is not None and "learning_rate" in t.params]
    assert len(points.x) == len(sampled)
    # each point takes its round's color through the colorscale
    scale = dict((round(edge * len(F.PALETTE), 6), c) for edge, c in F.ROUND_COLORSCALE[::2])
    assert [scale[math.floor(v)] for v in points.marker.color] == [
        F.round_color(t.round) for t in sampled]


def test_the_report_shows_the_models_feature_importance(real_tune, real_html):
    # the permutation importance tune stored with the model, on its test rows: one bar per
    # original column, the most important one of wine's 13 (by what tune measured) named
    _, result = real_tune
    _, page = real_html
    stored = result.study.user_attrs[keys.BEST][keys.FEATURE_IMPORTANCE]
    columns = stored["columns"]
    test_rows = result.study.user_attrs[keys.DATA]["split"]["test_rows"]
    assert stored["metric"] == "log_loss" and stored["rows"] == test_rows
    assert sorted(c["column"] for c in columns) == sorted(
        c for c in load_wine(as_frame=True).frame.columns if c != "target")
    top = max(columns, key=lambda c: c["importance_mean"])
    assert top["importance_mean"] > 0  # shuffling the most useful column hurts the model
    assert f"on {stored['rows']} test rows" in page and top["column"] in page


def test_the_importance_makes_the_shuffles_the_time_budget_allows(real_tune):
    """A short tune does not spend its time ranking columns: as many shuffles of each column
    as end within the time left (up to 3), none and the reason when not one does."""
    from types import SimpleNamespace

    from caviar.search.budget import importance_repeats
    from caviar.search.tune import _feature_importance

    assert importance_repeats(None, 5.0) == 3  # no time budget
    assert [importance_repeats(s, 4.0) for s in (100.0, 11.0, 8.0, 3.9, -1.0)] == [3, 2, 2, 0, 0]
    _, result = real_tune
    rows = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    assert _feature_importance(result.model, rows, None)["repeats"] == 3
    skipped = _feature_importance(result.model, rows, 0.0)
    assert "columns" not in skipped and "time budget" in skipped["skipped"]
    fig, why = F.feature_importance_figure(
        SimpleNamespace(best={keys.FEATURE_IMPORTANCE: skipped}))
    assert fig is None and skipped["skipped"] in why and "caviar explain" in why


def test_importances_and_parallel(real_tune):
    run = load_run(real_tune[0])
    fig, why = F.importance_figure(run)
    assert why is None and fig is not None
    assert sum(fig.data[0].x) == pytest.approx(1.0)
    fig, why = F.parallel_figure(run)
    assert why is None and fig is not None
    assert {"learning_rate", "dropout", "optimizer"} <= set(fig.layout.xaxis.ticktext)
    assert len(fig.data) >= run.count("COMPLETE") >= 2  # one line per completed trial


def test_importances_leave_out_conditional_parameters(real_tune, real_html):
    run = load_run(real_tune[0])
    left_out = F.conditional_parameters(run)
    assert "1-momentum" in left_out  # only under the momentum optimizer
    fig, _ = F.importance_figure(run)
    assert "learning_rate" in fig.data[0].y
    assert not any("momentum" in label for label in fig.data[0].y)
    assert ("left out because some trials do not have them: " + ", ".join(left_out)
            in real_html[1])


def test_storage_url_and_study_name(real_tune, tmp_path):
    run_dir, result = real_tune
    study = result.study_name
    url = f"sqlite:///{run_dir / 'study.db'}"
    out = write_report(url, tmp_path / "r.html", study_name=study)
    assert out.is_file() and "Coarse-to-fine rounds" in out.read_text()
    assert load_run(url).name == study  # one study: no name needed
    assert load_run(run_dir / "study.db").name == study
    with pytest.raises(ValueError, match="no study 'nope'"):
        load_run(url, study_name="nope")
    moved = tmp_path / "moved"  # a run directory whose run.json names the storage
    moved.mkdir()
    (moved / "run.json").write_text(json.dumps({"study_name": study, "storage": url}))
    assert load_run(moved).name == study
    optuna.create_study(study_name="second", storage=f"sqlite:///{tmp_path / 'two.db'}")
    optuna.create_study(study_name="third", storage=f"sqlite:///{tmp_path / 'two.db'}")
    with pytest.raises(ValueError, match="pass a study name"):
        load_run(f"sqlite:///{tmp_path / 'two.db'}")


def test_rounds_stored_as_system_attrs_still_show(tmp_path):
    """Studies written before the round became a user attribute kept it as a system one."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="old", storage=storage)
    dist = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
    for i in range(4):
        study.add_trial(create_trial(value=1.0 / (i + 1), distributions=dist,
                                     params={"learning_rate": 10.0 ** -(i + 1)},
                                     system_attrs={keys.ROUND: i // 2}))
    study.set_user_attr(keys.SAMPLER, "coarse-to-fine")
    run = load_run(storage)
    assert [t.round for t in run.trials] == [0, 0, 1, 1]
    page = render_report(run)
    assert ">Coarse-to-fine rounds" in page and "No trial stored its round." not in page


def _diverged_study(storage: str, scores: list[float], metric: str) -> optuna.Study:
    """A trial for each of ``scores``, three more whose last reports diverged to ~20,000, and
    one failure; two coarse-to-fine rounds."""
    study = optuna.create_study(study_name="diverged", storage=storage)
    study.set_user_attr(keys.METRIC, metric)
    dist = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
    rng = np.random.default_rng(0)
    outliers = [TrialState.PRUNED] * 3 + [TrialState.FAIL]
    for i, score in enumerate([*scores, *outliers]):
        attrs = {keys.ROUND: i % 2}
        params = {"learning_rate": float(10 ** rng.uniform(-4, -1))}
        if score == TrialState.PRUNED:
            study.add_trial(create_trial(state=score, params=params, distributions=dist,
                                         user_attrs=attrs,
                                         intermediate_values={1: 90.0, 2: 20_000.0 + i}))
        elif score == TrialState.FAIL:
            study.add_trial(create_trial(state=score, params=params, distributions=dist,
                                         user_attrs=attrs))
        else:
            study.add_trial(create_trial(value=score, params=params, distributions=dist,
                                         user_attrs=attrs))
    return study


def _points(fig) -> list[tuple[float, str, str]]:
    return [(y, symbol, text) for trace in fig.data
            for y, symbol, text in zip(trace.y, trace.marker.symbol, trace.hovertext)]


def test_diverged_scores_do_not_squash_the_others(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _diverged_study(storage, [float(s) for s in np.linspace(30, 50, 30)], "val_rmse")
    run = load_run(storage)
    axis = F.score_axis(run)
    assert 50 <= axis.limit < 100 and axis.worse == 3 and not axis.log
    assert axis.note() == (f"score axis cut at {F.fmt(axis.limit)}: 3 worse trials drawn on "
                           "the cut as ▲")
    for fig in (F.params_figure(run), F.rounds_score_figure(run)):
        points = _points(fig)
        scored = [y for y, _, text in points if "failed" not in text]
        assert max(scored) == axis.limit and min(scored) == 30  # 30 to 50 keep their spread
        cut = [(y, text) for y, symbol, text in points if symbol == "triangle-up"]
        assert len(cut) == 3 and all(y == axis.limit for y, _ in cut)
        assert all("past the axis" in text and "e+04" in text for _, text in cut)  # ~20,000
        failed = [y for y, _, text in points if "failed" in text]
        assert failed and all(y > axis.limit for y in failed)  # just past the cut
        assert fig.layout.legend.title.text == axis.note()  # the figure says so
        assert fig.layout.yaxis.type != "log"


def test_losses_spanning_decades_are_drawn_on_a_log_axis(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # log-loss: good networks near 0.01, guesses near 1, some astray at 30
    losses = [float(s) for s in np.geomspace(0.01, 1.1, 24)] + [30.0] * 4
    _diverged_study(storage, losses, "val_log_loss")
    run = load_run(storage)
    axis = F.score_axis(run)
    # ten decades from the best to the diverged: a log axis shows them all
    assert axis.log and axis.limit is None
    for fig in (F.params_figure(run), F.rounds_score_figure(run)):
        assert fig.layout.yaxis.type == "log" and "(log)" in fig.layout.yaxis.title.text
        scores = [y for y, _, text in _points(fig) if "failed" not in text]
        assert min(scores) == pytest.approx(0.01) and max(scores) > 20_000


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="neither a run directory nor a storage URL"):
        write_report(tmp_path / "missing", tmp_path / "r.html")
    with pytest.raises(ValueError, match="not a caviar run directory"):
        load_run(tmp_path)
    missing_db = tmp_path / "none.db"
    with pytest.raises(ValueError, match="no SQLite study file"):
        load_run(f"sqlite:///{missing_db}")
    assert not missing_db.exists()  # and did not create one
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(ValueError, match="not an SQLite database"):
        load_run(tmp_path / "notes.db")
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="cannot open Optuna storage"):
        load_run("nosuchdb://x/y")


def test_sparse_study_shows_notes(tmp_path):
    """A study with almost nothing stored still renders, with notes in place of sections."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="bare", storage=storage, direction="minimize")
    study.set_user_attr("task", "regression")
    study.set_user_attr("metric", "val_rmse")
    dist = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
    study.add_trial(create_trial(value=0.5, params={"learning_rate": 0.01}, distributions=dist))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"learning_rate": 0.09},
                                 distributions=dist))
    page = write_report(tmp_path, tmp_path / "r.html").read_text()
    assert "Importances need at least two completed trials." in page
    assert "Needs at least two completed trials." in page
    assert "No completed trial stored a learning curve." in page
    assert "No data description stored." in page
    assert "No test scores stored." in page
    assert "Coarse-to-fine" not in page and "Confusion matrix" not in page
    assert "no reason stored" in page
    # the scale comes from the Optuna distribution when there is no stored space
    assert F.param_axis("learning_rate", load_run(tmp_path)).log


def test_param_axis_names():
    run = RunData(kind="tune", name="x", space=Space.from_dict(SPACE))
    assert F.param_axis("1-beta2", run).log and not F.param_axis("1-beta2", run).flip
    beta = F.param_axis("beta2", run)  # an ema_beta stored as β itself: drawn as 1 − β
    assert beta.log and beta.flip and beta.x(0.999) == pytest.approx(1e-3)
    assert F.param_axis("dropout", run).log is False
    run.c2f_boxes = [{"round": 1, "box": {"1-beta2": [-3, -1]}}]
    (_, _, lo, hi, _), = F.box_rows(run)
    assert (lo, hi) == (pytest.approx(1e-3), pytest.approx(0.1))


def test_fmt():
    assert F.fmt(0.001) == "1e-3" and F.fmt(0.0003) == "3e-4" and F.fmt(0.25) == "0.25"
    assert F.fmt(None) == "—" and F.fmt(True) == "true" and F.fmt([64, 64]) == "[64, 64]"
    assert F.change_label({"learning_rate": [0.001, 0.0003]}) == "learning_rate 1e-3 → 3e-4"


def test_html_is_escaped(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="<b>x</b>", storage=storage)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure": "</script><i>"}))
    page = render_report(load_run(storage))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "</script><i>" not in page


# ----------------------------------------------------------------------------- panda reports


def test_panda_report(panda_run, tmp_path):
    page = write_report(panda_run, tmp_path / "panda.html").read_text()
    assert "caviar report — panda-run" in page
    assert "learning_rate 1e-3 → 3e-4" in page
    assert "dropout 0.1 → 0.3; l2 1e-4 → 1e-3" in page
    for title in ("Learning curve", "Changes", "Configuration and test scores",
                  "Confusion matrix", "Data"):
        assert f">{title}" in page
    assert "Parallel coordinates" not in page and "Trials</h2>" not in page
    fig = F.panda_figure(load_run(panda_run))
    vlines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted({s.x0 for s in vlines}) == [12, 20]
    labels = [a.text for a in fig.layout.annotations if a.textangle == -90]
    assert labels == ["learning_rate 1e-3 → 3e-4", "dropout 0.1 → 0.3; l2 1e-4 → 1e-3"]
    assert "new text" not in {a.text for a in fig.layout.annotations}


# ----------------------------------------------------------------------------- in a browser


@pytest.mark.slow
@pytest.mark.skipif(browser.find_chromium() is None,
                    reason="needs Chromium (apt-get install -y chromium) to render the report")
def test_report_draws_in_chromium(real_html, tune_html, panda_run, tmp_path):
    """Plotly really draws every figure: each figure div holds rendered SVG."""
    panda_html = write_report(panda_run, tmp_path / "panda.html")
    for path, text in (real_html, tune_html, (panda_html, panda_html.read_text())):
        ids = re.findall(r'<div id="(fig-[\w-]+)" class="plotly-graph-div"', text)
        assert ids
        dom = browser.dump_dom(path)
        for i, div in enumerate(ids):
            start = dom.index(f'id="{div}"')
            end = dom.index(f'id="{ids[i + 1]}"') if i + 1 < len(ids) else len(dom)
            drawn = dom[start:end]
            assert 'class="main-svg"' in drawn, f"{div} was not drawn"
            assert 'class="trace' in drawn or 'class="hm"' in drawn, f"{div} has no data"
    png = browser.screenshot(real_html[0], tmp_path / "report.png", 1400, 4000)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_the_report_of_the_study_tune_has_open_is_the_one_read_from_its_directory(real_tune,
                                                                                   tmp_path):
    # tune writes its report from the study it has open (its storage's cache holds the
    # trials already: 3,292 trials took 2.5 s to read again); the page is the same
    out, result = real_tune
    open_study = write_report(out, tmp_path / "open.html", study=result.study)
    read_again = write_report(out, tmp_path / "read.html")
    assert open_study.read_bytes() == read_again.read_bytes()
