"""The thread planner: the whole thread (messages and notes) of each emitted conversation.

A conversation is emitted with every message and note it has, every time it is
emitted, so a conversation reopened by a reply and resolved again carries the reply.

Two ways to read the threads of a batch of conversations, chosen by cost:

- **per conversation**: ``GET /v1/conversations/{id}/messages`` and ``/notes``, 100 a
  page; at least one request per thread, cheap for a handful of conversations;
- **bulk**: search the messages (and notes) created in the batch's time span, 500 a
  page, and group them by conversation; a backfill reads thousands of threads with a
  few dozen requests.

The bulk read is continuous across batches: it moves forward through creation time
and keeps, besides the batch's own items, those of the conversations of the next few
batches (the walk reads them ahead). A thread that began batches before its
conversation was resolved is then read once, not once per batch whose window it
overlaps. A conversation created before the read reached it gets a catch-up window.

Bulk results are accepted only for a thread whose size equals the conversation's own
``messageCount``/``noteCount``; any other thread is fetched per conversation, so the
output is always exactly the whole thread.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import typing as t
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlparse

from tap_kustomer.search import (
    SEARCH_PAGE_SIZE,
    SearchFunction,
    SearchWalk,
    WalkKey,
    parse_timestamp,
)

THREAD_PAGE_SIZE = 100
_MAX_THREAD_PAGES = 10_000
#: Below this many per-conversation requests a batch never tries the bulk path.
MIN_BULK_SAVING = 4
#: Conversations whose threads are fetched one by one together (and held in memory).
PER_CONVERSATION_CHUNK = 50
#: Conversations read ahead of the batch being written; the bulk read keeps their
#: items as it passes them (four search pages of conversations).
LOOKAHEAD_CONVERSATIONS = 2_000
STRATEGIES = ("auto", "per_conversation", "bulk")

T = t.TypeVar("T")
RequestJson = t.Callable[..., dict[str, t.Any]]
"""``request_json(method, path, params=...)`` of a Kustomer stream."""


@dataclass
class Thread:
    """Everything said in one conversation.

    Items read in bulk wait as compact JSON text (a fifth of the memory of parsed
    objects) until their conversation is written; :meth:`records` parses them.
    """

    messages: list[dict[str, t.Any] | str] = field(default_factory=list)
    notes: list[dict[str, t.Any] | str] = field(default_factory=list)

    def records(self, kind: str) -> t.Iterator[dict[str, t.Any]]:
        """The thread's messages or notes, as records."""
        for item in getattr(self, kind):
            yield json.loads(item) if isinstance(item, str) else item


@dataclass
class ThreadStats:
    """What fetching threads cost, and how each thread was read."""

    conversations: int = 0
    requests: int = 0
    bulk_requests: int = 0
    bulk_threads: int = 0
    per_conversation_threads: int = 0
    skipped_empty: int = 0
    gone: int = 0


@dataclass(frozen=True)
class ThreadKind:
    """Messages or notes: where to list them, how to search them, how to count them."""

    name: str
    list_suffix: str
    query_context: str
    count_attribute: str

    def pages_for(self, count: int | None) -> int:
        """Requests to list ``count`` items of one conversation (unknown count: 1+)."""
        if count is None:
            return 1
        return math.ceil(count / THREAD_PAGE_SIZE)


MESSAGES = ThreadKind("messages", "messages", "message", "messageCount")
NOTES = ThreadKind("notes", "notes", "note", "noteCount")


_LIFETIME_ATTRIBUTES = ("createdAt", "updatedAt", "lastMessageAt", "lastActivityAt")


def planning_view(conversation: dict[str, t.Any]) -> dict[str, t.Any]:
    """What the planner needs of a conversation read ahead: its id, lifetime and counts.

    A tenth of the memory of the whole record, for the thousands waiting ahead.
    """
    attributes = conversation.get("attributes") or {}
    view = {name: attributes[name] for name in _LIFETIME_ATTRIBUTES if name in attributes}
    for kind in (MESSAGES, NOTES):
        if kind.count_attribute in attributes:
            view[kind.count_attribute] = attributes[kind.count_attribute]
    last_done = attributes.get("lastDone")
    if isinstance(last_done, dict):
        view["lastDone"] = {"createdAt": last_done.get("createdAt")}
    return {"id": conversation.get("id"), "attributes": view}


def _count(conversation: dict[str, t.Any], name: str) -> int | None:
    value = (conversation.get("attributes") or {}).get(name)
    return value if isinstance(value, int) and value >= 0 else None


