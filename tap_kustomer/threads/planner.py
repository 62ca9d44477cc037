"""The planner: the whole thread of each conversation of a batch, by the cheaper way.

A thread is every message and note, and, when selected, every attachment and event.

It composes the parts: per kind, the :class:`~tap_kustomer.threads.bulk.BulkReader`
completes what its window search can, the
:class:`~tap_kustomer.threads.batched.IdBatchReader` what searches by id can of the
rest (both priced by :mod:`~tap_kustomer.threads.cost`), and the
:class:`~tap_kustomer.threads.lister.ThreadLister` lists every thread left over, a
chunk of conversations at a time. Work runs on the one executor the caller owns for
the run; the planner never creates threads of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import typing as t
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field

from tap_kustomer.threads.batched import ID_SEARCHES, IdBatchReader
from tap_kustomer.threads.bulk import BulkRead, BulkReader
from tap_kustomer.threads.kinds import (
    ALL_KINDS,
    ATTACHMENTS,
    MESSAGES,
    NOTES,
    Conversation,
    ThreadKind,
    attachments_said,
    conversation_id,
    count_of,
    needing,
)
from tap_kustomer.threads.lister import RequestJson, ThreadLister

if t.TYPE_CHECKING:
    from tap_kustomer.search import SearchFunction

A = t.TypeVar("A")
R = t.TypeVar("R")
C = t.TypeVar("C", bound=Conversation)

#: ``auto``: the cheapest of the three ways per batch; ``per_conversation``: lists only;
#: ``bulk``: window searches, then lists; ``batched``: searches by id, then lists.
STRATEGIES = ("auto", "per_conversation", "bulk", "batched")
#: How threads are searched: by time window, or by conversation or customer ids.
WINDOW = "window"
BY_ID = "by id"
#: Conversations whose threads are listed one by one together (and held in memory).
PER_CONVERSATION_CHUNK = 50


@dataclass
class Thread:
    """Everything said and done in one conversation.

    Items read in bulk wait as compact JSON text (a fifth of the memory of parsed
    objects) until their conversation is written; :meth:`records` parses them.
    """

    messages: list[dict[str, t.Any] | str] = field(default_factory=list)
    notes: list[dict[str, t.Any] | str] = field(default_factory=list)
    attachments: list[dict[str, t.Any] | str] = field(default_factory=list)
    conversation_events: list[dict[str, t.Any] | str] = field(default_factory=list)

    def records(self, kind: str) -> t.Iterator[dict[str, t.Any]]:
        """The thread's items of one kind (its name, e.g. ``messages``), as records."""
        items: list[dict[str, t.Any] | str] = getattr(self, kind)
        for item in items:
            yield json.loads(item) if isinstance(item, str) else item


@dataclass
class ThreadStats:
    """What fetching threads cost, and how each thread was read (for logs and tests)."""

    conversations: int = 0
    requests: int = 0
    bulk_requests: int = 0
    bulk_threads: int = 0
    per_conversation_threads: int = 0
    skipped_empty: int = 0
    gone: int = 0
    #: List requests per kind (``messages``, ``attachments``, ...): what each kind costs.
    list_requests: dict[str, int] = field(default_factory=dict)
    #: Attachment lists not requested because the messages named no attachment.
    skipped_no_attachments: int = 0
    #: Searches per way and kind (``window messages``, ``by id notes``, ...); their sum
    #: is ``bulk_requests``.
    searches: dict[str, int] = field(default_factory=dict)
    #: Threads read by search per way and kind; their sum is ``bulk_threads``.
    searched_threads: dict[str, int] = field(default_factory=dict)

    def by_way(self) -> str:
        """How threads were read, for the run's summary line."""
        parts = [f"{name} {n} searches" for name, n in sorted(self.searches.items())]
        parts += [f"{name} {n} threads" for name, n in sorted(self.searched_threads.items())]
        parts += [f"{name} lists {n}" for name, n in sorted(self.list_requests.items())]
        return ", ".join(parts) or "none"


def _never(exc: Exception) -> bool:
    return False


