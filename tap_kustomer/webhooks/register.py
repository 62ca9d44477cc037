"""Creating the outbound webhook through Kustomer's API, and keeping its token safe.

Kustomer answers the creation with the webhook's signing token. It goes to a file
only its owner can read (mode 0600, written beside and renamed, so no other mode
is ever visible); it is never printed. The request is sent once, without retries:
a retried creation could make a second webhook, and an org may have only five.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing as t
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

from tap_kustomer.client import API_PREFIX, error_title, resolve_api_url
from tap_kustomer.errors import (
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    UnexpectedResponseError,
)

WEBHOOK_EVENTS = (
    "kustomer.conversation.create",
    "kustomer.conversation.update",
    "kustomer.message.create",
    "kustomer.message.update",
)
WEBHOOKS_PATH = f"{API_PREFIX}/outbound-webhooks"
# Kustomer's limits on a webhook definition.
MAX_NAME_LENGTH = 255
MAX_EVENTS = 12
# Roles Kustomer's documents name for managing outbound webhooks (the exact one is unclear).
WEBHOOK_ROLES = "org.permission.outbound_webhook or org.outbound_webhooks"


@dataclass(frozen=True)
class Registration:
    """The created webhook: its id, and the token deliveries are signed with."""

    webhook_id: str
    token: str = field(repr=False)


def check_request(name: str, url: str, events: t.Sequence[str]) -> None:
    """Refuse, with one line, a definition Kustomer would refuse (or that would be unsafe)."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH:
        msg = f"the webhook name must be 1 to {MAX_NAME_LENGTH} characters"
        raise ConfigurationError(msg)
    parsed = urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname:
        msg = (
            f"the webhook URL {url!r} is not https://host/...; Kustomer delivers only over "
            "HTTPS (put the receiver behind a TLS reverse proxy)"
        )
        raise ConfigurationError(msg)
    if not events or len(events) > MAX_EVENTS:
        msg = f"a webhook needs 1 to {MAX_EVENTS} events, not {len(events)}"
        raise ConfigurationError(msg)


def register_webhook(
    *,
    api_url: str,
    api_key: str,
    name: str,
    url: str,
    events: t.Sequence[str] = WEBHOOK_EVENTS,
    timeout: float = 30.0,
    session: requests.Session | None = None,
) -> Registration:
    """``POST /v1/outbound-webhooks`` once; return the new webhook's id and token."""
    check_request(name, url, events)
    if not api_key.strip():
        msg = "no API key: set TAP_KUSTOMER_API_KEY"
        raise ConfigurationError(msg)
    host = resolve_api_url({"api_url": api_url})
    payload = {"name": name, "url": url, "events": list(events), "enabled": True}
    http = session or requests.Session()
    try:
        response = http.post(
            host + WEBHOOKS_PATH,
            json=payload,
            headers={"Authorization": f"Bearer {api_key.strip()}", "Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        msg = f"could not reach {host}: {type(exc).__name__}; check --api-url and the network"
        raise ApiUnavailableError(msg) from None
    finally:
        if session is None:
            http.close()
    _raise_for_status(response, host)
    return _registration(response)


def _raise_for_status(response: requests.Response, host: str) -> None:
    """One line per failure the user can act on; the key never appears in it."""
    status = response.status_code
    if status < 300:
        return
    title = error_title(response)
    detail = f": {title}" if title else ""
    if status == 401:
        msg = f"Kustomer rejected TAP_KUSTOMER_API_KEY (401{detail}); check the key and {host}"
        raise AuthenticationError(msg)
    if status == 403:
        msg = f"the API key may not create outbound webhooks (403{detail}); give it {WEBHOOK_ROLES}"
        raise PermissionDeniedError(msg, role=WEBHOOK_ROLES, resource="outbound_webhook")
    msg = f"Kustomer refused to create the webhook ({status}{detail})"
    raise UnexpectedResponseError(msg)


def _registration(response: requests.Response) -> Registration:
    """The id and token from ``{"data": {"id", "attributes": {"token"}}}`` or flatter shapes.

    Where the token sits is not documented precisely; ``data.attributes.token``,
    ``data.token`` and a top-level ``token`` are all read.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        msg = f"Kustomer answered the creation ({response.status_code}) with no JSON object"
        raise UnexpectedResponseError(msg)
    data = _object(body.get("data"))
    attributes = _object(data.get("attributes"))
    webhook_id = data.get("id") or body.get("id")
    token = attributes.get("token") or data.get("token") or body.get("token")
    if not isinstance(webhook_id, str) or not webhook_id:
        msg = "Kustomer created the webhook but its answer has no id; look it up in Settings"
        raise UnexpectedResponseError(msg)
    if not isinstance(token, str) or not token:
        msg = (
            f"Kustomer created webhook {webhook_id} but its answer has no token; read it with "
            f"GET {WEBHOOKS_PATH}/{webhook_id}"
        )
        raise UnexpectedResponseError(msg)
    return Registration(webhook_id, token)


def _object(value: object) -> dict[str, t.Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600, atomically (no other mode is ever seen).

    The file is made in the same directory and renamed over ``path``, so a reader
    sees the old file or the whole new one.
    """
    directory = path.parent if str(path.parent) else Path()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise
