"""``--check``: what the API key can read, from the settings alone, without reading data.

``GET /v1/auth/tokens/current`` answers for any valid key with the key's roles; they
are compared with the read roles each stream needs. Three layers: :func:`compute_report`
(pure), :func:`render_report` (pure) and :func:`check_connection` (the request).

Only ever GET that path: ``DELETE /v1/auth/tokens/current`` deletes the key.
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass
from urllib.parse import urlparse

import requests
from typing_extensions import override

from tap_kustomer.client import API_PREFIX, KustomerStream
from tap_kustomer.errors import (
    LEGACY_ROLE_BY_RESOURCE,
    ROLE_BY_RESOURCE,
    ApiUnavailableError,
    KustomerTapError,
    NotFoundError,
    SecretRedactor,
    UnexpectedResponseError,
)
from tap_kustomer.tap import check_config

if t.TYPE_CHECKING:
    from singer_sdk import Tap

TOKEN_PATH = f"{API_PREFIX}/auth/tokens/current"
RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
# A reset header above this is an epoch time; below it, seconds from now.
_EPOCH_THRESHOLD = 1_000_000_000
# Kustomer shows a few last characters of a key; never print more than this many.
_MAX_KEY_TAIL = 6


class MissingRolesError(KustomerTapError):
    """The key is valid but cannot read every selected stream."""

    def __init__(self, message: str, roles: t.Sequence[str]) -> None:
        """Keep the roles to add."""
        super().__init__(message)
        self.roles = tuple(roles)


@dataclass(frozen=True)
class KeyInfo:
    """What ``/v1/auth/tokens/current`` says about the key (never the key itself)."""

    name: str | None
    last_chars: str | None
    org_id: str | None
    roles: tuple[str, ...]


@dataclass(frozen=True)
class StreamNeeds:
    """One stream of the tap: the resources it reads and whether this run reads it."""

    name: str
    resources: tuple[str, ...]
    selected: bool
    #: Selected child streams this stream is read for although it is not selected.
    read_for: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamCheck:
    """One row of the report."""

    name: str
    needed: tuple[str, ...]
    missing: tuple[str, ...]
    #: Broad grants (``org.permission.<obj>``) taken to cover a needed read role.
    assumed: tuple[tuple[str, str], ...]
    selected: bool
    read_for: tuple[str, ...]

    @property
    def read(self) -> bool:
        """Whether a run with this selection reads the stream."""
        return self.selected or bool(self.read_for)


def role_for(resource: str) -> str:
    """The permission-set role that reads ``resource``."""
    return ROLE_BY_RESOURCE.get(resource, f"org.permission.{resource}.read")


def broad_grant(role: str) -> str | None:
    """``org.permission.tag`` for ``org.permission.tag.read``; None for other families."""
    head, _, _ = role.rpartition(".")
    return head if head.startswith("org.permission.") else None


def grant(resource: str, roles: t.Collection[str]) -> tuple[bool, str | None]:
    """Whether ``roles`` read ``resource``, and the broad grant that is assumed to, if any.

    Either family's name grants the read for sure; a broad ``org.permission.<obj>`` is
    taken to cover it, which Kustomer's docs leave uncertain.
    """
    role = role_for(resource)
    if {role, LEGACY_ROLE_BY_RESOURCE.get(resource, role)} & set(roles):
        return True, None
    broad = broad_grant(role)
    if broad is not None and broad in roles:
        return True, broad
    return False, None


def compute_report(roles: t.Iterable[str], streams: t.Iterable[StreamNeeds]) -> list[StreamCheck]:
    """Each stream's needed roles, which are missing, and which a broad grant covers."""
    held = frozenset(roles)
    rows = []
    for stream in streams:
        missing, assumed = [], []
        for resource in stream.resources:
            granted, broad = grant(resource, held)
            if not granted:
                missing.append(role_for(resource))
            elif broad is not None:
                assumed.append((broad, role_for(resource)))
        rows.append(
            StreamCheck(
                name=stream.name,
                needed=tuple(role_for(resource) for resource in stream.resources),
                missing=tuple(missing),
                assumed=tuple(assumed),
                selected=stream.selected,
                read_for=() if stream.selected else stream.read_for,
            )
        )
    return rows


