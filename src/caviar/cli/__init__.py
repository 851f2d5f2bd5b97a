"""The command line: ``caviar tune | train | resume | predict | report``."""

from caviar.cli.commands import app, parse_sets, sparkline

__all__ = ["app", "parse_sets", "sparkline"]