def _conversation_of(item: dict[str, t.Any]) -> str | None:
    relationship = (item.get("relationships") or {}).get("conversation") or {}
    data = relationship.get("data") if isinstance(relationship, dict) else None
    return str(data["id"]) if isinstance(data, dict) and data.get("id") else None


def _created(item: dict[str, t.Any]) -> str:
    return str((item.get("attributes") or {}).get("createdAt") or "")


class _Density:
    """Items created per second, learnt from the bulk searches of this run."""

    def __init__(self) -> None:
        self.items = 0.0
        self.seconds = 0.0

    def observe(self, items: int, seconds: float) -> None:
        self.items += items
        self.seconds += max(seconds, 1.0)

    def rate(self) -> float | None:
        return self.items / self.seconds if self.seconds else None


@dataclass
class _Coverage:
    """The continuous bulk read of one kind (messages or notes).

    Items created from ``start`` to ``end`` have been read; of those, the items of the
    watched conversations are held. A conversation watched since some ``end`` (its
    ``since``) holds its items created after that; ``None``: since ``start``.
    """

    start: datetime | None = None
    end: datetime | None = None
    since: dict[str, datetime | None] = field(default_factory=dict)
    held: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def watch(self, cid: str) -> None:
        """Keep this conversation's items from now on."""
        if cid not in self.since:
            self.since[cid] = self.end
            self.held[cid] = {}

    def forget(self, cid: str) -> None:
        """Its thread was written: stop keeping its items."""
        self.since.pop(cid, None)
        self.held.pop(cid, None)

    def covered_from(self, cid: str) -> datetime | None:
        """Items of ``cid`` created from here on are held (None: nothing is read yet)."""
        since = self.since.get(cid)
        return since if since is not None else self.start

    def restart(self, at: datetime | None) -> None:
        """Begin a new read range at ``at``: every watched conversation is kept from it."""
        self.start = self.end = at
        for cid in self.since:
            self.since[cid] = None


