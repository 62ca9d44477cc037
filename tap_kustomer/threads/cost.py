"""The cost model: how many requests each way of reading a batch's threads would take.

Everything here is a pure function of the batch (lifetimes and counts) and of the
item density learnt so far, so the choice between per-conversation lists and a bulk
search can be tested on a handful of hand-made conversations.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta

from tap_kustomer.search import SEARCH_PAGE_SIZE, parse_timestamp
from tap_kustomer.threads.kinds import LIFETIME_ATTRIBUTES, Conversation, conversation_id

#: Items per page of a per-conversation list.
THREAD_PAGE_SIZE = 100
#: What one search costs, in list requests. Searches have their own budget, a tenth of
#: the org's (100 a minute against 1,000) and shared with the conversations walk, so a
#: search is spent only where it spares a few lists, never to spare one or two.
SEARCH_WEIGHT = 3
#: A bulk read is tried only where, done in one search, it would still spare this many
#: list requests more than that search costs.
MIN_BULK_SAVING = 4

Span = tuple[datetime, datetime]
"""When a conversation's items were created: from its creation to its latest activity."""


def pages_for(count: int | None) -> int:
    """Requests to list ``count`` items of one conversation (unknown count: at least 1)."""
    if count is None:
        return 1
    return math.ceil(count / THREAD_PAGE_SIZE)


def lifetimes(conversations: t.Iterable[Conversation]) -> dict[str, Span]:
    """Each conversation's lifetime, by id; those without readable times are left out.

    A bulk search for a conversation's items must cover this span, so it is what
    windows are chosen from.
    """
    spans: dict[str, Span] = {}
    for conversation in conversations:
        attributes = conversation.get("attributes") or {}
        created = parse_timestamp(attributes.get("createdAt"))
        ends = [parse_timestamp(attributes.get(name)) for name in LIFETIME_ATTRIBUTES[1:]]
        ends.append(parse_timestamp((attributes.get("lastDone") or {}).get("createdAt")))
        latest = max((e for e in ends if e is not None), default=None)
        if created is None or latest is None:
            continue
        spans[conversation_id(conversation)] = (created, max(created, latest))
    return spans


class Density:
    """Items created per second, learnt from the bulk searches of this run.

    The first search of a run has no density yet; later windows are priced by it.
    """

    def __init__(self) -> None:
        self.items = 0.0
        self.seconds = 0.0

    def observe(self, items: int, seconds: float) -> None:
        """Add one searched window: ``items`` found over ``seconds``."""
        self.items += items
        self.seconds += max(seconds, 1.0)

    def rate(self) -> float | None:
        """Items per second so far; None before any search."""
        return self.items / self.seconds if self.seconds else None


@dataclass(frozen=True)
class Window:
    """A search window and the conversations whose lifetimes it covers."""

    start: datetime
    end: datetime
    inside: frozenset[str]


def choose_window(
    spans: t.Mapping[str, Span], per_conversation: t.Mapping[str, int], rate: float | None
) -> Window:
    """The search window that minimises the estimated cost of the batch.

    The window always ends after the last lifetime; its start is chosen among the
    lifetimes' starts. Conversations created long before the rest (outliers) would
    stretch the window over months of other conversations' items; they are left out,
    to be listed per conversation (``per_conversation`` requests each, 1 if unknown),
    whenever that is cheaper than searching the stretch. ``rate`` is the learnt
    density; None (the first batch) assumes the batch's own items fill the middle of
    its lifetimes. ``spans`` must not be empty.
    """
    end = max(span[1] for span in spans.values()) + timedelta(milliseconds=1)
    by_start = sorted(spans.items(), key=lambda pair: pair[1][0])
    if rate is None:
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
    inside = frozenset(cid for cid, _ in by_start[index:])
    return Window(by_start[index][1][0], end, inside)


def search_cost(pages: int) -> int:
    """What ``pages`` search requests cost, in list requests."""
    return pages * SEARCH_WEIGHT


def list_cost(counts: t.Iterable[int | None]) -> int:
    """Requests to list threads of these sizes one conversation at a time."""
    return sum(pages_for(count) for count in counts)


def saves_enough(benefit: int) -> bool:
    """Whether a bulk read that spares ``benefit`` (in list requests) is worth trying."""
    return benefit - search_cost(1) >= MIN_BULK_SAVING


def dearer_than_lists(total: int, benefit: int) -> bool:
    """Whether searching ``total`` items costs at least the ``benefit`` it would spare."""
    return search_cost(math.ceil(total / SEARCH_PAGE_SIZE)) >= benefit


class Spill:
    """How many items a search by customer finds per item of the batch's threads.

    A message search by customer also finds the customer's other conversations'
    messages; their share, learnt from this run's searches, prices the next ones.
    Before any search the batch's own messages are assumed to be all there is.
    """

    def __init__(self) -> None:
        self.found = 0
        self.expected = 0

    def observe(self, found: int, expected: int) -> None:
        """Add one search: ``found`` items in all where the batch's threads had ``expected``."""
        self.found += max(found, expected)
        self.expected += expected

    def ratio(self) -> float:
        """Items found per item wanted so far (1.0 before any search)."""
        return self.found / self.expected if self.expected else 1.0


def skip_pays(rate: float | None, end: datetime, start: datetime, later: t.Iterable[Span]) -> bool:
    """Whether jumping the continuous read from ``end`` to ``start`` saves more than it loses.

    The jump saves the searches of the skipped span; it loses the items held for
    upcoming conversations created before ``start`` (``later`` are their lifetimes),
    at most a request each.
    """
    saved = (rate or 0.0) * (start - end).total_seconds() / SEARCH_PAGE_SIZE
    lost = sum(1 for created, _ in later if created < start)
    return saved > lost
