"""The webhook receiver: signature, body checks, queue writes and answers, in process
(Starlette's TestClient) and as the real ``tap-kustomer-webhooks`` program (uvicorn),
including a kill -9 in the middle of a stream of deliveries; and ``register``
against a local fake of Kustomer's API.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import typing as t
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from queue import Empty, SimpleQueue

import pytest
import requests
from typing_extensions import override

with warnings.catch_warnings():
    # Python 3.10 has no httpx2 (Starlette's preferred test client library), so Starlette
    # warns there that it falls back to httpx: a test detail, not a call this project makes.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from tap_kustomer.errors import ConfigurationError
from tap_kustomer.webhooks import cli
from tap_kustomer.webhooks.queue import TABLE, QueuedConversation, QueuedEvent
from tap_kustomer.webhooks.queue.sqlite import SqliteQueue
from tap_kustomer.webhooks.receiver import DEFAULT_PATH, Counters, ReceiverSettings, create_app
from tap_kustomer.webhooks.signature import SIGNATURE_HEADER, sign
from tests.postgres import free_port
from tests.tap_harness import REPO, tap_env

TOKEN = "whk-test-token-0123456789abcdef"
PATH = DEFAULT_PATH
SCRIPT = Path(sys.executable).with_name("tap-kustomer-webhooks")


# -- events as Kustomer sends them (shapes from its documented test events) ----------------------


def conversation_event(
    event_id: str, conversation_id: str, name: str = "kustomer.conversation.update"
) -> dict[str, t.Any]:
    return {
        "id": event_id,
        "name": name,
        "org": "5f3c0a7e91d40b0900000000",
        "partition": "5f3c0a7e91d40b0900000000",
        "orgName": "acme",
        "data": {
            "type": "conversation",
            "id": conversation_id,
            "attributes": {"status": "open", "updatedAt": "2026-03-21T20:20:11.424Z"},
            "relationships": {"customer": {"data": {"type": "customer", "id": "cus1"}}},
            "links": {"self": f"/v1/conversations/{conversation_id}"},
        },
        "createdAt": "2026-03-21T20:20:11.435Z",
        "changes": {"attributes": {"status": {"op": "replace", "before": "done", "after": "open"}}},
        "persist": True,
        "client": "api-gw",
        "dataId": conversation_id,
    }


def message_event(event_id: str, conversation_id: str) -> dict[str, t.Any]:
    return {
        "id": event_id,
        "name": "kustomer.message.create",
        "org": "5f3c0a7e91d40b0900000000",
        "data": {
            "type": "message",
            "id": f"msg-{event_id}",
            "attributes": {"channel": "email", "direction": "in"},
            "relationships": {
                "conversation": {
                    "links": {"self": f"/v1/conversations/{conversation_id}"},
                    "data": {"type": "conversation", "id": conversation_id},
                },
                "customer": {"data": {"type": "customers", "id": "cus1"}},
            },
        },
        "createdAt": "2026-03-21T20:13:07.814Z",
        "changes": None,
    }


def customer_event(event_id: str) -> dict[str, t.Any]:
    return {
        "id": event_id,
        "name": "kustomer.customer.create",
        "data": {"type": "customer", "id": "cus1", "attributes": {}},
    }


def encode(event: dict[str, t.Any]) -> bytes:
    return json.dumps(event).encode()


def signed(body: bytes, token: str = TOKEN) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(token, body), "Content-Type": "application/json"}


# -- in process ---------------------------------------------------------------------------------


@pytest.fixture
def queue_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def make_client(queue_path: Path, **settings: t.Any) -> TestClient:
    options: dict[str, t.Any] = {"token": TOKEN, "max_body_bytes": 4096, **settings}
    return TestClient(create_app(SqliteQueue(queue_path), ReceiverSettings(**options)))


@pytest.fixture
def client(queue_path: Path) -> Iterator[TestClient]:
    with make_client(queue_path) as test_client:  # runs the lifespan: start, then close
        yield test_client


def queued_conversations(queue_path: Path) -> list[QueuedConversation]:
    queue = SqliteQueue(queue_path)  # a second connection: what is committed, not cached
    try:
        return queue.pending_after(0, 10_000)
    finally:
        queue.close()


def counters(client: TestClient) -> Counters:
    app: t.Any = client.app  # the Starlette app create_app built
    return t.cast("Counters", app.state.counters)


def post(client: TestClient, body: bytes, headers: dict[str, t.Any] | None = None) -> t.Any:
    return client.post(PATH, content=body, headers=signed(body) if headers is None else headers)


def test_signed_conversation_event_is_queued(client: TestClient, queue_path: Path) -> None:
    answer = post(client, encode(conversation_event("e1", "conv1")))
    assert answer.status_code == 202
    assert answer.json() == {"queued": True}
    [pending] = queued_conversations(queue_path)
    assert (pending.conversation_id, pending.event_count) == ("conv1", 1)


def test_message_event_queues_its_conversation(client: TestClient, queue_path: Path) -> None:
    assert post(client, encode(message_event("e1", "conv7"))).status_code == 202
    assert [c.conversation_id for c in queued_conversations(queue_path)] == ["conv7"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "signature missing"),
        ({SIGNATURE_HEADER: ""}, "signature missing"),
        ({SIGNATURE_HEADER: "0" * 64}, "signature wrong"),
        ({SIGNATURE_HEADER: "not hex at all"}, "signature wrong"),
        ({SIGNATURE_HEADER: b"caf\xe9"}, "signature wrong"),  # not ASCII: refused, not a 500
    ],
)
def test_missing_or_wrong_signature_is_401_and_queues_nothing(
    client: TestClient,
    queue_path: Path,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, t.Any],
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="tap_kustomer.webhooks")
    answer = post(client, encode(conversation_event("e1", "conv1")), headers)
    assert answer.status_code == 401
    assert answer.json() == {"error": reason}
    assert queued_conversations(queue_path) == []
    assert counters(client).rejected_signature == 1
    rejections = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1
    assert reason in rejections[0].getMessage()
    assert TOKEN not in caplog.text


def test_signature_of_another_token_or_body_is_wrong(client: TestClient) -> None:
    body = encode(conversation_event("e1", "conv1"))
    assert post(client, body, signed(body, token="another-token-123456")).status_code == 401
    other = encode(conversation_event("e2", "conv1"))
    assert post(client, body, {SIGNATURE_HEADER: sign(TOKEN, other)}).status_code == 401
    # The signature is over the raw bytes: the same JSON with other spacing is another body.
    respaced = json.dumps(conversation_event("e1", "conv1"), indent=1).encode()
    assert post(client, respaced, {SIGNATURE_HEADER: sign(TOKEN, body)}).status_code == 401
    upper = {SIGNATURE_HEADER: sign(TOKEN, body).upper()}
    assert post(client, body, upper).status_code == 202  # hex digits in either case


def test_signature_is_checked_before_the_body_is_parsed(client: TestClient) -> None:
    assert post(client, b"not json", {SIGNATURE_HEADER: "0" * 64}).status_code == 401


def test_duplicates_are_acknowledged_and_queued_once(client: TestClient, queue_path: Path) -> None:
    body = encode(conversation_event("e1", "conv1"))
    assert post(client, body).json() == {"queued": True}
    again = post(client, body)
    assert again.status_code == 202  # Kustomer must stop retrying it
    assert again.json() == {"queued": False, "duplicate": True}
    assert [c.event_count for c in queued_conversations(queue_path)] == [1]
    seen = counters(client)
    assert (seen.received, seen.enqueued, seen.duplicates) == (2, 1, 1)


def test_reordered_events_are_all_queued_and_coalesced(
    client: TestClient, queue_path: Path
) -> None:
    # Kustomer may deliver out of order: an update before its create, a message in between.
    deliveries = [
        conversation_event("e3", "conv1", "kustomer.conversation.update"),
        message_event("e2", "conv2"),
        conversation_event("e1", "conv1", "kustomer.conversation.create"),
        message_event("e4", "conv2"),
        conversation_event("e5", "conv3", "kustomer.conversation.update"),
    ]
    for event in deliveries:
        assert post(client, encode(event)).status_code == 202
    pending = queued_conversations(queue_path)
    assert [(c.conversation_id, c.event_count) for c in pending] == [
        ("conv1", 2),
        ("conv2", 2),
        ("conv3", 1),
    ]


def test_over_the_size_limit_is_413_without_reading_on(
    client: TestClient, queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tap_kustomer.webhooks")
    event = conversation_event("e1", "conv1")
    event["padding"] = "x" * 5000  # the client's limit is 4096 bytes
    body = encode(event)
    assert post(client, body).status_code == 413  # declared by Content-Length
    read: list[int] = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is applied while reading
        for start in range(0, len(body), 1024):
            read.append(start)
            yield body[start : start + 1024]

    answer = client.post(PATH, content=chunks(), headers=signed(body))
    assert answer.status_code == 413
    assert answer.json() == {"error": "body too large"}
    assert queued_conversations(queue_path) == []
    assert counters(client).too_large == 2
    assert "body over 4096 bytes" in caplog.text


def test_exactly_the_size_limit_is_accepted(queue_path: Path) -> None:
    body = encode(conversation_event("e1", "conv1"))
    with make_client(queue_path, max_body_bytes=len(body)) as client:
        assert post(client, body).status_code == 202


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe{}", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'{"name": "kustomer.conversation.update", "data": {"id": "c"}}', "event has no id"),
        (b'{"id": "e1", "data": {"id": "c"}}', "event has no name"),
        (b'{"id": "e1", "name": "kustomer.conversation.update"}', "event has no data object"),
        (b'{"id": "e1", "name": "kustomer.conversation.update", "data": {}}', "data.id"),
        (
            b'{"id": "e1", "name": "kustomer.message.create", "data": {"id": "m1"}}',
            "data.relationships.conversation.data.id",
        ),
        (b"[" * 100_000, "body is not JSON"),  # deep nesting: refused, not a crash
    ],
)
def test_not_an_event_is_400_and_logged(
    queue_path: Path, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="tap_kustomer.webhooks")
    with make_client(queue_path, max_body_bytes=200_000) as client:
        answer = post(client, body)
        assert answer.status_code == 400
        assert reason in answer.json()["error"]
        assert counters(client).rejected_body == 1
    assert queued_conversations(queue_path) == []
    assert reason in caplog.text


def test_other_event_names_are_acknowledged_counted_and_ignored(
    client: TestClient, queue_path: Path
) -> None:
    for n in range(3):
        answer = post(client, encode(customer_event(f"e{n}")))
        assert answer.status_code == 202
        assert answer.json() == {"ignored": True}
    assert queued_conversations(queue_path) == []
    health = client.get("/healthz").json()
    assert health["counters"]["ignored"] == 3
    assert health["counters"]["received"] == 3


class BrokenQueue:
    """A queue whose database is gone."""

    display_url = "sqlite:///broken.db"

    def enqueue(self, events: t.Sequence[QueuedEvent]) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    def pending_after(self, seq: int, limit: int) -> list[QueuedConversation]:
        return []

    def delete_through(self, seq: int) -> int:
        return 0

    def max_seq(self) -> int | None:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_queue_failure_is_503_and_healthz_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tap_kustomer.webhooks")
    app = create_app(BrokenQueue(), ReceiverSettings(token=TOKEN))
    with TestClient(app) as client:
        answer = post(client, encode(conversation_event("e1", "conv1")))
        assert answer.status_code == 503  # not 2xx: Kustomer retries
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "queue unavailable"
        assert health.json()["counters"]["queue_failures"] == 1
    assert "could not queue event e1 (kustomer.conversation.update)" in caplog.text
    assert "disk I/O error" in caplog.text


def test_a_locked_sqlite_queue_is_503_then_the_retry_is_accepted(queue_path: Path) -> None:
    queue = SqliteQueue(queue_path, busy_timeout=0.05)
    blocker = sqlite3.connect(queue_path, isolation_level=None)
    body = encode(conversation_event("e1", "conv1"))
    try:
        with TestClient(create_app(queue, ReceiverSettings(token=TOKEN))) as client:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the timeout
            assert post(client, body).status_code == 503
            blocker.execute("ROLLBACK")
            assert post(client, body).json() == {"queued": True}  # Kustomer's retry
    finally:
        blocker.close()
    assert [c.conversation_id for c in queued_conversations(queue_path)] == ["conv1"]


def test_healthz_has_counters_and_max_seq(client: TestClient) -> None:
    assert client.get("/healthz").json() == {
        "status": "ok",
        "signature_check": True,
        "counters": {
            "received": 0,
            "enqueued": 0,
            "duplicates": 0,
            "ignored": 0,
            "rejected_signature": 0,
            "rejected_body": 0,
            "too_large": 0,
            "queue_failures": 0,
        },
        "max_seq": None,
    }
    post(client, encode(conversation_event("e1", "conv1")))
    post(client, encode(conversation_event("e2", "conv2")))
    health = client.get("/healthz").json()
    assert health["max_seq"] == 2
    assert health["counters"]["enqueued"] == 2


def test_only_post_on_the_path(client: TestClient) -> None:
    assert client.get(PATH).status_code == 405
    assert client.post("/other", content=b"{}").status_code == 404


def test_path_is_configurable(queue_path: Path) -> None:
    with make_client(queue_path, path="/hooks/k") as client:
        body = encode(conversation_event("e1", "conv1"))
        assert client.post("/hooks/k", content=body, headers=signed(body)).status_code == 202
        assert client.post(PATH, content=body, headers=signed(body)).status_code == 404


def test_unsigned_mode_accepts_anything_signed_or_not_and_warns_at_every_start(
    queue_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tap_kustomer.webhooks")
    for start in range(2):
        with make_client(queue_path, token=None, verify_signature=False) as client:
            body = encode(conversation_event(f"e{start}", "conv1"))
            assert client.post(PATH, content=body).status_code == 202
            assert client.get("/healthz").json()["signature_check"] is False
    warnings = [r for r in caplog.records if "signature check is OFF" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": None}, "no webhook token"),
        ({"token": "   "}, "no webhook token"),
        ({"token": TOKEN, "path": "healthz"}, "must start with /"),
        ({"token": TOKEN, "path": "/healthz"}, "not be /healthz"),
        ({"token": TOKEN, "max_body_bytes": 0}, "at least 1"),
    ],
)
def test_settings_that_cannot_work(settings: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ReceiverSettings(**settings)


def test_settings_repr_hides_the_token() -> None:
    assert TOKEN not in repr(ReceiverSettings(token=TOKEN))


# -- the program: uvicorn, kill -9, restart ------------------------------------------------------


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback, never through a proxy from the environment
    return session


def spawn_serve(queue_url: str, port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(SCRIPT), "serve", "--queue", queue_url, "--port", str(port), *args],
            cwd=REPO,
            env=tap_env({"KUSTOMER_WEBHOOK_TOKEN": TOKEN}),
            stdout=handle,
            stderr=handle,
        )


def wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    with _session() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if session.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"the receiver did not start:\n{log.read_text()}")


def deliver(port: int, bodies: list[bytes], outcomes: dict[int, t.Any], workers: int) -> None:
    """Post ``bodies`` from ``workers`` threads; ``outcomes[i]`` is a status code or an error."""
    todo: SimpleQueue[int] = SimpleQueue()
    for index in range(len(bodies)):
        todo.put(index)

    def work() -> None:
        with _session() as session:
            while True:
                try:
                    index = todo.get_nowait()
                except Empty:
                    return
                try:
                    answer = session.post(
                        f"http://127.0.0.1:{port}{PATH}",
                        data=bodies[index],
                        headers=signed(bodies[index]),
                        timeout=10,
                    )
                    outcomes[index] = answer.status_code
                except requests.RequestException as exc:
                    outcomes[index] = exc

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def event_ids_in(queue_db: Path) -> list[str]:
    conn = sqlite3.connect(queue_db)
    try:
        return [row[0] for row in conn.execute(f"SELECT event_id FROM {TABLE}")]
    finally:
        conn.close()


def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Every delivery answered 2xx survives kill -9; the others are accepted when resent."""
    queue_db = tmp_path / "queue.db"
    queue_url = f"sqlite:///{queue_db}"
    log = tmp_path / "serve.log"
    bodies = [
        encode(conversation_event(f"evt-{n:04d}", f"conv-{n % 50:02d}"))
        if n % 3
        else encode(message_event(f"evt-{n:04d}", f"conv-{n % 50:02d}"))
        for n in range(400)
    ]
    outcomes: dict[int, t.Any] = {}
    port = free_port()
    first = spawn_serve(queue_url, port, log)
    try:
        wait_healthy(first, port, log)
        sender = threading.Thread(target=deliver, args=(port, bodies, outcomes, 4))
        sender.start()
        while sum(1 for v in list(outcomes.values()) if v == 202) < 100 and sender.is_alive():
            time.sleep(0.001)
        first.send_signal(signal.SIGKILL)  # mid-stream: four deliveries are in flight
        sender.join()
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    acknowledged = {i for i, v in outcomes.items() if v == 202}
    failed = set(range(len(bodies))) - acknowledged
    assert 100 <= len(acknowledged) < len(bodies), "the kill came too late to test anything"
    assert all(isinstance(outcomes[i], requests.RequestException) for i in failed)
    ids = [json.loads(bodies[i])["id"] for i in range(len(bodies))]
    stored = set(event_ids_in(queue_db))
    assert {ids[i] for i in acknowledged} <= stored  # nothing acknowledged was lost
    # Some in-flight deliveries may have been committed without their answer arriving.
    committed_unanswered = {ids[i] for i in failed} & stored

    # Kustomer retries every delivery that got no 2xx; resend all of them (and, to show the
    # dedupe, the acknowledged ones too) to a restarted receiver on the same queue.
    port = free_port()
    second = spawn_serve(queue_url, port, log)
    try:
        wait_healthy(second, port, log)
        resent: dict[int, t.Any] = {}
        deliver(port, bodies, resent, 4)
        assert set(resent.values()) == {202}
        with _session() as session:
            health = session.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert health["counters"]["enqueued"] == len(failed) - len(committed_unanswered)
        assert health["counters"]["duplicates"] == len(acknowledged) + len(committed_unanswered)
        second.send_signal(signal.SIGTERM)  # graceful stop
        second.wait(timeout=30)
    finally:
        second.kill()
        second.wait()
    assert second.returncode in (0, -signal.SIGTERM)
    stored_ids = event_ids_in(queue_db)
    assert sorted(stored_ids) == sorted(ids)  # every event exactly once
    text = log.read_text()
    assert "Shutting down" in text
    assert "Traceback" not in text
    assert TOKEN not in text


