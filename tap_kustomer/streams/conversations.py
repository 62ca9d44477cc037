"""Resolved conversations, each written with its whole thread.

The thread is its messages and notes, and, when selected, its attachments and events.
"""

from __future__ import annotations

import typing as t
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from singer_sdk import StreamSchema
from typing_extensions import override

from tap_kustomer.archive import ArchiveSeen, ArchiveSplit
from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import NotFoundError, PermissionDeniedError
from tap_kustomer.sdk_adapter import (
    OpenCounter,
    advance_bookmark,
    direct_writer,
    write_record,
    write_schema,
    write_state,
    write_tap_state,
)
from tap_kustomer.search import SearchWalk, WalkKey
from tap_kustomer.streams.common import SCHEMAS, CustomAttributeSchema, iso, path, relationship_id
from tap_kustomer.streams.deletes import TombstonesMixin
from tap_kustomer.targeted import (
    DEFAULT_BATCH_SIZE,
    QUEUE_SEQ_KEY,
    ConversationFetcher,
    QueueCursor,
    TargetedStats,
    chunk_size,
    is_resolved,
    resolved_since,
    saved_seq,
    summary,
)
from tap_kustomer.threads import (
    ALL_KINDS,
    LOOKAHEAD_CONVERSATIONS,
    Thread,
    ThreadPlanner,
    read_ahead,
    with_upcoming,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class ConversationsStream(TombstonesMixin):
    """Resolved conversations, bookmarked on resolution time, each with its whole thread.

    With ``resolved_only: false`` every conversation is read, bookmarked on update time.
    With ``data_mutability: true`` a resolved conversation changed after it was emitted
    (tags, custom fields, any update) is emitted again with its thread. A search run
    ends with a tombstone for each conversation deleted since the last one; a targeted
    run (``webhook_queue``) writes none, the next search run does.
    """

    name = "conversations"
    resources = ("search", "conversation")
    primary_keys = ("id",)
    query_context = "conversation"
    metadata_resource = "conversation"
    schema = CustomAttributeSchema(SCHEMAS)
    # Each conversation carries its thread, so a STATE every 100 is every ~1,000 records.
    STATE_MSG_FREQUENCY = 100
    #: What the last targeted run of this stream did (None before one).
    targeted_stats: TargetedStats | None = None

    # mypy does not see @override on a property that has a setter.
    @property  # type: ignore[explicit-override]
    @override
    def replication_key(self) -> str:
        """The key the settings choose; a catalog cannot change it.

        The walk's order follows the settings, so a bookmark under any other key
        would be wrong: a saved catalog from other settings is overruled, loudly.
        """
        return self.replication_key_for(self.config)

    @replication_key.setter
    def replication_key(self, value: str | None) -> None:
        chosen = self.replication_key_for(self.config)
        if value not in (None, chosen):
            self.logger.warning(
                "The catalog gives conversations the replication key %r, but with these "
                "settings (resolved_only=%s, data_mutability=%s) conversations follow %r; "
                "using %r. Run discovery again to refresh the catalog.",
                value,
                self.config.get("resolved_only", True),
                self.config.get("data_mutability", False),
                chosen,
                chosen,
            )

    @staticmethod
    def walks_resolution_for(config: t.Mapping[str, t.Any]) -> bool:
        """Whether the walk follows resolution time (the default) or update time."""
        return bool(config.get("resolved_only", True)) and not bool(
            config.get("data_mutability", False)
        )

    @classmethod
    def replication_key_for(cls, config: t.Mapping[str, t.Any]) -> str:
        """``resolved_at``, or ``updated_at`` when the walk follows update time."""
        return "resolved_at" if cls.walks_resolution_for(config) else "updated_at"

    @property
    def walks_resolution(self) -> bool:
        """Whether this run's walk follows resolution time."""
        return self.walks_resolution_for(self.config)

    @override
    def walk_keys(self) -> list[WalkKey]:
        """Resolution (or update) time, then creation time, then update time."""
        created = WalkKey("conversation_created_at", ("createdAt",))
        updated = WalkKey("conversation_updated_at", ("updatedAt",))
        if self.walks_resolution:
            return [
                WalkKey("conversation_last_done_created_at", ("lastDone", "createdAt")),
                created,
                updated,
            ]
        return [updated, created]

    @override
    def walk_criteria(self) -> list[dict[str, t.Any]]:
        """Only resolved conversations, unless every conversation was asked for."""
        if self.config.get("resolved_only", True):
            return [{"conversation_status": {"equals": "done"}}]
        return []

    @override
    def generate_child_contexts(
        self, record: dict[str, t.Any], context: Context | None
    ) -> t.Iterable[Context | None]:
        """None: threads are written by this stream, batch by batch, not per record."""
        return ()

    def thread_streams(self) -> dict[str, ThreadStream]:
        """The selected thread streams (messages, notes, attachments, events), by name."""
        return {s.name: s for s in self.child_streams if isinstance(s, ThreadStream) and s.selected}

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Walk the window; write each conversation's thread just before it.

        With ``webhook_queue`` set, the queued conversations are read instead, without
        any search (see :meth:`_sync_targeted`). A search run ends with the tombstones
        of the conversations deleted since the last one.
        """
        targeted = bool(self.config.get("webhook_queue"))
        cursor = self._open_queue(context) if targeted else None
        try:
            self.check_key_once()
            if cursor is None:
                self.start_deletes_window()
            workers = max(1, int(self.config.get("max_workers", 4)))
            # One pool for the run: the thread fetches, plus one worker per bulk kind.
            pool = ThreadPoolExecutor(workers + 2, thread_name_prefix="kustomer-threads")
            finished = False
            try:
                if cursor is not None:
                    self._sync_targeted(context, cursor, pool, workers)
                else:
                    yield from self._sync_conversations(context, pool, workers)
                finished = True
            finally:
                # A failed or stopped run does not wait for requests still queued or in flight.
                pool.shutdown(wait=finished, cancel_futures=not finished)
        finally:
            if cursor is not None:
                cursor.close()
        if cursor is None:
            self.emit_tombstones(context)

    def _planner(
        self,
        streams: dict[str, ThreadStream],
        pool: ThreadPoolExecutor,
        workers: int,
        strategy: str | None = None,
    ) -> ThreadPlanner:
        """The thread planner for the selected thread streams."""
        return ThreadPlanner(
            self.request_json,
            self.search,
            kinds=[kind for kind in ALL_KINDS if kind.name in streams],
            pool=pool,
            workers=workers,
            strategy=strategy or self.thread_strategy(),
            is_not_found=lambda exc: isinstance(exc, NotFoundError),
            logger=self.logger,
        )

    def _sync_conversations(
        self, context: Context | None, pool: ThreadPoolExecutor, workers: int
    ) -> t.Iterator[dict[str, t.Any]]:
        streams = self.thread_streams()
        planner = self._planner(streams, pool, workers)
        for stream in streams.values():
            stream.start()
        split = self.archive_plan(context)
        seen = self._write_archive_conversations(context, split, streams, pool, workers)
        walk = self.new_walk(context, self.archive_read(split))
        self.logger.info(
            "Reading %s conversations with %s from %s to %s",
            "resolved" if self.walks_resolution else "updated",
            "resolution time" if self.walks_resolution else "update time",
            walk.lower.isoformat() if walk.lower else "the beginning",
            walk.upper.isoformat() if walk.upper else "now",
        )
        try:
            with self.progress() as progress, self.state_written_on_failure():
                unselected = 0
                for conversation in self._walk_with_threads(walk, planner, streams, seen):
                    progress.set_total(walk.stats.first_total)
                    yield conversation
                    progress.add()
                    if not self.selected:
                        unselected += 1
                        self._advance_unselected(
                            conversation,
                            context,
                            write=unselected % self.STATE_MSG_FREQUENCY == 0,
                        )
        except PermissionDeniedError as error:
            if error.resource != "conversation" or not self.skip_if_allowed(error):
                raise
        for stream in streams.values():
            stream.finish()
        self.log_type_fixes()
        stats = planner.stats
        self.logger.info(
            "Conversations: %d search requests (%d tie groups); threads of %d conversations: "
            "%d requests (%d bulk searches), %d threads read in bulk, %d one by one; "
            "list requests by kind: %s; reads: %s",
            walk.stats.requests,
            walk.stats.tie_groups,
            stats.conversations,
            stats.requests,
            stats.bulk_requests,
            stats.bulk_threads,
            stats.per_conversation_threads,
            ", ".join(f"{k} {n}" for k, n in sorted(stats.list_requests.items())) or "none",
            stats.by_way() or "none",
        )

    # Archive search: conversations older than standard search's two years.

    @override
    def standard_lower(self, lower: datetime | None, split: ArchiveSplit) -> datetime | None:
        """A resolution-time walk keeps its start: resolution time is not update time.

        A conversation resolved three years ago and retagged last month is only in
        standard search, at its old resolution time.
        """
        return lower if self.walks_resolution else super().standard_lower(lower, split)

    def _write_archive_conversations(
        self,
        context: Context | None,
        split: ArchiveSplit | None,
        streams: dict[str, ThreadStream],
        pool: ThreadPoolExecutor,
        workers: int,
    ) -> ArchiveSeen | None:
        """Write the archive's conversations, each with its whole thread, first.

        Archive search knows no ``conversation_status`` or
        ``conversation_last_done_created_at``: it is walked by update time and, with
        ``resolved_only``, only ``status == "done"`` is kept here. Their threads are
        listed per conversation (the archive has no note context, and standard search
        does not hold their old messages).

        The bookmark (resolution or update time) does not move here: records are
        written, not yielded, because update-time order is not bookmark order and the
        standard walk that follows starts again from the bookmark (a resolution-time
        walk) or from the overlap (an update-time walk). So the archive part comes
        first, then the standard part moves the bookmark monotonically; a run stopped
        in the archive part resumes from the old bookmark and reads it again.
        """
        if split is None:
            return None
        planner = self._planner(streams, pool, workers, strategy="per_conversation")
        resolved_only = bool(self.config.get("resolved_only", True))
        seen = ArchiveSeen(split.standard_from)
        walk = self.archive_walk(context, split)
        with direct_writer(self, context) as write:
            for page in self.archive_pages(walk):
                chosen = [c for c in page if not resolved_only or is_resolved(c)]
                for conversation in self._write_with_threads(planner, chosen, streams, write):
                    seen.add(conversation)
        if self.archive_read(split):
            self.log_archive(walk, seen, split)
            self.logger.info(
                "conversations: threads of %d archive conversations: %d list requests",
                planner.stats.conversations,
                planner.stats.requests,
            )
        return seen

    def _write_with_threads(
        self,
        planner: ThreadPlanner,
        conversations: list[dict[str, t.Any]],
        streams: dict[str, ThreadStream],
        write: t.Callable[[dict[str, t.Any]], None],
    ) -> t.Iterator[dict[str, t.Any]]:
        """Write each conversation after its whole thread; yield it once written."""
        for conversation, thread in self._threads(planner, conversations, [], streams):
            for name, stream in streams.items():
                if planner.reads(name):
                    stream.emit(thread.records(name), conversation)
            write(conversation)
            yield conversation

    # Targeted mode: the conversations the webhook queue names, no search.

    def _open_queue(self, context: Context | None) -> QueueCursor:
        """Open the queue and delete the rows the saved state covers.

        The saved seq came in this run's STATE, so the target committed every record
        up to it and the orchestrator saved that state: those rows are done with. A
        dry run (``--test``) deletes nothing.
        """
        start = saved_seq(self.get_context_state(context).get(QUEUE_SEQ_KEY))
        cursor = QueueCursor.open(
            str(self.config["webhook_queue"]), start, delete=self.record_limit is None
        )
        self.logger.info(
            "Targeted run: reading the conversations queued in %s after seq %d (through %s); "
            "%d queue rows up to seq %d deleted",
            cursor.display_url,
            start,
            cursor.until if cursor.until is not None else "none: the queue is empty",
            cursor.deleted,
            start,
        )
        return cursor

    def _sync_targeted(
        self,
        context: Context | None,
        cursor: QueueCursor,
        pool: ThreadPoolExecutor,
        workers: int,
    ) -> None:
        """Write each queued conversation with its whole thread; bookmark the queue seq.

        Records are written here, not yielded to the SDK: the SDK would advance the
        ``resolved_at``/``updated_at`` bookmark from them (and reject them as unsorted,
        since the queue is in arrival order). The queue seq is kept under its own key,
        :data:`~tap_kustomer.targeted.QUEUE_SEQ_KEY`, so a search bookmark in the same
        state is never moved. A STATE follows each chunk; a run killed mid-chunk reads
        that chunk again.

        ``resolved_only`` keeps only conversations that are done when fetched; one
        that is not is skipped, not queued again: the webhook of its resolution brings
        it back. Without ``data_mutability`` a done conversation whose queued events all
        came long after its resolution (a retag, a custom field) is skipped, as the
        search path skips it; see :func:`~tap_kustomer.targeted.resolved_since`.
        """
        streams = self.thread_streams()
        planner = self._planner(streams, pool, workers)
        fetcher = ConversationFetcher(
            self.request_json,
            int(self.config.get("webhook_batch_size") or DEFAULT_BATCH_SIZE),
            logger=self.logger,
        )
        stats = TargetedStats(
            start_seq=cursor.saved_seq, seq=cursor.saved_seq, deleted_rows=cursor.deleted
        )
        resolved_only = bool(self.config.get("resolved_only", True))
        mutable = bool(self.config.get("data_mutability", False))
        limit = self.record_limit
        size = chunk_size(fetcher.batch_size) if limit is None else max(1, limit)
        for stream in streams.values():
            stream.start()
        try:
            with (
                direct_writer(self, context) as write,
                self.progress() as progress,
                self.state_written_on_failure(),
            ):
                for entries in cursor.chunks(size):
                    stats.queued += len(entries)
                    chosen = []
                    first_received = {e.conversation_id: e.first_received_at for e in entries}
                    for conversation in fetcher.fetch(list(first_received)):
                        if resolved_only and not is_resolved(conversation):
                            stats.skipped_unresolved += 1
                        elif (
                            resolved_only
                            and not mutable
                            and not resolved_since(
                                conversation, first_received.get(str(conversation.get("id")))
                            )
                        ):
                            stats.skipped_unchanged += 1
                        else:
                            chosen.append(conversation)
                    for _ in self._write_with_threads(planner, chosen, streams, write):
                        stats.emitted += 1
                    stats.missing = len(fetcher.missing)
                    progress.add(len(entries))
                    if limit is not None:
                        break  # a dry run reads one small chunk and saves no seq
                    stats.seq = entries[-1].seq
                    self._save_queue_seq(stats.seq, context)
        except PermissionDeniedError as error:
            if error.resource != "conversation" or not self.skip_if_allowed(error):
                raise
        stats.fetch_requests = fetcher.requests
        for stream in streams.values():
            stream.finish()
        self.log_type_fixes()
        self.logger.info(summary(stats, planner.stats.requests, cursor.display_url))
        self.targeted_stats = stats

    def _save_queue_seq(self, seq: int, context: Context | None) -> None:
        """Keep ``seq`` in this stream's state and write the STATE now."""
        self.get_context_state(context)[QUEUE_SEQ_KEY] = seq
        write_tap_state(self)

    def thread_strategy(self) -> str:
        """The configured strategy; a dry run reads its one or two threads directly.

        In a targeted run ``auto`` means ``batched``: queued conversations are
        scattered over time, so a search window covering their lifetimes reads mostly
        other conversations' messages, while a search by their ids (or their
        customers') reads about only theirs. Every thread is still checked against its
        counts, so one the search index has not caught up with is listed instead.
        """
        strategy = str(self.config.get("thread_strategy") or "auto")
        if self.record_limit is not None:
            return "per_conversation"
        if self.config.get("webhook_queue") and strategy == "auto":
            return "batched"
        return strategy

    def _advance_unselected(
        self, conversation: dict[str, t.Any], context: Context | None, *, write: bool
    ) -> None:
        """Move the bookmark past a conversation whose thread alone was written.

        With only messages or notes selected the SDK keeps no bookmark for the walk
        (it advances selected streams only); without one, every run would read all
        history again.
        """
        value = self.bookmark_value(conversation)
        if value is None:
            return
        advance_bookmark(self, {self.replication_key: value}, context)
        if write:
            write_state(self)

    def bookmark_value(self, conversation: dict[str, t.Any]) -> str | None:
        """The conversation's value of the replication key, as its record carries it."""
        attributes = conversation.get("attributes") or {}
        if self.walks_resolution:
            return iso(path(attributes, "lastDone", "createdAt"))
        return iso(attributes.get("updatedAt"))

    def _walk_with_threads(
        self,
        walk: SearchWalk,
        planner: ThreadPlanner,
        streams: dict[str, ThreadStream],
        seen: ArchiveSeen | None = None,
    ) -> t.Iterator[dict[str, t.Any]]:
        # A dry run (--test) stops after a record or two: read no pages ahead of it.
        limited = self.record_limit is not None
        fresh = (kept for page in walk.pages() if (kept := seen.fresh(page) if seen else page))
        pages = fresh if limited else read_ahead(fresh)
        ahead = 0 if limited else LOOKAHEAD_CONVERSATIONS
        for batch, upcoming in with_upcoming(pages, ahead):
            for conversation, thread in self._threads(planner, batch, upcoming, streams):
                for name, stream in streams.items():
                    if planner.reads(name):
                        stream.emit(thread.records(name), conversation)
                yield conversation

    def _threads(
        self,
        planner: ThreadPlanner,
        page: list[dict[str, t.Any]],
        upcoming: list[dict[str, t.Any]],
        streams: dict[str, ThreadStream],
    ) -> t.Iterator[tuple[dict[str, t.Any], Thread]]:
        """Threads of a page; a thread stream the key may not read is dropped if allowed."""
        done = 0
        while True:
            try:
                for pair in planner.threads(page[done:], upcoming):
                    yield pair
                    done += 1
                return
            except PermissionDeniedError as error:
                stream = next((s for s in streams.values() if error.resource in s.resources), None)
                if stream is None or not stream.skip_if_allowed(error):
                    raise
                planner.drop(stream.name)

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat columns: resolved_at, updated_at, customer_id."""
        attributes = row.get("attributes") or {}
        row["updated_at"] = iso(attributes.get("updatedAt"))
        row["resolved_at"] = iso(path(attributes, "lastDone", "createdAt"))
        row["customer_id"] = relationship_id(row, "customer")
        return row


class ThreadStream(KustomerStream):
    """Messages or notes: written by the conversations stream, one whole thread at a time.

    Their state does not grow with conversations: they have no bookmark of their own;
    the conversations bookmark moves only after a conversation's thread is written.
    """

    parent_stream_type = ConversationsStream
    primary_keys = ("id",)
    path = "/v1/conversations/{conversation_id}/thread"
    state_partitioning_keys: t.ClassVar[list[str]] = []

    _counter: OpenCounter | None = None

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Nothing on its own; see :meth:`emit`."""
        return ()

    def start(self) -> None:
        """Write this stream's SCHEMA once, before its first record."""
        if self._counter is None:
            write_schema(self)
            self._counter = OpenCounter(self)

    def emit(self, records: t.Iterable[dict[str, t.Any]], conversation: dict[str, t.Any]) -> None:
        """Write one conversation's thread."""
        self.start()
        assert self._counter is not None
        for record in records:
            processed = self.post_process(
                record,
                {
                    "conversation_id": conversation.get("id"),
                    "customer_id": relationship_id(conversation, "customer"),
                },
            )
            if processed is not None:
                write_record(self, processed)
                self._counter.increment()

    def finish(self) -> None:
        """Log this stream's record count, like the SDK does for the streams it syncs."""
        if self._counter is not None:
            self._counter.close()
            self._counter = None

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat columns: conversation_id, customer_id, updated_at."""
        row["conversation_id"] = relationship_id(row, "conversation") or (
            str(context["conversation_id"]) if context and context.get("conversation_id") else None
        )
        row["customer_id"] = relationship_id(row, "customer") or (
            str(context["customer_id"]) if context and context.get("customer_id") else None
        )
        row["updated_at"] = iso(path(row, "attributes", "updatedAt"))
        return row


def _recipients(value: t.Any) -> t.Any:
    """Message recipients as a list of objects, whichever of list/dict/str the API sent."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    normalized = []
    for item in items:
        if isinstance(item, dict):
            normalized.append(item)
        elif item is not None and str(item).strip():
            text = str(item).strip()
            normalized.append({"email": text} if "@" in text else {"external": text})
    return normalized


class MessagesStream(ThreadStream):
    """Every message of each emitted conversation."""

    name = "messages"
    resources = ("message",)
    path = "/v1/conversations/{conversation_id}/messages"
    metadata_resource = "message"
    schema = CustomAttributeSchema(SCHEMAS)

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Normalise recipients (list, dict or string) to a list."""
        meta = path(row, "attributes", "meta")
        if isinstance(meta, dict):
            for field in ("to", "cc", "bcc"):
                if field in meta:
                    meta[field] = _recipients(meta[field])
        return super().prepare_record(row, context)


class NotesStream(ThreadStream):
    """Every note of each emitted conversation."""

    name = "notes"
    resources = ("note",)
    path = "/v1/conversations/{conversation_id}/notes"
    schema = StreamSchema(SCHEMAS)


class AttachmentsStream(ThreadStream):
    """Every attachment of each emitted conversation's messages.

    Listed per conversation, and only where the messages name an attachment (or do
    not say), so it is not selected by default: see the README for its cost.
    """

    name = "attachments"
    resources = ("attachment",)
    path = "/v1/conversations/{conversation_id}/attachments"
    schema = StreamSchema(SCHEMAS)
    selected_by_default = False

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Give each attachment its id (the list puts it only in ``links.self``)."""
        row = super().prepare_record(row, context) or row
        row.pop("updated_at", None)  # attachments have no update time
        if not row.get("id"):
            row["id"] = attachment_id(row)
        row["message_id"] = relationship_id(row, "message")
        if row.get("id"):
            return row
        self.logger.warning(
            "Skipping an attachment of conversation %s: it has neither an id nor a "
            "links.self to read one from",
            row.get("conversation_id"),
        )
        return None


def attachment_id(row: dict[str, t.Any]) -> str | None:
    """The id at the end of ``links.self`` (``/v1/messages/{m}/attachments/{id}``)."""
    own = path(row, "links", "self")
    if not isinstance(own, str) or "/attachments/" not in own:
        return None
    tail = own.split("?", 1)[0].rstrip("/").rsplit("/attachments/", 1)[1]
    return tail or None


class ConversationEventsStream(ThreadStream):
    """Every event of each emitted conversation: who changed what, and when.

    One list per conversation (at least a request each), so it is not selected by
    default: see the README for its cost.
    """

    name = "conversation_events"
    resources = ("event",)
    path = "/v1/conversations/{conversation_id}/events"
    schema = StreamSchema(SCHEMAS)
    selected_by_default = False
