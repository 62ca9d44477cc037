"""Message attachments and conversation events, derived on request.

Orgs reach 100k conversations and a million messages, so neither is stored in bulk:

* a message's attachments are a pure function of (seed, message index,
  ``attachment_share``), so a message made later by a mutation gets them the same way;
  ``Store.attachment_overrides`` pins the count of one message (``reply(attachments=n)``);
* a conversation's events are derived from its state (create, each resolution and
  reopen, a snooze) until the store first changes it; from then on ``Store.conv_events``
  keeps that history and each mutation appends one event.
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .clock import fmt_ms, fmt_opt
from .records import Msg, make_id, parse_id, rel

if TYPE_CHECKING:
    from .store import Store

_MASK = (1 << 64) - 1
#: slots per message in an attachment id (index = message index * SLOTS + slot)
SLOTS = 4
#: a host that never resolves: links.related must look presigned, never be fetchable
S3_HOST = "https://kustomer-sandbox-attachments.s3.invalid"
#: name stem, extension, content type (spaces and non-ASCII names on purpose: the
#: related URL must percent-encode them)
FILES = [
    ("invoice", "pdf", "application/pdf"),
    ("photo", "jpg", "image/jpeg"),
    ("screenshot", "png", "image/png"),
    ("IMG_4821", "HEIC", "image/heic"),
    ("order details", "csv", "text/csv"),
    ("colis abîmé", "jpeg", "image/jpeg"),
    (
        "Rückgabe-Formular",
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("voice note", "m4a", "audio/mp4"),
    ("error log", "txt", "text/plain"),
    ("領収書", "pdf", "application/pdf"),
]
CREATE = "kustomer.conversation.create"
UPDATE = "kustomer.conversation.update"
#: generated history ids: index = conversation index << _EVENT_BITS | position
_EVENT_BITS = 5


def _mix(x: int) -> int:
    """splitmix64: a well-spread 64-bit hash, stable across runs (unlike ``hash()``)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def seed_key(seed: int) -> int:
    """The attachments' own stream of the seed (drawing from the generator's random
    would shift every other record); kept as ``Store.attachment_seed``."""
    return _mix((seed & _MASK) ^ 0xA77AC4ED)


def _message_hash(store: Store, midx: int) -> int:
    return _mix(store.attachment_seed ^ midx)


# -- attachments ---------------------------------------------------------------------------


class Attachment:
    """One attachment of one message (made on demand, never stored)."""

    __slots__ = ("content_type", "id", "length", "msg", "name", "redacted", "slot")

    def __init__(
        self,
        id_: str,
        msg: int,
        slot: int,
        name: str,
        content_type: str,
        length: int,
        redacted: bool,
    ) -> None:
        self.id = id_
        self.msg = msg
        self.slot = slot
        self.name = name
        self.content_type = content_type
        self.length = length
        self.redacted = redacted


def attachment_count(store: Store, m: Msg) -> int:
    """How many attachments message ``m`` has (0..3; a pinned count wins)."""
    pinned = store.attachment_overrides.get(m.idx)
    if pinned is not None:
        return pinned
    share = store.options.attachment_share
    if share <= 0:
        return 0
    h = _message_hash(store, m.idx)
    if (h >> 11) / float(1 << 53) >= share:
        return 0
    return 1 + (h & 0xFFFF) % 3


def _attachment(store: Store, m: Msg, slot: int) -> Attachment:
    h = _mix(_message_hash(store, m.idx) ^ ((slot + 1) * 0x5851F42D4C957F2D & _MASK))
    stem, ext, content_type = FILES[h % len(FILES)]
    return Attachment(
        make_id("attachment", m.idx * SLOTS + slot, m.created, store.salt),
        m.idx,
        slot,
        f"{stem}.{ext}",
        content_type,
        200 + (h >> 8) % 8_000_000,
        # a redacted message's files are redacted too; a few others on their own
        m.v % 211 == 0 or (h >> 40) % 40 == 0,
    )


def attachment_ids_of(store: Store, m: Msg) -> list[str]:
    """Ids of message ``m``'s attachments (cheaper than building them: every message
    rendering needs these)."""
    base = m.idx * SLOTS
    return [
        make_id("attachment", base + slot, m.created, store.salt)
        for slot in range(attachment_count(store, m))
    ]


def attachments_of(store: Store, m: Msg) -> list[Attachment]:
    """The attachments of message ``m`` in slot order."""
    return [_attachment(store, m, slot) for slot in range(attachment_count(store, m))]


