"""Which conversation a Kustomer event is about, read from its envelope.

An event is ``{"id", "name", "data": {...}, ...}`` where ``data`` is the resource
as ``GET /v1/<resource>/{id}`` returns it. Conversation events carry the
conversation itself; message events link to theirs. Every other event (customer,
user, team...) says nothing a conversation refresh needs, so it is ignored.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass

CONVERSATION_PREFIX = "kustomer.conversation."
MESSAGE_PREFIX = "kustomer.message."
# Ids are Mongo object ids (24 hex digits); anything far longer is not an id.
_MAX_ID_LENGTH = 256


class EnvelopeError(ValueError):
    """The body is not a Kustomer event this receiver can use; the message says why."""


@dataclass(frozen=True)
class Envelope:
    """An event's id and name, and its conversation (None for events that are ignored)."""

    event_id: str
    event_name: str
    conversation_id: str | None


def read_envelope(body: bytes) -> Envelope:
    """Parse ``body``; raise :class:`EnvelopeError` with a one-line reason."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
        raise EnvelopeError("body is not JSON") from None
    if not isinstance(event, dict):
        raise EnvelopeError("body is not a JSON object")
    event_id = _id(event.get("id"), "id")
    name = event.get("name")
    if not isinstance(name, str) or not name.strip():
        raise EnvelopeError("event has no name")
    data = event.get("data")
    if not isinstance(data, dict):
        raise EnvelopeError("event has no data object")
    if name.startswith(CONVERSATION_PREFIX):
        conversation_id: str | None = _id(data.get("id"), "data.id")
    elif name.startswith(MESSAGE_PREFIX):
        link = _path(data, "relationships", "conversation", "data", "id")
        conversation_id = _id(link, "data.relationships.conversation.data.id")
    else:
        conversation_id = None
    return Envelope(event_id, name, conversation_id)


def _path(value: object, *keys: str) -> object:
    """``value[k1][k2]...``, or None where the path breaks off."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _id(value: t.Any, where: str) -> str:
    """A non-empty id string of sane length, else :class:`EnvelopeError` naming ``where``."""
    if not isinstance(value, str) or not value.strip():
        msg = f"event has no {where}"
        raise EnvelopeError(msg)
    if len(value) > _MAX_ID_LENGTH:
        msg = f"event {where} is longer than {_MAX_ID_LENGTH} characters"
        raise EnvelopeError(msg)
    return value.strip()
