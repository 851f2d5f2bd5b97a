"""The HTML report of a tuning study or a panda run (``caviar report SOURCE``).

``write_report(source, out_path)`` reads a tune run directory, a panda run directory, or an
Optuna storage URL, and writes one self-contained HTML page: plotly.js is inlined once and every
figure is a ``<div>`` drawn by it, so the page opens without a network.
"""

from caviar.report.html import render_report, write_report
from caviar.report.source import RunData, TrialData, load_run

__all__ = ["RunData", "TrialData", "load_run", "render_report", "write_report"]
