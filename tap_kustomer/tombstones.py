"""Permanent deletes of conversations, customers, companies and kobjects.

Kustomer deletes these for good: search no longer finds them and GET answers 404, so
an incremental stream would never learn of them. The audit log keeps a delete event
for each; this module reads those events, and the streams write one tombstone per
deleted id: a record with ``id`` and ``_sdc_deleted_at`` (the other columns null).

UNCERTAIN: how the log names a delete. Kustomer's example shows only
``eventVerb: update`` / ``eventName: kustomer.conversation.update``; both
``eventVerb == "delete"`` and an ``eventName`` ending in ``.delete`` count here.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime

from tap_kustomer.audit_log import MAX_PAGE_SIZE, RequestJson, attribute, read_events
from tap_kustomer.search import format_timestamp, parse_timestamp

#: Where a stream's state keeps the end of the last window read for deletes.
DELETES_KEY = "deletes_read_through"

#: The audit log's object type of each stream with tombstones.
OBJECT_TYPES: dict[str, str] = {
    "conversations": "conversation",
    "customers": "customer",
    "companies": "company",
    "kobjects": "kobject",
}


@dataclass(frozen=True)
class Tombstone:
    """One permanently deleted object."""

    object_type: str
    id: str
    deleted_at: str


def is_delete(event: t.Mapping[str, t.Any]) -> bool:
    """Whether an audit log event records a delete (either spelling)."""
    verb = attribute(event, "eventVerb")
    name = attribute(event, "eventName")
    return (isinstance(verb, str) and verb.lower() == "delete") or (
        isinstance(name, str) and name.lower().endswith(".delete")
    )


def matches_type(event: t.Mapping[str, t.Any], object_type: str) -> bool:
    """Whether the event's object is of ``object_type`` (``kobject.<klass>`` too)."""
    kind = attribute(event, "objectType")
    if not isinstance(kind, str):
        return True  # the server already filtered on the type
    return kind == object_type or kind.startswith(f"{object_type}.")


def read_deletes(
    request_json: RequestJson,
    object_type: str,
    start: datetime,
    end: datetime,
    *,
    page_size: int = MAX_PAGE_SIZE,
) -> list[Tombstone]:
    """The objects of ``object_type`` deleted in ``[start, end)``, oldest first, each once.

    An id deleted twice (a retried delete) keeps its latest time.
    """
    latest: dict[str, Tombstone] = {}
    for event in read_events(
        request_json, object_types=(object_type,), start=start, end=end, page_size=page_size
    ):
        if not is_delete(event) or not matches_type(event, object_type):
            continue
        object_id = attribute(event, "objectId")
        when = parse_timestamp(attribute(event, "createdAt"))
        if not object_id or when is None:
            continue
        stamp = format_timestamp(when)
        known = latest.get(str(object_id))
        if known is None or known.deleted_at < stamp:
            latest[str(object_id)] = Tombstone(object_type, str(object_id), stamp)
    return sorted(latest.values(), key=lambda tombstone: (tombstone.deleted_at, tombstone.id))
