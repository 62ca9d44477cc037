"""The SQLite queue: one file, no server, the default for a single receiver host.

Durability: WAL journal with ``synchronous=FULL``, so a committed event survives
a crash of the process and of the machine. Writers take the write lock at BEGIN
(``BEGIN IMMEDIATE``), so two processes on one file queue behind the busy timeout
instead of failing on a lock upgrade; seq is an AUTOINCREMENT key, so it never
repeats, not even after the newest rows were deleted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import typing as t
from datetime import datetime, timezone
from pathlib import Path

from typing_extensions import override

from tap_kustomer.webhooks.queue.base import TABLE, QueuedConversation, QueuedEvent, QueueError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0

_SCHEMA = (
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        received_at TEXT NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS {TABLE}_conversation ON {TABLE} (conversation_id, seq)",
)
# The table name is a constant; every value is a bound parameter.
_INSERT = (
    f"INSERT INTO {TABLE} (event_id, event_name, conversation_id, received_at) "  # noqa: S608
    "VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_PENDING = (
    "SELECT MAX(seq) AS last_seq, conversation_id, COUNT(*), MAX(received_at), "  # noqa: S608
    f"MIN(received_at) FROM {TABLE} "
    "WHERE seq > ? GROUP BY conversation_id ORDER BY last_seq LIMIT ?"
)

_DELETE = f"DELETE FROM {TABLE} WHERE seq <= ?"  # noqa: S608 - a constant table name
_MAX_SEQ = f"SELECT MAX(seq) FROM {TABLE}"  # noqa: S608 - a constant table name


class SqliteQueue:
    """A queue in one SQLite file; one connection, shared by threads under a lock."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
        display_url: str | None = None,
    ) -> None:
        """Open (creating if needed) the queue in ``path``; the directory must exist."""
        self.path = Path(path)
        self.display_url = display_url or f"sqlite:///{self.path}"
        if not self.path.parent.is_dir():
            msg = f"the queue directory {self.path.parent} does not exist; create it first"
            raise QueueError(msg)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # the lock below serialises every use
            )
        except sqlite3.Error as exc:
            msg = f"cannot open the SQLite queue {self.path}: {exc}"
            raise QueueError(msg) from exc
        try:
            self._configure(busy_timeout)
        except QueueError:
            self._conn.close()
            raise
        except sqlite3.Error as exc:
            self._conn.close()
            msg = f"cannot use {self.path} as a SQLite queue: {exc}"
            raise QueueError(msg) from exc

    def _configure(self, busy_timeout: float) -> None:
        """WAL, full sync, busy timeout, schema (idempotent)."""
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            msg = f"cannot use {self.path}: SQLite refused WAL mode (got {mode}); use a local disk"
            raise QueueError(msg)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return _immediate(self._conn)

    def enqueue(self, events: t.Sequence[QueuedEvent]) -> int:
        """Insert ``events`` in one transaction, dropping known event ids; count the new."""
        if not events:
            return 0
        rows = [
            (e.event_id, e.event_name, e.conversation_id, _utc_text(e.received_at)) for e in events
        ]
        with self._lock, self._transaction():
            cursor = self._conn.executemany(_INSERT, rows)
            return max(cursor.rowcount, 0)

    def pending_after(self, seq: int, limit: int) -> list[QueuedConversation]:
        """Coalesced conversations with events after ``seq``, by their largest seq."""
        with self._lock:
            rows = self._conn.execute(_PENDING, (seq, limit)).fetchall()
        return [
            QueuedConversation(
                seq=int(last_seq),
                conversation_id=str(conversation_id),
                event_count=int(count),
                received_at=datetime.fromisoformat(str(received_at)),
                first_received_at=datetime.fromisoformat(str(first_at)),
            )
            for last_seq, conversation_id, count, received_at, first_at in rows
        ]

    def delete_through(self, seq: int) -> int:
        """Delete every event with seq <= ``seq``."""
        with self._lock, self._transaction():
            return self._conn.execute(_DELETE, (seq,)).rowcount

    def max_seq(self) -> int | None:
        """The largest seq in the queue, or None when it is empty."""
        with self._lock:
            row = self._conn.execute(_MAX_SEQ).fetchone()
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the connection (committed events are already on disk)."""
        with self._lock:
            self._conn.close()

    @override
    def __repr__(self) -> str:
        return f"SqliteQueue({str(self.path)!r})"


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` when the block or the commit fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _utc_text(moment: datetime) -> str:
    """One fixed-width UTC form, so ``MAX`` over the text column is the latest time."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
