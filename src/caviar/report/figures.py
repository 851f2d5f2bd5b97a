"""The report's plotly figures, one function a figure, each built from a :class:`RunData`.

A function returns a figure, or ``None`` when its data is missing (the page then shows a note).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from caviar.report.source import RunData, TrialData
from caviar.search.study import keys

# A small template keeps each figure's JSON short (plotly's own templates are large).
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12,
                 "color": "#222"},
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"],
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "xaxis": {"gridcolor": "#eceff3", "linecolor": "#9aa3ad", "zeroline": False,
                  "automargin": True},
        "yaxis": {"gridcolor": "#eceff3", "linecolor": "#9aa3ad", "zeroline": False,
                  "automargin": True},
        "hovermode": "closest",
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    }
)
PALETTE = TEMPLATE.layout.colorway
STATE_STYLE = {  # how each trial state is drawn in the scatter plots
    "COMPLETE": {"color": "#1f77b4", "symbol": "circle", "name": "complete"},
    "PRUNED": {"color": "#ff7f0e", "symbol": "diamond-open", "name": "pruned (last reported)"},
    "FAIL": {"color": "#d62728", "symbol": "x", "name": "failed (no score, drawn at the edge)"},
}


# ----------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """A short human form of a number or setting: 0.0003 → "3e-4", 0.25 → "0.25"."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) < 1e-2 or abs(value) >= 1e5:
            mantissa, exponent = f"{value:.2e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def score_label(run: RunData) -> str:
    """The name of the validation score, e.g. "val_accuracy"."""
    return run.metric or "validation score"


# ----------------------------------------------------------------------------- axes


@dataclass
class ParamAxis:
    """How one Optuna parameter is drawn: its label, scale, and value transform."""

    name: str  # the Optuna parameter name
    label: str
    log: bool = False
    category: bool = False
    flip: bool = False  # an ema_beta stored as β itself: draw 1 − β
    integer: bool = False

    def x(self, value: Any) -> Any:
        """The value to plot for a raw parameter value."""
        if self.category or isinstance(value, (str, bool)):
            return str(value)
        if value is None:
            return None
        return 1.0 - value if self.flip else value


def param_axis(name: str, run: RunData) -> ParamAxis:
    """A parameter's axis: its scale as the study's space has it (``Space.scale``), else as its
    Optuna distribution has it.

    An ``ema_beta`` hyperparameter ``beta2`` is sampled as ``"1-beta2"`` (the value 1 − β on a
    log scale), and is labelled "1 − beta2"; under β's own name it is drawn as 1 − β too.
    """
    dist = run.distributions.get(name)
    integer = isinstance(dist, optuna.distributions.IntDistribution)
    if run.space is not None and name in run.space:  # caviar's or Optuna's name
        param, scale = run.space[name], run.space.scale(name)
        if scale == "ema_beta":
            return ParamAxis(name, f"1 − {param.name} (log)", log=True,
                             flip=name != param.optuna_name)
        if scale == "log":
            return ParamAxis(name, f"{name} (log)", log=True)
        if scale == "categorical":
            return ParamAxis(name, name, category=True)
        return ParamAxis(name, name, integer=integer or param.kind == "int")
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return ParamAxis(name, name, category=True)
    if getattr(dist, "log", False):
        return ParamAxis(name, f"{name} (log)", log=True)
    values = [t.params[name] for t in run.trials if name in t.params]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return ParamAxis(name, name, category=not numeric, integer=integer)


def axis_style(axis: ParamAxis, values: Iterable[Any]) -> dict[str, Any]:
    """Plotly axis settings for ``axis``: log with readable ticks, category, or integer steps."""
    if axis.category:
        return {"type": "category"}
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and _pos(v)]
    if axis.log:
        return {"type": "log", **log_ticks(numbers)}
    if axis.integer and numbers and max(numbers) - min(numbers) <= 10:
        return {"dtick": 1}
    return {}


