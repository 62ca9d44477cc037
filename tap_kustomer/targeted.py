"""Targeted runs: read again only the conversations the webhook queue names.

The webhook receiver writes one queue row per Kustomer event; a targeted run reads
the queue after the seq its STATE saved, fetches those conversations by id
(``GET /v1/conversations/{id1},{id2},...``, a batch at a time) and hands them to the
conversations stream, which writes each with its whole thread. No search is made.

The queue seq is the run's only bookmark. It is saved after each chunk of
conversations has been written, and rows are deleted only at the start of a later
run, through the seq that run was given in its STATE: by then the target has
committed those records and the orchestrator has saved that state, so a crash at
any point re-reads a chunk at worst and never loses one.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from tap_kustomer.errors import BadRequestError, KustomerTapError, NotFoundError
from tap_kustomer.webhooks.queue import EventQueue, QueuedConversation, QueueError, open_queue

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from singer_sdk import Stream

#: The key of the stream state that holds the queue seq. Its own key, never
#: ``replication_key_value``: a search bookmark in the same state is left alone.
QUEUE_SEQ_KEY = "webhook_queue_seq"
#: Conversations per ``GET /v1/conversations/{ids}``. Kustomer does not document the
#: limit (UNCERTAIN); a 400 halves the batch for the rest of the run.
DEFAULT_BATCH_SIZE = 50
#: Queue entries read (and bookmarked) at a time; rounded up to whole batches.
QUEUE_CHUNK = 100
#: What a targeted run writes: the queued conversations and their threads.
QUEUED_STREAMS = frozenset(
    {"conversations", "messages", "notes", "attachments", "conversation_events"}
)

#: How late Kustomer may deliver an event: it retries a failed delivery for about an
#: hour (UNCERTAIN: its docs give 60 to 80 minutes). A resolution this long before the
#: first pending event of a conversation may still be what that event reports.
DELIVERY_WINDOW = timedelta(hours=2)

RequestJson = t.Callable[..., dict[str, t.Any]]
R = t.TypeVar("R")


@dataclass
class TargetedStats:
    """What a targeted run did, for its summary line and for tests."""

    queued: int = 0
    emitted: int = 0
    skipped_unresolved: int = 0
    skipped_unchanged: int = 0
    missing: int = 0
    fetch_requests: int = 0
    deleted_rows: int = 0
    start_seq: int = 0
    seq: int = 0


class ConversationFetcher:
    """Conversations by id, a batch per request, surviving a smaller limit and deletions.

    A 400 on a batch of several ids is taken as "too many ids": the batch is halved
    (down to one id) for the rest of the run, with one warning. A 404 means one of
    the ids no longer exists: the batch is split until the missing ids stand alone,
    and each is skipped with a warning.
    """

    def __init__(
        self,
        request_json: RequestJson,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        """Bind the request function (the stream's, with its budget and retries)."""
        self.request_json = request_json
        self.batch_size = max(1, int(batch_size))
        self.logger = logger or logging.getLogger(__name__)
        self.requests = 0
        self.missing: list[str] = []
        self._halved = False

    def fetch(self, ids: Sequence[str]) -> list[dict[str, t.Any]]:
        """The conversations of ``ids`` that exist, in the order of ``ids``."""
        found: dict[str, dict[str, t.Any]] = {}
        offset = 0
        while offset < len(ids):
            batch = list(ids[offset : offset + self.batch_size])
            try:
                for record in self._split_on_missing(batch):
                    found[str(record.get("id"))] = record
            except BadRequestError:
                if len(batch) == 1:
                    raise
                self._halve(len(batch))
                continue
            offset += len(batch)
        return [found[cid] for cid in ids if cid in found]

    def _halve(self, refused: int) -> None:
        """Use half the refused batch size from now on; say so once."""
        self.batch_size = max(1, refused // 2)
        if not self._halved:
            self._halved = True
            self.logger.warning(
                "Kustomer refused %d conversation ids in one request; fetching at most "
                "%d at a time, halving again if refused (a smaller webhook_batch_size "
                "skips this step)",
                refused,
                self.batch_size,
            )

    def _split_on_missing(self, batch: list[str]) -> list[dict[str, t.Any]]:
        """One batch; on a 404, its halves, until the deleted ids are found and skipped."""
        try:
            return self._get(batch)
        except NotFoundError:
            if len(batch) == 1:
                self.missing.append(batch[0])
                self.logger.warning(
                    "Conversation %s is queued but Kustomer no longer has it (HTTP 404); "
                    "skipping it",
                    batch[0],
                )
                return []
        middle = len(batch) // 2
        return self._split_on_missing(batch[:middle]) + self._split_on_missing(batch[middle:])

    def _get(self, batch: list[str]) -> list[dict[str, t.Any]]:
        """``GET /v1/conversations/{ids}``: a list for several ids, an object for one."""
        path = "/v1/conversations/" + ",".join(quote(cid, safe="") for cid in batch)
        self.requests += 1
        body = self.request_json("GET", path)
        data = body.get("data")
        items = data if isinstance(data, list) else [data]
        return [item for item in items if isinstance(item, dict)]


class QueueCursor:
    """The queue seen from a targeted run: from the saved seq, a chunk at a time.

    Opening it deletes the rows through ``saved_seq`` (the state that covers them was
    saved when this run was given it). Reading stops at the newest seq present when
    the run started, so a busy receiver cannot keep a run going forever; later events
    wait for the next run. Every queue failure is one :class:`QueueError` line naming
    the queue by its display URL, which never shows a password.
    """

    def __init__(self, queue: EventQueue, saved_seq: int, *, delete: bool = True) -> None:
        """Delete what the saved state covers and note where this run stops."""
        self.queue = queue
        self.display_url = queue.display_url
        self.saved_seq = saved_seq
        self.deleted = self._call(queue.delete_through, saved_seq) if delete and saved_seq else 0
        self.until = self._call(queue.max_seq)

    @classmethod
    def open(cls, url: str, saved_seq: int, *, delete: bool = True) -> QueueCursor:
        """Open the queue ``url`` names (a one-line error when it cannot be opened)."""
        queue = open_queue(url)
        try:
            return cls(queue, saved_seq, delete=delete)
        except BaseException:
            queue.close()
            raise

    def chunks(self, size: int) -> Iterator[list[QueuedConversation]]:
        """Coalesced queue entries after the saved seq, ``size`` at a time, oldest first.

        The caller saves the last entry's seq once a chunk is written; the next chunk
        starts after that seq.
        """
        seq = self.saved_seq
        while self.until is not None and seq < self.until:
            entries = self._call(self.queue.pending_after, seq, size)
            entries = [entry for entry in entries if entry.seq <= self.until]
            if not entries:
                return
            yield entries
            seq = entries[-1].seq

    def close(self) -> None:
        """Close the queue connection."""
        try:
            self.queue.close()
        except Exception:  # closing loses nothing: every chunk is already bookmarked
            logging.getLogger(__name__).debug("Closing the queue failed", exc_info=True)

    def _call(self, operation: Callable[..., R], *args: t.Any) -> R:
        try:
            return operation(*args)
        except KustomerTapError:
            raise
        except Exception as exc:
            msg = (
                f"the webhook queue {self.display_url} failed ({type(exc).__name__}); "
                "check that the database is reachable and the receiver's table exists"
            )
            raise QueueError(msg) from exc


def chunk_size(batch_size: int) -> int:
    """Queue entries per chunk: about :data:`QUEUE_CHUNK`, in whole fetch batches."""
    batch = max(1, batch_size)
    return max(1, -(-QUEUE_CHUNK // batch)) * batch


def is_resolved(conversation: dict[str, t.Any]) -> bool:
    """Whether Kustomer says the conversation is done."""
    return (conversation.get("attributes") or {}).get("status") == "done"


def resolved_since(conversation: dict[str, t.Any], first_received_at: datetime | None) -> bool:
    """Whether the conversation's last resolution may be what its queued events report.

    The search path without ``data_mutability`` emits a resolved conversation again
    only when its resolution time moved past the bookmark. Here the bookmark is the
    queue: a resolution is new when it happened at most :data:`DELIVERY_WINDOW` before
    the oldest pending event of the conversation arrived (an earlier resolution was
    reported by an earlier event, handled by an earlier run). Unknown times count as
    new: emitting again is an upsert, skipping wrongly would lose the resolution.
    """
    raw = ((conversation.get("attributes") or {}).get("lastDone") or {}).get("createdAt")
    if first_received_at is None or not isinstance(raw, str):
        return True
    try:
        resolved = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return True
    if resolved.tzinfo is None or first_received_at.tzinfo is None:
        return True
    return resolved >= first_received_at - DELIVERY_WINDOW


def saved_seq(value: t.Any) -> int:
    """The seq a state holds (0 when none, or when it is not a number)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def summary(stats: TargetedStats, thread_requests: int, display_url: str) -> str:
    """The run's one summary line."""
    return (
        f"Targeted run from {display_url}: {stats.queued} queued conversations read, "
        f"{stats.emitted} emitted, {stats.skipped_unresolved} skipped as not resolved, "
        f"{stats.skipped_unchanged} skipped as changed after their resolution "
        "(data_mutability off), "
        f"{stats.missing} deleted or missing; "
        f"{stats.fetch_requests + thread_requests} requests "
        f"({stats.fetch_requests} conversation fetches, {thread_requests} thread); "
        f"queue seq {stats.start_seq} -> {stats.seq}, {stats.deleted_rows} rows deleted"
    )


def leave_out_unqueued_streams(streams: Iterable[Stream], logger: logging.Logger) -> None:
    """Deselect every stream the queue is not about, with one info line.

    The queue names conversations only; customers, companies, kobjects and the
    reference lists keep to the scheduled search runs. A targeted extractor that
    inherits the default selection thus still runs cheaply, and writes no SCHEMA,
    record or state for those streams.
    """
    skipped = []
    for stream in streams:
        if stream.name not in QUEUED_STREAMS and stream.selected:
            stream.selected = False
            skipped.append(stream.name)
    if skipped:
        logger.info(
            "Targeted run (webhook_queue is set): only conversations and their threads "
            "are read; skipping %s",
            ", ".join(sorted(skipped)),
        )
