"""The command line: ``caviar tune | train | resume | predict | report``.

Every error a user can cause prints one red line ``error: ...`` on stderr and exits with code
1 (Typer's usage errors exit with 2); ``caviar --debug ...`` or ``CAVIAR_DEBUG=1`` shows the
traceback instead. Warnings print as one yellow line each. Heavy libraries (torch, optuna,
plotly) are imported inside the commands, so ``caviar --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from caviar.panda import EpochUpdate

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
DEBUG_ENV = "CAVIAR_DEBUG"

app = typer.Typer(
    name="caviar",
    help="Train and tune populations of regularized neural networks on tables.\n\n"
         "**caviar tune** trains many networks at once and keeps the best (the caviar "
         "approach); **caviar train** and **caviar resume** babysit one "
         "network, epoch by epoch (the panda approach).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


_state = {"debug": _debug_env()}


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def error_line(message: object) -> None:
    """``error: message`` in red on stderr, on one line whatever the terminal width."""
    _err().print(f"error: {_one_line(message)}", style="bold red", markup=False,
                 soft_wrap=True)


def warning_line(message: object) -> None:
    _err().print(f"warning: {_one_line(message)}", style="yellow", markup=False,
                 soft_wrap=True)


def _message(exc: BaseException) -> str:
    """One line for an exception: caviar's own messages as they are, others with their type."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = _one_line(exc)
    if isinstance(exc, ValueError) and text:  # DataError, ModelFileError, SpaceError, ...
        return text
    hint = f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    return f"{type(exc).__name__}: {text}{hint}" if text else f"{type(exc).__name__}{hint}"


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show each distinct warning once, as one yellow line; hide other libraries'
    deprecation notices unless debugging."""
    seen: set[str] = set()
    quiet = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    here = str(Path(__file__).resolve().parent)

    def show(message, category, filename, lineno, file=None, line=None):
        if (issubclass(category, quiet) and not str(filename).startswith(here)
                and not _state["debug"]):
            return
        text = _one_line(message)
        if text not in seen:
            seen.add(text)
            warning_line(text)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn what a user can cause into one red line and exit code 1."""
    try:
        with _warnings_as_lines():
            yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # Typer's own exits and usage errors (code 2)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        warning_line("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        error_line(_message(exc))
        raise typer.Exit(1) from None


# ----------------------------------------------------------------------------- option parsing


