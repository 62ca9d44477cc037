"""The Sandbox object: data, clock, HTTP server thread, scenario and truth API."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import children
from .audit import AuditLog
from .clock import SandboxClock, fmt_ms, ms_to_dt, parse_ts
from .options import KeySpec, SandboxOptions
from .outbound import Outbound
from .server import Api, Response, SandboxServer, make_server
from .store import NotFoundError, Store

TRUTH_KINDS = ("conversations", "messages", "notes", "customers", "tags", "companies", "kobjects")
#: kinds ``truth()`` serves only when asked by name: derived per conversation on request
#: (costly on big orgs), and an attachment's ``links.related`` changes with the clock
CHILD_TRUTH_KINDS = ("attachments", "events")
_KIND = {
    "conversations": "conversation",
    "messages": "message",
    "notes": "note",
    "customers": "customer",
    "tags": "tag",
    "users": "user",
    "teams": "team",
    "shortcuts": "shortcut",
    "companies": "company",
    "kobjects": "kobject",
    "klasses": "klass",
}

TimeLike = str | int | datetime | None


def _ms(value: TimeLike) -> int | None:
    return None if value is None else parse_ts(value)


class Sandbox:
    """A local Kustomer API emulator.

    Build it (data is generated at once), ``start()`` it to serve on 127.0.0.1,
    drive scenarios with the mutation methods and compare a tap's output with
    ``truth()``.
    """

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.clock = SandboxClock(parse_ts(self.options.now))
        self.store = Store(self.options, self.clock)
        self.audit = AuditLog(self.store)
        self.store.audit = self.audit
        self.outbound = Outbound(self)
        self.api = Api(self)
        self.control = Control(self)
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    # -- lifecycle --------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL (no trailing slash)."""
        if self._server is not None:
            assert self.base_url is not None
            return self.base_url
        self.outbound.open()
        self._server = make_server(self, host, port)
        bound_port = self._server.server_address[1]
        self.base_url = f"http://{host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kustomer-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def serve_forever(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve in the calling thread (used by the CLI)."""
        self._server = make_server(self, host, port)
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving and close the socket; webhook deliveries stop (queued ones stay)."""
        self.outbound.close()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- options and clock ----------------------------------------------------------
    def set_option(self, name: str, value: Any) -> None:
        """Change a behaviour switch at runtime (same as assigning sb.options.<name>)."""
        if name not in {f.name for f in dataclasses.fields(SandboxOptions)}:
            raise AttributeError(f"unknown option {name!r}")
        if name == "extra_keys" and isinstance(value, dict):
            value = {k: v if isinstance(v, KeySpec) else _keyspec(v) for k, v in value.items()}
        setattr(self.options, name, value)

    def now(self) -> datetime:
        """Sandbox now as an aware datetime."""
        return ms_to_dt(self.clock.now_ms())

    def now_iso(self) -> str:
        """Sandbox now in the API's ISO format."""
        return fmt_ms(self.clock.now_ms())

    def advance_clock(self, seconds: float) -> str:
        """Move the sandbox clock forward; returns the new now (ISO)."""
        return fmt_ms(self.clock.advance(seconds))

    # -- mutations ----------------------------------------------------------------------
    def _render(self, kind: str, rec: Any) -> dict[str, Any]:
        with self.store.lock:
            return self.store.render(kind, rec)

    def reply(
        self,
        conversation_id: str,
        body: str | None = None,
        direction: str = "in",
        attachments: int | None = None,
    ) -> dict[str, Any]:
        """Add a message; inbound reopens a done or snoozed conversation. ``attachments``
        pins how many attachments it has (0..4; None: ``attachment_share`` decides)."""
        return self._render(
            "message",
            self.store.reply(conversation_id, body, direction, attachments=attachments),
        )

    def resolve(self, conversation_id: str) -> dict[str, Any]:
        """Mark done now (lastDone.createdAt = now, doneCount+1)."""
        return self._render("conversation", self.store.resolve(conversation_id))

    def reopen(self, conversation_id: str) -> dict[str, Any]:
        """Set open; lastDone keeps its createdAt; reopenCount+1 if it was done."""
        return self._render("conversation", self.store.reopen(conversation_id))

    def set_tags(self, conversation_id: str, tag_ids: list[str]) -> dict[str, Any]:
        """Replace the conversation's tags (updatedAt bumped, lastDone untouched)."""
        return self._render("conversation", self.store.set_tags(conversation_id, tag_ids))

    def set_custom(self, conversation_id: str, attrs: dict[str, Any]) -> dict[str, Any]:
        """Merge custom attributes into the conversation."""
        return self._render("conversation", self.store.set_custom(conversation_id, attrs))

    def add_note(self, conversation_id: str, body: str | None = None) -> dict[str, Any]:
        """Add a note to the conversation."""
        return self._render("note", self.store.add_note(conversation_id, body))

    def add_customer(self, **attrs: Any) -> dict[str, Any]:
        """Create a customer; attrs: name, firstName, lastName, email, emails, phones,
        externalId, locale, tags, custom."""
        return self._render("customer", self.store.add_customer(**attrs))

    def update_customer(self, customer_id: str, **attrs: Any) -> dict[str, Any]:
        """Change customer attributes (same keys as add_customer)."""
        return self._render("customer", self.store.update_customer(customer_id, **attrs))

    def add_company(self, **attrs: Any) -> dict[str, Any]:
        """Create a company; attrs: name, externalId, domains, tags, custom."""
        return self._render("company", self.store.add_company(**attrs))

    def update_company(self, company_id: str, **attrs: Any) -> dict[str, Any]:
        """Change company attributes (same keys as add_company); bumps updatedAt."""
        return self._render("company", self.store.update_company(company_id, **attrs))

    def add_kobject(
        self,
        klass: str | None = None,
        customer_id: str | None = None,
        company_id: str | None = None,
        **attrs: Any,
    ) -> dict[str, Any]:
        """Create a kobject of the klass named ``klass`` (default: the first one); attrs:
        title, description, externalId, images, tags, custom."""
        return self._render(
            "kobject", self.store.add_kobject(klass, customer_id, company_id, **attrs)
        )

    def update_kobject(self, kobject_id: str, **attrs: Any) -> dict[str, Any]:
        """Change kobject attributes (same keys as add_kobject); bumps updatedAt."""
        return self._render("kobject", self.store.update_kobject(kobject_id, **attrs))

    def add_conversation(
        self, customer_id: str | None = None, status: str = "open", messages: int = 1
    ) -> dict[str, Any]:
        """Create a conversation with ``messages`` messages stamped now."""
        return self._render(
            "conversation", self.store.add_conversation(customer_id, status, messages)
        )

    def simulate_activity(self, hours: float = 3.0, seed: int | None = None) -> dict[str, Any]:
        """Apply a few hours of activity and advance the clock by ``hours``."""
        return self.store.simulate_activity(hours, seed)

    # -- permanent deletes and the audit log (audit.py) -----------------------------------
    def delete_conversation(self, conversation_id: str, user: int = 0) -> dict[str, Any]:
        """Delete a conversation (and its messages and notes) for good; returns the
        audit log's delete event."""
        return self.store.delete("conversation", conversation_id, user=user)

    def delete_customer(self, customer_id: str, user: int = 0) -> dict[str, Any]:
        """Delete a customer for good (its conversations stay); returns the delete event."""
        return self.store.delete("customer", customer_id, user=user)

    def delete_company(self, company_id: str, user: int = 0) -> dict[str, Any]:
        """Delete a company for good; returns the delete event."""
        return self.store.delete("company", company_id, user=user)

    def delete_kobject(self, kobject_id: str, user: int = 0) -> dict[str, Any]:
        """Delete a kobject for good; returns the delete event."""
        return self.store.delete("kobject", kobject_id, user=user)

    def audit_log(
        self, object_types: list[str] | tuple[str, ...] | None = None, since: TimeLike = None
    ) -> list[dict[str, Any]]:
        """Truth: every audit log event (of ``object_types``, created at or after
        ``since``) as the endpoint serves it, oldest first."""
        with self.store.lock:
            return self.audit.truth(object_types, since)

    def deleted_ids(self, kind: str) -> list[str]:
        """Truth: ids of the records of ``kind`` (plural) deleted for good."""
        single = _KIND[kind]
        with self.store.lock:
            recs = self.store.records(single)
            return [_id_of(recs[i]) for i in sorted(self.store.deleted.get(single, ()))]

    # -- outbound webhooks (outbound.py) -------------------------------------------------------
    def add_webhook(
        self,
        url: str,
        events: list[str],
        name: str = "sandbox webhook",
        headers: list[dict[str, str]] | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Register a webhook as ``POST /v1/outbound-webhooks`` would (same checks, raises
        ValueError); returns the resource with its ``token``."""
        body = {"name": name, "url": url, "events": events, "headers": headers or []}
        body["enabled"] = enabled
        with self.store.lock:
            return self.outbound.render(self.outbound.create(body))

    def webhooks(self) -> list[dict[str, Any]]:
        """Every registered webhook (with token), in creation order; shows auto-disabling."""
        with self.store.lock:
            return [self.outbound.render(h) for h in self.store.webhooks.values()]

    def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Remove a webhook and its queued deliveries; NotFoundError if unknown."""
        with self.store.lock:
            hook = self.outbound.delete(webhook_id)
            if hook is None:
                raise NotFoundError(f"outbound webhook {webhook_id} not found")
            return self.outbound.render(hook)

    def set_webhook_options(self, **changes: Any) -> None:
        """Change delivery switches at runtime (``webhook_duplicate_rate``,
        ``webhook_reorder``, ``webhook_retry_delays``, ``webhook_deliveries_fail``, ...)."""
        for name, value in changes.items():
            if not name.startswith("webhook_"):
                raise AttributeError(f"{name!r} is not a webhook option")
            self.set_option(name, value)

    def pause_webhooks(self) -> None:
        """Hold every delivery (events keep being queued) until ``resume_webhooks``."""
        self.outbound.set_paused(True)

    def resume_webhooks(self) -> None:
        """Release held deliveries."""
        self.outbound.set_paused(False)

    def webhook_attempts(self) -> list[dict[str, Any]]:
        """Every delivery attempt in the order they finished: ``event_id, name, webhook_id,
        url, attempt`` (1 = first try), ``status`` or ``error``, ``ok``, ``duplicate``, ``at``."""
        return self.outbound.attempts()

    def wait_webhook_attempts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` attempts were made (TimeoutError); returns them."""
        return self.outbound.wait_attempts(count, timeout)

    def wait_webhooks_drained(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until no delivery is queued, due for a retry or in flight (TimeoutError);
        returns every attempt so far."""
        self.outbound.wait_drained(timeout)
        return self.outbound.attempts()

    # -- stats -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Request counters (see README in the package docstring)."""
        return self.api.stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters (rate-limit windows keep running)."""
        self.api.stats.reset()

    def request_log(self) -> list[dict[str, Any]]:
        """The last requests: route, status, fault, real epoch time (``at``), path with
        query string, and for searches the parsed JSON body."""
        with self.api.stats.lock:
            return list(self.api.stats.log)

    # -- ground truth ----------------------------------------------------------------------
    def truth(self, kinds: tuple[str, ...] | list[str] | None = None) -> dict[str, list[Any]]:
        """Current full dataset as GET endpoints render it (fresh copies)."""
        out: dict[str, list[Any]] = {}
        with self.store.lock:
            for kind in kinds or TRUTH_KINDS:
                if kind in CHILD_TRUTH_KINDS:
                    out[kind] = self._child_truth(kind)
                    continue
                single = _KIND[kind]
                recs = self._live(single)
                if single in ("conversation", "message", "note", "customer", "company", "kobject"):
                    out[kind] = [self.store.render(single, r) for r in recs]
                else:
                    out[kind] = copy.deepcopy(recs)
        return out

    def _child_truth(self, kind: str) -> list[dict[str, Any]]:
        """Every attachment (single-item form, with ``id``) or event, conversation by
        conversation in the order their lists serve them."""
        st = self.store
        if kind == "attachments":
            now = st.clock.now_ms()
            return [
                children.render_attachment(st, a, with_id=True, now_ms=now)
                for conv in st.conversations
                for a in children.conversation_attachments(st, conv)
            ]
        return [
            children.render_event(st, conv, e)
            for conv in st.conversations
            for e in children.conversation_events(st, conv)
        ]

    def attachment_ids(self, conversation_id: str) -> list[str]:
        """Ids ``GET /v1/conversations/{id}/attachments`` lists now, in its order."""
        return self.store.attachment_ids(conversation_id)

    def event_ids(self, conversation_id: str) -> list[str]:
        """Ids ``GET /v1/conversations/{id}/events`` lists now (createdAt ascending)."""
        return self.store.event_ids(conversation_id)

    def attachment_count(self) -> int:
        """How many attachments the whole org has now."""
        return self.store.attachment_count()

    def event_count(self) -> int:
        """How many conversation events the whole org has now."""
        return self.store.event_count()

    def resolved_conversation_ids(
        self, since: TimeLike = None, until: TimeLike = None
    ) -> list[str]:
        """Ids of done conversations with since <= lastDone.createdAt < until."""
        lo, hi = _ms(since), _ms(until)
        with self.store.lock:
            return [
                c["id"]
                for c in self._live("conversation")
                if c["status"] == "done"
                and c["lastDone"] is not None
                and (lo is None or c["lastDone"]["at"] >= lo)
                and (hi is None or c["lastDone"]["at"] < hi)
            ]

    def updated_ids(self, kind: str, since: TimeLike = None, until: TimeLike = None) -> list[str]:
        """Ids of records of ``kind`` (plural) with since <= updatedAt < until."""
        lo, hi = _ms(since), _ms(until)
        single = _KIND[kind]
        with self.store.lock:
            out = []
            for rec in self._live(single):
                if isinstance(rec, dict) and "attributes" in rec:
                    stamp = parse_ts(rec["attributes"]["updatedAt"])
                    rid = rec["id"]
                elif isinstance(rec, dict):
                    stamp, rid = rec["updated"], rec["id"]
                else:
                    stamp, rid = rec.updated, rec.id
                if (lo is None or stamp >= lo) and (hi is None or stamp < hi):
                    out.append(rid)
            return out

    def _live(self, single: str) -> list[Any]:
        """The records of a kind, without those deleted for good."""
        recs = self.store.records(single)
        gone = self.store.deleted.get(single)
        return [r for i, r in enumerate(recs) if i not in gone] if gone else recs

    def tie_cluster_times(self) -> list[dict[str, Any]]:
        """The generated tie clusters: kind, size and the shared timestamp."""
        return [{"kind": k, "size": n, "at": fmt_ms(t)} for k, n, t in self.store.cluster_times]


def _id_of(rec: Any) -> str:
    return str(rec["id"] if isinstance(rec, dict) else rec.id)


def _keyspec(value: Any) -> KeySpec:
    """KeySpec from JSON: {"without": [...], "denial_status": 401, "expired": true}."""
    if not isinstance(value, dict):
        raise ValueError("key spec must be an object")
    if value.get("expired"):
        return KeySpec.expired_key()
    if "without" in value:
        return KeySpec.without(
            *value["without"], denial_status=int(value.get("denial_status", 403))
        )
    roles = value.get("roles")
    return KeySpec(
        roles=frozenset(roles) if roles is not None else None,
        denial_status=int(value.get("denial_status", 403)),
    )


class Control:
    """``/__control/...``: JSON endpoints mirroring the Python methods (no auth)."""

    POST_METHODS = (
        "reply",
        "resolve",
        "reopen",
        "set_tags",
        "set_custom",
        "add_note",
        "add_customer",
        "update_customer",
        "add_company",
        "update_company",
        "add_kobject",
        "update_kobject",
        "add_conversation",
        "delete_conversation",
        "delete_customer",
        "delete_company",
        "delete_kobject",
        "simulate_activity",
        "advance_clock",
        "add_webhook",
        "delete_webhook",
        "pause_webhooks",
        "resume_webhooks",
    )

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def handle(self, method: str, raw_path: str, body: bytes) -> Response:
        """Run one control call; errors come back as 400/404 JSON."""
        parts = urlsplit(raw_path)
        name = parts.path.rstrip("/").removeprefix("/__control").strip("/")
        query = dict(parse_qsl(parts.query))
        try:
            args = json.loads(body) if body else {}
            if not isinstance(args, dict):
                raise ValueError("body must be a JSON object")
            result = self._call(method, name, query, args)
            status = 200
        except NotFoundError as exc:
            result, status = {"error": str(exc)}, 404
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
        return Response(status, json.dumps(result, ensure_ascii=False, default=str).encode())

    def _call(self, method: str, name: str, query: dict[str, str], args: dict[str, Any]) -> Any:
        sb = self.sb
        if method == "GET":
            if name in ("", "health"):
                return {"ok": True, "now": sb.now_iso(), "base_url": sb.base_url}
            if name == "now":
                return {"now": sb.now_iso()}
            if name == "stats":
                return sb.stats()
            if name == "log":
                return sb.request_log()
            if name == "truth":
                kinds = query.get("kinds")
                return sb.truth(kinds.split(",") if kinds else None)
            if name == "resolved":
                return sb.resolved_conversation_ids(query.get("since"), query.get("until"))
            if name == "options":
                return {
                    f.name: _jsonable(getattr(sb.options, f.name))
                    for f in dataclasses.fields(SandboxOptions)
                }
            if name == "clusters":
                return sb.tie_cluster_times()
            if name == "attachment_ids":
                return sb.attachment_ids(query["conversation_id"])
            if name == "event_ids":
                return sb.event_ids(query["conversation_id"])
            if name == "webhook_attempts":
                return sb.webhook_attempts()
            if name == "webhooks":
                return sb.webhooks()
            if name == "audit_log":
                types = query.get("object_types")
                return sb.audit_log(types.split(",") if types else None, query.get("since"))
            if name == "child_counts":
                return {"attachments": sb.attachment_count(), "events": sb.event_count()}
            raise KeyError(f"unknown control endpoint GET {name}")
        if method != "POST":
            raise KeyError(f"unsupported method {method}")
        if name == "reset_stats":
            sb.reset_stats()
            return {"ok": True}
        if name == "options":
            for key, value in args.items():
                sb.set_option(key, value)
            return {"ok": True}
        if name == "advance_clock":
            return {"now": sb.advance_clock(float(args.get("seconds", 0)))}
        if name == "wait_webhooks_drained":
            try:
                return sb.wait_webhooks_drained(float(args.get("timeout", 5.0)))
            except TimeoutError as exc:
                raise ValueError(str(exc)) from exc
        if name in ("add_customer", "update_customer"):
            attrs = dict(args.get("attrs", {}))
            attrs.update({k: v for k, v in args.items() if k not in ("attrs", "customer_id")})
            if name == "add_customer":
                return sb.add_customer(**attrs)
            return sb.update_customer(args["customer_id"], **attrs)
        if name in self.POST_METHODS:
            return getattr(sb, name)(**args)
        raise KeyError(f"unknown control endpoint POST {name}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return value
