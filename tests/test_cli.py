"""The command line: help, train → predict → resume → report, and one-line errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from commandline import assert_one_error_line, invoke
from rich.console import Console
from typer.testing import CliRunner

from caviar.cli import app, parse_sets, sparkline
from caviar.report.figures import fmt

FAST = ["--set", "hidden_layer_sizes=8", "--set", "batch_size=32"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """Wine with text labels and a text column: 178 rows, 3 classes."""
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame
    df["cultivar"] = df.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    df["cellar"] = np.where(df["alcohol"] > 13, "north", "south")
    path = tmp_path_factory.mktemp("data") / "wine.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run(table, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "panda"
    result = CliRunner().invoke(app, ["train", str(table), "--target", "cultivar",
                                      "--epochs", "2", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.stdout and "test scores" in result.stdout
    return out


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["", "tune", "train", "resume", "predict", "report",
                                     "export", "explain"])
def test_help(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_help_documents_the_options():
    text = invoke("tune", "--help").stdout
    for option in ("--time-budget", "--trials", "--population", "--sampler", "--pruner",
                   "--space", "--storage", "--study", "--out", "--seed", "--categorical",
                   "--drop", "coarse-to-fine", "asha"):
        assert option in text, option
    text = invoke("train", "--help").stdout
    for option in ("--target", "--set", "--epochs", "--out", "--seed", "--drop"):
        assert option in text, option
    assert "MORE" in invoke("resume", "--help").stdout  # --epochs N is N more
    assert "stdout" in invoke("predict", "--help").stdout


# Rich tags ([bold], [/dim], ...) and Markdown marks (**, `) left in the rendered help
MARKUP = re.compile(r"\[/|\[(bold|dim|italic|red|green|yellow|cyan|b|i)\b|\*\*|`")


@pytest.mark.parametrize("command", ["", "tune", "train", "resume", "predict", "report",
                                     "export", "explain"])
def test_help_renders_its_markup(command):
    text = invoke(*([command] if command else []), "--help").stdout
    assert not MARKUP.search(text), MARKUP.search(text).group()


def test_help_keeps_angle_brackets():
    # Markdown takes <label> for HTML and drops it unless it is in `code`
    assert "proba_<label>" in invoke("predict", "--help").stdout


def test_time_budget_help_says_running_trials_stop():
    command = typer.main.get_command(app).commands["tune"]
    text = next(p.help for p in command.params if p.name == "time_budget")
    assert "running ones are stopped" in text and "pruned" in text


def test_version():
    from caviar import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"caviar {__version__}"
    # python -m caviar.cli is the same program
    done = subprocess.run([sys.executable, "-m", "caviar.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"caviar {__version__}"


# ----------------------------------------------------------------------------- the workflow


def test_train_writes_a_run(run):
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "panda" and info["epochs_done"] == 2
    assert info["hyperparameters"]["hidden_layer_sizes"] == [8]
    assert info["data"]["roles"]["cellar"]["role"] == "onehot"
    assert (run / "model" / "model.json").is_file()


def test_train_under_weight_says_its_test_scores_are_weighted(table, tmp_path):
    from caviar.data import prepare
    from caviar.model import load_model

    weighted = tmp_path / "weighted.csv"
    pd.read_csv(table).assign(w=lambda d: 1.0 + 4.0 * (d["cultivar"] == "barolo")).to_csv(
        weighted, index=False)
    out = tmp_path / "run"
    result = invoke("train", weighted, "--target", "cultivar", "--weight", "w", "--epochs",
                    "2", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "rows, weighted by w)" in " ".join(result.stdout.split())
    info = json.loads((out / "run.json").read_text())
    prepared = prepare(pd.read_csv(weighted), "cultivar", weight="w", seed=info["seed"])
    train, test = prepared.train, prepared.test  # the run's own split
    model = load_model(out / "model")
    assert info["test_scores"]["log_loss"] == pytest.approx(
        model.scores(test, weight="w")["log_loss"])
    assert info["test_scores"]["log_loss"] != pytest.approx(model.scores(test)["log_loss"])
    # beside them, the weighted class shares of the training rows as a constant prediction
    from sklearn.metrics import log_loss

    shares = train.groupby("cultivar")["w"].sum() / train["w"].sum()
    proba = np.tile(shares[model.classes].to_numpy(), (len(test), 1))
    assert info["constant_test_scores"]["log_loss"] == pytest.approx(log_loss(
        test["cultivar"], proba, labels=model.classes, sample_weight=test["w"]))
    assert "a constant prediction (the training rows' class shares) scores" in " ".join(
        result.stdout.split())


def test_predict_round_trip(run, table, tmp_path, monkeypatch):
    from caviar.model import load_model

    rows = pd.read_csv(table).drop(columns="cultivar").sample(frac=1.0, random_state=3)
    rows = rows.head(50).reset_index(drop=True)
    data = tmp_path / "new.csv"
    rows.to_csv(data, index=False)
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", run / "model", data)  # -o defaults to predictions.csv
    assert result.exit_code == 0, result.output
    assert "predictions.csv" in result.stdout
    out = pd.read_csv(tmp_path / "predictions.csv")
    assert list(out.columns) == ["prediction", "proba_barbera", "proba_barolo",
                                 "proba_grignolino"]
    assert len(out) == 50
    expected = load_model(run / "model").predict_frame(rows)
    assert out["prediction"].tolist() == expected["prediction"].tolist()  # input order
    np.testing.assert_allclose(out.iloc[:, 1:].sum(axis=1), 1.0, rtol=1e-5)
    # a run directory works too, and "-o -" writes to stdout
    result = invoke("predict", run, data, "-o", "-")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "prediction,proba_barbera,proba_barolo,proba_grignolino"
    assert len(lines) == 51


def test_resume_with_set(run, tmp_path):
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run, copy)
    result = invoke("resume", copy, "--set", "learning_rate=1e-4", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "learning_rate 0.001 → 0.0001" in result.stdout
    assert "epoch 3/3" in result.stdout
    info = json.loads((copy / "run.json").read_text())
    assert info["changes"] == [{"epoch": 2, "changes": {"learning_rate": [0.001, 0.0001],
                                                        "epochs": [2, 3]}}]
    assert info["history"][-1]["learning_rate"] == pytest.approx(1e-4)


def section(html: str, sid: str, title: str) -> str:
    """The body of the report section ``sid``, asserting its heading."""
    start = html.index(f'<section id="{sid}"><h2>{title}</h2>')
    return html[start:html.index("</section>", start)]


def test_report(run, tmp_path):
    info = json.loads((run / "run.json").read_text())
    result = invoke("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"report: {tmp_path / 'r.html'}"
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert f"<title>caviar report: {run.name}</title>" in html
    assert "panda run: one model, adjusted by hand while it trained" in html
    fact = '<div class="k">{}</div><div class="v">{}</div>'
    assert fact.format("epochs", info["epochs_done"]) in html
    assert fact.format("changes", 0) in html
    metric = info["metric"]
    assert fact.format(f"final {metric}", fmt(info["history"][-1][metric])) in html
    assert "No hyperparameter changes." in section(html, "curves", "Learning curve")
    best = section(html, "best", "Configuration and test scores")
    assert info["test_scores"]
    for name, value in info["test_scores"].items():
        assert f'<td>{name}</td><td class="num">{fmt(value)}</td>' in best
    assert "<td>hidden_layer_sizes</td><td>[8]</td><td>[8]</td>" in best
    data = section(html, "data", "Data")
    assert "<td>cellar</td><td>onehot</td>" in data and "<td>target</td><td>cultivar</td>" in data
    assert 'id="trials"' not in html  # the tuning sections are for tune runs only
    result = invoke("report", run)  # default: RUN/report.html
    assert result.exit_code == 0 and (run / "report.html").is_file()


def test_warnings_are_one_yellow_line(run, table, tmp_path):
    rows = pd.read_csv(table).head(5).assign(extra=1)
    data = tmp_path / "extra.csv"
    rows.to_csv(data, index=False)
    result = invoke("predict", run, data, "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "unknown at training" in warnings[0]


# ----------------------------------------------------------------------------- errors


def test_missing_data_file(tmp_path):
    assert_one_error_line(invoke("train", tmp_path / "nope.csv", "--target", "y"),
                          "not found")


def test_missing_target_suggests_a_close_name(table, tmp_path):
    result = invoke("train", table, "--target", "cultivr", "--out", tmp_path / "r", *FAST)
    assert_one_error_line(result, "'cultivr' not found", "did you mean cultivar")
    assert not (tmp_path / "r").exists()  # nothing written


def test_bad_set_key(table, tmp_path):
    result = invoke("train", table, "--target", "cultivar", "--set", "learnig_rate=0.1",
                    "--out", tmp_path / "r")
    assert_one_error_line(result, "unknown hyperparameter 'learnig_rate'", "learning_rate")


def test_set_without_equals_is_a_usage_error(table):
    result = invoke("train", table, "--target", "cultivar", "--set", "learning_rate")
    assert result.exit_code == 2


def test_resume_errors(run, tmp_path):
    assert_one_error_line(invoke("resume", run, "--set", "hidden_layer_sizes=4",
                                 "--epochs", "1"), "cannot change")
    assert_one_error_line(invoke("resume", tmp_path), "not a panda run directory")
    assert_one_error_line(invoke("train", run.parent / "x.csv", "--target", "y"), "not found")


def test_predict_with_a_corrupted_model(run, table, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run / "model", broken)
    (broken / "network.safetensors").write_bytes(b"\x00garbage")
    assert_one_error_line(invoke("predict", broken, table, "-o", tmp_path / "p.csv"),
                          "corrupted")
    assert_one_error_line(invoke("predict", tmp_path / "none", table), "not a caviar model")


def test_predict_on_a_table_lacking_a_column(run, table, tmp_path):
    data = tmp_path / "lacking.csv"
    pd.read_csv(table).drop(columns=["alcohol"]).to_csv(data, index=False)
    assert_one_error_line(invoke("predict", run, data, "-o", tmp_path / "p.csv"),
                          "lacks", "alcohol")


def test_debug_shows_the_exception(tmp_path):
    from caviar.data import DataError

    result = invoke("--debug", "train", tmp_path / "nope.csv", "--target", "y")
    assert isinstance(result.exception, DataError)
    assert_one_error_line(invoke("train", tmp_path / "nope.csv", "--target", "y"))


# ----------------------------------------------------------------------------- helpers


def test_parse_sets():
    assert parse_sets(["learning_rate=1e-3", "hidden_layer_sizes=64,64", "batch_norm=false",
                       "optimizer=adamw", "decay_rate=null", "dropout=0.25"]) == {
        "learning_rate": 1e-3, "hidden_layer_sizes": [64, 64], "batch_norm": False,
        "optimizer": "adamw", "decay_rate": None, "dropout": 0.25}
    assert parse_sets(["hidden_layer_sizes=[32, 16]"]) == {"hidden_layer_sizes": [32, 16]}
    assert parse_sets(["hidden_layer_sizes=32"]) == {"hidden_layer_sizes": [32]}
    assert parse_sets(["batch_norm=True", "epochs=5"]) == {"batch_norm": True, "epochs": 5}
    assert parse_sets(None) == {}


def plain(console: Console) -> str:
    """What a terminal console wrote, without its escape codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=120, highlight=False)


