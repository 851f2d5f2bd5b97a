"""Panda mode: babysit one network, epoch by epoch, and adjust it by hand while it trains.

The lecture notes call this the panda approach (one model, watched and nudged day by day), as
opposed to the caviar approach of training many at once. A *run directory* holds everything:

    RUN/run.json     what the run is (data, target, split, seed), its history and its changes;
                     the report reads it (``caviar report RUN``)
    RUN/model/       the checkpoint of the last complete epoch, in the safe model format of
                     :func:`caviar.io.save_model` (preprocessor, weights, batch-norm statistics,
                     optimizer moments, the random generator's state, the history); it is also
                     the final model: ``caviar predict RUN/model DATA``
    RUN/data.parquet a copy of the table, when it was given as a DataFrame

A checkpoint is written after every epoch into a temporary directory and renamed into place,
and ``run.json`` is replaced atomically, so a run killed at any moment leaves the last complete
checkpoint. :func:`resume_run` continues from it, after changing hyperparameters if asked;
resuming without changes gives exactly the weights and history of a run never stopped.

Units: losses in the history are those the network optimizes (for regression, half the squared
error of the *standardized* target); ``train_rmse`` and ``val_rmse`` in ``run.json`` and in
the ``on_epoch`` records are converted to the target's units, like the test scores.

Example:
    >>> from caviar.datasets import load_dataset
    >>> from caviar.panda import resume_run, train_run
    >>> df = load_dataset("default").head(600)
    >>> run = train_run(df, "default", {"hidden_layer_sizes": [16]}, "runs/doc", epochs=2)
    >>> run = resume_run(run, {"learning_rate": 3e-4}, epochs=2)  # 2 more epochs
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .data import NUMERIC, DataError, PreparedTable, TablePreprocessor, prepare, read_table
from .engine import Population, resolve_device
from .engine.threads import OneThreadWhenBusy
from .files import jsonable, write_json_atomically
from .hyperparams import NUMERIC_READS, STRUCTURAL, resolve
from .io import ModelFileError, save_model
from .metrics import in_target_units, validation_metric
from .model import CaviarModel, load_model

__all__ = ["EpochUpdate", "RunDiverged", "RunInterrupted", "find_model_dir", "read_run",
           "resume_run", "train_run"]

RUN_FILE = "run.json"
MODEL_DIR = "model"
TEST_SIZE = 0.2
VAL_SIZE = 0.2
FORMAT_VERSION = 1


@dataclass
class EpochUpdate:
    """What ``on_start`` and ``on_epoch`` callbacks receive."""

    run_dir: Path
    epoch: int  # epochs completed so far, over the whole run
    epochs: int  # the epoch the run trains to (the network's ``epochs`` hyperparameter)
    start_epoch: int  # epochs completed when this session (train or resume) began
    task: str
    metric: str  # the validation score's key: "val_log_loss" or "val_rmse"
    record: dict[str, Any] | None = None  # the epoch just finished (None in on_start)
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch so far
    info: dict[str, Any] = field(default_factory=dict)  # run.json as written


class RunInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the checkpoint of ``epoch`` is on disk."""

    def __init__(self, run_dir: Path, epoch: int, epochs: int):
        super().__init__(f"interrupted after epoch {epoch} of {epochs}; the checkpoint of "
                         f"epoch {epoch} is in {Path(run_dir) / MODEL_DIR}; continue with "
                         f"`caviar resume {run_dir}`")
        self.run_dir, self.epoch, self.epochs = Path(run_dir), epoch, epochs


