"""Progress lines: their content and arithmetic, and the thread that logs them."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import pytest
from typing_extensions import override

from tap_kustomer.progress import Progress, format_count, format_duration, format_rate
from tests.tap_harness import run_cli
from tests.truth import config_for, started

STREAM = "conversations"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Collector(logging.Handler):
    """Keeps formatted messages and lets a test wait, bounded, for the n-th one."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []
        self.changed = threading.Condition()

    @override
    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.messages.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.messages) >= n, timeout)


@pytest.fixture
def collected(request: pytest.FixtureRequest):
    logger = logging.getLogger(f"tests.progress.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Collector()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def progress_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("progress-")]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (44, "44s"),
        (44.4, "44s"),
        (59.6, "1m00s"),
        (125, "2m05s"),
        (3600, "1h00m00s"),
        (3725, "1h02m05s"),
        (90061, "25h01m01s"),
        (-3, "0s"),
        (math.inf, "?"),
        (math.nan, "?"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0"), (999, "999"), (12345, "12,345"), (1234567, "1,234,567")],
)
def test_format_count(count: int, expected: str) -> None:
    assert format_count(count) == expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(41.16, "41.2/s"), (2500, "2,500.0/s"), (0.5, "30.0/min"), (0, "0/s")],
)
def test_format_rate_switches_to_per_minute_when_slow(rate: float, expected: str) -> None:
    assert format_rate(rate) == expected


