"""The suite never reaches past this machine."""

from __future__ import annotations

import socket

import pytest

from tests.tap_harness import tap_env


def test_in_process_connections_beyond_loopback_are_refused():
    # 192.0.2.1 is a documentation address; the guard refuses before any packet leaves.
    with pytest.raises(ConnectionRefusedError, match="loopback"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_tap_processes_send_non_loopback_http_to_a_closed_local_port():
    env = tap_env()
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert env["HTTP_PROXY"].startswith("http://127.0.0.1:")
    assert "127.0.0.1" in env["NO_PROXY"]
    assert not any(key.startswith("TAP_KUSTOMER_") for key in env)
