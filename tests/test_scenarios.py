"""The tap's promises, each proven against the sandbox's ground truth, ids exactly.

Cap, ties, moving data, index lag, incremental runs, and state (progress, resume,
bookmarks that never pass an unemitted record).
"""

from __future__ import annotations

import signal
import time

import pytest

from tap_kustomer.search import parse_timestamp
from tap_kustomer.streams import ConversationsStream
from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import parse_messages, run_tap, spawn_tap
from tests.truth import (
    API_KEY,
    config_for,
    expected_resolved,
    settle,
    thread_ids,
    window_end,
)


def start(sandbox: Sandbox) -> Sandbox:
    sandbox.base_url = sandbox.start()  # type: ignore[attr-defined]
    return sandbox


@pytest.fixture(scope="module")
def org():
    sandbox = start(
        Sandbox(SandboxOptions(seed=11, api_key=API_KEY, customers=80, conversations=400))
    )
    yield sandbox
    sandbox.stop()


# 1. The search cap.


def test_more_than_ten_thousand_resolved_conversations_are_all_walked():
    with Sandbox(
        SandboxOptions(seed=5, api_key=API_KEY, customers=50, conversations=13_500, months=6)
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        expected = expected_resolved(sandbox)
        assert len(expected) > 10_000, "the org must exceed the search cap"
        run = run_tap(config_for(sandbox), select=["conversations"])
        assert run.ids("conversations") == expected
        assert len(run.records("conversations")) == len(expected)
        searches = sandbox.stats()["by_route"]
        assert not any(key.endswith(" 400") for key in map(str, searches)), searches


# 2. Ties.


@pytest.mark.parametrize("kind", ["resolve", "import"])
def test_thousands_sharing_one_timestamp_are_all_emitted(kind: str):
    with Sandbox(
        SandboxOptions(
            seed=9,
            api_key=API_KEY,
            customers=2_600,
            conversations=300,
            tie_clusters=[(kind, 2_500), ("customers", 1_800)],
        )
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        expected = expected_resolved(sandbox)
        cluster = next(c for c in sandbox.tie_cluster_times() if c["kind"] == kind)
        run = run_tap(config_for(sandbox), select=["conversations", "customers"])
        assert run.ids("conversations") == expected
        at_tie = [r for r in run.records("conversations") if r["resolved_at"] == cluster["at"]]
        assert len(at_tie) >= 2_500
        customers = set(sandbox.updated_ids("customers", until=window_end(sandbox)))
        assert run.ids("customers") == customers


# 3. Moving data.


def test_changes_while_paging_do_not_push_records_out(monkeypatch):
    with Sandbox(
        SandboxOptions(seed=21, api_key=API_KEY, customers=60, conversations=2_400)
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        before = expected_resolved(sandbox)
        ordered = sorted(before)
        moved: set[str] = set()
        original = ConversationsStream.search

        def search_and_meddle(self, body, page, page_size):
            # Between every two pages: reopen some, re-resolve some, retag some.
            for cid in ordered[len(moved) * 3 % len(ordered) :][:6]:
                if cid in moved:
                    continue
                moved.add(cid)
                sandbox.reply(cid, body="one more thing")
                if len(moved) % 2:
                    sandbox.resolve(cid)
            for cid in ordered[-(len(moved) + 3) : -len(moved) or None][:3]:
                sandbox.set_tags(cid, [])
            return original(self, body, page, page_size)

        monkeypatch.setattr(ConversationsStream, "search", search_and_meddle)
        run = run_tap(config_for(sandbox), select=["conversations"])
        emitted = run.ids("conversations")
        untouched = before - moved
        assert untouched <= emitted, f"{len(untouched - emitted)} unmoved conversations lost"
        # Moved ones re-resolved during the run are caught by the next run.
        monkeypatch.setattr(ConversationsStream, "search", original)
        settle(sandbox)
        second = run_tap(config_for(sandbox), state=run.final_state, select=["conversations"])
        still_resolved = expected_resolved(sandbox)
        assert still_resolved <= emitted | second.ids("conversations")


# 4. Index lag.


def test_late_indexed_records_are_not_lost():
    with Sandbox(
        SandboxOptions(
            seed=33, api_key=API_KEY, customers=40, conversations=200, index_lag_seconds=240
        )
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        first = run_tap(config_for(sandbox))
        open_ids = [
            c["id"]
            for c in sandbox.truth(["conversations"])["conversations"]
            if c["attributes"]["status"] != "done"
        ]
        # Resolved a few minutes apart; the search index shows them only 4 minutes later.
        late = open_ids[:5]
        for cid in late:
            sandbox.resolve(cid)
            sandbox.advance_clock(90)
        new_customer = sandbox.add_customer(name="Late Índex 🚀")["id"]
        second = run_tap(config_for(sandbox), state=first.final_state)
        assert not set(late) & second.ids("conversations")  # not yet settled
        settle(sandbox)
        third = run_tap(config_for(sandbox), state=second.final_state)
        assert set(late) <= third.ids("conversations")
        assert new_customer in second.ids("customers") | third.ids("customers")
        # Nothing resolved in reach was ever skipped over the three runs.
        everything = (
            first.ids("conversations") | second.ids("conversations") | third.ids("conversations")
        )
        assert expected_resolved(sandbox) <= everything


# 5. Incremental runs.


@pytest.mark.parametrize("mutability", [False, True])
def test_next_run_emits_exactly_what_changed(mutability: bool):
    with Sandbox(
        SandboxOptions(seed=42, api_key=API_KEY, customers=80, conversations=400)
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        config = config_for(sandbox, data_mutability=mutability)
        backfill = run_tap(config)
        assert backfill.ids("conversations") == expected_resolved(sandbox)
        conversations = sandbox.truth(["conversations"])["conversations"]
        done = sorted(c["id"] for c in conversations if c["attributes"]["status"] == "done")
        still_open = sorted(c["id"] for c in conversations if c["attributes"]["status"] != "done")
        reopened, retagged, customers = done[:6], done[10:14], sandbox.truth(["customers"])
        replies = {}
        for cid in reopened:
            replies[cid] = sandbox.reply(cid, body="Actually, it broke again 😬")["id"]
        re_resolved = reopened[:3]
        for cid in re_resolved:
            sandbox.resolve(cid)
        for cid in retagged:
            sandbox.set_tags(cid, [t["id"] for t in sandbox.truth(["tags"])["tags"][:2]])
        newly_resolved = still_open[:4]
        for cid in newly_resolved:
            sandbox.resolve(cid)
        new_customer = sandbox.add_customer(name="Zoë Nouveau")["id"]
        updated_customer = customers["customers"][0]["id"]
        sandbox.update_customer(updated_customer, locale="fr_FR")
        settle(sandbox)

        incremental = run_tap(config, state=backfill.final_state)
        emitted = incremental.ids("conversations")
        changed = set(re_resolved) | set(newly_resolved)
        boundary = {
            r["id"]
            for r in backfill.records("conversations")
            if r[("updated_at" if mutability else "resolved_at")]
            == backfill.bookmark("conversations")
        }
        expected = changed | (set(retagged) if mutability else set())
        assert expected <= emitted
        assert emitted - expected <= boundary, "only boundary records may repeat"
        assert not set(reopened[3:]) & emitted, "still-open conversations must not be emitted"
        if not mutability:
            assert not set(retagged) & emitted
        # Whole threads, the new reply included.
        messages, notes = thread_ids(sandbox, emitted)
        assert incremental.ids("messages") == messages
        assert incremental.ids("notes") == notes
        for cid in re_resolved:
            assert replies[cid] in incremental.ids("messages")
        re_resolved_records = {r["id"]: r for r in incremental.records("conversations")}
        for cid in re_resolved:
            record = re_resolved_records[cid]
            assert parse_timestamp(record["resolved_at"]) > parse_timestamp(
                backfill.bookmark("conversations") or "2000-01-01"
            )
        # Customers: exactly the new and the updated ones (plus the boundary one).
        customer_boundary = {
            r["id"]
            for r in backfill.records("customers")
            if r["updated_at"] == backfill.bookmark("customers")
        }
        assert {new_customer, updated_customer} <= incremental.ids("customers")
        assert incremental.ids("customers") - {new_customer, updated_customer} <= (
            customer_boundary
        )


# 6. State.


def _count_records(path, stream: str) -> int:
    marker = f'"stream":"{stream}"'
    return sum(
        1
        for line in path.read_text().splitlines()
        if '"RECORD"' in line and marker in line.replace(" ", "")
    )


def test_state_is_emitted_as_the_run_progresses_and_never_passes_an_unemitted_record(org):
    run = run_tap(config_for(org))
    conversation_states = [
        s["bookmarks"]["conversations"].get("replication_key_value")
        for s in run.states
        if "conversations" in s.get("bookmarks", {})
    ]
    progress = [v for v in conversation_states if v]
    assert len(set(progress)) >= 3, "STATE must be emitted while conversations are walked"
    expected = sorted(
        (
            r
            for r in org.truth(["conversations"])["conversations"]
            if r["id"] in expected_resolved(org)
        ),
        key=lambda r: r["attributes"]["lastDone"]["createdAt"],
    )
    emitted: set[str] = set()
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "conversations":
            emitted.add(message["record"]["id"])
        if message["type"] == "STATE":
            bookmark = (message["value"]["bookmarks"].get("conversations") or {}).get(
                "replication_key_value"
            )
            if not bookmark:
                continue
            behind = {
                r["id"]
                for r in expected
                if parse_timestamp(r["attributes"]["lastDone"]["createdAt"])
                < parse_timestamp(bookmark)
            }
            assert behind <= emitted, "a bookmark moved past a record not yet emitted"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_an_interrupted_run_resumes_from_its_last_state_without_loss(tmp_path, sig):
    with Sandbox(
        SandboxOptions(
            seed=8, api_key=API_KEY, customers=300, conversations=800, latency_ms=2, org_rpm=50_000
        )
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        config = config_for(sandbox)
        out_path = tmp_path / "out.jsonl"
        with out_path.open("w") as out:
            process = spawn_tap(config, tmp_path, out)
            deadline = time.time() + 60
            while time.time() < deadline and _count_records(out_path, "conversations") < 200:
                time.sleep(0.05)
            process.send_signal(sig)
            process.wait(timeout=30)
        # Stopped, not finished: an orchestrator must not count the run as a success.
        assert process.returncode == (128 + sig if sig == signal.SIGTERM else -sig)
        first = parse_messages(out_path.read_text())
        states = [m["value"] for m in first if m["type"] == "STATE"]
        assert states, "no STATE before the interruption"
        first_ids = {
            m["record"]["id"]
            for m in first
            if m["type"] == "RECORD" and m["stream"] == "conversations"
        }
        expected = expected_resolved(sandbox)
        assert first_ids < expected, "the run must have been interrupted mid-way"
        resumed = run_tap(config, state=states[-1])
        assert expected <= first_ids | resumed.ids("conversations")
        messages, notes = thread_ids(sandbox, resumed.ids("conversations"))
        assert resumed.ids("messages") == messages
        assert resumed.ids("notes") == notes


def test_switching_data_mutability_continues_from_the_bookmark(org):
    backfill = run_tap(config_for(org))
    assert backfill.ids("conversations")
    retagged = sorted(backfill.ids("conversations"))[:3]
    for cid in retagged:
        org.set_tags(cid, [])
    settle(org)
    switched = run_tap(config_for(org, data_mutability=True), state=backfill.final_state)
    emitted = switched.ids("conversations")
    assert set(retagged) <= emitted
    assert len(emitted) < len(backfill.ids("conversations")) / 2, "no restart from start_date"
    assert switched.final_state["bookmarks"]["conversations"]["replication_key"] == "updated_at"
    back = run_tap(config_for(org), state=switched.final_state)
    assert back.final_state["bookmarks"]["conversations"]["replication_key"] == "resolved_at"
    assert len(back.ids("conversations")) < len(backfill.ids("conversations")) / 2
