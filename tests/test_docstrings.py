"""The examples in caviar's docstrings run and print what they say (doctest), so that the
documentation a user reads in ``help()`` stays true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import caviar

# every module but the command line's entry point, which runs the command line on import
MODULES = sorted(m.name for m in pkgutil.walk_packages(caviar.__path__, "caviar.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_hold(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write a run folder write it here
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional dependency (onnx, dask, psycopg) not installed
        pytest.skip(f"{name} needs {error.name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