def _pos(v: Any) -> bool:
    return math.isfinite(v) and v > 0


def log_ticks(values: list[float]) -> dict[str, Any]:
    """Tick values and labels for a log axis over ``values``: decades over a wide range,
    1-2-5 steps over a narrow one, labelled like the tables ("1e-3", "0.01", "200")."""
    if not values:
        return {}
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    span = math.log10(max(values) / min(values))
    steps = (1,) if span >= 2.5 else (1, 2, 5) if span >= 0.6 else (1, 2, 3, 5, 7)
    ticks = [m * 10.0**e for e in range(lo, hi + 1) for m in steps]
    ticks = [t for t in ticks if min(values) / 1.5 <= t <= max(values) * 1.5]
    if len(ticks) < 2:
        return {}
    return {"tickmode": "array", "tickvals": ticks,
            "ticktext": [fmt(int(t) if t >= 1 and t == int(t) else t) for t in ticks]}


def param_names(run: RunData) -> list[str]:
    """The Optuna parameters the trials hold, in the space's order first."""
    seen: dict[str, None] = {}
    for t in run.trials:
        seen.update(dict.fromkeys(t.params))
    order = {n: i for i, n in enumerate(run.space or ())}
    order.update({run.space[n].optuna_name: i for n, i in list(order.items())})
    return sorted(seen, key=lambda n: (order.get(n, len(order)), list(seen).index(n)))


def _grid(n: int, titles: list[str], row_height: int = 270, cols: int = 3):
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.08, vertical_spacing=min(0.3, 0.4 / rows))
    fig.update_layout(template=TEMPLATE, height=row_height * rows + 90)
    return fig, cols


def _cell(i: int, cols: int) -> tuple[int, int]:
    return i // cols + 1, i % cols + 1


# ----------------------------------------------------------------------------- learning curves


def _panels(rows: Iterable[dict[str, Any]], metric: str | None) -> list[str]:
    keys = set().union(*rows) if rows else set()
    base = (metric or "").removeprefix("val_")
    wanted = ["loss", base] if base else ["loss", "accuracy", "rmse"]
    panels = []
    for b in wanted:
        if b and b not in panels and ({f"train_{b}", f"val_{b}"} & keys):
            panels.append(b)
    return panels[:2]


def curves_figure(
    series: list[tuple[str, list[dict[str, Any]]]], metric: str | None
) -> go.Figure | None:
    """Train (dashed) and validation (solid) curves per epoch, one color per run.

    ``series`` is ``[(name, per-epoch dicts), ...]``; panels are the loss and the metric.
    """
    series = [(name, rows) for name, rows in series if rows]
    panels = _panels([r for _, rows in series for r in rows], metric)
    if not panels:
        return None
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels,
                        horizontal_spacing=0.1)
    for i, (name, rows) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        epochs = [r.get("epoch", k + 1) for k, r in enumerate(rows)]
        for col, base in enumerate(panels, start=1):
            for split, dash in (("val", "solid"), ("train", "dash")):
                key = f"{split}_{base}"
                if not any(key in r for r in rows):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=epochs, y=[r.get(key) for r in rows], mode="lines",
                        name=name, legendgroup=name,
                        showlegend=col == 1 and split == "val",
                        line={"color": color, "dash": dash, "width": 2 if split == "val" else 1.5},
                        hovertemplate=f"{name}<br>epoch %{{x}}<br>{key} %{{y:.4g}}<extra></extra>",
                    ),
                    row=1, col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template=TEMPLATE, height=380,
                      legend={"title": {"text": "solid: validation<br>dashed: train"}})
    return fig


def top_curves_figure(run: RunData, top: int = 5) -> go.Figure | None:
    """Learning curves of the ``top`` best completed trials."""
    series = []
    for t in run.ranked()[:top]:
        rows = t.curve or [{"epoch": e, f"val_{(run.metric or 'score').removeprefix('val_')}": v}
                           for e, v in sorted(t.intermediate.items())]
        series.append((f"#{t.number} ({fmt(t.score)})", rows))
    return curves_figure(series, run.metric)


