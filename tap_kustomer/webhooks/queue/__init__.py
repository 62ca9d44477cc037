"""The durable queue between the receiver and the targeted runs, chosen by URL.

``sqlite:///path/queue.db`` (the default) needs nothing but the standard library;
``postgresql://user@host:5432/db`` needs psycopg (in the ``webhooks`` extra), which
is imported only when such a URL is opened.
"""

from __future__ import annotations

from tap_kustomer.webhooks.queue.base import (
    TABLE,
    EventQueue,
    QueuedConversation,
    QueuedEvent,
    QueueError,
    utc_now,
)
from tap_kustomer.webhooks.queue.url import DEFAULT_QUEUE_URL, QueueLocation, parse_queue_url

__all__ = [
    "DEFAULT_QUEUE_URL",
    "TABLE",
    "EventQueue",
    "QueueError",
    "QueueLocation",
    "QueuedConversation",
    "QueuedEvent",
    "open_queue",
    "parse_queue_url",
    "utc_now",
]


def open_queue(url: str) -> EventQueue:
    """Open the queue ``url`` names, creating its table if needed.

    Raises :class:`~tap_kustomer.errors.ConfigurationError` for a URL that cannot
    work and :class:`QueueError` for a queue that cannot be reached.
    """
    location = parse_queue_url(url)
    if location.backend == "sqlite":
        from tap_kustomer.webhooks.queue.sqlite import SqliteQueue

        return SqliteQueue(location.target, display_url=location.display)
    try:
        from tap_kustomer.webhooks.queue.postgres import PostgresQueue
    except ImportError as exc:
        msg = (
            "a PostgreSQL queue needs psycopg: "
            "pip install 'kustomer-singer-tap[webhooks]' (or psycopg[binary])"
        )
        raise QueueError(msg) from exc
    return PostgresQueue(location.target, display_url=location.display)
