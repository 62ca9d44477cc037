"""Tests of the local Kustomer API emulator (tests/sandbox)."""

from __future__ import annotations

import http.client
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.sandbox import KeySpec, Sandbox, SandboxOptions
from tests.sandbox.clock import fmt_ms, parse_ts
from tests.sandbox.search import Query, build_fields

KEY = "test-key"
NOW = "2025-06-01T12:00:00.000Z"
REPO = Path(__file__).resolve().parents[1]
SEARCH = "/v1/customers/search"


def make(**kw: object) -> Sandbox:
    opts = {"seed": 7, "api_key": KEY, "customers": 50, "conversations": 200, "now": NOW}
    opts.update(kw)
    return Sandbox(SandboxOptions(**opts))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ro():
    """A read-only sandbox shared by tests that do not mutate or throttle."""
    sb = make(
        org_rpm=100_000,
        search_rpm=100_000,
        extra_keys={
            "notag": KeySpec.without("tag"),
            "notag401": KeySpec.without("tag", denial_status=401),
            "nomsg": KeySpec.without("message"),
            "old": KeySpec.expired_key(),
        },
    )
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sb():
    """A fresh sandbox for tests that mutate or use budgets."""
    box = make()
    box.start()
    yield box
    box.stop()


def hdr(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def search(sb: Sandbox, body: dict, key: str = KEY, **params: object) -> requests.Response:
    return requests.post(
        sb.base_url + SEARCH, json=body, headers=hdr(key), params=params, timeout=30
    )


def get(sb: Sandbox, path: str, key: str = KEY, **params: object) -> requests.Response:
    return requests.get(sb.base_url + path, headers=hdr(key), params=params, timeout=30)


def all_ids(sb: Sandbox, body: dict, page_size: int = 500) -> list[str]:
    ids, page = [], 1
    while True:
        data = search(sb, body, page=page, pageSize=page_size).json()
        ids += [d["id"] for d in data["data"]]
        if not data["links"]["next"]:
            return ids
        page += 1


# --- data -----------------------------------------------------------------------------------


def test_data_is_deterministic_and_shaped():
    a, b = make(), make()
    assert a.truth() == b.truth()
    assert make(seed=8).truth()["conversations"] != a.truth()["conversations"]
    t = a.truth()
    assert len(t["conversations"]) == 200
    assert len(t["customers"]) == 50
    assert len(t["tags"]) == 50
    now = parse_ts(NOW)
    for kind in ("conversations", "messages", "notes", "customers"):
        for rec in t[kind]:
            assert re.fullmatch(r"[0-9a-f]{24}", rec["id"]), rec["id"]
            assert rec["links"]["self"] == f"/v1/{kind}/{rec['id']}"
            upd = parse_ts(rec["attributes"]["updatedAt"])
            assert upd <= now
            assert rec["attributes"]["updatedAt"].endswith("Z")
            assert len(rec["attributes"]["createdAt"]) == 24
    created = [parse_ts(c["attributes"]["createdAt"]) for c in t["conversations"]]
    assert now - min(created) > 400 * 86_400_000  # spans well over a year
    msgs_by_conv: dict[str, int] = {}
    for m in t["messages"]:
        assert m["relationships"]["customer"]["data"]["type"] == "customers"
        conv = m["relationships"]["conversation"]["data"]
        assert conv["type"] == "conversation"
        msgs_by_conv[conv["id"]] = msgs_by_conv.get(conv["id"], 0) + 1
    notes_by_conv: dict[str, int] = {}
    for n in t["notes"]:
        assert isinstance(n["relationships"]["userMentions"]["data"], list)
        cid = n["relationships"]["conversation"]["data"]["id"]
        notes_by_conv[cid] = notes_by_conv.get(cid, 0) + 1
    statuses = {"done": 0, "open": 0, "snoozed": 0}
    for c in t["conversations"]:
        at = c["attributes"]
        statuses[at["status"]] += 1
        assert at["messageCount"] == msgs_by_conv.get(c["id"], 0)
        assert at["noteCount"] == notes_by_conv.get(c["id"], 0)
        assert c["relationships"]["customer"]["data"]["type"] == "customer"
        assert "data" not in c["relationships"]["messages"]
        if at["status"] == "done":
            assert "createdAt" in at["lastDone"]
            assert at["doneCount"] >= 1
        elif "createdAt" not in at["lastDone"]:
            assert at["lastDone"] == {
                "createdByTeams": [],
                "assignedTeams": [],
                "assignedUsers": [],
            }
    assert statuses["done"] > 0.6 * 200
    assert statuses["open"] > 0
    counts = sorted(msgs_by_conv.get(c["id"], 0) for c in t["conversations"])
    assert counts[0] == 0
    assert counts[-1] >= 120  # at least one long thread
    shapes = {
        type(m["attributes"]["meta"].get("to")).__name__
        for m in t["messages"]
        if m["attributes"]["channel"] == "email"
    }
    assert {"list", "dict", "str"} <= shapes
    assert any(c["attributes"].get("modifiedAt") is None for c in t["customers"])
    assert any(t_["attributes"]["deleted"] for t_ in t["tags"])


def test_tie_clusters():
    box = make(
        conversations=50, tie_clusters=[("resolve", 300), ("import", 120), ("customers", 200)]
    )
    t = box.truth()
    clusters = {c["kind"]: c["at"] for c in box.tie_cluster_times()}
    res = [
        c
        for c in t["conversations"]
        if c["attributes"]["lastDone"].get("createdAt") == clusters["resolve"]
    ]
    assert len(res) == 300
    assert {c["attributes"]["updatedAt"] for c in res} == {clusters["resolve"]}
    assert len({c["attributes"]["createdAt"] for c in res}) > 1
    imp = [c for c in t["conversations"] if c["attributes"]["createdAt"] == clusters["import"]]
    assert len(imp) == 120
    assert all(
        c["attributes"]["updatedAt"] == clusters["import"]
        and c["attributes"]["lastDone"]["createdAt"] == clusters["import"]
        for c in imp
    )
    cus = [c for c in t["customers"] if c["attributes"]["updatedAt"] == clusters["customers"]]
    assert len(cus) == 200
    assert all(c["attributes"]["createdAt"] == clusters["customers"] for c in cus)


def test_big_generation_is_fast():
    start = time.monotonic()
    box = make(customers=500, conversations=10_000, tie_clusters=[("resolve", 5000)])
    assert time.monotonic() - start < 10
    assert len(box.store.conversations) == 15_000


# --- search ----------------------------------------------------------------------------------


def test_search_filters_and_ops(ro):
    t = ro.truth()
    convs = t["conversations"]
    upd = sorted(parse_ts(c["attributes"]["updatedAt"]) for c in convs)
    pivot = upd[len(upd) // 2]
    iso = fmt_ms(pivot)
    expected = {
        "gte": {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) >= pivot},
        "gt": {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) > pivot},
        "lte": {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) <= pivot},
        "lt": {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) < pivot},
        "equals": {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) == pivot},
    }
    for op, want in expected.items():
        body = {"and": [{"conversation_updated_at": {op: iso}}], "queryContext": "conversation"}
        assert set(all_ids(ro, body)) == want, op
    done = {c["id"] for c in convs if c["attributes"]["status"] == "done"}
    body = {"and": {"conversation_status": {"equals": "done"}}, "queryContext": "conversation"}
    assert set(all_ids(ro, body)) == done
    # not, or
    body = {"not": [{"conversation_status": {"equals": "done"}}], "queryContext": "conversation"}
    assert set(all_ids(ro, body)) == {c["id"] for c in convs} - done
    body = {
        "or": [
            {"conversation_status": {"equals": "open"}},
            {"conversation_status": {"equals": "snoozed"}},
        ],
        "queryContext": "conversation",
    }
    assert set(all_ids(ro, body)) == {c["id"] for c in convs} - done
    # lastDone on open conversations never matches
    body = {
        "and": [{"conversation_last_done_created_at": {"gte": "2000-01-01"}}],
        "queryContext": "conversation",
    }
    ids = set(all_ids(ro, body))
    assert done <= ids
    assert ids == {c["id"] for c in convs if "createdAt" in c["attributes"]["lastDone"]}
    # tags membership
    tag = next(tg for c in convs for tg in c["attributes"]["tags"])
    body = {"and": [{"conversation_tags": {"equals": tag}}], "queryContext": "conversation"}
    assert set(all_ids(ro, body)) == {c["id"] for c in convs if tag in c["attributes"]["tags"]}
    # customer id, message count
    cust = convs[0]["relationships"]["customer"]["data"]["id"]
    body = {
        "and": [
            {"conversation_customer_id": {"equals": cust}},
            {"conversation_message_count": {"gte": 1}},
        ],
        "queryContext": "conversation",
    }
    assert set(all_ids(ro, body)) == {
        c["id"]
        for c in convs
        if c["relationships"]["customer"]["data"]["id"] == cust
        and c["attributes"]["messageCount"] >= 1
    }