def change_label(changes: dict[str, Any]) -> str:
    """ "learning_rate 1e-3 → 3e-4" for ``{"learning_rate": [0.001, 0.0003]}``."""
    parts = []
    for name, pair in changes.items():
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            parts.append(f"{name} {fmt(pair[0])} → {fmt(pair[1])}")
        else:
            parts.append(f"{name} → {fmt(pair)}")
    return "; ".join(parts)


def panda_figure(run: RunData) -> go.Figure | None:
    """The panda run's curves with each hand-made change as a labelled vertical line."""
    fig = curves_figure([("run", run.history)], run.metric)
    if fig is None:
        return None
    n_cols = len(_panels(run.history, run.metric))
    for change in run.changes:
        epoch = change.get("epoch")
        if not isinstance(epoch, (int, float)):
            continue
        label = change_label(change.get("changes") or {})
        label_it = {"annotation_text": label, "annotation_position": "top right",
                    "annotation_textangle": -90,
                    "annotation_font": {"size": 11, "color": "#374151"}}
        for col in range(1, n_cols + 1):
            fig.add_vline(x=epoch, line={"color": "#6b7280", "dash": "dot", "width": 1.5},
                          row=1, col=col, **(label_it if col == 1 else {}))
    fig.update_layout(showlegend=False, height=420, margin={"t": 60})
    return fig


# ----------------------------------------------------------------------------- search


@dataclass
class ScoreAxis:
    """How a score axis is drawn. A few diverging trials (a loss of 20,000 beside scores of 30
    to 50) would squash every other trial into a flat line, so the axis stops at ``limit``
    when some scores lie far past the others, and those are drawn on it (as triangles pointing
    off the axis); failed trials, which have no score, sit just past the worst score drawn.
    Losses that still span two decades or more (log-loss: 0.01 for a good network, 1 for a
    guess, 30 for one that went astray) are drawn on a log axis."""

    limit: float | None  # None: every score is shown
    worse: int  # how many trials scored worse than the limit
    edge: float  # where failed trials are drawn
    sign: float  # 1.0 when lower scores are better, −1.0 when higher are
    log: bool = False
    best: float | None = None  # the best score (None: no trial has one)

    def y(self, score: float | None) -> float:
        if score is None:
            return self.edge
        beyond = self.limit is not None and self.sign * (score - self.limit) > 0
        return self.limit if beyond else score

    def clipped(self, score: float | None) -> bool:
        return score is not None and self.y(score) != score

    def range(self) -> list[float] | None:
        """The y range every panel shares, from the best score to where failed trials are
        drawn (in plotly's units: log10 on a log axis)."""
        if self.best is None:
            return None
        lo, hi = sorted((self.best, self.edge))
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        pad = 0.05 * ((hi - lo) or 1.0)
        return [lo - pad, hi + pad]

    def title(self, label: str) -> str:
        """The axis title for the score called ``label``."""
        return f"{label} (log)" if self.log else label

    def note(self) -> str | None:
        """What the figure says about the limit, if there is one."""
        if self.limit is None:
            return None
        arrow = "▲" if self.sign > 0 else "▼"
        return (f"score axis cut at {fmt(self.limit)}: {self.worse} worse trial"
                f"{'s' if self.worse != 1 else ''} drawn on the cut as {arrow}")


