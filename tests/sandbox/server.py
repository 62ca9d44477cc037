"""HTTP layer: routing, auth and roles, rate limits, faults, stats, and handlers."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import socket
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import children
from .archive import ARCHIVE, ARCHIVE_PATH, archive_fields
from .clock import fmt_ms
from .data import COMPANY_CUSTOM, CONVERSATION_CUSTOM, CUSTOMER_CUSTOM, MESSAGE_CUSTOM
from .options import RESOURCE_ROLES, KeySpec
from .reference import kind_of_path, reference_of
from .search import Query, ResultCache, SearchError, build_fields, search_resource

if TYPE_CHECKING:
    from .app import Sandbox

WINDOW_SECONDS = 60.0
#: GET only: on the real API, DELETE on this path deletes the key
TOKEN_PATH = "/v1/auth/tokens/current"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error rendered as a JSON:API errors body."""

    def __init__(self, status: int, code: str, title: str, detail: str = "") -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail or title

    def body(self) -> dict[str, Any]:
        """The ``{"errors": [...]}`` envelope."""
        return {
            "errors": [
                {
                    "status": self.status,
                    "code": self.code,
                    "title": self.title,
                    "detail": self.detail,
                }
            ]
        }


@dataclass
class Response:
    """What the handler writes; ``fault`` asks it to damage the transfer."""

    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None


class FixedWindow:
    """A fixed 60 s budget window that starts at the first request after expiry."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.count = 0

    def _roll(self, now: float) -> None:
        if self.start is None or now >= self.start + WINDOW_SECONDS:
            self.start = now
            self.count = 0

    def hit(self, now: float, limit: int) -> bool:
        """Consume one unit; False when the budget is exhausted."""
        self._roll(now)
        if self.count >= limit:
            return False
        self.count += 1
        return True

    def state(self, now: float, limit: int) -> tuple[int, float]:
        """(remaining, seconds until reset) without consuming or starting a window."""
        if self.start is None or now >= self.start + WINDOW_SECONDS:
            return limit, WINDOW_SECONDS
        return max(0, limit - self.count), max(0.0, self.start + WINDOW_SECONDS - now)


class SlidingMax:
    """Tracks the largest number of events seen in any 60 s span."""

    def __init__(self) -> None:
        self.events: deque[float] = deque()
        self.max = 0

    def add(self, now: float) -> None:
        """Record one event at monotonic time ``now``."""
        self.events.append(now)
        while self.events and self.events[0] <= now - WINDOW_SECONDS:
            self.events.popleft()
        self.max = max(self.max, len(self.events))


class Stats:
    """Request counters for assertions in tests and benchmarks."""

    def __init__(self, log_size: int = 5000) -> None:
        self.lock = threading.Lock()
        self.log_size = log_size
        self.reset()

    def reset(self) -> None:
        """Forget everything (rate-limit windows are not affected)."""
        with getattr(self, "lock", threading.Lock()):
            self.by_route: dict[str, Counter[str]] = {}
            self.by_status: Counter[str] = Counter()
            self.total = 0
            self.rate_limited = 0
            self.faults: Counter[str] = Counter()
            self.windows = {"org": SlidingMax(), "search": SlidingMax()}
            self.accepted = {"org": SlidingMax(), "search": SlidingMax()}
            self.log: deque[dict[str, Any]] = deque(maxlen=self.log_size)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy of the counters."""
        with self.lock:
            return {
                "total_requests": self.total,
                "by_route": {k: dict(v) for k, v in sorted(self.by_route.items())},
                "by_status": dict(self.by_status),
                "rate_limited": self.rate_limited,
                "faults": dict(self.faults),
                "max_requests_in_60s": {k: w.max for k, w in self.windows.items()},
                "max_accepted_in_60s": {k: w.max for k, w in self.accepted.items()},
            }


def _page_params(query: dict[str, str], default: int, maximum: int) -> tuple[int, int]:
    """page/pageSize from the query string; pageSize is silently clamped."""
    try:
        page = int(query.get("page", "1"))
        size = int(query.get("pageSize", str(default)))
    except ValueError as exc:
        raise ApiError(
            400, "invalid_parameter", "Bad Request", "page and pageSize must be integers"
        ) from exc
    if page < 1:
        raise ApiError(400, "invalid_parameter", "Bad Request", "page must be >= 1")
    return page, min(max(size, 1), maximum)


def _link(path: str, query: dict[str, str], page: int, size: int) -> str:
    extra = {k: v for k, v in query.items() if k not in ("page", "pageSize")}
    return f"{path}?{urlencode({'page': page, 'pageSize': size, **extra})}"