def test_search_note_conversation_or(ro):
    notes = ro.truth(["notes"])["notes"]
    convs = sorted({n["relationships"]["conversation"]["data"]["id"] for n in notes})[:3]
    body = {"or": [{"note_conversation_id": {"equals": c}} for c in convs], "queryContext": "note"}
    want = {n["id"] for n in notes if n["relationships"]["conversation"]["data"]["id"] in convs}
    assert set(all_ids(ro, body)) == want
    body = {"and": [{"note_conversation_id": {"equals": convs[0]}}], "queryContext": "note"}
    assert all(d["type"] == "note" for d in search(ro, body).json()["data"])


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-15",
        "2025-01-15T00:00:00.000Z",
        "2025-01-15T00:00:00Z",
        "2025-01-15T00:00:00",
        "2025-01-15T00:00:00+00:00",
        "2025-01-15 00:00:00+00:00",
        "2025-01-15T01:00:00+01:00",
        "2025-01-15T00:00:00.000000Z",
    ],
)
def test_search_date_formats(ro, value):
    body = {"and": [{"customer_updated_at": {"gte": value}}], "queryContext": "customer"}
    r = search(ro, body)
    assert r.status_code == 200
    cut = parse_ts("2025-01-15T00:00:00Z")
    want = {
        c["id"]
        for c in ro.truth(["customers"])["customers"]
        if parse_ts(c["attributes"]["updatedAt"]) >= cut
    }
    assert set(all_ids(ro, body)) == want


@pytest.mark.parametrize(
    "body",
    [
        {"and": [{"customer_updated_at": {"gte": "yesterday"}}], "queryContext": "customer"},
        {"and": [{"customer_updated_at": {"gte": "2025-13-45"}}], "queryContext": "customer"},
        {"and": [], "queryContext": "planets"},
        {"and": []},
        {"and": [{"customer_updated_at": {"near": "2025-01-01"}}], "queryContext": "customer"},
        {"and": [{"customer_no_such_field": {"equals": 1}}], "queryContext": "customer"},
        {"and": "x", "queryContext": "customer"},
        {"sort": [{"customer_updated_at": "up"}], "queryContext": "customer"},
        {"queryContext": "customer", "page": 2},
        [1, 2],
    ],
)
def test_search_bad_requests(ro, body):
    r = search(ro, body)
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["status"] == 400
    assert err["title"]
    r = requests.post(ro.base_url + SEARCH, data=b"{not json", headers=hdr(), timeout=10)
    assert r.status_code == 400


def test_search_sort_single_and_multi(ro):
    body = {
        "and": [{"conversation_updated_at": {"gte": "2000-01-01"}}],
        "sort": [{"conversation_updated_at": "desc"}],
        "queryContext": "conversation",
    }
    data = search(ro, body, pageSize=500).json()["data"]
    keys = [parse_ts(d["attributes"]["updatedAt"]) for d in data]
    assert keys == sorted(keys, reverse=True)
    body = {
        "sort": [{"conversation_status": "asc"}, {"conversation_created_at": "desc"}],
        "queryContext": "conversation",
    }
    data = search(ro, body, pageSize=500).json()["data"]
    keys2 = [(d["attributes"]["status"], -parse_ts(d["attributes"]["createdAt"])) for d in data]
    assert keys2 == sorted(keys2)
    # object form of sort works too
    body = {"sort": {"customer_created_at": "asc"}, "queryContext": "customer"}
    data = search(ro, body).json()["data"]
    keys = [d["attributes"]["createdAt"] for d in data]
    assert keys == sorted(keys)


def test_search_ties_ordered_deterministically():
    box = make(conversations=20, tie_clusters=[("resolve", 250)])
    with box:
        at = box.tie_cluster_times()[0]["at"]
        body = {
            "and": [{"conversation_updated_at": {"equals": at}}],
            "sort": [{"conversation_updated_at": "asc"}],
            "queryContext": "conversation",
        }
        first = all_ids(box, body, page_size=100)
        assert len(first) == 250
        assert first == all_ids(box, body, page_size=100)
        assert first == sorted(first)  # final tie-break: id ascending


def test_indexed_search_pages_match_a_full_scan():
    """Range + other criteria + multi-key sort: every page equals the unindexed order."""
    box = make(conversations=400, tie_clusters=[("resolve", 120)])
    with box:
        store = box.store
        at = fmt_ms(parse_ts(box.tie_cluster_times()[0]["at"]) - 60_000)
        body = {
            "and": [
                {"conversation_status": {"equals": "done"}},
                {"conversation_last_done_created_at": {"gte": "2000-01-01T00:00:00.000Z"}},
                {"conversation_last_done_created_at": {"gte": at}},
                {"conversation_updated_at": {"gte": "2000-01-01T00:00:00.000Z"}},
            ],
            # ids follow creation time: a later key in another order shows misorders
            "sort": [
                {"conversation_last_done_created_at": "asc"},
                {"conversation_priority": "desc"},
                {"conversation_created_at": "desc"},
            ],
            "queryContext": "conversation",
        }
        expected = [
            r["id"] for r in Query(store, body, build_fields(store)).run(store.conversations)
        ]
        assert len(expected) > 120
        for size in (7, 50, 500):
            assert all_ids(box, body, page_size=size) == expected
        # The conversation walk's shape: one cursor, then a narrower one.
        body["and"][2] = {"conversation_last_done_created_at": {"gt": at}}
        expected = [
            r["id"] for r in Query(store, body, build_fields(store)).run(store.conversations)
        ]
        assert all_ids(box, body, page_size=50) == expected


def test_search_pagination_links_and_clamp(ro):
    body = {
        "and": [{"message_updated_at": {"gte": "2000-01-01"}}],
        "sort": [{"message_updated_at": "asc"}],
        "queryContext": "message",
    }
    r = search(ro, body, pageSize=1000)
    data = r.json()
    total = len(ro.store.messages)
    assert data["meta"] == {
        "pageSize": 500,
        "page": 1,
        "total": total,
        "totalPages": math.ceil(total / 500),
        "aggregations": {},
        "timed_out": False,
    }
    assert len(data["data"]) == 500
    links = data["links"]
    assert links["self"] == "/v1/customers/search?page=1&pageSize=500"
    assert links["first"] == "/v1/customers/search?page=1&pageSize=500"
    assert links["prev"] is None
    assert links["next"] == "/v1/customers/search?page=2&pageSize=500"
    assert links["last"] == f"/v1/customers/search?page={math.ceil(total / 500)}&pageSize=500"
    # default page size 100 and following next to the end
    r = search(ro, body)
    assert r.json()["meta"]["pageSize"] == 100
    last = search(ro, body, page=math.ceil(total / 100)).json()
    assert last["links"]["next"] is None
    assert last["links"]["prev"].startswith("/v1/customers/search?page=")
    assert search(ro, body, page=0).status_code == 400
    assert search(ro, body, page="x").status_code == 400


