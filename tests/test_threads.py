"""Whole threads, whichever way they are read: per conversation, in bulk, or by cost."""

from __future__ import annotations

import collections
import json
from datetime import timedelta

import pytest
import requests

from tap_kustomer.threads import MESSAGES, ThreadPlanner, planning_view, with_upcoming
from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import run_tap
from tests.test_scenarios import API_KEY, config_for, expected_resolved, settle, thread_ids


def _sandbox(**options):
    with Sandbox(
        SandboxOptions(api_key=API_KEY, org_rpm=100_000, search_rpm=100_000, **options)
    ) as sandbox:
        sandbox.base_url = sandbox.start()
        yield sandbox


@pytest.fixture(scope="module")
def org():
    yield from _sandbox(seed=23, customers=150, conversations=1_500)


def grouped(run, stream: str) -> dict[str, set[str]]:
    threads = collections.defaultdict(set)
    for record in run.records(stream):
        threads[record["conversation_id"]].add(record["id"])
    return dict(threads)


def test_every_strategy_emits_exactly_the_whole_threads(org):
    expected = expected_resolved(org)
    messages, notes = thread_ids(org, expected)
    long_threads = [
        c
        for c in org.truth(["conversations"])["conversations"]
        if c["id"] in expected and c["attributes"]["messageCount"] > 100
    ]
    assert long_threads, "the org must have threads longer than one page"
    runs = {}
    for strategy in ("per_conversation", "bulk", "auto"):
        org.reset_stats()
        run = run_tap(config_for(org, thread_strategy=strategy))
        runs[strategy] = (run, org.stats()["total_requests"])
        assert run.ids("conversations") == expected, strategy
        assert run.ids("messages") == messages, strategy
        assert run.ids("notes") == notes, strategy
        assert len(run.records("messages")) == len(messages), f"{strategy}: a thread repeated"
    per_conversation = runs["per_conversation"][0]
    for strategy in ("bulk", "auto"):
        assert grouped(runs[strategy][0], "messages") == grouped(per_conversation, "messages")
        assert grouped(runs[strategy][0], "notes") == grouped(per_conversation, "notes")
    # A backfill reads threads in bulk: far fewer requests than one per thread.
    assert runs["auto"][1] * 10 < runs["per_conversation"][1]
    assert runs["auto"][1] / len(expected) <= 0.05


def test_threads_are_complete_in_every_emission_of_a_conversation(org):
    backfill = run_tap(config_for(org, thread_strategy="bulk"))
    done = sorted(backfill.ids("conversations"))[:8]
    for cid in done:
        org.reply(cid, body="Reopening 🙃")
        org.resolve(cid)
    settle(org)
    incremental = run_tap(config_for(org), state=backfill.final_state)
    assert set(done) <= incremental.ids("conversations")
    messages, notes = thread_ids(org, incremental.ids("conversations"))
    assert incremental.ids("messages") == messages
    assert incremental.ids("notes") == notes


def test_auto_never_costs_more_than_per_conversation_on_a_small_incremental(org):
    backfill = run_tap(config_for(org))
    org.simulate_activity(hours=3)
    settle(org)
    costs = {}
    outputs = {}
    for strategy in ("per_conversation", "auto"):
        org.reset_stats()
        outputs[strategy] = run_tap(
            config_for(org, thread_strategy=strategy), state=backfill.final_state
        )
        costs[strategy] = org.stats()["total_requests"]
    assert costs["auto"] <= costs["per_conversation"], costs
    assert outputs["auto"].ids("messages") == outputs["per_conversation"].ids("messages")
    assert outputs["auto"].ids("notes") == outputs["per_conversation"].ids("notes")


