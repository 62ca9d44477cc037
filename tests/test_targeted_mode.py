"""Targeted runs: the conversations the webhook queue names, with whole threads, no search."""

from __future__ import annotations

import contextlib
import io
import itertools
import typing as t
from datetime import datetime, timedelta

import pytest

from tap_kustomer import targeted
from tap_kustomer.tap import TapKustomer
from tap_kustomer.targeted import QUEUE_SEQ_KEY, ConversationFetcher
from tap_kustomer.webhooks.queue import QueuedEvent, open_queue
from tests.sandbox import KeySpec
from tests.tap_harness import TapRun, parse_messages, run_cli, run_tap
from tests.truth import config_for, started, thread_ids

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.sandbox import Sandbox

CONVERSATION_FETCH = "GET /v1/conversations/{id}"
SEARCH = "POST /v1/customers/search"
_event_numbers = itertools.count()


@pytest.fixture(scope="module")
def org() -> t.Iterator[Sandbox]:
    sandbox = started(seed=41, customers=40, conversations=160, org_rpm=100_000, search_rpm=100_000)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def queue_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


def enqueue(
    url: str, ids: t.Iterable[str], sandbox: Sandbox, *, at: datetime | None = None
) -> None:
    """One conversation update event per id, as the receiver writes them.

    By default each arrives as the webhook of the conversation's last resolution would,
    30 seconds after it (a conversation not resolved: at the sandbox's now).
    """
    resolved = {
        c["id"]: (c["attributes"].get("lastDone") or {}).get("createdAt")
        for c in sandbox.truth(["conversations"])["conversations"]
    }

    def arrival(cid: str) -> datetime:
        if at is not None:
            return at
        stamp = resolved.get(cid)
        if not stamp:
            return sandbox.now()
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=30)

    queue = open_queue(url)
    try:
        queue.enqueue(
            [
                QueuedEvent(
                    event_id=f"event-{next(_event_numbers)}",
                    event_name="kustomer.conversation.update",
                    conversation_id=cid,
                    received_at=arrival(cid),
                )
                for cid in ids
            ]
        )
    finally:
        queue.close()


def queued_seqs(url: str) -> list[int]:
    queue = open_queue(url)
    try:
        return [entry.seq for entry in queue.pending_after(0, 10_000)]
    finally:
        queue.close()


def conversations_by_status(sandbox: Sandbox) -> tuple[list[str], list[str]]:
    """Ids of done and of not-done conversations, in the org's order."""
    rows = sandbox.truth(["conversations"])["conversations"]
    done = [c["id"] for c in rows if c["attributes"]["status"] == "done"]
    other = [c["id"] for c in rows if c["attributes"]["status"] != "done"]
    return done, other


def seq_of(run: TapRun) -> int | None:
    state = run.final_state or {}
    return (state.get("bookmarks", {}).get("conversations") or {}).get(QUEUE_SEQ_KEY)


def routes(sandbox: Sandbox) -> dict[str, int]:
    return {route: sum(codes.values()) for route, codes in sandbox.stats()["by_route"].items()}


def missing_id(sandbox: Sandbox) -> str:
    """A well-formed conversation id the sandbox does not have (a deleted one)."""
    real = sandbox.truth(["conversations"])["conversations"][0]["id"]
    return real[:16] + "0fffffff"


def test_exactly_the_queued_resolved_conversations_with_whole_threads(org, tmp_path):
    url = queue_url(tmp_path)
    done, other = conversations_by_status(org)
    chosen = done[::17][:6]
    enqueue(url, [*chosen, *other[:2]], org)
    org.reset_stats()
    run = run_tap(config_for(org, webhook_queue=url))
    assert run.ids("conversations") == set(chosen)
    messages, notes = thread_ids(org, set(chosen))
    assert run.ids("messages") == messages
    assert run.ids("notes") == notes
    assert len(run.records("messages")) == len(messages)
    used = routes(org)
    # Conversations come by id, never from search; only their threads may be searched
    # (by conversation or customer ids, whole threads checked against their counts).
    contexts = [
        (entry.get("body") or {}).get("queryContext")
        for entry in org.request_log()
        if entry["route"] == SEARCH
    ]
    assert "conversation" not in contexts, contexts
    assert used.get(SEARCH, 0) <= 2, used
    assert used[CONVERSATION_FETCH] == 1
    # The other streams are left to the scheduled runs.
    for stream in ("customers", "tags", "users", "companies", "kobjects"):
        assert run.records(stream) == [], stream
    bookmark = run.final_state["bookmarks"]["conversations"]
    assert bookmark[QUEUE_SEQ_KEY] == max(queued_seqs(url))
    assert "replication_key_value" not in bookmark
    assert not any("replication_key_value" in b for b in run.final_state["bookmarks"].values())


