"""Assemble the report: one self-contained HTML page (plotly.js inlined once, no network).

>>> from caviar.report import write_report
>>> write_report("runs/adult", "report.html")          # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
import plotly.io as pio
import plotly.offline

from caviar.files import replace_file
from caviar.report import figures as F
from caviar.report.source import RunData, load_run
from caviar.search.study import keys

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #1f77b4; --bg: #f8fafc; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #0f172a; color: #f8fafc; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #cbd5e1; font-size: 13px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 14px; }
.fact { background: #1e293b; border-radius: 6px; padding: 6px 12px; min-width: 110px; }
.fact .k { color: #94a3b8; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
.fact .v { font-size: 16px; font-weight: 600; }
.fact .v .pruned { color: #fdba74; } .fact .v .failed { color: #fca5a5; }
nav { padding: 8px 32px; background: white; border-bottom: 1px solid var(--line);
      position: sticky; top: 0; z-index: 10; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: white; border: 1px solid var(--line); border-radius: 8px;
          padding: 14px 20px 18px; margin-top: 18px; }
h2 { font-size: 17px; margin: 0 0 6px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #374151; }
p.note { color: var(--muted); font-style: italic; margin: 6px 0; }
p.hint { color: var(--muted); margin: 2px 0 8px; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 0; text-align: left;
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
.row { display: flex; flex-wrap: wrap; gap: 36px; align-items: flex-start; }
.figure { width: 100%; }
code { background: #f1f5f9; padding: 0 4px; border-radius: 3px; }
.state-PRUNED { color: #c2410c; } .state-FAIL { color: #b91c1c; }
"""


def esc(value: Any) -> str:
    """HTML-escaped :func:`caviar.report.figures.fmt` of ``value``."""
    return html.escape(F.fmt(value))


