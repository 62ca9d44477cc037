"""Sandbox clock and timestamp helpers.

Internally every timestamp is an ``int`` of epoch milliseconds: comparing and
sorting ints is fast and exact, and the API's ISO strings carry milliseconds
only, so nothing is lost.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_DT_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)


def fmt_ms(ms: int) -> str:
    """Render epoch ms the way Kustomer does: ``2025-03-01T12:00:00.123Z``."""
    secs, rem = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(secs))}.{rem:03d}Z"


def fmt_opt(ms: int | None) -> str | None:
    """Like fmt_ms but keeps ``None``; many optional attributes are null."""
    return None if ms is None else fmt_ms(ms)


def dt_to_ms(value: datetime) -> int:
    """Convert an aware (or naive = UTC) datetime to epoch ms."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_dt(ms: int) -> datetime:
    """Convert epoch ms to an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def parse_ts(value: object, tz_name: str | None = None) -> int:
    """Parse the date forms the search API accepts into epoch ms.

    Accepted: ``YYYY-MM-DD`` (midnight in ``tz_name``, default UTC), ISO with or
    without fraction (any number of digits, truncated to ms like Elasticsearch),
    ``Z`` or ``+HH:MM`` offsets, a space instead of ``T``, and integer epoch ms.
    Raises ValueError for anything else so the server can answer 400.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return dt_to_ms(value)
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    match = _DT_RE.match(value.strip())
    if not match:
        raise ValueError(f"unparseable date: {value!r}")
    year, month, day, hh, mi, ss, frac, off = match.groups()
    tzinfo: timezone | ZoneInfo = timezone.utc
    if off:
        if off in ("Z", "z"):
            tzinfo = timezone.utc
        else:
            sign = -1 if off[0] == "-" else 1
            digits = off[1:].replace(":", "")
            hours = int(digits[:2])
            minutes = int(digits[2:4]) if len(digits) > 2 else 0
            tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
    elif tz_name:
        try:
            tzinfo = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timeZone {tz_name!r}") from exc
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hh or 0),
            int(mi or 0),
            int(ss or 0),
            micro,
            tzinfo=tzinfo,
        )
    except ValueError as exc:
        raise ValueError(f"invalid date: {value!r}") from exc
    return dt_to_ms(parsed)


def default_anchor() -> str:
    """Real current UTC time floored to the minute, as ISO (the default ``now``)."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return fmt_ms(dt_to_ms(now))


class SandboxClock:
    """Sandbox time = anchor + real elapsed time + manual offset.

    Real time keeps flowing (so successive mutations get distinct stamps) while
    tests can jump ahead with ``advance`` to, e.g., let the search index catch up.
    """

    def __init__(self, anchor_ms: int) -> None:
        self.anchor_ms = anchor_ms
        self._start = time.monotonic()
        self._offset_ms = 0
        self._lock = threading.Lock()
        self._last = anchor_ms

    def now_ms(self) -> int:
        """Current sandbox time, never going backwards."""
        with self._lock:
            elapsed = int((time.monotonic() - self._start) * 1000)
            value = max(self.anchor_ms + elapsed + self._offset_ms, self._last)
            self._last = value
            return value

    def advance(self, seconds: float) -> int:
        """Move the clock forward; returns the new now (ms)."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset_ms += round(seconds * 1000)
        return self.now_ms()

    def advance_to(self, target_ms: int) -> int:
        """Jump forward to ``target_ms`` if it lies in the future."""
        now = self.now_ms()
        if target_ms > now:
            with self._lock:
                self._offset_ms += target_ms - now
        return self.now_ms()

    def http_date(self) -> str:
        """RFC 7231 ``Date`` header value for the sandbox now."""
        return formatdate(self.now_ms() / 1000.0, usegmt=True)
