"""Attachments and conversation events: emitted exactly for the emitted conversations."""

from __future__ import annotations

import collections

import pytest

from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import run_tap
from tests.truth import API_KEY, config_for, expected_resolved, settle

SELECT = ("conversations", "messages", "notes", "attachments", "conversation_events")
ATTACHMENT_LISTS = "GET /v1/conversations/{id}/attachments"
EVENT_LISTS = "GET /v1/conversations/{id}/events"


@pytest.fixture(scope="module")
def org():
    options = SandboxOptions(
        api_key=API_KEY,
        seed=31,
        customers=60,
        conversations=400,
        org_rpm=100_000,
        search_rpm=100_000,
    )
    with Sandbox(options) as sandbox:
        sandbox.base_url = sandbox.start()
        yield sandbox


def children_of(sandbox: Sandbox, conversation_ids: set[str]) -> tuple[dict, dict]:
    """What the sandbox lists for each conversation: attachment ids and event ids."""
    attachments = {cid: set(sandbox.attachment_ids(cid)) for cid in conversation_ids}
    events = {cid: set(sandbox.event_ids(cid)) for cid in conversation_ids}
    return attachments, events


def by_conversation(records: list[dict]) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = collections.defaultdict(set)
    for record in records:
        grouped[record["conversation_id"]].add(record["id"])
    return dict(grouped)


def requests_to(sandbox: Sandbox, route: str) -> int:
    return sum(sandbox.stats()["by_route"].get(route, {}).values())


def listed(sandbox: Sandbox, suffix: str) -> set[str]:
    """Conversations whose ``suffix`` list the run requested (any page)."""
    return {
        entry["path"].split("/")[3]
        for entry in sandbox.request_log()
        if entry["path"].split("?")[0].endswith(f"/{suffix}")
        and entry["path"].startswith("/v1/conversations/")
    }


def nonempty(grouped: dict[str, set[str]]) -> dict[str, set[str]]:
    return {cid: ids for cid, ids in grouped.items() if ids}


def test_a_backfill_emits_exactly_the_children_of_the_emitted_conversations(org):
    expected = expected_resolved(org)
    attachments, events = children_of(org, expected)
    assert sum(map(len, attachments.values())), "the org must have attachments"
    org.reset_stats()
    run = run_tap(config_for(org), select=SELECT)
    assert run.ids("conversations") == expected
    emitted_attachments = run.records("attachments")
    emitted_events = run.records("conversation_events")
    assert by_conversation(emitted_attachments) == nonempty(attachments)
    assert by_conversation(emitted_events) == nonempty(events)
    assert len(emitted_attachments) == sum(map(len, attachments.values())), "one repeated"
    assert len(emitted_events) == sum(map(len, events.values())), "one repeated"
    # Attachments are listed only where a message names one; events for every thread.
    assert listed(org, "attachments") == set(nonempty(attachments))
    assert listed(org, "events") == expected
    assert len(nonempty(attachments)) <= requests_to(org, ATTACHMENT_LISTS) < len(expected)
    for record in emitted_attachments:
        assert record["links"]["self"].endswith(record["id"])
        assert record["message_id"]
        assert record["type"] == "attachment"


def test_a_reopened_conversation_comes_back_with_all_its_children(org):
    backfill = run_tap(config_for(org), select=SELECT)
    again = sorted(backfill.ids("conversations"))[:5]
    for cid in again:
        org.reply(cid, body="One more thing, see attached", attachments=2)
        org.resolve(cid)
    settle(org)
    run = run_tap(config_for(org), state=backfill.final_state, select=SELECT)
    emitted = run.ids("conversations")
    assert set(again) <= emitted
    attachments, events = children_of(org, emitted)
    assert by_conversation(run.records("attachments")) == nonempty(attachments)
    assert by_conversation(run.records("conversation_events")) == nonempty(events)
    for cid in again:
        # The new reply's two attachments and the old ones, and every event so far.
        assert len(attachments[cid]) >= 2
        assert by_conversation(run.records("attachments"))[cid] == attachments[cid]
    assert not run.ids("attachments") & backfill.ids("attachments") - {
        aid for cid in emitted for aid in attachments[cid]
    }


def test_children_are_not_read_unless_selected(org):
    org.reset_stats()
    run = run_tap(config_for(org), select=("conversations", "messages", "notes"))
    assert run.ids("conversations")
    assert not run.records("attachments")
    assert not run.records("conversation_events")
    assert requests_to(org, ATTACHMENT_LISTS) == 0
    assert requests_to(org, EVENT_LISTS) == 0