class ThreadPlanner:
    """Fetch the whole threads of batches of conversations, by the cheaper plan.

    ``kinds`` are what each thread is read for; one may be dropped between batches
    (a key that lacks a role). Messages and notes can be read in bulk; attachments and
    events only per conversation, attachments only where the messages name some. With
    a ``pool`` and ``workers`` > 1, the bulk reads run side by side and up to
    ``workers`` lists at a time, so the caller sizes the pool ``workers + 2``; without
    a pool everything runs in the caller's thread. Tasks never submit tasks, so a
    smaller pool only slows the work, never deadlocks it.
    """

    def __init__(
        self,
        request_json: RequestJson,
        search: SearchFunction | None = None,
        *,
        kinds: t.Sequence[ThreadKind] = (MESSAGES, NOTES),
        pool: Executor | None = None,
        workers: int = 1,
        strategy: str = "auto",
        is_not_found: t.Callable[[Exception], bool] = _never,
        logger: logging.Logger | None = None,
    ) -> None:
        """Bind the request functions, what to fetch, and where to run the work."""
        if strategy not in STRATEGIES:
            msg = f"thread_strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}"
            raise ValueError(msg)
        self.request_json = request_json
        self.search = search
        self.wanted = {kind.name for kind in kinds}
        self.pool = pool
        self.workers = max(1, workers)
        self.strategy = strategy if search is not None else "per_conversation"
        self.is_not_found = is_not_found
        self.logger = logger or logging.getLogger(__name__)
        self.stats = ThreadStats()
        self._lock = threading.Lock()
        self._listers = {
            kind.list_suffix: ThreadLister(self._counted_request(kind.name)) for kind in ALL_KINDS
        }
        self._batchers: dict[str, IdBatchReader] = {}
        if self.strategy in ("auto", "batched"):
            for kind in ALL_KINDS:
                if kind.name in ID_SEARCHES:
                    self._batchers[kind.name] = IdBatchReader(
                        kind,
                        self._counted_search(BY_ID, kind.name),
                        strategy=self.strategy,
                        logger=self.logger,
                    )
        self._readers: dict[str, BulkReader] = {}
        if self.strategy in ("auto", "bulk"):
            for kind in ALL_KINDS:
                if kind.query_context is not None:
                    batcher = self._batchers.get(kind.name)
                    self._readers[kind.name] = BulkReader(
                        kind,
                        self._counted_search(WINDOW, kind.name),
                        strategy=self.strategy,
                        alternative=batcher.estimate if batcher is not None else None,
                    )

    def kinds(self) -> list[ThreadKind]:
        """What this run reads of each thread, in reading order."""
        return [kind for kind in ALL_KINDS if kind.name in self.wanted]

    def reads(self, kind_name: str) -> bool:
        """Whether threads are still read for this kind."""
        return kind_name in self.wanted

    def drop(self, kind_name: str) -> None:
        """Stop reading one kind (its stream may not be read with this key)."""
        self.wanted.discard(kind_name)

    def fetch(self, conversations: t.Sequence[Conversation]) -> dict[str, Thread]:
        """The whole thread of every conversation in the batch, keyed by conversation id."""
        return {conversation_id(c): thread for c, thread in self.threads(conversations)}

    def threads(
        self,
        conversations: t.Sequence[C],
        upcoming: t.Sequence[Conversation] = (),
    ) -> t.Iterator[tuple[C, Thread]]:
        """Each conversation of the batch with its whole thread, in the batch's order.

        ``upcoming`` are the conversations of the next batches, if already known: the
        bulk read keeps their items as it passes them. Threads left to the lister are
        fetched a chunk of conversations at a time, so memory holds one chunk's
        threads, not the whole batch's.
        """
        threads = {conversation_id(c): Thread() for c in conversations}
        self.stats.conversations += len(conversations)
        kinds = self.kinds()
        searched = [kind for kind in kinds if self._searchable(kind)]
        side_by_side = len(searched) > 1 and self.workers > 1
        plans = self._run(
            lambda kind: self._plan(kind, conversations, upcoming),
            kinds,
            limit=len(searched) if side_by_side else 1,
        )
        pending: dict[str, list[ThreadKind]] = {}
        # Attachments are listed once the messages are known (they may name none).
        known_messages: set[str] = set() if self.reads(MESSAGES.name) else set(threads)
        for kind, (accepted, leftover) in zip(kinds, plans, strict=True):
            for cid, items in accepted.items():
                setattr(threads[cid], kind.name, items)
                if kind is MESSAGES:
                    known_messages.add(cid)
            for cid in leftover:
                pending.setdefault(cid, []).append(kind)
        for offset in range(0, len(conversations), PER_CONVERSATION_CHUNK):
            chunk = conversations[offset : offset + PER_CONVERSATION_CHUNK]
            jobs = [
                (conversation_id(c), kind)
                for c in chunk
                for kind in pending.get(conversation_id(c), [])
                if kind is not ATTACHMENTS or conversation_id(c) in known_messages
            ]
            self._list_each(jobs, threads, pending)
            later = [
                (conversation_id(c), ATTACHMENTS)
                for c in chunk
                if ATTACHMENTS in pending.get(conversation_id(c), [])
                and conversation_id(c) not in known_messages
            ]
            self._list_each(later, threads, pending)
            for conversation in chunk:
                pending.pop(conversation_id(conversation), None)
                yield conversation, threads.pop(conversation_id(conversation))

    def _needs_attachments(self, thread: Thread) -> bool:
        """Whether a conversation's attachments must be listed, given its messages.

        Without messages read, or with messages that do not say, the list is asked.
        """
        if not self.reads(MESSAGES.name):
            return True
        return attachments_said(thread.messages) is not False

    def _plan(
        self,
        kind: ThreadKind,
        conversations: t.Sequence[Conversation],
        upcoming: t.Sequence[Conversation],
    ) -> tuple[dict[str, list[str]], list[str]]:
        """The threads of ``kind`` read by search, and the conversations left to list.

        The window read goes first (it also holds the upcoming conversations' items),
        the search by id takes what it left. A conversation without messages has no
        attachments either.
        """
        counted = MESSAGES if kind is ATTACHMENTS else kind
        skipped = sum(1 for c in conversations if count_of(c, counted) == 0)
        with self._lock:
            self.stats.skipped_empty += skipped
        needed = needing(conversations, counted)
        accepted: dict[str, list[str]] = {}
        leftover = list(needed)
        reader = self._readers.get(kind.name)
        if reader is not None and leftover:
            result = reader.read(conversations, upcoming)
            self._count_threads(WINDOW, kind, result)
            accepted.update(result.accepted)
            leftover = result.leftover
        batcher = self._batchers.get(kind.name)
        if batcher is not None and leftover:
            result = batcher.read([needed[cid] for cid in leftover])
            self._count_threads(BY_ID, kind, result)
            accepted.update(result.accepted)
            leftover = result.leftover
        return accepted, leftover

    def _searchable(self, kind: ThreadKind) -> bool:
        """Whether this run reads some of ``kind``'s threads by search."""
        return kind.name in self._readers or kind.name in self._batchers

    def _count_threads(self, way: str, kind: ThreadKind, result: BulkRead) -> None:
        """Record the threads one way of searching read."""
        name = f"{way} {kind.name}"
        with self._lock:
            self.stats.bulk_threads += len(result.accepted)
            if result.accepted:
                counted = self.stats.searched_threads.get(name, 0) + len(result.accepted)
                self.stats.searched_threads[name] = counted

    def _list_each(
        self,
        jobs: list[tuple[str, ThreadKind]],
        threads: dict[str, Thread],
        pending: dict[str, list[ThreadKind]],
    ) -> None:
        """List the threads of ``jobs`` and put them in ``threads``; gone ones emptied.

        An attachments job whose conversation's messages name no attachment is dropped
        before it costs a request.
        """
        jobs = [job for job in jobs if self._still_needed(job, threads)]
        results = self._run(self._list_one, jobs, limit=self.workers)
        gone = set()
        for (cid, kind), items in zip(jobs, results, strict=True):
            if items is None:
                gone.add(cid)
                continue
            setattr(threads[cid], kind.name, items)
            self.stats.per_conversation_threads += 1
        for cid in gone:
            threads[cid] = Thread()
            pending.pop(cid, None)
            self.stats.gone += 1
            self.logger.warning(
                "Conversation %s was deleted before its thread could be read; "
                "emitting it without its thread",
                cid,
            )

    def _still_needed(self, job: tuple[str, ThreadKind], threads: dict[str, Thread]) -> bool:
        cid, kind = job
        if kind is not ATTACHMENTS or self._needs_attachments(threads[cid]):
            return True
        self.stats.skipped_no_attachments += 1
        return False

    def _list_one(self, job: tuple[str, ThreadKind]) -> list[dict[str, t.Any]] | None:
        """One thread from its own list; None if its conversation no longer exists."""
        cid, kind = job
        try:
            return self._listers[kind.list_suffix].thread(cid, kind)
        except Exception as exc:
            if self.is_not_found(exc):
                return None
            raise

    def _run(self, task: t.Callable[[A], R], items: t.Sequence[A], *, limit: int) -> list[R]:
        """``task`` over ``items``, at most ``limit`` at a time on the pool; in order.

        Serial (in this thread) without a pool, with a limit of 1, or for one item.
        On a failure no further item starts, those running are awaited (they share
        state with what comes next), and the failure of the earliest item is raised.
        """
        if self.pool is None or limit <= 1 or len(items) <= 1:
            return [task(item) for item in items]
        results: dict[int, R] = {}
        errors: dict[int, BaseException] = {}
        running: dict[Future[R], int] = {}
        submitted = 0
        while running or (submitted < len(items) and not errors):
            while not errors and submitted < len(items) and len(running) < limit:
                running[self.pool.submit(task, items[submitted])] = submitted
                submitted += 1
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                error = future.exception()
                if error is not None:
                    errors[index] = error
                else:
                    results[index] = future.result()
        if errors:
            raise errors[min(errors)]
        return [results[index] for index in range(len(items))]

    def _counted_request(self, kind_name: str) -> RequestJson:
        """``request_json`` counting each request, in total and for ``kind_name``."""

        def request(
            method: str, path: str, params: t.Mapping[str, t.Any] | None = None
        ) -> t.Mapping[str, t.Any]:
            body = self.request_json(method, path, params=params)
            with self._lock:
                self.stats.requests += 1
                self.stats.list_requests[kind_name] = self.stats.list_requests.get(kind_name, 0) + 1
            return body

        return request

    def _counted_search(self, way: str, kind_name: str) -> SearchFunction:
        """``search`` counting each request, in total and for ``way`` and ``kind_name``."""
        name = f"{way} {kind_name}"

        def search(body: dict[str, t.Any], page: int, size: int) -> dict[str, t.Any]:
            assert self.search is not None
            with self._lock:
                self.stats.requests += 1
                self.stats.bulk_requests += 1
                self.stats.searches[name] = self.stats.searches.get(name, 0) + 1
            return self.search(body, page, size)

        return search
