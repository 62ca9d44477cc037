"""Faithfulness check: singer-io's tap-kustomer 1.1.0, unchanged, against the sandbox.

That tap was written against the real Kustomer API by other people, so if it
extracts exactly the sandbox's truth, the emulator's request/response contract
is close to the real one. Where it fails, the tests pin down that the cause is
the old tap's own code (documented per test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.legacy_tap import (
    STREAMS,
    RegistryUnreachableError,
    ensure_venv,
    read_output,
    run_legacy_tap,
)
from tests.sandbox import Sandbox, SandboxOptions
from tests.sandbox.clock import parse_ts

# Slow: installs singer-io's tap in a venv of its own (once) and runs it as a program.
pytestmark = pytest.mark.e2e

KEY = "legacy-key"
NOW = "2025-06-01T12:00:00.000Z"
START = "2024-06-01T00:00:00Z"


@pytest.fixture(scope="module")
def legacy_python() -> Path:
    """The legacy tap's venv (created once; skipped only if the registry is unreachable)."""
    try:
        return ensure_venv()
    except RegistryUnreachableError as exc:
        pytest.skip(f"package registry unreachable, cannot install tap-kustomer 1.1.0: {exc}")


def _sandbox(**kw: object) -> Sandbox:
    opts = {"seed": 11, "api_key": KEY, "customers": 40, "conversations": 150, "now": NOW}
    opts.update(kw)
    return Sandbox(SandboxOptions(**opts))  # type: ignore[arg-type]


def _ids(records: list[dict]) -> set[str]:
    return {r["id"] for r in records}


def test_full_sync_matches_truth(legacy_python, tmp_path):
    with _sandbox() as sb:
        assert sb.base_url is not None
        rc, out = run_legacy_tap(sb.base_url, KEY, START, STREAMS, tmp_path / "full.jsonl")
        log = (tmp_path / "full.jsonl.log").read_text()
        assert rc == 0, log[-3000:]
        result = read_output(out)
        records = result["records"]
        for stream in STREAMS:
            want = set(sb.updated_ids(stream, since=START))
            assert want, stream
            assert _ids(records.get(stream, [])) == want, stream
        # more messages than one 500-row page: the tap had to re-window by updatedAt
        assert len(sb.updated_ids("messages", since=START)) > 500
        stats = sb.stats()
        assert stats["by_route"]["POST /v1/customers/search"]["200"] >= 5
        assert set(stats["by_status"]) == {"200"}
        # denested records carry the sandbox's values
        truth = {c["id"]: c for c in sb.truth(["conversations"])["conversations"]}
        for rec in records["conversations"]:
            attrs = truth[rec["id"]]["attributes"]
            assert rec["status"] == attrs["status"]
            assert rec["message_count"] == attrs["messageCount"]
            assert parse_ts(rec["updated_at"]) == parse_ts(attrs["updatedAt"])
        # bookmarks are the newest updatedAt seen per stream
        bookmarks = result["state"]["bookmarks"]
        for stream in ("conversations", "customers", "messages", "notes"):
            newest = max(parse_ts(r["attributes"]["updatedAt"]) for r in sb.truth([stream])[stream])
            assert parse_ts(bookmarks[stream]) == newest, stream
        # Legacy-tap quirk (its bug, not the sandbox's): check_token() expects a
        # "results" key in /v1/users/current, never finds it, so it re-checks the
        # token before every request; half its traffic is /v1/users/current.
        assert stats["by_route"]["GET /v1/users/current"]["200"] >= stats["total_requests"] // 2


def test_incremental_sync_after_activity(legacy_python, tmp_path):
    with _sandbox() as sb:
        assert sb.base_url is not None
        rc, out = run_legacy_tap(sb.base_url, KEY, START, STREAMS, tmp_path / "first.jsonl")
        assert rc == 0
        state = read_output(out)["state"]
        summary = sb.simulate_activity(hours=2, seed=3)
        assert summary["resolved"]
        assert summary["messages"]
        rc, out = run_legacy_tap(
            sb.base_url, KEY, START, STREAMS, tmp_path / "second.jsonl", state=state
        )
        assert rc == 0, (tmp_path / "second.jsonl.log").read_text()[-3000:]
        records = read_output(out)["records"]
        for stream in ("conversations", "messages", "notes", "customers"):
            since = state["bookmarks"][stream]
            want = set(sb.updated_ids(stream, since=since))
            got = _ids(records.get(stream, []))
            # It re-reads from its bookmark with gte, so it repeats the boundary
            # record(s) of the previous run; everything changed since is there.
            assert want == got, stream
        assert set(summary["resolved"]) <= _ids(records["conversations"])
        assert set(summary["messages"]) <= _ids(records["messages"])


def test_legacy_rate_limit_handling_crashes(legacy_python, tmp_path):
    """Its own bug: when x-ratelimit-remaining reaches 0 it computes
    ``reset_in - now`` with reset_in still a *string* header value and dies with a
    TypeError, even on the successful response that used the last unit."""
    with _sandbox(search_rpm=2) as sb:
        assert sb.base_url is not None
        rc, _out = run_legacy_tap(
            sb.base_url, KEY, START, ["conversations", "messages"], tmp_path / "limited.jsonl"
        )
        log = (tmp_path / "limited.jsonl.log").read_text()
        assert rc != 0
        assert "unsupported operand type(s) for -: 'str' and 'float'" in log
        stats = sb.stats()
        assert stats["rate_limited"] == 0  # it crashed before any request was refused
        assert stats["by_route"]["POST /v1/customers/search"] == {"200": 2}


def test_legacy_eternal_pagination_on_ties(legacy_python, tmp_path):
    """Its known bug (singer-io issue #12): more than pageSize (500) records
    sharing one updatedAt make it re-request the same window forever; here it
    runs until the search budget is exhausted and then hits the bug above."""
    with _sandbox(
        conversations=10, customers=5, search_rpm=8, tie_clusters=[("customers", 600)]
    ) as sb:
        assert sb.base_url is not None
        rc, out = run_legacy_tap(sb.base_url, KEY, START, ["customers"], tmp_path / "ties.jsonl")
        assert rc != 0
        stats = sb.stats()
        assert stats["by_route"]["POST /v1/customers/search"] == {"200": 8}
        records = read_output(out)["records"]["customers"]
        tie_at = sb.tie_cluster_times()[0]["at"]
        tied = set(sb.updated_ids("customers", since=tie_at, until=parse_ts(tie_at) + 1))
        # pages 2..8 are all the same first 500 tied customers (sorted by id)
        assert len(records) > 3000
        assert len(_ids(records) & tied) == 500


def test_legacy_expired_key(legacy_python, tmp_path):
    """An expired key: the sandbox answers 401 {"errors":[{"title":"Expired token"}]}.
    The old tap only inspects top-level ``error``/``errorCode`` keys, so it does not
    recognise the JSON:API errors envelope and fails later with a TypeError
    instead of its "token has expired" message; either way it exits non-zero."""
    from tests.sandbox import KeySpec

    with _sandbox(extra_keys={"old": KeySpec.expired_key()}) as sb:
        assert sb.base_url is not None
        rc, _out = run_legacy_tap(sb.base_url, "old", START, ["tags"], tmp_path / "exp.jsonl")
        log = (tmp_path / "exp.jsonl.log").read_text()
        assert rc != 0
        assert "object of type 'NoneType' has no len()" in log
        assert "has expired" not in log
        assert sb.stats()["by_status"].get("401", 0) >= 1
        assert set(sb.stats()["by_status"]) == {"401"}