def test_a_targeted_run_leaves_a_search_bookmark_alone(org, tmp_path):
    url = queue_url(tmp_path)
    done, _ = conversations_by_status(org)
    enqueue(url, done[:3], org)
    state = {
        "bookmarks": {
            "conversations": {
                "replication_key": "resolved_at",
                "replication_key_value": "2001-02-03T04:05:06+00:00",
            }
        }
    }
    run = run_tap(config_for(org, webhook_queue=url), state=state)
    bookmark = run.final_state["bookmarks"]["conversations"]
    assert bookmark["replication_key_value"] == "2001-02-03T04:05:06+00:00"
    assert bookmark[QUEUE_SEQ_KEY] == max(queued_seqs(url))


def test_an_unresolved_conversation_comes_back_once_resolved(org, tmp_path):
    url = queue_url(tmp_path)
    _, other = conversations_by_status(org)
    cid = other[-1]
    enqueue(url, [cid], org)
    first = run_tap(config_for(org, webhook_queue=url))
    assert first.ids("conversations") == set()
    assert seq_of(first) == max(queued_seqs(url))
    org.reply(cid, body="One more thing", direction="out")
    org.add_note(cid, body="Closing")
    org.resolve(cid)
    enqueue(url, [cid], org)
    second = run_tap(config_for(org, webhook_queue=url), state=first.final_state)
    assert second.ids("conversations") == {cid}
    messages, notes = thread_ids(org, {cid})
    assert second.ids("messages") == messages
    assert second.ids("notes") == notes
    # Every row the first state covered is gone; the event of the resolution stays
    # until a run starts from the state that covers it.
    assert queued_seqs(url) == [seq_of(second)]


def test_a_change_long_after_the_resolution_follows_data_mutability(org, tmp_path):
    """A retag of a conversation resolved days ago: skipped by default, like the search
    path skips it; emitted with its whole thread under data_mutability."""
    done, _ = conversations_by_status(org)
    retagged, resolved_now = done[90], done[91]
    tags = [tag["id"] for tag in org.truth(["tags"])["tags"][:1]]
    org.set_tags(retagged, tags)
    org.reply(resolved_now, body="Reopened", direction="in")
    org.resolve(resolved_now)
    for mutable, expected in ((False, {resolved_now}), (True, {retagged, resolved_now})):
        url = f"sqlite:///{tmp_path / f'queue-{mutable}.db'}"
        enqueue(url, [retagged], org, at=org.now())  # the retag's webhook, arriving now
        enqueue(url, [resolved_now], org)  # the webhook of the new resolution
        run = run_tap(config_for(org, webhook_queue=url, data_mutability=mutable))
        assert run.ids("conversations") == expected, mutable
        messages, notes = thread_ids(org, expected)
        assert run.ids("messages") == messages
        assert run.ids("notes") == notes
        assert seq_of(run) == max(queued_seqs(url)), "a skipped conversation is still passed"


def test_with_resolved_only_off_every_queued_conversation_is_emitted(org, tmp_path):
    url = queue_url(tmp_path)
    done, other = conversations_by_status(org)
    enqueue(url, [done[5], other[3]], org)
    run = run_tap(config_for(org, webhook_queue=url, resolved_only=False))
    assert run.ids("conversations") == {done[5], other[3]}