def conversation_attachments(store: Store, conv: dict[str, Any]) -> list[Attachment]:
    """Every attachment of the conversation's messages, in the messages list's order."""
    msgs = sorted((store.messages[i] for i in conv["msgs"]), key=lambda m: (m.created, m.id))
    return [a for m in msgs for a in attachments_of(store, m)]


def find_attachment(store: Store, id_: str) -> Attachment | None:
    """The attachment with this id, or None (the id names its message and slot)."""
    parsed = parse_id(id_)
    if parsed is None or parsed[0] != "attachment":
        return None
    midx, slot = divmod(parsed[1], SLOTS)
    if midx >= len(store.messages):
        return None
    m = store.messages[midx]
    if slot >= attachment_count(store, m):
        return None
    found = _attachment(store, m, slot)
    return found if found.id == id_ else None


def render_attachment(store: Store, a: Attachment, *, with_id: bool, now_ms: int) -> dict[str, Any]:
    """JSON:API attachment. Kustomer's list example has no top-level ``id`` (only
    ``links.self`` names it) while the single-item example has one, hence ``with_id``.
    ``links.related`` is presigned at ``now_ms`` (so it changes between requests)."""
    m = store.messages[a.msg]
    org = store.org_id
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms // 1000))
    signature = hashlib.sha256(f"{a.id}|{stamp}|{store.salt}".encode()).hexdigest()
    related = (
        f"{S3_HOST}/attachments/{org}/{a.id}-{quote(a.name, safe='')}"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=SANDBOXACCESSKEY%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date={stamp}&X-Amz-Expires=600&X-Amz-Signature={signature}"
        "&X-Amz-SignedHeaders=host"
    )
    out: dict[str, Any] = {"id": a.id} if with_id else {}
    out.update(
        type="attachment",
        attributes={
            "name": a.name,
            "contentType": a.content_type,
            "contentLength": a.length,
            "redacted": a.redacted,
        },
        relationships={
            "org": rel("org", org, "orgs"),
            "message": rel("message", m.id, "messages"),
        },
        links={"self": f"/v1/messages/{m.id}/attachments/{a.id}", "related": related},
    )
    return out


# -- conversation events ---------------------------------------------------------------------


class Event:
    """One conversation event; ``changes`` is ``changes.attributes`` (None on create)."""

    __slots__ = ("at", "changes", "id", "name", "user")

    def __init__(
        self, id_: str, at: int, name: str, user: int | None, changes: dict[str, Any] | None
    ) -> None:
        self.id = id_
        self.at = at
        self.name = name
        self.user = user
        self.changes = changes


def _change(before: Any, after: Any) -> dict[str, Any]:
    op = "add" if before is None else ("remove" if after is None else "replace")
    return {"op": op, "before": before, "after": after}


Step = tuple[int, str, "int | None", "dict[str, Any] | None"]


def _reopen_time(store: Store, conv: dict[str, Any], done_at: int) -> int:
    """When a conversation reopened after ``done_at``: its next message, else halfway
    to its last update (never after that update)."""
    latest = max(done_at, conv["updated"])
    nxt = next(
        (m.created for i in conv["msgs"] if (m := store.messages[i]).created > done_at), None
    )
    at = nxt if nxt is not None else done_at + (latest - done_at) // 2
    return min(at, latest)