def score_axis(run: RunData) -> ScoreAxis:
    """The score axis of ``run``'s scatter plots, over the scores of at least ten trials
    (completed trials', and pruned ones' last reports). It is cut at a box plot's outlier
    fence, the upper quartile plus 1.5 × the interquartile range, when the scores past it
    would otherwise take more than three quarters of the axis. For losses, which are positive
    and compare by ratios, the fence and that share are taken on their logarithms."""
    sign = -1.0 if run.direction == "maximize" else 1.0
    scores = sorted(sign * t.score for t in run.trials if t.score is not None)
    losses = sign > 0 and bool(scores) and scores[0] > 0
    limit = None
    if len(scores) >= 10:
        r = [math.log10(s) for s in scores] if losses else scores  # where distances are read
        q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive")
        fence = q3 + 1.5 * (q3 - q1)
        if r[-1] - r[0] > 4 * (fence - r[0]) > 0:
            limit = 10.0**fence if losses else fence
    shown = [s for s in scores if limit is None or s <= limit]
    edge = 0.0
    if shown:  # just past the worst score drawn
        lo, hi = shown[0], shown[-1] if limit is None else limit
        edge = hi + 0.08 * ((hi - lo) or abs(hi) or 1.0)
    log = losses and shown[-1] >= 100 * shown[0]
    worse = len(scores) - len(shown)
    return ScoreAxis(None if limit is None else sign * limit, worse, sign * edge, sign, log,
                     sign * shown[0] if shown else None)


def _trial_points(run: RunData, trials: list[TrialData], axis: ParamAxis | None,
                  scores: ScoreAxis, symbol: str):
    """x, y, hover texts and marker symbols of ``trials`` (x = the parameter, or the trial
    number); a trial past the score axis's limit is drawn on it as a triangle. The symbols
    are one where all are the same (plotly checks a list name by name: a second for a long
    run's points)."""
    beyond = "triangle-up" if scores.sign > 0 else "triangle-down"
    xs, ys, texts, symbols = [], [], [], []
    for t in trials:
        if axis is not None and axis.name not in t.params:
            continue
        x = axis.x(t.params[axis.name]) if axis else t.number
        text = f"trial #{t.number}"
        if axis:
            text += f"<br>{axis.name} = {fmt(t.params[axis.name])}"
        text += f"<br>{score_label(run)} = {fmt(t.score)}" if t.score is not None else ""
        if scores.clipped(t.score):
            text += " (past the axis: drawn on its end)"
        if t.state == "FAIL":
            text += f"<br>failed: {t.failure or 'no reason stored'}"
        elif t.state == "PRUNED":
            text += "<br>pruned"
        xs.append(x)
        ys.append(scores.y(t.score))
        texts.append(text)
        symbols.append(beyond if scores.clipped(t.score) else symbol)
    return xs, ys, texts, symbols if set(symbols) - {symbol} else symbol


def params_figure(run: RunData) -> go.Figure | None:
    """One small scatter per hyperparameter: value against the validation score.

    Log-scale parameters get a log x-axis; pruned trials show their last reported score and
    failed ones sit just past the worst score.
    """
    names = param_names(run)
    if not names:
        return None
    axes = [param_axis(n, run) for n in names]
    scores = score_axis(run)
    fig, cols = _grid(len(axes), [a.label for a in axes])
    for i, axis in enumerate(axes):
        row, col = _cell(i, cols)
        for state, style in STATE_STYLE.items():
            xs, ys, texts, symbols = _trial_points(
                run, [t for t in run.trials if t.state == state], axis, scores, style["symbol"])
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode="markers", name=style["name"], legendgroup=state,
                    showlegend=i == 0, hovertext=texts, hoverinfo="text",
                    marker={"color": style["color"], "symbol": symbols, "size": 8,
                            "opacity": 0.85, "line": {"width": 1.5}},
                ),
                row=row, col=col,
            )
        xs = [x for trace in fig.select_traces(row=row, col=col) for x in trace.x]
        fig.update_xaxes(axis_style(axis, xs), row=row, col=col)
        # one score axis for every panel, so that they compare at a glance
        fig.update_yaxes(type="log" if scores.log else None, range=scores.range(),
                         row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=scores.title(score_label(run)), row=row, col=col)
    fig.update_layout(legend={"orientation": "h", "yref": "container", "y": 1.0,
                              "yanchor": "top", "x": 0, "title": {"text": scores.note()}},
                      margin={"t": 80})
    return fig