class SandboxApi:
    """The planner's two request functions, straight against a sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.base = sandbox.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {API_KEY}"

    def search(self, body, page, size):
        response = self.session.post(
            f"{self.base}/v1/customers/search",
            json=body,
            params={"page": page, "pageSize": size},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def request_json(self, method, path, params=None):
        response = self.session.request(method, f"{self.base}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def dense_org():
    """Two months of busy support: each page of 100 resolved conversations spans a day
    or two, while threads live for days (some for a week)."""
    yield from _sandbox(
        seed=5, customers=300, conversations=3_000, months=2, search_max_page_size=100
    )


def _resolved_in_walk_order(sandbox: Sandbox) -> list[dict]:
    conversations = [
        c
        for c in sandbox.truth(["conversations"])["conversations"]
        if c["attributes"]["status"] == "done"
    ]
    conversations.sort(
        key=lambda c: (c["attributes"]["lastDone"]["createdAt"], c["attributes"]["createdAt"])
    )
    return conversations


@pytest.mark.parametrize("strategy", ["bulk", "auto"])
def test_the_bulk_read_keeps_upcoming_threads_and_reads_each_message_about_once(
    dense_org, strategy
):
    resolved = _resolved_in_walk_order(dense_org)
    truth = dense_org.truth(["messages"])["messages"]
    expected = collections.defaultdict(set)
    for message in truth:
        expected[message["relationships"]["conversation"]["data"]["id"]].add(message["id"])
    batches = [resolved[i : i + 100] for i in range(0, len(resolved), 100)]
    assert len(batches) >= 20
    requests_by_lookahead = {}
    for lookahead in (0, 3):
        api = SandboxApi(dense_org)
        planner = ThreadPlanner(
            api.request_json, api.search, want_notes=False, strategy=strategy, workers=1
        )
        for index, batch in enumerate(batches):
            upcoming = [c for later in batches[index + 1 : index + 1 + lookahead] for c in later]
            for conversation, thread in planner.threads(batch, upcoming):
                got = [m["id"] for m in thread.records("messages")]
                assert len(got) == len(set(got))
                assert set(got) == expected.get(conversation["id"], set())
        requests_by_lookahead[lookahead] = planner.stats.requests
        if lookahead:
            assert planner.stats.per_conversation_threads <= len(resolved) // 50
    # Every message the org has, 100 a page: the least any reading could cost.
    floor = -(-len(truth) // 100)
    assert requests_by_lookahead[3] <= 1.3 * floor, (requests_by_lookahead, floor)
    assert requests_by_lookahead[3] * 1.5 < requests_by_lookahead[0], requests_by_lookahead


def test_a_planning_view_plans_like_the_whole_record(org):
    conversations = org.truth(["conversations"])["conversations"][:200]
    views = [planning_view(c) for c in conversations]
    assert len(json.dumps(views)) * 3 < len(json.dumps(conversations))
    assert ThreadPlanner._spans(views) == ThreadPlanner._spans(conversations)
    for view, conversation in zip(views, conversations, strict=True):
        assert view["id"] == conversation["id"]
        for name in ("messageCount", "noteCount"):
            assert view["attributes"][name] == conversation["attributes"][name]


def test_each_page_comes_with_the_conversations_after_it():
    pages = [[{"id": f"c{p}-{i}", "attributes": {}} for i in range(p + 1)] for p in range(8)]
    batches = list(with_upcoming(iter(pages), ahead=5))
    assert [batch for batch, _ in batches] == pages
    for index, (_, upcoming) in enumerate(batches):
        after = [c["id"] for page in pages[index + 1 :] for c in page]
        assert [view["id"] for view in upcoming] == after[: len(upcoming)]
        assert len(upcoming) >= min(5, len(after))


class FakeApi:
    """Search that drops one message of one conversation; lists that have them all."""

    def __init__(self) -> None:
        base = "2025-05-01T10:00:00.000Z"
        self.conversations = [
            {
                "id": f"c{i}",
                "attributes": {
                    "createdAt": base,
                    "updatedAt": "2025-05-01T12:00:00.000Z",
                    "messageCount": 3,
                    "noteCount": 0,
                },
            }
            for i in range(40)
        ]
        self.messages = [
            {
                "id": f"m{i}-{j}",
                "attributes": {
                    "createdAt": f"2025-05-01T1{j}:00:00.00{i % 10}Z",
                    "updatedAt": f"2025-05-01T1{j}:00:00.00{i % 10}Z",
                },
                "relationships": {"conversation": {"data": {"id": f"c{i}"}}},
            }
            for i in range(40)
            for j in range(3)
        ]
        self.lists = 0
        self.searches = 0

    def search(self, body, page, size):
        self.searches += 1
        visible = [m for m in self.messages if m["id"] != "m7-1"]  # index lost one
        data = visible[(page - 1) * size : page * size] if page == 1 else []
        return {"data": data, "meta": {"total": len(visible)}}

    def request_json(self, method, path, params=None):
        self.lists += 1
        cid = path.split("/")[3]
        return {
            "data": [
                m for m in self.messages if m["relationships"]["conversation"]["data"]["id"] == cid
            ],
            "links": {"next": None},
        }


def test_a_bulk_thread_that_does_not_match_its_count_is_read_per_conversation():
    api = FakeApi()
    planner = ThreadPlanner(api.request_json, api.search, want_notes=False, strategy="bulk")
    threads = planner.fetch(api.conversations)
    assert all(len(t.messages) == 3 for t in threads.values())
    assert api.lists == 1, "only the mismatched thread is fetched by itself"
    assert planner.stats.bulk_threads == 39


def test_outliers_created_long_before_the_batch_are_read_per_conversation():
    api = FakeApi()
    api.conversations[0]["attributes"]["createdAt"] = "2024-01-01T00:00:00.000Z"
    planner = ThreadPlanner(api.request_json, api.search, want_notes=False, strategy="bulk")
    start, _, inside = planner._window(  # the window the planner would search
        MESSAGES,
        planner._spans(api.conversations),
        {c["id"]: 1 for c in api.conversations},
    )
    assert "c0" not in inside
    assert start.year == 2025
    assert (start - timedelta(days=1)).year == 2025


def test_read_ahead_keeps_order_and_raises_the_producers_error():
    from tap_kustomer.threads import read_ahead

    assert list(read_ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("search failed")

    pages = read_ahead(broken())
    assert next(pages) == 1
    with pytest.raises(RuntimeError, match="search failed"):
        next(pages)