class RunDiverged(ValueError):
    """The network's loss or weights became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- small helpers


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _clean(value: Any) -> Any:
    """JSON-safe, NaN and infinities as None (run.json is strict JSON)."""
    return jsonable(value, finite=True)


def _sha256(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, bytes):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _column_list(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    return [str(n) for n in names]


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C back while a checkpoint is written; raise it once the writing is done.
    Only Python's own Ctrl-C handler is deferred: a process started with SIGINT ignored (by
    nohup, or in the background of a shell) or with a handler of its own keeps it."""
    received: list[int] = []
    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        with contextlib.suppress(ValueError):
            previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``run.json``; ValueError if ``run_dir`` is not a panda run directory."""
    run_dir = Path(run_dir)
    file = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise ValueError(f"run directory {str(run_dir)!r} not found; pass the directory "
                         "`caviar train` wrote (its --out)")
    if not file.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a panda run directory: no {RUN_FILE} in it")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{file} is corrupted ({e}); the checkpoint in "
                         f"{run_dir / MODEL_DIR} can still be loaded with caviar.load_model"
                         ) from None
    if not isinstance(info, dict) or info.get("kind") != "panda":
        raise ValueError(f"{file} does not describe a panda run (no \"kind\": \"panda\")")
    return info


def find_model_dir(path: str | Path) -> Path:
    """The model directory for ``path``: ``path`` itself, or the ``model/`` inside a run
    directory; a run killed while renaming its checkpoint into place still has its previous
    checkpoint under a hidden name, which is used then."""
    path = Path(path)
    if (path / "model.json").is_file():
        return path
    inner = path / MODEL_DIR
    if (inner / "model.json").is_file():
        return inner
    if path.is_dir():
        # write_directory_atomically moves the old checkpoint aside before renaming the new
        # one into place; a kill between the two renames leaves only the old one
        aside = sorted((p for p in path.glob(f".{MODEL_DIR}.old.*")
                        if (p / "model.json").is_file()), key=lambda p: p.stat().st_mtime)
        if aside:
            return aside[-1]
        if (path / RUN_FILE).is_file():
            raise ModelFileError(f"{path} holds no checkpoint yet (no {MODEL_DIR}/model.json)")
    return path


def _remove_leftovers(run_dir: Path, keep: Path | None = None) -> None:
    """Temporary and set-aside checkpoint directories left by a killed writer."""
    for p in run_dir.glob(f".{MODEL_DIR}.*"):
        if p.is_dir() and p != keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(f".{RUN_FILE}.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


# ----------------------------------------------------------------------------- data


def _prepare(df: pd.DataFrame, target: str, task: str | None, categorical: list[str],
             drop: list[str], seed: int, usage: Mapping[str, Any] | None = None
             ) -> PreparedTable:
    """The run's split and tensors (the same inputs give the same ones: resuming is exact);
    ``usage``: the split, weight and encoding options (``split``, ``group``, ``weight``,
    ``class_weight``, ``max_onehot``, ``numeric``), as run.json keeps them."""
    prepared = prepare(df, target, task=task, categorical=categorical, drop=drop, seed=seed,
                       val_size=VAL_SIZE, test_size=TEST_SIZE, **dict(usage or {}))
    if len(prepared.validation) == 0 or len(prepared.test) == 0:
        raise DataError(f"the table has too few rows ({len(df)}) for a train/validation/test "
                        "split; use a larger table")
    return prepared


def _roles(pre: TablePreprocessor) -> dict[str, dict[str, str]]:
    """Column roles as the report reads them: ``{column: {"role": ..., "reason": ...}}``."""
    roles = pre.roles_
    out = {}
    for col in pre.columns_:
        if col == roles.target:
            out[col] = {"role": "target", "reason": f"the target ({roles.task})"}
        elif col in roles.ignored:
            out[col] = {"role": "ignored", "reason": roles.ignored[col]}
        else:
            out[col] = {"role": roles.role(col), "reason": roles.reasons.get(col, "")}
    return out


def _frame_copy(frame: pd.DataFrame) -> tuple[str, bytes]:
    """A DataFrame as Parquet bytes (CSV if Parquet cannot hold its columns)."""
    buf = io.BytesIO()
    try:
        frame.to_parquet(buf)
        return "data.parquet", buf.getvalue()
    except Exception:  # pyarrow refuses mixed-type object columns
        return "data.csv", frame.to_csv(index=False).encode()


def _data_file(run_dir: Path, info: Mapping[str, Any]) -> Path:
    path = Path(info["data_path"])
    return path if path.is_absolute() else run_dir / path


def _read_run_data(run_dir: Path, info: Mapping[str, Any]) -> pd.DataFrame:
    file = _data_file(run_dir, info)
    if not file.exists():
        raise DataError(f"the run's data file {str(file)!r} is gone; put it back to resume the "
                        "run (the split is drawn from it again)")
    expected = info.get("data_sha256")
    if expected and _sha256(file) != expected:
        raise DataError(f"the run's data file {str(file)!r} changed since the run started: "
                        "the train/validation/test split would differ; restore the file or "
                        "start a new run with `caviar train`")
    if not Path(info["data_path"]).is_absolute():  # the run's own copy of a DataFrame
        return read_table(_read_copy(file.name, file.read_bytes()))
    return read_table(file)


def _read_copy(name: str, blob: bytes) -> pd.DataFrame:
    buf = io.BytesIO(blob)
    return pd.read_parquet(buf) if name.endswith(".parquet") else pd.read_csv(buf)


# ----------------------------------------------------------------------------- a session


class _Session:
    """One stretch of training of a run (train_run, or one resume_run)."""

    def __init__(self, run_dir: Path, info: dict[str, Any], data: PreparedTable,
                 network: Population):
        self.run_dir, self.info, self.data, self.network = run_dir, info, data, network
        self.task = data.task
        self.start_epoch = self.done

    @property
    def done(self) -> int:
        return int(self.network.epoch[0])

    @property
    def planned(self) -> int:
        return int(self.network.hyperparameters[0]["epochs"])

    def display(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A history record with the RMSE in the target's units."""
        return _clean(in_target_units(record, self.data.target_std))

    def update(self, record: dict[str, Any] | None = None) -> EpochUpdate:
        return EpochUpdate(self.run_dir, self.done, self.planned, self.start_epoch, self.task,
                           self.info["metric"], record, list(self.info["history"]), self.info)

    def write_info(self) -> None:
        self.info["updated"] = _now()
        write_json_atomically(self.run_dir / RUN_FILE, self.info)

    def checkpoint(self) -> None:
        """Save the whole state as the run's model directory, then update run.json; Ctrl-C
        waits until both are written."""
        with _sigint_deferred():
            model = CaviarModel(self.data.preprocessor, self.network, {
                "kind": "panda", "target": self.data.preprocessor.target,
                "rows": len(self.data.train), "changes": self.info["changes"]})
            save_model(model, self.run_dir / MODEL_DIR)
            self.info["history"] = [self.display(r) for r in self.network.history[0]]
            self.info["epochs_done"] = self.done
            self.info["epochs"] = self.planned
            self.info["current_hyperparameters"] = _clean(self.network.hyperparameters[0])
            self.write_info()
            _remove_leftovers(self.run_dir)

    def run(self, on_epoch: Callable[[EpochUpdate], None] | None,
            on_start: Callable[[EpochUpdate], None] | None) -> Path:
        d, network = self.data, self.network
        started = time.perf_counter()
        data = network.to_device(d.X_train, d.y_train, d.X_val, d.y_val)  # once, not per epoch
        threads = OneThreadWhenBusy()
        try:
            if on_start is not None:
                on_start(self.update())
            # --weight weights the validation score too
            scorer = d.validation_scorer() if d.w_val is not None else None
            while bool(network.trainable.any()):
                self._scheduled_changes()
                network.fit_epoch(*data, weight=d.w_train)
                threads.check()  # one thread once other processes keep the cores busy
                if scorer is not None:
                    network.history[0][-1][self.info["metric"]] = scorer(
                        network.predict(data[2])[0].cpu())
                if bool(network.diverged[0]):
                    self._diverged(started)
                self.checkpoint()
                if on_epoch is not None:
                    on_epoch(self.update(self.info["history"][-1]))
        except KeyboardInterrupt:
            saved = int(self.info["epochs_done"])
            self.info["status"] = "interrupted"
            self._add_time(started)
            self.write_info()
            raise RunInterrupted(self.run_dir, saved, self.planned) from None
        finally:
            threads.restore()
        self._add_time(started)
        self._finish()
        return self.run_dir

    def _scheduled_changes(self) -> None:
        """Make the changes ``train_run(schedule=...)`` planned for this epoch, once (a
        resume after a kill during the epoch makes them again: the checkpoint is older)."""
        done = self.done
        for step in self.info.get("schedule") or ():
            made = any(c.get("epoch") == done and c.get("scheduled")
                       for c in self.info["changes"])
            if step["epoch"] != done or made:
                continue
            old = self.network.hyperparameters[0]
            new = old.replace(**step["hyperparameters"])
            diffs = {k: [old[k], new[k]] for k in new if new[k] != old[k]}
            if diffs:
                self.network.set_hyperparameters(0, **{k: new[k] for k in diffs})
                self.info["changes"].append({"epoch": done, "changes": _clean(diffs),
                                             "scheduled": True})

    def _add_time(self, started: float) -> None:
        self.info["train_seconds"] = round(
            float(self.info.get("train_seconds") or 0.0) + time.perf_counter() - started, 3)

    def _diverged(self, started: float) -> None:
        saved = int(self.info["epochs_done"])
        failure = self.network.failure[0] or "the loss became NaN or infinite"
        self.info["status"] = "diverged"
        self.info["failure"] = failure
        self._add_time(started)
        self.write_info()
        raise RunDiverged(f"the network {failure}; the checkpoint of epoch {saved} "
                          f"is kept: continue from it with a lower rate, e.g. `caviar resume "
                          f"{self.run_dir} --set learning_rate="
                          f"{self.network.hyperparameters[0]['learning_rate'] / 10:g}`")

    def _finish(self) -> None:
        model = CaviarModel(self.data.preprocessor, self.network, {"kind": "panda"})
        outputs = model.outputs(self.data.test_inputs)  # once, for both
        self.info["test_scores"], self.info["constant_test_scores"] = model.test_scores(
            self.data, outputs=outputs)
        if self.task != "regression":
            self.info["confusion_matrix"] = model.confusion_matrix(self.data.test, outputs)
        self.info["status"] = "complete"
        self.write_info()