def _plan(store: Store, conv: dict[str, Any]) -> list[Step]:
    """The history a conversation's state implies: create, each resolution (the first
    and last at firstDone/lastDone, others spread between), a reopen after each
    resolution that ``reopenCount`` accounts for, and a snooze if snoozed."""
    created = conv["created"]
    steps: list[Step] = [(created, CREATE, conv["createdBy"], None)]
    last = conv["lastDone"]
    n_done = conv["doneCount"] if last is not None else 0
    if n_done:
        first = conv["firstDone"] or last
        lo, hi = max(created, first["at"]), max(created, last["at"])
        times = [hi] if n_done == 1 else [lo + (hi - lo) * k // (n_done - 1) for k in range(n_done)]
        reopens = min(conv["reopenCount"], n_done)
        for k, at in enumerate(times):
            steps.append(
                (
                    at,
                    UPDATE,
                    last["by"],
                    {"status": _change("open", "done"), "doneCount": _change(k, k + 1)},
                )
            )
            if k < reopens:
                again = (
                    (at + times[k + 1]) // 2 if k + 1 < n_done else _reopen_time(store, conv, at)
                )
                steps.append(
                    (
                        again,
                        UPDATE,
                        None,  # a customer's message reopened it
                        {"status": _change("done", "open"), "reopenCount": _change(k, k + 1)},
                    )
                )
    if conv["status"] == "snoozed" and conv["snooze"] is not None:
        steps.append(
            (
                max(created, conv["updated"]),
                UPDATE,
                None,
                {
                    "status": _change("open", "snoozed"),
                    "snooze": _change(None, fmt_ms(conv["snooze"])),
                },
            )
        )
    return steps


def history(store: Store, conv: dict[str, Any]) -> list[Event]:
    """Events derived from the conversation's state (ids from its index and position)."""
    base = conv["idx"] << _EVENT_BITS
    return [
        Event(make_id("event", base | pos, at, store.salt), at, name, user, changes)
        for pos, (at, name, user, changes) in enumerate(_plan(store, conv))
    ]


def conversation_events(store: Store, conv: dict[str, Any]) -> list[Event]:
    """The events ``GET /v1/conversations/{id}/events`` lists: createdAt ascending,
    ties in the order they happened."""
    kept = store.conv_events.get(conv["idx"])
    events = list(kept) if kept is not None else history(store, conv)
    events.sort(key=lambda e: e.at)
    return events


def event_count(store: Store, conv: dict[str, Any]) -> int:
    """How many events the conversation has (without building them)."""
    kept = store.conv_events.get(conv["idx"])
    return len(kept) if kept is not None else len(_plan(store, conv))


def event_view(store: Store, conv: dict[str, Any]) -> dict[str, Any]:
    """The conversation attributes an update event reports changes of (fresh copies)."""
    msgs = conv["msgs"]
    last = store.messages[msgs[-1]] if msgs else None
    return {
        "status": conv["status"],
        "messageCount": len(msgs),
        "noteCount": len(conv["notes"]),
        "lastMessageAt": fmt_opt(last.created if last else None),
        "lastMessageDirection": last.direction if last else None,
        "doneCount": conv["doneCount"],
        "reopenCount": conv["reopenCount"],
        "snooze": fmt_opt(conv["snooze"]),
        "tags": list(conv["tags"]),
        "custom": dict(conv["custom"]),
        "updatedAt": fmt_ms(conv["updated"]),
        "modifiedAt": fmt_ms(conv["modified"]),
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``changes.attributes`` between two event views: ``{name: {op, before, after}}``."""
    return {k: _change(before.get(k), v) for k, v in after.items() if before.get(k) != v}


def render_event(store: Store, conv: dict[str, Any], e: Event) -> dict[str, Any]:
    """JSON:API ``customer_event`` as in the OAS example of the events list."""
    cust = store.customers[conv["cust"]]["id"]
    attrs: dict[str, Any] = {
        "name": e.name,
        "type": "conversation",
        "publishedAt": fmt_ms(e.at),
        "createdAt": fmt_ms(e.at),
        "updatedAt": fmt_ms(e.at),
        "modifiedAt": fmt_ms(e.at),
    }
    if e.changes is not None:  # the OAS example's create event has no changes
        attrs["changes"] = {"attributes": copy.deepcopy(e.changes), "relationships": {}}
    attrs.update(location=None, meta=None)
    relationships: dict[str, Any] = {"org": rel("org", store.org_id, "orgs")}
    if e.user is not None:
        uid = store.users[e.user]["id"]
        relationships["createdBy"] = rel("user", uid, "users")
        relationships["modifiedBy"] = rel("user", uid, "users")
    relationships["customer"] = rel("customer", cust, "customers")
    relationships["conversation"] = rel("conversation", conv["id"], "conversations")
    return {
        "type": "customer_event",
        "id": e.id,
        "attributes": attrs,
        "relationships": relationships,
        "links": {"self": f"/v1/customers/{cust}/events/{e.id}"},
    }


def begin_change(store: Store, conv: dict[str, Any]) -> dict[str, Any]:
    """Call before a mutation changes ``conv``: keeps the history its current state
    implies (from now on the store holds its events) and returns its event view."""
    if conv["idx"] not in store.conv_events:
        store.conv_events[conv["idx"]] = history(store, conv)
    return event_view(store, conv)


def record_change(
    store: Store, conv: dict[str, Any], before: dict[str, Any], at: int, user: int | None
) -> None:
    """Call after the mutation: appends its update event (ids from a global counter)."""
    idx = store.event_counter
    store.event_counter += 1
    changes = diff(before, event_view(store, conv))
    store.conv_events[conv["idx"]].append(
        Event(make_id("event_log", idx, at, store.salt), at, UPDATE, user, changes)
    )
