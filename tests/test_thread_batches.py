"""Threads of known conversations read by searching their ids, a group at a time.

Notes are searched by ``note_conversation_id``, messages by ``message_customer_id``
(20 ids to a search); a thread the search leaves short is listed on its own.
"""

from __future__ import annotations

import collections

import pytest

from tap_kustomer.search import parse_timestamp
from tap_kustomer.threads import MESSAGES, NOTES, ThreadPlanner
from tap_kustomer.threads.batched import GROUP_KEYS, IdBatchReader
from tap_kustomer.threads.cost import pages_for
from tests.sandbox import Sandbox
from tests.tap_harness import run_tap
from tests.test_threads import SandboxApi
from tests.truth import config_for, settle, started, thread_ids

SEARCH = "POST /v1/customers/search"
LIST_MESSAGES = "GET /v1/conversations/{id}/messages"
LIST_NOTES = "GET /v1/conversations/{id}/notes"


@pytest.fixture
def org():
    """A fresh org per test: the tests change threads."""
    sandbox = started(seed=7, customers=100, conversations=600, org_rpm=100_000, search_rpm=100_000)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def conversations_of(sandbox: Sandbox) -> dict[str, dict]:
    return {c["id"]: c for c in sandbox.truth(["conversations"])["conversations"]}


def customer(conversation: dict) -> str:
    return conversation["relationships"]["customer"]["data"]["id"]


def created(record: dict):
    return parse_timestamp(record["attributes"]["createdAt"])


def truth_threads(sandbox: Sandbox, kind: str) -> dict[str, set[str]]:
    threads = collections.defaultdict(set)
    for item in sandbox.truth([kind])[kind]:
        threads[item["relationships"]["conversation"]["data"]["id"]].add(item["id"])
    return threads


def newest_of_distinct_customers(
    sandbox: Sandbox, count: int, avoid: set[str] = frozenset()
) -> list[dict]:
    """The ``count`` newest resolved conversations with notes, one per customer."""
    chosen: dict[str, dict] = {}
    resolved = [
        c
        for c in conversations_of(sandbox).values()
        if c["attributes"]["status"] == "done"
        and c["attributes"]["noteCount"] > 0
        and customer(c) not in avoid
    ]
    for conversation in sorted(resolved, key=created, reverse=True):
        chosen.setdefault(customer(conversation), conversation)
        if len(chosen) == count:
            break
    return list(chosen.values())


def read(sandbox: Sandbox, batch: list[dict], strategy: str = "auto") -> ThreadPlanner:
    """Read the batch's threads; check each equals the sandbox's truth."""
    api = SandboxApi(sandbox)
    planner = ThreadPlanner(
        api.request_json, api.search, kinds=(MESSAGES, NOTES), strategy=strategy, workers=1
    )
    messages, notes = truth_threads(sandbox, "messages"), truth_threads(sandbox, "notes")
    for conversation, thread in planner.threads(batch):
        cid = conversation["id"]
        got = [m["id"] for m in thread.records("messages")]
        assert len(got) == len(set(got)), cid
        assert set(got) == messages.get(cid, set()), cid
        assert {n["id"] for n in thread.records("notes")} == notes.get(cid, set()), cid
    return planner


def searches_in_log(sandbox: Sandbox) -> list[dict]:
    return [entry["body"] for entry in sandbox.request_log() if entry["route"] == SEARCH]


def test_twenty_conversations_of_twenty_customers_take_one_search_per_kind(org):
    batch = newest_of_distinct_customers(org, GROUP_KEYS)
    # The customers' messages since the oldest of these conversations fit one page.
    since = min(created(c) for c in batch)
    customers = {customer(c) for c in batch}
    assert len(customers) == GROUP_KEYS
    wanted = [
        m
        for m in org.truth(["messages"])["messages"]
        if m["relationships"]["customer"]["data"]["id"] in customers and created(m) >= since
    ]
    assert len(wanted) <= 500
    org.reset_stats()
    planner = read(org, batch)
    assert planner.stats.searches == {"by id messages": 1, "by id notes": 1}
    assert planner.stats.list_requests == {}
    with_messages = sum(1 for c in batch if c["attributes"]["messageCount"])
    assert planner.stats.searched_threads == {"by id messages": with_messages, "by id notes": 20}
    assert org.stats()["total_requests"] == 2
    bodies = searches_in_log(org)
    by_context = {body["queryContext"]: body for body in bodies}
    assert {next(iter(c)) for c in by_context["note"]["or"]} == {"note_conversation_id"}
    assert len(by_context["note"]["or"]) == GROUP_KEYS
    searched = {c["message_customer_id"]["equals"] for c in by_context["message"]["or"]}
    assert searched == {customer(c) for c in batch if c["attributes"]["messageCount"]}