def paged(
    path: str,
    query: dict[str, str],
    items: list[Any],
    page: int,
    size: int,
    render: Callable[[Any], dict[str, Any]],
    with_total: bool,
) -> dict[str, Any]:
    """A list envelope with relative links; ``with_total`` adds total/totalPages/last."""
    start = (page - 1) * size
    chunk = items[start : start + size]
    has_next = start + size < len(items)
    meta: dict[str, Any] = {"pageSize": size, "page": page}
    links: dict[str, Any] = {
        "self": _link(path, query, page, size),
        "first": _link(path, query, 1, size),
        "prev": _link(path, query, page - 1, size) if page > 1 else None,
        "next": _link(path, query, page + 1, size) if has_next else None,
    }
    if with_total:
        total_pages = math.ceil(len(items) / size)
        meta.update(total=len(items), totalPages=total_pages)
        links["last"] = _link(path, query, max(total_pages, 1), size)
    return {"meta": meta, "data": [render(x) for x in chunk], "links": links}


ID = r"([^/]+)"
Route = tuple[str, "re.Pattern[str]", str, "str | None", str]


def _routes() -> list[Route]:
    table = [
        ("POST", "/v1/customers/search", "search", "api_search"),
        ("POST", ARCHIVE_PATH, "search", "api_archive_search"),
        ("GET", "/v1/auth/tokens/current", None, "api_token"),
        ("GET", "/v1/users/current", None, "api_current_user"),
        ("GET", "/v1/conversations", "conversation", "api_list_conversations"),
        ("GET", "/v1/conversations/{id}", "conversation", "api_get_conversations"),
        ("GET", "/v1/conversations/{id}/messages", "message", "api_conversation_messages"),
        ("GET", "/v1/conversations/{id}/notes", "note", "api_conversation_notes"),
        (
            "GET",
            "/v1/conversations/{id}/attachments",
            "attachment",
            "api_conversation_attachments",
        ),
        ("GET", "/v1/conversations/{id}/events", "event", "api_conversation_events"),
        ("GET", "/v1/messages/{mid}/attachments/{id}", "attachment", "api_get_attachment"),
        ("GET", "/v1/customers", "customer", "api_list_customers"),
        ("GET", "/v1/customers/{id}", "customer", "api_get_customer"),
        ("GET", "/v1/customers/{id}/conversations", "conversation", "api_customer_conversations"),
        ("GET", "/v1/messages", "message", "api_list_messages"),
        ("GET", "/v1/messages/{id}", "message", "api_get_message"),
        ("GET", "/v1/notes", "note", "api_list_notes"),
        ("GET", "/v1/notes/{id}", "note", "api_get_note"),
        ("GET", "/v1/tags", "tag", "api_list_tags"),
        ("GET", "/v1/tags/{id}", "tag", "api_get_tag"),
        ("GET", "/v1/users", "user", "api_reference_list"),
        ("GET", "/v1/users/{id}", "user", "api_reference_get"),
        ("GET", "/v1/teams", "team", "api_reference_list"),
        ("GET", "/v1/teams/{id}", "team", "api_reference_get"),
        ("GET", "/v1/shortcuts", "shortcut", "api_reference_list"),
        ("GET", "/v1/shortcuts/{id}", "shortcut", "api_reference_get"),
        ("GET", "/v1/brands", "brand", "api_reference_list"),
        ("GET", "/v1/brands/{id}", "brand", "api_reference_get"),
        ("GET", "/v1/schedules", "schedule", "api_reference_list"),
        ("GET", "/v1/schedules/{id}", "schedule", "api_reference_get"),
        ("GET", "/v1/klasses", "klass", "api_reference_list"),
        ("GET", "/v1/routing/queues", "routing", "api_reference_list"),
        ("GET", "/v1/routing/queues/{id}", "routing", "api_reference_get"),
        ("GET", "/v1/satisfaction", "satisfaction", "api_reference_list"),
        ("GET", "/v1/metadata/{id}", "metadata", "api_metadata"),
        ("GET", "/v1/audit-logs", "audit_logs", "api_audit_logs"),
        # the event catalog first: "events" must not be taken for a webhook id
        ("GET", "/v1/outbound-webhooks/events", "outbound_webhook", "api_webhook_events"),
        ("GET", "/v1/outbound-webhooks", "outbound_webhook", "api_list_webhooks"),
        ("POST", "/v1/outbound-webhooks", "outbound_webhook_write", "api_create_webhook"),
        ("GET", "/v1/outbound-webhooks/{id}", "outbound_webhook", "api_get_webhook"),
        ("DELETE", "/v1/outbound-webhooks/{id}", "outbound_webhook_delete", "api_delete_webhook"),
    ]
    out: list[Route] = []
    for method, template, role, name in table:
        escaped = re.escape(template).replace(r"\{mid\}", ID).replace(r"\{id\}", ID)
        pattern = re.compile("^" + escaped + "$")
        out.append((method, pattern, template, role, name))
    return out


ROUTES = _routes()