def test_serve_answers_413_on_a_real_socket_and_stays_up(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = spawn_serve(
        f"sqlite:///{tmp_path / 'q.db'}", port, log, "--max-body-bytes", "1000", "--path", "/k"
    )
    try:
        wait_healthy(process, port, log)
        with _session() as session:
            big = b"{" + b" " * 5_000_000 + b"}"
            answer = session.post(f"http://127.0.0.1:{port}/k", data=big, timeout=10)
            assert answer.status_code == 413
            body = encode(conversation_event("e1", "conv1"))
            ok = session.post(f"http://127.0.0.1:{port}/k", data=body, headers=signed(body))
            assert ok.status_code == 202
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()


# -- the command line, in process ----------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``tap-kustomer-webhooks ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["tap-kustomer-webhooks", *args])
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # main() wraps it; restored afterwards
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_serve_without_a_token_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("KUSTOMER_WEBHOOK_TOKEN", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--queue", f"sqlite:///{tmp_path}/q.db")
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("tap-kustomer-webhooks: error: no webhook token")


def test_serve_with_a_bad_queue_url_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUSTOMER_WEBHOOK_TOKEN", TOKEN)
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--queue", "redis://localhost/0")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("tap-kustomer-webhooks: error: the queue URL")
    assert TOKEN not in err


def test_token_file_is_read_and_a_readable_one_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    assert cli.read_token(token_file) == TOKEN
    assert "readable by others" not in caplog.text
    token_file.chmod(0o644)
    assert cli.read_token(token_file) == TOKEN
    assert "readable by others" in caplog.text
    with pytest.raises(ConfigurationError, match="cannot read the token file"):
        cli.read_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        cli.read_token(tmp_path / "empty")


# -- register, against a local fake of POST /v1/outbound-webhooks ---------------------------------

API_KEY = "test-api-key-abcdefghijklmnop"
WEBHOOK_TOKEN = "created-webhook-token-0123456789"


class FakeKustomer:
    """One endpoint, ``POST /v1/outbound-webhooks``, answering what the test says."""

    def __init__(self) -> None:
        self.status = 201
        self.answer: t.Any = {
            "data": {
                "type": "outbound_webhook",
                "id": "wh_123",
                "attributes": {"name": "warehouse", "token": WEBHOOK_TOKEN},
            }
        }
        self.requests: list[tuple[str, dict[str, str], t.Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append(
                    (self.path, dict(self.headers), json.loads(self.rfile.read(length)))
                )
                payload = json.dumps(fake.answer).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            @override
            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def kustomer(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKustomer]:
    monkeypatch.setenv("TAP_KUSTOMER_API_KEY", API_KEY)
    fake = FakeKustomer()
    try:
        yield fake
    finally:
        fake.close()


def register(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    token_file: Path,
    *extra: str,
    url: str = "https://hooks.example.com/kustomer/webhook",
) -> tuple[int, str, str]:
    return run_cli(
        monkeypatch,
        capsys,
        "register",
        "--api-url",
        kustomer.url,
        "--name",
        "warehouse",
        "--url",
        url,
        "--token-file",
        str(token_file),
        *extra,
    )


@pytest.mark.parametrize(
    "answer",
    [
        {"data": {"id": "wh_123", "attributes": {"token": WEBHOOK_TOKEN}}},
        {"data": {"id": "wh_123", "token": WEBHOOK_TOKEN}},
        {"id": "wh_123", "token": WEBHOOK_TOKEN},
    ],
)
def test_register_saves_the_token_0600_and_prints_only_id_and_path(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
    answer: dict[str, t.Any],
) -> None:
    kustomer.answer = answer
    token_file = tmp_path / "webhook.token"
    code, out, err = register(monkeypatch, capsys, kustomer, token_file)
    assert code == 0, err
    assert json.loads(out) == {"webhook_id": "wh_123", "token_file": str(token_file.resolve())}
    assert WEBHOOK_TOKEN not in out + err
    assert API_KEY not in out + err
    assert token_file.read_text() == WEBHOOK_TOKEN + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["webhook.token"]  # no temporary left
    [(path, headers, payload)] = kustomer.requests
    assert path == "/v1/outbound-webhooks"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert payload == {
        "name": "warehouse",
        "url": "https://hooks.example.com/kustomer/webhook",
        "events": [
            "kustomer.conversation.create",
            "kustomer.conversation.update",
            "kustomer.message.create",
            "kustomer.message.update",
        ],
        "enabled": True,
    }
    assert cli.read_token(token_file) == WEBHOOK_TOKEN  # what serve --token-file reads


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/k", "ftp://hooks.example.com/k", "https:///nohost", "hooks.io/k"],
)
def test_register_refuses_a_non_https_url_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
    url: str,
) -> None:
    code, out, err = register(monkeypatch, capsys, kustomer, tmp_path / "t", url=url)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "is not https://host/" in err
    assert kustomer.requests == []


def test_register_rejected_key_is_one_line_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
) -> None:
    kustomer.status = 401
    kustomer.answer = {"errors": [{"status": 401, "title": "Unauthorized"}]}
    code, _, err = register(monkeypatch, capsys, kustomer, tmp_path / "t")
    assert code == 1
    assert err.count("\n") == 1
    assert "rejected TAP_KUSTOMER_API_KEY (401: Unauthorized)" in err
    assert API_KEY not in err
    assert list(tmp_path.iterdir()) == []


def test_register_without_a_token_in_the_answer_says_where_to_read_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
) -> None:
    kustomer.answer = {"data": {"id": "wh_9", "attributes": {"name": "warehouse"}}}
    code, _, err = register(monkeypatch, capsys, kustomer, tmp_path / "t")
    assert code == 1
    assert "webhook wh_9 but its answer has no token" in err
    assert "GET /v1/outbound-webhooks/wh_9" in err


