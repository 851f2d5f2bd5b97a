"""The live progress views: ``TrainDisplay`` for one network epoch by epoch (train, resume) and
``TuneDisplay`` for a tuning study. On a terminal they redraw in place; without one (a pipe,
a log file) they print plain lines instead."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from caviar.panda import EpochUpdate

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def console() -> Console:
    """A console on stdout, without Rich's automatic highlighting of numbers and paths."""
    return Console(highlight=False)


def fmt(value: Any) -> str:
    """A short form of a value: floats to 4 significant digits, lists in brackets."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
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

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def start(self, u: EpochUpdate) -> None:
        """Before the first epoch of this session: the run, the data, and the column roles
        (a new run) or the changes just made (a resumed one)."""
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
            changed = "  ".join(f"{k} {fmt(old)} → {fmt(new)}" for k, (old, new) in
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
            best = f" (best {fmt(value)} at epoch {epoch})"
        text = Text()
        text.append("  loss ", style="dim")
        text.append(f"train {fmt(r.get('train_loss'))}  val {fmt(r.get('val_loss'))}")
        text.append(f"   lr {fmt(r.get('learning_rate'))}\n", style="dim")
        text.append(f"  {metric.replace('_', ' ')} ", style="dim")
        text.append(fmt(r.get(metric)), style="bold cyan")
        text.append(f"{best}\n", style="dim")
        text.append("  val loss ", style="dim")
        text.append(sparkline([h.get("val_loss") for h in u.history]), style="green")
        return text

    def epoch(self, u: EpochUpdate) -> None:
        """After every epoch: redraw, or print one line without a terminal."""
        if self.progress is None or self.live is None:
            r = u.record or {}
            width = len(str(u.epochs))
            self.console.print(
                f"epoch {u.epoch:>{width}}/{u.epochs}  train_loss {fmt(r.get('train_loss'))}  "
                f"val_loss {fmt(r.get('val_loss'))}  {u.metric} {fmt(r.get(u.metric))}  "
                f"lr {fmt(r.get('learning_rate'))}", soft_wrap=True)
            return
        done = u.epoch - u.start_epoch
        per_epoch = (time.perf_counter() - self.started) / max(done, 1)
        left = per_epoch * (u.epochs - u.epoch)
        self.progress.update(self.task_id, completed=u.epoch, total=u.epochs,
                             eta=f"{left:.0f}s left" if done else "")
        self.stats = self._stats(u)
        self.live.update(self._renderable(), refresh=True)


class TuneDisplay:
    """Live view of a tuning study: trials done, running, pruned, failed, best so far, time.
    ``update`` takes the tuner's ``TuneProgress``; without a terminal it prints a line every
    10 seconds."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.last_line = -math.inf  # the first update prints, however young the clock

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
        text.append("trials ", style="dim")
        text.append(f"{p.done}" + (f"/{p.trials_budget}" if p.trials_budget else ""),
                    style="bold")
        text.append(f"  running {p.running}")
        text.append(f"  pruned {p.pruned}", style="yellow")
        text.append(f"  failed {p.failed}", style="red")
        text.append(f"  best {p.metric or 'score'} ", style="dim")
        text.append(fmt(p.best_value) if p.best_value is not None else "—", style="bold cyan")
        text.append(f"  elapsed {p.elapsed:.0f}s", style="dim")
        if p.time_budget:
            text.append(f"  left {max(0.0, p.time_budget - p.elapsed):.0f}s", style="dim")
        return text

    def _renderable(self, p: Any) -> Any:
        """A bar over the budget (time, else trials) above the counts."""
        if p.time_budget:
            total, done = float(p.time_budget), float(p.elapsed)
        elif p.trials_budget:
            total, done = float(p.trials_budget), float(p.done)
        else:
            return self._text(p)
        grid = Table.grid(padding=(0, 1))
        grid.add_row(Text("tuning", style="bold"),
                     ProgressBar(total=total, completed=min(done, total), width=30),
                     Text(f"{100 * min(done / total, 1.0):.0f}%", style="dim"))
        return Group(grid, self._text(p))

    def update(self, p: Any) -> None:
        """After every round of epochs."""
        if self.live is not None:
            self.live.update(self._renderable(p), refresh=True)
        elif time.monotonic() - self.last_line >= 10:  # a log line every 10 s without a tty
            self.last_line = time.monotonic()
            self.console.print(self._text(p), soft_wrap=True)
