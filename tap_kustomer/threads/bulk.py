"""The bulk reader: one kind's items (messages or notes) read through search.

The read is continuous across batches: it moves forward through creation time and
holds, besides the batch's own items, those of the conversations of the next few
batches (the walk reads them ahead). A thread that began batches before its
conversation was resolved is then read once, not once per batch whose window it
overlaps. A conversation created before the read began to hold its items gets a
catch-up window.

A thread is accepted only when the items held for it number exactly the
conversation's own count; any other thread is left over, for the lister.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass, field
from datetime import datetime

from tap_kustomer.search import SearchFunction, SearchWalk, WalkKey
from tap_kustomer.threads import cost
from tap_kustomer.threads.kinds import (
    Conversation,
    ThreadKind,
    conversation_id,
    conversation_of,
    count_of,
    created_of,
    needing,
)


@dataclass
class Coverage:
    """How far the continuous read of one kind has gone, and what it holds.

    Items created from ``start`` to ``end`` have been read; of those, the items of the
    watched conversations are held. A conversation watched since some ``end`` (its
    ``since``) holds its items created after that; ``None``: since ``start``.
    """

    start: datetime | None = None
    end: datetime | None = None
    since: dict[str, datetime | None] = field(default_factory=dict)
    #: Per conversation, item id -> (creation time, compact JSON text).
    held: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def watch(self, cid: str) -> None:
        """Keep this conversation's items from now on."""
        if cid not in self.since:
            self.since[cid] = self.end
            self.held[cid] = {}

    def forget(self, cid: str) -> None:
        """Its thread was taken or written: stop keeping its items."""
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


Alternative = t.Callable[[t.Sequence[Conversation]], int]
"""What reading some conversations' threads without the bulk read costs, in list requests."""


@dataclass(frozen=True)
class BulkRead:
    """What the bulk read made of a batch.

    ``accepted`` holds each whole thread read in bulk (its items as compact JSON text,
    in creation order); ``leftover`` the ids, in batch order, still to be listed.
    """

    accepted: dict[str, list[str]]
    leftover: list[str]


