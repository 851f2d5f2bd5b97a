"""The hostile-file corpus: every file of tests/data/bad through ``caviar tune``, ``caviar
train``, ``caviar predict`` and the estimators, each with the outcome MANIFEST.toml gives it;
then damaged model directories, output paths that can't be written, a full disk, and the rule
that a failure never damages what is already saved.

Every failure is one line ``error: ...`` and exit code 1 (a ValueError for the estimators);
nothing prints a traceback.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import safetensors.numpy
from typer.testing import CliRunner, Result

import caviar
from caviar import CaviarClassifier, CaviarRegressor
from caviar.cli import app
from caviar.data import read_table
from caviar.io import ModelFileError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BAD = Path(__file__).parent / "data" / "bad"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((BAD / "MANIFEST.toml").read_text())
COMMANDS = ("tune", "train", "predict", "estimator")
FAST = ["--set", "epochs=2", "--set", "hidden_layer_sizes=4", "--set", "batch_size=16"]
SPACE = """
[learning_rate]
value = 0.01
[width]
value = 4
[depth]
value = 1
[batch_size]
value = 16
[epochs]
value = 2
"""
SRC = str(Path(caviar.__file__).resolve().parents[1])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def check_cli(result: Result, expected: str) -> None:
    """``result`` is the outcome ``expected`` names (see MANIFEST.toml), without a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}")
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    if expected.startswith("error: "):  # one error line, after any warnings that explain it
        assert result.exit_code == 1, result.output
        assert all(line.startswith("warning: ") for line in lines[:-1]), result.stderr
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert expected.removeprefix("error: ") in lines[-1], lines[-1]
        return
    assert result.exit_code == 0, result.output
    if expected == "works":
        assert lines == [], result.stderr
        return
    text = expected.removeprefix("works, warns: ")
    assert text != expected, f"not an outcome: {expected!r}"
    assert all(line.startswith("warning: ") for line in lines), result.stderr
    assert any(text in line for line in lines), result.stderr


# ----------------------------------------------------------------------------- the corpus


def outcome(name: str, command: str) -> str:
    entry = MANIFEST[name]
    return entry.get(command, entry["all"])


