"""Whole threads, whichever way they are read: per conversation, in bulk, or by cost."""

from __future__ import annotations

import collections
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import parse_qsl

import pytest
import requests

from tap_kustomer.errors import UnexpectedResponseError
from tap_kustomer.pagination import NextLinkPaginator, next_page
from tap_kustomer.threads import (
    MESSAGES,
    NOTES,
    ThreadPlanner,
    planning_view,
    read_ahead,
    with_upcoming,
)
from tap_kustomer.threads.bulk import BulkReader
from tap_kustomer.threads.cost import choose_window, lifetimes, pages_for, skip_pays
from tap_kustomer.threads.lister import ThreadLister
from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import run_tap
from tests.truth import API_KEY, config_for, expected_resolved, settle, thread_ids

ARCHIVE_SEARCH = "POST /v1/customers/archive/search"


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
        # The archive search of the part of history before the two-year horizon (one per
        # searched stream: start_date is far back) is not about threads.
        archive = sum(org.stats()["by_route"].get(ARCHIVE_SEARCH, {}).values())
        assert archive <= 4, archive
        runs[strategy] = (run, org.stats()["total_requests"] - archive)
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
            api.request_json, api.search, kinds=(MESSAGES,), strategy=strategy, workers=1
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
    assert lifetimes(views) == lifetimes(conversations)
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
    planner = ThreadPlanner(api.request_json, api.search, kinds=(MESSAGES,), strategy="bulk")
    threads = planner.fetch(api.conversations)
    assert all(len(t.messages) == 3 for t in threads.values())
    assert api.lists == 1, "only the mismatched thread is fetched by itself"
    assert planner.stats.bulk_threads == 39


def test_outliers_created_long_before_the_batch_are_read_per_conversation():
    api = FakeApi()
    api.conversations[0]["attributes"]["createdAt"] = "2024-01-01T00:00:00.000Z"
    window = choose_window(  # the window a fresh planner would search
        lifetimes(api.conversations), {c["id"]: 1 for c in api.conversations}, rate=None
    )
    assert "c0" not in window.inside
    assert window.start.year == 2025
    assert (window.start - timedelta(days=1)).year == 2025


def test_read_ahead_keeps_order_and_raises_the_producers_error():
    assert list(read_ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("search failed")

    pages = read_ahead(broken())
    assert next(pages) == 1
    with pytest.raises(RuntimeError, match="search failed"):
        next(pages)


# The parts, one by one.


def test_next_page_follows_host_relative_links_with_their_query():
    body = {"data": [{"id": "a"}], "links": {"next": "/v1/tags?page=2&pageSize=100&deleted=true"}}
    assert next_page(body) == ("/v1/tags", {"page": "2", "pageSize": "100", "deleted": "true"})
    absolute = {"data": [{}], "links": {"next": "https://x.example/v1/tags?page=3"}}
    assert next_page(absolute) == ("/v1/tags", {"page": "3"})
    assert next_page({"data": [{}], "links": {"next": "?page=4&q=a%20b"}}) == (
        "",
        {"page": "4", "q": "a b"},
    )
    assert next_page({"data": [{}], "links": {"next": {"href": "/v1/x?page=5"}}}) == (
        "/v1/x",
        {"page": "5"},
    )


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"id": "a"}]},
        {"data": [{"id": "a"}], "links": None},
        {"data": [{"id": "a"}], "links": {}},
        {"data": [{"id": "a"}], "links": {"next": None}},
        {"data": [{"id": "a"}], "links": {"next": ""}},
        {"data": [], "links": {"next": "/v1/tags?page=2"}},
        {"links": {"next": "/v1/tags?page=2"}},
        {"data": None, "links": {"next": "/v1/tags?page=2"}},
    ],
)
def test_next_page_ends_without_a_link_or_without_data(body):
    assert next_page(body) is None


def _response(url: str, body: dict) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(body).encode()
    response.request = requests.Request("GET", url).prepare()
    return response


def test_the_paginator_follows_next_links_and_rejects_a_loop():
    paginator = NextLinkPaginator()
    first = {"data": [{"id": "t1"}], "links": {"next": "/v1/tags?page=2&pageSize=100"}}
    paginator.advance(_response("http://api.test/v1/tags?page=1&pageSize=100", first))
    assert paginator.current_value is not None
    assert paginator.current_value.path == "/v1/tags"
    assert dict(parse_qsl(paginator.current_value.query)) == {"page": "2", "pageSize": "100"}
    back = {"data": [{"id": "t2"}], "links": {"next": "/v1/tags?pageSize=100&page=1"}}
    with pytest.raises(UnexpectedResponseError, match="links back"):
        paginator.advance(_response("http://api.test/v1/tags?page=2&pageSize=100", back))
    last = NextLinkPaginator()
    last.advance(_response("http://api.test/v1/tags", {"data": [], "links": {"next": "/v1/x"}}))
    assert last.finished