def test_tune_display_on_a_terminal():
    from caviar.cli.display import TuneDisplay

    console = terminal()
    progress = SimpleNamespace(done=3, running=4, pruned=1, failed=0, best_value=0.25,
                               metric="val_log_loss", direction="minimize", elapsed=15.0,
                               time_budget=60.0, trials_budget=None, populations=1)
    with TuneDisplay(console) as display:
        display.update(progress)
    text = plain(console)
    for part in ("tuning", "25%", "trials 3", "running 4", "pruned 1", "failed 0",
                 "best val_log_loss 0.25", "elapsed 15s", "left 45s"):
        assert part in text, part


def test_train_display_on_a_terminal(tmp_path):
    from caviar.cli.display import TrainDisplay
    from caviar.panda import EpochUpdate

    console = terminal()
    info = {"target": "y", "direction": "maximize", "data": {"source": "t.csv", "features": 3},
            "split": {"train_rows": 6, "val_rows": 2, "test_rows": 2}}
    history = [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "learning_rate": 1e-3,
                "val_accuracy": 0.5},
               {"epoch": 2, "train_loss": 0.7, "val_loss": 0.6, "learning_rate": 1e-3,
                "val_accuracy": 0.75}]
    update = dict(run_dir=tmp_path, epochs=2, start_epoch=0, task="binary",
                  metric="val_accuracy", info=info)
    with TrainDisplay(console) as display:
        display.start(EpochUpdate(epoch=0, **update))
        for i in (1, 2):
            display.epoch(EpochUpdate(epoch=i, record=history[i - 1], history=history[:i],
                                      **update))
    text = plain(console)
    for part in ("run", "target y (binary)", "6 train / 2 validation / 2 test", "2/2",
                 "val accuracy 0.75 (best 0.75 at epoch 2)", "val loss █▁"):
        assert part in text, part