class BulkReader:
    """The continuous bulk read of one kind, batch after batch.

    One reader lives for the run; it is not thread-safe, but each kind has its own,
    so the planner may run the two kinds' readers side by side.
    """

    def __init__(
        self,
        kind: ThreadKind,
        search: SearchFunction,
        *,
        strategy: str = "auto",
        alternative: Alternative | None = None,
    ) -> None:
        """Read ``kind`` through ``search``; ``auto`` reads in bulk only when it pays.

        ``alternative`` prices reading some threads another way, in list requests (by
        default, listing each): what a bulk read is weighed against.
        """
        if kind.query_context is None:
            msg = f"{kind.name} cannot be searched, only listed per conversation"
            raise ValueError(msg)
        self.kind = kind
        self.context: str = kind.query_context
        self.search = search
        self.strategy = strategy
        self.alternative = alternative or self._listed
        self.coverage = Coverage()
        self.density = cost.Density()

    def read(
        self, batch: t.Sequence[Conversation], upcoming: t.Sequence[Conversation] = ()
    ) -> BulkRead:
        """The threads of ``batch`` the bulk read completes, and the conversations left.

        ``upcoming`` are the conversations of the next batches: their items are held
        as the read passes them. The inputs are not changed; whatever the outcome,
        the batch's conversations are no longer watched afterwards.
        """
        pending = dict(needing(batch, self.kind))
        accepted: dict[str, list[str]] = {}
        if not pending:
            return BulkRead(accepted, [])
        try:
            self._read_batch(pending, upcoming, accepted)
        finally:
            for conversation in batch:
                self.coverage.forget(conversation_id(conversation))
        return BulkRead(accepted, list(pending))

    def _read_batch(
        self,
        pending: dict[str, Conversation],
        upcoming: t.Sequence[Conversation],
        accepted: dict[str, list[str]],
    ) -> None:
        """Move the continuous read to the batch's end, then catch up what it passed.

        ``pending`` (this call's own working copy) loses each thread moved into
        ``accepted``.
        """
        kind, coverage = self.kind, self.coverage
        later = {
            conversation_id(c): c
            for c in upcoming
            if count_of(c, kind) != 0 and conversation_id(c) not in pending
        }
        for cid in [*pending, *later]:
            coverage.watch(cid)
        self._take(pending, accepted)
        spans = cost.lifetimes(pending.values())
        if not spans:
            return
        per_conversation = {cid: cost.pages_for(count_of(c, kind)) for cid, c in pending.items()}
        window = cost.choose_window(spans, per_conversation, self.density.rate())
        benefit = self.alternative(
            [pending[cid] for cid in window.inside if cid in pending] + list(later.values())
        )
        if self.strategy == "auto" and not cost.saves_enough(benefit):
            return
        if coverage.end is None or (
            window.start > coverage.end
            and cost.skip_pays(
                self.density.rate(),
                coverage.end,
                window.start,
                cost.lifetimes(later.values()).values(),
            )
        ):
            coverage.restart(window.start)
        assert coverage.end is not None
        if window.end > coverage.end:
            if self._search(coverage.end, window.end, set(coverage.since), benefit):
                coverage.end = window.end
            else:
                coverage.restart(None)
        self._take(pending, accepted)
        self._catch_up(pending, spans, per_conversation, accepted)

    def _catch_up(
        self,
        pending: dict[str, Conversation],
        spans: t.Mapping[str, cost.Span],
        per_conversation: t.Mapping[str, int],
        accepted: dict[str, list[str]],
    ) -> None:
        """One window for the conversations created before the read began to keep them."""
        gaps: dict[str, cost.Span] = {}
        for cid in pending:
            if cid not in spans:
                continue
            created = spans[cid][0]
            covered = self.coverage.covered_from(cid)
            if covered is not None and created < covered:
                gaps[cid] = (created, covered)
        if not gaps:
            return
        window = cost.choose_window(gaps, per_conversation, self.density.rate())
        benefit = self.alternative([pending[cid] for cid in window.inside if cid in pending])
        if self.strategy == "auto" and not cost.saves_enough(benefit):
            return
        self._search(window.start, window.end, set(window.inside), benefit)
        self._take(pending, accepted)

    def _search(self, start: datetime, end: datetime, keep: set[str], benefit: int) -> bool:
        """Search the items created from ``start`` to ``end``; hold those of ``keep``.

        In auto, a read whose first page shows it costs at least ``benefit`` (what it
        saves) stops there; returns whether the whole window was read.
        """
        walk = SearchWalk(
            search=self.search,
            query_context=self.context,
            criteria=[],
            keys=[
                WalkKey(f"{self.context}_created_at", ("createdAt",)),
                WalkKey(f"{self.context}_updated_at", ("updatedAt",)),
            ],
            lower=start,
            upper=end,
        )
        held = self.coverage.held
        read = 0
        for page in walk.pages():
            for item in page:
                cid = conversation_of(item)
                if cid is not None and cid in keep and cid in held:
                    held[cid][str(item.get("id"))] = (
                        created_of(item),
                        json.dumps(item, separators=(",", ":")),
                    )
            read += len(page)
            if (
                self.strategy == "auto"
                and walk.stats.requests == 1
                and cost.dearer_than_lists(walk.stats.first_total or read, benefit)
            ):
                return False  # Dearer than per conversation: keep what this page held.
        self.density.observe(walk.stats.first_total or read, (end - start).total_seconds())
        return True

    def _listed(self, conversations: t.Sequence[Conversation]) -> int:
        """Requests to list these threads one conversation at a time."""
        return cost.list_cost(count_of(c, self.kind) for c in conversations)

    def _take(self, pending: dict[str, Conversation], accepted: dict[str, list[str]]) -> None:
        """Move every pending thread whose held items match its count into ``accepted``."""
        for cid in list(pending):
            items = self.coverage.held.get(cid)
            expected = count_of(pending[cid], self.kind)
            if items and expected is not None and len(items) == expected:
                accepted[cid] = [text for _, text in sorted(items.values())]
                del pending[cid]
                self.coverage.forget(cid)
