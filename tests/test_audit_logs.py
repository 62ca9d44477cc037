"""The audit_logs stream against the sandbox: exact backfill plus increment, object-type
filter, cursor paging, and a key without the audit log role."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from tap_kustomer.errors import PermissionDeniedError
from tests.sandbox import KeySpec, Sandbox
from tests.tap_harness import TapRun, run_tap
from tests.truth import config_for, settle, started

FLAT_COLUMNS = ("created_at", "object_type", "object_id")
KEY_WITHOUT_AUDIT = "key-without-audit-logs"


@pytest.fixture
def org() -> Iterator[Sandbox]:
    sandbox = started(
        seed=41,
        customers=8,
        conversations=8,
        companies=4,
        kobjects=6,
        extra_keys={KEY_WITHOUT_AUDIT: KeySpec.without("audit_logs")},
    )
    yield sandbox
    sandbox.stop()


def make_changes(sb: Sandbox, label: str) -> None:
    """A create, update and delete of each audited kind."""
    truth = sb.truth(["customers", "companies", "kobjects", "conversations"])
    customer = sb.add_customer(name=f"New {label}")
    sb.update_customer(customer["id"], name=f"Renamed {label}")
    company = sb.add_company(name=f"Company {label}")
    sb.update_company(company["id"], name=f"Company {label} Inc")
    sb.update_kobject(truth["kobjects"][0]["id"], title=f"Order {label}")
    conversation = sb.add_conversation(customer_id=customer["id"])
    sb.resolve(conversation["id"])
    sb.delete_kobject(truth["kobjects"][-1]["id"])
    sb.delete_company(truth["companies"][-1]["id"])
    sb.delete_customer(truth["customers"][-1]["id"])
    sb.delete_conversation(truth["conversations"][-1]["id"])


def served(record: dict) -> dict:
    """A record without the tap's flat columns: the event as the API served it."""
    return {k: v for k, v in record.items() if k not in FLAT_COLUMNS}


def audit_reads(sb: Sandbox) -> list[dict[str, str]]:
    return [
        dict(parse_qsl(urlsplit(entry["path"]).query))
        for entry in sb.request_log()
        if urlsplit(entry["path"]).path == "/v1/audit-logs"
    ]


def by_id(*runs: TapRun) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for run in runs:
        for record in run.records("audit_logs"):
            out[record["id"]] = record
    return out


def test_backfill_and_increment_equal_the_log(org):
    make_changes(org, "one")
    settle(org)
    config = config_for(org)
    first = run_tap(config, select=["audit_logs"])
    truth_first = org.audit_log()
    assert truth_first
    assert {r["id"] for r in first.records("audit_logs")} == {e["id"] for e in truth_first}
    bookmark = first.bookmark("audit_logs")
    assert bookmark == max(e["attributes"]["createdAt"] for e in truth_first)

    make_changes(org, "two")
    settle(org)
    second = run_tap(config, state=first.final_state, select=["audit_logs"])
    assert all(r["created_at"] >= bookmark for r in second.records("audit_logs"))
    truth = {e["id"]: e for e in org.audit_log()}
    assert len(truth) > len(truth_first)
    records = by_id(first, second)
    assert set(records) == set(truth)
    for event_id, record in records.items():
        assert served(record) == truth[event_id], event_id
        assert record["created_at"] == truth[event_id]["attributes"]["createdAt"]
        assert record["object_type"] == truth[event_id]["attributes"]["objectType"]
        assert record["object_id"] == truth[event_id]["attributes"]["objectId"]
    verbs = {r["attributes"]["eventVerb"] for r in records.values()}
    assert verbs == {"create", "update", "delete"}
    assert second.bookmark("audit_logs") == max(
        e["attributes"]["createdAt"] for e in truth.values()
    )


def test_object_type_filter(org):
    make_changes(org, "filtered")
    settle(org)
    config = config_for(org, audit_log_object_types=["customer", "company"])
    run = run_tap(config, select=["audit_logs"])
    expected = {e["id"] for e in org.audit_log(["customer", "company"])}
    assert expected
    assert run.ids("audit_logs") == expected
    assert {r["object_type"] for r in run.records("audit_logs")} == {"customer", "company"}
    reads = audit_reads(org)
    assert reads
    assert all(q.get("filter[objectType]") == "customer" for q in reads)
    assert all(q.get("filter[include]") == "company" for q in reads)


def test_cursor_paging_over_several_pages(org):
    make_changes(org, "paged")
    settle(org)
    org.set_option("audit_max_page_size", 3)
    run = run_tap(config_for(org), select=["audit_logs"])
    truth = org.audit_log()
    assert len(truth) > 9
    records = run.records("audit_logs")
    assert [r["id"] for r in records] == [e["id"] for e in reversed(truth)]  # newest first
    reads = audit_reads(org)
    assert len(reads) >= len(truth) // 3
    assert reads[0]["count"] == "1000"
    assert all("before" in q for q in reads[1:])
    assert all("filter[start]" in q and "filter[end]" in q for q in reads)


def test_missing_role_fails_naming_it(org):
    config = config_for(org, api_key=KEY_WITHOUT_AUDIT)
    with pytest.raises(PermissionDeniedError) as raised:
        run_tap(config, select=["audit_logs"])
    assert "org.permission.audit_logs.read" in str(raised.value)


def test_missing_role_is_skipped_with_a_warning(org, caplog):
    make_changes(org, "denied")
    settle(org)
    config = config_for(org, api_key=KEY_WITHOUT_AUDIT, skip_unauthorized_streams=True)
    with caplog.at_level(logging.WARNING):
        run = run_tap(config, select=["audit_logs", "companies"])
    assert not run.records("audit_logs")
    assert run.records("companies")
    skipping = [
        r.getMessage() for r in caplog.records if "Skipping stream 'audit_logs'" in r.getMessage()
    ]
    assert len(skipping) == 1
    assert "org.permission.audit_logs.read" in skipping[0]


def test_not_selected_by_default(org):
    from tests.tap_harness import catalog_for

    catalog = catalog_for(config_for(org), select=[])
    entry = next(s for s in catalog["streams"] if s["tap_stream_id"] == "audit_logs")
    root = next(m for m in entry["metadata"] if m["breadcrumb"] == [])
    assert root["metadata"].get("selected-by-default") is False
    assert entry["replication_method"] == "INCREMENTAL"
    assert entry["replication_key"] == "created_at"
