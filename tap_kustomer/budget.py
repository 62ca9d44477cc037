"""One request budget for the whole run, fed by Kustomer's rate-limit headers.

Kustomer limits requests per organisation per minute, shared by every integration the
customer runs, and limits searches made with an API key separately (documented as about
100 a minute, sometimes far lower). The tap keeps to a share of each so other tools keep
room, learns the real limits from ``x-ratelimit-*`` headers, and on a 429 waits for the
window to reset instead of backing off blindly (Kustomer sends no ``Retry-After``).

Which budget a *successful* search's headers describe is undocumented: they may describe
the search budget, or the org budget (then only a search 429 tells the search limit). So
:class:`RequestBudget` attributes each search response's headers by their limit instead
of by the route; see :meth:`RequestBudget.describes_org`.
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

Wait = t.Callable[[float], None]


def _header_number(headers: t.Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(str(raw).strip())
    except ValueError:
        return None


def _header_limit(headers: t.Mapping[str, str]) -> int | None:
    """The ``x-ratelimit-limit`` a response reports, if it reports a usable one."""
    limit = _header_number(headers, "x-ratelimit-limit")
    if limit is None or limit < 1:
        return None
    return int(limit)


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
        sleep: Wait = time.sleep,
        wait: Wait | None = None,
    ) -> None:
        """Start from documented defaults until headers tell the real limit.

        ``wait`` (``sleep`` is its older name) does every pause of :meth:`acquire`, so a
        caller can make a stop interrupt it: a ``wait`` that raises abandons the acquire.
        """
        self.name = name
        self.share = min(max(share, 0.01), 1.0)
        self.max_per_minute = max_per_minute
        self.limit = default_limit
        self.remaining: float | None = None
        self.reset_at: float | None = None
        #: The limit the latest 429 reported, or implied by the requests it allowed.
        self.refused_limit: int | None = None
        self.stats = BudgetStats()
        self._sent: collections.deque[float] = collections.deque()
        self._refused: collections.deque[float] = collections.deque()
        self._counted_window: float | None = None
        self._clock = clock
        self._wall_clock = wall_clock
        self._wait = wait if wait is not None else sleep
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
            chunk = min(delay, WINDOW_SECONDS)
            self.stats.waited_seconds += chunk
            self._wait(chunk)

    def observe(self, headers: t.Mapping[str, str]) -> None:
        """Learn the server's limit, remaining count and reset time from a response."""
        limit = _header_limit(headers)
        remaining = _header_number(headers, "x-ratelimit-remaining")
        reset = _header_number(headers, "x-ratelimit-reset")
        with self._lock:
            if limit is not None:
                self.limit = limit
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
        """Record a 429, learn the limit it implies, and return the wait for the reset.

        A 429 without a limit header still tells the limit: the server accepted the
        requests this tap sent in the refused window before it, and no more.
        """
        limit = _header_limit(headers)
        self.observe(headers)
        with self._lock:
            self.stats.rate_limited += 1
            now = self._clock()
            window_known = self.reset_at is not None and self.reset_at > now
            if self.reset_at is None or self.reset_at <= now:
                self.reset_at = now + WINDOW_SECONDS
            self.remaining = 0
            self._refused.append(now)
            while self._refused and now - self._refused[0] >= WINDOW_SECONDS:
                self._refused.popleft()
            if limit is not None:
                self.refused_limit = limit
            else:
                # The reset header has whole seconds (and rounds up): the window may have
                # opened a little before the header says, so start counting a bit earlier.
                start = now - WINDOW_SECONDS
                if window_known:
                    start = self.reset_at - WINDOW_SECONDS - _SAME_WINDOW_SECONDS
                self._learn_from_count(min(max(start, now - WINDOW_SECONDS), now))
            return self.reset_at - now + 0.05

    def _learn_from_count(self, window_start: float) -> None:
        """Take the requests accepted in the refused window as the limit (lock held).

        Every 429 of one window refines the figure downwards: requests still in flight
        when the first arrived may have been refused too.
        """
        sent = sum(1 for at in self._sent if at >= window_start)
        refused = sum(1 for at in self._refused if at >= window_start)
        accepted = sent - refused
        if accepted < 1:
            return
        earlier = self.refused_limit
        if (
            earlier is not None
            and self._counted_window is not None
            and abs(window_start - self._counted_window) < _SAME_WINDOW_SECONDS
        ):
            accepted = min(accepted, earlier)
        self._counted_window = window_start
        self.refused_limit = self.limit = accepted


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
        sleep: Wait = time.sleep,
        wait: Wait | None = None,
        clock: t.Callable[[], float] = time.monotonic,
        wall_clock: t.Callable[[], float] = time.time,
    ) -> None:
        """Assume the smallest documented plan until headers say otherwise.

        ``wait`` (default: ``sleep``) does every pause; one that raises ends the
        acquire, which is how a stop signal interrupts a wait for the budget.
        """
        self.org = RateBudget(
            "org",
            default_limit=org_default_limit,
            share=share,
            max_per_minute=max_requests_per_minute,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
            wait=wait,
        )
        self.search = RateBudget(
            "search",
            default_limit=search_default_limit,
            share=share,
            max_per_minute=max_search_requests_per_minute,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
            wait=wait,
        )
        #: The limit the latest non-search response reported: the org's, for sure.
        self.org_limit_seen: int | None = None
        self._wall_clock = wall_clock
        self._server_offset: float | None = None
        self._lock = threading.Lock()

    def acquire(self, *, is_search: bool) -> None:
        """Wait for room in every budget the request counts against."""
        if is_search:
            self.search.acquire()
        self.org.acquire()

    def describes_org(self, headers: t.Mapping[str, str]) -> bool:
        """Whether a search response's headers describe the org budget, not the search's.

        Kustomer may answer a successful search with either budget's headers. A limit
        above the search limit a 429 revealed, or (before any 429) equal to the limit
        non-search responses report, is the org's. Anything else, a missing limit
        included, is taken as the search budget's: the cautious reading. ``observe`` and
        ``rate_limited`` share this rule, so a 429's headers, seen by both, land in one
        budget.
        """
        limit = _header_limit(headers)
        if limit is None:
            return False
        learned = self.search.refused_limit
        if learned is not None:
            return limit > learned
        return limit == self.org_limit_seen

    def observe(self, headers: t.Mapping[str, str], *, is_search: bool) -> None:
        """Feed a response's headers to the budget they describe."""
        with self._lock:
            if not is_search:
                self.org_limit_seen = _header_limit(headers) or self.org_limit_seen
                self.org.observe(headers)
            elif self.describes_org(headers):
                self.org.observe(headers)
            else:
                self.search.observe(headers)
        date = headers.get("Date") or headers.get("date")
        if date:
            try:
                server_time = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                return
            self._server_offset = server_time - self._wall_clock()

    def rate_limited(self, headers: t.Mapping[str, str], *, is_search: bool) -> float:
        """Record a 429 against the budget it came from; return the wait in seconds.

        A search can be refused by the org budget too; its headers then say so.
        """
        with self._lock:
            if is_search and not self.describes_org(headers):
                return self.search.rate_limited(headers)
            return self.org.rate_limited(headers)

    def server_time(self) -> float:
        """Epoch seconds on the server's clock (the local clock until a response came)."""
        return self._wall_clock() + (self._server_offset or 0.0)
