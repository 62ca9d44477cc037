"""Settings decide the conversations walk, whatever a saved catalog says; a run that
selects only messages or notes keeps a bookmark like the default one."""

from __future__ import annotations

import logging

import pytest

from tap_kustomer.search import parse_timestamp
from tests.tap_harness import catalog_for, run_tap, run_with_catalog
from tests.truth import config_for, expected_resolved, settle, started, thread_ids


@pytest.fixture
def org():
    sandbox = started(seed=21, customers=60, conversations=250)
    yield sandbox
    sandbox.stop()


def _newest(run, stream: str, column: str) -> str:
    return max(r[column] for r in run.records(stream))


@pytest.mark.parametrize(
    ("discovered_with", "run_with", "key"),
    [
        ({}, {"data_mutability": True}, "updated_at"),
        ({}, {"resolved_only": False}, "updated_at"),
        ({"data_mutability": True}, {}, "resolved_at"),
    ],
)
def test_a_stale_catalog_is_overruled_by_the_settings(org, caplog, discovered_with, run_with, key):
    stale = catalog_for(config_for(org, **discovered_with), ["conversations", "messages"])
    config = config_for(org, **run_with)
    with caplog.at_level(logging.WARNING):
        run = run_with_catalog(config, stale)
    assert "Run discovery again" in caplog.text
    bookmark = run.final_state["bookmarks"]["conversations"]
    assert bookmark["replication_key"] == key
    # The value is the newest value of that key among the emitted records, not of another.
    assert bookmark["replication_key_value"] == _newest(run, "conversations", key)
    schema = next(
        m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == "conversations"
    )
    assert schema["bookmark_properties"] == [key]
    # The next run with the same catalog continues from that bookmark.
    changed = sorted(run.ids("conversations"))[0]
    org.reply(changed)
    org.resolve(changed)
    settle(org)
    again = run_with_catalog(config, stale, state=run.final_state)
    assert changed in again.ids("conversations")
    assert len(again.ids("conversations")) < len(run.ids("conversations")) / 4


@pytest.mark.parametrize("selected", [["messages"], ["notes"], ["messages", "notes"]])
def test_children_only_selection_reads_only_what_changed_on_the_next_run(org, selected):
    config = config_for(org)
    backfill = run_tap(config, select=selected)
    assert not backfill.records("conversations")
    bookmark = backfill.final_state["bookmarks"]["conversations"]
    resolved = expected_resolved(org)
    newest = max(
        parse_timestamp(c["attributes"]["lastDone"]["createdAt"])
        for c in org.truth(["conversations"])["conversations"]
        if c["id"] in resolved
    )
    assert parse_timestamp(bookmark["replication_key_value"]) == newest
    messages, notes = thread_ids(org, resolved)
    if "messages" in selected:
        assert backfill.ids("messages") == messages
    if "notes" in selected:
        assert backfill.ids("notes") == notes

    changed = sorted(resolved)[0]
    org.reply(changed)
    org.add_note(changed)
    org.resolve(changed)
    settle(org)
    incremental = run_tap(config, select=selected, state=backfill.final_state)
    # The changed conversation's whole thread, and besides it at most the conversation
    # resolved exactly at the bookmark (the walk starts at the bookmark, inclusive).
    threads = {r["conversation_id"] for kind in selected for r in incremental.records(kind)}
    assert changed in threads
    assert len(threads) <= 2
    messages, notes = thread_ids(org, threads)
    if "messages" in selected:
        assert incremental.ids("messages") == messages
        assert thread_ids(org, {changed})[0] <= incremental.ids("messages")
    if "notes" in selected:
        assert incremental.ids("notes") == notes
        assert thread_ids(org, {changed})[1] <= incremental.ids("notes")