@pytest.mark.parametrize("behavior", ["error", "empty"])
def test_search_cap(behavior):
    box = make(search_result_cap=300, cap_behavior=behavior)
    with box:
        body = {"sort": [{"message_created_at": "asc"}], "queryContext": "message"}
        total = len(box.store.messages)
        assert total > 600
        page3 = search(box, body, page=3, pageSize=100).json()
        assert page3["meta"]["total"] == total  # not capped
        assert len(page3["data"]) == 100
        assert page3["links"]["next"] == "/v1/customers/search?page=4&pageSize=100"
        r = search(box, body, page=4, pageSize=100)
        if behavior == "error":
            assert r.status_code == 400
            assert r.json()["errors"][0]["status"] == 400
        else:
            assert r.status_code == 200
            assert r.json()["data"] == []
            assert r.json()["meta"]["total"] == total


def test_search_default_cap_is_10000():
    box = make(conversations=20, tie_clusters=[("customers", 10_050)])
    with box:
        body = {"sort": [{"customer_updated_at": "asc"}], "queryContext": "customer"}
        p20 = search(box, body, page=20, pageSize=500).json()
        assert p20["links"]["next"] is not None
        assert search(box, body, page=21, pageSize=500).status_code == 400


# --- other endpoints ----------------------------------------------------------------------------


def test_get_endpoints(ro):
    t = ro.truth()
    conv = max(t["conversations"], key=lambda c: c["attributes"]["messageCount"])
    r = get(ro, f"/v1/conversations/{conv['id']}")
    assert r.json()["data"] == conv
    other = t["conversations"][1]
    r = get(ro, f"/v1/conversations/{conv['id']},{other['id']}")
    assert [d["id"] for d in r.json()["data"]] == [conv["id"], other["id"]]
    r = get(ro, "/v1/conversations/0123456789abcdef01234567")
    assert r.status_code == 404
    assert r.json()["errors"][0]["status"] == 404
    # messages: paged, createdAt ascending, meta without total
    n = conv["attributes"]["messageCount"]
    seen, page = [], 1
    while True:
        data = get(ro, f"/v1/conversations/{conv['id']}/messages", page=page, pageSize=500).json()
        assert data["meta"] == {"pageSize": 100, "page": page}
        seen += data["data"]
        if data["links"]["next"] is None:
            break
        page += 1
    assert len(seen) == n
    assert page == math.ceil(n / 100)
    stamps = [m["attributes"]["createdAt"] for m in seen]
    assert stamps == sorted(stamps)
    r = get(ro, f"/v1/messages/{seen[0]['id']}")
    assert r.json()["data"] == seen[0]
    note = t["notes"][0]
    assert get(ro, f"/v1/notes/{note['id']}").json()["data"] == note
    cid = note["relationships"]["conversation"]["data"]["id"]
    notes = get(ro, f"/v1/conversations/{cid}/notes").json()
    assert note["id"] in [x["id"] for x in notes["data"]]
    cust = t["customers"][3]
    assert get(ro, f"/v1/customers/{cust['id']}").json()["data"] == cust
    lst = get(ro, "/v1/customers", pageSize=20).json()
    assert lst["meta"]["total"] == 50
    assert lst["meta"]["totalPages"] == 3
    assert lst["links"]["last"] == "/v1/customers?page=3&pageSize=20"
    lst = get(ro, "/v1/conversations").json()
    assert lst["meta"] == {"pageSize": 100, "page": 1}
    assert lst["links"]["next"] == "/v1/conversations?page=2&pageSize=100"
    assert get(ro, "/v1/nothing/here").status_code == 404
    assert get(ro, "/v1/users/current/").status_code == 200  # trailing slash tolerated
    assert get(ro, "/v1/users").json()["data"]
    assert get(ro, "/v1/teams").json()["data"]
    assert get(ro, "/v1/shortcuts").json()["data"]
    meta = get(ro, "/v1/metadata/conversation").json()["data"]
    assert "contactReasonTree" in meta["attributes"]["properties"]
    assert "tierStr" in get(ro, "/v1/metadata/customer").json()["data"]["attributes"]["properties"]
    assert get(ro, "/v1/metadata/message").status_code == 200


def test_tags_deleted_switch(ro):
    tags = ro.truth(["tags"])["tags"]
    live = [t for t in tags if not t["attributes"]["deleted"]]
    ids = [t["id"] for t in get(ro, "/v1/tags").json()["data"]]
    assert ids == [t["id"] for t in tags][:100]
    ids = [t["id"] for t in get(ro, "/v1/tags", deleted="false").json()["data"]]
    assert ids == [t["id"] for t in live]
    ro.options.tags_include_deleted_by_default = False
    try:
        ids = [t["id"] for t in get(ro, "/v1/tags").json()["data"]]
        assert ids == [t["id"] for t in live]
    finally:
        ro.options.tags_include_deleted_by_default = True
    page = get(ro, "/v1/tags", pageSize=20, page=3).json()
    assert page["links"]["next"] is None
    assert len(page["data"]) == 10


# --- auth -------------------------------------------------------------------------------------


def test_auth_errors(ro):
    r = requests.get(ro.base_url + "/v1/tags", timeout=10)
    assert r.status_code == 401
    assert r.json()["errors"][0]["status"] == 401
    assert get(ro, "/v1/tags", key="nope").status_code == 401
    assert get(ro, "/v1/tags", key=KEY + " ").status_code == 401  # no trimming
    r = get(ro, "/v1/tags", key="old")
    assert r.status_code == 401
    assert "Expired token" in r.json()["errors"][0]["title"]
    assert "Expired token" in r.json()["errors"][0]["detail"]
    assert get(ro, "/v1/auth/tokens/current", key="old").status_code == 401


def test_role_denials(ro):
    r = get(ro, "/v1/tags", key="notag")
    assert r.status_code == 403
    assert r.json()["errors"][0]["status"] == 403
    assert get(ro, "/v1/tags", key="notag401").status_code == 401
    assert get(ro, "/v1/conversations", key="notag").status_code == 200
    body = {"queryContext": "conversation"}
    assert search(ro, body, key="notag").status_code == 200
    # search checks the role of the queried resource
    assert search(ro, {"queryContext": "message"}, key="nomsg").status_code == 403
    assert search(ro, {"queryContext": "note"}, key="nomsg").status_code == 200
    tok = get(ro, "/v1/auth/tokens/current", key="notag")
    assert tok.status_code == 200
    roles = tok.json()["data"]["attributes"]["roles"]
    assert "org.permission.tag.read" not in roles
    assert "org.user.conversation.read" in roles
    assert "notag" not in tok.text
    assert KEY not in get(ro, "/v1/auth/tokens/current").text


# --- rate limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["epoch", "delta"])
def test_budgets_and_headers(fmt):
    box = make(org_rpm=12, search_rpm=4, reset_format=fmt, conversations=20)
    with box:
        r = get(box, "/v1/tags")
        assert r.headers["x-ratelimit-limit"] == "12"
        assert r.headers["x-ratelimit-remaining"] == "11"
        reset = int(r.headers["x-ratelimit-reset"])
        if fmt == "epoch":
            assert abs(reset - (time.time() + 60)) < 5
        else:
            assert 58 <= reset <= 60
        for i in range(4):
            s = search(box, {"queryContext": "customer"})
            assert s.status_code == 200
            assert s.headers["x-ratelimit-limit"] == "4"
            assert s.headers["x-ratelimit-remaining"] == str(3 - i)
        s = search(box, {"queryContext": "customer"})
        assert s.status_code == 429
        assert "Retry-After" not in s.headers
        assert s.json()["errors"][0]["status"] == 429
        assert s.headers["x-ratelimit-remaining"] == "0"
        # the org budget still has room: 1 + 4 searches + this one (429s consume nothing)
        r = get(box, "/v1/tags")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == "6"
        codes = [get(box, "/v1/tags").status_code for _ in range(7)]
        assert codes == [200] * 6 + [429]
        st = box.stats()
        assert st["rate_limited"] == 2
        assert st["max_requests_in_60s"] == {"org": 14, "search": 5}
        assert st["max_accepted_in_60s"] == {"org": 12, "search": 4}