class Api:
    """Request processing independent of the socket handling."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.store = sandbox.store
        self.fields = build_fields(self.store)
        self.archive_fields = archive_fields(self.fields)
        self.cache = ResultCache()
        self.indexes: dict[tuple[str, str], tuple[int, list[Any], list[Any]]] = {}
        self.filtered: OrderedDict[str, tuple[int, list[Any], list[Any]]] = OrderedDict()
        self.rl_lock = threading.Lock()
        self.org_window = FixedWindow()
        self.search_window = FixedWindow()
        self.fault_rng = random.Random(sandbox.options.seed ^ 0xFA17)
        self.fault_lock = threading.Lock()
        self.stats = Stats(sandbox.options.request_log_size)
        # the key of the request being handled (for lastTokenChars)
        self._local = threading.local()

    # -- entry point --------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> Response:
        """Process one /v1 request into a Response."""
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = next(
            (
                (t, r, n, m)
                for m2, p, t, r, n in ROUTES
                for m in [p.match(path)]
                if m and m2 == method
            ),
            None,
        )
        template = route[0] if route else ("UNMATCHED" if path != TOKEN_PATH else TOKEN_PATH)
        is_search = template in ("/v1/customers/search", ARCHIVE_PATH)
        label = f"{method} {template}"
        rl_headers: dict[str, str] = {}
        try:
            spec = self._auth(headers)
            self._local.key = headers.get("Authorization", "").partition(" ")[2]
            rl_headers = self._rate_limit(is_search)
            if path == TOKEN_PATH and method != "GET":
                # never a fault, never an action: the real API deletes the key on DELETE
                raise ApiError(
                    405,
                    "method_not_allowed",
                    "Method Not Allowed",
                    f"{method} {TOKEN_PATH} is not allowed here; only GET (the sandbox "
                    "never deletes a key)",
                )
            fault = self._pick_fault(template)
            if fault in ("500", "503"):
                raise ApiError(
                    int(fault),
                    "server_error",
                    "Internal Server Error" if fault == "500" else "Service Unavailable",
                    "injected fault",
                )
            if fault == "502_html":
                resp = Response(502, HTML_502, "text/html")
                resp.headers.update(rl_headers)
                return self._finish(label, resp, fault, self._log_extra(raw_path, body, is_search))
            if route is None:
                raise ApiError(404, "not_found", "Not Found", f"no route for {method} {path}")
            _t, role, name, match = route
            if role is not None and not spec.allows(role):
                self._deny(spec, role)
            handler = getattr(self, name)
            with self.store.lock:
                payload = handler(spec, match, query, body, path)
            if isinstance(payload, Response):  # a status other than 200
                resp = payload
            else:
                resp = Response(200, json.dumps(payload, ensure_ascii=False).encode())
            resp.fault = fault
        except ApiError as err:
            resp = Response(err.status, json.dumps(err.body()).encode())
            if err.status == 405:
                resp.headers["Allow"] = "GET"
            fault = str(err.status) if err.code == "server_error" else None
            if isinstance(err, _RateLimitedError):
                rl_headers = err.headers
            elif not rl_headers:
                rl_headers = self._peek_headers(is_search)
        resp.headers.update(rl_headers)
        return self._finish(
            label,
            resp,
            fault if resp.status >= 500 or resp.fault else None,
            self._log_extra(raw_path, body, is_search),
        )

    @staticmethod
    def _log_extra(raw_path: str, body: bytes, is_search: bool) -> dict[str, Any]:
        """Path with query, plus the parsed body of searches (for debugging taps)."""
        extra: dict[str, Any] = {"path": raw_path}
        if is_search and body and len(body) < 20_000:
            try:
                extra["body"] = json.loads(body)
            except ValueError:
                extra["body"] = None
        return extra

    def _finish(
        self, label: str, resp: Response, fault: str | None, extra: dict[str, Any] | None = None
    ) -> Response:
        with self.stats.lock:
            self.stats.total += 1
            self.stats.by_route.setdefault(label, Counter())[str(resp.status)] += 1
            self.stats.by_status[str(resp.status)] += 1
            if resp.status == 429:
                self.stats.rate_limited += 1
            if fault:
                self.stats.faults[fault] += 1
            entry = {"route": label, "status": resp.status, "fault": fault, "at": time.time()}
            entry.update(extra or {})
            self.stats.log.append(entry)
        return resp

    # -- auth, roles, limits, faults -------------------------------------------------
    def _auth(self, headers: Any) -> KeySpec:
        value = headers.get("Authorization")
        if value is None:
            raise ApiError(401, "unauthorized", "Unauthorized", "missing Authorization header")
        scheme, _, key = value.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "Unauthorized", "expected a Bearer token")
        spec = self.sb.options.key_spec(key)
        if spec is None:
            raise ApiError(401, "unauthorized", "Unauthorized", "invalid API token")
        if spec.expired:
            raise ApiError(401, "unauthorized", "Expired token", "Expired token")
        return spec

    @staticmethod
    def _deny(spec: KeySpec, role: str) -> None:
        from .options import RESOURCE_ROLES

        need = " or ".join(RESOURCE_ROLES[role])
        status = spec.denial_status
        raise ApiError(
            status,
            "forbidden" if status == 403 else "unauthorized",
            "Forbidden" if status == 403 else "Unauthorized",
            f"missing role: {need}",
        )

    def _rate_headers(
        self, window: FixedWindow, limit: int, now: float, *, refused: bool = False
    ) -> dict[str, str]:
        remaining, until = window.state(now, limit)
        if self.sb.options.reset_format == "delta":
            reset = str(math.ceil(until))
        else:
            reset = str(math.ceil(time.time() + until))
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": reset,
        }
        if refused and not self.sb.options.rate_limit_429_limit_header:
            del headers["x-ratelimit-limit"]
        return headers

    def _peek_headers(self, is_search: bool) -> dict[str, str]:
        """Budget headers for a request that was not counted (e.g. a bad key)."""
        opts = self.sb.options
        with self.rl_lock:
            now = time.monotonic()
            if is_search:
                return self._rate_headers(self.search_window, opts.search_rpm, now)
            return self._rate_headers(self.org_window, opts.org_rpm, now)

    def _rate_limit(self, is_search: bool) -> dict[str, str]:
        opts = self.sb.options
        with self.rl_lock:
            now = time.monotonic()
            self.stats.windows["org"].add(now)
            if is_search:
                self.stats.windows["search"].add(now)
            # a rejected request consumes nothing
            if self.org_window.state(now, opts.org_rpm)[0] <= 0:
                headers = self._rate_headers(self.org_window, opts.org_rpm, now, refused=True)
                raise _RateLimitedError(headers, "org")
            if is_search and self.search_window.state(now, opts.search_rpm)[0] <= 0:
                headers = self._rate_headers(self.search_window, opts.search_rpm, now, refused=True)
                raise _RateLimitedError(headers, "search")
            self.org_window.hit(now, opts.org_rpm)
            if is_search:
                self.search_window.hit(now, opts.search_rpm)
            self.stats.accepted["org"].add(now)
            if is_search:
                self.stats.accepted["search"].add(now)
                if opts.search_headers != "org":
                    return self._rate_headers(self.search_window, opts.search_rpm, now)
            # search_headers="org": a successful search shows the org window only
            return self._rate_headers(self.org_window, opts.org_rpm, now)

    def _pick_fault(self, template: str) -> str | None:
        opts = self.sb.options
        if opts.fault_routes is not None and not any(s in template for s in opts.fault_routes):
            return None
        rates = [
            ("5xx", opts.fault_5xx_rate),
            ("502_html", opts.fault_502_html_rate),
            ("reset", opts.fault_reset_rate),
            ("truncated", opts.fault_truncated_rate),
        ]
        if not any(rate > 0 for _, rate in rates):
            return None
        with self.fault_lock:
            roll = self.fault_rng.random()
            pick = self.fault_rng.random()
        acc = 0.0
        for name, rate in rates:
            acc += rate
            if roll < acc:
                if name == "5xx":
                    return "500" if pick < 0.5 else "503"
                return name
        return None

    # -- helpers -------------------------------------------------------------------
    def _one(self, kind: str, id_: str) -> Any:
        rec = self.store.get(kind, id_)
        if rec is None:
            raise ApiError(404, "not_found", "Not Found", f"{kind} {id_} not found")
        return rec

    def _list_params(self, query: dict[str, str], maximum: int | None = None) -> tuple[int, int]:
        opts = self.sb.options
        return _page_params(query, 100, maximum or opts.list_max_page_size)

    def _render(self, kind: str) -> Callable[[Any], dict[str, Any]]:
        return lambda rec: self.store.render(kind, rec)

    # -- search ----------------------------------------------------------------------
    def api_search(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """POST /v1/customers/search."""
        return self._serve_search(spec, query, body, archive=False)

    def api_archive_search(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """POST /v1/customers/archive/search: only records older than standard search's."""
        status = self.sb.options.archive_status
        if status is not None:
            raise ApiError(
                status, "archive_unavailable", "Archive Search Unavailable", "not enabled"
            )
        return self._serve_search(spec, query, body, archive=True)

    def _serve_search(
        self, spec: KeySpec, query: dict[str, str], body: bytes, *, archive: bool
    ) -> dict[str, Any]:
        """One page of standard or archive search; they differ in dialect and in age."""
        opts = self.sb.options
        if len(body) > opts.max_body_bytes:
            raise ApiError(
                413,
                "payload_too_large",
                "Payload Too Large",
                f"request body exceeds {opts.max_body_bytes} bytes",
            )
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", "Bad Request", "body is not valid JSON") from exc
        try:
            q = Query(
                self.store,
                parsed,
                self.archive_fields if archive else self.fields,
                strict=opts.search_strict_body,
                max_criteria=opts.search_max_criteria,
                dialect=ARCHIVE if archive else None,
            )
        except SearchError as exc:
            raise ApiError(400, "bad_request", "Bad Request", str(exc)) from exc
        resource = search_resource(q.context)
        if resource in RESOURCE_ROLES and not spec.allows(resource):
            self._deny(spec, resource)
        page, size = _page_params(query, opts.search_default_page_size, opts.search_max_page_size)
        if archive and page > opts.archive_max_pages:
            raise ApiError(
                400,
                "bad_request",
                "Bad Request",
                f"archive search serves at most {opts.archive_max_pages} pages",
            )
        if q.fields is None:
            hits: list[Any] = []
        else:
            # A page's hits are ordered only as far as that page needs.
            cache_key = f"{'archive|' if archive else ''}{q.cache_key}|{page * size}"
            hits_cached = self.cache.get(cache_key, self.store.version)
            if hits_cached is not None and not self.store.pending[q.context]:
                hits = hits_cached
            else:
                records, lagging = self.store.search_view(q.context)
                # Only this page's hits need their full order, unless the age filter
                # drops some of them afterwards.
                need = None if archive or self._ages_filtered(q.context) else page * size
                hits = q.run(
                    records,
                    None if lagging else self._index_fn(q.context, records),
                    need=need,
                    filtered=None if lagging else self._filtered_fn(),
                )
                if not lagging:
                    self.cache.put(cache_key, self.store.version, hits)
        aged = self._archive_filter if archive else self._age_filter
        hits = aged(q.context, hits)
        total = len(hits)
        total_pages = math.ceil(total / size)
        start = (page - 1) * size
        cap = opts.search_result_cap
        if start >= cap:
            if opts.cap_behavior != "empty":
                raise ApiError(
                    400,
                    "search_result_window",
                    "Result window is too large",
                    f"only the first {cap} results of a search can be paged "
                    f"(requested from #{start})",
                )
            chunk: list[Any] = []
        else:
            chunk = hits[start : min(start + size, cap)]
        search_path = ARCHIVE_PATH if archive else "/v1/customers/search"
        links = {
            "self": _link(search_path, query, page, size),
            "first": _link(search_path, query, 1, size),
            "prev": _link(search_path, query, page - 1, size) if page > 1 else None,
            "next": _link(search_path, query, page + 1, size) if page < total_pages else None,
            "last": _link(search_path, query, max(total_pages, 1), size),
        }
        meta = {
            "pageSize": size,
            "page": page,
            "total": total,
            "totalPages": total_pages,
            "aggregations": {},
            "timed_out": False,
        }
        return {
            "meta": meta,
            "data": [self.store.render(q.context, r) for r in chunk],
            "links": links,
        }

    def _age_cutoff(self) -> int | None:
        """Standard search only holds records updated after this (None: all of them)."""
        days = self.sb.options.search_max_age_days
        if days is None:
            return None
        cutoff = self._cutoff_ms(days)
        if self.store.generator.start >= cutoff:
            return None  # nothing that old exists
        return cutoff

    def _cutoff_ms(self, days: float) -> int:
        """now - ``days``, floored to UTC midnight with day granularity."""
        cutoff = self.store.clock.now_ms() - int(days * 86_400_000)
        if self.sb.options.search_cutoff_granularity == "day":
            cutoff -= cutoff % 86_400_000
        return cutoff

    def _archive_filter(self, context: str, hits: list[Any]) -> list[Any]:
        """Archive search holds only what standard search no longer does (plus overlap)."""
        opts = self.sb.options
        if opts.search_max_age_days is None or not hits:
            return []
        until = self._cutoff_ms(opts.search_max_age_days)
        until += int(opts.archive_overlap_days * 86_400_000)
        base = "kobject" if context.startswith("kobject") else context
        name = f"{base}_updated_at"
        get = self.archive_fields[context][name][1]
        return [h for h in hits if get(h) < until]

    def _ages_filtered(self, context: str) -> bool:
        return self._age_cutoff() is not None and f"{context}_updated_at" in self.fields.get(
            context, {}
        )

    def _age_filter(self, context: str, hits: list[Any]) -> list[Any]:
        """Standard search only holds records updated within the last 2 years."""
        cutoff = self._age_cutoff()
        if cutoff is None or not hits:
            return hits
        get = self.fields[context][f"{context}_updated_at"][1]
        return [h for h in hits if get(h) >= cutoff]

    def _filtered_fn(self) -> Any:
        """An index narrowed by a query's other criteria, kept per data version."""
        version = self.store.version

        def filtered(key: str, narrow: Any) -> tuple[list[Any], list[Any]]:
            hit = self.filtered.get(key)
            if hit is not None and hit[0] == version:
                self.filtered.move_to_end(key)
                return hit[1], hit[2]
            keys, recs = narrow()
            self.filtered[key] = (version, keys, recs)
            while len(self.filtered) > 16:
                self.filtered.popitem(last=False)
            return keys, recs

        return filtered

    def _index_fn(self, context: str, records: list[Any]) -> Any:
        """Sorted (value, id) index per datetime field, rebuilt when data changes."""
        version = self.store.version

        def index(name: str, get: Any) -> tuple[list[Any], list[Any]]:
            hit = self.indexes.get((context, name))
            if hit is not None and hit[0] == version:
                return hit[1], hit[2]
            pairs = [(v, _rid(r), r) for r in records if (v := get(r)) is not None]
            pairs.sort(key=lambda p: (p[0], p[1]))
            keys = [p[0] for p in pairs]
            recs = [p[2] for p in pairs]
            self.indexes[(context, name)] = (version, keys, recs)
            return keys, recs

        return index

    # -- identity ----------------------------------------------------------------------
    def api_token(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/auth/tokens/current: roles, org and expiry; never the key."""
        user = self.store.users[0]
        digest = zlib.crc32(f"{spec.name}|{','.join(spec.role_list())}".encode())
        token_id = f"{digest:08x}{self.store.salt:06x}0a{0:08x}"
        return {
            "data": {
                "type": "token",
                "id": token_id[:24],
                "attributes": {
                    "name": spec.name,
                    "roles": spec.role_list(),
                    "lastTokenChars": _key_tail(getattr(self._local, "key", "")),
                    "expiresAt": None,
                    "createdAt": user["attributes"]["createdAt"],
                },
                "relationships": {
                    "org": {"data": {"type": "org", "id": self.store.org_id}},
                    "user": {"data": {"type": "user", "id": user["id"]}},
                },
            }
        }

    def api_current_user(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/users/current: the machine user behind the key."""
        return {"data": self.store.users[0]}

    # -- conversations ---------------------------------------------------------------------
    def api_list_conversations(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations (ordered by id; sort=desc reverses)."""
        page, size = self._list_params(query)
        items = sorted(
            self.store.conversations, key=lambda c: c["id"], reverse=query.get("sort") == "desc"
        )
        return paged(path, query, items, page, size, self._render("conversation"), False)

    def api_get_conversations(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations/{id} or {id1},{id2} (list form returns a list)."""
        ids = [i for i in match.group(1).split(",") if i]
        if not ids:
            raise ApiError(400, "bad_request", "Bad Request", "no id")
        if len(ids) > self.sb.options.multi_get_max_ids:
            raise ApiError(
                400,
                "bad_request",
                "Bad Request",
                f"at most {self.sb.options.multi_get_max_ids} ids",
            )
        recs = [self.store.render("conversation", self._one("conversation", i)) for i in ids]
        if "," in match.group(1):
            return {"data": recs}
        return {"data": recs[0]}

    def api_conversation_messages(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations/{id}/messages, createdAt ascending."""
        conv = self._one("conversation", match.group(1))
        page, size = self._list_params(query)
        items = sorted(
            (self.store.messages[i] for i in conv["msgs"]), key=lambda m: (m.created, m.id)
        )
        return paged(path, query, items, page, size, self._render("message"), False)

    def api_conversation_notes(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations/{id}/notes, createdAt ascending."""
        conv = self._one("conversation", match.group(1))
        page, size = self._list_params(query)
        items = sorted(
            (self.store.notes[i] for i in conv["notes"]), key=lambda n: (n.created, n.id)
        )
        return paged(path, query, items, page, size, self._render("note"), False)

    def _child_list(
        self,
        path: str,
        query: dict[str, str],
        items: list[Any],
        render: Callable[[Any], dict[str, Any]],
    ) -> dict[str, Any]:
        """A per-conversation child list (attachments, events): ``meta: {}`` as in both
        OAS examples; ``links`` unless ``child_list_links`` is off (UNCERTAIN upstream)."""
        page, size = self._list_params(query)
        out = paged(path, query, items, page, size, render, False)
        out["meta"] = {}
        if not self.sb.options.child_list_links:
            del out["links"]
        return out

    def api_conversation_attachments(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations/{id}/attachments: the attachments of its messages in the
        messages list's order; items without a top-level ``id``, as Kustomer's example."""
        conv = self._one("conversation", match.group(1))
        items = children.conversation_attachments(self.store, conv)
        now = self.store.clock.now_ms()
        return self._child_list(
            path,
            query,
            items,
            lambda a: children.render_attachment(self.store, a, with_id=False, now_ms=now),
        )

    def api_conversation_events(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/conversations/{id}/events: createdAt ascending; ``sort=desc`` (or any
        value starting with ``-``) newest first; ``name``/``changed`` filters ignored."""
        conv = self._one("conversation", match.group(1))
        items = children.conversation_events(self.store, conv)
        order = query.get("sort", "")
        if order == "desc" or order.startswith("-"):
            items.reverse()
        return self._child_list(
            path, query, items, lambda e: children.render_event(self.store, conv, e)
        )

    def api_get_attachment(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/messages/{mid}/attachments/{id}: one attachment, with its ``id``."""
        msg = self._one("message", match.group(1))
        att = children.find_attachment(self.store, match.group(2))
        if att is None or att.msg != msg.idx:
            raise ApiError(404, "not_found", "Not Found", f"attachment {match.group(2)} not found")
        now = self.store.clock.now_ms()
        return {"data": children.render_attachment(self.store, att, with_id=True, now_ms=now)}

    # -- customers --------------------------------------------------------------------
    def api_list_customers(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/customers (with total/totalPages and links.last)."""
        page, size = self._list_params(query)
        items = sorted(self.store.customers, key=lambda c: c["id"])
        return paged(path, query, items, page, size, self._render("customer"), True)

    def api_get_customer(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/customers/{id}."""
        return {"data": self.store.render("customer", self._one("customer", match.group(1)))}

    def api_customer_conversations(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/customers/{id}/conversations."""
        cust = self._one("customer", match.group(1))
        page, size = self._list_params(query)
        items = sorted(
            (c for c in self.store.conversations if c["cust"] == cust["idx"]), key=lambda c: c["id"]
        )
        return paged(path, query, items, page, size, self._render("conversation"), False)

    # -- messages and notes ---------------------------------------------------------------
    def api_list_messages(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/messages (by id; sort=desc reverses)."""
        page, size = self._list_params(query)
        items = self.store.messages
        if query.get("sort") == "desc":
            items = list(reversed(items))
        return paged(path, query, items, page, size, self._render("message"), False)

    def api_get_message(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/messages/{id}."""
        return {"data": self.store.render("message", self._one("message", match.group(1)))}

    def api_list_notes(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/notes."""
        page, size = self._list_params(query)
        items = self.store.notes
        if query.get("sort") == "desc":
            items = list(reversed(items))
        return paged(path, query, items, page, size, self._render("note"), False)

    def api_get_note(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/notes/{id}."""
        return {"data": self.store.render("note", self._one("note", match.group(1)))}

    # -- small lists -----------------------------------------------------------------------
    def api_list_tags(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/tags; ``deleted=false`` hides deleted tags."""
        page, size = self._list_params(query)
        flag = query.get("deleted")
        items = self.store.tags
        by_default = self.sb.options.tags_include_deleted_by_default
        if flag == "false" or (flag is None and not by_default):
            items = [t for t in items if not t["attributes"]["deleted"]]
        elif flag == "true":
            items = [t for t in items if t["attributes"]["deleted"]]
        return paged(path, query, items, page, size, lambda t: t, False)

    def api_get_tag(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/tags/{id}."""
        return {"data": self._one("tag", match.group(1))}

    def api_reference_list(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET a reference list (users, teams, shortcuts, brands, schedules, klasses,
        routing/queues, satisfaction): page/pageSize (users and teams up to 500, the
        rest up to ``list_max_page_size``), ``links.next``; users take ``deleted`` and
        klasses ``status`` (default ``enabled``)."""
        kind, _ = kind_of_path(path)
        page, size = self._list_params(query, kind.max_page_size)
        try:
            items = reference_of(self.sb).listing(kind.name, query)
        except ValueError as exc:
            raise ApiError(400, "invalid_parameter", "Bad Request", str(exc)) from exc
        return paged(path, query, items, page, size, lambda rec: rec, False)

    def api_reference_get(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET one record of a reference list by id (brands and schedules: or ``default``)."""
        kind, id_ = kind_of_path(path)
        rec = reference_of(self.sb).get(kind.name, id_ or "")
        if rec is None:
            raise ApiError(404, "not_found", "Not Found", f"{kind.type} {id_} not found")
        return {"data": rec}

    def api_audit_logs(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/audit-logs: newest first, cursor ``before``/``after`` (see audit.py)."""
        from .audit import ApiQueryError

        try:
            return self.sb.audit.page(path, query, self.sb.options.audit_max_page_size)
        except ApiQueryError as exc:
            raise ApiError(400, "invalid_parameter", "Bad Request", str(exc)) from exc

    def api_metadata(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/metadata/{conversation|customer|message}: custom attribute definitions."""
        resource = match.group(1)
        defs = {
            "conversation": CONVERSATION_CUSTOM,
            "customer": CUSTOMER_CUSTOM,
            "message": MESSAGE_CUSTOM,
            "company": COMPANY_CUSTOM,
        }.get(resource)
        if defs is None:
            raise ApiError(404, "not_found", "Not Found", f"no metadata for {resource}")
        stamp = self.store.users[0]["attributes"]["createdAt"]
        props: dict[str, Any] = {}
        for name, (type_, display) in defs.items():
            prop: dict[str, Any] = {
                "type": type_,
                "displayName": display,
                "updatedAt": stamp,
                "modifiedAt": stamp,
                "modifiedBy": self.store.users[0]["id"],
            }
            if name.endswith("Tree"):
                prop["tree"] = {"children": []}
            props[name] = prop
        return {
            "data": {
                "type": "metadata",
                "id": resource,
                "attributes": {"properties": props},
                "relationships": {
                    "org": {
                        "links": {"self": f"/v1/orgs/{self.store.org_id}"},
                        "data": {"type": "org", "id": self.store.org_id},
                    }
                },
                "links": {"self": f"/v1/metadata/{resource}"},
            }
        }

    # -- outbound webhooks (outbound.py) ---------------------------------------------------
    def api_webhook_events(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/outbound-webhooks/events: the events a webhook may subscribe to."""
        return {"data": self.sb.outbound.event_catalog()}

    def api_list_webhooks(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/outbound-webhooks: creation order, without tokens."""
        page, size = self._list_params(query)
        outbound = self.sb.outbound
        items = list(self.store.webhooks.values())
        return paged(
            path, query, items, page, size, lambda h: outbound.render(h, with_token=False), False
        )

    def api_create_webhook(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> Response:
        """POST /v1/outbound-webhooks: 201 with the webhook and its signing ``token``."""
        try:
            payload = json.loads(body) if body else None
        except ValueError as exc:
            raise ApiError(400, "invalid_body", "Bad Request", "body is not JSON") from exc
        try:
            hook = self.sb.outbound.create(payload)
        except ValueError as exc:
            code = getattr(exc, "code", "invalid_body")
            raise ApiError(400, code, "Bad Request", str(exc)) from exc
        data = {"data": self.sb.outbound.render(hook)}
        return Response(201, json.dumps(data, ensure_ascii=False).encode())

    def api_get_webhook(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> dict[str, Any]:
        """GET /v1/outbound-webhooks/{id}: with its ``token`` (it can be read again)."""
        return {"data": self.sb.outbound.render(self._webhook(match.group(1)))}

    def api_delete_webhook(
        self, spec: KeySpec, match: Any, query: dict[str, str], body: bytes, path: str
    ) -> Response:
        """DELETE /v1/outbound-webhooks/{id}: 204; queued deliveries are dropped."""
        self._webhook(match.group(1))
        self.sb.outbound.delete(match.group(1))
        return Response(204, b"")

    def _webhook(self, webhook_id: str) -> dict[str, Any]:
        hook = self.store.webhooks.get(webhook_id)
        if hook is None:
            raise ApiError(
                404, "not_found", "Not Found", f"outbound webhook {webhook_id} not found"
            )
        return hook


def _key_tail(key: str) -> str:
    """The last characters of a key, as Kustomer shows them: at most 6 and at most a
    quarter of the key, so a short test key is never echoed whole ("" below 4)."""
    n = min(6, len(key) // 4)
    return key[-n:] if n else ""


def _rid(rec: Any) -> str:
    return rec["id"] if isinstance(rec, dict) else rec.id


class _RateLimitedError(ApiError):
    def __init__(self, headers: dict[str, str], budget: str) -> None:
        super().__init__(
            429,
            "rate_limit_exceeded",
            "Too Many Requests",
            f"{budget} rate limit exceeded; retry after the window resets",
        )
        self.headers = headers


class Handler(BaseHTTPRequestHandler):
    """Socket side: reads the request, applies latency and transport faults."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle plus delayed ACK
    # adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "KustomerSandbox/1.0"

    def version_string(self) -> str:
        """Server header without the Python version."""
        return self.server_version

    sandbox: Sandbox  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header comes from the sandbox clock (taps use it as server now)."""
        return self.sandbox.clock.http_date()

    def do_GET(self) -> None:
        """Dispatch GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Dispatch POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """Dispatch PUT (only to answer 404)."""
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        """Dispatch DELETE (only to answer 404, or 405 on the token path)."""
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        """Dispatch PATCH (only to answer 404, or 405 on the token path)."""
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        """Dispatch OPTIONS (only to answer 404, or 405 on the token path)."""
        self._dispatch("OPTIONS")

    def do_HEAD(self) -> None:
        """Dispatch HEAD (headers only: 404, or 405 on the token path)."""
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        path = urlsplit(self.path).path
        sb = self.sandbox
        if path.startswith("/__control"):
            resp = sb.control.handle(method, self.path, body)
            if not sb.options.faults_exempt_control:
                fault = sb.api._pick_fault("/__control")
                if fault in ("500", "503"):
                    err = ApiError(int(fault), "server_error", "Server Error", "injected fault")
                    resp = Response(err.status, json.dumps(err.body()).encode())
                elif fault == "502_html":
                    resp = Response(502, HTML_502, "text/html")
                else:
                    resp.fault = fault
        else:
            try:
                resp = sb.api.handle(method, self.path, self.headers, body)
            except _RateLimitedError as err:  # pragma: no cover - handled inside
                resp = Response(429, json.dumps(err.body()).encode(), headers=err.headers)
            opts = sb.options
            delay = opts.latency_ms + (
                random.random() * opts.latency_jitter_ms if opts.latency_jitter_ms else 0
            )
            if delay > 0:
                time.sleep(delay / 1000.0)
        self._write(resp)

    def _write(self, resp: Response) -> None:
        body = resp.body
        if resp.fault == "truncated" and resp.status == 200:
            body = body[: max(1, len(body) // 2)]
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if resp.fault == "reset":
            # Headers and half the body, then the connection is closed: the client
            # sees an incomplete read (fewer bytes than Content-Length). A graceful
            # close is used rather than an RST so the client always receives the
            # headers first, which keeps the fault deterministic.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.connection.close()
            return
        if self.command != "HEAD":  # a HEAD answer has the headers only
            self.wfile.write(body)

    def finish(self) -> None:
        """Tolerate sockets we closed on purpose."""
        with contextlib.suppress(OSError, ValueError):
            super().finish()


class SandboxServer(ThreadingHTTPServer):
    """Threaded server whose handler threads die with the process."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # concurrent taps must not see refused connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection resets are expected (faults, impatient clients)."""


def make_server(sandbox: Sandbox, host: str, port: int) -> SandboxServer:
    """Bind a server for ``sandbox`` on host:port (0 = free port)."""
    handler = type("BoundHandler", (Handler,), {"sandbox": sandbox})
    return SandboxServer((host, port), handler)


__all__ = ["Api", "ApiError", "Response", "Stats", "fmt_ms", "make_server"]