def _columns(values: Sequence[str] | None) -> list[str]:
    """``--drop a,b --drop c`` → ``["a", "b", "c"]``."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def _value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true/false, null, lists), a list for
    comma-separated values, else the string itself."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if "," in text:
        return [_value(part) for part in text.strip("[]()").split(",") if part.strip()]
    return text


def parse_sets(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["learning_rate=1e-3", "hidden_layer_sizes=64,64"]`` → a hyperparameter dict."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. learning_rate=3e-4)",
                                     param_hint="'--set'")
        value = _value(text)
        if key == "hidden_layer_sizes" and isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        out[key] = value
    return out


def _check_hyperparameters(values: dict[str, Any]) -> None:
    from caviar.engine.hyperparams import resolve

    resolve(values)  # ValueError naming close names for unknown keys


def _parse_duration(text: str | None) -> float | None:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"`` → seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], None)
    number = raw[:-1] if scale else raw
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 600, 90s, 10m or 1.5h",
                                 param_hint="'--time-budget'") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise typer.BadParameter(f"{text!r} must be a positive duration",
                                 param_hint="'--time-budget'")
    return seconds


def _free_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no run yet."""
    if not (base / "run.json").exists():
        return base
    n = 2
    while (base.with_name(f"{base.name}-{n}") / "run.json").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def sparkline(values: Sequence[float | None], width: int = 40) -> str:
    """Unicode blocks, lowest value ▁, highest █; non-finite values are left out."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    vals = vals[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return SPARK_BLOCKS[3] * len(vals)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - lo) / (hi - lo) * top)] for v in vals)


# ----------------------------------------------------------------------------- the callback


def _version(value: bool) -> None:
    if value:
        from caviar import __version__

        typer.echo(f"caviar {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print caviar's version and exit."),
    debug: bool = typer.Option(False, "--debug",
                               help=f"Show the full traceback of errors (or set {DEBUG_ENV}=1)."),
) -> None:
    """Train and tune populations of regularized neural networks on tables."""
    _state["debug"] = debug or _debug_env()


class Task(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


class SamplerName(str, Enum):
    random = "random"
    grid = "grid"
    coarse_to_fine = "coarse-to-fine"
    tpe = "tpe"


class PrunerName(str, Enum):
    asha = "asha"
    median = "median"
    none = "none"


SET_HELP = ("A hyperparameter, KEY=VALUE; repeat for more. Values are JSON when they parse "
            "(3e-4, true, [64,64]), comma lists (hidden_layer_sizes=64,64), else text "
            "(optimizer=adamw). Names: learning_rate, optimizer, momentum, beta1, beta2, "
            "epsilon, lr_decay, decay_rate, decay_steps, l2, l1, weight_decay, dropout, "
            "batch_norm, bn_momentum, activation, hidden_layer_sizes, batch_size, epochs.")
CATEGORICAL_HELP = ("Columns to treat as categorical (e.g. integer codes), comma-separated; "
                    "may be repeated.")
DROP_HELP = "Columns to leave out (e.g. an ID or a target leak), comma-separated; may be repeated."
TASK_HELP = "The task; inferred from the target column when left out."

# the table options `train` and `tune` share
DataArgument = Annotated[str, typer.Argument(
    metavar="DATA", show_default=False,
    help="The table: a CSV (also .csv.gz), TSV or Parquet file.")]
TargetOption = Annotated[str, typer.Option("--target", "-t", show_default=False,
                                           help="The column to predict.")]
TaskOption = Annotated[Task, typer.Option("--task", show_default=False, help=TASK_HELP)]
CategoricalOption = Annotated[list[str], typer.Option("--categorical", metavar="COLS",
                                                      show_default=False, help=CATEGORICAL_HELP)]
DropOption = Annotated[list[str], typer.Option("--drop", metavar="COLS", show_default=False,
                                               help=DROP_HELP)]


# ----------------------------------------------------------------------------- train, resume


class TrainDisplay:
    """Live progress of a panda run: a bar, the last epoch's losses and metric, and a
    sparkline of the validation loss. Without a terminal, one line per epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.progress: Progress | None = None
        self.task_id = None
        self.stats = Text("waiting for the first epoch ...", style="dim")
        self.started = time.perf_counter()
        self.last: EpochUpdate | None = None

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def start(self, u: EpochUpdate) -> None:
        self.last = u
        c = self.console
        data = u.info.get("data", {})
        split = u.info.get("split", {})
        c.print(f"[bold]run[/bold] {u.run_dir}   [dim]data[/dim] {data.get('source')}   "
                f"[dim]target[/dim] {u.info.get('target')} ({u.task})")
        c.print(f"[dim]rows[/dim] {split.get('train_rows')} train / {split.get('val_rows')} "
                f"validation / {split.get('test_rows')} test   [dim]features[/dim] "
                f"{data.get('features')}   [dim]metric[/dim] {u.metric}")
        if u.start_epoch == 0:
            self._roles(data.get("roles") or {})
        else:
            last = (u.info.get("changes") or [{}])[-1]
            changed = "  ".join(f"{k} {_fmt(old)} → {_fmt(new)}" for k, (old, new) in
                                (last.get("changes") or {}).items())
            c.print(f"resumed after epoch {u.start_epoch}"
                    + (f": {changed}" if changed and last.get("epoch") == u.start_epoch
                       else ""), markup=False, soft_wrap=True)
        self.started = time.perf_counter()
        if not c.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]epoch"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("[dim]{task.fields[eta]}"), console=c,
            auto_refresh=False)
        self.task_id = self.progress.add_task("train", total=u.epochs, completed=u.epoch,
                                              eta="")
        self.live = Live(self._renderable(), console=c, refresh_per_second=4, transient=False)
        self.live.start()

    def _roles(self, roles: dict[str, Any], limit: int = 20) -> None:
        if not roles:
            return
        table = Table(show_header=True, header_style="dim", box=None, pad_edge=False)
        for name in ("column", "role", "reason"):
            table.add_column(name)
        for col, r in list(roles.items())[:limit]:
            role = r.get("role", "")
            style = {"target": "bold", "ignored": "dim"}.get(role, "")
            table.add_row(col, role, r.get("reason", ""), style=style)
        self.console.print(table)
        if len(roles) > limit:
            self.console.print(f"[dim]... and {len(roles) - limit} more columns[/dim]")

    def _renderable(self) -> Group:
        return Group(self.progress, self.stats) if self.progress else Group(self.stats)

    def _stats(self, u: EpochUpdate) -> Text:
        r = u.record or {}
        metric = u.metric
        values = [h.get(metric) for h in u.history]
        finite = [(v, h.get("epoch")) for v, h in zip(values, u.history)
                  if isinstance(v, (int, float))]
        best = ""
        if finite:
            pick = max if u.info.get("direction") == "maximize" else min
            value, epoch = pick(finite, key=lambda t: t[0])
            best = f" (best {_fmt(value)} at epoch {epoch})"
        text = Text()
        text.append("  loss ", style="dim")
        text.append(f"train {_fmt(r.get('train_loss'))}  val {_fmt(r.get('val_loss'))}")
        text.append(f"   lr {_fmt(r.get('learning_rate'))}\n", style="dim")
        text.append(f"  {metric.replace('_', ' ')} ", style="dim")
        text.append(_fmt(r.get(metric)), style="bold cyan")
        text.append(f"{best}\n", style="dim")
        text.append("  val loss ", style="dim")
        text.append(sparkline([h.get("val_loss") for h in u.history]), style="green")
        return text

    def epoch(self, u: EpochUpdate) -> None:
        self.last = u
        if self.progress is None or self.live is None:
            r = u.record or {}
            width = len(str(u.epochs))
            self.console.print(
                f"epoch {u.epoch:>{width}}/{u.epochs}  train_loss {_fmt(r.get('train_loss'))}  "
                f"val_loss {_fmt(r.get('val_loss'))}  {u.metric} {_fmt(r.get(u.metric))}  "
                f"lr {_fmt(r.get('learning_rate'))}", soft_wrap=True)
            return
        done = u.epoch - u.start_epoch
        per_epoch = (time.perf_counter() - self.started) / max(done, 1)
        left = per_epoch * (u.epochs - u.epoch)
        self.progress.update(self.task_id, completed=u.epoch, total=u.epochs,
                             eta=f"{left:.0f}s left" if done else "")
        self.stats = self._stats(u)
        self.live.update(self._renderable(), refresh=True)