def missing_roles(rows: t.Iterable[StreamCheck]) -> dict[str, list[str]]:
    """Role to add -> the streams read in this run that need it, in report order."""
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.read:
            for role in row.missing:
                found.setdefault(role, []).append(row.name)
    return found


def describe_rate_limits(headers: t.Mapping[str, str], now: float) -> str:
    """The org's request limit as the ``x-ratelimit-*`` headers report it."""
    limit, remaining, reset = (headers.get(name) for name in RATE_LIMIT_HEADERS)
    if limit is None and remaining is None and reset is None:
        return "not reported (no x-ratelimit-* headers)"
    parts = [
        f"{limit} requests a minute" if limit is not None else "limit not reported",
        f"{remaining} remaining" if remaining is not None else "remaining not reported",
    ]
    if reset is not None:
        try:
            value = float(reset)
        except ValueError:
            parts.append(f"resets at {reset}")
        else:
            seconds = value - now if value > _EPOCH_THRESHOLD else value
            parts.append(f"window resets in {max(0, round(seconds))} s")
    return ", ".join(parts)


def _table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]


def _selected_cell(row: StreamCheck) -> str:
    if row.selected:
        return "yes"
    if row.read_for:
        return f"no (read for {', '.join(row.read_for)})"
    return "no"


def _status_cell(row: StreamCheck) -> str:
    if row.missing:
        return "MISSING " + ", ".join(row.missing)
    if row.assumed:
        return "present (assumed: " + ", ".join(broad for broad, _ in row.assumed) + ")"
    return "present" if row.needed else "present (no role listed)"


def render_report(
    key: KeyInfo, host: str, rate_limits: str, rows: t.Sequence[StreamCheck]
) -> list[str]:
    """The report, line by line: key and org, rate limits, the stream table, notes."""
    tail = (key.last_chars or "")[-_MAX_KEY_TAIL:]
    lines = [
        "Kustomer connection check",
        f"  host:        {host}",
        f"  org:         {key.org_id or 'not reported'}",
        f"  API key:     {key.name or '(unnamed)'}, "
        + (f"ending in ...{tail}" if tail else "last characters not reported"),
        f"  roles:       {len(key.roles)} on the key",
        f"  rate limit:  {rate_limits}",
        "",
        *_table(
            ("stream", "needed roles", "roles", "selected"),
            [
                (row.name, ", ".join(row.needed) or "-", _status_cell(row), _selected_cell(row))
                for row in rows
            ],
        ),
    ]
    notes = []
    for broad, role in dict.fromkeys(pair for row in rows for pair in row.assumed):
        notes.append(
            f"Note: {broad} is a broad grant; it is assumed to cover {role} "
            "(UNCERTAIN in Kustomer's docs). If reads fail, add that role."
        )
    if not grant("search", key.roles)[0]:
        notes.append(
            f"Note: search ({role_for('search')}) is absent. Messages and notes can also be "
            "read in bulk through search, which makes backfills much cheaper; add it."
        )
    if notes:
        lines += ["", *notes]
    return lines


def missing_roles_message(found: t.Mapping[str, t.Sequence[str]], *, skipping: bool) -> str:
    """One line: the roles to add, the streams they are for, and the alternative."""
    needs = "; ".join(f"{role} (for {', '.join(streams)})" for role, streams in found.items())
    what = "this role" if len(found) == 1 else "these roles"
    alternative = (
        "skip_unauthorized_streams is on, so a run skips those streams instead"
        if skipping
        else "or set skip_unauthorized_streams: true to skip those streams instead"
    )
    return (
        f"the API key cannot read every selected stream; add {what} to the key in Kustomer "
        f"(Settings > Security > API Keys): {needs}; {alternative}"
    )


