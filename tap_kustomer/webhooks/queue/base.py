"""What every queue backend stores and offers, whatever database holds it.

A queue row is one webhook event reduced to what a targeted run needs: which
conversation to read again. Readers see conversations, not events: a conversation
touched by fifty events is read once (``pending_after`` coalesces), and the event's
``seq`` tells a reader how far it may delete once that read has landed.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone

from tap_kustomer.errors import KustomerTapError

#: One table name for both backends; prefixed because a PostgreSQL queue may share a database.
TABLE = "tap_kustomer_webhook_events"


class QueueError(KustomerTapError):
    """The queue cannot be opened or used (a missing directory, a refused connection)."""


@dataclass(frozen=True)
class QueuedEvent:
    """One accepted webhook event, as it goes into the queue."""

    event_id: str
    event_name: str
    conversation_id: str
    received_at: datetime

    def __post_init__(self) -> None:
        """Refuse naive times: rows from several hosts must compare in one time zone."""
        if self.received_at.tzinfo is None:
            msg = "received_at must be timezone-aware"
            raise ValueError(msg)


@dataclass(frozen=True)
class QueuedConversation:
    """A conversation with pending events, coalesced: read it once for all of them.

    ``seq`` is the largest seq among its pending events; ``event_count`` how many
    events were coalesced, ``received_at`` when the newest of them arrived and
    ``first_received_at`` when the oldest did (a targeted run compares it with the
    conversation's resolution time).
    """

    seq: int
    conversation_id: str
    event_count: int
    received_at: datetime
    #: When the oldest of its pending events arrived (None when unknown).
    first_received_at: datetime | None = None


class EventQueue(t.Protocol):
    """The queue interface both backends implement.

    Safe to call from several threads (each call takes the backend's own lock);
    several processes may share one queue (the database serialises their writes,
    and seq grows in commit order, so a reader never deletes a row it has not seen).
    """

    #: The queue URL with any password hidden, for log lines.
    display_url: str

    def enqueue(self, events: t.Sequence[QueuedEvent]) -> int:
        """Store ``events`` in one transaction; return how many were new.

        Returns only after COMMIT, so a caller may acknowledge the delivery.
        Events whose ``event_id`` is already queued are dropped (Kustomer delivers
        at least once).
        """
        ...

    def pending_after(self, seq: int, limit: int) -> list[QueuedConversation]:
        """Conversations with events after ``seq``, one entry each, oldest first.

        Ordered by each conversation's largest seq, so a reader that handles the
        first ``limit`` entries and then calls ``delete_through`` with the last
        entry's seq removes exactly their events and keeps every later one.
        """
        ...

    def delete_through(self, seq: int) -> int:
        """Delete every event with seq <= ``seq``; return how many were deleted."""
        ...

    def max_seq(self) -> int | None:
        """The largest seq in the queue, or None when it is empty."""
        ...

    def close(self) -> None:
        """Close the connection; the queue stays on disk (or in the database)."""
        ...


def utc_now() -> datetime:
    """The receive time of an event (aware, UTC)."""
    return datetime.now(timezone.utc)