def _print_finished(console: Console, run_dir: Path, seconds: float) -> None:
    from caviar.panda import read_run

    info = read_run(run_dir)
    console.print(f"[bold green]done[/bold green]: {info.get('epochs_done')} epochs "
                  f"({seconds:.1f} s); run directory {run_dir}")
    scores = info.get("test_scores") or {}
    if scores:
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in scores.items())
        console.print(f"[bold]test scores[/bold] ({info['split'].get('test_rows')} held-out "
                      f"rows): {shown}")
    cm = info.get("confusion_matrix") or {}
    if cm.get("labels") and len(cm["labels"]) <= 10:
        console.print("[bold]confusion matrix[/bold] [dim](rows: true class, columns: "
                      "predicted)[/dim]")
        table = Table(box=None)
        table.add_column("")
        for label in cm["labels"]:
            table.add_column(str(label), justify="right")
        for label, row in zip(cm["labels"], cm["matrix"]):
            table.add_row(str(label), *(str(v) for v in row))
        console.print(table)
    lr = (info.get("current_hyperparameters") or {}).get("learning_rate", 1e-3)
    console.print(f"[dim]model[/dim]    {run_dir / 'model'}")
    console.print(f"[dim]predict[/dim]  caviar predict {run_dir} DATA")
    console.print(f"[dim]resume[/dim]   caviar resume {run_dir} --epochs 10 "
                  f"--set learning_rate={lr / 3:.2g}")
    console.print(f"[dim]report[/dim]   caviar report {run_dir}")


def _train_session(console: Console, call: Any) -> Path:
    """Run ``call(on_epoch=..., on_start=...)`` under a live display; Ctrl-C prints where the
    run stands and how to resume, and exits with 130."""
    from caviar.panda import RunInterrupted

    started = time.perf_counter()
    try:
        with TrainDisplay(console) as display:
            run_dir = call(on_epoch=display.epoch, on_start=display.start)
    except RunInterrupted as stop:
        warning_line(f"interrupted: epoch {stop.epoch} of {stop.epochs} is saved in "
                     f"{stop.run_dir / 'model'}")
        _err().print(f"continue with: caviar resume {stop.run_dir}", markup=False,
                     soft_wrap=True)
        raise typer.Exit(130) from None
    _print_finished(console, Path(run_dir), time.perf_counter() - started)
    return Path(run_dir)