class FakeLists:
    """A list endpoint that serves prepared pages by page number."""

    def __init__(self, pages: dict[str, dict]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, dict]] = []

    def request_json(self, method, path, params=None):
        assert method == "GET"
        self.calls.append((path, dict(params or {})))
        return self.pages[str((params or {}).get("page"))]


def _item(i: int) -> dict:
    return {"id": f"m{i}", "attributes": {}}


def test_the_lister_follows_pages_and_keeps_each_item_once():
    path = "/v1/conversations/c1/messages"
    lists = FakeLists(
        {
            "1": {"data": [_item(1), _item(2)], "links": {"next": f"{path}?page=2&pageSize=100"}},
            "2": {"data": [_item(2), _item(3)], "links": {"next": f"{path}?page=3&pageSize=100"}},
            "3": {"data": [_item(4)], "links": {"next": None}},
        }
    )
    items = ThreadLister(lists.request_json).thread("c1", MESSAGES)
    assert [i["id"] for i in items] == ["m1", "m2", "m3", "m4"]
    assert lists.calls == [
        (path, {"page": 1, "pageSize": 100}),
        (path, {"page": "2", "pageSize": "100"}),
        (path, {"page": "3", "pageSize": "100"}),
    ]


def test_the_lister_fails_on_a_repeated_link_a_missing_list_or_an_endless_one():
    path = "/v1/conversations/c1/notes"
    looping = FakeLists(
        {
            "1": {"data": [_item(1)], "links": {"next": f"{path}?page=2&pageSize=100"}},
            "2": {"data": [_item(2)], "links": {"next": f"{path}?page=1&pageSize=100"}},
        }
    )
    with pytest.raises(UnexpectedResponseError, match="links back"):
        ThreadLister(looping.request_json).thread("c1", NOTES)
    assert len(looping.calls) == 2, "a loop is caught before asking again"
    no_list = FakeLists({"1": {"data": {"id": "m1"}, "links": {"next": None}}})
    with pytest.raises(UnexpectedResponseError, match="no 'data' list"):
        ThreadLister(no_list.request_json).thread("c1", NOTES)
    endless = FakeLists(
        {
            str(n): {"data": [_item(n)], "links": {"next": f"{path}?page={n + 1}"}}
            for n in range(1, 10)
        }
    )
    with pytest.raises(UnexpectedResponseError, match="did not end after 5 pages") as raised:
        ThreadLister(endless.request_json, max_pages=5).thread("c1", NOTES)
    assert "\n" not in str(raised.value)
    assert len(endless.calls) == 5


def _conversation(cid: str, created: str, last: str, messages: int) -> dict:
    return {
        "id": cid,
        "attributes": {"createdAt": created, "updatedAt": last, "messageCount": messages},
    }


def test_the_cost_model_leaves_out_an_outlier_unless_listing_it_costs_more():
    batch = [
        _conversation("old", "2025-01-01T00:00:00Z", "2025-03-01T01:00:00Z", 2),
        _conversation("a", "2025-03-01T00:00:00Z", "2025-03-01T02:00:00Z", 2),
        _conversation("b", "2025-03-01T00:30:00Z", "2025-03-01T03:00:00Z", 2),
        _conversation("c", "2025-03-01T01:00:00Z", "2025-03-01T04:00:00Z", 2),
    ]
    spans = lifetimes(batch)
    assert set(spans) == {"old", "a", "b", "c"}
    assert spans["old"][1].isoformat() == "2025-03-01T01:00:00+00:00"
    rate = 0.1  # items per second: two months hold ~520,000 of them, ~1,000 search pages
    cheap = choose_window(spans, dict.fromkeys(spans, 1), rate)
    assert cheap.inside == {"a", "b", "c"}
    assert cheap.start == spans["a"][0]
    assert cheap.end > spans["c"][1]
    dear = choose_window(spans, {**dict.fromkeys(spans, 1), "old": 5_000}, rate)
    assert dear.inside == {"old", "a", "b", "c"}
    assert dear.start == spans["old"][0]
    assert pages_for(None) == 1
    assert pages_for(100) == 1
    assert pages_for(101) == 2
    later = [spans["a"]]
    # Jumping a day at 0.1/s spares ~17 search pages but loses what was held for "a".
    assert skip_pays(rate, spans["old"][0], spans["old"][0] + timedelta(days=1), later)
    assert not skip_pays(None, spans["old"][0], spans["c"][0], later)


