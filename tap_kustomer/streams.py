"""The streams: conversations (with their threads), messages, notes, customers, tags."""

from __future__ import annotations

import copy
import typing as t
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import ParseResult, parse_qsl

from singer_sdk import SchemaDirectory, StreamSchema
from typing_extensions import override

from tap_kustomer import schemas
from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import NotFoundError, PermissionDeniedError
from tap_kustomer.pagination import NextLinkPaginator
from tap_kustomer.sdk_adapter import (
    OpenCounter,
    advance_bookmark,
    write_record,
    write_schema,
    write_state,
)
from tap_kustomer.search import (
    SEARCH_PAGE_SIZE,
    SearchWalk,
    WalkKey,
    format_timestamp,
    parse_timestamp,
)
from tap_kustomer.threads import (
    LOOKAHEAD_CONVERSATIONS,
    Thread,
    ThreadPlanner,
    read_ahead,
    with_upcoming,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

SCHEMAS = SchemaDirectory(schemas)
#: Standard search covers records updated within about two years.
STANDARD_SEARCH_DAYS = 730


class CustomAttributeSchema(StreamSchema):
    """The stream's schema file plus the org's custom attributes, typed by suffix.

    Custom attributes not described (or added later) still pass through, because
    ``attributes.custom`` allows additional properties; described ones become typed
    columns when a target flattens records.
    """

    @override
    def get_stream_schema(self, stream: t.Any, stream_class: t.Any) -> dict[str, t.Any]:
        """Read the definitions once per stream instance."""
        cached = stream.__dict__.get("_schema_with_custom_attributes")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        schema = copy.deepcopy(super().get_stream_schema(stream, stream_class))
        custom = _path(schema, "properties", "attributes", "properties", "custom")
        if isinstance(custom, dict):
            custom.setdefault("properties", {}).update(stream.custom_attribute_types())
        stream.__dict__["_schema_with_custom_attributes"] = schema
        return schema


def _path(record: dict[str, t.Any], *parts: str) -> t.Any:
    node: t.Any = record
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _relationship_id(record: dict[str, t.Any], name: str) -> str | None:
    value = _path(record, "relationships", name, "data", "id")
    return str(value) if value else None


def _iso(value: t.Any) -> str | None:
    """A timestamp column in one format, whatever precision the API used."""
    stamp = parse_timestamp(value)
    return format_timestamp(stamp) if stamp else None


class SearchedStream(KustomerStream):
    """A stream read through search, walked in ascending order of its replication key."""

    is_sorted = True
    path = "/v1/customers/search"
    http_method = "POST"
    query_context: t.ClassVar[str]

    def walk_keys(self) -> list[WalkKey]:
        """The ordering keys of the walk, replication key first."""
        raise NotImplementedError

    def walk_criteria(self) -> list[dict[str, t.Any]]:
        """Filters besides the time window."""
        return []

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        """No signpost: the walk's upper bound already comes from the server's clock."""
        return

    def window_end(self) -> datetime:
        """The newest time this run may read: settled in the search index, before end_date.

        Search lags behind changes; reading only what is older than the lag means a
        record indexed late still lands after the bookmark and is read next run.
        """
        lag = timedelta(minutes=float(self.config.get("index_lag_minutes", 15)))
        server_now = datetime.fromtimestamp(self.budget.server_time(), tz=timezone.utc)
        end = server_now - lag
        end_date = parse_timestamp(self.config.get("end_date"))
        return min(end, end_date) if end_date else end

    def new_walk(self, context: Context | None) -> SearchWalk:
        """A walk from the bookmark (or start_date) to the window end."""
        lower = self.get_starting_timestamp(context)
        upper = self.window_end()
        horizon = upper - timedelta(days=STANDARD_SEARCH_DAYS)
        if lower is None or lower < horizon:
            self.logger.warning(
                "%s: Kustomer's standard search holds only records updated in the last 2 "
                "years (since %s); older ones are only in its archive search, which this "
                "tap does not read",
                self.name,
                horizon.date().isoformat(),
            )
        return SearchWalk(
            search=self.search,
            query_context=self.query_context,
            criteria=self.walk_criteria(),
            keys=self.walk_keys(),
            lower=lower,
            upper=upper,
            page_size=self.walk_page_size(),
        )

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Every record of the window, oldest first."""
        self.check_key_once()
        try:
            with self.progress() as progress, self.state_written_on_failure():
                walk = self.new_walk(context)
                for page in walk.pages():
                    progress.set_total(walk.stats.first_total)
                    yield from page
                    progress.add(len(page))
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    @property
    def record_limit(self) -> int | None:
        """The records a dry run (``--test``) or a test suite reads before it stops."""
        return self.ABORT_AT_RECORD_COUNT

    def walk_page_size(self) -> int:
        """Records per search page: fewer when the run stops after a handful."""
        limit = self.record_limit
        return SEARCH_PAGE_SIZE if limit is None else max(2, min(SEARCH_PAGE_SIZE, limit + 1))


class ConversationsStream(SearchedStream):
    """Resolved conversations, bookmarked on resolution time, each with its whole thread.

    With ``resolved_only: false`` every conversation is read, bookmarked on update time.
    With ``data_mutability: true`` a resolved conversation changed after it was emitted
    (tags, custom fields, any update) is emitted again with its thread.
    """

    name = "conversations"
    primary_keys = ("id",)
    query_context = "conversation"
    metadata_resource = "conversation"
    schema = CustomAttributeSchema(SCHEMAS)
    # Each conversation carries its thread, so a STATE every 100 is every ~1,000 records.
    STATE_MSG_FREQUENCY = 100

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

    def thread_streams(self) -> tuple[ThreadStream | None, ThreadStream | None]:
        """The messages and notes streams, if selected."""
        found: dict[str, ThreadStream] = {
            s.name: s for s in self.child_streams if isinstance(s, ThreadStream) and s.selected
        }
        return found.get("messages"), found.get("notes")

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Walk the window; write each conversation's thread just before it."""
        self.check_key_once()
        workers = max(1, int(self.config.get("max_workers", 4)))
        # One pool for the run: the thread fetches, plus one worker per bulk kind.
        pool = ThreadPoolExecutor(workers + 2, thread_name_prefix="kustomer-threads")
        finished = False
        try:
            yield from self._sync_conversations(context, pool, workers)
            finished = True
        finally:
            # A failed or stopped run does not wait for requests still queued or in flight.
            pool.shutdown(wait=finished, cancel_futures=not finished)

    def _sync_conversations(
        self, context: Context | None, pool: ThreadPoolExecutor, workers: int
    ) -> t.Iterator[dict[str, t.Any]]:
        messages, notes = self.thread_streams()
        planner = ThreadPlanner(
            self.request_json,
            self.search,
            want_messages=messages is not None,
            want_notes=notes is not None,
            pool=pool,
            workers=workers,
            strategy=self.thread_strategy(),
            is_not_found=lambda exc: isinstance(exc, NotFoundError),
            logger=self.logger,
        )
        for stream in (messages, notes):
            if stream is not None:
                stream.start()
        walk = self.new_walk(context)
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
                for conversation in self._walk_with_threads(walk, planner, messages, notes):
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
        for stream in (messages, notes):
            if stream is not None:
                stream.finish()
        self.log_type_fixes()
        stats = planner.stats
        self.logger.info(
            "Conversations: %d search requests (%d tie groups); threads of %d conversations: "
            "%d requests (%d bulk searches), %d threads read in bulk, %d one by one",
            walk.stats.requests,
            walk.stats.tie_groups,
            stats.conversations,
            stats.requests,
            stats.bulk_requests,
            stats.bulk_threads,
            stats.per_conversation_threads,
        )

    def thread_strategy(self) -> str:
        """The configured strategy; a dry run reads its one or two threads directly."""
        if self.record_limit is not None:
            return "per_conversation"
        return str(self.config.get("thread_strategy") or "auto")

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
            return _iso(_path(attributes, "lastDone", "createdAt"))
        return _iso(attributes.get("updatedAt"))

    def _walk_with_threads(
        self,
        walk: SearchWalk,
        planner: ThreadPlanner,
        messages: ThreadStream | None,
        notes: ThreadStream | None,
    ) -> t.Iterator[dict[str, t.Any]]:
        # A dry run (--test) stops after a record or two: read no pages ahead of it.
        limited = self.record_limit is not None
        pages = walk.pages() if limited else read_ahead(walk.pages())
        ahead = 0 if limited else LOOKAHEAD_CONVERSATIONS
        for batch, upcoming in with_upcoming(pages, ahead):
            for conversation, thread in self._threads(planner, batch, upcoming, messages, notes):
                if messages is not None and planner.want_messages:
                    messages.emit(thread.records("messages"), conversation)
                if notes is not None and planner.want_notes:
                    notes.emit(thread.records("notes"), conversation)
                yield conversation

    def _threads(
        self,
        planner: ThreadPlanner,
        page: list[dict[str, t.Any]],
        upcoming: list[dict[str, t.Any]],
        messages: ThreadStream | None,
        notes: ThreadStream | None,
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
                stream = {"message": messages, "note": notes}.get(error.resource)
                if stream is None or not stream.skip_if_allowed(error):
                    raise
                if error.resource == "message":
                    planner.want_messages = False
                else:
                    planner.want_notes = False

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat columns: resolved_at, updated_at, customer_id."""
        attributes = row.get("attributes") or {}
        row["updated_at"] = _iso(attributes.get("updatedAt"))
        row["resolved_at"] = _iso(_path(attributes, "lastDone", "createdAt"))
        row["customer_id"] = _relationship_id(row, "customer")
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
            processed = self.post_process(record, {"conversation_id": conversation.get("id")})
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
        row["conversation_id"] = _relationship_id(row, "conversation") or (
            str(context["conversation_id"]) if context and context.get("conversation_id") else None
        )
        row["customer_id"] = _relationship_id(row, "customer")
        row["updated_at"] = _iso(_path(row, "attributes", "updatedAt"))
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
    path = "/v1/conversations/{conversation_id}/messages"
    metadata_resource = "message"
    schema = CustomAttributeSchema(SCHEMAS)

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Normalise recipients (list, dict or string) to a list."""
        meta = _path(row, "attributes", "meta")
        if isinstance(meta, dict):
            for field in ("to", "cc", "bcc"):
                if field in meta:
                    meta[field] = _recipients(meta[field])
        return super().prepare_record(row, context)


class NotesStream(ThreadStream):
    """Every note of each emitted conversation."""

    name = "notes"
    path = "/v1/conversations/{conversation_id}/notes"
    schema = StreamSchema(SCHEMAS)


class CustomersStream(SearchedStream):
    """Customers created or updated since the last run."""

    name = "customers"
    primary_keys = ("id",)
    replication_key = "updated_at"
    query_context = "customer"
    metadata_resource = "customer"
    schema = CustomAttributeSchema(SCHEMAS)
    STATE_MSG_FREQUENCY = 1000

    @override
    def walk_keys(self) -> list[WalkKey]:
        """Update time, then creation time."""
        return [
            WalkKey("customer_updated_at", ("updatedAt",)),
            WalkKey("customer_created_at", ("createdAt",)),
        ]

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat column updated_at."""
        row["updated_at"] = _iso(_path(row, "attributes", "updatedAt"))
        return row


class TagsStream(KustomerStream):
    """Every tag, deleted ones included with their flag."""

    name = "tags"
    path = "/v1/tags"
    primary_keys = ("id",)
    schema = StreamSchema(SCHEMAS)
    page_size = 100

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Track the ids written, so the pass for deleted tags adds only new ones."""
        super().__init__(*args, **kwargs)
        self._extra_params: dict[str, str] = {}

    @override
    def get_new_paginator(self) -> NextLinkPaginator:
        """Tags come in pages linked by ``links.next``."""
        return NextLinkPaginator()

    @override
    def get_http_request(self, *, page: PageContext[ParseResult | None]) -> HTTPRequest:
        """First page by size; later pages exactly as the API linked them."""
        request = super().get_http_request(page=page)
        token = page.next_page_token
        if token is not None:
            request.url = f"{self.url_base}{token.path}"
            request.params = dict(parse_qsl(token.query))
        else:
            request.params.update({"page": 1, "pageSize": self.page_size, **self._extra_params})
        return request

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """All tags; then, if none came back deleted, ask for deleted ones explicitly.

        Whether the list includes deleted tags by default is not documented, so the
        tap reads both ways and keeps each tag once.
        """
        self.check_key_once()
        try:
            with self.progress() as progress:
                for tag in self._all_tags(context):
                    yield tag
                    progress.add()
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    def _all_tags(self, context: Context | None) -> t.Iterator[dict[str, t.Any]]:
        seen: set[str] = set()
        any_deleted = False
        self._extra_params = {}
        for record in super().get_records(context):
            seen.add(str(record.get("id")))
            any_deleted = any_deleted or bool(_path(record, "attributes", "deleted"))
            yield record
        if any_deleted:
            return
        self._extra_params = {"deleted": "true"}
        for record in super().get_records(context):
            if str(record.get("id")) not in seen and _path(record, "attributes", "deleted"):
                seen.add(str(record.get("id")))
                yield record

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat column updated_at."""
        row["updated_at"] = _iso(_path(row, "attributes", "updatedAt"))
        return row
