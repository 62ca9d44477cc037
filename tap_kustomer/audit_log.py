"""Reading Kustomer's audit log (``GET /v1/audit-logs``), for its stream and for deletes.

The log is the only org-wide history Kustomer offers, and the only place a permanent
delete leaves a trace. Its list differs from the other lists:

- newest first, paged by a cursor: ``links.next`` is ``?count=N&before=<id of the
  page's last event>``; a body without ``links`` is paged the same way from the page's
  last id while pages come full;
- ``count`` up to 1,000 (default 100);
- ``filter[start]``/``filter[end]`` bound ``createdAt``; ``filter[objectType]`` takes
  one type, ``filter[include]`` adds more (OR). Both bounds are applied again here,
  and the walk stops at the first event older than the start, so a server that ignored
  them would cost pages, not wrong data.

UNCERTAIN (the OAS leaves it open; checked only against the local sandbox):
- whether ``links.next`` carries the filters of the request: the filters are added
  back to every followed link;
- whether ``filter[start]``/``filter[end]`` are inclusive: the start is taken as
  inclusive (an event at the bookmark may come again, upserted by ``id``);
- whether ``filter[objectType]`` takes a comma list: several types are sent as one
  ``filter[objectType]`` plus ``filter[include]`` with the rest, as the OAS describes;
- the object type of custom objects (``kobject``, not in the OAS's enum).
"""

from __future__ import annotations

import typing as t
from datetime import datetime

from tap_kustomer.errors import UnexpectedResponseError
from tap_kustomer.pagination import PageTrail
from tap_kustomer.search import format_timestamp, parse_timestamp

AUDIT_LOG_PATH = "/v1/audit-logs"
#: The largest page the endpoint serves (the OAS: "Default 100, maximum 1000").
MAX_PAGE_SIZE = 1000

RequestJson = t.Callable[..., dict[str, t.Any]]
"""``KustomerStream.request_json``: one GET with the run's budget and retries."""


def filter_params(
    object_types: t.Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, str]:
    """The query filters for these object types (empty: all) and creation-time bounds."""
    params: dict[str, str] = {}
    types = [str(kind).strip() for kind in object_types if str(kind).strip()]
    if types:
        params["filter[objectType]"] = types[0]
        if len(types) > 1:
            params["filter[include]"] = ",".join(types[1:])
    if start is not None:
        params["filter[start]"] = format_timestamp(start)
    if end is not None:
        params["filter[end]"] = format_timestamp(end)
    return params


def read_events(
    request_json: RequestJson,
    *,
    object_types: t.Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> t.Iterator[dict[str, t.Any]]:
    """Every event created in ``[start, end)`` of these object types, newest first."""
    filters = filter_params(object_types, start, end)
    trail = PageTrail(AUDIT_LOG_PATH)
    path, query = AUDIT_LOG_PATH, {"count": str(page_size), **filters}
    while True:
        body = request_json("GET", path, params=query)
        trail.read(path, query)
        page = events_of(body)
        older = False
        for event in page:
            created = parse_timestamp(created_at(event))
            if start is not None and created is not None and created < start:
                older = True
                continue
            if end is not None and created is not None and created >= end:
                continue
            yield event
        if older or not page:
            return
        following = trail.follow(body, path, query)
        if following is None:
            if "links" in body or len(page) < page_size or not page[-1].get("id"):
                return
            following = (path, {**query, "before": str(page[-1]["id"])})
        path = following[0] or path
        query = {**filters, "count": str(page_size), **following[1]}


def events_of(body: t.Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
    """The events of one page."""
    data = body.get("data")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        msg = f"Kustomer's answer on {AUDIT_LOG_PATH} has no 'data' list"
        raise UnexpectedResponseError(msg)
    return [event for event in data if isinstance(event, dict)]


def attribute(event: t.Mapping[str, t.Any], name: str) -> t.Any:
    """One attribute of an event, or None."""
    attributes = event.get("attributes")
    return attributes.get(name) if isinstance(attributes, dict) else None


def created_at(event: t.Mapping[str, t.Any]) -> t.Any:
    """When the event happened."""
    return attribute(event, "createdAt")