def test_a_handful_of_threads_is_still_listed(org):
    batch = newest_of_distinct_customers(org, 1)
    planner = read(org, batch)
    assert planner.stats.searches == {}
    assert planner.stats.list_requests == {"messages": 1, "notes": 1}


def test_the_per_conversation_and_bulk_strategies_never_search_by_id(org):
    batch = newest_of_distinct_customers(org, GROUP_KEYS)
    assert read(org, batch, "per_conversation").stats.searches == {}
    assert set(read(org, batch, "bulk").stats.searches) <= {"window messages", "window notes"}
    batched = read(org, batch, "batched").stats
    assert batched.searches == {"by id messages": 1, "by id notes": 1}


def test_a_customer_with_many_other_messages_has_the_thread_listed(org):
    batch = newest_of_distinct_customers(org, 5)
    heavy = batch[0]
    # Hundreds of the customer's messages come after the thread began, and then its
    # latest reply: the search's pages would hold far more than the one thread.
    org.add_conversation(customer(heavy), status="done", messages=700)
    org.reply(heavy["id"], body="One more thing", direction="out")
    fresh = conversations_of(org)
    batch = [fresh[c["id"]] for c in batch]
    org.reset_stats()
    planner = read(org, batch)
    # One page showed the search would take two more than the listing: it stopped.
    assert planner.stats.searches["by id messages"] == 1
    assert planner.stats.list_requests.get("messages") == 1
    listed = [e["path"] for e in org.request_log() if e["route"] == LIST_MESSAGES]
    assert len(listed) == 1
    assert heavy["id"] in listed[0]
    # The reader learnt how many other messages customers have: a like group is
    # priced above its listing and listed without a search.
    reader = IdBatchReader(MESSAGES, SandboxApi(org).search)
    reader.spill.observe(found=7_000, expected=100)
    counts = [c["attributes"]["messageCount"] for c in batch]
    assert reader.estimate(batch) == sum(pages_for(n) for n in counts if n)


def test_a_thread_the_search_index_has_not_caught_up_with_is_listed_alone(org):
    batch = newest_of_distinct_customers(org, 10)
    lagging = batch[3]
    org.set_option("index_lag_seconds", 3_600)
    try:
        org.reply(lagging["id"], body="Still there?", direction="out")
        org.add_note(batch[5]["id"], body="Checked with the warehouse")
        fresh = conversations_of(org)
        batch = [fresh[c["id"]] for c in batch]
        org.reset_stats()
        planner = read(org, batch)
    finally:
        org.set_option("index_lag_seconds", 0.0)
    assert planner.stats.searches == {"by id messages": 1, "by id notes": 1}
    assert planner.stats.list_requests == {"messages": 1, "notes": 1}
    routes = collections.Counter(e["route"] for e in org.request_log())
    assert routes == {SEARCH: 2, LIST_MESSAGES: 1, LIST_NOTES: 1}
    paths = [e["path"] for e in org.request_log() if e["route"] != SEARCH]
    assert any(lagging["id"] in p and "/messages" in p for p in paths)
    assert any(batch[5]["id"] in p and "/notes" in p for p in paths)


