"""A simulated Kustomer rate limiter on a fake clock, to run the request budget in minutes.

Used by ``benchmarks/rate_conventions.py`` and ``tests/test_budget.py``: both need the
same model of the server, so the figures the benchmark prints are the ones the tests
check. Nothing here sleeps: the budget waits through :meth:`SimClock.sleep`.

The server keeps fixed 60 s windows, one for the org and one for searches (a search
needs room in both and consumes one unit of each; a 429 consumes nothing). They are
aligned on wall-clock minutes (``windows="minute"``) or, like the sandbox's, open at the
first request after the previous one expired (``"first-request"``). Which budget a
successful search's headers describe is the undocumented part, so it is a switch:
``convention="search"`` (the search window's) or ``"org"`` (the org window's; only a
search 429 shows the search window).
"""

from __future__ import annotations

import math
import typing as t
from collections import Counter
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0
EPOCH = 1_750_000_000.0
CONVENTIONS = ("search", "org")
WINDOW_MODES = ("minute", "first-request")


class Clock(t.Protocol):
    """What the model needs of a fake clock (the tests' FakeClock has it too)."""

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""

    def wall(self) -> float:
        """Epoch seconds."""

    def sleep(self, seconds: float) -> None:
        """Let time pass while the caller waits."""

    def advance(self, seconds: float) -> None:
        """Let time pass while a request is on the wire."""


class SimClock:
    """Monotonic and wall time that move only when someone sleeps or advances them.

    It starts 20.3 s into a wall-clock minute, so a minute-aligned first window is a
    partial one and a window opened by the first request starts mid-second (the reset
    header then rounds up).
    """

    def __init__(self) -> None:
        """Start at an arbitrary monotonic time."""
        self.now = 1_000.3

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return self.now

    def wall(self) -> float:
        """Epoch seconds."""
        return EPOCH + self.now

    def sleep(self, seconds: float) -> None:
        """Let time pass while the caller waits."""
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Let time pass while a request is on the wire."""
        self.now += seconds


@dataclass
class _Window:
    limit: int
    start: float | None = None
    count: int = 0
    #: how many times the window opened, minus one (-1: never)
    number: int = -1


@dataclass
class SimulatedKustomer:
    """The org and search windows, answering like Kustomer under one header convention."""

    clock: Clock
    org_limit: int = 1000
    search_limit: int = 10
    convention: str = "search"
    #: False: a 429 carries no ``x-ratelimit-limit`` (only remaining and reset)
    limit_on_429: bool = True
    #: "epoch" or "delta", as Kustomer's ``x-ratelimit-reset`` may be either
    reset_format: str = "epoch"
    #: "minute" (aligned on wall-clock minutes) or "first-request" (as the sandbox)
    windows: str = "minute"
    #: searches accepted and refused, by search window (0 = the first one)
    accepted: Counter[int] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        """Set up both windows and check the switches are ones the model knows."""
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}")
        if self.windows not in WINDOW_MODES:
            raise ValueError(f"windows must be one of {WINDOW_MODES}")
        self._org = _Window(self.org_limit)
        self._search = _Window(self.search_limit)
        self._first_minute = self._minute_start()

    def _minute_start(self) -> float:
        return math.floor(self.clock.wall() / WINDOW_SECONDS) * WINDOW_SECONDS

    def _roll(self, window: _Window) -> _Window:
        now = self.clock.wall()
        if window.start is not None and now < window.start + WINDOW_SECONDS:
            return window
        if self.windows == "minute":
            window.start = self._minute_start()
            window.number = round((window.start - self._first_minute) / WINDOW_SECONDS)
        else:
            window.start = now
            window.number += 1
        window.count = 0
        return window

    def _headers(self, window: _Window, *, refused: bool) -> dict[str, str]:
        assert window.start is not None  # rolled before any answer
        until = window.start + WINDOW_SECONDS - self.clock.wall()
        if self.reset_format == "delta":
            reset = math.ceil(until)
        else:
            reset = math.ceil(self.clock.wall() + until)
        headers = {
            "x-ratelimit-limit": str(window.limit),
            "x-ratelimit-remaining": str(max(0, window.limit - window.count)),
            "x-ratelimit-reset": str(reset),
        }
        if refused and not self.limit_on_429:
            del headers["x-ratelimit-limit"]
        return headers

    def request(self, *, is_search: bool) -> tuple[int, dict[str, str]]:
        """Answer one request now: (status, rate-limit headers)."""
        org = self._roll(self._org)
        if not is_search:
            if org.count >= org.limit:
                return 429, self._headers(org, refused=True)
            org.count += 1
            return 200, self._headers(org, refused=False)
        search = self._roll(self._search)
        if org.count >= org.limit or search.count >= search.limit:
            self.refused[search.number] += 1
            exhausted = org if org.count >= org.limit else search
            return 429, self._headers(exhausted, refused=True)
        org.count += 1
        search.count += 1
        self.accepted[search.number] += 1
        shown = org if self.convention == "org" else search
        return 200, self._headers(shown, refused=False)

    def per_window(self, windows: int) -> list[tuple[int, int]]:
        """(searches accepted, 429s) in each of the first ``windows`` search windows."""
        return [(self.accepted[n], self.refused[n]) for n in range(windows)]


class Budget(t.Protocol):
    """The part of ``tap_kustomer.budget.RequestBudget`` the driver calls."""

    def acquire(self, *, is_search: bool) -> None:
        """Wait for room."""

    def observe(self, headers: t.Mapping[str, str], *, is_search: bool) -> None:
        """Learn from a response."""

    def rate_limited(self, headers: t.Mapping[str, str], *, is_search: bool) -> float:
        """Learn from a 429; return the wait."""


def run_searches(
    budget: Budget,
    server: SimulatedKustomer,
    clock: Clock,
    *,
    minutes: float,
    latency: float = 0.05,
) -> None:
    """Search without pause for ``minutes``, as the tap's client does it.

    Like ``BudgetedSession``: acquire, send, observe every response; on a 429 also
    ``rate_limited`` and wait the seconds it returns.
    """
    end = clock.monotonic() + minutes * WINDOW_SECONDS
    while clock.monotonic() < end:
        budget.acquire(is_search=True)
        status, headers = server.request(is_search=True)
        clock.advance(latency)
        budget.observe(headers, is_search=True)
        if status == 429:
            clock.sleep(budget.rate_limited(headers, is_search=True))