def run_in_process(config: dict[str, t.Any], state: dict[str, t.Any] | None) -> TapRun:
    """A run whose messages survive its failure (the harness drops them)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tap = TapKustomer(config=config, state=state, parse_env_config=False)
        try:
            tap.sync_all()
        except RuntimeError:
            return TapRun(parse_messages(buffer.getvalue()), returncode=1)
    return TapRun(parse_messages(buffer.getvalue()))


def test_a_run_killed_after_its_first_chunk_resumes_without_losing_any(org, tmp_path, monkeypatch):
    url = queue_url(tmp_path)
    done, _ = conversations_by_status(org)
    chosen = done[20:29]
    enqueue(url, chosen, org)
    monkeypatch.setattr(targeted, "QUEUE_CHUNK", 3)
    original = ConversationFetcher.fetch
    calls = itertools.count()

    def failing(self: ConversationFetcher, ids: t.Sequence[str]) -> list[dict[str, t.Any]]:
        if next(calls) == 1:
            raise RuntimeError("killed")
        return original(self, ids)

    config = config_for(org, webhook_queue=url, webhook_batch_size=3)
    with monkeypatch.context() as patch:
        patch.setattr(ConversationFetcher, "fetch", failing)
        killed = run_in_process(config, None)
    assert killed.returncode == 1
    assert killed.ids("conversations") == set(chosen[:3])
    assert seq_of(killed) == queued_seqs(url)[2]
    resumed = run_tap(config, state=killed.final_state)
    assert resumed.ids("conversations") == set(chosen[3:])
    messages, notes = thread_ids(org, set(chosen))
    assert killed.ids("messages") | resumed.ids("messages") == messages
    assert killed.ids("notes") | resumed.ids("notes") == notes


def test_a_state_after_each_chunk_and_no_row_deleted_before_its_state_is_saved(
    org, tmp_path, monkeypatch
):
    url = queue_url(tmp_path)
    done, _ = conversations_by_status(org)
    enqueue(url, done[40:47], org)
    monkeypatch.setattr(targeted, "QUEUE_CHUNK", 2)
    config = config_for(org, webhook_queue=url, webhook_batch_size=2)
    before = queued_seqs(url)
    first = run_tap(config)
    seqs = [s["bookmarks"]["conversations"].get(QUEUE_SEQ_KEY) for s in first.states]
    assert {before[1], before[3], before[5], before[6]} <= set(seqs)
    assert queued_seqs(url) == before  # nothing deleted by the run that read them
    enqueue(url, done[50:52], org)
    later = queued_seqs(url)[-2:]
    second = run_tap(config, state=first.final_state)
    assert second.ids("conversations") == set(done[50:52])
    assert queued_seqs(url) == later  # exactly the rows through the saved seq are gone


def test_conversations_are_fetched_in_batches(org, tmp_path):
    url = queue_url(tmp_path)
    done, _ = conversations_by_status(org)
    enqueue(url, done[60:70], org)
    org.reset_stats()
    run = run_tap(config_for(org, webhook_queue=url, webhook_batch_size=3))
    assert run.ids("conversations") == set(done[60:70])
    assert routes(org)[CONVERSATION_FETCH] == 4


def test_a_smaller_server_limit_halves_the_batch(tmp_path, caplog):
    sandbox = started(seed=42, customers=10, conversations=40, multi_get_max_ids=4)
    try:
        url = queue_url(tmp_path)
        done, _ = conversations_by_status(sandbox)
        enqueue(url, done[:10], sandbox)
        run = run_tap(config_for(sandbox, webhook_queue=url, webhook_batch_size=10))
        assert run.ids("conversations") == set(done[:10])
        statuses = sandbox.stats()["by_route"][CONVERSATION_FETCH]
        assert statuses.get("400") == 2  # 10, then 5 ids refused; then 2 at a time
        assert statuses.get("200") == 5
        assert sum("refused 10 conversation ids" in r.getMessage() for r in caplog.records) == 1
        assert not any("refused 5" in r.getMessage() for r in caplog.records)
    finally:
        sandbox.stop()


def test_a_deleted_conversation_is_skipped_with_a_warning(org, tmp_path, caplog):
    url = queue_url(tmp_path)
    done, _ = conversations_by_status(org)
    gone = missing_id(org)
    enqueue(url, [done[80], gone, done[81], done[82]], org)
    run = run_tap(config_for(org, webhook_queue=url))
    assert run.ids("conversations") == {done[80], done[81], done[82]}
    warnings = [r.getMessage() for r in caplog.records if gone in r.getMessage()]
    assert len(warnings) == 1
    assert "no longer has it" in warnings[0]
    assert seq_of(run) == max(queued_seqs(url))


def test_an_unopenable_queue_is_one_line_without_its_password(org, tmp_path):
    missing_dir = f"sqlite:///{tmp_path / 'nowhere' / 'queue.db'}"
    run = run_cli([], config=config_for(org, webhook_queue=missing_dir), tmp_path=tmp_path)
    assert run.returncode != 0
    assert "does not exist" in run.stderr
    assert "Traceback" not in run.stderr
    password = "hunter2-very-secret"
    unreachable = f"postgresql://reader:{password}@127.0.0.1:9/queue"
    run = run_cli([], config=config_for(org, webhook_queue=unreachable), tmp_path=tmp_path)
    assert run.returncode != 0
    assert "queue" in run.stderr
    assert password not in run.stderr
    assert "Traceback" not in run.stderr


def test_a_postgresql_queue(org, postgres):
    done, _ = conversations_by_status(org)
    chosen = done[90:94]
    url = postgres.url
    queue = open_queue(url)
    try:
        queue.delete_through(queue.max_seq() or 0)
    finally:
        queue.close()
    enqueue(url, chosen, org)
    run = run_tap(config_for(org, webhook_queue=url))
    assert run.ids("conversations") == set(chosen)
    assert seq_of(run) == max(queued_seqs(url))


def test_a_key_without_the_search_role_still_gets_whole_threads(tmp_path):
    """Searching threads by id is only a saving: refused, every thread is listed."""
    sandbox = started(
        seed=43, customers=10, conversations=40, extra_keys={"no-search": KeySpec.without("search")}
    )
    try:
        url = queue_url(tmp_path)
        done, _ = conversations_by_status(sandbox)
        enqueue(url, done[:6], sandbox)
        run = run_tap({**config_for(sandbox, webhook_queue=url), "api_key": "no-search"})
        assert run.ids("conversations") == set(done[:6])
        messages, notes = thread_ids(sandbox, set(done[:6]))
        assert run.ids("messages") == messages
        assert run.ids("notes") == notes
        refused = sandbox.stats()["by_route"][SEARCH]
        assert set(refused) == {"403"}, refused  # tried once per kind, then lists only
    finally:
        sandbox.stop()
