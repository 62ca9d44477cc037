"""Outbound webhooks: registrations, event envelopes and at-least-once delivery.

The store reports every record it is about to change and every change it made
(:class:`Outbound` is its observer). A change of a kind Kustomer sends events for
becomes one envelope per enabled webhook subscribed to the event, and a single
daemon thread POSTs them, signed, with the standard library only. Delivery models
what Kustomer promises and no more: duplicates, reordering within a small window,
retries on a schedule (compressed for tests) and auto-disable once it is exhausted.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .clock import fmt_ms

if TYPE_CHECKING:
    from .app import Sandbox

#: resources with create/update events (note, company and kobject changes send none;
#: Kustomer has no note and no delete events)
EVENT_RESOURCES = ("conversation", "message", "customer", "team", "user", "tag")
EVENT_NAMES: tuple[str, ...] = tuple(
    f"kustomer.{res}.{op}" for res in EVENT_RESOURCES for op in ("create", "update")
)
#: the store kinds whose changes the sandbox turns into events
DELIVERED_KINDS = ("conversation", "message", "customer")
MAX_NAME_LENGTH = 255
SIGNATURE_HEADER = "X-Kustomer-Webhook-Signature"
EVENT_HEADER = "X-Kustomer-Webhook-Event"


class WebhookError(ValueError):
    """A webhook definition Kustomer would refuse; ``code`` names the rule."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def sign(token: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the raw body keyed by the webhook's token."""
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Delivery:
    """One event on its way to one webhook (a duplicate is a Delivery of its own)."""

    seq: int
    event_id: str
    name: str
    webhook_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    duplicate: bool
    queued: float
    due: float
    attempts: int = 0


@dataclass
class _Pending:
    """What ``before`` saw of a record, so ``after`` can diff it."""

    new: bool
    before: dict[str, Any] | None = None