def test_sparkline():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([1.0, 1.0]) == "▄▄"
    assert sparkline([None, float("nan"), 1.0, 2.0]) == "▁█"
    assert sparkline([]) == ""
    assert len(sparkline(list(range(100)), width=40)) == 40


# ----------------------------------------------------------------------------- tune

SMALL_SPACE = """
[learning_rate]
kind = "log_uniform"
low = 1e-3
high = 3e-2

[dropout]
kind = "uniform"
low = 0.0
high = 0.3

[width]
value = 8

[depth]
value = 1

[batch_size]
value = 32

[epochs]
kind = "int"
low = 3
high = 5
"""


def assert_tune_report(html: str, out: Path, board: pd.DataFrame) -> None:
    """The report of the study tuned into ``out`` shows its name, counts, best and scores."""
    import optuna

    from caviar.model import load_model

    best = load_model(out / "model").info  # the best network's trial and validation score
    stored = optuna.load_study(study_name="wine-cultivar",
                               storage=f"sqlite:///{out / 'study.db'}").user_attrs["best"]
    states = board["state"].value_counts()
    assert "<title>caviar report: wine-cultivar</title>" in html  # DATA's name-TARGET
    assert "tuning study · minimize val_log_loss" in html
    assert (f'<div class="v">{states.get("complete", 0)} / <span class="pruned">'
            f'{states.get("pruned", 0)}</span> / <span class="failed">'
            f'{states.get("failed", 0)}</span></div>') in html
    assert f'{fmt(best["value"])} <small>(trial #{best["trial"]})</small>' in html
    assert board.set_index("trial").loc[best["trial"], "value"] == pytest.approx(best["value"])
    assert '<div class="v">random</div>' in html  # the sampler
    trials = section(html, "trials", "Trials")
    assert trials.count("<tr><td") == min(10, states.get("complete", 0))  # completed, top 10
    assert f"<h3>Failed ({states.get('failed', 0)})</h3>" in trials
    for sid, title in [("curves", "Learning curves"), ("params", "Hyperparameters vs. score"),
                       ("parallel", "Parallel coordinates"),
                       ("importance", "Hyperparameter importances")]:
        assert 'class="plotly-graph-div"' in section(html, sid, title)
    shown = section(html, "best", "Best configuration")
    assert f"Trial #{best['trial']}, val_log_loss = {fmt(best['value'])}." in shown
    assert stored["test_scores"]
    for name, value in stored["test_scores"].items():
        assert f'<td>{name}</td><td class="num">{fmt(value)}</td>' in shown
    assert "<td>cellar</td><td>onehot</td>" in section(html, "data", "Data")