# ----------------------------------------------------------------------------- the API


def train_run(data: pd.DataFrame | str | Path, target: str,
              hyperparameters: Mapping[str, Any] | None = None,
              out: str | Path = "runs/panda", epochs: int | None = None,
              task: str | None = None, categorical: Iterable[str] = (),
              drop: Iterable[str] = (), seed: int = 0,
              on_epoch: Callable[[EpochUpdate], None] | None = None,
              on_start: Callable[[EpochUpdate], None] | None = None,
              overwrite: bool = False, split: str | None = None, group: str | None = None,
              weight: str | None = None, class_weight: str | None = None,
              max_onehot: int | None = None, numeric: str | None = None, device: str = "cpu",
              schedule: Mapping[int, Mapping[str, Any]] | None = None) -> Path:
    """Train one network on ``data`` epoch by epoch, checkpointing into the run directory
    ``out`` after every epoch; returns ``out``.

    The table is split into train/validation/test (60/20/20, stratified for classifiers, drawn
    from ``seed``); the preprocessor is fitted on the training rows only; the network trains
    until its ``epochs`` hyperparameter (``epochs`` here overrides it); at the end the held-out
    test scores (and confusion matrix) go into ``run.json``. ``on_start`` is called once before
    the first epoch and ``on_epoch`` after each epoch's checkpoint, with an
    :class:`EpochUpdate`.

    Ctrl-C stops training with :class:`RunInterrupted` (a KeyboardInterrupt) once the last
    complete epoch is saved; :func:`resume_run` continues. A diverging network raises
    :class:`RunDiverged`, keeping the checkpoint of the last good epoch. ``out`` may not hold
    a run already unless ``overwrite``. ``split``, ``group``, ``weight`` and
    ``class_weight`` are ``caviar.data.prepare``'s (a time or group split, row and class
    weights; ``weight`` weights the validation score too), and so are ``max_onehot`` (the
    one-hot limit of categoricals) and ``numeric`` (the numeric columns' scaling; None: the
    configuration's ``numeric``, else robust).
    ``device``: where the network trains, "cpu", "cuda" or "auto" (the checkpoints load
    anywhere). ``schedule``: changes planned by epoch,
    ``{12: {"learning_rate": 3e-3}}`` made after 12 epochs (how a PBT member's schedule is
    replayed: ``caviar.search.pbt.read_schedule``); each is recorded in ``run.json``'s
    ``changes`` like a resume's, with ``"scheduled": true``, and a resumed run goes on with
    the schedule.
    """
    device = resolve_device(device)  # before any work: a machine without CUDA fails here
    hp = dict(hyperparameters or {})
    if epochs is not None:
        hp["epochs"] = epochs
    resolved = resolve(hp)
    if numeric in ("search", "auto"):
        raise ValueError(f"numeric={numeric} is tune's (a choice among networks); train one "
                         f"network with {', '.join(NUMERIC_READS)}")
    if numeric is not None and resolved["numeric"] not in (None, numeric):
        raise ValueError(f"numeric={numeric} and the hyperparameter numeric="
                         f"{resolved['numeric']} disagree; give one of them")
    numeric = numeric or resolved["numeric"] or NUMERIC[0]
    resolved = resolved.replace(numeric=numeric)  # the network says how its inputs are scaled
    planned = _check_schedule(resolved, schedule)
    run_dir = Path(out)
    if (run_dir / RUN_FILE).exists() and not overwrite:
        raise ValueError(f"{str(run_dir)!r} already holds a run; continue it with "
                         f"`caviar resume {run_dir}` or pick another output directory")
    categorical, drop = _column_list(categorical), _column_list(drop)

    if isinstance(data, pd.DataFrame):
        name, blob = _frame_copy(read_table(data))
        data_path, sha = name, _sha256(blob)
        source = f"DataFrame (copied to {name})"
        # train on the stored copy itself, so a resume sees exactly the same table
        df = read_table(_read_copy(name, blob))
    else:
        blob = None
        df = read_table(data)
        file = Path(data).resolve()
        data_path, sha, source = str(file), _sha256(file), str(data)
    usage = {k: v for k, v in {"split": split, "group": group, "weight": weight,
                               "class_weight": class_weight,
                               "max_onehot": max_onehot, "numeric": numeric}.items()
             if v is not None}
    prepared = _prepare(df, target, task, categorical, drop, seed, usage)
    pre = prepared.preprocessor
    network = Population(pre.task_, prepared.inputs, [resolved],
                         n_classes=prepared.n_classes, seed=seed, device=device)

    if overwrite:
        for stale in (RUN_FILE, MODEL_DIR):
            p = run_dir / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    if blob is not None:
        (run_dir / data_path).write_bytes(blob)
    regression = pre.task_ == "regression"
    info: dict[str, Any] = {
        "kind": "panda", "format_version": FORMAT_VERSION, "caviar_version": __version__,
        "status": "running", "task": pre.task_,
        "metric": validation_metric(pre.task_).replace(
            "val_", "val_weighted_" if prepared.w_val is not None else "val_"),
        "direction": "minimize",
        "target": target,
        "data": {"source": source, "rows": int(len(df)), "columns": int(df.shape[1]),
                 "target": target, "task": pre.task_, "roles": _roles(pre),
                 "features": int(pre.n_features_out_)},
        "data_path": data_path, "data_sha256": sha,
        "categorical": categorical, "drop": drop, "seed": seed, "usage": usage,
        "split": {**prepared.split, "test_size": TEST_SIZE, "val_size": VAL_SIZE},
        "units": ({"loss": "half the squared error of the standardized target",
                   "rmse": "target units"} if regression else {"loss": "log loss"}),
        "device": device.type,
        "hyperparameters": _clean(resolved), "current_hyperparameters": _clean(resolved),
        "epochs": int(resolved["epochs"]), "epochs_done": 0,
        "history": [], "changes": [], "resumes": [], "train_seconds": 0.0,
        **({"schedule": planned} if planned else {}),
        "model": MODEL_DIR, "created": _now(), "updated": _now(),
    }
    session = _Session(run_dir, info, prepared, network)
    session.checkpoint()  # epoch 0: a run killed in its first epoch can still be resumed
    return session.run(on_epoch, on_start)