def is_coarse_to_fine(run: RunData) -> bool:
    """Whether the run is a coarse-to-fine search."""
    return (run.sampler == "coarse-to-fine" or bool(run.c2f_boxes)
            or any(t.round is not None for t in run.trials))


def round_color(r: int) -> str:
    """The color of coarse-to-fine round ``r`` (rounds count from 1, or 0)."""
    return PALETTE[r % len(PALETTE)]


# round_color as a colorscale: the number r % len(PALETTE) + 0.5 takes round r's color, so
# that thousands of points pass one array of numbers (plotly checks a list of color names one
# by one: a second for a long run's points)
ROUND_COLORSCALE = [[(k + edge) / len(PALETTE), color] for k, color in enumerate(PALETTE)
                    for edge in (0, 1)]


def rounds_score_figure(run: RunData) -> go.Figure | None:
    """Score against trial number, colored by coarse-to-fine round."""
    rounds = sorted({t.round for t in run.trials if t.round is not None})
    if not rounds:
        return None
    fig = go.Figure()
    scores = score_axis(run)
    for r in rounds:
        for state, symbol in (("COMPLETE", "circle"), ("PRUNED", "diamond-open"),
                              ("FAIL", "x")):
            trials = [t for t in run.trials if t.round == r and t.state == state]
            if not trials:
                continue
            xs, ys, texts, symbols = _trial_points(run, trials, None, scores, symbol)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", hovertext=texts, hoverinfo="text",
                name=f"round {r}" + ("" if state == "COMPLETE" else f" ({state.lower()})"),
                legendgroup=f"round {r}",
                marker={"color": round_color(r), "symbol": symbols, "size": 9,
                        "line": {"width": 1.5}},
            ))
    fig.update_layout(template=TEMPLATE, height=340, xaxis_title="trial number",
                      yaxis_title=scores.title(score_label(run)),
                      yaxis_type="log" if scores.log else None, yaxis_range=scores.range(),
                      legend_title_text=scores.note(),
                      title={"text": "trials by round (open diamonds: pruned, x: failed)",
                             "font": {"size": 13}})
    return fig


def box_rows(run: RunData) -> list[tuple[int, str, float, float, ParamAxis]]:
    """(round, parameter, low, high, axis) of each stored box, in the parameter's own units."""
    rows = []
    for entry in run.c2f_boxes:
        box = entry.get("box")
        if not isinstance(box, dict):
            continue
        for name, bounds in box.items():
            if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2):
                continue
            axis = param_axis(name, run)
            try:
                lo, hi = (10.0 ** float(b) if axis.log else float(b) for b in bounds)
            except (TypeError, ValueError, OverflowError):
                continue
            rows.append((entry.get("round"), name, lo, hi, axis))
    return rows


def _optuna_name(name: str, run: RunData) -> str:
    """The Optuna name a box key stands for ("beta2" → "1-beta2" when that is sampled)."""
    known = set(param_names(run))
    return name if name in known or f"1-{name}" not in known else f"1-{name}"


