"""Kustomer's delivery signature: lowercase hex HMAC-SHA256 of the raw body, keyed by the token.

There is no timestamp in what is signed, so a captured delivery can be replayed;
the queue's dedupe on the event id makes a replay of a queued event a no-op, and
at worst a replay makes a conversation be read once more.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Kustomer-Webhook-Signature"
EVENT_HEADER = "X-Kustomer-Webhook-Event"


def sign(token: str, body: bytes) -> str:
    """The signature Kustomer sends for ``body`` (tests and the benchmark sign with it too)."""
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(token: str, body: bytes, header: str | None) -> str | None:
    """Why ``header`` does not sign ``body`` ("missing", "wrong"), or None if it does.

    Compared in constant time, as bytes: a header may hold any Latin-1 text, and
    ``compare_digest`` refuses non-ASCII ``str``. The reason never contains the
    header's value, so it can be logged.
    """
    if header is None or not header.strip():
        return "signature missing"
    given = header.strip().lower().encode("latin-1", errors="replace")
    if not hmac.compare_digest(sign(token, body).encode("ascii"), given):
        return "signature wrong"
    return None