def _check_schedule(start: Any, schedule: Mapping[int, Mapping[str, Any]] | None
                    ) -> list[dict[str, Any]]:
    """The schedule as run.json stores it, sorted by epoch; a ValueError for a change the
    network cannot make (a structural name, a bad value)."""
    steps = []
    for epoch, changes in sorted((schedule or {}).items()):
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"a scheduled change's epoch must be a whole number >= 0, got "
                             f"{epoch!r}")
        structural = [k for k in changes if k in STRUCTURAL]
        if structural:
            raise ValueError(f"the schedule changes {', '.join(structural)} at epoch {epoch}, "
                             "which fixes the network's shape; only per-member "
                             "hyperparameters can change while it trains")
        start.replace(**changes)  # the one check of the values
        steps.append({"epoch": epoch, "hyperparameters": _clean(dict(changes))})
    return steps


def resume_run(run_dir: str | Path, changes: Mapping[str, Any] | None = None,
               epochs: int | None = None,
               on_epoch: Callable[[EpochUpdate], None] | None = None,
               on_start: Callable[[EpochUpdate], None] | None = None,
               device: str = "cpu") -> Path:
    """Continue a run from its last checkpoint on ``device``; returns ``run_dir``.

    ``changes`` are hyperparameters to change first (``{"learning_rate": 3e-4}``); structural
    ones (hidden_layer_sizes, activation, batch_norm, batch_size) fix the network's shape and
    are refused. ``epochs`` is how many *more* epochs to train: the network's ``epochs``
    hyperparameter (the stop, and the length of a cosine schedule) becomes the epochs done plus
    ``epochs``. Without it, an interrupted run trains on to its planned ``epochs`` (or to
    ``changes["epochs"]``); a finished run needs it. Every hyperparameter that changes is
    recorded in ``run.json``'s ``changes`` as ``{"epoch": <epochs done>, "changes":
    {name: [old, new]}}``. Without changes, the result is exactly that of a run never stopped
    (on the same kind of device: a CPU and a GPU draw other minibatch orders and masks).
    """
    device = resolve_device(device)
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    changes = dict(changes or {})
    structural = [k for k in changes if k in STRUCTURAL]
    if structural:
        raise ValueError(f"{', '.join(structural)} cannot change when resuming: "
                         f"{'they fix' if len(structural) > 1 else 'it fixes'} the network's "
                         "shape; start a new run with `caviar train` instead")
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise ValueError(f"epochs (more epochs to train) must be a positive integer, got "
                         f"{epochs!r}")
    if epochs is not None and "epochs" in changes:
        raise ValueError("pass either epochs (how many more) or an epochs change (the total), "
                         "not both")
    checkpoint = find_model_dir(run_dir)
    model = load_model(checkpoint, device)
    network = model.network
    if bool(network.diverged[0]):
        raise ValueError(f"the checkpoint in {checkpoint} holds a diverged network; start a new "
                         "run with a lower learning_rate")
    done = int(network.epoch[0])
    old = network.hyperparameters[0]
    if epochs is not None:
        total = done + int(epochs)
    elif "epochs" in changes:
        total = changes["epochs"]
    else:
        total = int(old["epochs"])
        if total <= done:
            raise ValueError(f"the run already trained its {done} epochs; pass epochs=N "
                             "(--epochs N) to train N more")
    new = old.replace(**{**changes, "epochs": total})  # the one check of the changes
    if new["epochs"] <= done:
        raise ValueError(f"epochs={new['epochs']} is not more than the {done} epochs already "
                         "trained; pass the new total, or --epochs N for N more")
    df = _read_run_data(run_dir, info)
    # codes and the numeric scaling as the checkpoint's preprocessor made them (no codes
    # before embeddings existed; standard scaling before the numeric option did)
    usage = {**(info.get("usage") or {}), "codes": model.preprocessor.codes,
             "numeric": model.preprocessor.numeric}
    prepared = _prepare(df, info["target"], info["task"], list(info.get("categorical", [])),
                        list(info.get("drop", [])), int(info["seed"]), usage)
    if prepared.preprocessor.feature_names_out_ != model.preprocessor.feature_names_out_:
        raise DataError("the run's data no longer gives the features the checkpoint was "
                        "trained on; start a new run with `caviar train`")
    # the checkpoint is the truth: run.json may lag it by one epoch after a kill
    info["changes"] = list((model.info or {}).get("changes", info.get("changes", [])))
    for key in ("test_scores", "confusion_matrix", "failure"):
        info.pop(key, None)

    diffs = {k: [old[k], new[k]] for k in new if new[k] != old[k]}
    if diffs:
        network.set_hyperparameters(0, **{k: new[k] for k in diffs})
        info["changes"].append({"epoch": done, "changes": _clean(diffs)})
    info.setdefault("resumes", []).append({"epoch": done, "at": _now(), "device": device.type})
    info["status"] = "running"
    session = _Session(run_dir, info, prepared, network)
    session.checkpoint()  # the changes live in the checkpoint from now on
    return session.run(on_epoch, on_start)