class KeyCheckStream(KustomerStream):
    """The tap's request machinery (budget, retries, one-line errors) for the key check."""

    name = "connection_check"
    path = TOKEN_PATH

    def __init__(self, tap: Tap) -> None:
        """No records: only the key's description and the answer's rate-limit headers."""
        super().__init__(tap=tap, schema={"type": "object", "properties": {}})
        self.rate_limit_headers: dict[str, str] = {}

    @override
    def validate_response(self, response: requests.Response) -> None:
        """Keep the answer's rate-limit headers for the report, then validate as usual."""
        self.rate_limit_headers = {
            name: response.headers[name] for name in RATE_LIMIT_HEADERS if name in response.headers
        }
        super().validate_response(response)

    @override
    def _key_state(self) -> str:
        """A refusal of this very endpoint (which needs no role) means the key is bad.

        Asking the endpoint again, as other requests do, would repeat this request.
        """
        return "invalid"

    def read_key(self) -> KeyInfo:
        """GET the key's own description; 429 and 5xx are retried, refusals thrice at most."""
        try:
            # GET only: DELETE on this path deletes the key.
            body = self.request_json("GET", TOKEN_PATH, connection_tries=3)
        except NotFoundError as exc:
            msg = (
                f"{self.api_host} answered HTTP 404 on {TOKEN_PATH}, so it is not Kustomer's "
                "API; check region, org_name or api_url"
            )
            raise UnexpectedResponseError(msg) from exc
        except ApiUnavailableError as exc:
            # The run's wording speaks of resuming from a state; a check has none.
            cause = exc.__cause__
            if isinstance(cause, requests.RequestException):
                msg = (
                    f"Cannot reach Kustomer at {self.api_host} ({type(cause).__name__}); "
                    "check region, org_name or api_url and your network"
                )
            else:
                msg = (
                    f"Kustomer at {self.api_host} kept failing after "
                    f"{self.backoff_max_tries()} attempts ({cause}); run the check again later"
                )
            raise ApiUnavailableError(msg) from exc
        return parse_key(body)

    @property
    def api_host(self) -> str:
        """Scheme, host and port of the API, never any credentials in the URL."""
        parsed = urlparse(self.url_base)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.hostname}{port}"


def parse_key(body: t.Mapping[str, t.Any]) -> KeyInfo:
    """The parts of the answer the report shows; an answer without roles is an error."""
    data = _object(body.get("data"))
    attributes = _object(data.get("attributes"))
    roles = attributes.get("roles")
    if not isinstance(roles, list):
        msg = f"Kustomer's answer on {TOKEN_PATH} lists no roles; cannot check the key"
        raise UnexpectedResponseError(msg)
    org = _object(_object(_object(data.get("relationships")).get("org")).get("data"))
    return KeyInfo(
        name=_text(attributes.get("name")),
        last_chars=_text(attributes.get("lastTokenChars")),
        org_id=_text(org.get("id")),
        roles=tuple(str(role) for role in roles),
    )


def _object(value: object) -> dict[str, t.Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def stream_needs(tap: Tap) -> list[StreamNeeds]:
    """Every stream of the tap, its resources and its selection (catalog or default)."""
    needs = []
    for stream in tap.streams.values():
        read_for = tuple(child.name for child in stream.descendent_streams if child.selected)
        needs.append(
            StreamNeeds(
                name=stream.name,
                resources=tuple(getattr(stream, "resources", ())),
                selected=stream.selected,
                read_for=read_for,
            )
        )
    return needs


def check_connection(tap: Tap, write: t.Callable[[str], object]) -> None:
    """Check the settings, read the key, write the report; raise if a read stream can't be read.

    The settings are checked before any request. The streams are listed only after the
    key was read, so a bad key or host fails with one line and nothing else.
    """
    check_config(tap.config)
    probe = KeyCheckStream(tap)
    key = probe.read_key()
    rows = compute_report(key.roles, stream_needs(tap))
    rate_limits = describe_rate_limits(probe.rate_limit_headers, time.time())
    lines = render_report(key, probe.api_host, rate_limits, rows)
    if tap.config.get("emit_deletes", True) and not grant("audit_logs", key.roles)[0]:
        lines += [
            f"Note: deletes are read from the audit log ({role_for('audit_logs')}), which "
            "the key lacks: runs will warn and write no tombstones for deleted "
            "conversations, customers, companies and kobjects. Add the role, or set "
            "emit_deletes: false.",
        ]
    found = missing_roles(rows)
    if not found:
        lines += ["", "OK: the API key can read every selected stream."]
    redactor = SecretRedactor([str(tap.config.get("api_key") or "")])
    write(redactor.redact("\n".join(lines)) + "\n")
    if found:
        skipping = bool(tap.config.get("skip_unauthorized_streams"))
        raise MissingRolesError(missing_roles_message(found, skipping=skipping), list(found))
