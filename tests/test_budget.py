"""The request budget, with an injected clock: no real waiting."""

from __future__ import annotations

import email.utils
import time

import pytest

from tap_kustomer.budget import WINDOW_SECONDS, RateBudget, RequestBudget

EPOCH = 1_750_000_000.0


class FakeClock:
    """Monotonic and wall time that only move when the budget sleeps (or we say so)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def budget(
    clock: FakeClock,
    *,
    limit: int = 100,
    share: float = 0.8,
    max_per_minute: int | None = None,
    name: str = "org",
) -> RateBudget:
    return RateBudget(
        name,
        default_limit=limit,
        share=share,
        max_per_minute=max_per_minute,
        clock=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.sleep,
    )


def headers(limit: int, remaining: int, reset: float | str) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset),
    }


# Allowance.


def test_allowance_is_the_share_of_the_limit_the_headers_report(clock):
    b = budget(clock, limit=300, share=0.8)
    assert b.allowance == 240
    b.observe(headers(1000, 1000, 60))
    assert b.limit == 1000
    assert b.allowance == 800
    assert b.reserve == 200


def test_allowance_is_capped_by_max_per_minute(clock):
    b = budget(clock, limit=300, share=0.8, max_per_minute=100)
    assert b.allowance == 100
    b.observe(headers(1000, 1000, 60))
    assert b.allowance == 100
    b.observe(headers(50, 50, 60))
    assert b.allowance == 40


def test_allowance_is_at_least_one(clock):
    assert budget(clock, limit=1, share=0.5).allowance == 1


# The tap's own requests.


def test_acquire_waits_when_its_own_requests_in_the_last_minute_reach_the_allowance(clock):
    b = budget(clock, limit=10, share=0.5)  # allowance 5
    for _ in range(5):
        b.acquire()
        clock.advance(1)
    assert clock.sleeps == []
    b.acquire()  # at t+5: the first request (t+0) leaves the window at t+60
    assert clock.sleeps == [pytest.approx(55)]
    assert b.stats.requests == 6
    assert b.stats.waited_seconds == pytest.approx(55)
    # The second one went out at t+1, so the next request waits one more second.
    b.acquire()
    assert clock.sleeps[1:] == [pytest.approx(1)]


def test_requests_older_than_a_minute_no_longer_count(clock):
    b = budget(clock, limit=10, share=0.5)
    for _ in range(5):
        b.acquire()
    clock.advance(WINDOW_SECONDS)
    for _ in range(5):
        b.acquire()
    assert clock.sleeps == []


# The server's count (other integrations share it).


@pytest.mark.parametrize("fmt", ["epoch", "delta"])
def test_server_remaining_at_the_reserve_pauses_until_the_reset(clock, fmt):
    b = budget(clock, limit=100, share=0.8)  # reserve 20
    reset = clock.wall() + 30 if fmt == "epoch" else 30
    b.observe(headers(100, 21, reset))
    b.acquire()  # 21 > 20: goes out, 20 left
    assert clock.sleeps == []
    b.acquire()  # 20 <= reserve: wait for the reset
    assert clock.sleeps == [pytest.approx(30)]


def test_a_server_count_above_the_reserve_does_not_pause(clock):
    b = budget(clock, limit=100, share=0.8)
    b.observe(headers(100, 60, 30))
    for _ in range(30):
        b.acquire()
    assert clock.sleeps == []


# The reset header.


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        (EPOCH + 1_000 + 42, 42),  # epoch seconds (clock.now is 1000)
        (42, 42),  # seconds until reset
        ("42.0", 42),
        (0, 0),
    ],
)
def test_reset_as_epoch_or_as_seconds_until(clock, reset, expected):
    b = budget(clock)
    b.observe(headers(100, 50, reset))
    assert b.reset_at == pytest.approx(clock.now + expected)


@pytest.mark.parametrize(
    "reset",
    [
        EPOCH + 1_000 + 86_400,  # a skewed clock, a day ahead
        (EPOCH + 1_000 + 30) * 1000,  # milliseconds, not seconds
        5_000,  # "seconds until" far beyond one window
    ],
)
def test_an_absurd_reset_falls_back_to_one_window(clock, reset):
    b = budget(clock)
    b.observe(headers(100, 0, reset))
    assert b.reset_at == pytest.approx(clock.now + WINDOW_SECONDS)
    b.acquire()
    assert clock.sleeps == [pytest.approx(WINDOW_SECONDS)]


def test_a_reset_in_the_past_does_not_pause(clock):
    b = budget(clock)
    b.observe(headers(100, 50, clock.wall() - 30))
    assert b.reset_at == pytest.approx(clock.now)
    b.acquire()
    assert clock.sleeps == []


def test_unreadable_headers_are_ignored(clock):
    b = budget(clock, limit=100)
    b.observe(
        {"x-ratelimit-limit": "many", "x-ratelimit-remaining": "", "x-ratelimit-reset": "soon"}
    )
    assert b.limit == 100
    assert b.remaining is None
    assert b.reset_at is None


# 429.


@pytest.mark.parametrize("fmt", ["epoch", "delta"])
def test_rate_limited_returns_the_wait_until_the_reset(clock, fmt):
    b = budget(clock)
    reset = clock.wall() + 17 if fmt == "epoch" else 17
    wait = b.rate_limited(headers(100, 0, reset))
    assert wait == pytest.approx(17, abs=0.1)
    assert wait >= 17
    assert b.stats.rate_limited == 1
    assert b.remaining == 0
    b.acquire()
    assert clock.sleeps == [pytest.approx(17)]


def test_rate_limited_without_a_usable_reset_waits_one_window(clock):
    b = budget(clock)
    wait = b.rate_limited({})
    assert wait == pytest.approx(WINDOW_SECONDS, abs=0.1)
    past = b.rate_limited(headers(100, 0, clock.wall() - 5))
    assert past == pytest.approx(WINDOW_SECONDS, abs=0.1)
    assert b.stats.rate_limited == 2


# A simulated server: in steady state the budget never runs into a 429.


class FixedWindowServer:
    """Kustomer's per-minute window, answering with the sandbox's headers."""

    def __init__(self, clock: FakeClock, limit: int, fmt: str) -> None:
        self.clock, self.limit, self.fmt = clock, limit, fmt
        self.start: float | None = None
        self.count = 0
        self.refused_at: list[float] = []
        self.accepted_at: list[float] = []

    def request(self) -> tuple[int, dict[str, str]]:
        now = self.clock.now
        if self.start is None or now >= self.start + WINDOW_SECONDS:
            self.start, self.count = now, 0
        status = 200
        if self.count >= self.limit:
            status = 429
            self.refused_at.append(now)
        else:
            self.count += 1
            self.accepted_at.append(now)
        until = self.start + WINDOW_SECONDS - now
        reset = until if self.fmt == "delta" else self.clock.wall() + until
        return status, headers(self.limit, self.limit - self.count, int(reset) + 1)


@pytest.mark.parametrize("fmt", ["epoch", "delta"])
def test_steady_state_has_no_429_with_either_reset_format(clock, fmt):
    server = FixedWindowServer(clock, limit=60, fmt=fmt)
    b = budget(clock, limit=300, share=0.8)  # starts from a default far above the truth
    first = clock.now
    for _ in range(200):
        while True:
            b.acquire()
            status, answer = server.request()
            clock.advance(0.05)
            if status != 429:
                b.observe(answer)
                break
            clock.sleep(b.rate_limited(answer))
    assert all(at < first + WINDOW_SECONDS for at in server.refused_at), server.refused_at
    assert b.allowance == 48
    # Throughput: 200 requests at 48 a minute need a bit over four windows, not more.
    assert clock.now - first < 5 * WINDOW_SECONDS
    for at in server.accepted_at:
        in_minute = [x for x in server.accepted_at if at <= x < at + WINDOW_SECONDS]
        assert len(in_minute) <= 60


# The run's budget: org and search.


def request_budget(clock: FakeClock) -> RequestBudget:
    rb = RequestBudget(share=0.8, sleep=clock.sleep)
    rb.org = budget(clock, limit=300, share=0.8, name="org")
    rb.search = budget(clock, limit=100, share=0.8, name="search")
    return rb


def test_a_search_counts_against_both_budgets_other_requests_only_the_org(clock):
    rb = request_budget(clock)
    rb.acquire(is_search=True)
    assert (rb.org.stats.requests, rb.search.stats.requests) == (1, 1)
    rb.acquire(is_search=False)
    assert (rb.org.stats.requests, rb.search.stats.requests) == (2, 1)


def test_org_and_search_budgets_are_separate(clock):
    rb = request_budget(clock)
    rb.observe(headers(10, 10, 60), is_search=True)
    assert rb.search.limit == 10
    assert rb.org.limit == 300
    for _ in range(rb.search.allowance):
        rb.acquire(is_search=True)
    # Searches are exhausted; other requests still go out at once.
    for _ in range(50):
        rb.acquire(is_search=False)
    assert clock.sleeps == []
    rb.acquire(is_search=True)
    assert clock.sleeps == [pytest.approx(WINDOW_SECONDS)]
    rb.rate_limited(headers(10, 0, 20), is_search=True)
    assert rb.search.stats.rate_limited == 1
    assert rb.org.stats.rate_limited == 0


def test_constructor_limits_and_caps():
    rb = RequestBudget(share=0.5, max_requests_per_minute=50, max_search_requests_per_minute=7)
    assert rb.org.allowance == 50  # 50% of the default 300 is 150, capped at 50
    assert rb.search.allowance == 7


def test_server_time_follows_the_date_header():
    rb = RequestBudget()
    assert rb.server_time() == pytest.approx(time.time(), abs=2)
    ahead = time.time() + 3_600
    rb.observe({"Date": email.utils.formatdate(ahead, usegmt=True)}, is_search=False)
    assert rb.server_time() == pytest.approx(ahead, abs=2)
    rb.observe({"date": email.utils.formatdate(time.time() - 600, usegmt=True)}, is_search=True)
    assert rb.server_time() == pytest.approx(time.time() - 600, abs=2)
    rb.observe({"Date": "not a date"}, is_search=False)
    assert rb.server_time() == pytest.approx(time.time() - 600, abs=2)


# Which budget a search response's headers describe (undocumented: both conventions).


def run_budget(clock: FakeClock, **kw: object) -> RequestBudget:
    return RequestBudget(
        share=0.8, clock=clock.monotonic, wall_clock=clock.wall, wait=clock.sleep, **kw
    )  # type: ignore[arg-type]


def test_a_search_reporting_the_limit_of_other_requests_feeds_the_org_budget(clock):
    rb = run_budget(clock)
    rb.observe(headers(1000, 990, 30), is_search=False)
    rb.observe(headers(1000, 989, 30), is_search=True)
    assert (rb.org.limit, rb.org.remaining) == (1000, 989)
    assert rb.search.limit == 100  # still the documented default
    rb.observe(headers(10, 9, 30), is_search=True)  # another limit: the search budget's
    assert (rb.search.limit, rb.org.limit) == (10, 1000)


def test_org_headers_never_raise_a_search_limit_learned_from_a_429(clock):
    rb = run_budget(clock)
    rb.observe(headers(1000, 999, 30), is_search=True)  # nothing known yet: search
    assert rb.search.limit == 1000
    rb.observe(headers(10, 0, 30), is_search=True)  # the 429, as the client sees it first
    wait = rb.rate_limited(headers(10, 0, 30), is_search=True)
    assert wait == pytest.approx(30, abs=0.1)
    assert (rb.search.limit, rb.search.refused_limit, rb.search.allowance) == (10, 10, 8)
    clock.advance(31)
    rb.observe(headers(1000, 998, 59), is_search=True)
    assert (rb.search.limit, rb.org.limit, rb.org.remaining) == (10, 1000, 998)
    rb.observe(headers(6, 5, 59), is_search=True)  # a lower search limit still counts
    assert rb.search.limit == 6


def test_a_429_without_a_limit_learns_it_from_the_searches_sent_in_its_window(clock):
    rb = run_budget(clock)
    rb.observe(headers(1000, 999, 40), is_search=True)
    rb.acquire(is_search=True)
    for _ in range(6):
        rb.acquire(is_search=True)
        clock.advance(1)
    refused = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "33"}
    rb.acquire(is_search=True)
    rb.observe(refused, is_search=True)
    wait = rb.rate_limited(refused, is_search=True)
    assert wait == pytest.approx(33, abs=0.1)
    assert (rb.search.limit, rb.search.refused_limit) == (7, 7)
    assert rb.search.stats.rate_limited == 1
    assert rb.org.stats.rate_limited == 0


def test_a_second_429_in_the_window_refines_a_counted_limit_downwards(clock):
    rb = run_budget(clock)
    for _ in range(12):  # 10 accepted, then two in flight both refused
        rb.acquire(is_search=True)
    refused = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "50"}
    rb.rate_limited(refused, is_search=True)
    assert rb.search.limit == 11
    rb.rate_limited(refused, is_search=True)
    assert rb.search.limit == 10


def test_a_search_refused_by_the_org_budget_is_charged_to_the_org(clock):
    rb = run_budget(clock)
    rb.observe(headers(300, 1, 20), is_search=False)
    rb.observe(headers(300, 0, 20), is_search=True)
    rb.rate_limited(headers(300, 0, 20), is_search=True)
    assert (rb.org.stats.rate_limited, rb.search.stats.rate_limited) == (1, 0)
    assert rb.search.limit == 100
    assert rb.search.refused_limit is None


def test_wait_does_the_pauses_and_can_abandon_an_acquire(clock):
    class StoppedError(Exception):
        pass

    def stop(seconds: float) -> None:
        raise StoppedError(seconds)

    rb = RequestBudget(
        search_default_limit=1,
        clock=clock.monotonic,
        wall_clock=clock.wall,
        sleep=stop,
        wait=clock.sleep,
    )  # wait wins over the older sleep
    rb.acquire(is_search=True)
    clock.advance(10)
    rb.acquire(is_search=True)
    assert clock.sleeps == [pytest.approx(50)]
    rb = RequestBudget(
        search_default_limit=1, clock=clock.monotonic, wall_clock=clock.wall, wait=stop
    )
    rb.acquire(is_search=True)
    with pytest.raises(StoppedError):
        rb.acquire(is_search=True)
    assert rb.search.stats.requests == 1
    assert rb.org.stats.requests == 1


def test_server_time_uses_the_injected_wall_clock(clock):
    rb = run_budget(clock)
    assert rb.server_time() == clock.wall()
    rb.observe({"Date": email.utils.formatdate(clock.wall() + 120, usegmt=True)}, is_search=False)
    assert rb.server_time() == pytest.approx(clock.wall() + 120, abs=1)


# Ten simulated minutes of searching against both conventions (benchmarks/rate_model.py).


@pytest.mark.parametrize("search_limit", [10, 100])
@pytest.mark.parametrize("windows", ["minute", "first-request"])
@pytest.mark.parametrize("limit_on_429", [True, False], ids=["429-limit", "429-no-limit"])
@pytest.mark.parametrize("convention", ["search", "org"])
def test_searching_costs_at_most_one_burst_of_429s_under_either_convention(
    clock, convention, limit_on_429, windows, search_limit
):
    from benchmarks.rate_model import SimulatedKustomer, run_searches

    server = SimulatedKustomer(
        clock,
        org_limit=1000,
        search_limit=search_limit,
        convention=convention,
        limit_on_429=limit_on_429,
        windows=windows,
    )
    rb = run_budget(clock)
    # Fast answers from a window opened mid-second: the whole first burst fits in the
    # second before the one the (rounded-up) reset header implies as the window start.
    clock.advance(0.3)
    run_searches(rb, server, clock, minutes=10.5, latency=0.005)
    per_window = server.per_window(10)
    searches = [s for s, _ in per_window]
    refused = [r for _, r in per_window]
    assert refused[0] <= 1, per_window  # one request was refused, then the limit known
    assert refused[1:] == [0] * 9, per_window
    assert searches[1:] == [int(search_limit * 0.8)] * 9, per_window
    assert rb.search.limit == search_limit
    assert rb.search.stats.rate_limited == sum(refused)