def test_the_bulk_reader_returns_the_threads_it_completed_and_changes_no_input():
    api = FakeApi()
    batch = api.conversations[:30]
    upcoming = [planning_view(c) for c in api.conversations[30:]]
    before = json.dumps([batch, upcoming])
    reader = BulkReader(MESSAGES, api.search, strategy="bulk")
    result = reader.read(batch, upcoming)
    assert json.dumps([batch, upcoming]) == before
    assert result.leftover == ["c7"], "the thread the search missed one message of"
    assert set(result.accepted) == {f"c{i}" for i in range(30)} - {"c7"}
    assert [json.loads(m)["id"] for m in result.accepted["c3"]] == ["m3-0", "m3-1", "m3-2"]
    assert set(reader.coverage.held) == {f"c{i}" for i in range(30, 40)}, "only upcoming held"
    later = reader.read(api.conversations[30:], [])
    assert set(later.accepted) == {f"c{i}" for i in range(30, 40)}
    assert api.searches == 1, "the upcoming threads were held by the first read"
    assert reader.coverage.held == {}


def test_with_upcoming_ahead_zero_releases_each_page_at_once():
    pulled = []

    def pages():
        for n in range(3):
            pulled.append(n)
            yield [{"id": f"c{n}", "attributes": {}}]

    batches = with_upcoming(pages(), ahead=0)
    for n in range(3):
        page, upcoming = next(batches)
        assert page == [{"id": f"c{n}", "attributes": {}}]
        assert upcoming == []
        assert pulled == list(range(n + 1)), "no page is read before the last is released"
    assert next(batches, None) is None
    with pytest.raises(ValueError, match="ahead"):
        next(with_upcoming(iter([]), ahead=-1))


def test_closing_read_ahead_stops_its_worker():
    def endless():
        n = 0
        while True:
            n += 1
            yield n

    pages = read_ahead(endless(), depth=2)
    assert [next(pages) for _ in range(3)] == [1, 2, 3]
    pages.close()
    deadline = time.monotonic() + 5
    while any(t.name == "search-read-ahead" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the read-ahead worker kept running"
        time.sleep(0.05)


def _both_kinds_api() -> FakeApi:
    api = FakeApi()
    for conversation in api.conversations[:5]:
        conversation["attributes"]["noteCount"] = 1
    return api


def test_the_planner_runs_on_the_callers_pool_or_serially_with_the_same_requests():
    results = {}
    for label in ("serial", "pool"):
        api = _both_kinds_api()
        threads_seen = set()
        search, request_json = api.search, api.request_json

        def traced_search(*args, _search=search, _seen=threads_seen):
            _seen.add(threading.current_thread().name)
            return _search(*args)

        def traced_list(*args, _list=request_json, _seen=threads_seen, **kwargs):
            _seen.add(threading.current_thread().name)
            return _list(*args, **kwargs)

        before = {t.ident for t in threading.enumerate()}
        if label == "pool":
            with ThreadPoolExecutor(6, thread_name_prefix="run-pool") as pool:
                planner = ThreadPlanner(
                    traced_list, traced_search, strategy="bulk", pool=pool, workers=4
                )
                threads = planner.fetch(api.conversations)
            assert threads_seen
            assert all(n.startswith("run-pool") for n in threads_seen)
        else:
            planner = ThreadPlanner(traced_list, traced_search, strategy="bulk", workers=4)
            threads = planner.fetch(api.conversations)
            assert threads_seen == {threading.current_thread().name}
            assert {t.ident for t in threading.enumerate()} <= before, "no thread was started"
        results[label] = (
            {
                cid: ([m["id"] for m in t.records("messages")], len(t.notes))
                for cid, t in threads.items()
            },
            planner.stats,
            api.lists,
            api.searches,
        )
    assert results["pool"] == results["serial"]
    threads, stats, lists, _ = results["serial"]
    assert all(len(messages) == 3 for messages, _ in threads.values())
    assert stats.per_conversation_threads == lists