def test_tune_then_predict(table, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SMALL_SPACE)
    out = tmp_path / "tuned"
    result = invoke("tune", table, "--target", "cultivar", "--trials", 8, "--population", 4,
                    "--sampler", "random", "--space", space, "--out", out, "--seed", 3)
    assert result.exit_code == 0, result.output
    for name in ("leaderboard", "test scores of the model", "report.html",
                 "optuna-dashboard"):
        assert name in result.stdout
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 8 and set(board["state"]) <= {"complete", "pruned", "failed"}
    assert_tune_report((out / "report.html").read_text(), out, board)
    result = invoke("report", f"sqlite:///{out / 'study.db'}", "--study", "wine-cultivar",
                    "-o", tmp_path / "again.html")
    assert result.exit_code == 0, result.output
    assert_tune_report((tmp_path / "again.html").read_text(), out, board)
    predictions = tmp_path / "p.csv"
    result = invoke("predict", out / "model", table, "-o", predictions)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(predictions)
    assert len(frame) == 178
    assert set(frame["prediction"]) <= {"barolo", "grignolino", "barbera"}
    # the same command again resumes the study: its 8 trials are spent, none are added
    again = invoke("tune", table, "--target", "cultivar", "--trials", 8, "--population", 4,
                   "--sampler", "random", "--space", space, "--out", out, "--seed", 3)
    assert again.exit_code == 0, again.output
    assert len(pd.read_csv(out / "leaderboard.csv")) == 8


