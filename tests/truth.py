"""Sandboxes for the tap's tests and what the sandbox says a run must emit."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta

from tests.sandbox import Sandbox, SandboxOptions

API_KEY = "scenario-key"
LAG_MINUTES = 10


def started(**options: t.Any) -> Sandbox:
    """A running sandbox with ``base_url`` set; the caller stops it."""
    sandbox = Sandbox(SandboxOptions(**{"api_key": API_KEY, **options}))
    sandbox.base_url = sandbox.start()  # type: ignore[attr-defined]
    return sandbox


def config_for(sandbox: Sandbox, **extra: t.Any) -> dict[str, t.Any]:
    """Settings that point the tap at ``sandbox``, all history, fast retries."""
    return {
        "api_key": API_KEY,
        "api_url": sandbox.base_url,  # type: ignore[attr-defined]
        "start_date": "2000-01-01T00:00:00Z",
        "index_lag_minutes": LAG_MINUTES,
        "backoff_base_seconds": 0.01,
        **extra,
    }


def settle(sandbox: Sandbox) -> None:
    """Move the sandbox clock past the tap's index lag, so recent changes are in reach."""
    sandbox.advance_clock(LAG_MINUTES * 60 + 60)


def window_end(sandbox: Sandbox) -> datetime:
    """The newest time a run started now reads."""
    return sandbox.now() - timedelta(minutes=LAG_MINUTES)


def expected_resolved(sandbox: Sandbox, since: t.Any = None) -> set[str]:
    """Ids of the conversations a default run must emit."""
    return set(sandbox.resolved_conversation_ids(since=since, until=window_end(sandbox)))


def thread_ids(sandbox: Sandbox, conversation_ids: set[str]) -> tuple[set[str], set[str]]:
    """Ids of the messages and notes of ``conversation_ids``."""
    truth = sandbox.truth(["messages", "notes"])

    def of(kind: str) -> set[str]:
        return {
            r["id"]
            for r in truth[kind]
            if r["relationships"]["conversation"]["data"]["id"] in conversation_ids
        }

    return of("messages"), of("notes")


def bounded_config(sandbox: Sandbox, **extra: t.Any) -> dict[str, t.Any]:
    """Like :func:`config_for`, with a fixed ``end_date`` an hour before the sandbox's now.

    The truth of such a run cannot move while it runs.
    """
    from tap_kustomer.search import format_timestamp

    end = (sandbox.now() - timedelta(hours=1)).replace(microsecond=0)
    return config_for(sandbox, end_date=format_timestamp(end), **extra)
