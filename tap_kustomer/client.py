"""The base stream: where Kustomer lives, how to authenticate, how to survive it.

Every request of the run goes through one session that draws from the shared
:class:`~tap_kustomer.budget.RequestBudget`, is retried on 429, 5xx, dropped
connections and unreadable bodies, and fails with a one-line, secret-free message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import typing as t
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from urllib.parse import urlparse

import backoff
import requests
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.streams import RESTStream
from typing_extensions import override

from tap_kustomer.archive import ARCHIVE_SEARCH_PATH
from tap_kustomer.budget import RequestBudget
from tap_kustomer.conform import RecordConformer
from tap_kustomer.custom_attributes import custom_types_from_metadata
from tap_kustomer.errors import (
    ROLE_BY_RESOURCE,
    ApiUnavailableError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnexpectedResponseError,
)
from tap_kustomer.progress import DEFAULT_INTERVAL, Progress
from tap_kustomer.sdk_adapter import send, tap_of, write_tap_state

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

REGION_URLS: dict[str, str] = {
    "us": "https://api.kustomerapp.com",
    "eu": "https://api.prod2.kustomerapp.com",
    "in": "https://api.prod4.kustomerapp.com",
}
API_PREFIX = "/v1"
SEARCH_PATH = "/v1/customers/search"
_MAX_BACKOFF_SECONDS = 60.0
RETRIABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_JSON_CACHE_ATTR = "_kustomer_json"


def resolve_api_url(config: t.Mapping[str, t.Any]) -> str:
    """The API host for this config: ``api_url``, else ``org_name``, else ``region``."""
    if config.get("api_url"):
        url = str(config["api_url"]).strip().rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            msg = (
                f"api_url {url!r} is not a URL; set it to the scheme and host only, "
                "e.g. https://api.kustomerapp.com"
            )
            raise ConfigurationError(msg)
        if parsed.path.rstrip("/").endswith(API_PREFIX):
            url = url[: -len(API_PREFIX)]
        return url
    if config.get("org_name"):
        org = str(config["org_name"]).strip().lower()
        if not org.replace("-", "").isalnum():
            msg = (
                f"org_name {org!r} is not a Kustomer org name; use the part before "
                "'.kustomerapp.com' in your Kustomer address"
            )
            raise ConfigurationError(msg)
        return f"https://{org}.api.kustomerapp.com"
    region = str(config.get("region") or "us").strip().lower()
    if region not in REGION_URLS:
        msg = (
            f"region {region!r} is unknown; use one of {', '.join(REGION_URLS)} "
            "(or set org_name or api_url)"
        )
        raise ConfigurationError(msg)
    return REGION_URLS[region]


def is_search_path(path: str) -> bool:
    """Whether a path is standard or archive search (both spend the search budget).

    That the archive shares the search budget is assumed (UNCERTAIN upstream).
    """
    return path.endswith(("/customers/search", ARCHIVE_SEARCH_PATH))


def resource_touched_by(request: requests.PreparedRequest | None) -> str:
    """Which Kustomer resource (and so which role) a request touches."""
    if request is None or not request.url:
        return "conversation"
    path = urlparse(request.url).path
    if is_search_path(path):
        try:
            body = json.loads(request.body or b"{}")
        except (TypeError, ValueError):
            body = {}
        return "search:" + str(body.get("queryContext", "conversation"))
    parts = [p for p in path.split("/") if p]
    for name, resource in (
        ("audit-logs", "audit_logs"),
        ("attachments", "attachment"),
        ("events", "event"),
        ("messages", "message"),
        ("notes", "note"),
        ("tags", "tag"),
        ("metadata", "metadata"),
        ("conversations", "conversation"),
        ("customers", "customer"),
    ):
        if name in parts:
            return resource
    return "conversation"


@dataclass
class RunResources:
    """What the streams of one run share.

    One request budget (Kustomer's limits are per org, not per stream), one check of
    the key before the first request, and each custom-attribute definition read once.
    """

    budget: RequestBudget
    key_checked: bool = False
    custom_types: dict[str, dict[str, dict[str, t.Any]]] = field(default_factory=dict)
    #: Why archive search cannot be read with this key or org (None: not known to fail).
    archive_unavailable: str | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: What one stream learned that the others must not ask again (a missing role...).
    notes: dict[str, bool] = field(default_factory=dict)


class BudgetedSession(requests.Session):
    """A session that waits for the shared budget before each send."""

    def __init__(self, budget: RequestBudget) -> None:
        """Bind the run's budget."""
        super().__init__()
        self.budget = budget

    @override
    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:
        """Acquire budget, send, and feed the response headers back to the budget."""
        is_search = is_search_path(urlparse(request.url or "").path)
        self.budget.acquire(is_search=is_search)
        response = super().send(request, **kwargs)
        self.budget.observe(response.headers, is_search=is_search)
        return response


def error_title(response: requests.Response) -> str:
    """The API's own short explanation of an error, if its body has one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        parts = [str(first.get(k)) for k in ("title", "detail", "message") if first.get(k)]
        return ": ".join(dict.fromkeys(parts))[:300]
    return ""


class KustomerStream(RESTStream[t.Any]):
    """Base for every Kustomer stream: URL, auth, budget, retries, clear errors."""

    records_jsonpath = "$.data[*]"
    # RecordConformer already makes every nested value match its type (faster, and it
    # converts instead of dropping); the SDK only needs to look at the top level.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY
    #: ``GET /v1/metadata/{this}`` describes the stream's custom attributes.
    metadata_resource: str | None = None
    #: The resources (keys of ``errors.ROLE_BY_RESOURCE``) whose read role the stream needs.
    resources: t.ClassVar[tuple[str, ...]] = ()

    @cached_property
    @override
    def url_base(self) -> str:
        """Scheme and host only; paths carry ``/v1`` themselves, like the API's links."""
        return resolve_api_url(self.config)

    @cached_property
    @override
    def authenticator(self) -> BearerTokenAuthenticator:
        """Kustomer API keys are bearer tokens."""
        return BearerTokenAuthenticator(token=self.config["api_key"])

    @property
    @override
    def http_headers(self) -> dict[str, str]:
        """Ask for JSON explicitly; Kustomer's gateway answers HTML on some errors."""
        headers = {"Accept": "application/json"}
        if self.config.get("user_agent"):
            headers["User-Agent"] = str(self.config["user_agent"])
        return headers

    @property
    def run(self) -> RunResources:
        """What every stream of this run shares."""
        return t.cast("RunResources", tap_of(self).run)  # type: ignore[attr-defined]

    @property
    def budget(self) -> RequestBudget:
        """The request budget shared by every stream of this run."""
        return self.run.budget

    def check_key_once(self) -> None:
        """Fail fast on an unreachable host or a bad key, once per run.

        The answer also gives the server's clock, which bounds the search windows.
        """
        with self.run.lock:
            if not self.run.key_checked:
                self.request_json("GET", f"{API_PREFIX}/auth/tokens/current", connection_tries=3)
                self.run.key_checked = True

    @contextlib.contextmanager
    def state_written_on_failure(self) -> t.Iterator[None]:
        """Write the STATE when the stream fails, so the next run resumes from it.

        Every stream is sorted, so the state at any moment covers exactly what was
        written.
        """
        try:
            yield
        except Exception:
            write_tap_state(self)
            raise

    def progress(self) -> Progress:
        """A progress line for this stream's sync, every 30 s while it runs."""
        budget = self.budget
        return Progress(
            self.name,
            self.logger,
            interval=float(self.config.get("progress_interval_seconds") or DEFAULT_INTERVAL),
            waited=lambda: budget.org.stats.waited_seconds + budget.search.stats.waited_seconds,
        )

    def log_type_fixes(self) -> None:
        """Say which values were loaded as null because they did not fit their type."""
        if self.conformer.summary():
            self.logger.warning("Type fixes in %s: %s", self.name, self.conformer.summary())

    @cached_property
    @override
    def requests_session(self) -> requests.Session:
        """One budgeted session per stream; the budget itself is shared."""
        return BudgetedSession(self.budget)

    @property
    @override
    def timeout(self) -> int:
        """Seconds to wait for one response before retrying."""
        return int(self.config.get("request_timeout") or 60)

    # Retries.

    @override
    def backoff_max_tries(self) -> int:
        """Attempts per request before the run stops (with its state saved)."""
        return int(self.config.get("max_retries", 8)) + 1

    @override
    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        """Wait out a 429 until its window resets; back off exponentially otherwise."""

        def waits() -> t.Generator[float, t.Any, None]:
            failures = 0
            exception = yield 0.0
            while True:
                if isinstance(exception, RateLimitedError):
                    wait = exception.wait_seconds
                else:
                    wait = min(_MAX_BACKOFF_SECONDS, self._backoff_base * 2.0**failures)
                    failures += 1
                exception = yield wait

        return waits()

    @property
    def _backoff_base(self) -> float:
        return float(self.config.get("backoff_base_seconds", 1.0))

    @override
    def backoff_jitter(self, value: float) -> float:
        """Add up to 10% so parallel workers do not retry in lockstep."""
        import random

        return value * (1.0 + random.random() / 10.0)

    @override
    def backoff_handler(self, details: t.Any) -> None:
        """Log one redacted line per retry."""
        exc = details.get("exception")
        reason = type(exc).__name__
        if isinstance(exc, RetriableAPIError) and exc.response is not None:
            reason = f"HTTP {exc.response.status_code}"
        if isinstance(exc, MalformedResponseError):
            reason = "unreadable response body"
        self.logger.warning(
            "Retrying a request of stream '%s' in %.1f s after attempt %d failed (%s)",
            self.name,
            details.get("wait", 0.0),
            details.get("tries", 0),
            reason,
        )

    # Responses.

    @override
    def response_error_message(self, response: requests.Response) -> str:
        """A short message: status, path and the API's own title, never headers or URL."""
        path = urlparse(response.url).path
        title = error_title(response)
        message = f"HTTP {response.status_code} {response.reason or ''} on {path}".strip()
        return f"{message}: {title}" if title else message

    @override
    def validate_response(self, response: requests.Response) -> None:
        """Turn Kustomer's answers into retries or one-line, fixable errors."""
        status = response.status_code
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            is_search = is_search_path(urlparse(response.url).path)
            wait = self.budget.rate_limited(response.headers, is_search=is_search)
            raise RateLimitedError(self.response_error_message(response), response, wait)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(self.response_error_message(response), response)
        if status in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}:
            raise self._access_error(response)
        if status == HTTPStatus.NOT_FOUND:
            raise NotFoundError(self.response_error_message(response))
        if status >= HTTPStatus.BAD_REQUEST:
            msg = (
                f"Kustomer refused a request ({self.response_error_message(response)}); "
                "check start_date/end_date and the other settings"
            )
            raise BadRequestError(msg)
        body = self._decode(response)
        setattr(response, _JSON_CACHE_ATTR, body)

    def _decode(self, response: requests.Response) -> dict[str, t.Any]:
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "unknown content type")
            msg = (
                f"Kustomer answered {response.status_code} on {urlparse(response.url).path} "
                f"with a body that is not JSON ({kind}, {len(response.content)} bytes)"
            )
            raise MalformedResponseError(msg, response) from exc
        if not isinstance(body, dict):
            path = urlparse(response.url).path
            msg = f"Kustomer answered with JSON that is not an object on {path}"
            raise MalformedResponseError(msg, response)
        return body

    @override
    def parse_response(self, response: requests.Response) -> t.Iterable[dict[str, t.Any]]:
        """Records of a JSON:API list, from the body ``validate_response`` already read."""
        body = getattr(response, _JSON_CACHE_ATTR, None) or self._decode(response)
        data = body.get("data")
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            msg = f"Kustomer's answer on {urlparse(response.url).path} has no 'data' list"
            raise UnexpectedResponseError(msg)
        yield from (record for record in data if isinstance(record, dict))

    def _access_error(self, response: requests.Response) -> Exception:
        """Tell an invalid or expired key from a valid key that lacks a role."""
        resource = resource_touched_by(response.request)
        title = error_title(response)
        if "expired" in title.lower():
            return AuthenticationError(
                "Kustomer rejected the API key: it has expired. Create a new key in "
                "Kustomer (Settings > Security > API Keys) and set api_key"
            )
        key_state = self._key_state()
        if key_state == "invalid":
            host = urlparse(self.url_base).netloc
            return AuthenticationError(
                f"Kustomer ({host}) rejected the API key (HTTP {response.status_code}). "
                "Check api_key for typos or spaces, and that region/org_name/api_url "
                "point at your org's region"
            )
        if key_state == "expired":
            return AuthenticationError(
                "Kustomer rejected the API key: it has expired. Create a new key in "
                "Kustomer (Settings > Security > API Keys) and set api_key"
            )
        if resource.startswith("search:"):
            target = resource.split(":", 1)[1]
            roles = [ROLE_BY_RESOURCE["search"], ROLE_BY_RESOURCE.get(target, target)]
            resource = target
        else:
            roles = [ROLE_BY_RESOURCE.get(resource, resource)]
        return PermissionDeniedError(
            f"The API key lacks a role that stream '{self.name}' needs "
            f"(HTTP {response.status_code} on {urlparse(response.url).path}). "
            f"Give a key the role(s) {' and '.join(roles)}, or deselect stream "
            f"'{self.name}' (or set skip_unauthorized_streams: true)",
            role=roles[-1],
            resource=resource,
        )

    def _get_once(self, path: str, timeout: float) -> requests.Response:
        """One authenticated GET without retries, for checks that must not stall."""
        prepared = self.build_prepared_request(
            method="GET", url=f"{self.url_base}{path}", headers=self.http_headers
        )
        return self.requests_session.send(self.authenticator(prepared), timeout=timeout)

    def _key_state(self) -> str:
        """'valid', 'invalid' or 'expired', asked of the endpoint any valid key may call."""
        try:
            response = self._get_once(f"{API_PREFIX}/auth/tokens/current", self.timeout)
        except requests.RequestException:
            return "valid"
        if response.status_code in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}:
            return "expired" if "expired" in error_title(response).lower() else "invalid"
        return "valid"

    def custom_attribute_types(self) -> dict[str, dict[str, t.Any]]:
        """Typed schemas of the org's custom attributes, read once per run; {} if unreadable.

        Read when the schema is first needed (after the settings were checked), with
        one attempt and no retries: discovery must not stall on an unreachable host,
        and undescribed custom attributes still pass through untyped.
        """
        resource = self.metadata_resource
        if not resource:
            return {}
        with self.run.lock:
            if resource not in self.run.custom_types:
                self.run.custom_types[resource] = self._read_custom_types(resource)
            return self.run.custom_types[resource]

    def _read_custom_types(self, resource: str) -> dict[str, dict[str, t.Any]]:
        try:
            response = self._get_once(f"{API_PREFIX}/metadata/{resource}", min(self.timeout, 30))
            body = response.json() if response.ok else None
        except (requests.RequestException, ValueError) as exc:
            self.logger.warning(
                "Custom %s attributes stay untyped: their definitions could not be read (%s)",
                resource,
                type(exc).__name__,
            )
            return {}
        if not isinstance(body, dict):
            # A bad key is reported once, clearly, when the run starts; not here.
            level = logging.INFO if response.status_code in {401, 403} else logging.WARNING
            self.logger.log(
                level,
                "Custom %s attributes stay untyped: metadata answered HTTP %s",
                resource,
                response.status_code,
            )
            return {}
        return custom_types_from_metadata(body)

    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Stream-specific columns and fixes; the default changes nothing."""
        return row

    @override
    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the stream's columns, then make every value match the schema's type."""
        prepared = self.prepare_record(row, context)
        return None if prepared is None else self.conformer.conform(prepared)

    @cached_property
    def conformer(self) -> RecordConformer:
        """Type fixes for this stream's records."""
        return RecordConformer(
            self.name,
            self.schema,
            fail_on_mismatch=bool(self.config.get("fail_on_type_mismatch", False)),
            logger=self.logger,
        )

    def skip_if_allowed(self, error: PermissionDeniedError) -> bool:
        """With ``skip_unauthorized_streams``, log why this stream is skipped; else False."""
        if not self.config.get("skip_unauthorized_streams"):
            return False
        self.logger.warning(
            "Skipping stream '%s': the API key lacks %s (skip_unauthorized_streams is on)",
            self.name,
            error.role,
        )
        return True

    # Direct requests, for the search walk and the thread planner.

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, t.Any] | None = None,
        body: dict[str, t.Any] | None = None,
        context: Context | None = None,
        connection_tries: int | None = None,
    ) -> dict[str, t.Any]:
        """Send one request with the budget and retries; return its JSON object.

        ``connection_tries`` caps the attempts against a host that cannot be reached at
        all (refused, unknown), which the first request of a run uses to fail fast.
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.url_base}{path}"
        prepared = self.build_prepared_request(
            method=method,
            url=url,
            params=params or {},
            headers=self.http_headers,
            json=body,
        )
        refused = [0]

        def give_up(exc: Exception) -> bool:
            # A host that refuses or does not resolve rarely recovers within a run.
            if _is_refused(exc):
                refused[0] += 1
                return connection_tries is not None and refused[0] >= connection_tries
            return False

        with self._one_line_errors(refused):
            response = self.request_decorator(
                lambda request, ctx: send(self, request, ctx), giveup=give_up
            )(prepared, context)
        return getattr(response, _JSON_CACHE_ATTR, None) or self._decode(response)

    def search(self, body: dict[str, t.Any], page: int, page_size: int) -> dict[str, t.Any]:
        """One page of ``POST /v1/customers/search`` (page and size go in the query)."""
        return self.request_json(
            "POST", SEARCH_PATH, params={"page": page, "pageSize": page_size}, body=body
        )

    def archive_search(self, body: dict[str, t.Any], page: int, page_size: int) -> dict[str, t.Any]:
        """One page of ``POST /v1/customers/archive/search``, paged like search."""
        return self.request_json(
            "POST", ARCHIVE_SEARCH_PATH, params={"page": page, "pageSize": page_size}, body=body
        )

    @override
    def request_decorator(
        self,
        func: t.Callable[..., t.Any],
        *,
        giveup: t.Callable[[Exception], bool] | None = None,
    ) -> t.Callable[..., t.Any]:
        """The SDK's retry loop, without its logger (our handler logs, redacted)."""
        return backoff.on_exception(
            self.backoff_wait_generator,
            RETRIABLE_EXCEPTIONS,
            max_tries=self.backoff_max_tries,
            giveup=giveup or (lambda exc: False),
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )(func)

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """The SDK's paginated requests, with the same one-line errors as direct ones."""
        with self._one_line_errors():
            yield from super().request_records(context)

    @contextlib.contextmanager
    def _one_line_errors(self, refused: list[int] | None = None) -> t.Iterator[None]:
        """Turn an exhausted retry loop into one line saying what failed and what next."""
        tries = self.backoff_max_tries()
        try:
            yield
        except RetriableAPIError as exc:
            raise ApiUnavailableError(give_up_message(exc, tries)) from exc
        except requests.RequestException as exc:
            attempts = (refused[0] if refused else 0) or tries
            raise ApiUnavailableError(unreachable_message(self.url_base, exc, attempts)) from exc


def _is_refused(exc: Exception) -> bool:
    """A connection that never opened (refused, unknown host), not one that broke."""
    return (
        isinstance(exc, requests.exceptions.ConnectionError)
        and not isinstance(
            exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout)
        )
        and "Connection aborted" not in str(exc)
    )


def give_up_message(exc: RetriableAPIError, tries: int) -> str:
    """Why the run stopped after retrying, and that the next run resumes."""
    return (
        f"Kustomer kept failing after {tries} attempts ({exc}); the run stopped at its "
        "last saved state, run it again to resume"
    )


def unreachable_message(url_base: str, exc: Exception, tries: int) -> str:
    """Why Kustomer could not be reached, and what to check."""
    host = urlparse(url_base).netloc
    reason = type(exc).__name__
    return (
        f"Cannot reach Kustomer at {host} after {tries} attempts ({reason}); check "
        "region, org_name or api_url and your network, then run again to resume"
    )


logging.getLogger("urllib3").setLevel(logging.WARNING)
