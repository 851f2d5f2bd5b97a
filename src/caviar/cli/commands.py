"""The commands: ``caviar tune | train | resume | predict | report | export | explain``, each a
thin layer over the library (the errors, options, live displays and summaries are in the
modules beside this one). Heavy libraries (torch, optuna, plotly) are imported inside the
commands, so ``caviar --help`` stays quick.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from caviar.cli.display import TrainDisplay, TuneDisplay, console
from caviar.cli.errors import DEBUG_ENV, err_console, handle_errors, set_debug, warning_line
from caviar.cli.options import (
    SET_HELP,
    CategoricalOption,
    ClassWeightOption,
    DataArgument,
    Device,
    DeviceOption,
    DropOption,
    GroupOption,
    MaxOnehotOption,
    NumericOption,
    PrunerName,
    RefitName,
    SamplerName,
    SchedulerName,
    SplitOption,
    TargetOption,
    TaskOption,
    WeightOption,
    columns,
    free_dir,
    parse_duration,
    parse_sets,
)
from caviar.cli.summary import print_train_summary, print_tune_summary

# Help texts are Markdown (**bold**, `code`); see options.py for what that rules out.
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
    set_debug(debug)


# ----------------------------------------------------------------------------- train, resume


def _train_session(out: Console, call: Callable[..., Path]) -> None:
    """Run ``call(on_epoch=..., on_start=...)`` under a live display, then print the summary;
    Ctrl-C prints where the run stands and how to resume, and exits with 130."""
    from caviar.panda import RunInterrupted, read_run

    started = time.perf_counter()
    try:
        with TrainDisplay(out) as display:
            run_dir = Path(call(on_epoch=display.epoch, on_start=display.start))
    except RunInterrupted as stop:
        warning_line(f"interrupted: epoch {stop.epoch} of {stop.epochs} is saved in "
                     f"{stop.run_dir / 'model'}")
        err_console().print(f"continue with: caviar resume {stop.run_dir}", markup=False,
                            soft_wrap=True)
        raise typer.Exit(130) from None
    print_train_summary(out, run_dir, read_run(run_dir), time.perf_counter() - started)


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
    split: SplitOption = None,
    group: GroupOption = None,
    weight: WeightOption = None,
    class_weight: ClassWeightOption = None,
    max_onehot: MaxOnehotOption = None,
    numeric: NumericOption = None,
    device: DeviceOption = Device.cpu,
    schedule: Path = typer.Option(
        None, "--schedule", metavar="FILE", show_default=False,
        help="Replay a population-based training schedule: the model directory of a **caviar "
             "tune --scheduler pbt** run (its best network's schedule) or a JSON file "
             '`{"hyperparameters": ..., "schedule": ...}` (a PBT trial\'s '
             "hyperparameters and pbt_schedule). The network starts from the schedule's "
             "hyperparameters (--set overrides them) and changes them at each segment's "
             "epoch, as the PBT member did; run.json records each change."),
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
        plan = None
        if schedule is not None:
            from caviar.search.pbt import read_schedule

            start, plan = read_schedule(schedule)
            hp = {**start, **hp}
        from caviar import panda

        run_dir = out if out is not None else free_dir(Path("runs/panda"))
        _train_session(console(), lambda **cb: panda.train_run(
            data, target, hp, run_dir, epochs=epochs, task=task.value if task else None,
            categorical=columns(categorical), drop=columns(drop), seed=seed, split=split,
            group=group, weight=weight, class_weight=class_weight, max_onehot=max_onehot,
            numeric=numeric and numeric.value, device=device.value, schedule=plan, **cb))


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

        _train_session(console(), lambda **cb: panda.resume_run(run_dir, changes,
                                                                epochs=epochs, **cb))


# ----------------------------------------------------------------------------- predict, report


@app.command(no_args_is_help=True)
def predict(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False,
                                 help="A model directory (e.g. runs/tune/model), or a run "
                                      "directory holding one in model/."),
    data: str = typer.Argument(..., metavar="DATA", show_default=False,
                               help="The table to predict: CSV, TSV, Parquet or .xlsx; the target "
                                    "column may be absent."),
    output: str = typer.Option("predictions.csv", "--output", "-o", metavar="OUT.csv",
                               help="Where to write the predictions; '-' writes them to "
                                    "stdout."),
) -> None:
    """Predict every row of DATA with a saved model.

    Writes a CSV with one row per input row, in input order: a `prediction` column (the
    label, or the value in the target's units) and, for classifiers, one `proba_<label>`
    column per class.
    """
    with handle_errors():
        from caviar.files import replace_file
        from caviar.model import load_model
        from caviar.panda import find_model_dir

        frame = load_model(find_model_dir(model)).predict_frame(data)
        if output == "-":
            sys.stdout.write(frame.to_csv(index=False))
            sys.stdout.flush()
            return
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, frame.to_csv(index=False))  # a failed write keeps the old file
        console().print(f"wrote {len(frame)} predictions to {path}", markup=False,
                        soft_wrap=True)


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
        console().print(f"report: {path}", markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- tune


@app.command(no_args_is_help=True)
def tune(
    data: DataArgument,
    target: TargetOption,
    time_budget: str = typer.Option(None, "--time-budget", metavar="S", show_default=False,
                                    help="The time for the whole study: seconds, or 90s, 10m, "
                                         "1.5h (a continued study counts the time already "
                                         "spent). When it runs out, no trial starts and the "
                                         "running ones are stopped at the end of the epoch in "
                                         "progress (recorded as pruned; the networks they "
                                         "trained can still join the model)."),
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
    seed_ensemble: int = typer.Option(
        0, "--seed-ensemble", min=0, metavar="N",
        help="After the search, the best network's configuration trains again from N new "
             "initializations, which may join the average by the same rule (under "
             "--time-budget, as many as fit in a quarter of it, taken from the search). "
             "Not with --scheduler pbt, --workers or --dask."),
    task: TaskOption = None,
    categorical: CategoricalOption = None,
    drop: DropOption = None,
    workers: int = typer.Option(1, "--workers", "-w", min=1,
                                help="Worker processes on this machine tuning the study "
                                     "together, each with cores/N torch threads."),
    dask: str = typer.Option(None, "--dask", metavar="ADDRESS", show_default=False,
                             help="A Dask scheduler (tcp://host:8786): one worker loop on "
                                  "each Dask worker; use a --storage every machine reaches "
                                  "(postgresql://...)."),
    artifacts: Path = typer.Option(None, "--artifacts", metavar="DIR", show_default=False,
                                   help="Where the kept networks are stored (default "
                                        "DIR/artifacts under --out; with --dask, a path "
                                        "every machine shares)."),
    scheduler: SchedulerName = typer.Option(
        SchedulerName.asha, "--scheduler",
        help="asha: trials in refilled populations, stopped early by --pruner. pbt: "
             "population-based training: after a coarse search (asha) of --pbt-coarse of "
             "the budget, populations of the best structures start from their best trials; "
             "every --pbt-interval epochs the bottom quarter copies a top-quarter network "
             "and perturbs its hyperparameters."),
    pbt_interval: int = typer.Option(None, "--pbt-interval", min=1, metavar="EPOCHS",
                                     show_default=False,
                                     help="Epochs between PBT's exploit/explore steps "
                                          "(default 4)."),
    pbt_coarse: float = typer.Option(None, "--pbt-coarse", min=0.0, max=0.99, metavar="SHARE",
                                     show_default=False,
                                     help="Share of the budget PBT's coarse search spends "
                                          "first (default 0.5; 0: members start from random "
                                          "draws)."),
    metric: str = typer.Option(None, "--metric", "-m", metavar="NAME", show_default=False,
                               help="What the search optimizes and the kept networks are "
                                    "chosen by: auc, accuracy, balanced_accuracy, f1, "
                                    "f1_macro, log_loss, rmse, mae, r2, ... (or scikit-learn "
                                    "scorer names: roc_auc, neg_log_loss, ...). Default: "
                                    "log_loss for classifiers, rmse for regression."),
    valid: str = typer.Option(None, "--valid", metavar="FILE", show_default=False,
                              help="Validate on this table's rows instead of rows of DATA."),
    test: str = typer.Option(None, "--test", metavar="FILE", show_default=False,
                             help="Test on this table's rows instead of rows of DATA."),
    split: SplitOption = None,
    group: GroupOption = None,
    weight: WeightOption = None,
    class_weight: ClassWeightOption = None,
    max_onehot: MaxOnehotOption = None,
    numeric: NumericOption = None,
    device: DeviceOption = Device.cpu,
    refit: RefitName = typer.Option(
        RefitName.none, "--refit",
        help="What the model's networks train on once chosen: none, the searched networks "
             "(the training rows); train+valid, each configuration again on the training "
             "and validation rows for the epochs of its best validation score (the test "
             "score is still of unseen rows); bag, each configuration as 5 networks on "
             "those rows, each holding out one fold and stopped at its best epoch there; "
             "all, then once more on every row, after the "
             "test score is taken (the score is then of the train+valid fit)."),
) -> None:
    """Tune: train many networks at once (the caviar approach) and keep the best.

    Trials run in populations of --population networks trained together; finished slots are
    refilled with new trials. Shows live progress, then the leaderboard, and writes the best
    model, leaderboard.csv and report.html to --out. Without --time-budget or --trials, the
    tuner's own default budget applies.
    """
    started = time.monotonic()  # the budget counts the imports below too
    with handle_errors():
        budget = parse_duration(time_budget)
        from caviar.search.tune import tune as run_tune

        out_console = console()
        with TuneDisplay(out_console) as display:
            result = run_tune(
                data, target, time_budget=budget, trials=trials, population=population,
                sampler=sampler.value, pruner=pruner.value, space=space, storage=storage,
                study_name=study, out=out, seed=seed, categorical=columns(categorical),
                drop=columns(drop), task=task.value if task else None,
                ensemble=ensemble, on_progress=display.update, workers=workers, dask=dask,
                artifacts=artifacts, scheduler=scheduler.value, pbt_interval=pbt_interval,
                pbt_coarse=pbt_coarse,
                metric=metric, validation=valid, test=test, split=split, group=group,
                weight=weight, class_weight=class_weight, max_onehot=max_onehot,
                numeric=numeric and numeric.value, device=device.value, refit=refit.value,
                seed_ensemble=seed_ensemble, report=True, started=started)
        print_tune_summary(out_console, result, result.report)


@app.command(no_args_is_help=True)
def worker(
    storage: str = typer.Option(..., "--storage", metavar="URL", show_default=False,
                                help="The study's storage (postgresql://... for many "
                                     "machines)."),
    study: str = typer.Option(..., "--study", metavar="NAME", show_default=False,
                              help="The study to join (started by caviar tune)."),
    artifacts: str = typer.Option(None, "--artifacts", metavar="DIR", show_default=False,
                                  help="Where the kept networks go; default: the study's."),
    data: str = typer.Option(None, "--data", metavar="PATH", show_default=False,
                             help="The table, when it is not at the study's path here."),
    out: Path = typer.Option(Path("runs/worker"), "--out", "-o", metavar="DIR",
                             help="Where this worker keeps its journal of finished trials."),
) -> None:
    """Join a study as one more worker, from any machine.

    Reads what the study stored (data path, target, space, seed, population, budget) and
    trains populations for it until its budget is spent. The table must be the same one
    (its fingerprint is checked)."""
    with handle_errors():
        from caviar.workers.worker import join

        summary = join(storage, study, artifacts=artifacts, data=data, out=str(out))
        console().print(f"worker {summary['worker']}: {summary['trials']} trials in "
                        f"{summary['wall_s']:.1f} s (storage {summary['storage_s']:.1f} s)",
                        markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- export, explain

MODEL_HELP = "A model directory (e.g. runs/tune/model), or a run directory holding one in model/."


@app.command(no_args_is_help=True)
def export(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False, help=MODEL_HELP),
    file_format: str = typer.Option("onnx", "--format", "-f", metavar="FORMAT",
                                    help="The file format; one for now: onnx."),
    output: Path = typer.Option(Path("model.onnx"), "--output", "-o", metavar="FILE",
                                help="The file to write (its directory must exist); the JSON "
                                     "sidecar goes beside it as FILE.json."),
) -> None:
    """Export a model to serve it outside caviar, as an ONNX graph.

    The graph averages all the model's networks. Its input, `features`, is the PREPROCESSED
    float32 matrix, `load_model(MODEL).preprocessor.transform(table)`: the preprocessing
    (imputation, scaling, one-hot and target encoding) stays in caviar. Its outputs are
    `probabilities` and `label_index` for a classifier, `prediction` (float64, in the
    target's units) for a regressor. FILE.json lists the input features in order, the
    classes and the outputs. Needs the onnx extra: pip install 'caviar-ml[onnx]'.
    """
    with handle_errors():
        from caviar.export import export_model, sidecar_path
        from caviar.panda import find_model_dir

        # the model directory, loaded by export_model after the quick checks (format, output)
        path = export_model(find_model_dir(model), output, file_format)
        console().print(f"wrote {path} and {sidecar_path(path)}", markup=False,
                        soft_wrap=True)


@app.command(no_args_is_help=True)
def explain(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False, help=MODEL_HELP),
    data: str = typer.Argument(..., metavar="DATA", show_default=False,
                               help="Rows to score the model on, WITH the target column: "
                                    "held-out rows, not the training rows (CSV, TSV, .xlsx or "
                                    "Parquet)."),
    repeats: int = typer.Option(5, "--repeats", "-r", min=1,
                                help="Shuffles of each column; more give a steadier mean."),
    seed: int = typer.Option(0, "--seed", help="Seeds the shuffles."),
    output: Path = typer.Option(None, "--output", "-o", metavar="FILE.csv", show_default=False,
                                help="Also write the importances to this CSV file."),
    weight: str = typer.Option(None, "--weight", metavar="COL", show_default=False,
                               help="A column of DATA holding row weights: the scores are "
                                    "weighted means, as under `caviar tune --weight`."),
) -> None:
    """Show which columns the model relies on: permutation importance.

    Each column of DATA is shuffled in turn (before preprocessing, so a categorical column
    counts once) and the model scored again with its validation score: log-loss for a
    classifier, RMSE in the target's units for a regressor. A column's importance is how
    much worse the score gets, the mean (and standard deviation) over --repeats shuffles;
    near 0, the model does not use the column on these rows.
    """
    with handle_errors():
        if output is not None and not output.parent.is_dir():
            raise ValueError(f"the directory {output.parent} does not exist; create it first "
                             "or write the CSV elsewhere")
        from rich.table import Table
        from rich.text import Text

        from caviar.explain import permutation_importance
        from caviar.model import load_model
        from caviar.panda import find_model_dir

        table = permutation_importance(load_model(find_model_dir(model)), data,
                                       n_repeats=repeats, seed=seed, weight=weight)
        metric = {"log_loss": "log-loss", "rmse": "RMSE"}[table.attrs["metric"]]
        out = console()
        out.print(f"permutation importance on {table.attrs['rows']} rows: the increase of "
                  f"{metric} (baseline {table.attrs['baseline']:.4g}) when a column is "
                  f"shuffled, over {repeats} shuffles"
                  + (f", weighted by {weight}" if weight else ""), markup=False, soft_wrap=True)
        shown = Table(box=None, header_style="bold")
        shown.add_column("column")
        shown.add_column("importance", justify="right")
        shown.add_column("± std", justify="right", style="dim")
        for row in table.itertuples(index=False):
            shown.add_row(Text(str(row.column)), f"{row.importance_mean:.4g}",  # no markup
                          f"{row.importance_std:.2g}")
        out.print(shown)
        if output is not None:
            table.to_csv(output, index=False)
            out.print(f"wrote {output}", markup=False, soft_wrap=True)