class ThreadPlanner:
    """Fetch the whole threads of batches of conversations, by the cheaper plan."""

    def __init__(
        self,
        request_json: RequestJson,
        search: SearchFunction | None = None,
        *,
        want_messages: bool = True,
        want_notes: bool = True,
        workers: int = 1,
        strategy: str = "auto",
        is_not_found: t.Callable[[Exception], bool] = lambda exc: False,
        logger: logging.Logger | None = None,
    ) -> None:
        """Bind the request functions and what to fetch."""
        if strategy not in STRATEGIES:
            msg = f"thread_strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}"
            raise ValueError(msg)
        self.request_json = request_json
        self.search = search
        self.want_messages = want_messages
        self.want_notes = want_notes
        self.workers = max(1, workers)
        self.strategy = strategy if search is not None else "per_conversation"
        self.is_not_found = is_not_found
        self.logger = logger or logging.getLogger(__name__)
        self.stats = ThreadStats()
        self._density = {MESSAGES.name: _Density(), NOTES.name: _Density()}
        self._coverage = {MESSAGES.name: _Coverage(), NOTES.name: _Coverage()}
        self._lock = threading.Lock()

    def kinds(self) -> list[ThreadKind]:
        """What this run reads of each thread."""
        return [
            k for k, wanted in ((MESSAGES, self.want_messages), (NOTES, self.want_notes)) if wanted
        ]

    def fetch(self, conversations: t.Sequence[dict[str, t.Any]]) -> dict[str, Thread]:
        """The whole thread of every conversation in the batch, keyed by conversation id."""
        return {str(c.get("id")): thread for c, thread in self.threads(conversations)}

    def threads(
        self,
        conversations: t.Sequence[dict[str, t.Any]],
        upcoming: t.Sequence[dict[str, t.Any]] = (),
    ) -> t.Iterator[tuple[dict[str, t.Any], Thread]]:
        """Each conversation of the batch with its whole thread, in the batch's order.

        ``upcoming`` are the conversations of the next batches, if already known: the
        bulk read keeps their items as it passes them. Threads read one by one are
        fetched a chunk of conversations at a time, so memory holds one chunk's
        threads, not the whole batch's.
        """
        threads = {str(c.get("id")): Thread() for c in conversations}
        self.stats.conversations += len(conversations)
        kinds = self.kinds()
        if self.strategy != "per_conversation" and len(kinds) > 1 and self.workers > 1:
            with ThreadPoolExecutor(len(kinds), thread_name_prefix="bulk-thread") as pool:
                results = list(
                    pool.map(lambda k: self._plan(k, conversations, upcoming, threads), kinds)
                )
        else:
            results = [self._plan(kind, conversations, upcoming, threads) for kind in kinds]
        pending: dict[str, list[ThreadKind]] = {}
        for remaining in results:
            for cid, kind in remaining:
                pending.setdefault(cid, []).append(kind)
        for offset in range(0, len(conversations), PER_CONVERSATION_CHUNK):
            chunk = conversations[offset : offset + PER_CONVERSATION_CHUNK]
            jobs = [
                (str(c.get("id")), kind)
                for c in chunk
                for kind in pending.get(str(c.get("id")), [])
            ]
            self._fetch_each(jobs, threads)
            for conversation in chunk:
                yield conversation, threads.pop(str(conversation.get("id")))

    def _plan(
        self,
        kind: ThreadKind,
        conversations: t.Sequence[dict[str, t.Any]],
        upcoming: t.Sequence[dict[str, t.Any]],
        threads: dict[str, Thread],
    ) -> list[tuple[str, ThreadKind]]:
        """Fill what the bulk path can; return the (conversation, kind) pairs left over."""
        needed = {}
        for conversation in conversations:
            count = _count(conversation, kind.count_attribute)
            if count == 0:
                with self._lock:
                    self.stats.skipped_empty += 1
                continue
            needed[str(conversation.get("id"))] = conversation
        if self.strategy != "per_conversation" and needed:
            coverage = self._coverage[kind.name]
            try:
                self._bulk(kind, needed, upcoming, threads)
            finally:
                for conversation in conversations:
                    coverage.forget(str(conversation.get("id")))
        return [(cid, kind) for cid in needed]

    # The bulk path.

    def _bulk(
        self,
        kind: ThreadKind,
        needed: dict[str, dict[str, t.Any]],
        upcoming: t.Sequence[dict[str, t.Any]],
        threads: dict[str, Thread],
    ) -> None:
        """Read the batch's items through search; remove the threads it completed.

        First the continuous read moves forward to the batch's end (keeping the items
        of this batch and the upcoming ones), then a catch-up window reads what the
        continuous read passed before it watched a conversation.
        """
        coverage = self._coverage[kind.name]
        later = {
            str(c.get("id")): c
            for c in upcoming
            if _count(c, kind.count_attribute) != 0 and str(c.get("id")) not in needed
        }
        for cid in [*needed, *later]:
            coverage.watch(cid)
        self._accept(kind, needed, threads)
        spans = self._spans(needed.values())
        if not spans:
            return
        per_conversation = {
            cid: kind.pages_for(_count(c, kind.count_attribute)) for cid, c in needed.items()
        }
        start, end, inside = self._window(kind, spans, per_conversation)
        benefit = sum(per_conversation[cid] for cid in inside) + sum(
            kind.pages_for(_count(c, kind.count_attribute)) for c in later.values()
        )
        if self.strategy == "auto" and benefit < MIN_BULK_SAVING:
            return
        if coverage.end is None or (
            start > coverage.end and self._skip_pays(kind, coverage.end, start, later)
        ):
            coverage.restart(start)
        assert coverage.end is not None
        if end > coverage.end:
            if self._read(kind, coverage.end, end, set(coverage.since), benefit):
                coverage.end = end
            else:
                coverage.restart(None)
        self._accept(kind, needed, threads)
        self._catch_up(kind, needed, threads, spans, per_conversation)

    def _catch_up(
        self,
        kind: ThreadKind,
        needed: dict[str, dict[str, t.Any]],
        threads: dict[str, Thread],
        spans: dict[str, tuple[datetime, datetime]],
        per_conversation: dict[str, int],
    ) -> None:
        """One window for the conversations created before the read began to keep them."""
        coverage = self._coverage[kind.name]
        gaps = {}
        for cid in needed.keys() & spans.keys():
            created = spans[cid][0]
            covered = coverage.covered_from(cid)
            if covered is not None and created < covered:
                gaps[cid] = (created, covered)
        if not gaps:
            return
        start, end, inside = self._window(kind, gaps, per_conversation)
        benefit = sum(per_conversation[cid] for cid in inside)
        if self.strategy == "auto" and benefit < MIN_BULK_SAVING:
            return
        self._read(kind, start, end, inside, benefit)
        self._accept(kind, needed, threads)

    def _skip_pays(
        self, kind: ThreadKind, end: datetime, start: datetime, later: dict[str, t.Any]
    ) -> bool:
        """Whether jumping the read from ``end`` to ``start`` saves more than it loses.

        The jump saves the searches of the skipped span; it loses the items held for
        upcoming conversations created before ``start``, at most a request each.
        """
        rate = self._density[kind.name].rate() or 0.0
        saved = rate * (start - end).total_seconds() / SEARCH_PAGE_SIZE
        spans = self._spans(later.values())
        lost = sum(1 for created, _ in spans.values() if created < start)
        return saved > lost

    def _read(
        self, kind: ThreadKind, start: datetime, end: datetime, keep: set[str], benefit: int
    ) -> bool:
        """Search the items created from ``start`` to ``end``; hold those of ``keep``.

        In auto, a read whose first page shows it costs at least ``benefit`` (what
        it saves) stops there; returns whether the whole window was read.
        """
        assert self.search is not None
        walk = SearchWalk(
            search=self._counted_search,
            query_context=kind.query_context,
            criteria=[],
            keys=[
                WalkKey(f"{kind.query_context}_created_at", ("createdAt",)),
                WalkKey(f"{kind.query_context}_updated_at", ("updatedAt",)),
            ],
            lower=start,
            upper=end,
        )
        held = self._coverage[kind.name].held
        read = 0
        for page in walk.pages():
            for item in page:
                cid = _conversation_of(item)
                if cid in keep and cid in held:
                    held[cid][str(item.get("id"))] = (
                        _created(item),
                        json.dumps(item, separators=(",", ":")),
                    )
            read += len(page)
            if self.strategy == "auto" and walk.stats.requests == 1:
                total = walk.stats.first_total
                if math.ceil((total or read) / SEARCH_PAGE_SIZE) >= benefit:
                    return False  # Dearer than per conversation: keep what this page held.
        self._density[kind.name].observe(
            walk.stats.first_total or read, (end - start).total_seconds()
        )
        return True

    def _accept(
        self, kind: ThreadKind, needed: dict[str, dict[str, t.Any]], threads: dict[str, Thread]
    ) -> None:
        """Take every thread of the batch whose held items match its count."""
        coverage = self._coverage[kind.name]
        for cid in list(needed):
            items = coverage.held.get(cid)
            expected = _count(needed[cid], kind.count_attribute)
            if items and expected is not None and len(items) == expected:
                setattr(threads[cid], kind.name, [text for _, text in sorted(items.values())])
                del needed[cid]
                coverage.forget(cid)
                with self._lock:
                    self.stats.bulk_threads += 1

    def _counted_search(self, body: dict[str, t.Any], page: int, size: int) -> dict[str, t.Any]:
        assert self.search is not None
        with self._lock:
            self.stats.requests += 1
            self.stats.bulk_requests += 1
        return self.search(body, page, size)

    @staticmethod
    def _spans(
        conversations: t.Iterable[dict[str, t.Any]],
    ) -> dict[str, tuple[datetime, datetime]]:
        """Each conversation's lifetime: its items were created between these times."""
        spans = {}
        for conversation in conversations:
            attributes = conversation.get("attributes") or {}
            created = parse_timestamp(attributes.get("createdAt"))
            ends = [parse_timestamp(attributes.get(name)) for name in _LIFETIME_ATTRIBUTES[1:]]
            ends.append(parse_timestamp((attributes.get("lastDone") or {}).get("createdAt")))
            latest = max((e for e in ends if e is not None), default=None)
            if created is None or latest is None:
                continue
            spans[str(conversation.get("id"))] = (created, max(created, latest))
        return spans

    def _window(
        self,
        kind: ThreadKind,
        spans: dict[str, tuple[datetime, datetime]],
        per_conversation: dict[str, int],
    ) -> tuple[datetime, datetime, set[str]]:
        """The search window that minimises the estimated cost of the batch.

        Conversations created long before the rest (outliers) would stretch the window
        over months of other conversations' items; they are left to per-conversation
        reads when that is cheaper.
        """
        end = max(span[1] for span in spans.values()) + timedelta(milliseconds=1)
        by_start = sorted(spans.items(), key=lambda pair: pair[1][0])
        rate = self._density[kind.name].rate()
        if rate is None:
            # First batch: assume the batch's own items fill the middle of its lifetimes.
            items = sum(per_conversation.get(cid, 1) for cid in spans) * THREAD_PAGE_SIZE / 4
            middle = by_start[len(by_start) // 2][1][0]
            rate = items / max((end - middle).total_seconds(), 1.0)
        best: tuple[float, int] | None = None
        excluded_cost = 0
        for index, (cid, (start, _)) in enumerate(by_start):
            searched = rate * (end - start).total_seconds() / SEARCH_PAGE_SIZE
            cost = math.ceil(searched) + 1 + excluded_cost
            if best is None or cost < best[0]:
                best = (cost, index)
            excluded_cost += per_conversation.get(cid, 1)
        index = best[1] if best else 0
        inside = {cid for cid, _ in by_start[index:]}
        return by_start[index][1][0], end, inside

    # The per-conversation path.

    def _fetch_each(self, jobs: list[tuple[str, ThreadKind]], threads: dict[str, Thread]) -> None:
        if not jobs:
            return
        if self.workers == 1 or len(jobs) == 1:
            results = [self._fetch_one(job) for job in jobs]
        else:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="thread-fetch") as pool:
                results = list(pool.map(self._fetch_one, jobs))
        gone = set()
        for (cid, kind), items in zip(jobs, results, strict=True):
            if items is None:
                gone.add(cid)
                continue
            setattr(threads[cid], kind.name, items)
            self.stats.per_conversation_threads += 1
        for cid in gone:
            threads[cid] = Thread()
            self.stats.gone += 1
            self.logger.warning(
                "Conversation %s was deleted before its thread could be read; "
                "emitting it without messages and notes",
                cid,
            )

    def _fetch_one(self, job: tuple[str, ThreadKind]) -> list[dict[str, t.Any]] | None:
        cid, kind = job
        try:
            return self.list_all(f"/v1/conversations/{cid}/{kind.list_suffix}")
        except Exception as exc:
            if self.is_not_found(exc):
                return None
            raise

    def list_all(self, path: str) -> list[dict[str, t.Any]]:
        """Every item of a paged list endpoint, following ``links.next`` to the end."""
        items: list[dict[str, t.Any]] = []
        seen_ids: set[str] = set()
        visited: set[str] = set()
        target: str = path
        params: dict[str, t.Any] | None = {"page": 1, "pageSize": THREAD_PAGE_SIZE}
        for _ in range(_MAX_THREAD_PAGES):
            body = self.request_json("GET", target, params=params)
            with self._lock:
                self.stats.requests += 1
            data = body.get("data")
            if not isinstance(data, list):
                msg = f"Kustomer's answer on {path} has no 'data' list"
                raise TypeError(msg)
            for item in data:
                if isinstance(item, dict) and str(item.get("id")) not in seen_ids:
                    seen_ids.add(str(item.get("id")))
                    items.append(item)
            links = body.get("links")
            link = links.get("next") if isinstance(links, dict) else None
            if not link or not data or link in visited:
                return items
            visited.add(link)
            parsed = urlparse(str(link))
            target = parsed.path or path
            params = dict(parse_qsl(parsed.query))
        msg = f"{path} did not end after {_MAX_THREAD_PAGES} pages"
        raise RuntimeError(msg)


