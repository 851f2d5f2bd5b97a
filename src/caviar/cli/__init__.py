"""The command line: ``caviar tune | train | resume | predict | report``.

``app`` is the Typer application (the ``caviar`` console script)."""

from caviar.cli.commands import app
from caviar.cli.display import sparkline
from caviar.cli.options import parse_sets

__all__ = ["app", "parse_sets", "sparkline"]
