"""Running the command line in-process, and what every user error must look like."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from caviar.cli import app


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error_line(result: Result, *fragments: str) -> None:
    """Exit code 1 and one stderr line ``error: ...`` holding every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
