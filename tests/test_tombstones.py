"""Permanent deletes reach the warehouse as tombstones: a record with ``id`` and
``_sdc_deleted_at``, written by the deleted object's own stream on the next run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.sandbox import KeySpec, Sandbox
from tests.tap_harness import TapRun, run_tap
from tests.truth import API_KEY, config_for, settle, started

KEY_WITHOUT_AUDIT = "tombstone-key-without-audit-logs"
AUDIT_WARNING = "Deletes are not reported: the API key lacks org.permission.audit_logs.read"

#: stream -> (truth kind, GET path of one record, delete method of the sandbox)
KINDS: dict[str, tuple[str, str, Callable[[Sandbox, str], Any]]] = {
    "conversations": ("conversations", "/v1/conversations/", Sandbox.delete_conversation),
    "customers": ("customers", "/v1/customers/", Sandbox.delete_customer),
    "companies": ("companies", None, Sandbox.delete_company),  # type: ignore[dict-item]
    "kobjects": ("kobjects", None, Sandbox.delete_kobject),  # type: ignore[dict-item]
}
STREAMS = tuple(KINDS)


@pytest.fixture
def org() -> Iterator[Sandbox]:
    sandbox = started(
        seed=43,
        customers=8,
        conversations=8,
        companies=4,
        kobjects=6,
        extra_keys={KEY_WITHOUT_AUDIT: KeySpec.without("audit_logs")},
    )
    yield sandbox
    sandbox.stop()


def tombstones(run: TapRun, stream: str) -> list[dict[str, Any]]:
    return [r for r in run.records(stream) if r.get("_sdc_deleted_at")]


def audit_requests(sb: Sandbox) -> int:
    return sum(1 for entry in sb.request_log() if entry["route"] == "GET /v1/audit-logs")


def delete_one(sb: Sandbox, stream: str) -> tuple[str, str]:
    """Delete the last record of the stream's kind; its id and the delete's time."""
    kind, _, delete = KINDS[stream]
    gone = sb.truth([kind])[kind][-1]["id"]
    event = delete(sb, gone)
    return gone, event["attributes"]["createdAt"]


@pytest.mark.parametrize("stream", STREAMS)
def test_a_delete_ends_as_exactly_one_tombstone(org, stream):
    config = config_for(org)
    first = run_tap(config, select=[stream])
    assert not tombstones(first, stream)
    assert first.final_state["bookmarks"][stream]["deletes_read_through"]
    gone, deleted_at = delete_one(org, stream)
    settle(org)
    second = run_tap(config, state=first.final_state, select=[stream])
    [tombstone] = tombstones(second, stream)
    assert tombstone["id"] == gone
    assert tombstone["_sdc_deleted_at"] == deleted_at
    assert all(v is None for k, v in tombstone.items() if k not in {"id", "_sdc_deleted_at"})
    assert gone not in {r["id"] for r in second.records(stream) if not r.get("_sdc_deleted_at")}
    # the replication bookmark is not moved by a tombstone; the deletes window is
    assert second.bookmark(stream) == first.bookmark(stream)
    third = run_tap(config, state=second.final_state, select=[stream])
    assert not tombstones(third, stream)


def test_a_deleted_record_is_gone_from_get_and_search(org):
    gone, _ = delete_one(org, "customers")
    answer = requests.get(
        f"{org.base_url}/v1/customers/{gone}",  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 404
    assert gone not in {c["id"] for c in org.truth(["customers"])["customers"]}
    assert org.deleted_ids("customers") == [gone]
    settle(org)
    run = run_tap(config_for(org, emit_deletes=False), select=["customers"])
    assert gone not in run.ids("customers")


def test_no_tombstone_without_deletes(org):
    config = config_for(org)
    first = run_tap(config, select=list(STREAMS))
    org.update_customer(org.truth(["customers"])["customers"][0]["id"], name="Still here")
    settle(org)
    second = run_tap(config, state=first.final_state, select=list(STREAMS))
    for stream in STREAMS:
        assert not tombstones(second, stream), stream
    assert second.records("customers")


def test_emit_deletes_false_writes_none_and_reads_no_log(org):
    config = config_for(org, emit_deletes=False)
    first = run_tap(config, select=list(STREAMS))
    for stream in STREAMS:
        delete_one(org, stream)
    settle(org)
    org.reset_stats()
    second = run_tap(config, state=first.final_state, select=list(STREAMS))
    for stream in STREAMS:
        assert not tombstones(second, stream), stream
    assert audit_requests(org) == 0


def test_a_key_without_the_audit_role_still_completes_with_one_warning(org, caplog):
    config = config_for(org, api_key=KEY_WITHOUT_AUDIT)
    first = run_tap(config, select=list(STREAMS))
    for stream in STREAMS:
        delete_one(org, stream)
    changed = org.truth(["customers"])["customers"][0]["id"]
    org.update_customer(changed, name="Changed after the deletes")
    settle(org)
    with caplog.at_level(logging.WARNING):
        second = run_tap(config, state=first.final_state, select=list(STREAMS))
    for stream in STREAMS:
        assert not tombstones(second, stream), stream
    assert changed in second.ids("customers")
    warnings = [r.getMessage() for r in caplog.records if AUDIT_WARNING in r.getMessage()]
    assert len(warnings) == 1
    assert second.final_state is not None