def test_rate_window_resets_in_real_time():
    box = make(org_rpm=2, conversations=5)
    with box:
        assert get(box, "/v1/tags").status_code == 200
        assert get(box, "/v1/tags").status_code == 200
        assert get(box, "/v1/tags").status_code == 429
        box.api.org_window.start -= 61  # pretend a minute passed
        assert get(box, "/v1/tags").status_code == 200


# --- faults and latency ---------------------------------------------------------------------------


def test_fault_5xx_and_html(sb):
    sb.options.fault_5xx_rate = 1.0
    r = get(sb, "/v1/tags")
    assert r.status_code in (500, 503)
    assert r.json()["errors"][0]["status"] == r.status_code
    sb.options.fault_5xx_rate = 0.0
    sb.options.fault_502_html_rate = 1.0
    r = get(sb, "/v1/tags")
    assert r.status_code == 502
    assert r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        r.json()
    sb.options.fault_502_html_rate = 0.0
    assert get(sb, "/v1/tags").status_code == 200
    st = sb.stats()
    assert sum(st["faults"].values()) == 2
    assert st["total_requests"] == 3


def test_fault_reset(sb):
    sb.options.fault_reset_rate = 1.0
    with pytest.raises(requests.exceptions.RequestException):
        get(sb, "/v1/tags")
    # with a raw client: headers arrive, the body is incomplete
    conn = http.client.HTTPConnection("127.0.0.1", int(sb.base_url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", "/v1/tags", headers=hdr())
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    conn.close()
    assert requests.get(sb.base_url + "/__control/health", timeout=5).status_code == 200
    sb.options.fault_reset_rate = 0.0
    assert sb.stats()["faults"]["reset"] == 2


def test_fault_truncated(sb):
    sb.options.fault_truncated_rate = 1.0
    r = get(sb, "/v1/tags")
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(r.content)
    with pytest.raises(ValueError):
        json.loads(r.content)


def test_fault_routes_and_rates(sb):
    sb.options.fault_5xx_rate = 1.0
    sb.options.fault_routes = ["/search"]
    assert get(sb, "/v1/tags").status_code == 200
    assert search(sb, {"queryContext": "customer"}).status_code >= 500
    sb.options.fault_routes = None
    sb.options.fault_5xx_rate = 0.3
    codes = [get(sb, "/v1/users").status_code for _ in range(60)]
    assert 5 <= sum(c >= 500 for c in codes) <= 35


def test_latency(sb):
    sb.options.latency_ms = 150
    start = time.monotonic()
    get(sb, "/v1/tags")
    assert time.monotonic() - start >= 0.14


# --- index lag, clock -----------------------------------------------------------------------------


def test_date_header_uses_sandbox_clock(sb):
    r = get(sb, "/v1/tags")
    from email.utils import parsedate_to_datetime

    served = parsedate_to_datetime(r.headers["Date"])
    assert abs(served.timestamp() - parse_ts(NOW) / 1000) < 30
    sb.advance_clock(3600)
    served2 = parsedate_to_datetime(get(sb, "/v1/tags").headers["Date"])
    assert served2.timestamp() - served.timestamp() >= 3599


def test_index_lag():
    box = make(index_lag_seconds=120)
    with box:
        conv = next(
            c
            for c in box.truth(["conversations"])["conversations"]
            if c["attributes"]["status"] == "done"
        )
        old_upd = conv["attributes"]["updatedAt"]
        msg = box.reply(conv["id"], body="hello again")
        body = {
            "and": [
                {
                    "conversation_customer_id": {
                        "equals": conv["relationships"]["customer"]["data"]["id"]
                    }
                }
            ],
            "queryContext": "conversation",
        }
        hit = next(d for d in search(box, body).json()["data"] if d["id"] == conv["id"])
        assert hit["attributes"]["updatedAt"] == old_upd
        assert hit["attributes"]["status"] == "done"
        live = get(box, f"/v1/conversations/{conv['id']}").json()["data"]["attributes"]
        assert live["status"] == "open"
        assert live["updatedAt"] != old_upd
        mbody = {
            "and": [{"message_updated_at": {"gte": msg["attributes"]["createdAt"]}}],
            "queryContext": "message",
        }
        assert msg["id"] not in all_ids(box, mbody)
        assert get(box, f"/v1/messages/{msg['id']}").status_code == 200
        # filtering uses the indexed version too
        fbody = {
            "and": [{"conversation_status": {"equals": "open"}}],
            "queryContext": "conversation",
        }
        assert conv["id"] not in all_ids(box, fbody)
        box.advance_clock(121)
        assert msg["id"] in all_ids(box, mbody)
        assert conv["id"] in all_ids(box, fbody)
        hit = next(d for d in search(box, body).json()["data"] if d["id"] == conv["id"])
        assert hit["attributes"]["status"] == "open"


# --- mutations ---------------------------------------------------------------------------------


def _conv(box: Sandbox, cid: str) -> dict:
    return get(box, f"/v1/conversations/{cid}").json()["data"]["attributes"]


def test_reply_reopens_done(sb):
    conv = next(
        c
        for c in sb.truth(["conversations"])["conversations"]
        if c["attributes"]["status"] == "done"
    )
    a = conv["attributes"]
    sb.advance_clock(10)
    msg = sb.reply(conv["id"], body="Still broken 😡")
    assert msg["attributes"]["preview"] == "Still broken 😡"
    assert msg["attributes"]["direction"] == "in"
    b = _conv(sb, conv["id"])
    assert b["status"] == "open"
    assert b["reopenCount"] == a["reopenCount"] + 1
    assert b["messageCount"] == a["messageCount"] + 1
    assert b["lastDone"]["createdAt"] == a["lastDone"]["createdAt"]
    assert b["updatedAt"] > a["updatedAt"]
    assert b["updatedAt"] == msg["attributes"]["createdAt"]
    ids = [
        m["id"]
        for m in get(
            sb,
            f"/v1/conversations/{conv['id']}/messages",
            pageSize=100,
            page=math.ceil(b["messageCount"] / 100),
        ).json()["data"]
    ]
    assert ids[-1] == msg["id"]
    # outbound reply on an open conversation keeps it open
    sb.reply(conv["id"], body="We're on it", direction="out")
    assert _conv(sb, conv["id"])["status"] == "open"


def test_resolve_reopen_tags_custom_notes(sb):
    conv = next(
        c
        for c in sb.truth(["conversations"])["conversations"]
        if c["attributes"]["status"] == "open" and "createdAt" not in c["attributes"]["firstDone"]
    )
    cid = conv["id"]
    sb.advance_clock(5)
    res = sb.resolve(cid)["attributes"]
    assert res["status"] == "done"
    assert res["lastDone"]["createdAt"] == res["updatedAt"]
    assert res["firstDone"]["createdAt"] == res["lastDone"]["createdAt"]
    assert res["doneCount"] == conv["attributes"]["doneCount"] + 1
    assert cid in sb.resolved_conversation_ids(since=res["lastDone"]["createdAt"])
    assert cid not in sb.resolved_conversation_ids(until=res["lastDone"]["createdAt"])
    sb.advance_clock(5)
    tags = [t["id"] for t in sb.truth(["tags"])["tags"][:2]]
    tagged = sb.set_tags(cid, tags)["attributes"]
    assert tagged["tags"] == tags
    assert tagged["updatedAt"] > res["updatedAt"]
    assert tagged["lastDone"]["createdAt"] == res["lastDone"]["createdAt"]
    custom = sb.set_custom(cid, {"escalatedBool": True, "refundAmountNum": 12.5})["attributes"]
    assert custom["custom"]["escalatedBool"] is True
    note = sb.add_note(cid, body="Hi __Ana Smith__ 👋")
    assert note["attributes"]["body"] == "Hi __Ana Smith__ 👋"
    after = _conv(sb, cid)
    assert after["noteCount"] == conv["attributes"]["noteCount"] + 1
    reo = sb.reopen(cid)["attributes"]
    assert reo["status"] == "open"
    assert reo["lastDone"]["createdAt"] == res["lastDone"]["createdAt"]
    assert reo["reopenCount"] == conv["attributes"]["reopenCount"] + 1
    assert cid not in sb.resolved_conversation_ids()


def test_customers_and_new_conversations(sb):
    c = sb.add_customer(name="Zoë 🚀 Test", email="zoe@example.com", custom={"vipBool": True})
    assert c["attributes"]["name"] == "Zoë 🚀 Test"
    assert c["attributes"]["emails"][0]["email"] == "zoe@example.com"
    assert get(sb, f"/v1/customers/{c['id']}").json()["data"] == c
    sb.advance_clock(2)
    u = sb.update_customer(c["id"], custom={"tierStr": "gold"}, locale="fr_FR")
    assert u["attributes"]["custom"]["tierStr"] == "gold"
    assert u["attributes"]["custom"]["vipBool"] is True
    assert u["attributes"]["updatedAt"] > c["attributes"]["updatedAt"]
    conv = sb.add_conversation(customer_id=c["id"], messages=2)
    assert conv["attributes"]["status"] == "open"
    assert conv["attributes"]["messageCount"] == 2
    assert conv["relationships"]["customer"]["data"]["id"] == c["id"]
    assert "createdAt" not in conv["attributes"]["lastDone"]
    done = sb.add_conversation(status="done")
    assert done["attributes"]["lastDone"]["createdAt"] == done["attributes"]["createdAt"]
    body = {
        "and": [{"conversation_customer_id": {"equals": c["id"]}}],
        "queryContext": "conversation",
    }
    assert all_ids(sb, body) == [conv["id"]]
    with pytest.raises(KeyError):
        sb.resolve("0123456789abcdef01234567")


def test_simulate_activity(sb):
    before = sb.now()
    before_iso = sb.now_iso()
    summary = sb.simulate_activity(hours=3, seed=11)
    assert (sb.now() - before).total_seconds() >= 3 * 3600
    assert summary["start"] <= summary["end"]
    for key in (
        "replied",
        "resolved",
        "re_resolved",
        "tagged",
        "new_conversations",
        "new_customers",
        "updated_customers",
        "reopened_by_reply",
        "messages",
    ):
        assert key in summary
    touched = (
        set(summary["replied"])
        | set(summary["resolved"])
        | set(summary["tagged"])
        | set(summary["new_conversations"])
        | set(summary["custom_changed"])
    )
    assert touched
    updated = set(sb.updated_ids("conversations", since=before_iso))
    assert touched <= updated
    resolved_now = set(sb.resolved_conversation_ids(since=before_iso))
    assert set(summary["resolved"]) - resolved_now <= set(summary["reopened_by_reply"])
    new = set(sb.updated_ids("customers", since=before_iso))
    assert set(summary["new_customers"]) | set(summary["updated_customers"]) == new
    # determinism: same seed and data -> same summary ids
    other = make()
    assert other.simulate_activity(hours=3, seed=11)["resolved"] == summary["resolved"]


# --- stats, truth, control ---------------------------------------------------------------------


def test_stats_and_reset(sb):
    get(sb, "/v1/tags")
    get(sb, "/v1/tags", key="bad")
    search(sb, {"queryContext": "note"})
    conv = sb.truth(["conversations"])["conversations"][0]
    get(sb, f"/v1/conversations/{conv['id']}")
    st = sb.stats()
    assert st["total_requests"] == 4
    assert st["by_route"]["GET /v1/tags"] == {"200": 1, "401": 1}
    assert st["by_route"]["POST /v1/customers/search"] == {"200": 1}
    assert st["by_route"]["GET /v1/conversations/{id}"] == {"200": 1}
    assert st["by_status"] == {"200": 3, "401": 1}
    assert st["max_requests_in_60s"]["search"] == 1
    ctl = requests.get(sb.base_url + "/__control/stats", timeout=5).json()
    assert ctl["total_requests"] == 4
    sb.reset_stats()
    assert sb.stats()["total_requests"] == 0


def test_control_http(sb):
    base = sb.base_url + "/__control"
    truth = requests.get(base + "/truth", params={"kinds": "conversations,tags"}, timeout=10)
    data = truth.json()
    assert set(data) == {"conversations", "tags"}
    assert data == sb.truth(["conversations", "tags"])
    conv = next(c for c in data["conversations"] if c["attributes"]["status"] == "done")
    r = requests.post(
        base + "/reply", json={"conversation_id": conv["id"], "body": "hey"}, timeout=5
    )
    assert r.status_code == 200
    assert r.json()["type"] == "message"
    r = requests.post(base + "/resolve", json={"conversation_id": conv["id"]}, timeout=5)
    assert r.json()["attributes"]["status"] == "done"
    r = requests.post(base + "/add_customer", json={"name": "Ctl"}, timeout=5)
    cust = r.json()
    r = requests.post(
        base + "/update_customer",
        json={"customer_id": cust["id"], "custom": {"tierStr": "x"}},
        timeout=5,
    )
    assert r.json()["attributes"]["custom"]["tierStr"] == "x"
    now = requests.post(base + "/advance_clock", json={"seconds": 60}, timeout=5).json()["now"]
    assert now >= sb.now_iso()[:16] or now
    assert requests.post(base + "/options", json={"org_rpm": 5}, timeout=5).status_code == 200
    assert sb.options.org_rpm == 5
    assert requests.get(base + "/options", timeout=5).json()["org_rpm"] == 5
    assert requests.post(
        base + "/resolve", json={"conversation_id": "x" * 24}, timeout=5
    ).status_code in (400, 404)
    resolved = requests.get(base + "/resolved", params={"since": "2000-01-01"}, timeout=5).json()
    assert conv["id"] in resolved
    assert (
        requests.post(base + "/simulate_activity", json={"hours": 1}, timeout=30).status_code == 200
    )
    assert sb.stats()["total_requests"] == 0  # control calls are not API traffic


def test_truth_returns_copies(sb):
    t = sb.truth(["conversations", "tags"])
    t["conversations"][0]["attributes"]["status"] = "zzz"
    t["tags"][0]["attributes"]["name"] = "zzz"
    t2 = sb.truth(["conversations", "tags"])
    assert t2["conversations"][0]["attributes"]["status"] != "zzz"
    assert t2["tags"][0]["attributes"]["name"] != "zzz"


# --- CLI -------------------------------------------------------------------------------------


def test_cli_start_and_stop():
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sandbox",
            "--port",
            "0",
            "--seed",
            "5",
            "--api-key",
            "cli",
            "--customers",
            "10",
            "--conversations",
            "20",
            "--tie-cluster",
            "resolve:30",
            "--reset-format",
            "delta",
            "--expired-key",
            "gone",
            "--limited-key",
            "lim:tag:401",
            "--fault-rate",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _check_cli(proc)


def _check_cli(proc: subprocess.Popen) -> None:
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        r = requests.get(base + "/v1/tags", headers={"Authorization": "Bearer cli"}, timeout=10)
        assert r.status_code == 200
        assert int(r.headers["x-ratelimit-reset"]) <= 60
        assert (
            requests.get(
                base + "/v1/tags", headers={"Authorization": "Bearer gone"}, timeout=10
            ).status_code
            == 401
        )
        assert (
            requests.get(
                base + "/v1/tags", headers={"Authorization": "Bearer lim"}, timeout=10
            ).status_code
            == 401
        )
        clusters = requests.get(base + "/__control/clusters", timeout=10).json()
        assert clusters[0]["size"] == 30
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_search_time_zone_and_other_contexts(ro):
    # midnight in New York is 05:00Z in January
    body = {
        "and": [{"customer_updated_at": {"gte": "2025-01-15"}}],
        "queryContext": "customer",
        "timeZone": "America/New_York",
    }
    cut = parse_ts("2025-01-15T05:00:00Z")
    want = {
        c["id"]
        for c in ro.truth(["customers"])["customers"]
        if parse_ts(c["attributes"]["updatedAt"]) >= cut
    }
    assert set(all_ids(ro, body)) == want
    r = search(ro, {"queryContext": "kobject_shopify_order"})
    assert r.status_code == 200
    assert r.json()["meta"]["total"] == 0
    assert r.json()["links"]["next"] is None


def test_search_two_year_window():
    box = make(months=30, conversations=300)
    with box:
        body = {"sort": [{"conversation_updated_at": "asc"}], "queryContext": "conversation"}
        cutoff = parse_ts(NOW) - 730 * 86_400_000
        ids = all_ids(box, body)
        convs = box.truth(["conversations"])["conversations"]
        old = {c["id"] for c in convs if parse_ts(c["attributes"]["updatedAt"]) < cutoff}
        assert old
        assert set(ids) == {c["id"] for c in convs} - old
        box.options.search_max_age_days = None
        assert len(all_ids(box, body)) == len(convs)
        # GET still serves the old records
        assert get(box, f"/v1/conversations/{next(iter(old))}").status_code == 200


def test_request_log(sb):
    body = {"and": [{"note_updated_at": {"gte": "2024-01-01"}}], "queryContext": "note"}
    search(sb, body, pageSize=7)
    get(sb, "/v1/tags", page=2)
    log = sb.request_log()
    assert log[0]["route"] == "POST /v1/customers/search"
    assert log[0]["body"] == body
    assert log[0]["path"] == "/v1/customers/search?pageSize=7"
    assert log[1]["path"] == "/v1/tags?page=2"
    assert log[1]["status"] == 200
    assert requests.get(sb.base_url + "/__control/log", timeout=5).json()[0]["body"] == body


def test_every_change_bumps_updated_at(sb):
    """Incremental taps rely on it: a record never changes without a newer updatedAt."""
    before = sb.truth()
    sb.simulate_activity(hours=4, seed=5)
    cust = before["customers"][0]["id"]
    sb.update_customer(cust, email="changed@example.com")
    after = sb.truth()
    changed = 0
    for kind in ("conversations", "messages", "notes", "customers", "tags"):
        old = {r["id"]: r for r in before[kind]}
        for rec in after[kind]:
            prev = old.get(rec["id"])
            if prev is not None and prev != rec:
                changed += 1
                assert rec["attributes"]["updatedAt"] > prev["attributes"]["updatedAt"], (
                    kind,
                    rec["id"],
                )
    assert changed > 10


def test_concurrent_clients(ro):
    from concurrent.futures import ThreadPoolExecutor

    body = {"sort": [{"message_updated_at": "asc"}], "queryContext": "message"}

    def work(i: int) -> list[int]:
        with requests.Session() as s:
            codes = []
            for j in range(5):
                if (i + j) % 2:
                    r = s.post(
                        ro.base_url + SEARCH,
                        json=body,
                        headers=hdr(),
                        params={"page": j + 1},
                        timeout=30,
                    )
                else:
                    r = s.get(ro.base_url + "/v1/tags", headers=hdr(), timeout=30)
                r.json()
                codes.append(r.status_code)
            return codes

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(work, range(48)))
    assert all(c == 200 for codes in results for c in codes)


def test_search_body_limits(ro):
    many = [{"note_conversation_id": {"equals": f"{i:024x}"}} for i in range(21)]
    assert search(ro, {"or": many, "queryContext": "note"}).status_code == 400
    assert search(ro, {"or": many[:20], "queryContext": "note"}).status_code == 200
    dup = [many[0], many[0]]
    assert search(ro, {"or": dup, "queryContext": "note"}).status_code == 400
    sort = [{"note_created_at": "asc"}] * 6
    assert search(ro, {"sort": sort, "queryContext": "note"}).status_code == 400
    big = {"queryContext": "note", "searchHash": "x" * 100_001}
    r = search(ro, big)
    assert r.status_code == 413
    assert r.json()["errors"][0]["status"] == 413


@pytest.mark.parametrize("with_limit", [True, False])
def test_search_headers_org_convention_and_429_without_limit(with_limit):
    from tests.sandbox.__main__ import build_parser, options_from_args

    argv = ["--search-headers", "org", "--rate-limit-429-limit-header", "false"]
    opts = options_from_args(build_parser().parse_args(argv))
    assert (opts.search_headers, opts.rate_limit_429_limit_header) == ("org", False)
    box = make(
        org_rpm=12,
        search_rpm=2,
        search_headers="org",
        rate_limit_429_limit_header=with_limit,
        conversations=5,
    )
    with box:
        assert get(box, "/v1/tags").headers["x-ratelimit-remaining"] == "11"
        for left in ("10", "9"):  # successful searches show the org window
            s = search(box, {"queryContext": "customer"})
            assert s.status_code == 200
            assert s.headers["x-ratelimit-limit"] == "12"
            assert s.headers["x-ratelimit-remaining"] == left
        s = search(box, {"queryContext": "customer"})  # the search window's 429
        assert s.status_code == 429
        assert s.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in s.headers
        assert s.headers.get("x-ratelimit-limit") == ("2" if with_limit else None)
        box.options.search_headers = "search"
        box.api.search_window.start -= 61  # a minute passed for searches
        assert search(box, {"queryContext": "customer"}).headers["x-ratelimit-limit"] == "2"


# --- attachments and conversation events ------------------------------------------------------


def _without_related(rec: dict) -> dict:
    """An attachment without links.related (presigned at request time, so it moves)."""
    return {**rec, "links": {"self": rec["links"]["self"]}}


def _pages(box: Sandbox, path: str, page_size: int, key: str = KEY, **params: object) -> list:
    """Every item of a child list, by page number until a short page (works without links)."""
    items, page = [], 1
    while True:
        r = get(box, path, key=key, page=page, pageSize=page_size, **params)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["meta"] == {}
        items += data["data"]
        if len(data["data"]) < page_size:
            return items
        page += 1


@pytest.fixture(scope="module")
def kids():
    """A small read-only org where half the messages carry attachments."""
    box = make(
        conversations=60,
        attachment_share=0.5,
        org_rpm=100_000,
        extra_keys={
            "noatt": KeySpec.without("attachment"),
            "noatt401": KeySpec.without("attachment", denial_status=401),
            "noevent": KeySpec.without("event"),
        },
    )
    box.start()
    yield box
    box.stop()


def test_attachments_are_deterministic_and_referenced_by_messages():
    a, b = make(conversations=40), make(conversations=40)
    assert a.attachment_count() == b.attachment_count() > 0
    ta = a.truth(["messages", "attachments"])
    tb = b.truth(["messages", "attachments"])
    assert ta["messages"] == tb["messages"]
    assert [x["id"] for x in ta["attachments"]] == [x["id"] for x in tb["attachments"]]
    assert len(ta["attachments"]) == a.attachment_count()
    # ~15% of messages have 1-3 each
    refs = [m["relationships"]["attachments"]["data"] for m in ta["messages"]]
    with_files = [r for r in refs if r]
    assert 0.05 < len(with_files) / len(refs) < 0.3
    assert {len(r) for r in with_files} <= {1, 2, 3}
    assert sum(len(r) for r in refs) == a.attachment_count()
    by_id = {x["id"]: x for x in ta["attachments"]}
    for m, r in zip(ta["messages"], refs, strict=True):
        for ref in r:
            att = by_id[ref["id"]]
            assert ref["type"] == "attachment"
            assert len(att["id"]) == 24
            assert att["relationships"]["message"]["data"]["id"] == m["id"]
            assert att["links"]["self"] == f"/v1/messages/{m['id']}/attachments/{att['id']}"
    # the option changes nothing but attachments: same messages, same order
    none = make(conversations=40, attachment_share=0.0)
    assert none.attachment_count() == 0
    tn = none.truth(["messages", "conversations", "notes"])
    assert [m["id"] for m in tn["messages"]] == [m["id"] for m in ta["messages"]]
    assert all(m["relationships"]["attachments"] == {"data": []} for m in tn["messages"])
    assert tn["conversations"] == a.truth(["conversations"])["conversations"]
    a.options.message_attachment_refs = False
    assert all("attachments" not in m["relationships"] for m in a.truth(["messages"])["messages"])


def test_attachment_list_paging_and_single_item(kids):
    conv = max(kids.store.conversations, key=lambda c: (len(kids.attachment_ids(c["id"])), c["id"]))
    cid = conv["id"]
    want = kids.attachment_ids(cid)
    assert len(want) >= 5
    path = f"/v1/conversations/{cid}/attachments"
    first = get(kids, path, pageSize=2).json()
    assert first["meta"] == {}
    assert first["links"]["self"] == f"{path}?page=1&pageSize=2"
    assert first["links"]["next"] == f"{path}?page=2&pageSize=2"
    assert first["links"]["prev"] is None
    items, page = [], 1
    while True:
        data = get(kids, path, page=page, pageSize=2).json()
        items += data["data"]
        if data["links"]["next"] is None:
            break
        page += 1
    assert page == math.ceil(len(want) / 2)
    assert all("id" not in item for item in items)  # as Kustomer's list example
    ids = [item["links"]["self"].rsplit("/", 1)[1] for item in items]
    assert ids == want
    # messages list order, and every message's refs point at the listed ones
    msgs = get(kids, f"/v1/conversations/{cid}/messages").json()["data"]
    refs = [r["id"] for m in msgs for r in m["relationships"]["attachments"]["data"]]
    assert refs == want
    for item in items:
        assert item["type"] == "attachment"
        assert set(item["attributes"]) == {"name", "contentType", "contentLength", "redacted"}
        assert set(item["relationships"]) == {"org", "message"}
        related = item["links"]["related"]
        assert related.startswith("https://")
        assert "X-Amz-Expires=600" in related
        aid = item["links"]["self"].rsplit("/", 1)[1]
        assert f"/attachments/{kids.store.org_id}/{aid}-" in related
        one = get(kids, item["links"]["self"]).json()["data"]
        assert one["id"] == aid
        assert _without_related({k: v for k, v in one.items() if k != "id"}) == _without_related(
            item
        )
    # pageSize is clamped to 100 like the other per-conversation lists
    assert len(get(kids, path, pageSize=500).json()["data"]) == len(want)
    # single item: the message must be the attachment's own
    mid = items[0]["relationships"]["message"]["data"]["id"]
    other = next(m["id"] for m in msgs if m["id"] != mid)
    aid = ids[0]
    assert get(kids, f"/v1/messages/{other}/attachments/{aid}").status_code == 404
    assert get(kids, f"/v1/messages/{mid}/attachments/{'0' * 24}").status_code == 404
    assert get(kids, f"/v1/messages/{'0' * 24}/attachments/{aid}").status_code == 404
    # a conversation without attachments lists none
    bare = next(c for c in kids.store.conversations if not kids.attachment_ids(c["id"]))
    empty = get(kids, f"/v1/conversations/{bare['id']}/attachments").json()
    assert empty["data"] == []
    assert empty["links"]["next"] is None


def test_child_lists_without_links(kids):
    conv = max(kids.store.conversations, key=lambda c: len(kids.attachment_ids(c["id"])))
    cid = conv["id"]
    kids.options.child_list_links = False
    try:
        r = get(kids, f"/v1/conversations/{cid}/attachments", pageSize=2).json()
        assert set(r) == {"meta", "data"}
        r = get(kids, f"/v1/conversations/{cid}/events", pageSize=2).json()
        assert set(r) == {"meta", "data"}
        atts = _pages(kids, f"/v1/conversations/{cid}/attachments", 2)
        assert [a["links"]["self"].rsplit("/", 1)[1] for a in atts] == kids.attachment_ids(cid)
        events = _pages(kids, f"/v1/conversations/{cid}/events", 1)
        assert [e["id"] for e in events] == kids.event_ids(cid)
        # other lists keep their links
        assert "links" in get(kids, f"/v1/conversations/{cid}/messages").json()
    finally:
        kids.options.child_list_links = True


def test_child_lists_role_gates_and_unknown_conversations(kids):
    cid = max(kids.store.conversations, key=lambda c: len(kids.attachment_ids(c["id"])))["id"]
    att = get(kids, f"/v1/conversations/{cid}/attachments").json()["data"][0]["links"]["self"]
    for path in (f"/v1/conversations/{cid}/attachments", att):
        r = get(kids, path, key="noatt")
        assert r.status_code == 403
        assert "org.user.attachment.read" in r.json()["errors"][0]["detail"]
        assert get(kids, path, key="noatt401").status_code == 401
        assert get(kids, path, key="noevent").status_code == 200
    r = get(kids, f"/v1/conversations/{cid}/events", key="noevent")
    assert r.status_code == 403
    assert "org.permission.event.read" in r.json()["errors"][0]["detail"]
    assert get(kids, f"/v1/conversations/{cid}/events", key="noatt").status_code == 200
    roles = get(kids, "/v1/auth/tokens/current").json()["data"]["attributes"]["roles"]
    assert {"org.permission.attachment.read", "org.user.event.read"} <= set(roles)
    for child in ("attachments", "events", "messages"):
        r = get(kids, f"/v1/conversations/{'0' * 24}/{child}")
        assert r.status_code == 404
        assert r.json()["errors"][0]["status"] == 404
    with pytest.raises(KeyError):
        kids.attachment_ids("0" * 24)


def test_events_follow_the_conversation_history(kids):
    store = kids.store
    for conv in store.conversations:
        events = get(kids, f"/v1/conversations/{conv['id']}/events").json()["data"]
        assert [e["id"] for e in events] == kids.event_ids(conv["id"])
        names = [e["attributes"]["name"] for e in events]
        assert names[0] == "kustomer.conversation.create"
        assert "changes" not in events[0]["attributes"]  # as in the OAS example
        assert set(names[1:]) <= {"kustomer.conversation.update"}
        stamps = [e["attributes"]["createdAt"] for e in events]
        assert stamps == sorted(stamps)
        assert stamps[0] == fmt_ms(conv["created"])
        status = [e["attributes"]["changes"]["attributes"].get("status") for e in events[1:]]
        done = [s for s in status if s and s["after"] == "done"]
        reopened = [s for s in status if s and s["before"] == "done" and s["after"] == "open"]
        assert len(done) == conv["doneCount"]
        assert len(reopened) == conv["reopenCount"]
        if conv["lastDone"] is not None:
            last_done = [
                e for e in events[1:] if "doneCount" in e["attributes"]["changes"]["attributes"]
            ]
            assert last_done[-1]["attributes"]["createdAt"] == fmt_ms(conv["lastDone"]["at"])
        for e in events:
            assert e["type"] == "customer_event"
            assert len(e["id"]) == 24
            rel = e["relationships"]
            assert rel["conversation"]["data"]["id"] == conv["id"]
            assert rel["customer"]["data"]["id"] == store.customers[conv["cust"]]["id"]
            assert e["attributes"]["location"] is None
            assert e["attributes"]["meta"] is None
    assert kids.event_count() == sum(len(kids.event_ids(c["id"])) for c in store.conversations)
    assert len({i for c in store.conversations for i in kids.event_ids(c["id"])}) == (
        kids.event_count()
    )
    cid = store.conversations[0]["id"]
    desc = get(kids, f"/v1/conversations/{cid}/events", sort="desc").json()["data"]
    assert [e["id"] for e in desc] == kids.event_ids(cid)[::-1]


def test_events_grow_with_mutations(sb):
    conv = next(
        c
        for c in sb.truth(["conversations"])["conversations"]
        if c["attributes"]["status"] == "done"
    )
    cid = conv["id"]
    path = f"/v1/conversations/{cid}/events"
    before = sb.event_ids(cid)
    total = sb.event_count()
    sb.advance_clock(5)
    sb.reopen(cid)
    sb.advance_clock(5)
    sb.resolve(cid)
    sb.advance_clock(5)
    tags = [t["id"] for t in sb.truth(["tags"])["tags"][:2]]
    sb.set_tags(cid, tags)
    sb.advance_clock(5)
    sb.set_custom(cid, {"escalatedBool": True})
    sb.advance_clock(5)
    sb.add_note(cid, body="checked")
    events = get(sb, path).json()["data"]
    assert [e["id"] for e in events[: len(before)]] == before  # history is kept
    new = events[len(before) :]
    assert len(new) == 5
    assert sb.event_count() == total + 5
    assert [e["id"] for e in events] == sb.event_ids(cid)
    changes = [e["attributes"]["changes"]["attributes"] for e in new]
    assert changes[0]["status"] == {"op": "replace", "before": "done", "after": "open"}
    assert changes[0]["reopenCount"]["after"] == conv["attributes"]["reopenCount"] + 1
    assert changes[1]["status"] == {"op": "replace", "before": "open", "after": "done"}
    assert changes[1]["doneCount"]["after"] == conv["attributes"]["doneCount"] + 1
    assert changes[2]["tags"]["after"] == tags
    assert changes[3]["custom"]["after"]["escalatedBool"] is True
    assert changes[4]["noteCount"]["after"] == conv["attributes"]["noteCount"] + 1
    for change in changes:
        assert {"updatedAt", "modifiedAt"} <= set(change)
    # a user acted on reopen/resolve/note (user 0 here), nobody named on tags/custom
    who = [e["relationships"].get("createdBy") for e in new]
    assert [w is not None for w in who] == [True, True, False, False, True]
    resolved = _conv(sb, cid)
    assert new[1]["attributes"]["createdAt"] == resolved["lastDone"]["createdAt"]
    assert new[-1]["attributes"]["createdAt"] == resolved["updatedAt"]
    # the same ids on a second request (ids are stable)
    assert [e["id"] for e in get(sb, path).json()["data"]] == sb.event_ids(cid)
    summary = sb.simulate_activity(hours=1, seed=3)
    touched = set(summary["replied"]) | set(summary["tagged"]) | set(summary["resolved"])
    assert touched
    for tid in touched:
        ids = sb.event_ids(tid)
        assert len(ids) == len(set(ids)) >= 2


def test_reply_that_reopens_has_its_attachments_listed(sb):
    conv = next(
        c
        for c in sb.truth(["conversations"])["conversations"]
        if c["attributes"]["status"] == "done"
    )
    cid = conv["id"]
    had = sb.attachment_ids(cid)
    total = sb.attachment_count()
    n_events = len(sb.event_ids(cid))
    sb.advance_clock(10)
    msg = sb.reply(cid, body="Here are the photos 📎", attachments=2)
    refs = [r["id"] for r in msg["relationships"]["attachments"]["data"]]
    assert len(refs) == 2
    assert _conv(sb, cid)["status"] == "open"
    listed = get(sb, f"/v1/conversations/{cid}/attachments").json()["data"]
    ids = [a["links"]["self"].rsplit("/", 1)[1] for a in listed]
    assert ids == had + refs == sb.attachment_ids(cid)
    assert all(a["relationships"]["message"]["data"]["id"] == msg["id"] for a in listed[-2:])
    assert sb.attachment_count() == total + 2
    one = get(sb, f"/v1/messages/{msg['id']}/attachments/{refs[1]}").json()["data"]
    assert one["id"] == refs[1]
    assert get(sb, f"/v1/messages/{msg['id']}").json()["data"] == msg
    # the reply is one event: the customer reopened the conversation
    events = get(sb, f"/v1/conversations/{cid}/events").json()["data"]
    assert len(events) == n_events + 1
    last = events[-1]
    assert last["attributes"]["changes"]["attributes"]["status"]["after"] == "open"
    assert last["attributes"]["changes"]["attributes"]["messageCount"]["after"] == (
        conv["attributes"]["messageCount"] + 1
    )
    assert "createdBy" not in last["relationships"]
    # without a pinned count the seed decides, the same way for the same message
    sb.options.attachment_share = 1.0
    other = sb.reply(cid, body="one more")
    assert 1 <= len(other["relationships"]["attachments"]["data"]) <= 3
    sb.options.attachment_share = 0.0
    assert get(sb, f"/v1/messages/{other['id']}").json()["data"]["relationships"][
        "attachments"
    ] == {"data": []}
    assert sb.attachment_ids(cid)[-2:] == refs  # pinned counts stay
    with pytest.raises(ValueError):
        sb.reply(cid, attachments=9)
    base = sb.base_url + "/__control"
    ctl = requests.get(base + "/attachment_ids", params={"conversation_id": cid}, timeout=5)
    assert ctl.json() == sb.attachment_ids(cid)
    ctl = requests.get(base + "/event_ids", params={"conversation_id": cid}, timeout=5)
    assert ctl.json() == sb.event_ids(cid)
    counts = requests.get(base + "/child_counts", timeout=5).json()
    assert counts == {"attachments": sb.attachment_count(), "events": sb.event_count()}


def test_token_path_answers_only_get(sb):
    url = sb.base_url + "/v1/auth/tokens/current"
    before = get(sb, "/v1/auth/tokens/current").json()
    for method in ("DELETE", "POST", "PUT", "PATCH"):
        r = requests.request(method, url, headers=hdr(), timeout=5)
        assert r.status_code == 405, method
        assert r.headers["Allow"] == "GET"
        err = r.json()["errors"][0]
        assert err["status"] == 405
        assert err["code"] == "method_not_allowed"
    assert requests.head(url, headers=hdr(), timeout=5).status_code == 405
    assert requests.delete(url, timeout=5).status_code == 401  # the key is checked first
    after = get(sb, "/v1/auth/tokens/current")
    assert after.status_code == 200
    assert after.json() == before  # nothing happened to the key
    assert before["data"]["attributes"]["lastTokenChars"] == KEY[-2:]  # a quarter of "test-key"
    assert sb.stats()["by_route"]["DELETE /v1/auth/tokens/current"] == {"405": 1, "401": 1}
    sb.options.extra_keys["sk-live-7f3a9c1e5b2d4f6a8c0e"] = KeySpec()
    tok = get(sb, "/v1/auth/tokens/current", key="sk-live-7f3a9c1e5b2d4f6a8c0e").json()
    assert tok["data"]["attributes"]["lastTokenChars"] == "6a8c0e"  # at most 6
    sb.options.fault_5xx_rate = 1.0
    try:
        assert requests.delete(url, headers=hdr(), timeout=5).status_code == 405  # never a fault
    finally:
        sb.options.fault_5xx_rate = 0.0