def boxes_figure(run: RunData) -> go.Figure | None:
    """Each round's [low, high] per parameter (bars), with the trials it sampled (points).

    One trace of bars and one of points per parameter, the points colored by round: a trace
    per round and parameter cost plotly about a millisecond each, 2.2 s of a 3,292-trial
    run's report (122 rounds, 15 parameters); the rounds are the x-axis already."""
    rows = box_rows(run)
    if not rows:
        return None
    names = list(dict.fromkeys(name for _, name, *_ in rows))
    axes = {n: next(a for _, m, _, _, a in rows if m == n) for n in names}
    fig, cols = _grid(len(names), [axes[n].label for n in names])
    for i, name in enumerate(names):
        row, col = _cell(i, cols)
        axis = axes[name]
        bars = [(r, lo, hi) for r, n, lo, hi, _ in rows if n == name]
        fig.add_trace(go.Scatter(  # each bar a segment, None between them
            x=[x for r, _, _ in bars for x in (r, r, None)],
            y=[y for _, lo, hi in bars for y in (lo, hi, None)],
            mode="lines", showlegend=False, hoverinfo="text",
            hovertext=[h for r, lo, hi in bars
                       for h in [f"round {r}: [{fmt(lo)}, {fmt(hi)}]"] * 2 + [None]],
            line={"color": PALETTE[0], "width": 16}, opacity=0.35,
        ), row=row, col=col)
        oname = _optuna_name(name, run)
        sampled = ParamAxis(oname, axis.label, axis.log, flip=param_axis(oname, run).flip)
        trials = [t for t in run.trials if t.round is not None and oname in t.params]
        points = [sampled.x(t.params[oname]) for t in trials]
        fig.add_trace(go.Scatter(
            x=[t.round + 0.12 * math.sin(7.0 * t.number) for t in trials], y=points,
            mode="markers", showlegend=False, hoverinfo="text",
            hovertext=[f"trial #{t.number}, round {t.round}: {fmt(t.params[oname])} "
                       f"({t.state.lower()})" for t in trials],
            marker={"color": [t.round % len(PALETTE) + 0.5 for t in trials],
                    "colorscale": ROUND_COLORSCALE, "cmin": 0, "cmax": len(PALETTE), "size": 6,
                    "line": {"width": 0.5, "color": "white"}},
        ), row=row, col=col)
        # a tick per round while they are few (a long run's hundred would overlap)
        few = len({r for r, _, _ in bars} | {t.round for t in trials}) <= 20
        fig.update_xaxes(dtick=1 if few else None, title_text="round", row=row, col=col)
        ys = [y for _, lo, hi in bars for y in (lo, hi)] + points
        fig.update_yaxes(axis_style(axis, ys), row=row, col=col)
    fig.update_layout(title={"text": "the search box per round (bars) and its trials (points, "
                                     "colored by round)", "font": {"size": 13}},
                      margin={"t": 80})
    return fig


def parallel_figure(run: RunData) -> tuple[go.Figure | None, str | None]:
    """Optuna's parallel-coordinates plot of the completed trials, or a note why not."""
    if run.study is None:
        return None, "No Optuna study."
    if len(run.ranked()) < 2:
        return None, "Needs at least two completed trials."
    try:
        fig = optuna.visualization.plot_parallel_coordinate(
            run.study, target_name=score_label(run))
    except Exception as exc:  # plotting must never sink the report
        return None, f"Could not draw parallel coordinates: {exc}"
    fig.update_layout(template=TEMPLATE, height=440, title=None, margin={"l": 80, "r": 80})
    return fig, None


def conditional_parameters(run: RunData) -> list[str]:
    """Parameters absent from some completed trials (e.g. momentum's 1 − β under Adam)."""
    done = [t for t in run.trials if t.state == "COMPLETE" and t.score is not None]
    return [n for n in param_names(run) if any(n not in t.params for t in done)]


