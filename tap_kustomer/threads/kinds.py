"""What a thread is made of: messages, notes, attachments, events; how to count them.

Shared by the cost model, the bulk reader, the lister and the planner, so every
part agrees on where a conversation keeps its counts and lifetime.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass

Conversation = t.Mapping[str, t.Any]
"""A conversation record, or its planning view: ``{"id": ..., "attributes": {...}}``."""

#: Attributes bounding a conversation's lifetime: its items were created between the
#: first and the latest of these (``lastDone.createdAt`` counts too).
LIFETIME_ATTRIBUTES = ("createdAt", "updatedAt", "lastMessageAt", "lastActivityAt")


@dataclass(frozen=True)
class ThreadKind:
    """One kind of a conversation's items: where to list them, search them, count them.

    ``query_context`` None: search cannot find them, so they are only ever listed per
    conversation; ``count_attribute`` None: the conversation does not say how many.
    """

    name: str
    list_suffix: str
    query_context: str | None = None
    count_attribute: str | None = None


MESSAGES = ThreadKind("messages", "messages", "message", "messageCount")
NOTES = ThreadKind("notes", "notes", "note", "noteCount")
ATTACHMENTS = ThreadKind("attachments", "attachments")
EVENTS = ThreadKind("conversation_events", "events")
#: Every kind, in the order a thread is read: attachments after messages, which
#: tell whether there are any.
ALL_KINDS = (MESSAGES, NOTES, ATTACHMENTS, EVENTS)


def conversation_id(conversation: Conversation) -> str:
    """The id a conversation is keyed by everywhere (a string, even if missing)."""
    return str(conversation.get("id"))


def count_of(conversation: Conversation, kind: ThreadKind) -> int | None:
    """The conversation's own count of ``kind`` items; None when absent or unusable."""
    if kind.count_attribute is None:
        return None
    value = (conversation.get("attributes") or {}).get(kind.count_attribute)
    return value if isinstance(value, int) and value >= 0 else None


def needing(conversations: t.Iterable[Conversation], kind: ThreadKind) -> dict[str, Conversation]:
    """The conversations that may have ``kind`` items (count not known to be 0), by id."""
    return {conversation_id(c): c for c in conversations if count_of(c, kind) != 0}


def related_id(record: t.Mapping[str, t.Any], name: str) -> str | None:
    """The id the record's ``name`` relationship points at (``conversation``, ``customer``)."""
    relationships = record.get("relationships")
    relationship = relationships.get(name) if isinstance(relationships, t.Mapping) else None
    data = relationship.get("data") if isinstance(relationship, t.Mapping) else None
    return str(data["id"]) if isinstance(data, t.Mapping) and data.get("id") else None


def conversation_of(item: t.Mapping[str, t.Any]) -> str | None:
    """The id of the conversation a message or note belongs to."""
    return related_id(item, "conversation")


def customer_of(conversation: Conversation) -> str | None:
    """The id of the customer a conversation is with (a planning view has none)."""
    return related_id(conversation, "customer")


def created_of(item: t.Mapping[str, t.Any]) -> str:
    """The item's creation time as text: held items sort by it, as they were written."""
    return str((item.get("attributes") or {}).get("createdAt") or "")


def item_key(item: t.Mapping[str, t.Any]) -> str:
    """What tells one listed item from another: its id, else its ``links.self``.

    Attachment lists give no top-level id; their ``links.self`` ends with it.
    """
    if item.get("id"):
        return str(item["id"])
    links = item.get("links")
    own = links.get("self") if isinstance(links, t.Mapping) else None
    return str(own) if own else json.dumps(item, sort_keys=True, default=str)


def attachments_said(messages: t.Iterable[t.Mapping[str, t.Any] | str]) -> bool | None:
    """Whether a thread's messages have attachments: False only if every one says none.

    Each message names its attachments in ``relationships.attachments.data``; a message
    without that relationship leaves the answer unknown (None), since whether the API
    always includes it is UNCERTAIN.
    """
    for message in messages:
        parsed = json.loads(message) if isinstance(message, str) else message
        relationship = (parsed.get("relationships") or {}).get("attachments")
        data = relationship.get("data") if isinstance(relationship, t.Mapping) else None
        if not isinstance(data, list):
            return None
        if data:
            return True
    return False
