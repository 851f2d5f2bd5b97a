"""``python -m caviar.cli``: the same as the ``caviar`` command."""

from caviar.cli import app

app()