def test_line_with_known_total(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    waited = [500.0]
    progress = Progress(STREAM, logger, clock=clock, waited=lambda: waited[0])
    progress.set_total(78_000)
    progress.add(12_000)
    clock.advance(300)
    waited[0] += 75
    assert progress.line() == (
        "conversations: 12,000 of ~78,000 records (15.4%) in 5m00s, 40.0/s,"
        " ETA 27m30s, waited on the rate budget 1m15s (25%)"
    )


def test_line_with_unknown_total_omits_percent_and_eta(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    progress = Progress("tags", logger, clock=clock)
    progress.add(1_200)
    clock.advance(300)
    line = progress.line()
    assert line == "tags: 1,200 records in 5m00s, 4.0/s, waited on the rate budget 0s (0%)"
    assert line.count("%") == 1  # only the waited share carries a percentage
    assert "ETA" not in line
    assert " of ~" not in line


def test_eta_follows_the_average_rate(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    progress = Progress(STREAM, logger, clock=clock)
    progress.set_total(1_000)
    progress.add(250)
    clock.advance(50)  # 5/s, 750 left -> 150 s
    assert "(25.0%)" in progress.line()
    assert "5.0/s, ETA 2m30s," in progress.line()
    clock.advance(50)  # no new records: 2.5/s, 750 left -> 300 s
    assert "2.5/s, ETA 5m00s," in progress.line()


def test_raising_the_total_later_changes_percent_and_eta(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    progress = Progress(STREAM, logger, clock=clock)
    progress.set_total(1_000)
    progress.add(500)
    clock.advance(100)
    assert "500 of ~1,000 records (50.0%)" in progress.line()
    assert "ETA 1m40s" in progress.line()
    progress.set_total(2_000)
    assert "500 of ~2,000 records (25.0%)" in progress.line()
    assert "ETA 5m00s" in progress.line()
    progress.set_total(None)
    assert "of ~" not in progress.line()
    assert "ETA" not in progress.line()


def test_no_eta_before_first_record_or_after_the_estimate_is_reached(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    progress = Progress(STREAM, logger, clock=clock)
    progress.set_total(100)
    clock.advance(10)
    assert progress.line().startswith("conversations: 0 of ~100 records (0.0%) in 10s, 0/s,")
    assert "ETA" not in progress.line()
    progress.add(120)  # the estimate was low
    line = progress.line()
    assert "120 of ~100 records (100.0%)" in line
    assert "ETA" not in line


def test_zero_elapsed_time_does_not_divide_by_zero(collected) -> None:
    logger, _ = collected
    progress = Progress(STREAM, logger, clock=FakeClock(), waited=lambda: 0.0)
    progress.set_total(0)
    progress.add(5)
    assert progress.line() == (
        "conversations: 5 of ~0 records (100.0%) in 0s, 0/s, waited on the rate budget 0s (0%)"
    )


def test_waited_counts_only_this_lifetime(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    waited = [3600.0]  # an earlier stream already waited an hour
    progress = Progress(STREAM, logger, clock=clock, waited=lambda: waited[0])
    clock.advance(40)
    waited[0] += 10
    assert progress.line().endswith("waited on the rate budget 10s (25%)")


def test_waited_share_is_capped_when_parallel_waits_overlap(collected) -> None:
    logger, _ = collected
    clock = FakeClock()
    waited = [0.0]
    progress = Progress(STREAM, logger, clock=clock, waited=lambda: waited[0])
    clock.advance(60)
    waited[0] = 150  # three workers waited 50 s each at the same time
    assert progress.line().endswith("waited on the rate budget 2m30s (100%)")


def test_failing_waited_callable_leaves_the_waiting_out(collected) -> None:
    logger, _ = collected
    clock = FakeClock()

    def broken() -> float:
        raise AttributeError("no budget yet")

    progress = Progress(STREAM, logger, clock=clock, waited=broken)
    progress.add(10)
    clock.advance(5)
    assert progress.line() == "conversations: 10 records in 5s, 2.0/s"


def test_negative_total_means_unknown(collected) -> None:
    logger, _ = collected
    progress = Progress(STREAM, logger, clock=FakeClock())
    progress.set_total(-1)
    assert "of ~" not in progress.line()


@pytest.mark.parametrize("interval", [0, -1, math.nan])
def test_interval_must_be_positive(collected, interval: float) -> None:
    logger, _ = collected
    with pytest.raises(ValueError, match="interval"):
        Progress(STREAM, logger, interval=interval)


def test_add_is_thread_safe(collected) -> None:
    logger, _ = collected
    progress = Progress(STREAM, logger, clock=FakeClock())
    workers, per_worker = 8, 20_000
    start = threading.Barrier(workers)

    def work() -> None:
        start.wait()
        for _ in range(per_worker // 2):
            progress.add()
            progress.add(1)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert progress.count == workers * per_worker
    assert progress.line().startswith(f"conversations: {workers * per_worker:,} records")


def test_thread_logs_every_interval_while_no_records_arrive(collected) -> None:
    logger, handler = collected
    with Progress(STREAM, logger, interval=0.05) as progress:
        # No add(): the stream is, say, waiting on the budget. Lines must still come.
        assert handler.wait_for(3, timeout=5.0), handler.messages
        assert progress.count == 0
    periodic = handler.messages[:3]
    assert all(m.startswith("conversations: 0 records in ") for m in periodic)
    assert handler.messages[-1].startswith("conversations: done, 0 records in ")


def test_thread_reports_records_added_meanwhile(collected) -> None:
    logger, handler = collected
    with Progress(STREAM, logger, interval=0.05) as progress:
        progress.set_total(10)
        progress.add(4)
        seen = len(handler.messages)
        assert handler.wait_for(seen + 1, timeout=5.0)
    assert "4 of ~10 records (40.0%)" in handler.messages[seen]


def test_exit_stops_the_thread_promptly_and_logs_totals(collected) -> None:
    logger, handler = collected
    clock = FakeClock()
    waited = [0.0]
    progress = Progress(STREAM, logger, interval=60.0, clock=clock, waited=lambda: waited[0])
    with progress:
        (thread,) = progress_threads()
        assert thread.daemon
        progress.set_total(1_000)
        progress.add(900)
        clock.advance(90)
        waited[0] = 30
        began = time.monotonic()
    assert time.monotonic() - began < 1.0
    assert not thread.is_alive()
    assert progress_threads() == []
    # A 60 s interval never elapsed, so the final summary is the only line.
    assert handler.messages == [
        "conversations: done, 900 records in 1m30s, 10.0/s, waited on the rate budget 30s (33%)"
    ]


def test_exception_in_block_propagates_and_is_summarised(collected) -> None:
    logger, handler = collected
    with pytest.raises(RuntimeError, match="boom"), Progress(STREAM, logger, interval=60.0):
        raise RuntimeError("boom")
    assert progress_threads() == []
    assert handler.messages[-1].startswith("conversations: stopped, 0 records in ")


def test_failures_inside_the_thread_never_reach_the_caller(collected) -> None:
    logger, handler = collected
    calls = threading.Semaphore(0)
    state = {"broken": False}

    def clock() -> float:
        if state["broken"]:
            calls.release()
            raise OSError("clock gone")
        return 0.0

    progress = Progress(STREAM, logger, interval=0.05, clock=clock)
    state["broken"] = True
    with progress:
        # The thread tries (and fails) to render at least twice, so it survived a failure.
        assert calls.acquire(timeout=5.0)
        assert calls.acquire(timeout=5.0)
    assert progress_threads() == []
    assert any("Could not report progress of conversations" in m for m in handler.messages)
    assert not any(m.startswith("conversations: ") for m in handler.messages)


def test_a_sync_logs_progress_lines_for_its_streams(tmp_path: Path) -> None:
    sandbox = started(seed=4, customers=300, conversations=600, latency_ms=15)
    try:
        config = config_for(sandbox, progress_interval_seconds=0.2, thread_strategy="bulk")
        run = run_cli([], config=config, tmp_path=tmp_path)
    finally:
        sandbox.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "waited on the rate budget" in line]
    conversations = [line for line in lines if "conversations:" in line]
    assert any(" of ~" in line and "ETA" in line for line in conversations), lines
    assert any("conversations: done" in line for line in lines)
    assert any("customers: done" in line for line in lines)
    done = next(line for line in lines if "conversations: done" in line)
    assert f"{len(run.records('conversations')):,} records" in done
