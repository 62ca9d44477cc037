"""Planning attachments and events: which per-conversation lists are asked, and which not.

A hand-made API (no sandbox) answers the lists, so each rule is seen on its own:
attachments are skipped where the messages say there are none, events are listed
for every conversation, and lists without links are paged by number.
"""

from __future__ import annotations

import pytest

from tap_kustomer.pagination import PageTrail, numbered_next_page
from tap_kustomer.threads import ATTACHMENTS, EVENTS, MESSAGES, NOTES, ThreadPlanner
from tap_kustomer.threads.kinds import attachments_said, item_key


def conversation(cid: str, messages: int | None) -> dict:
    attributes = {"createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-02T00:00:00Z"}
    if messages is not None:
        attributes["messageCount"] = messages
    attributes["noteCount"] = 0
    return {"id": cid, "attributes": attributes}


def message(mid: str, attachments: list[str] | None) -> dict:
    relationships = {"conversation": {"data": {"type": "conversation", "id": mid.split("-")[0]}}}
    if attachments is not None:
        relationships["attachments"] = {
            "data": [{"type": "attachment", "id": a} for a in attachments]
        }
    return {"id": mid, "relationships": relationships}


def attachment(mid: str, aid: str) -> dict:
    return {
        "type": "attachment",
        "relationships": {"message": {"data": {"type": "message", "id": mid}}},
        "links": {"self": f"/v1/messages/{mid}/attachments/{aid}"},
    }


class FakeApi:
    """Per-conversation lists from dictionaries; records every path asked."""

    def __init__(self, lists: dict[str, list[dict]], *, links: bool = True) -> None:
        self.lists = lists
        self.links = links
        self.asked: list[tuple[str, int]] = []

    def request_json(self, method, path, params=None):
        assert method == "GET"
        params = dict(params or {})
        page, size = int(params.get("page", 1)), int(params.get("pageSize", 100))
        self.asked.append((path, page))
        items = self.lists.get(path, [])
        chunk = items[(page - 1) * size : page * size]
        body: dict = {"meta": {}, "data": chunk}
        if self.links:
            more = page * size < len(items)
            body["links"] = {"next": f"{path}?page={page + 1}&pageSize={size}" if more else None}
        return body

    def paths(self) -> set[str]:
        return {path for path, _ in self.asked}


def planner(api: FakeApi, *kinds) -> ThreadPlanner:
    return ThreadPlanner(api.request_json, None, kinds=kinds)


def test_attachments_are_listed_only_where_the_messages_name_some():
    api = FakeApi(
        {
            "/v1/conversations/a/messages": [message("a-1", []), message("a-2", ["x"])],
            "/v1/conversations/b/messages": [message("b-1", []), message("b-2", [])],
            "/v1/conversations/d/messages": [message("d-1", None)],
            "/v1/conversations/a/attachments": [attachment("a-2", "x")],
            "/v1/conversations/d/attachments": [attachment("d-1", "y"), attachment("d-1", "z")],
        }
    )
    plan = planner(api, MESSAGES, ATTACHMENTS)
    batch = [conversation("a", 2), conversation("b", 2), conversation("c", 0), conversation("d", 1)]
    threads = plan.fetch(batch)
    assert "/v1/conversations/b/attachments" not in api.paths()  # messages say none
    assert "/v1/conversations/c/attachments" not in api.paths()  # no messages at all
    assert "/v1/conversations/c/messages" not in api.paths()
    # d's message does not say (no attachments relationship): its list is asked.
    assert {p for p in api.paths() if p.endswith("/attachments")} == {
        "/v1/conversations/a/attachments",
        "/v1/conversations/d/attachments",
    }
    assert [item_key(a) for a in threads["a"].attachments] == ["/v1/messages/a-2/attachments/x"]
    assert len(threads["d"].attachments) == 2  # no ids, still both kept
    assert threads["b"].attachments == []
    assert threads["c"].attachments == []
    assert plan.stats.skipped_no_attachments == 1
    assert plan.stats.list_requests == {"messages": 3, "attachments": 2}


def test_without_messages_every_conversation_with_messages_has_its_attachments_listed():
    api = FakeApi({"/v1/conversations/a/attachments": [attachment("a-1", "x")]})
    plan = planner(api, ATTACHMENTS)
    threads = plan.fetch([conversation("a", 3), conversation("b", None), conversation("c", 0)])
    assert api.paths() == {"/v1/conversations/a/attachments", "/v1/conversations/b/attachments"}
    assert len(threads["a"].attachments) == 1


def test_events_are_listed_for_every_conversation_and_paged_by_number_without_links():
    events = [{"id": f"e{i}", "type": "customer_event"} for i in range(250)]
    api = FakeApi({"/v1/conversations/a/events": events}, links=False)
    plan = planner(api, NOTES, EVENTS)
    threads = plan.fetch([conversation("a", 1), conversation("b", 0)])
    assert [item["id"] for item in threads["a"].conversation_events] == [e["id"] for e in events]
    assert threads["b"].conversation_events == []
    assert sorted(api.asked) == [
        ("/v1/conversations/a/events", 1),
        ("/v1/conversations/a/events", 2),
        ("/v1/conversations/a/events", 3),
        ("/v1/conversations/b/events", 1),
    ]
    assert plan.stats.list_requests == {"conversation_events": 4}


def test_a_dropped_kind_is_no_longer_read():
    api = FakeApi({})
    plan = planner(api, MESSAGES, EVENTS)
    plan.drop(EVENTS.name)
    plan.fetch([conversation("a", 1)])
    assert api.paths() == {"/v1/conversations/a/messages"}
    assert not plan.reads("conversation_events")
    assert plan.reads("messages")


@pytest.mark.parametrize(
    ("messages", "said"),
    [
        ([], False),
        ([message("a-1", []), message("a-2", [])], False),
        ([message("a-1", []), message("a-2", ["x"])], True),
        ([message("a-1", []), message("a-2", None)], None),
    ],
)
def test_what_messages_say_about_attachments(messages, said):
    assert attachments_said(messages) is said


def test_numbered_paging_only_for_a_full_page_of_a_list_without_links():
    params = {"page": 2, "pageSize": 3}
    full, short = {"data": [1, 2, 3]}, {"data": [1, 2]}
    assert numbered_next_page(full, params) == ("", {"page": "3", "pageSize": "3"})
    assert numbered_next_page(short, params) is None
    assert numbered_next_page({**full, "links": {"next": None}}, params) is None
    assert numbered_next_page(full, None) is None
    trail = PageTrail("/v1/conversations/a/events")
    trail.read("/v1/conversations/a/events", params)
    assert trail.follow(full, "/v1/conversations/a/events", params) == (
        "/v1/conversations/a/events",
        {"page": "3", "pageSize": "3"},
    )