def test_tune_names_the_columns_it_does_not_use(table, tmp_path):
    df = pd.read_csv(table)
    df["batch"] = [f"b{i:03d}" for i in range(len(df))]  # an identifier
    df["country"] = "Italy"  # a constant
    path = tmp_path / "wine_more.csv"
    df.to_csv(path, index=False)
    space = tmp_path / "space.toml"
    space.write_text(SMALL_SPACE)
    result = invoke("tune", path, "--target", "cultivar", "--trials", 2, "--population", 2,
                    "--space", space, "--drop", "cellar", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())  # as one line, however the console wrapped it
    assert "not used 2 column(s): 'batch' (a different value on every row" in shown
    assert "'country' (constant: a single value ('Italy'))" in shown
    assert "'cellar'" not in shown  # the user dropped it: no news to them


def test_tune_errors_are_one_line(table, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[learning_rate]\nkind = "log_uniform"\nlow = 1e-1\nhigh = 1e-3\n')
    assert_one_error_line(invoke("tune", table, "--target", "cultivar", "--space", bad,
                                 "--trials", 2, "--out", tmp_path / "a"),
                          "learning_rate", "low")
    usage = invoke("tune", table, "--target", "cultivar", "--time-budget", "soon")
    assert usage.exit_code == 2 and "not a duration" in usage.output
    assert_one_error_line(invoke("tune", table, "--target", "cultivr", "--trials", 2,
                                 "--out", tmp_path / "c"), "did you mean cultivar")
    assert_one_error_line(invoke("tune", table, "--target", "cultivar", "--trials", 2,
                                 "--split", "time:nope", "--out", tmp_path / "d"), "nope")
    # a run refused for its input leaves no run folder behind
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert not (tmp_path / "d").exists()
    result = invoke("tune", table, "--target", "cultivar", "--sampler", "bayes")
    assert result.exit_code == 2 and "bayes" in result.output
    result = invoke("tune", table, "--target", "cultivar", "--scheduler", "pbt",
                    "--pbt-coarse", "1")  # all of the budget would leave PBT none
    assert result.exit_code == 2 and "--pbt-coarse" in result.output
