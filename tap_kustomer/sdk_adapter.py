"""The one place that touches Singer SDK internals.

The SDK offers no public hook for a few things this tap must do; each use below says
why, and ``tests/test_sdk_adapter.py`` pins every name and signature used here, so an
SDK upgrade that renames one fails that test instead of a user's run.
"""

from __future__ import annotations

import contextlib
import typing as t
from types import FrameType

if t.TYPE_CHECKING:
    import requests
    from singer_sdk import RESTStream, Stream, Tap
    from singer_sdk.helpers.types import Context
    from singer_sdk.metrics import Counter

#: Every private SDK attribute this module uses, for the pinning test.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "singer_sdk.Stream": (
        "_tap",
        "_write_schema_message",
        "_write_record_message",
        "_write_state_message",
        "_increment_stream_state",
    ),
    "singer_sdk.Tap": ("_handle_termination",),
    "singer_sdk.RESTStream": ("_request",),
}


def tap_of(stream: Stream) -> Tap:
    """The tap that owns ``stream``.

    Streams share run-wide resources (the request budget, the stop signal) through
    their tap, and the SDK keeps it only as ``Stream._tap``.
    """
    return stream._tap


def send(
    stream: RESTStream[t.Any], request: requests.PreparedRequest, context: Context | None
) -> requests.Response:
    """Send one prepared request and validate its answer, without the SDK's retries.

    The tap's direct requests (search pages, thread lists) need the SDK's send, its
    metrics and ``validate_response``, wrapped in the tap's own retry loop.
    """
    return stream._request(request, context)


def write_schema(stream: Stream) -> None:
    """Write the SCHEMA message of a stream the SDK does not sync itself.

    Messages and notes are written by the conversations stream, one whole thread at a
    time; the private writer is the only one that applies the stream maps.
    """
    stream._write_schema_message()


def write_record(stream: Stream, record: dict[str, t.Any]) -> None:
    """Write one RECORD through the stream's maps (filters, aliases, flattening)."""
    stream._write_record_message(record)


def write_state(stream: Stream) -> None:
    """Write the tap's STATE now, if it changed since the last one written."""
    stream._write_state_message()


def advance_bookmark(
    stream: Stream, record: dict[str, t.Any], context: Context | None = None
) -> None:
    """Move a stream's bookmark past ``record`` although the stream is not selected.

    The SDK advances a bookmark only for a selected stream. When only messages or
    notes are selected, the conversations walk still decides what was read, so its
    bookmark must move the same way, or every run would read all history again.
    """
    stream._increment_stream_state(record, context=context)


class OpenCounter:
    """A record counter kept open across calls, for streams written batch by batch.

    The SDK opens and closes a counter around its own sync loop only; a thread
    stream is written from inside the conversations loop, so it opens its own.
    """

    def __init__(self, stream: Stream) -> None:
        """Open the stream's record counter (its METRIC lines start now)."""
        self._counter: Counter = stream.get_record_counter()
        self._counter.__enter__()

    def increment(self, count: int = 1) -> None:
        """Count records written."""
        self._counter.increment(count)

    def close(self) -> None:
        """Log the final count, as the SDK does at the end of a sync."""
        self._counter.__exit__(None, None, None)


def write_tap_state(stream: Stream) -> None:
    """Write the whole tap's STATE now, also when unchanged.

    Before a failure ends the run, or after a targeted run's chunk, so the next run
    resumes from it. ``Tap.state_writer`` is public; it is reached through the stream's
    tap, which only the private ``Stream._tap`` holds.
    """
    tap = tap_of(stream)
    tap.state_writer.write_state(tap.state)


@contextlib.contextmanager
def direct_writer(
    stream: Stream, context: Context | None
) -> t.Iterator[t.Callable[[dict[str, t.Any]], None]]:
    """A function that writes one raw row as a record of ``stream``, outside its sync loop.

    For rows outside the sorted walk (an archive part, a targeted run's queue order):
    the SDK would move the replication bookmark from them, or refuse them as unsorted.
    Rows are post-processed and counted as the SDK's own would be; nothing is written
    for an unselected stream.
    """
    counter = OpenCounter(stream) if stream.selected else None

    def write(row: dict[str, t.Any]) -> None:
        record = stream.post_process(row, context)
        if counter is not None and record is not None:
            write_record(stream, record)
            counter.increment()

    try:
        yield write
    finally:
        if counter is not None:
            counter.close()


class TerminationHook:
    """Route the SDK's SIGTERM/SIGINT handler to the tap's public ``on_stop_signal``.

    The SDK installs ``_handle_termination`` for both signals and exits 0 from it; an
    orchestrator would then count a stopped run as finished. The SDK has no public
    hook for this, so the override lives here.
    """

    def on_stop_signal(self, signum: int) -> None:
        """Handle a stop signal; the tap overrides this."""
        raise NotImplementedError

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        self.on_stop_signal(signum)