@dataclass
class OutboundState:
    """Delivery queue and log, guarded by ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    pending: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    attempts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20_000))
    paused: bool = False
    stopping: bool = False
    seq: int = 0


class Outbound:
    """Webhook registry (kept on the store, under its lock) and the delivery thread."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.store = sandbox.store
        self.state = OutboundState()
        seed = sandbox.options.seed
        # two streams: which events are duplicated depends only on the order of the
        # changes, whatever the timing of the windows that get shuffled
        self.duplicate_rng = random.Random(seed * 104_729 + 0x0E7B)
        self.reorder_rng = random.Random(seed * 130_363 + 0x5EED)
        self.salt = (seed * 2_246_822_519 + 0xB00C) & 0xFFFFFF
        self.event_counter = 0
        self.webhook_counter = 0
        self._changes: dict[tuple[str, int], _Pending] = {}
        self._thread: threading.Thread | None = None
        self.store.observer = self

    # -- registry (callers hold the store lock) -------------------------------------
    def create(self, body: Any, created_by: int | None = 0) -> dict[str, Any]:
        """Validate and store a webhook; raises :class:`WebhookError`."""
        opts = self.sb.options
        if not isinstance(body, dict):
            raise WebhookError("invalid_body", "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise WebhookError("invalid_name", f"name must be 1 to {MAX_NAME_LENGTH} characters")
        url = body.get("url")
        if not isinstance(url, str):
            raise WebhookError("invalid_url", "url must be a string")
        parts = urlsplit(url)
        host = parts.hostname or ""
        loopback_http = parts.scheme == "http" and _is_loopback(host)
        if not host or not (
            parts.scheme == "https" or (loopback_http and opts.webhook_allow_http_loopback)
        ):
            raise WebhookError("invalid_url", "url must be https://host/...")
        events = body.get("events")
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) for e in events)
        ):
            raise WebhookError("invalid_events", "events must be a non-empty list of event names")
        events = list(dict.fromkeys(events))
        if len(events) > opts.webhook_max_events:
            raise WebhookError(
                "too_many_events", f"at most {opts.webhook_max_events} events per webhook"
            )
        unknown = [e for e in events if e not in EVENT_NAMES]
        if unknown:
            raise WebhookError("invalid_events", f"unknown events: {', '.join(unknown)}")
        headers = body.get("headers", [])
        if headers is None:
            headers = []
        if not isinstance(headers, list) or not all(
            isinstance(h, dict)
            and isinstance(h.get("name"), str)
            and h["name"].strip()
            and isinstance(h.get("value"), str)
            for h in headers
        ):
            raise WebhookError("invalid_headers", "headers must be a list of {name, value} strings")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise WebhookError("invalid_enabled", "enabled must be a boolean")
        if len(self.store.webhooks) >= opts.webhook_max_per_org:
            raise WebhookError(
                "webhook_limit", f"an org may have at most {opts.webhook_max_per_org} webhooks"
            )
        now = self.store.clock.now_ms()
        self.webhook_counter += 1
        n = self.webhook_counter
        digest = hashlib.sha256(f"{self.salt}:{n}".encode()).hexdigest()
        hook = {
            "id": f"{(now // 1000) & 0xFFFFFFFF:08x}{self.salt:06x}fe{n:08x}",
            "name": name,
            "url": url,
            "events": events,
            "headers": [{"name": h["name"], "value": h["value"]} for h in headers],
            "enabled": enabled,
            "token": digest[:40],
            "created": now,
            "updated": now,
            "createdBy": created_by,
            "disabledAt": None,
            "disabledReason": None,
        }
        self.store.webhooks[hook["id"]] = hook
        return hook

    def delete(self, webhook_id: str) -> dict[str, Any] | None:
        """Remove a webhook and drop its queued deliveries; None if unknown."""
        hook = self.store.webhooks.pop(webhook_id, None)
        if hook is not None:
            self._drop(webhook_id)
        return hook

    def render(self, hook: dict[str, Any], with_token: bool = True) -> dict[str, Any]:
        """The JSON:API resource (``token`` only where Kustomer shows it)."""
        org = self.store.org_id
        attrs: dict[str, Any] = {
            "name": hook["name"],
            "url": hook["url"],
            "events": list(hook["events"]),
            "headers": [dict(h) for h in hook["headers"]],
            "enabled": hook["enabled"],
            "createdAt": fmt_ms(hook["created"]),
            "updatedAt": fmt_ms(hook["updated"]),
            "disabledAt": None if hook["disabledAt"] is None else fmt_ms(hook["disabledAt"]),
            "disabledReason": hook["disabledReason"],
        }
        if with_token:
            attrs["token"] = hook["token"]
        rels: dict[str, Any] = {
            "org": {"links": {"self": f"/v1/orgs/{org}"}, "data": {"type": "org", "id": org}}
        }
        if hook["createdBy"] is not None and self.store.users:
            user = self.store.users[hook["createdBy"] % len(self.store.users)]["id"]
            rels["createdBy"] = {
                "links": {"self": f"/v1/users/{user}"},
                "data": {"type": "user", "id": user},
            }
        return {
            "type": "outbound_webhook",
            "id": hook["id"],
            "attributes": attrs,
            "relationships": rels,
            "links": {"self": f"/v1/outbound-webhooks/{hook['id']}"},
        }

    @staticmethod
    def event_catalog() -> list[dict[str, Any]]:
        """``GET /v1/outbound-webhooks/events``: every subscribable event."""
        return [
            {
                "type": "outbound_webhook_event",
                "id": name,
                "attributes": {
                    "name": name,
                    "resource": name.split(".")[1],
                    "delivered": name.split(".")[1] in DELIVERED_KINDS,
                },
            }
            for name in EVENT_NAMES
        ]

    # -- store observer (called with the store lock held) -----------------------------
    def _subscribers(self, name: str) -> list[dict[str, Any]]:
        return [h for h in self.store.webhooks.values() if h["enabled"] and name in h["events"]]

    def before(self, kind: str, idx: int, new: bool) -> None:
        """A record is about to change: keep its rendering if an update event needs it."""
        if kind not in DELIVERED_KINDS or not self.store.webhooks:
            return
        pending = _Pending(new)
        if not new and self._subscribers(f"kustomer.{kind}.update"):
            pending.before = self.store.render(kind, self.store.records(kind)[idx])
        self._changes[(kind, idx)] = pending

    def after(self, kind: str, idx: int, at: int) -> None:
        """A record changed at sandbox time ``at``: queue its event for each subscriber."""
        pending = self._changes.pop((kind, idx), None)
        if pending is None or kind not in DELIVERED_KINDS:
            return
        name = f"kustomer.{kind}.{'create' if pending.new else 'update'}"
        hooks = self._subscribers(name)
        if not hooks:
            return
        data = self.store.render(kind, self.store.records(kind)[idx])
        changes = None if pending.new else _diff(pending.before, data)
        self.event_counter += 1
        event_id = (
            f"{(at // 1000) & 0xFFFFFFFF:08x}{self.salt:06x}fd{self.event_counter & 0xFFFFFFFF:08x}"
        )
        org = self.store.org_id
        envelope = {
            "id": event_id,
            "name": name,
            "org": org,
            "orgName": f"sandbox-{self.sb.options.seed}",
            "partition": org,
            "data": data,
            "createdAt": fmt_ms(at),
            "changes": changes,
            "persist": True,
            "client": "kustomer-sandbox",
            "dataId": data["id"],
            "meta": {"customChanged": bool(changes and "custom" in changes["attributes"])},
            "snsFilters": [],
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        self._enqueue(event_id, name, body, hooks)

    # -- queue --------------------------------------------------------------------------
    def _enqueue(self, event_id: str, name: str, body: bytes, hooks: list[dict[str, Any]]) -> None:
        st = self.state
        now = time.monotonic()
        with st.cond:
            for hook in hooks:
                headers = {
                    "Content-Type": "application/json",
                    EVENT_HEADER: name,
                    SIGNATURE_HEADER: sign(hook["token"], body),
                    "User-Agent": "KustomerSandbox-Webhooks/1.0",
                }
                for h in hook["headers"]:
                    headers[h["name"]] = h["value"]
                copies = (
                    2 if self.duplicate_rng.random() < self.sb.options.webhook_duplicate_rate else 1
                )
                for copy_no in range(copies):
                    st.seq += 1
                    st.pending.append(
                        Delivery(
                            st.seq,
                            event_id,
                            name,
                            hook["id"],
                            hook["url"],
                            body,
                            headers,
                            copy_no > 0,
                            now,
                            now,
                        )
                    )
            st.cond.notify_all()
        self._ensure_thread()

    def _drop(self, webhook_id: str) -> None:
        """Forget queued deliveries of a deleted or disabled webhook."""
        with self.state.cond:
            self.state.pending = [d for d in self.state.pending if d.webhook_id != webhook_id]
            self.state.cond.notify_all()

    def _ensure_thread(self) -> None:
        with self.state.cond:
            if self.state.stopping or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._run, name="kustomer-sandbox-webhooks", daemon=True
            )
            self._thread.start()

    def open(self) -> None:
        """Allow the delivery thread to run (again) after ``close``."""
        with self.state.cond:
            self.state.stopping = False
        if self.state.pending:
            self._ensure_thread()

    def close(self) -> None:
        """Stop the delivery thread; queued deliveries stay queued."""
        with self.state.cond:
            self.state.stopping = True
            self.state.cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def set_paused(self, paused: bool) -> None:
        """Hold (or release) every delivery, e.g. to queue a batch before it is sent."""
        with self.state.cond:
            self.state.paused = paused
            self.state.cond.notify_all()

    def _next_batch(self, now: float) -> list[Delivery] | float | None:
        """Deliveries to send now, or seconds to wait (None: until something changes)."""
        st = self.state
        if st.paused or not st.pending:
            return None
        due = [d for d in st.pending if d.due <= now]
        if not due:
            return min(d.due for d in st.pending) - now
        window = self.sb.options.webhook_reorder
        retries = sorted((d for d in due if d.attempts), key=lambda d: (d.due, d.seq))
        fresh = sorted((d for d in due if not d.attempts), key=lambda d: d.seq)
        if window > 1 and fresh:
            oldest = fresh[0].queued
            hold = self.sb.options.webhook_reorder_hold_seconds
            if len(fresh) < window and now - oldest < hold:
                return retries[:1] or oldest + hold - now
            batch = fresh[:window]
            shuffled = list(batch)
            self.reorder_rng.shuffle(shuffled)
            if len(shuffled) > 1 and shuffled == batch:  # a window always arrives out of order
                shuffled = shuffled[1:] + shuffled[:1]
            return shuffled
        return [min(due, key=lambda d: (d.due, d.seq))]

    def _run(self) -> None:
        st = self.state
        while True:
            with st.cond:
                while True:
                    if st.stopping:
                        return
                    batch = self._next_batch(time.monotonic())
                    if isinstance(batch, list):
                        break
                    st.cond.wait(timeout=None if batch is None else max(batch, 0.001))
                for d in batch:
                    st.pending.remove(d)
                st.in_flight += len(batch)
            for d in batch:
                try:
                    self._attempt(d)
                finally:
                    with st.cond:
                        st.in_flight -= 1
                        st.cond.notify_all()

    def _attempt(self, d: Delivery) -> None:
        """Send one delivery once; schedule its retry or disable the webhook."""
        opts = self.sb.options
        with self.store.lock:
            hook = self.store.webhooks.get(d.webhook_id)
            live = hook is not None and hook["enabled"]
        if not live:
            return
        d.attempts += 1
        status: int | None = None
        error: str | None = None
        if opts.webhook_deliveries_fail:
            error = "ConnectionRefusedError: webhook_deliveries_fail is on"
        else:
            status, error = _post(d.url, d.body, d.headers, opts.webhook_timeout_seconds)
        ok = status is not None and 200 <= status < 300
        record = {
            "event_id": d.event_id,
            "name": d.name,
            "webhook_id": d.webhook_id,
            "url": d.url,
            "attempt": d.attempts,
            "status": status,
            "error": error,
            "ok": ok,
            "duplicate": d.duplicate,
            "at": time.time(),
        }
        if ok:
            with self.state.cond:
                self.state.attempts.append(record)
            return
        delays = list(opts.webhook_retry_delays)
        if d.attempts <= len(delays):
            d.due = time.monotonic() + float(delays[d.attempts - 1])
            with self.state.cond:
                self.state.attempts.append(record)
                self.state.pending.append(d)
            return
        with self.store.lock:
            hook = self.store.webhooks.get(d.webhook_id)
            if hook is not None and hook["enabled"]:
                now = self.store.clock.now_ms()
                hook.update(
                    enabled=False,
                    updated=now,
                    disabledAt=now,
                    disabledReason=f"event {d.event_id} failed {d.attempts} times",
                )
        with self.state.cond:
            self.state.attempts.append(record)
        self._drop(d.webhook_id)

    # -- observation -----------------------------------------------------------------------
    def attempts(self) -> list[dict[str, Any]]:
        """Every delivery attempt so far, in the order they finished."""
        with self.state.cond:
            return [dict(a) for a in self.state.attempts]

    def wait_drained(self, timeout: float) -> None:
        """Block until nothing is queued or in flight; TimeoutError after ``timeout``."""
        st = self.state
        deadline = time.monotonic() + timeout
        with st.cond:
            while st.pending or st.in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"webhook deliveries not drained after {timeout}s: "
                        f"{len(st.pending)} queued, {st.in_flight} in flight"
                        + (" (deliveries are paused)" if st.paused else "")
                    )
                st.cond.wait(timeout=left)

    def wait_attempts(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until at least ``count`` attempts were made; returns them all."""
        st = self.state
        deadline = time.monotonic() + timeout
        with st.cond:
            while len(st.attempts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(st.attempts)} webhook delivery attempts after {timeout}s, "
                        f"expected {count}"
                    )
                st.cond.wait(timeout=left)
            return [dict(a) for a in st.attempts]


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """``changes`` as Kustomer spells it: ``{attributes: {k: {op, before, after}}, ...}``."""
    out: dict[str, Any] = {"attributes": {}, "relationships": {}}
    if before is None:
        return out
    for section in ("attributes", "relationships"):
        old = before.get(section) or {}
        new = after.get(section) or {}
        for key in sorted(set(old) | set(new)):
            a = old.get(key)
            b = new.get(key)
            if section == "relationships":
                a = None if a is None else a.get("data")
                b = None if b is None else b.get("data")
            if a == b:
                continue
            op = "add" if key not in old else "remove" if key not in new else "replace"
            out[section][key] = {"op": op, "before": a, "after": b}
    return out


def _post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int | None, str | None]:
    """POST with http.client (no proxies): (status, None) or (None, error)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            conn.close()