def with_upcoming(
    pages: t.Iterable[list[dict[str, t.Any]]], ahead: int = LOOKAHEAD_CONVERSATIONS
) -> t.Iterator[tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]]:
    """Each page with the planning views of the ``ahead`` conversations after it.

    Pages wait compressed, so holding thousands of conversations costs little; the
    planner keeps the upcoming conversations' items when its bulk read passes them.
    """
    waiting: deque[tuple[bytes, list[dict[str, t.Any]]]] = deque()
    known = 0
    for page in pages:
        waiting.append(
            (zlib.compress(json.dumps(page).encode(), 1), list(map(planning_view, page)))
        )
        known += len(page)
        if known - len(waiting[0][1]) >= ahead:
            known -= len(waiting[0][1])
            yield _release(waiting)
    while waiting:
        yield _release(waiting)


def _release(
    waiting: deque[tuple[bytes, list[dict[str, t.Any]]]],
) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
    text, _ = waiting.popleft()
    return json.loads(zlib.decompress(text)), [view for _, views in waiting for view in views]


_END = object()


def read_ahead(pages: t.Iterable[T], depth: int = 1) -> t.Iterator[T]:
    """Yield from ``pages`` while a worker already fetches the next ``depth`` pages.

    The search walk waits on the network while the previous page's threads are being
    read and written; overlapping the two keeps the request budget busy. Errors of the
    worker are raised in the consumer, and closing the consumer stops the worker.
    """
    buffer: queue.Queue[t.Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        buffer.put(page, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as exc:
            buffer.put(exc)

    worker = threading.Thread(target=produce, name="search-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
