"""Shared fixtures: the wine table as a CSV file, and a real PostgreSQL database per test
(the server `.ci/run` starts)."""

from __future__ import annotations

import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from wine import wine_frame

DEFAULT_SERVER = "postgresql+psycopg://root@/postgres?host=/var/run/postgresql"


def _admin_connection(url: str):
    import psycopg

    # psycopg takes libpq URLs: drop SQLAlchemy's "+psycopg" driver tag
    return psycopg.connect(url.replace("+psycopg", ""), autocommit=True, connect_timeout=5)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; its SQLAlchemy URL. Skipped when no
    server is reachable, unless CAVIAR_REQUIRE_POSTGRES is set (CI sets it)."""
    server = os.environ.get("CAVIAR_TEST_POSTGRES", DEFAULT_SERVER)
    try:
        admin = _admin_connection(server)
    except Exception as e:  # no driver, no server: the reason goes into the skip
        if os.environ.get("CAVIAR_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"no PostgreSQL server at {server} ({type(e).__name__}: {e})")
    name = f"caviar_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    # the test's storages are garbage now: collected here, their pooled connections close
    # before the database goes, and psycopg's "deleted while still open" warnings do not
    # surface in whichever later test (a command line's output) the collector runs in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
    with _admin_connection(server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny networks (extra threads only add overhead)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def wine_csv(tmp_path_factory) -> Path:
    """wine (``cultivar`` names as the target) written as a CSV file."""
    path = tmp_path_factory.mktemp("data") / "wine.csv"
    wine_frame().to_csv(path, index=False)
    return path
