"""The HTTP app that receives Kustomer's outbound webhooks (Starlette, served by uvicorn).

A delivery is acknowledged (2xx) only once its event is committed to the queue,
so an answer Kustomer saw as success is never lost; anything else makes Kustomer
retry (for about an hour). The order of checks is the order of cost: the size
before reading, the signature before parsing, the parse before the write.

=========  ==============================================================
answer     meaning
=========  ==============================================================
202        queued, a duplicate of a queued event, or an event name that
           does not touch a conversation (ignored); Kustomer stops retrying
400        not JSON, or not a Kustomer event (no id, name or data)
401        signature missing or wrong
413        body over ``max_body_bytes``
503        the queue could not be written; Kustomer retries
=========  ==============================================================
"""

from __future__ import annotations

import contextlib
import logging
import typing as t
from dataclasses import asdict, dataclass, field

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tap_kustomer.errors import ConfigurationError
from tap_kustomer.webhooks.envelope import EnvelopeError, read_envelope
from tap_kustomer.webhooks.queue import EventQueue, QueuedEvent, utc_now
from tap_kustomer.webhooks.signature import SIGNATURE_HEADER, signature_problem

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import datetime

logger = logging.getLogger("tap_kustomer.webhooks")

DEFAULT_PATH = "/kustomer/webhook"
DEFAULT_MAX_BODY_BYTES = 1_048_576
HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class ReceiverSettings:
    """How the receiver checks deliveries.

    ``verify_signature=False`` accepts unsigned deliveries from anyone who can
    reach the port; it exists for trying the receiver out, and every start says so.
    """

    token: str | None = field(default=None, repr=False)
    verify_signature: bool = True
    path: str = DEFAULT_PATH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, with one line each."""
        if self.verify_signature and not (self.token and self.token.strip()):
            msg = (
                "no webhook token: set KUSTOMER_WEBHOOK_TOKEN or --token-file "
                "(the token `tap-kustomer-webhooks register` saved)"
            )
            raise ConfigurationError(msg)
        if not self.path.startswith("/") or self.path == HEALTH_PATH:
            msg = f"the webhook path {self.path!r} must start with / and not be {HEALTH_PATH}"
            raise ConfigurationError(msg)
        if self.max_body_bytes < 1:
            msg = f"max_body_bytes must be at least 1, not {self.max_body_bytes}"
            raise ConfigurationError(msg)


@dataclass
class Counters:
    """What happened to deliveries since the start (shown on ``GET /healthz``).

    Changed only on the event loop's thread, so plain integers are enough.
    """

    received: int = 0
    enqueued: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected_signature: int = 0
    rejected_body: int = 0
    too_large: int = 0
    queue_failures: int = 0


class _BodyTooLargeError(Exception):
    """The body is longer than allowed (declared or as read)."""


class _Receiver:
    """The endpoints, sharing one queue, settings and counters."""

    def __init__(
        self, queue: EventQueue, settings: ReceiverSettings, clock: Callable[[], datetime]
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.clock = clock
        self.counters = Counters()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Say at every start how deliveries are checked; close the queue at the end."""
        del app
        if not self.settings.verify_signature:
            logger.warning(
                "signature check is OFF (--insecure-no-signature): anyone who can reach this "
                "port can queue conversation ids; turn it on before exposing the receiver"
            )
        logger.info(
            "receiving Kustomer webhooks on POST %s (bodies up to %d bytes) into %s",
            self.settings.path,
            self.settings.max_body_bytes,
            self.queue.display_url,
        )
        try:
            yield
        finally:
            await run_in_threadpool(self.queue.close)

    async def receive(self, request: Request) -> JSONResponse:
        """Check, parse and queue one delivery; 2xx only after the queue committed it."""
        self.counters.received += 1
        client = request.client.host if request.client else "unknown"
        try:
            body = await self._read_body(request)
        except _BodyTooLargeError:
            self.counters.too_large += 1
            logger.warning(
                "rejected a delivery from %s: body over %d bytes",
                client,
                self.settings.max_body_bytes,
            )
            return JSONResponse({"error": "body too large"}, status_code=413)
        except (ValueError, ClientDisconnect) as exc:
            self.counters.rejected_body += 1
            reason = "bad Content-Length" if isinstance(exc, ValueError) else "body cut off"
            logger.warning("rejected a delivery from %s: %s", client, reason)
            return JSONResponse({"error": reason}, status_code=400)
        if self.settings.verify_signature:
            assert self.settings.token is not None  # checked by ReceiverSettings
            problem = signature_problem(
                self.settings.token, body, request.headers.get(SIGNATURE_HEADER)
            )
            if problem is not None:
                self.counters.rejected_signature += 1
                logger.warning("rejected a delivery from %s: %s", client, problem)
                return JSONResponse({"error": problem}, status_code=401)
        try:
            envelope = read_envelope(body)
        except EnvelopeError as exc:
            self.counters.rejected_body += 1
            logger.warning("rejected a delivery from %s: %s", client, exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        if envelope.conversation_id is None:
            self.counters.ignored += 1
            return JSONResponse({"ignored": True}, status_code=202)
        event = QueuedEvent(
            event_id=envelope.event_id,
            event_name=envelope.event_name,
            conversation_id=envelope.conversation_id,
            received_at=self.clock(),
        )
        try:
            inserted = await run_in_threadpool(self.queue.enqueue, [event])
        except Exception as exc:  # any failure to commit: Kustomer must retry
            self.counters.queue_failures += 1
            logger.error(
                "could not queue event %s (%s): %s: %s",
                event.event_id,
                event.event_name,
                type(exc).__name__,
                _first_line(exc),
            )
            return JSONResponse({"error": "queue unavailable"}, status_code=503)
        if inserted:
            self.counters.enqueued += 1
            return JSONResponse({"queued": True}, status_code=202)
        self.counters.duplicates += 1
        return JSONResponse({"queued": False, "duplicate": True}, status_code=202)

    async def _read_body(self, request: Request) -> bytes:
        """The raw body, refusing (without reading on) once it is over the limit."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > limit:
            raise _BodyTooLargeError
        body = bytearray()
        async with contextlib.aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise _BodyTooLargeError
        return bytes(body)

    async def health(self, request: Request) -> JSONResponse:
        """200 with the counters and the queue's largest seq; 503 if the queue cannot be read."""
        del request
        answer: dict[str, t.Any] = {
            "status": "ok",
            "signature_check": self.settings.verify_signature,
            "counters": asdict(self.counters),
        }
        try:
            answer["max_seq"] = await run_in_threadpool(self.queue.max_seq)
        except Exception as exc:  # the health check reports, it does not fail
            logger.error(
                "health check could not read the queue: %s: %s",
                type(exc).__name__,
                _first_line(exc),
            )
            answer["status"] = "queue unavailable"
            return JSONResponse(answer, status_code=503)
        return JSONResponse(answer)


def create_app(
    queue: EventQueue,
    settings: ReceiverSettings,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> Starlette:
    """The receiver app; it owns ``queue`` and closes it when the app shuts down.

    ``app.state.counters`` is the live :class:`Counters` instance.
    """
    receiver = _Receiver(queue, settings, clock)
    app = Starlette(
        routes=[
            Route(settings.path, receiver.receive, methods=["POST"]),
            Route(HEALTH_PATH, receiver.health, methods=["GET"]),
        ],
        lifespan=receiver.lifespan,
    )
    app.state.counters = receiver.counters
    return app


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only, so each failure stays one log line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
