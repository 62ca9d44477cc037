"""Outbound webhooks of the sandbox: the registration API, signed deliveries of the
mutations it models, at-least-once behaviour (duplicates, reordering, retries,
auto-disable), and the project's receiver fed by it end to end.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import typing as t
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import uvicorn

from tap_kustomer.webhooks.queue.sqlite import SqliteQueue
from tap_kustomer.webhooks.receiver import DEFAULT_PATH, ReceiverSettings, create_app
from tests.postgres import free_port
from tests.sandbox import KeySpec, Sandbox, SandboxOptions
from tests.sandbox.outbound import EVENT_NAMES

KEY = "test-key"
NOW = "2025-06-01T12:00:00.000Z"
HOOKS = "/v1/outbound-webhooks"
CONVERSATION_EVENTS = ["kustomer.conversation.update", "kustomer.message.create"]


def make(**kw: t.Any) -> Sandbox:
    opts: dict[str, t.Any] = {
        "seed": 11,
        "api_key": KEY,
        "customers": 20,
        "conversations": 40,
        "now": NOW,
        "org_rpm": 100_000,
    }
    opts.update(kw)
    return Sandbox(SandboxOptions(**opts))


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    box = make(
        extra_keys={
            "reader": KeySpec(roles=frozenset({"org.permission.outbound_webhook.read"})),
            "nohooks": KeySpec.without("outbound_webhook"),
            "nohooks401": KeySpec.without("outbound_webhook", denial_status=401),
            "nowrite": KeySpec.without("outbound_webhook_write"),
            **{
                role: KeySpec(roles=frozenset({role}))
                for role in (
                    "org.permission.outbound_webhook",
                    "org.outbound_webhooks",
                    "org.admin.outbound_webhooks",
                )
            },
        }
    )
    box.start()
    yield box
    box.stop()


def hdr(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_hook(sb: Sandbox, body: dict[str, t.Any], key: str = KEY) -> requests.Response:
    return requests.post(sb.base_url + HOOKS, json=body, headers=hdr(key), timeout=10)


def hook_body(url: str, events: list[str] | None = None, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "name": "warehouse",
        "url": url,
        "events": CONVERSATION_EVENTS if events is None else events,
        **extra,
    }


class Collector:
    """A loopback HTTP endpoint that records every POST and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.received.append((dict(self.headers.items()), body))
                    status = outer.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?src=sandbox"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def events(self) -> list[tuple[dict[str, str], dict[str, t.Any], bytes]]:
        with self.lock:
            return [(h, json.loads(b), b) for h, b in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def conversation_ids(sb: Sandbox, status: str | None = None) -> list[str]:
    convs = sb.truth(["conversations"])["conversations"]
    return [c["id"] for c in convs if status is None or c["attributes"]["status"] == status]


# --- registration API ------------------------------------------------------------------------


def test_register_list_get_delete(sb: Sandbox) -> None:
    r = post_hook(
        sb, hook_body("https://hooks.example.com/k", headers=[{"name": "X-A", "value": "1"}])
    )
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    hook_id, token = data["id"], data["attributes"]["token"]
    assert data["type"] == "outbound_webhook"
    assert len(hook_id) == 24
    assert token
    assert data["attributes"]["enabled"] is True
    assert data["attributes"]["events"] == CONVERSATION_EVENTS
    assert data["attributes"]["headers"] == [{"name": "X-A", "value": "1"}]
    assert data["links"]["self"] == f"{HOOKS}/{hook_id}"

    listed = requests.get(sb.base_url + HOOKS, headers=hdr(), timeout=10).json()
    assert [h["id"] for h in listed["data"]] == [hook_id]
    assert "token" not in listed["data"][0]["attributes"]  # the list does not show tokens
    one = requests.get(f"{sb.base_url}{HOOKS}/{hook_id}", headers=hdr(), timeout=10)
    assert one.json()["data"]["attributes"]["token"] == token  # the token can be re-read

    catalog = requests.get(f"{sb.base_url}{HOOKS}/events", headers=hdr(), timeout=10).json()
    names = [e["id"] for e in catalog["data"]]
    assert len(names) == 12
    assert set(CONVERSATION_EVENTS) <= set(names)
    assert not [n for n in names if ".note." in n or n.endswith(".delete")]

    gone = requests.delete(f"{sb.base_url}{HOOKS}/{hook_id}", headers=hdr(), timeout=10)
    assert gone.status_code == 204
    assert gone.content == b""
    again = requests.get(f"{sb.base_url}{HOOKS}/{hook_id}", headers=hdr(), timeout=10)
    assert again.status_code == 404
    assert (
        requests.delete(f"{sb.base_url}{HOOKS}/{hook_id}", headers=hdr(), timeout=10).status_code
        == 404
    )
    assert sb.webhooks() == []


@pytest.mark.parametrize(
    "role",
    ["org.permission.outbound_webhook", "org.outbound_webhooks", "org.admin.outbound_webhooks"],
)
def test_any_documented_admin_role_creates_reads_and_deletes(sb: Sandbox, role: str) -> None:
    r = post_hook(sb, hook_body("https://hooks.example.com/k"), key=role)
    assert r.status_code == 201, r.text
    hook_id = r.json()["data"]["id"]
    assert requests.get(sb.base_url + HOOKS, headers=hdr(role), timeout=10).status_code == 200
    url = f"{sb.base_url}{HOOKS}/{hook_id}"
    assert requests.delete(url, headers=hdr(role), timeout=10).status_code == 204


def test_roles_are_checked_per_key(sb: Sandbox) -> None:
    body = hook_body("https://hooks.example.com/k")
    for key in ("reader", "nowrite"):
        denied = post_hook(sb, body, key=key)
        assert denied.status_code == 403
        assert "org.outbound_webhooks" in denied.json()["errors"][0]["detail"]
        assert requests.get(sb.base_url + HOOKS, headers=hdr(key), timeout=10).status_code == 200
    hook_id = post_hook(sb, body).json()["data"]["id"]
    url = f"{sb.base_url}{HOOKS}/{hook_id}"
    assert requests.get(url, headers=hdr("reader"), timeout=10).status_code == 200
    assert requests.delete(url, headers=hdr("reader"), timeout=10).status_code == 403
    for path in (HOOKS, f"{HOOKS}/events", f"{HOOKS}/{hook_id}"):
        assert (
            requests.get(sb.base_url + path, headers=hdr("nohooks"), timeout=10).status_code == 403
        )
        assert (
            requests.get(sb.base_url + path, headers=hdr("nohooks401"), timeout=10).status_code
            == 401
        )
    assert post_hook(sb, body, key="nohooks").status_code == 403
    assert post_hook(sb, body, key="unknown-key").status_code == 401
    assert len(sb.webhooks()) == 1  # nothing a refused request could have created


def test_limits_and_validation(sb: Sandbox) -> None:
    def refused(body: dict[str, t.Any]) -> str:
        r = post_hook(sb, body)
        assert r.status_code == 400, r.text
        return r.json()["errors"][0]["code"]

    thirteen = [*EVENT_NAMES, "kustomer.x.create"]
    assert refused(hook_body("https://h.example.com/k", thirteen)) == "too_many_events"
    assert post_hook(sb, hook_body("https://h.example.com/k", list(EVENT_NAMES))).status_code == 201
    assert (
        refused(hook_body("https://h.example.com/k", ["kustomer.note.create"])) == "invalid_events"
    )
    assert refused(hook_body("https://h.example.com/k", [])) == "invalid_events"
    assert refused(hook_body("http://hooks.example.com/k")) == "invalid_url"  # http off loopback
    assert refused(hook_body("ftp://127.0.0.1/k")) == "invalid_url"
    assert refused({**hook_body("https://h.example.com/k"), "name": ""}) == "invalid_name"
    assert refused({**hook_body("https://h.example.com/k"), "name": "n" * 256}) == "invalid_name"
    assert (
        refused(hook_body("https://h.example.com/k", headers=[{"name": "X"}])) == "invalid_headers"
    )
    # http to loopback is a sandbox allowance that can be switched off
    sb.set_webhook_options(webhook_allow_http_loopback=False)
    assert refused(hook_body("http://127.0.0.1:9/k")) == "invalid_url"
    sb.set_webhook_options(webhook_allow_http_loopback=True)
    for _ in range(4):
        assert post_hook(sb, hook_body("http://127.0.0.1:9/k")).status_code == 201
    assert refused(hook_body("https://h.example.com/k")) == "webhook_limit"  # at most 5
    assert len(sb.webhooks()) == 5
    with pytest.raises(ValueError, match="at most 5"):
        sb.add_webhook("https://h.example.com/k", CONVERSATION_EVENTS)
    with pytest.raises(AttributeError):
        sb.set_webhook_options(org_rpm=1)


# --- deliveries ---------------------------------------------------------------------------------


def test_resolve_delivers_a_signed_conversation_update(sb: Sandbox, collector: Collector) -> None:
    hook = sb.add_webhook(
        collector.url, CONVERSATION_EVENTS, headers=[{"name": "X-Warehouse", "value": "w1"}]
    )
    token = hook["attributes"]["token"]
    cid = conversation_ids(sb, "open")[0]
    before = sb.now_iso()
    sb.resolve(cid)
    attempts = sb.wait_webhooks_drained()
    [(headers, event, raw)] = collector.events()
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Kustomer-Webhook-Event"] == "kustomer.conversation.update"
    assert headers["X-Warehouse"] == "w1"
    expected = hmac.new(token.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Kustomer-Webhook-Signature"] == expected
    assert event["name"] == "kustomer.conversation.update"
    assert event["data"]["id"] == event["dataId"] == cid
    # data is the resource as GET serves it now
    served = requests.get(f"{sb.base_url}/v1/conversations/{cid}", headers=hdr(), timeout=10)
    assert event["data"] == served.json()["data"]
    assert event["changes"]["attributes"]["status"] == {
        "op": "replace",
        "before": "open",
        "after": "done",
    }
    assert before <= event["createdAt"] <= sb.now_iso()
    assert {"id", "org", "orgName", "partition", "persist", "client", "meta", "snsFilters"} <= set(
        event
    )
    assert [(a["event_id"], a["attempt"], a["status"], a["ok"]) for a in attempts] == [
        (event["id"], 1, 200, True)
    ]


def test_reply_delivers_a_message_create_linked_to_its_conversation(
    sb: Sandbox, collector: Collector
) -> None:
    sb.add_webhook(collector.url, ["kustomer.message.create", "kustomer.customer.create"])
    cid = conversation_ids(sb)[3]
    msg = sb.reply(cid, body="hello")
    sb.add_note(cid)  # notes send no events
    customer = sb.add_customer(name="New Person")
    sb.wait_webhooks_drained()
    events = [e for _, e, _ in collector.events()]
    assert [e["name"] for e in events] == ["kustomer.message.create", "kustomer.customer.create"]
    message, created = events
    assert message["data"]["id"] == msg["id"]
    assert message["data"]["relationships"]["conversation"]["data"]["id"] == cid
    assert message["changes"] is None  # null on create
    assert created["data"]["id"] == customer["id"]


def test_only_enabled_subscribers_get_an_event(sb: Sandbox, collector: Collector) -> None:
    other = Collector()
    try:
        sb.add_webhook(collector.url, ["kustomer.conversation.update"])
        sb.add_webhook(other.url, ["kustomer.message.create"])
        sb.add_webhook(other.url, ["kustomer.conversation.update"], enabled=False)
        sb.resolve(conversation_ids(sb, "open")[0])
        sb.wait_webhooks_drained()
        assert len(collector.events()) == 1
        assert other.events() == []
    finally:
        other.close()


def test_duplicates_when_switched_on(sb: Sandbox, collector: Collector) -> None:
    sb.add_webhook(collector.url, CONVERSATION_EVENTS)
    sb.set_webhook_options(webhook_duplicate_rate=1.0)
    cids = conversation_ids(sb, "open")[:3]
    for cid in cids:
        sb.resolve(cid)
    attempts = sb.wait_webhooks_drained()
    received = collector.events()
    assert len(received) == 6
    by_id: dict[str, list[bytes]] = {}
    for _, event, raw in received:
        by_id.setdefault(event["id"], []).append(raw)
    assert len(by_id) == 3
    assert all(len(set(bodies)) == 1 and len(bodies) == 2 for bodies in by_id.values())
    assert sum(a["duplicate"] for a in attempts) == 3
    # switched off again: once each
    sb.set_webhook_options(webhook_duplicate_rate=0.0)
    sb.resolve(cids[0])
    sb.wait_webhooks_drained()
    assert len(collector.events()) == 7


def test_reordering_within_a_window_when_switched_on(sb: Sandbox, collector: Collector) -> None:
    sb.add_webhook(collector.url, ["kustomer.conversation.update"])
    sb.set_webhook_options(webhook_reorder=4)
    sb.pause_webhooks()
    cids = conversation_ids(sb, "open")[:8]
    for cid in cids:
        sb.resolve(cid)
    sb.resume_webhooks()
    sb.wait_webhooks_drained()
    delivered = [e["data"]["id"] for _, e, _ in collector.events()]
    assert sorted(delivered) == sorted(cids)
    assert delivered != cids
    # shuffled within windows of 4: each window keeps its members
    assert set(delivered[:4]) == set(cids[:4])
    assert set(delivered[4:]) == set(cids[4:])
    # a window that does not fill is sent after a short hold
    collector.received.clear()
    sb.resolve(cids[0])
    sb.wait_webhooks_drained()
    assert len(collector.events()) == 1


def test_reordering_is_deterministic_for_a_seed(collector: Collector) -> None:
    orders = []
    for _ in range(2):
        box = make(seed=5, webhook_reorder=5)
        box.start()
        try:
            collector.received.clear()
            box.add_webhook(collector.url, ["kustomer.conversation.update"])
            box.pause_webhooks()
            for cid in conversation_ids(box, "open")[:10]:
                box.resolve(cid)
            box.resume_webhooks()
            box.wait_webhooks_drained()
            orders.append([e["data"]["id"] for _, e, _ in collector.events()])
        finally:
            box.stop()
    assert orders[0] == orders[1]


def test_failed_deliveries_are_retried_then_delivered_when_the_network_is_back(
    sb: Sandbox, collector: Collector
) -> None:
    delays = [0.02, 0.02, 0.3, 0.3, 0.3]
    sb.set_webhook_options(webhook_retry_delays=delays, webhook_deliveries_fail=True)
    sb.add_webhook(collector.url, ["kustomer.conversation.update"])
    cid = conversation_ids(sb, "open")[0]
    sb.resolve(cid)
    failed = sb.wait_webhook_attempts(3)
    assert [a["attempt"] for a in failed] == [1, 2, 3]
    assert all(a["status"] is None and "webhook_deliveries_fail" in a["error"] for a in failed)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(failed)]
    assert all(gap >= 0.015 for gap in gaps)  # retried after the scheduled delay
    assert collector.events() == []
    sb.set_webhook_options(webhook_deliveries_fail=False)
    attempts = sb.wait_webhooks_drained()
    # delivered before the schedule ran out (the next attempt after the switch)
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert len(attempts) <= len(delays)
    assert [a["ok"] for a in attempts] == [False] * (len(attempts) - 1) + [True]
    assert attempts[-1]["status"] == 200
    assert len({a["event_id"] for a in attempts}) == 1
    [(_, event, _)] = collector.events()
    assert event["data"]["id"] == cid
    assert sb.webhooks()[0]["attributes"]["enabled"] is True


def test_non_2xx_answers_are_retried(sb: Sandbox, collector: Collector) -> None:
    sb.set_webhook_options(webhook_retry_delays=[0.02, 0.3, 0.3, 0.3])
    collector.status = 503
    sb.add_webhook(collector.url, ["kustomer.conversation.update"])
    sb.resolve(conversation_ids(sb, "open")[0])
    sb.wait_webhook_attempts(2)
    collector.status = 200
    attempts = sb.wait_webhooks_drained()
    assert [a["status"] for a in attempts[:2]] == [503, 503]
    assert attempts[-1]["status"] == 200
    assert attempts[-1]["attempt"] == len(attempts)
    assert sb.webhooks()[0]["attributes"]["enabled"] is True


def test_an_exhausted_schedule_disables_the_webhook(sb: Sandbox, collector: Collector) -> None:
    sb.set_webhook_options(webhook_retry_delays=[0.01, 0.02, 0.03], webhook_deliveries_fail=True)
    hook = sb.add_webhook(collector.url, ["kustomer.conversation.update"])
    cids = conversation_ids(sb, "open")
    sb.resolve(cids[0])
    attempts = sb.wait_webhooks_drained()
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]  # first try + one per delay
    [state] = sb.webhooks()
    assert state["attributes"]["enabled"] is False
    assert state["attributes"]["disabledAt"] is not None
    served = requests.get(f"{sb.base_url}{HOOKS}/{hook['id']}", headers=hdr(), timeout=10)
    assert served.json()["data"]["attributes"]["enabled"] is False
    # a disabled webhook gets nothing, even with the network back
    sb.set_webhook_options(webhook_deliveries_fail=False)
    sb.resolve(cids[1])
    assert sb.wait_webhooks_drained() == attempts
    assert collector.events() == []


def test_a_connection_error_is_an_error_attempt(sb: Sandbox) -> None:
    sb.set_webhook_options(webhook_retry_delays=[0.01])
    sb.add_webhook(f"http://127.0.0.1:{free_port()}/nobody", ["kustomer.conversation.update"])
    sb.resolve(conversation_ids(sb, "open")[0])
    attempts = sb.wait_webhooks_drained()
    assert len(attempts) == 2
    assert all(a["status"] is None and a["error"] for a in attempts)
    assert sb.webhooks()[0]["attributes"]["enabled"] is False


def test_control_endpoints(sb: Sandbox, collector: Collector) -> None:
    base = sb.base_url
    made = requests.post(
        f"{base}/__control/add_webhook",
        json={"url": collector.url, "events": ["kustomer.conversation.update"]},
        timeout=10,
    )
    assert made.status_code == 200
    requests.post(f"{base}/__control/options", json={"webhook_duplicate_rate": 1.0}, timeout=10)
    cid = conversation_ids(sb, "open")[0]
    requests.post(f"{base}/__control/resolve", json={"conversation_id": cid}, timeout=10)
    drained = requests.post(f"{base}/__control/wait_webhooks_drained", json={}, timeout=10)
    assert len(drained.json()) == 2
    assert len(requests.get(f"{base}/__control/webhook_attempts", timeout=10).json()) == 2
    assert len(requests.get(f"{base}/__control/webhooks", timeout=10).json()) == 1


