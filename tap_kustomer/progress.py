"""Periodic progress lines for one stream's sync.

A backfill held back by the request budget can run for many minutes with nothing in
the log but METRIC lines, so nobody can tell how far it has got or whether it is
stuck. ``Progress`` counts the records a stream has emitted and, from a daemon thread,
logs one line every ``interval`` seconds (also while the stream is only waiting on the
budget): records so far, the estimated total and percentage when the API reports one,
the average rate, an ETA, and how much of the time went into waiting on the budget.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

DEFAULT_INTERVAL = 30.0
# Upper bound on how long leaving the ``with`` block waits for the logging thread; it
# wakes at once when told to stop, so this only matters if a log handler hangs.
_JOIN_TIMEOUT = 2.0


def _no_waiting() -> float:
    """Stand-in for callers that have no request budget to report on."""
    return 0.0


def format_duration(seconds: float) -> str:
    """Render seconds compactly for a log line: ``1h02m05s``, ``3m10s`` or ``44s``.

    Rounds to whole seconds; negative values read ``0s`` and non-finite ones ``?`` so a
    bad estimate never breaks the line.
    """
    if not math.isfinite(seconds):
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_count(count: int) -> str:
    """Group thousands (``12,345``) so large counts are readable at a glance."""
    return f"{count:,}"


def format_rate(per_second: float) -> str:
    """Render a rate per second, or per minute below one a second.

    Slow streams (a record every few seconds) would otherwise read ``0.0/s``, which
    looks like a stall.
    """
    if not math.isfinite(per_second) or per_second <= 0:
        return "0/s"
    if per_second < 1:
        return f"{per_second * 60:.1f}/min"
    return f"{per_second:,.1f}/s"


class Progress:
    """Count one stream's records and log where the sync stands at a fixed interval.

    Use it as a context manager around the sync: entering starts a daemon thread that
    logs :meth:`line` every ``interval`` seconds, leaving it stops the thread and logs
    a final summary. Rate and ETA are averaged over the whole lifetime of the object,
    which suits a budget-bound run whose pace is steady.

    ``waited`` returns the cumulative seconds the run has spent waiting on the request
    budget; only the part added during this object's lifetime is reported. Its share of
    elapsed time is capped at 100% because waits of parallel workers overlap in time.
    """

    def __init__(
        self,
        stream: str,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        waited: Callable[[], float] = _no_waiting,
    ) -> None:
        """Start the clock and the waiting baseline now, so create it just before syncing."""
        if not interval > 0:
            msg = f"interval must be a positive number of seconds, not {interval!r}"
            raise ValueError(msg)
        self.stream = stream
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._waited = waited
        self._lock = threading.Lock()
        self._count = 0
        self._total: int | None = None
        self._started = clock()
        self._waited_at_start = self._read_waited()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        """Records counted so far."""
        with self._lock:
            return self._count

    def add(self, records: int = 1) -> None:
        """Count records; safe to call from several worker threads at once."""
        with self._lock:
            self._count += records

    def set_total(self, total: int | None) -> None:
        """Record the estimated total (e.g. search ``meta.total``); ``None`` means unknown.

        The latest value wins, so a caller that discovers more work can raise it.
        Negative values are treated as unknown.
        """
        with self._lock:
            self._total = total if total is not None and total >= 0 else None

    def line(self) -> str:
        """Return the current progress line; it has no side effects, so tests call it."""
        return self._render(final=None)

    def _read_waited(self) -> float | None:
        """Read the budget's waiting total, or ``None`` if the callable fails."""
        try:
            return float(self._waited())
        except Exception:
            return None

    def _render(self, *, final: str | None) -> str:
        """Build the periodic line, or the summary line labelled ``final``."""
        with self._lock:
            count, total = self._count, self._total
        elapsed = max(0.0, self._clock() - self._started)
        rate = count / elapsed if elapsed > 0 else 0.0

        if final is not None:
            head = f"{self.stream}: {final}, {format_count(count)} records"
        elif total is None:
            head = f"{self.stream}: {format_count(count)} records"
        else:
            percent = 100.0 if total == 0 else min(100.0, 100.0 * count / total)
            head = (
                f"{self.stream}: {format_count(count)} of ~{format_count(total)} records"
                f" ({percent:.1f}%)"
            )
        parts = [f"{head} in {format_duration(elapsed)}", format_rate(rate)]

        if final is None and total is not None and count < total and rate > 0:
            parts.append(f"ETA {format_duration((total - count) / rate)}")

        waited_now = self._read_waited()
        if waited_now is not None and self._waited_at_start is not None:
            waited = max(0.0, waited_now - self._waited_at_start)
            share = min(1.0, waited / elapsed) if elapsed > 0 else 0.0
            parts.append(f"waited on the rate budget {format_duration(waited)} ({share:.0%})")
        return ", ".join(parts)

    def _log(self, render: Callable[[], str]) -> None:
        """Log one line; a progress report must never break the sync it describes."""
        try:
            self._logger.info("%s", render())
        except Exception:
            with contextlib.suppress(Exception):
                self._logger.debug("Could not report progress of %s", self.stream, exc_info=True)

    def _run(self) -> None:
        """Log a line every interval until told to stop; Event.wait lets stop be prompt."""
        while not self._stop.wait(self._interval):
            self._log(self.line)

    def __enter__(self) -> Progress:
        """Start the logging thread (daemon, so it never delays process exit)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"progress-{self.stream}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the thread and log the totals; exceptions from the block pass through."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
            self._thread = None
        label = "done" if exc_type is None else "stopped"
        self._log(lambda: self._render(final=label))
