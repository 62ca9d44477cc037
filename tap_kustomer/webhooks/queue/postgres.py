"""The PostgreSQL queue: for several receivers (or hosts) sharing one queue.

seq is an identity column. Identity values are handed out when a row is inserted,
not when it commits, so two writers could otherwise commit seq 101 before seq 100;
a reader that saw 101 and then deleted through it would delete 100 unseen. Every
write therefore holds one transaction-scoped advisory lock from before its insert
until its commit: seq order is commit order, and whatever a reader has not seen
yet has a larger seq than whatever it has. Writes are a few milliseconds, far
below Kustomer's delivery rate, so serialising them costs nothing that matters.

The connection is opened again after it broke (a restarted server, a dropped
network), so one outage makes some deliveries fail with 503 (which Kustomer
retries), not every delivery until the receiver is restarted.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t

import psycopg
from typing_extensions import override

from tap_kustomer.webhooks.queue.base import TABLE, QueuedConversation, QueuedEvent, QueueError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

# Kustomer wants an answer within a few seconds; a 503 sooner is better than a late 2xx.
CONNECT_TIMEOUT_SECONDS = 5
RECONNECT_PAUSE_SECONDS = 2.0
#: The advisory lock that orders writers (and schema creation); any constant unlikely elsewhere.
_LOCK_KEY = 0x7461_705F_6B75_7374  # "tap_kust"

_SCHEMA = (
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        received_at TIMESTAMPTZ NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS {TABLE}_conversation ON {TABLE} (conversation_id, seq)",
)
# The table name is a constant; every value is a bound parameter.
_INSERT = (
    f"INSERT INTO {TABLE} (event_id, event_name, conversation_id, received_at) "  # noqa: S608
    "VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
)
_PENDING = (
    "SELECT MAX(seq) AS last_seq, conversation_id, COUNT(*), MAX(received_at), "  # noqa: S608
    f"MIN(received_at) FROM {TABLE} "
    "WHERE seq > %s GROUP BY conversation_id ORDER BY last_seq LIMIT %s"
)
_DELETE = f"DELETE FROM {TABLE} WHERE seq <= %s"  # noqa: S608 - a constant table name
_MAX_SEQ = f"SELECT MAX(seq) FROM {TABLE}"  # noqa: S608 - a constant table name


class PostgresQueue:
    """A queue table in a PostgreSQL database; one connection, shared by threads under a lock."""

    def __init__(self, conninfo: str, *, display_url: str | None = None) -> None:
        """Connect and create the table if needed; ``conninfo`` is a libpq URL."""
        self._conninfo = conninfo
        self.display_url = display_url or "postgresql://…"
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[t.Any] | None = None
        self._next_attempt = 0.0  # monotonic time before which no new connection is tried
        try:
            with self._lock, self._transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except psycopg.Error as exc:
            self.close()
            msg = f"cannot use the PostgreSQL queue {self.display_url}: {_one_line(exc)}"
            raise QueueError(msg) from exc

    def _connection(self) -> psycopg.Connection[t.Any]:
        """The open connection, or a new one if there was none or it broke.

        After a failed attempt, calls fail at once for ``RECONNECT_PAUSE_SECONDS``:
        deliveries queued behind the lock then get their 503 quickly instead of
        each waiting for its own connect timeout.
        """
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        if time.monotonic() < self._next_attempt:
            msg = f"the PostgreSQL queue {self.display_url} is unreachable; retrying shortly"
            raise QueueError(msg)
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="tap-kustomer-webhooks",
            )
        except psycopg.Error:
            self._next_attempt = time.monotonic() + RECONNECT_PAUSE_SECONDS
            raise
        self._conn = conn
        return conn

    def _transaction(self) -> contextlib.AbstractContextManager[psycopg.Connection[t.Any]]:
        """A transaction holding the writers' advisory lock (caller holds ``self._lock``)."""
        return _locked_transaction(self._connection())

    def enqueue(self, events: t.Sequence[QueuedEvent]) -> int:
        """Insert ``events`` in one transaction, dropping known event ids; count the new."""
        if not events:
            return 0
        rows = [(e.event_id, e.event_name, e.conversation_id, e.received_at) for e in events]
        with self._lock, self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(_INSERT, rows)
            return max(cursor.rowcount, 0)

    def pending_after(self, seq: int, limit: int) -> list[QueuedConversation]:
        """Coalesced conversations with events after ``seq``, by their largest seq."""
        with self._lock:
            rows = self._connection().execute(_PENDING, (seq, limit)).fetchall()
        return [
            QueuedConversation(
                seq=int(last_seq),
                conversation_id=str(conversation_id),
                event_count=int(count),
                received_at=received_at,
                first_received_at=first_at,
            )
            for last_seq, conversation_id, count, received_at, first_at in rows
        ]

    def delete_through(self, seq: int) -> int:
        """Delete every event with seq <= ``seq``."""
        with self._lock, self._transaction() as conn:
            return conn.execute(_DELETE, (seq,)).rowcount

    def max_seq(self) -> int | None:
        """The largest seq in the queue, or None when it is empty."""
        with self._lock:
            row = self._connection().execute(_MAX_SEQ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @override
    def __repr__(self) -> str:
        return f"PostgresQueue({self.display_url!r})"


@contextlib.contextmanager
def _locked_transaction(conn: psycopg.Connection[t.Any]) -> Iterator[psycopg.Connection[t.Any]]:
    """A transaction on ``conn`` that first takes the writers' advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        yield conn


def _one_line(exc: BaseException) -> str:
    """The message of libpq, first line only (the rest is hints and context)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