def test_an_incremental_run_reads_the_resolved_threads_with_a_few_searches():
    sandbox = started(
        seed=11, customers=150, conversations=1_500, org_rpm=100_000, search_rpm=100_000
    )
    try:
        # Past the end of the generated data, so the backfill reads all of it.
        sandbox.advance_clock(3_600)
        backfill = run_tap(config_for(sandbox))
        newest = newest_of_distinct_customers(sandbox, 12)
        for conversation in newest:
            sandbox.reply(conversation["id"], body="Reopening with a question")
            sandbox.add_note(conversation["id"], body="Answered by phone")
            sandbox.resolve(conversation["id"])
        settle(sandbox)
        changed = {c["id"] for c in newest}
        now = conversations_of(sandbox)
        message_counts = [now[cid]["attributes"]["messageCount"] for cid in changed]
        costs = {}
        for strategy in ("per_conversation", "auto"):
            sandbox.reset_stats()
            run = run_tap(config_for(sandbox, thread_strategy=strategy), state=backfill.final_state)
            costs[strategy] = sandbox.stats()["by_route"]
            assert run.ids("conversations") == changed, strategy
            messages, notes = thread_ids(sandbox, changed)
            assert run.ids("messages") == messages, strategy
            assert run.ids("notes") == notes, strategy
            assert len(run.records("messages")) == len(messages), strategy
    finally:
        sandbox.stop()

    def counts(by_route: dict) -> dict[str, int]:
        return {route: sum(statuses.values()) for route, statuses in by_route.items()}

    auto, listed = counts(costs["auto"]), counts(costs["per_conversation"])
    # Per conversation: a list per page of each thread.
    assert listed.get(LIST_MESSAGES) == sum(pages_for(n) for n in message_counts)
    assert listed.get(LIST_NOTES) == 12
    # By id: one search per kind on top of the conversations walk, and no list.
    assert LIST_MESSAGES not in auto
    assert LIST_NOTES not in auto
    assert auto[SEARCH] == listed[SEARCH] + 2
    assert (
        sum(auto.values())
        == sum(listed.values()) - sum(pages_for(n) for n in message_counts) - 12 + 2
    )


class FakeSearch:
    """Notes found by ``note_conversation_id``, oldest first, paged by number."""

    def __init__(self, notes: list[dict]) -> None:
        self.notes = notes
        self.asked: list[tuple[int, int]] = []

    def __call__(self, body: dict, page: int, size: int) -> dict:
        wanted = {c["note_conversation_id"]["equals"] for c in body["or"]}
        self.asked.append((len(body["or"]), page))
        hits = [n for n in self.notes if n["relationships"]["conversation"]["data"]["id"] in wanted]
        return {
            "data": hits[(page - 1) * size : page * size],
            "meta": {"total": len(hits), "totalPages": -(-len(hits) // size), "page": page},
        }


def note(cid: str, number: int) -> dict:
    return {
        "id": f"{cid}-{number}",
        "attributes": {"createdAt": f"2026-01-01T00:00:{number % 60:02d}.000Z"},
        "relationships": {"conversation": {"data": {"type": "conversation", "id": cid}}},
    }


def with_notes(cid: str, count: int) -> dict:
    attributes = {"createdAt": "2026-01-01T00:00:00.000Z", "noteCount": count}
    return {"id": cid, "attributes": attributes}


def test_groups_hold_twenty_ids_and_threads_too_long_for_a_few_pages_are_listed():
    conversations = [with_notes(f"c{i}", 2) for i in range(45)]
    conversations.append(with_notes("long", 2_500))
    notes = [note(c["id"], n) for c in conversations for n in range(2)]
    search = FakeSearch(notes)
    result = IdBatchReader(NOTES, search, strategy="auto").read(conversations)
    assert search.asked == [(20, 1), (20, 1), (5, 1)]
    assert set(result.accepted) == {f"c{i}" for i in range(45)}
    assert result.leftover == ["long"]


def test_a_short_thread_is_left_over_alone():
    conversations = [with_notes(f"c{i}", 2) for i in range(10)]
    notes = [note(c["id"], n) for c in conversations for n in range(2) if (c["id"], n) != ("c4", 1)]
    result = IdBatchReader(NOTES, FakeSearch(notes), strategy="auto").read(conversations)
    assert result.leftover == ["c4"]
    assert len(result.accepted) == 9
    assert all(len(items) == 2 for items in result.accepted.values())