def importance_figure(run: RunData) -> tuple[go.Figure | None, str | None]:
    """fANOVA hyperparameter importances as horizontal bars, or a note why there are none.
    Conditional parameters (absent from some completed trials) are left out; the page names
    them."""
    if run.study is None:
        return None, "No Optuna study."
    done = [t for t in run.trials if t.state == "COMPLETE" and t.score is not None]
    if len(done) < 2:
        return None, "Importances need at least two completed trials."
    left_out = set(conditional_parameters(run))
    everywhere = [n for n in param_names(run) if n not in left_out]
    varying = [n for n in everywhere if len({repr(t.params[n]) for t in done}) > 1]
    if not varying:
        return None, "No hyperparameter varies across the completed trials."
    try:
        imp = optuna.importance.get_param_importances(
            run.study, params=varying,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except Exception as exc:  # fANOVA's own limits: say so on the page, keep the report
        return None, f"Could not compute importances: {exc}"
    if not imp:
        return None, "No importances were computed."
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(
        x=[float(v) for _, v in items],
        y=[param_axis(k, run).label.removesuffix(" (log)") for k, _ in items],
        orientation="h", marker={"color": "#1f77b4"},
        text=[f"{float(v):.2f}" for _, v in items], textposition="outside",
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    fig.update_layout(template=TEMPLATE, height=max(220, 40 * len(items) + 100),
                      xaxis_title="importance (fANOVA, sums to 1)",
                      xaxis_range=[0, max(float(v) for _, v in items) * 1.15])
    return fig, None


def confusion_figure(confusion: dict[str, Any]) -> go.Figure | None:
    """A heatmap of ``{"labels": [...], "matrix": [[...]]}``: rows true, columns predicted."""
    matrix = confusion.get("matrix")
    if not (isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix)):
        return None
    labels = confusion.get("labels") or []
    if len(labels) != len(matrix):
        labels = list(range(len(matrix)))
    labels = [str(x) for x in labels]
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels[: len(matrix[0])], y=labels, colorscale="Blues",
        texttemplate="%{z}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        showscale=False,
    ))
    size = min(520, 160 + 60 * len(labels))
    fig.update_layout(template=TEMPLATE, height=size, width=size + 60,
                      xaxis={"title": "predicted", "type": "category", "side": "bottom"},
                      yaxis={"title": "true", "type": "category", "autorange": "reversed"})
    return fig


# ----------------------------------------------------------------------------- PBT


def is_pbt(run: RunData) -> bool:
    """Whether the run is population-based training (it stored a lineage)."""
    return bool(run.pbt.get("populations"))


def _pbt_winner(run: RunData) -> TrialData | None:
    """The best network PBT trained: the run's best when a PBT member is, else the best
    ranked member (the coarse search before PBT may hold the run's best)."""
    best = run.best_trial()
    if best is not None and best.pbt_schedule:
        return best
    return next((t for t in run.ranked() if t.pbt_schedule), None)


def _pbt_end(run: RunData, trial: TrialData) -> int:
    epochs = [row.get("epoch") for row in trial.curve if isinstance(row.get("epoch"), int)]
    return max(epochs, default=int(run.pbt.get("epochs") or 0))


def pbt_lineage_figure(run: RunData) -> go.Figure | None:
    """Who copied whom, when: one row per member of the winner's round, an arrow per copy
    (from the member copied to the one that copied it), the winner's path drawn thick."""
    winner = _pbt_winner(run)
    pops = run.pbt.get("populations") or []
    if winner is None or not pops:
        return None
    round_id = (winner.pbt_member or "").split(".")[0]
    pops = [p for p in pops if str(p.get("id", "")).split(".")[0] == round_id] or pops[-1:]
    rows = [m for p in pops for m in p.get("members", [])]
    row = {m: i for i, m in enumerate(rows)}
    end = _pbt_end(run, winner)
    fig = go.Figure()
    xs: list[Any] = []
    ys: list[Any] = []
    for m in rows:
        xs += [0, end, None]
        ys += [row[m], row[m], None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#d5dae0", "width": 1},
                             hoverinfo="skip", showlegend=False))
    xs, ys, texts = [], [], []
    for p in pops:
        for e in p.get("events", []):
            if e.get("member") in row and e.get("copied_from") in row:
                xs += [e["epoch"], e["epoch"], None]
                ys += [row[e["copied_from"]], row[e["member"]], None]
                texts += [None, f"epoch {e['epoch']}: {e['member']} copied {e['copied_from']} "
                          f"(score {fmt(e.get('score'))} → {fmt(e.get('source_score'))})", None]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="lines+markers", name="copy (arrow at the copier)",
        hovertext=texts, hoverinfo="text", line={"color": "#9aa3ad", "width": 1},
        marker={"symbol": "arrow", "angleref": "previous", "size": 9, "color": "#7f7f7f"}))
    path_x: list[Any] = []
    path_y: list[Any] = []
    segments = sorted(winner.pbt_schedule, key=lambda s: s.get("epoch", 0))
    for k, s in enumerate(segments):
        stop = segments[k + 1]["epoch"] if k + 1 < len(segments) else end
        if s.get("member") in row:
            path_x += [s["epoch"], stop]
            path_y += [row[s["member"]], row[s["member"]]]
    fig.add_trace(go.Scatter(x=path_x, y=path_y, mode="lines", name=f"trial {winner.number} "
                             "(the best PBT network)", line={"color": PALETTE[3], "width": 3}))
    fig.update_layout(template=TEMPLATE, height=max(260, 18 * len(rows) + 120),
                      xaxis_title="epoch", yaxis={"tickmode": "array",
                                                  "tickvals": list(range(len(rows))),
                                                  "ticktext": rows, "title": "member"},
                      title={"text": "lineage: copies from the top quarter to the bottom one",
                             "font": {"size": 13}})
    return fig