def note(text: str) -> str:
    """A short italic remark standing in for a missing part."""
    return f'<p class="note">{html.escape(text)}</p>'


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A plain table; numbers are right-aligned and formatted with ``fmt``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for v in row:
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(v)}</td>' if numeric else f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Page:
    """Collects the sections and figures of one report."""

    def __init__(self) -> None:
        self.sections: list[tuple[str, str, str]] = []  # (id, title, body)
        self.figure_ids: list[str] = []

    def figure(self, fig, div_id: str, missing: str = "Nothing to plot.") -> str:
        """A figure's ``<div>`` (using the page's one plotly.js), or ``missing`` as a note."""
        if fig is None:
            return note(missing)
        self.figure_ids.append(div_id)
        div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                          config=PLOTLY_CONFIG, validate=False)
        return f'<div class="figure">{div}</div>'

    def section(self, sid: str, title: str, *parts: str) -> None:
        """Add a section with a heading."""
        self.sections.append((sid, title, "\n".join(p for p in parts if p)))

    def render(self, title: str, header: str) -> str:
        """The whole page."""
        nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in self.sections)
        body = "\n".join(
            f'<section id="{sid}"><h2>{html.escape(t)}</h2>\n{b}\n</section>'
            for sid, t, b in self.sections
        )
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="caviar report">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
{header}
<nav>{nav}</nav>
<main>
{body}
</main>
</body>
</html>
"""


# ----------------------------------------------------------------------------- header


def _fact(key: str, value: str) -> str:
    return (f'<div class="fact"><div class="k">{html.escape(key)}</div>'
            f'<div class="v">{value}</div></div>')


def header(run: RunData) -> str:
    """The dark banner: name, task, sampler, trial counts and the best score."""
    facts = [_fact("task", esc(run.task))]
    if run.kind == "tune":
        facts.append(_fact("sampler", esc(run.sampler)))
        facts.append(_fact(
            "trials complete / pruned / failed",
            f'{run.count("COMPLETE")} / <span class="pruned">{run.count("PRUNED")}</span> / '
            f'<span class="failed">{run.count("FAIL")}</span>',
        ))
        best = run.best_trial()
        score = esc(best.score) + f" <small>(trial #{best.number})</small>" if best else "—"
        facts.append(_fact(f"best {F.score_label(run)}", score))
        if run.scaling.get("scaling"):  # numeric="auto": what the warm start chose
            facts.append(_fact("numeric scaling", esc(run.scaling["scaling"]) + (
                f" <small>(the warm start's best; from trial "
                f"#{esc(run.scaling.get('from_trial'))})</small>")))
        sub = f"tuning study · {html.escape(run.direction)} {html.escape(F.score_label(run))}"
    else:
        facts.append(_fact("epochs", str(len(run.history))))
        facts.append(_fact("changes", str(len(run.changes))))
        last = run.history[-1].get(run.metric) if run.history and run.metric else None
        facts.append(_fact(f"final {F.score_label(run)}", esc(last)))
        sub = "panda run: one model, adjusted by hand while it trained"
    facts.append(_fact("data", esc(run.data.get("source") or "—")))
    return (f'<header><h1>caviar report — {html.escape(run.name)}</h1>'
            f'<div class="sub">{sub}</div><div class="facts">{"".join(facts)}</div></header>')


# ----------------------------------------------------------------------------- sections


def _curves_section(page: Page, run: RunData) -> None:
    if run.kind == "panda":
        fig = F.panda_figure(run)
        changes = [(c.get("epoch"), F.change_label(c.get("changes") or {})) for c in run.changes]
        page.section(
            "curves", "Learning curve",
            '<p class="hint">Solid lines are validation, dashed lines training; dotted vertical '
            "lines mark the hand-made hyperparameter changes.</p>",
            page.figure(fig, "fig-curves", "No training history stored."),
            "<h3>Changes</h3>" + (table(["epoch", "change"], changes) if changes
                                  else note("No hyperparameter changes.")),
        )
        return
    page.section(
        "curves", "Learning curves",
        '<p class="hint">The best trials by validation score; solid lines are validation, '
        "dashed lines training.</p>",
        page.figure(F.top_curves_figure(run), "fig-curves",
                    "No completed trial stored a learning curve."),
    )


def _trials_section(page: Page, run: RunData) -> None:
    ranked = run.ranked()[:10]
    names = F.param_names(run)
    top = (table(["trial", F.score_label(run), "duration (s)", *names],
                 [[t.number, t.score, t.duration_s, *(t.params.get(n) for n in names)]
                  for t in ranked]) if ranked else note("No completed trials."))
    failed = [t for t in run.trials if t.state == "FAIL"]
    fails = (table(["trial", "reason"], [[t.number, t.failure or "no reason stored"]
                                         for t in failed[:50]]) if failed
             else note("No trial failed."))
    if len(failed) > 50:
        fails += note(f"… and {len(failed) - 50} more.")
    page.section("trials", "Trials", "<h3>Top 10</h3>", top,
                 f"<h3>Failed ({len(failed)})</h3>", fails)


def _params_section(page: Page, run: RunData) -> None:
    page.section(
        "params", "Hyperparameters vs. score",
        '<p class="hint">One point per trial. Log-scale hyperparameters are drawn on a log '
        "axis; an exponential-average β is drawn as 1 − β. Pruned trials show their last "
        "reported score; failed trials have none and sit just past the worst score. When a "
        "few scores lie far off the rest (diverged trials), the score axis is cut so that the "
        "rest keep their spread, and the legend says where; losses spanning two decades or "
        "more are drawn on a log axis.</p>",
        page.figure(F.params_figure(run), "fig-params", "No trial stored parameters."),
    )


def _c2f_section(page: Page, run: RunData) -> None:
    if not F.is_coarse_to_fine(run):
        return
    rows = F.box_rows(run)
    box_table = ""
    if rows:
        names = list(dict.fromkeys(r[1] for r in rows))
        by_round: dict[Any, dict[str, str]] = {}
        for r, name, lo, hi, _ in rows:
            by_round.setdefault(r, {})[name] = f"[{F.fmt(lo)}, {F.fmt(hi)}]"
        labels = [F.param_axis(n, run).label.removesuffix(" (log)") for n in names]
        box_table = "<h3>Box per round</h3>" + table(
            ["round", *labels], [[r, *(cells.get(n, "—") for n in names)]
                                 for r, cells in by_round.items()])
    page.section(
        "c2f", "Coarse-to-fine rounds",
        '<p class="hint">Each round samples inside a box that shrinks, in sampling space, '
        "around the best trials so far.</p>",
        page.figure(F.rounds_score_figure(run), "fig-c2f-rounds", "No trial stored its round."),
        page.figure(F.boxes_figure(run), "fig-c2f-boxes", "No search boxes stored."),
        box_table,
    )


def _pbt_section(page: Page, run: RunData) -> None:
    if not F.is_pbt(run):
        return
    lineage = run.pbt
    best = run.best_trial()
    where = ("" if best is None or best.pbt_schedule else
             f" The run's best network (trial {esc(best.number)}) came from the coarse search "
             "before PBT; these figures follow PBT's best.")
    coarse = lineage.get("coarse")
    start = (f"A coarse search (the default tuner) spent the first {coarse:.0%} of the "
             "budget; each PBT population took one of its best structures, its members "
             "starting from that structure's best trials."
             if isinstance(coarse, (int, float)) and coarse > 0 else
             "The members started from random draws of the space.")
    page.section(
        "pbt", "Population-based training",
        f'<p class="hint">{start} Every {esc(lineage.get("interval"))} epochs the '
        "members in the bottom quarter by validation score copied the network (weights, "
        "batch-norm statistics, optimizer state) of a member drawn from the top quarter, then "
        "perturbed its hyperparameters (×0.8 or ×1.25 in sampling space, or a fresh draw). "
        f"The thick line is the best PBT network's path through the population.{where}</p>",
        page.figure(F.pbt_lineage_figure(run), "fig-pbt-lineage", "No lineage stored."),
        page.figure(F.pbt_schedule_figure(run), "fig-pbt-schedule",
                    "The best network stored no schedule."),
    )


def _parallel_section(page: Page, run: RunData) -> None:
    fig, why = F.parallel_figure(run)
    page.section("parallel", "Parallel coordinates",
                 '<p class="hint">Completed trials; color is the validation score.</p>',
                 page.figure(fig, "fig-parallel", why or ""))


def _importance_section(page: Page, run: RunData) -> None:
    fig, why = F.importance_figure(run)
    left_out = F.conditional_parameters(run)
    hint = (f'<p class="hint">Over the completed trials; left out because some trials do not '
            f'have them: {html.escape(", ".join(left_out))}.</p>' if fig and left_out else "")
    page.section("importance", "Hyperparameter importances", hint,
                 page.figure(fig, "fig-importance", why or ""))


def _feature_importance_section(page: Page, run: RunData) -> None:
    fig, why = F.feature_importance_figure(run)
    stored = run.best.get(keys.FEATURE_IMPORTANCE) or {}
    hint = (f'<p class="hint">Permutation importance of the model on {stored.get("rows")} '
            f"test rows, by original column (a categorical counts once), over "
            f"{stored.get('repeats')} shuffles (scikit-learn); caviar explain MODEL DATA "
            "computes it for any rows.</p>" if fig is not None else "")
    page.section("features", "Feature importance", hint,
                 page.figure(fig, "fig-features", why or ""))


def _best_section(page: Page, run: RunData) -> None:
    best = run.best
    trial = run.best_trial() if run.kind == "tune" else None
    hp = best.get(keys.HYPERPARAMETERS) or (trial.hyperparameters or trial.params if trial else {})
    parts = []
    if run.kind == "panda":
        final = dict(hp)
        for change in run.changes:
            for name, pair in (change.get("changes") or {}).items():
                final[name] = pair[-1] if isinstance(pair, (list, tuple)) and pair else pair
        parts.append(table(["hyperparameter", "initial", "final"],
                           [[k, hp.get(k), final[k]] for k in final]) if final
                     else note("No hyperparameters stored."))
    else:
        if trial is not None:
            parts.append(f'<p class="hint">Trial #{trial.number}, {html.escape(F.score_label(run))}'
                         f" = {esc(trial.score)}.</p>")
        parts.append(table(["hyperparameter", "value"], sorted(hp.items())) if hp
                     else note("No best configuration stored."))
        members = [m for m in best.get(keys.MEMBERS) or [] if isinstance(m, dict)]
        if len(members) > 1:
            trials = ", ".join(f"#{m.get('trial')} ({esc(m.get('value'))})" for m in members)
            parts.append(f'<p class="hint">The model averages the predictions of '
                         f"{len(members)} networks (going down the trials by validation score, "
                         f"each joined unless it made the validation loss of the average "
                         f"worse by more than one standard error): {trials}.</p>")
    scores = best.get(keys.TEST_SCORES) or {}
    alone = best.get(keys.BEST_NETWORK_TEST_SCORES) or {}
    constant = best.get(keys.CONSTANT_TEST_SCORES) or {}
    parts.append("<h3>Held-out test scores</h3>")
    if best.get(keys.TEST_WEIGHT):
        parts.append(note(f"Weighted by the column {esc(best[keys.TEST_WEIGHT])}, as the "
                          "validation score is."))
    if scores and (alone or constant):
        header = ["score", "model", *(["best network alone"] if alone else []),
                  *(["a constant prediction"] if constant else [])]
        parts.append(table(header, [[k, v, *([alone.get(k)] if alone else []),
                                     *([constant.get(k)] if constant else [])]
                                    for k, v in scores.items()]))
    else:
        parts.append(table(["score", "value"], scores.items()) if scores
                     else note("No test scores stored."))
    if run.task in ("binary", "multiclass") or best.get(keys.CONFUSION_MATRIX):
        parts.append("<h3>Confusion matrix (test)</h3>")
        parts.append(page.figure(F.confusion_figure(best.get(keys.CONFUSION_MATRIX) or {}),
                                 "fig-confusion", "No confusion matrix stored."))
    title = "Configuration and test scores" if run.kind == "panda" else "Best configuration"
    page.section("best", title, *parts)


def _data_section(page: Page, run: RunData) -> None:
    d = run.data
    if not d:
        page.section("data", "Data", note("No data description stored."))
        return
    facts = table(["", ""], [[k, d.get(k)] for k in ("source", "rows", "columns", "target",
                                                     "task") if k in d])
    roles = d.get("roles") or {}
    role_rows = [[col, (r or {}).get("role"), (r or {}).get("reason")]
                 for col, r in roles.items() if isinstance(r, dict) or r is None]
    page.section("data", "Data", facts, "<h3>Column roles</h3>",
                 table(["column", "role", "reason"], role_rows) if role_rows
                 else note("No column roles stored."))


def render_report(run: RunData) -> str:
    """The report page for ``run`` as one HTML string."""
    page = Page()
    _curves_section(page, run)
    if run.kind == "tune":
        _trials_section(page, run)
        _params_section(page, run)
        _c2f_section(page, run)
        _pbt_section(page, run)
        _parallel_section(page, run)
        _importance_section(page, run)
        _feature_importance_section(page, run)
    _best_section(page, run)
    _data_section(page, run)
    return page.render(f"caviar report: {run.name}", header(run))


def write_report(
    source: str | Path, out_path: str | Path = "report.html", study_name: str | None = None,
    study: optuna.Study | None = None,
) -> Path:
    """Write the HTML report of ``source`` to ``out_path`` and return that path.

    ``source`` is a tune run directory, a panda run directory, or an Optuna storage URL (with
    ``study_name`` when the storage holds several studies); ``study``: a tune run directory's
    study, open already (``load_run``). Raises ``ValueError`` with a one-line message when the
    source cannot be read.
    """
    run = load_run(source, study_name, study)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_file(out, render_report(run))  # a failed write keeps the old report
    return out
