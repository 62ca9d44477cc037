"""What a thread is made of: messages and notes, and how to read their counts.

Shared by the cost model, the bulk reader, the lister and the planner, so every
part agrees on where a conversation keeps its counts and lifetime.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

Conversation = t.Mapping[str, t.Any]
"""A conversation record, or its planning view: ``{"id": ..., "attributes": {...}}``."""

#: Attributes bounding a conversation's lifetime: its items were created between the
#: first and the latest of these (``lastDone.createdAt`` counts too).
LIFETIME_ATTRIBUTES = ("createdAt", "updatedAt", "lastMessageAt", "lastActivityAt")


@dataclass(frozen=True)
class ThreadKind:
    """Messages or notes: where to list them, how to search them, how to count them."""

    name: str
    list_suffix: str
    query_context: str
    count_attribute: str


MESSAGES = ThreadKind("messages", "messages", "message", "messageCount")
NOTES = ThreadKind("notes", "notes", "note", "noteCount")


def conversation_id(conversation: Conversation) -> str:
    """The id a conversation is keyed by everywhere (a string, even if missing)."""
    return str(conversation.get("id"))


def count_of(conversation: Conversation, kind: ThreadKind) -> int | None:
    """The conversation's own count of ``kind`` items; None when absent or unusable."""
    value = (conversation.get("attributes") or {}).get(kind.count_attribute)
    return value if isinstance(value, int) and value >= 0 else None


def needing(conversations: t.Iterable[Conversation], kind: ThreadKind) -> dict[str, Conversation]:
    """The conversations that may have ``kind`` items (count not known to be 0), by id."""
    return {conversation_id(c): c for c in conversations if count_of(c, kind) != 0}


def conversation_of(item: t.Mapping[str, t.Any]) -> str | None:
    """The id of the conversation a message or note belongs to."""
    relationship = (item.get("relationships") or {}).get("conversation") or {}
    data = relationship.get("data") if isinstance(relationship, t.Mapping) else None
    return str(data["id"]) if isinstance(data, t.Mapping) and data.get("id") else None


def created_of(item: t.Mapping[str, t.Any]) -> str:
    """The item's creation time as text: held items sort by it, as they were written."""
    return str((item.get("attributes") or {}).get("createdAt") or "")