def make_big_cell(path: Path) -> None:
    df = pd.read_csv(BAD / "reference.csv")
    df["notes"] = ["short note", "another"] * (len(df) // 2)
    df.loc[3, "notes"] = "A" * 10_000_000
    df.to_csv(path, index=False)


GENERATED: dict[str, Callable[[Path], object]] = {
    "big_cell.csv": make_big_cell,
    "does_not_exist.csv": lambda path: None,
    "a_folder.csv": lambda path: path.mkdir(),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("generated")
    for name, make in GENERATED.items():
        make(folder / name)
    return folder


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.toml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """A panda run trained on reference.csv: the model the corpus is predicted with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = invoke("train", BAD / "reference.csv", "--target", "y", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def quietly_read(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_table(path)


def test_the_manifest_and_the_folder_agree():
    files = {p.name for p in BAD.iterdir()} - {"MANIFEST.toml", "make_corpus.py", "__pycache__"}
    listed = {name for name, entry in MANIFEST.items() if not entry.get("generated")}
    assert files == listed
    assert set(GENERATED) == {n for n, e in MANIFEST.items() if e.get("generated")}
    assert len(MANIFEST) >= 30
    for name, entry in MANIFEST.items():
        assert set(entry) <= {"about", "all", "generated", "same_predictions_as",
                              "estimator_kind", *COMMANDS}, name
        for command in COMMANDS:
            assert outcome(name, command).startswith(("works", "error: ", "skip: ")), name


def test_the_corpus_is_what_make_corpus_writes():
    """Byte for byte, but for the gzip and Parquet files, whose bytes depend on the versions
    of zlib and pyarrow that wrote them."""
    sys.path.insert(0, str(BAD))
    try:
        import make_corpus
    finally:
        sys.path.remove(str(BAD))
    for name, data in make_corpus.files().items():
        if not data.startswith((b"PAR1", b"\x1f\x8b")):
            assert (BAD / name).read_bytes() == data, name


def cases() -> list:
    """(file, command) for every file and command; a tune that works takes seconds (a study
    database, its writer process, a report): those are marked slow."""
    return [pytest.param(name, command, marks=[pytest.mark.slow] if command == "tune"
                         and outcome(name, command).startswith("works") else [])
            for name in MANIFEST for command in COMMANDS]


@pytest.mark.parametrize("name, command", cases())
def test_hostile_file(name, command, generated, space, reference_run, tmp_path):
    expected = outcome(name, command)
    if expected.startswith("skip: "):
        pytest.skip(expected.removeprefix("skip: "))
    entry = MANIFEST[name]
    path = (generated if entry.get("generated") else BAD) / name
    if command == "estimator":
        check_estimator(path, expected, entry.get("estimator_kind", "classifier"))
        return
    out = tmp_path / "out"
    if command == "tune":
        result = invoke("tune", path, "--target", "y", "--trials", 2, "--population", 2,
                        "--space", space, "--ensemble", 1, "--out", out)
    elif command == "train":
        result = invoke("train", path, "--target", "y", *FAST, "--out", out)
    else:
        out = tmp_path / "predictions.csv"
        result = invoke("predict", reference_run, path, "--output", out)
    check_cli(result, expected)
    if result.exit_code != 0:  # and nothing written (tune makes its folder first)
        assert not out.exists() or (command == "tune" and not any(out.iterdir()))
        return
    if command == "tune":
        assert caviar.load_model(out / "model").task in ("binary", "multiclass")
    elif command == "train":
        assert json.loads((out / "run.json").read_text())["status"] == "complete"
        assert sum(p.stat().st_size for p in (out / "model").iterdir()) < 100_000
    else:
        table = quietly_read(path)
        predictions = pd.read_csv(out)
        assert len(predictions) == len(table)
        assert set(predictions["prediction"]) <= {"no", "yes"}
        other = entry.get("same_predictions_as")
        if other:
            model = caviar.load_model(reference_run / "model")
            want = model.predict_frame(quietly_read(BAD / other)).to_csv(index=False)
            pd.testing.assert_frame_equal(predictions, pd.read_csv(io.StringIO(want)))


def check_estimator(path: Path, expected: str, kind: str) -> None:
    """``caviar.read_table`` then fit and predict a ``kind`` estimator on the column y."""
    Estimator = CaviarRegressor if kind == "regressor" else CaviarClassifier
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = read_table(path)
            X, y = df.drop(columns="y"), df["y"]
            estimator = Estimator(epochs=2, hidden_layer_sizes=(4,), batch_size=16,
                                  random_state=0)
            predictions = estimator.fit(X, y).predict(X)
        except ValueError as e:
            error = e
    messages = [str(w.message) for w in caught]
    if expected.startswith("error: "):
        assert error is not None, f"no error; warnings: {messages}"
        assert "\n" not in str(error).strip(), str(error)
        assert expected.removeprefix("error: ") in str(error), str(error)
        return
    assert error is None, f"{type(error).__name__}: {error}"
    assert len(predictions) == len(df)
    if expected == "works":
        assert messages == []
    else:
        assert any(expected.removeprefix("works, warns: ") in m for m in messages), messages


def test_a_10mb_cell_is_free_text_not_a_category(generated, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", generated / "big_cell.csv", "--target", "y", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    roles = json.loads((out / "run.json").read_text())["data"]["roles"]
    assert roles["notes"] == {"role": "ignored", "reason": "free text (values up to 10,000,000 "
                                                           "characters), not a category"}


def test_a_class_with_one_row_is_trained_on_for_every_seed(tmp_path):
    """It used to be left out of training by chance: 'task=multiclass needs 3 or more
    classes but target y has 2' from tune, 'class unknown at training' from train."""
    for seed in range(4):
        out = tmp_path / f"run-{seed}"
        result = invoke("train", BAD / "class_with_one_row.csv", "--target", "y", *FAST,
                        "--seed", seed, "--out", out)
        assert result.exit_code == 0, result.output
        assert caviar.load_model(out / "model").classes == ["maybe", "no", "yes"]


# ----------------------------------------------------------------------------- model directories


def _edit_json(directory: Path, edit: Callable[[dict], object]) -> None:
    meta = json.loads((directory / "model.json").read_text())
    edit(meta)
    (directory / "model.json").write_text(json.dumps(meta))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _double_arrays(file: Path) -> None:
    arrays = safetensors.numpy.load_file(str(file))
    safetensors.numpy.save_file({k: np.concatenate([v, v]) for k, v in arrays.items()},
                                str(file))


@pytest.fixture(scope="module")
def wider_model(tmp_path_factory) -> Path:
    """A model of the reference table with 8 hidden units instead of 4."""
    out = tmp_path_factory.mktemp("wider") / "run"
    result = invoke("train", BAD / "reference.csv", "--target", "y", "--set", "epochs=1",
                    "--set", "hidden_layer_sizes=8", "--out", out)
    assert result.exit_code == 0, result.output
    return out / "model"


TAMPERED: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "model.json truncated": (lambda d, w: _truncate(d / "model.json"),
                             "model.json is corrupted or truncated"),
    "model.json a list": (lambda d, w: (d / "model.json").write_text("[1, 2]"),
                          "is not a caviar model file"),
    "model.json binary": (lambda d, w: (d / "model.json").write_bytes(b"\x00\xff\xfe"),
                          "model.json is corrupted or truncated"),
    "a class added": (
        lambda d, w: _edit_json(d, lambda m: m["preprocessor"]["classes"].append("maybe")),
        # 5: four features and the codes of the 3-level categorical
        "the network (binary, 5 inputs, 2 classes) does not fit the preprocessor (binary, 5 "
        "features, 3 classes)"),
    "task changed": (
        lambda d, w: _edit_json(d, lambda m: m["preprocessor"].update(task="regression")),
        "holds an inconsistent model"),
    "a column renamed": (
        lambda d, w: _edit_json(d, lambda m: m["preprocessor"]["roles"].update(
            numeric=["x", "w"])), "holds an inconsistent model"),
    "newer format": (lambda d, w: _edit_json(d, lambda m: m.update(format_version=99)),
                     "upgrade caviar to load it"),
    "network of other shapes": (
        lambda d, w: shutil.copy(w / "network.safetensors", d / "network.safetensors"),
        "holds an inconsistent model (RuntimeError: The size of tensor a (4) must match"),
    "preprocessor of other shapes": (
        lambda d, w: _double_arrays(d / "preprocessor.safetensors"),
        "saved preprocessor is inconsistent"),
    "network truncated": (lambda d, w: _truncate(d / "network.safetensors"),
                          "network.safetensors is corrupted or truncated"),
    "network missing": (lambda d, w: (d / "network.safetensors").unlink(),
                        "network.safetensors is missing"),
    "empty folder": (lambda d, w: [p.unlink() for p in d.iterdir()], "no model.json in it"),
}


@pytest.mark.parametrize("damage", list(TAMPERED))
def test_a_tampered_model_directory(damage, reference_run, wider_model, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(reference_run / "model", directory)
    harm, message = TAMPERED[damage]
    harm(directory, wider_model)
    out = tmp_path / "predictions.csv"
    check_cli(invoke("predict", directory, BAD / "reference.csv", "--output", out),
              f"error: {message}")
    assert not out.exists()
    with pytest.raises(ModelFileError) as info:
        caviar.load_model(directory)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_model_paths_that_are_not_model_directories(tmp_path):
    check_cli(invoke("predict", tmp_path / "nope", BAD / "reference.csv"),
              "error: nope is not a caviar model directory: it does not exist or is a file")
    check_cli(invoke("predict", BAD / "reference.csv", BAD / "reference.csv"),
              "error: reference.csv is not a caviar model directory")


# ----------------------------------------------------------------------------- output paths


@pytest.fixture
def a_file(tmp_path) -> Path:
    file = tmp_path / "a-file"
    file.write_text("not a folder\n")
    return file


def test_output_below_a_regular_file(a_file, reference_run, space):
    """An --out whose parent is a file can't be written, whoever runs the tests."""
    data = BAD / "reference.csv"
    where = "(a file where a folder is needed); choose another output path"
    check_cli(invoke("train", data, "--target", "y", *FAST, "--out", a_file / "run"),
              f"error: Not a directory: {a_file / 'run'} {where}")
    check_cli(invoke("tune", data, "--target", "y", "--trials", 2, "--space", space,
                     "--out", a_file / "tuned"), f"error: Not a directory: {a_file / 'tuned'}")
    check_cli(invoke("predict", reference_run, data, "--output", a_file / "p.csv"),
              f"error: File exists: {a_file} {where}")
    check_cli(invoke("train", data, "--target", "y", *FAST, "--out", a_file),
              f"error: File exists: {a_file} {where}")
    assert a_file.read_text() == "not a folder\n"


def test_predictions_to_a_folder(reference_run, tmp_path):
    check_cli(invoke("predict", reference_run, BAD / "reference.csv", "--output", tmp_path),
              f"error: Is a directory: {tmp_path} (a folder where a file is needed)")


def test_output_without_write_permission(reference_run, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root, which ignores file permissions; an unwritable --out is "
                    "covered by test_output_below_a_regular_file")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        check_cli(invoke("train", BAD / "reference.csv", "--target", "y", *FAST,
                         "--out", locked / "run"),
                  "error: Permission denied")
        check_cli(invoke("predict", reference_run, BAD / "reference.csv",
                         "--output", locked / "p.csv"), "error: Permission denied")
    finally:
        locked.chmod(0o755)


# ----------------------------------------------------------------------------- nothing damaged


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, the study database's aside: SQLite rewrites the file
    when opened, its WAL index (study.db-shm) is shared memory it rebuilds, and a connection
    that closes without the disk room to checkpoint leaves its WAL (study.db-wal) for the
    next one to read. ``study_trials`` checks the study through Optuna instead."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in ("study.db", "study.db-shm", "study.db-wal")}


def study_trials(directory: Path) -> list[tuple]:
    """Every trial of every study in ``directory/study.db``: number, state, value, params."""
    url = f"sqlite:///{directory / 'study.db'}"
    return [(name, t.number, t.state, t.values, t.params)
            for name in optuna.get_all_study_names(url)
            for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, space) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "tune"
    result = invoke("tune", BAD / "reference.csv", "--target", "y", "--trials", 2,
                    "--population", 2, "--space", space, "--ensemble", 1, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_a_failing_train_into_an_existing_run_leaves_it(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = snapshot(run)
    for data in ("reference.csv", "text_in_numeric.csv", "empty.csv"):
        result = invoke("train", BAD / data, "--target", "y", *FAST, "--out", run)
        check_cli(result, "error: already holds a run; continue it with `caviar resume")
    assert snapshot(run) == before
    check_cli(invoke("predict", run, BAD / "reference.csv", "--output", tmp_path / "p.csv"),
              "works")


def test_a_failing_tune_leaves_the_runs_there(tuned, reference_run, space, tmp_path):
    """Into a tune folder with a bad table, or into a panda run: both stay as they were."""
    out = tmp_path / "tune"
    shutil.copytree(tuned, out)
    before, trials = snapshot(out), study_trials(out)
    for data, message in (("target_numbers_with_a_typo.csv", "is numbers except 1 value(s)"),
                          ("target_inf.csv", "infinite"),
                          ("truncated.csv.gz", "truncated or damaged")):
        result = invoke("tune", BAD / data, "--target", "y", "--trials", 2, "--space", space,
                        "--out", out)
        check_cli(result, f"error: {message}")
    assert snapshot(out) == before and study_trials(out) == trials
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = snapshot(run)
    result = invoke("tune", BAD / "reference.csv", "--target", "y", "--trials", 2,
                    "--space", space, "--out", run)
    check_cli(result, "error: holds a panda run, which tuning there would overwrite; choose "
                      "another output directory (--out)")
    assert snapshot(run) == before


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from caviar.cli import app
app(sys.argv[2:], prog_name="caviar")
"""


def run_with_a_full_disk(limit: int, *args: object) -> subprocess.CompletedProcess:
    """The command line in a process that can't write past ``limit`` bytes in any file."""
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_a_study_write_the_disk_refused_is_named(capsys):
    """Optuna wraps SQLite's error in its own (``raise StorageInternalError(...) from e``):
    the line still says the disk refused the write, and what to do."""
    import sqlite3

    import typer
    from optuna.exceptions import StorageInternalError

    from caviar.cli.errors import handle_errors

    with pytest.raises(typer.Exit) as stopped, handle_errors():
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    assert stopped.value.exit_code == 1
    assert capsys.readouterr().err.strip() == (
        "error: the study's database could not be written (disk I/O error); free some disk "
        "space or choose another output path")


@pytest.mark.slow
def test_a_full_disk_damages_nothing(reference_run, tuned, space, tmp_path):
    run, out = tmp_path / "run", tmp_path / "tune"
    shutil.copytree(reference_run, run)
    shutil.copytree(tuned, out)
    predictions = tmp_path / "p.csv"
    predictions.write_text("old predictions\n")
    before, trials = snapshot(tmp_path), study_trials(out)
    assert trials
    commands = [
        (3000, "resume", run, "--epochs", 2),  # the checkpoint's network file can't be written
        (100, "predict", run, BAD / "reference.csv", "--output", predictions),
        (100, "tune", BAD / "reference.csv", "--target", "y", "--trials", 4, "--population", 2,
         "--space", space, "--ensemble", 1, "--out", out),
    ]
    for limit, *args in commands:
        done = run_with_a_full_disk(limit, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        lines = done.stderr.strip().splitlines()
        # a file caviar writes names EFBIG; SQLite (tune's study) reports a disk I/O error
        assert len(lines) == 1 and lines[0].startswith(
            ("error: File too large", "error: the study's database could not be written")
        ), done.stderr
        assert "free some disk space or choose another output path" in lines[0]
    assert snapshot(tmp_path) == before  # no file changed, none left half-written
    assert study_trials(out) == trials  # the study lost no trial and gained none
    check_cli(invoke("predict", run, BAD / "reference.csv", "--output", tmp_path / "new.csv"),
              "works")
    assert caviar.load_model(out / "model").task == "binary"