# --- end to end with the project's receiver ------------------------------------------------------


class ReceiverServer:
    """``tap_kustomer.webhooks`` receiver served by uvicorn on a loopback port in a thread."""

    def __init__(self, queue_path: Path, token: str, port: int) -> None:
        app = create_app(SqliteQueue(queue_path), ReceiverSettings(token=token))
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            http="h11",
            ws="none",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_end_to_end_into_the_receivers_queue(tmp_path: Path) -> None:
    box = make(webhook_duplicate_rate=0.5, webhook_reorder=3)
    box.start()
    port = free_port()
    queue_path = tmp_path / "queue.db"
    hook = box.add_webhook(
        f"http://127.0.0.1:{port}{DEFAULT_PATH}",
        [
            "kustomer.conversation.create",
            "kustomer.conversation.update",
            "kustomer.message.create",
            "kustomer.customer.create",
        ],
    )
    receiver = ReceiverServer(queue_path, hook["attributes"]["token"], port)
    try:
        open_ids = conversation_ids(box, "open")
        touched = {open_ids[0], open_ids[1], open_ids[2]}
        box.resolve(open_ids[0])
        box.reply(open_ids[1], direction="out")
        box.resolve(open_ids[2])
        box.reply(open_ids[2])  # reopens it
        touched.add(box.add_conversation()["id"])
        box.add_customer(name="Not A Conversation")  # acknowledged and ignored
        attempts = box.wait_webhooks_drained()
        assert all(a["ok"] for a in attempts), attempts
        assert any(a["duplicate"] for a in attempts)
        queue = SqliteQueue(queue_path)
        try:
            queued = queue.pending_after(0, 1000)
        finally:
            queue.close()
        assert sorted(q.conversation_id for q in queued) == sorted(touched)
        health = requests.get(f"{receiver.url}/healthz", timeout=10).json()["counters"]
        assert health["rejected_signature"] == 0
        about_conversations = [a for a in attempts if a["name"] != "kustomer.customer.create"]
        assert health["duplicates"] == sum(a["duplicate"] for a in about_conversations)
        assert health["ignored"] == len(attempts) - len(about_conversations)
        assert health["enqueued"] == len({a["event_id"] for a in about_conversations})
    finally:
        receiver.close()
        box.stop()
