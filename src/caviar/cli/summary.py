"""What a finished run prints: the leaderboard of a tuning study, the held-out test scores,
where the files are, and the commands to go on with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from caviar.cli.display import fmt
from caviar.search.study import keys


def print_train_summary(console: Console, run_dir: Path, info: dict[str, Any],
                        seconds: float) -> None:
    """The end of a panda session: epochs, test scores, the confusion matrix of a classifier
    with at most 10 classes, and the next commands. ``info`` is the run's ``run.json``."""
    console.print(f"[bold green]done[/bold green]: {info.get('epochs_done')} epochs "
                  f"({seconds:.1f} s); run directory {run_dir}")
    scores = info.get("test_scores") or {}
    if scores:
        shown = "  ".join(f"{k} {fmt(v)}" for k, v in scores.items())
        weight = (info.get("usage") or {}).get("weight")
        weighted = f", weighted by {weight}" if weight else ""
        console.print(f"[bold]test scores[/bold] ({info['split'].get('test_rows')} held-out "
                      f"rows{weighted}): {shown}")
        constant = info.get("constant_test_scores") or {}
        if constant:
            console.print(constant_line(constant, scores, info.get("task") == "regression"))
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


def unused_line(ignored: dict[str, str], shown: int = 5) -> str | None:
    """The columns the model does not read and why (an identifier, a constant, a list...),
    which a user may not expect; not those they dropped themselves."""
    # imported here: caviar.data loads pandas and scikit-learn (about 2 s), which the tune
    # command's clock must count, and which the clock starts after this module is imported
    from caviar.data.roles import DROPPED

    found = {col: why for col, why in ignored.items() if why != DROPPED}
    if not found:
        return None
    named = "; ".join(f"{col!r} ({why})" for col, why in list(found.items())[:shown])
    more = f"; and {len(found) - shown} more (the report lists them)" if len(found) > shown else ""
    return f"[bold]not used[/bold] {len(found)} column(s): {named}{more}"


def leaderboard_table(board: Any, width: int, top: int = 10) -> tuple[Table, int]:
    """The top rows of the leaderboard (a DataFrame), with as many columns as fit in
    ``width``: hyperparameters equal in every row are left out. Returns the table and how
    many columns did not fit."""
    head = board.head(top)
    first = [c for c in ("trial", "state", "value", "epochs_run") if c in board.columns]
    varying = [c for c in board.columns if c not in first and c != "duration_s"
               and board[c].astype(str).nunique(dropna=False) > 1]
    cells = {c: [fmt(v) for v in head[c]] for c in [*first, *varying]}
    shown, used = [], 0
    for c in [*first, *varying]:
        need = max([len(str(c)), *map(len, cells[c])]) + 3  # padding and the separator
        if used + need > width and len(shown) >= len(first):
            break
        shown.append(c)
        used += need
    metric = board.attrs.get("metric")  # value: this metric, best first in its direction
    what = (f"; value = {str(metric).removeprefix('val_')}, "
            f"{'higher' if board.attrs.get('direction') == 'maximize' else 'lower'} is better"
            if metric else "")
    table = Table(title=f"leaderboard (top {len(head)} of {len(board)} trials{what})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in shown:
        table.add_column(str(c), justify="left" if c == "state" else "right", no_wrap=True)
    for i in range(len(head)):
        table.add_row(*(cells[c][i] for c in shown))
    return table, len(first) + len(varying) - len(shown)


def scaling_line(attrs: dict[str, Any]) -> str | None:
    """What ``--numeric auto`` chose (a study's user attributes), or None without it."""
    if not attrs.get(keys.SPEC, {}).get("choose_scaling"):
        return None
    choice = attrs.get(keys.SCALING)
    if choice is None:
        own = attrs[keys.SPEC]["numeric"][0]
        return (f"[bold]numeric scaling[/bold] {own}: the warm start's networks did not all "
                "finish, so no choice was made")
    best = ", ".join(f"{s} {fmt(v)}" for s, v in choice["best"].items())
    return (f"[bold]numeric scaling[/bold] {choice['scaling']}, chosen by the warm start's "
            f"best validation score ({best}), from trial {choice['from_trial']} on")


def constant_line(constant: dict[str, float], scores: dict[str, float],
                  regression: bool) -> str:
    """The test scores of a constant prediction, those the model's line shows, dimmed."""
    kind = "mean" if regression else "class shares"
    shown = "  ".join(f"{k} {fmt(constant[k])}" for k in scores if k in constant)
    return f"[dim]a constant prediction (the training rows' {kind}) scores {shown}[/dim]"


def print_tune_summary(console: Console, result: Any, report_path: Path) -> None:
    """The end of a study: the leaderboard, the model's test scores, and where everything
    is. ``result`` is the tuner's ``TuneResult``."""
    board = result.leaderboard
    hidden = 0
    if len(board):
        table, hidden = leaderboard_table(board, console.width)
        console.print(table)
    scores = result.test_scores or {}
    if scores:
        what = (f"of the model ({len(result.model.networks)} networks averaged)"
                if len(result.model.networks) > 1 else "of the model (the best network)")
        info = result.model.info
        rows = {"train+valid": ", refit on the training and validation rows",
                "bag": f", bagged over {info.get('folds')} folds of the training and "
                       f"validation rows ({len(info.get('bag_members', []))} of "
                       f"{info.get('bag_candidates')} configurations, chosen by out-of-fold "
                       f"score; the average's {fmt(info.get('bag_value'))})",
                "all": ", refit on the training and validation rows (the model you get was "
                       "then refit on every row, test rows included)"}.get(
            info.get("trained_on"), f", not bagged: {info['bag']}" if "bag" in info else "")
        best = result.study.user_attrs.get(keys.BEST) or {}
        if best.get(keys.TEST_WEIGHT):
            rows += f", weighted by {best[keys.TEST_WEIGHT]}"
        console.print(f"[bold]test scores[/bold] {what}{rows}: "
                      + "  ".join(f"{k} {fmt(v)}" for k, v in scores.items()))
        constant = best.get(keys.CONSTANT_TEST_SCORES)
        if constant:
            console.print(constant_line(constant, scores, result.model.task == "regression"))
    scaling = scaling_line(result.study.user_attrs)
    if scaling:
        console.print(scaling)
    unused = unused_line(result.model.preprocessor.roles_.ignored)
    if unused:
        console.print(unused)
    console.print(f"[dim]model[/dim]        {result.model_dir}")
    if len(board):
        more = f" [dim](all columns; {hidden} did not fit above)[/dim]" if hidden else ""
        console.print(f"[dim]leaderboard[/dim]  {Path(result.out) / 'leaderboard.csv'}{more}")
    console.print(f"[dim]study[/dim]        {result.storage} (study {result.study_name})")
    console.print(f"[dim]report[/dim]       {report_path}")
    console.print(f"[dim]predict[/dim]      caviar predict {result.model_dir} DATA")
    console.print(f"[dim]dashboard[/dim]    optuna-dashboard {result.storage}")