def test_register_keeps_an_existing_token_file_unless_told(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "t"
    token_file.write_text("old\n")
    code, _, err = register(monkeypatch, capsys, kustomer, token_file)
    assert code == 1
    assert "exists; remove it or pass --overwrite" in err
    assert kustomer.requests == []  # refused before creating a webhook whose token is lost
    code, _, err = register(monkeypatch, capsys, kustomer, token_file, "--overwrite")
    assert code == 0, err
    assert token_file.read_text() == WEBHOOK_TOKEN + "\n"


def test_register_needs_the_api_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kustomer: FakeKustomer,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("TAP_KUSTOMER_API_KEY")
    code, _, err = register(monkeypatch, capsys, kustomer, tmp_path / "t")
    assert code == 1
    assert "no API key: set TAP_KUSTOMER_API_KEY" in err
    assert kustomer.requests == []


# -- packaging ------------------------------------------------------------------------------------


def test_the_tap_does_not_import_the_webhook_stack() -> None:
    code = (
        "import sys, tap_kustomer, tap_kustomer.tap, tap_kustomer.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'starlette', 'uvicorn', 'psycopg', 'httpx', 'anyio'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=tap_env()
    ).stdout
    assert out.strip() == "[]"


def test_console_script_is_installed() -> None:
    assert SCRIPT.exists()
    assert os.access(SCRIPT, os.X_OK)
