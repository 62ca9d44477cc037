"""One request budget for the whole run, fed by Kustomer's rate-limit headers.

Kustomer limits requests per organisation per minute, shared by every integration the
customer runs, and limits searches made with an API key separately (about 100 a
minute). The tap keeps to a share of each so other tools keep room, learns the real
limits from ``x-ratelimit-*`` headers, and on a 429 waits for the window to reset
instead of backing off blindly (Kustomer sends no ``Retry-After``).
"""

from __future__ import annotations

import collections
import email.utils
import threading
import time
import typing as t
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
# A reset header above this is an absolute epoch time; below it, seconds from now.
_EPOCH_THRESHOLD = 1_000_000_000
_MAX_RESET_WAIT = 2 * WINDOW_SECONDS
# Reset times this close together name the same window (headers have 1 s resolution).
_SAME_WINDOW_SECONDS = 2.0


def _header_number(headers: t.Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(str(raw).strip())
    except ValueError:
        return None


@dataclass
class BudgetStats:
    """What a budget saw, for logs and benchmarks."""

    requests: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0


class RateBudget:
    """A client-side view of one server-side per-minute window.

    It admits a request only while (a) the tap's own requests in the last minute stay
    under its share and (b) the server's remaining count stays above the part of the
    limit reserved for others.
    """

    def __init__(
        self,
        name: str,
        *,
        default_limit: int,
        share: float = 1.0,
        max_per_minute: int | None = None,
        clock: t.Callable[[], float] = time.monotonic,
        wall_clock: t.Callable[[], float] = time.time,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        """Start from documented defaults until headers tell the real limit."""
        self.name = name
        self.share = min(max(share, 0.01), 1.0)
        self.max_per_minute = max_per_minute
        self.limit = default_limit
        self.remaining: float | None = None
        self.reset_at: float | None = None
        self.stats = BudgetStats()
        self._sent: collections.deque[float] = collections.deque()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._lock = threading.Lock()

    @property
    def allowance(self) -> int:
        """Requests per minute this tap allows itself."""
        allowed = max(1, int(self.limit * self.share))
        if self.max_per_minute:
            allowed = min(allowed, self.max_per_minute)
        return allowed

    @property
    def reserve(self) -> int:
        """Server-side remaining count the tap leaves untouched for other integrations."""
        return max(0, self.limit - int(self.limit * self.share))

    def _delay(self, now: float) -> float:
        """Seconds to wait before the next request may go out (0 = now)."""
        while self._sent and now - self._sent[0] >= WINDOW_SECONDS:
            self._sent.popleft()
        delays = [0.0]
        if len(self._sent) >= self.allowance:
            delays.append(self._sent[0] + WINDOW_SECONDS - now)
        if (
            self.remaining is not None
            and self.remaining <= self.reserve
            and self.reset_at is not None
            and self.reset_at > now
        ):
            delays.append(self.reset_at - now)
        return max(delays)

    def acquire(self) -> None:
        """Block until one more request fits the budget, then count it."""
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    self._sent.append(now)
                    if self.remaining is not None:
                        self.remaining -= 1
                    self.stats.requests += 1
                    return
            self.stats.waited_seconds += delay
            self._sleep(min(delay, WINDOW_SECONDS))

    def observe(self, headers: t.Mapping[str, str]) -> None:
        """Learn the server's limit, remaining count and reset time from a response."""
        limit = _header_number(headers, "x-ratelimit-limit")
        remaining = _header_number(headers, "x-ratelimit-remaining")
        reset = _header_number(headers, "x-ratelimit-reset")
        with self._lock:
            if limit is not None and limit > 0:
                self.limit = int(limit)
            new_reset = None if reset is None else self._clock() + self._seconds_until(reset)
            same_window = (
                new_reset is not None
                and self.reset_at is not None
                and abs(new_reset - self.reset_at) < _SAME_WINDOW_SECONDS
            )
            if remaining is not None:
                # Within one window, requests sent after this response's were already
                # counted down locally: the lower figure is the true one.
                if same_window and self.remaining is not None:
                    self.remaining = min(self.remaining, remaining)
                else:
                    self.remaining = remaining
            if new_reset is not None:
                self.reset_at = new_reset

    def _seconds_until(self, reset: float) -> float:
        seconds = reset - self._wall_clock() if reset > _EPOCH_THRESHOLD else reset
        if seconds < 0 or seconds > _MAX_RESET_WAIT:
            # A skewed clock or an odd header: assume the documented one-minute window.
            return WINDOW_SECONDS if seconds > _MAX_RESET_WAIT else 0.0
        return seconds

    def rate_limited(self, headers: t.Mapping[str, str]) -> float:
        """Record a 429 and return how long to wait for the window to reset."""
        self.observe(headers)
        with self._lock:
            self.stats.rate_limited += 1
            self.remaining = 0
            now = self._clock()
            if self.reset_at is None or self.reset_at <= now:
                self.reset_at = now + WINDOW_SECONDS
            return self.reset_at - now + 0.05


class RequestBudget:
    """The org budget, the search budget, and the server's clock, for one run."""

    def __init__(
        self,
        *,
        share: float = 1.0,
        max_requests_per_minute: int | None = None,
        max_search_requests_per_minute: int | None = None,
        org_default_limit: int = 300,
        search_default_limit: int = 100,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        """Assume the smallest documented plan until headers say otherwise."""
        self.org = RateBudget(
            "org",
            default_limit=org_default_limit,
            share=share,
            max_per_minute=max_requests_per_minute,
            sleep=sleep,
        )
        self.search = RateBudget(
            "search",
            default_limit=search_default_limit,
            share=share,
            max_per_minute=max_search_requests_per_minute,
            sleep=sleep,
        )
        self._server_offset: float | None = None

    def acquire(self, *, is_search: bool) -> None:
        """Wait for room in every budget the request counts against."""
        if is_search:
            self.search.acquire()
        self.org.acquire()

    def observe(self, headers: t.Mapping[str, str], *, is_search: bool) -> None:
        """Feed a response's headers to the budget they describe."""
        (self.search if is_search else self.org).observe(headers)
        date = headers.get("Date") or headers.get("date")
        if date:
            try:
                server_time = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                return
            self._server_offset = server_time - time.time()

    def rate_limited(self, headers: t.Mapping[str, str], *, is_search: bool) -> float:
        """Record a 429 against the budget it came from; return the wait in seconds."""
        return (self.search if is_search else self.org).rate_limited(headers)

    def server_time(self) -> float:
        """Epoch seconds on the server's clock (the local clock until a response came)."""
        return time.time() + (self._server_offset or 0.0)