def pbt_schedule_figure(run: RunData) -> go.Figure | None:
    """The hyperparameters the best PBT network trained with, epoch by epoch: one panel each, on
    its sampling scale (log axes for log names, 1 − β for exponential-average β's)."""
    winner = _pbt_winner(run)
    if winner is None:
        return None
    segments = sorted(winner.pbt_schedule, key=lambda s: s.get("epoch", 0))
    names = list(dict.fromkeys(n for s in segments for n in s.get("hyperparameters") or {}))
    if not names:
        return None
    end = _pbt_end(run, winner)
    axes = [param_axis(n, run) for n in names]
    fig, cols = _grid(len(names), [a.label for a in axes], row_height=230)
    for i, (name, axis) in enumerate(zip(names, axes)):
        xs, ys = [], []
        for s in segments:
            value = (s.get("hyperparameters") or {}).get(name)
            if value is not None:
                xs.append(s["epoch"])
                ys.append(axis.x(value))
        if not xs:
            continue
        xs.append(end)
        ys.append(ys[-1])
        r, c = _cell(i, cols)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv",
                                 showlegend=False, line={"color": PALETTE[0]},
                                 hovertemplate=f"{name}: %{{y}} from epoch %{{x}}"
                                 "<extra></extra>"), row=r, col=c)
        fig.update_yaxes(**axis_style(axis, ys), row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
    fig.update_layout(title={"text": f"trial {winner.number}'s schedule (a marker per copy "
                                     "and perturbation)", "font": {"size": 13}})
    return fig


def feature_importance_figure(run: RunData) -> tuple[go.Figure | None, str | None]:
    """The permutation importance of the model's columns on the test rows (stored with the
    run's best model) as horizontal bars with their spread, or a note why there is none."""
    stored = run.best.get(keys.FEATURE_IMPORTANCE)
    columns = (stored or {}).get("columns") if isinstance(stored, dict) else None
    if not columns:
        skipped = stored.get("skipped") if isinstance(stored, dict) else None
        if skipped:
            return None, (f"No feature importance: {skipped}. caviar explain MODEL DATA "
                          "computes it.")
        return None, "No feature importance stored (it needs held-out test rows)."
    items = sorted(columns, key=lambda c: c["importance_mean"])
    metric = stored.get("metric", "score")
    fig = go.Figure(go.Bar(
        x=[c["importance_mean"] for c in items], y=[str(c["column"]) for c in items],
        error_x={"type": "data", "array": [c["importance_std"] for c in items]},
        orientation="h", marker={"color": "#2ca02c"},
        hovertemplate="%{y}: %{x:.4g}<extra></extra>",
    ))
    fig.update_layout(template=TEMPLATE, height=max(220, 30 * len(items) + 100),
                      xaxis_title=f"increase of the test {metric} when the column is shuffled")
    return fig, None