@app.command(no_args_is_help=True)
def train(
    data: DataArgument,
    target: TargetOption,
    set_: list[str] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", show_default=False,
                                   help=SET_HELP),
    epochs: int = typer.Option(None, "--epochs", "-e", min=1, show_default=False,
                               help="Epochs to train (the same as --set epochs=N; default 50)."),
    out: Path = typer.Option(None, "--out", "-o", show_default=False,
                             help="The run directory. Default: runs/panda, or runs/panda-2, "
                                  "-3, ... when that already holds a run. An explicit --out "
                                  "that holds a run is refused (resume it instead)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the split, the weights and the "
                                               "minibatch order."),
    task: TaskOption = None,
    categorical: CategoricalOption = None,
    drop: DropOption = None,
) -> None:
    """Train ONE network (the panda approach), showing every epoch.

    The table is split 60/20/20 into train/validation/test (from --seed); the preprocessing is
    fitted on the training rows. After every epoch the whole state is checkpointed in
    RUN/model, so Ctrl-C, or even a kill, loses at most the epoch in progress: continue with
    **caviar resume RUN**, changing hyperparameters if you like. At the end the
    held-out test scores are printed and stored in RUN/run.json.
    """
    with handle_errors():
        hp = parse_sets(set_)
        _check_hyperparameters(hp)
        from caviar import panda

        run_dir = out if out is not None else _free_dir(Path("runs/panda"))
        _train_session(_out(), lambda **cb: panda.train_run(
            data, target, hp, run_dir, epochs=epochs, task=task.value if task else None,
            categorical=_columns(categorical), drop=_columns(drop), seed=seed, **cb))


@app.command(no_args_is_help=True)
def resume(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", show_default=False,
                                   help="A run directory written by caviar train."),
    set_: list[str] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", show_default=False,
                                   help=SET_HELP + " Structural ones (hidden_layer_sizes, "
                                   "activation, batch_norm, batch_size) cannot change."),
    epochs: int = typer.Option(None, "--epochs", "-e", min=1, show_default=False,
                               help="How many MORE epochs to train. Default: an interrupted "
                                    "run goes on to its planned epochs; a finished run needs "
                                    "--epochs. (--set epochs=N sets the total instead.)"),
) -> None:
    """Continue a panda run from its last checkpoint, after changing hyperparameters.

    Every change is recorded in RUN/run.json with the epoch it was made at, and drawn on the
    report's learning curve. Resuming without changes gives exactly the result of a run that
    never stopped (the checkpoint holds the optimizer moments and the random generator).
    """
    with handle_errors():
        changes = parse_sets(set_)
        from caviar import panda

        _check_hyperparameters(changes)
        panda.read_run(run_dir)
        _train_session(_out(), lambda **cb: panda.resume_run(run_dir, changes, epochs=epochs,
                                                             **cb))


# ----------------------------------------------------------------------------- predict, report


def _model_path(path: Path) -> Path:
    from caviar.panda import find_model_dir

    return find_model_dir(path)


@app.command(no_args_is_help=True)
def predict(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False,
                                 help="A model directory (e.g. runs/tune/model), or a run "
                                      "directory holding one in model/."),
    data: str = typer.Argument(..., metavar="DATA", show_default=False,
                               help="The table to predict: CSV, TSV or Parquet; the target "
                                    "column may be absent."),
    output: str = typer.Option("predictions.csv", "--output", "-o", metavar="OUT.csv",
                               help="Where to write the predictions; '-' writes them to "
                                    "stdout."),
) -> None:
    """Predict every row of DATA with a saved model.

    Writes a CSV with one row per input row, in input order: a [bold]prediction[/bold] column
    (the label, or the value in the target's units) and, for classifiers, one
    [bold]proba_<label>[/bold] column per class.
    """
    with handle_errors():
        from caviar.model import load_model

        fitted = load_model(_model_path(model))
        frame = fitted.predict_frame(data)
        if output == "-":
            sys.stdout.write(frame.to_csv(index=False))
            sys.stdout.flush()
            return
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        _out().print(f"wrote {len(frame)} predictions to {path}", markup=False, soft_wrap=True)


@app.command(no_args_is_help=True)
def report(
    source: str = typer.Argument(..., metavar="SOURCE", show_default=False,
                                 help="A tune or panda run directory, an Optuna storage URL "
                                      "(sqlite:///study.db), or an SQLite study file."),
    output: Path = typer.Option(None, "--output", "-o", metavar="report.html",
                                show_default=False,
                                help="The HTML file to write. Default: SOURCE/report.html for "
                                     "a run directory, else report.html here."),
    study: str = typer.Option(None, "--study", show_default=False,
                              help="The study to show, when the storage holds several."),
) -> None:
    """Write a self-contained HTML report (learning curves, trials, best model, data roles)."""
    with handle_errors():
        from caviar.report import write_report

        src = Path(source)
        if output is None:
            output = src / "report.html" if "://" not in source and src.is_dir() else Path(
                "report.html")
        path = write_report(source, output, study_name=study)
        _out().print(f"report: {path}", markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- tune


class TuneDisplay:
    """Live view of a tuning study: trials done, running, pruned, failed, best so far, time."""

    def __init__(self, console: Console, time_budget: float | None, trials: int | None):
        self.console = console
        self.time_budget, self.trials = time_budget, trials
        self.live: Live | None = None
        self.last_line = 0.0

    def __enter__(self) -> TuneDisplay:
        if self.console.is_terminal:
            self.live = Live(Text("starting ...", style="dim"), console=self.console,
                             refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def _text(self, p: Any) -> Text:
        text = Text()
        budget = getattr(p, "trials_budget", None) or self.trials
        done = getattr(p, "done", 0)
        text.append("trials ", style="dim")
        text.append(f"{done}" + (f"/{budget}" if budget else ""), style="bold")
        text.append(f"  running {getattr(p, 'running', 0)}")
        text.append(f"  pruned {getattr(p, 'pruned', 0)}", style="yellow")
        text.append(f"  failed {getattr(p, 'failed', 0)}", style="red")
        best = getattr(p, "best_value", None)
        metric = getattr(p, "metric", None) or "score"
        text.append(f"  best {metric} ", style="dim")
        text.append(_fmt(best) if best is not None else "—", style="bold cyan")
        elapsed = float(getattr(p, "elapsed", 0.0) or 0.0)
        budget_s = getattr(p, "time_budget", None) or self.time_budget
        text.append(f"  elapsed {elapsed:.0f}s", style="dim")
        if budget_s:
            text.append(f"  left {max(0.0, budget_s - elapsed):.0f}s", style="dim")
        return text

    def _renderable(self, p: Any) -> Any:
        """A bar over the budget (time, else trials) above the counts."""
        from rich.progress_bar import ProgressBar

        budget_s = getattr(p, "time_budget", None) or self.time_budget
        budget_n = getattr(p, "trials_budget", None) or self.trials
        if budget_s:
            total, done = float(budget_s), float(getattr(p, "elapsed", 0.0) or 0.0)
        elif budget_n:
            total, done = float(budget_n), float(getattr(p, "done", 0) or 0)
        else:
            return self._text(p)
        grid = Table.grid(padding=(0, 1))
        grid.add_row(Text("tuning", style="bold"),
                     ProgressBar(total=total, completed=min(done, total), width=30),
                     Text(f"{100 * min(done / total, 1.0):.0f}%", style="dim"))
        return Group(grid, self._text(p))

    def update(self, p: Any) -> None:
        if self.live is not None:
            self.live.update(self._renderable(p), refresh=True)
        elif time.monotonic() - self.last_line >= 10:  # a log line every 10 s without a tty
            self.last_line = time.monotonic()
            self.console.print(self._text(p), soft_wrap=True)


def _leaderboard_table(board: Any, width: int, top: int = 10) -> tuple[Table, int]:
    """The top rows of the leaderboard, with as many columns as fit in ``width``:
    hyperparameters equal in every row are left out. Returns the table and how many columns
    did not fit."""
    from rich import box

    head = board.head(top)
    first = [c for c in ("trial", "state", "value", "epochs_run") if c in board.columns]
    varying = [c for c in board.columns if c not in first and c != "duration_s"
               and board[c].astype(str).nunique(dropna=False) > 1]
    cells = {c: [_fmt(v) for v in head[c]] for c in [*first, *varying]}
    shown, used = [], 0
    for c in [*first, *varying]:
        need = max([len(str(c)), *map(len, cells[c])]) + 3  # padding and the separator
        if used + need > width and len(shown) >= len(first):
            break
        shown.append(c)
        used += need
    table = Table(title=f"leaderboard (top {len(head)} of {len(board)} trials)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in shown:
        table.add_column(str(c), justify="left" if c == "state" else "right", no_wrap=True)
    for i in range(len(head)):
        table.add_row(*(cells[c][i] for c in shown))
    return table, len(first) + len(varying) - len(shown)


@app.command(no_args_is_help=True)
def tune(
    data: DataArgument,
    target: TargetOption,
    time_budget: str = typer.Option(None, "--time-budget", metavar="S", show_default=False,
                                    help="Stop starting trials after this long: seconds, or "
                                         "90s, 10m, 1.5h."),
    trials: int = typer.Option(None, "--trials", "-n", min=1, show_default=False,
                               help="Stop after this many trials (with --time-budget, "
                                    "whichever comes first)."),
    population: int = typer.Option(32, "--population", "-p", min=1,
                                    help="Networks trained at once, as one vectorized "
                                         "computation."),
    sampler: SamplerName = typer.Option(SamplerName.coarse_to_fine, "--sampler",
                                        help="How hyperparameters are drawn."),
    pruner: PrunerName = typer.Option(PrunerName.asha, "--pruner",
                                      help="How unpromising trials are stopped early."),
    space: Path = typer.Option(None, "--space", metavar="FILE", show_default=False,
                               help="A TOML search space; default: caviar's built-in one."),
    storage: str = typer.Option(None, "--storage", metavar="URL", show_default=False,
                                help="An Optuna storage URL; default: sqlite in --out "
                                     "(study.db). Reuse it with --study to continue a study."),
    study: str = typer.Option(None, "--study", metavar="NAME", show_default=False,
                              help="The study name (continues the study if it exists)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", metavar="DIR",
                             help="Where the best model (DIR/model), leaderboard.csv and "
                                  "report.html go."),
    seed: int = typer.Option(0, "--seed", help="Seeds the split, the sampler and the weights."),
    ensemble: int = typer.Option(5, "--ensemble", min=1, metavar="K",
                                 help="The model averages up to K of the best networks (a "
                                      "network joins unless it makes the average's "
                                      "validation loss worse by more than one standard "
                                      "error); 1 keeps the best network alone."),
    task: TaskOption = None,
    categorical: CategoricalOption = None,
    drop: DropOption = None,
) -> None:
    """Tune: train many networks at once (the caviar approach) and keep the best.

    Trials run in populations of --population networks trained together; finished slots are
    refilled with new trials. Shows live progress, then the leaderboard, and writes the best
    model, leaderboard.csv and report.html to --out. Without --time-budget or --trials, the
    tuner's own default budget applies.
    """
    with handle_errors():
        budget = _parse_duration(time_budget)
        try:
            from caviar.search.tune import tune as run_tune
        except ImportError as e:
            raise RuntimeError(f"the tuner is not available in this build ({e})") from None
        console = _out()
        with TuneDisplay(console, budget, trials) as display:
            result = run_tune(
                data, target, time_budget=budget, trials=trials, population=population,
                sampler=sampler.value, pruner=pruner.value, space=space, storage=storage,
                study_name=study, out=out, seed=seed, categorical=_columns(categorical),
                drop=_columns(drop), task=task.value if task else None,
                ensemble=ensemble, on_progress=display.update)
        _print_tune_result(console, result)


def _print_tune_result(console: Console, result: Any) -> None:
    from caviar.report import write_report

    out = Path(result.out)
    board = result.leaderboard
    if board is not None and len(board):
        table, hidden = _leaderboard_table(board, console.width)
        console.print(table)
        board_path = out / "leaderboard.csv"
        if not board_path.exists():
            board.to_csv(board_path, index=False)
    else:
        board_path, hidden = None, 0
    scores = result.test_scores or {}
    networks = len(result.model.networks)
    if scores:
        what = (f"of the model ({networks} networks averaged)" if networks > 1
                else "of the model (the best network)")
        console.print(f"[bold]test scores[/bold] {what}: "
                      + "  ".join(f"{k} {_fmt(v)}" for k, v in scores.items()))
    report_path = write_report(out, out / "report.html")
    console.print(f"[dim]model[/dim]        {result.model_dir}")
    if board_path is not None:
        more = f" [dim](all columns; {hidden} did not fit above)[/dim]" if hidden else ""
        console.print(f"[dim]leaderboard[/dim]  {board_path}{more}")
    console.print(f"[dim]study[/dim]        {result.storage} (study {result.study_name})")
    console.print(f"[dim]report[/dim]       {report_path}")
    console.print(f"[dim]predict[/dim]      caviar predict {result.model_dir} DATA")
    console.print(f"[dim]dashboard[/dim]    optuna-dashboard {result.storage}")


if __name__ == "__main__":
    app()
