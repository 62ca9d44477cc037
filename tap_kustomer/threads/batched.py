"""The id-batched reader: the threads of known conversations through a few searches.

For a set of known conversations (a small incremental run, a batch of webhooks) one
search reads the threads of up to :data:`GROUP_KEYS` of them, ``or`` over their ids:

- notes by ``note_conversation_id``;
- messages by ``message_customer_id`` (search has no conversation id for messages),
  from the earliest creation of the group's conversations on; the customers' other
  messages come along and are dropped.

Pages are read by number, oldest first, until every thread of the group is whole. A
group whose search turns out dearer than listing what is still missing (a customer
with many other messages) stops there. As in the bulk read, a thread is accepted only
when the items found number exactly the conversation's count; any other is left over,
for the lister.
"""

from __future__ import annotations

import json
import logging
import math
import typing as t
from dataclasses import dataclass, field
from datetime import datetime

from tap_kustomer.errors import BadRequestError, PermissionDeniedError, UnexpectedResponseError
from tap_kustomer.search import SEARCH_PAGE_SIZE, SearchFunction, format_timestamp
from tap_kustomer.threads import cost
from tap_kustomer.threads.bulk import BulkRead
from tap_kustomer.threads.kinds import (
    MESSAGES,
    NOTES,
    Conversation,
    ThreadKind,
    conversation_id,
    conversation_of,
    count_of,
    created_of,
    customer_of,
    needing,
)

#: Criteria in one ``or`` list: the API takes at most 20.
GROUP_KEYS = 20
#: Pages one group's search may read; a group expected to need more is listed.
MAX_GROUP_PAGES = 4


@dataclass(frozen=True)
class IdSearch:
    """How one kind is searched by id: the id field, its creation field, what ids name."""

    id_field: str
    created_field: str
    by_customer: bool

    def key_of(self, conversation: Conversation) -> str | None:
        """The id this conversation's items are searched by (None: it cannot be)."""
        return customer_of(conversation) if self.by_customer else conversation_id(conversation)


ID_SEARCHES: dict[str, IdSearch] = {
    MESSAGES.name: IdSearch("message_customer_id", "message_created_at", by_customer=True),
    NOTES.name: IdSearch("note_conversation_id", "note_created_at", by_customer=False),
}


@dataclass
class Group:
    """Ids searched together, and the conversations (and item counts) they stand for."""

    keys: list[str] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)
    created: list[datetime | None] = field(default_factory=list)

    def add(self, key: str, conversations: t.Sequence[Conversation], kind: ThreadKind) -> None:
        """Search ``key`` too, for these conversations (each with a known count)."""
        self.keys.append(key)
        for conversation in conversations:
            self.expected[conversation_id(conversation)] = count_of(conversation, kind) or 0
            spans = cost.lifetimes([conversation])
            self.created.append(next(iter(spans.values()))[0] if spans else None)

    def items(self) -> int:
        """Items its threads hold in all."""
        return sum(self.expected.values())

    def since(self) -> datetime | None:
        """The earliest creation of its conversations; None when one is unknown."""
        if not self.created or any(c is None for c in self.created):
            return None
        return min(c for c in self.created if c is not None)

    def list_cost(self, cids: t.Iterable[str] | None = None) -> int:
        """Requests to list these threads (all of the group's by default) one by one."""
        chosen = self.expected if cids is None else cids
        return cost.list_cost(self.expected[cid] for cid in chosen)


class IdBatchReader:
    """Read one kind's threads of known conversations by searching their ids in groups.

    One reader lives for the run (it learns how many other messages customers have);
    it is not thread-safe, but each kind has its own. ``auto`` searches a group only
    when that is estimated cheaper than listing its threads; ``batched`` searches every
    group within the page limit.
    """

    def __init__(
        self,
        kind: ThreadKind,
        search: SearchFunction,
        *,
        strategy: str = "auto",
        page_size: int = SEARCH_PAGE_SIZE,
        logger: logging.Logger | None = None,
    ) -> None:
        """Read ``kind`` (messages or notes) through ``search``."""
        if kind.name not in ID_SEARCHES or kind.query_context is None:
            msg = f"{kind.name} cannot be searched by id, only listed per conversation"
            raise ValueError(msg)
        self.kind = kind
        self.context: str = kind.query_context
        self.how = ID_SEARCHES[kind.name]
        self.search = search
        self.strategy = strategy
        self.page_size = page_size
        self.logger = logger or logging.getLogger(__name__)
        self.spill = cost.Spill()
        #: Set when the API refused such a search: the rest of the run lists instead.
        self.refused = False

    def estimate(self, conversations: t.Sequence[Conversation]) -> int:
        """What reading these threads without a window search costs, in list requests.

        The cheaper of search and lists for each group, lists for the rest: what a
        bulk window read would spare.
        """
        groups, rest = self._groups(conversations)
        listed = cost.list_cost(count_of(c, self.kind) for c in rest)
        return listed + sum(min(self._search_cost(g), g.list_cost()) for g in groups)

    def read(self, conversations: t.Sequence[Conversation]) -> BulkRead:
        """The threads of ``conversations`` its searches complete, and the ids left."""
        groups, rest = self._groups(conversations)
        leftover = [conversation_id(c) for c in rest]
        accepted: dict[str, list[str]] = {}
        for group in groups:
            if self.refused or (
                self.strategy == "auto" and self._search_cost(group) >= group.list_cost()
            ):
                leftover.extend(group.expected)
                continue
            found = self._read_group(group)
            for cid, expected in group.expected.items():
                items = found.get(cid, {})
                if len(items) == expected:
                    accepted[cid] = [text for _, text in sorted(items.values())]
                else:
                    leftover.append(cid)
        return BulkRead(accepted, leftover)

    def _groups(
        self, conversations: t.Sequence[Conversation]
    ) -> tuple[list[Group], list[Conversation]]:
        """The search groups of the conversations that may have items, and the rest.

        The rest cannot be searched by id: no count to check against, no customer, or
        a thread (or a customer's threads) longer than a group may read.
        """
        limit = MAX_GROUP_PAGES * self.page_size
        by_key: dict[str, list[Conversation]] = {}
        rest: list[Conversation] = []
        for conversation in needing(conversations, self.kind).values():
            key = self.how.key_of(conversation)
            if key is None or count_of(conversation, self.kind) is None:
                rest.append(conversation)
            else:
                by_key.setdefault(key, []).append(conversation)
        groups: list[Group] = []
        current = Group()
        for key, members in by_key.items():
            items = sum(count_of(c, self.kind) or 0 for c in members)
            if items > limit:
                rest.extend(members)
                continue
            if len(current.keys) == GROUP_KEYS or current.items() + items > limit:
                groups.append(current)
                current = Group()
            current.add(key, members, self.kind)
        if current.keys:
            groups.append(current)
        return groups, rest

    def _search_cost(self, group: Group) -> int:
        """The estimated cost of searching a group, in list requests."""
        ratio = self.spill.ratio() if self.how.by_customer else 1.0
        pages = max(1, math.ceil(group.items() * ratio / self.page_size))
        if pages > MAX_GROUP_PAGES:
            return cost.search_cost(MAX_GROUP_PAGES) + group.list_cost()
        return cost.search_cost(pages)

    def _body(self, group: Group) -> dict[str, t.Any]:
        """The search for a group: any of its ids, oldest first."""
        body: dict[str, t.Any] = {
            "queryContext": self.context,
            "or": [{self.how.id_field: {"equals": key}} for key in group.keys],
            "sort": [{self.how.created_field: "asc"}],
        }
        since = group.since()
        if self.how.by_customer and since is not None:
            body["and"] = [{self.how.created_field: {"gte": format_timestamp(since)}}]
        return body

    def _read_group(self, group: Group) -> dict[str, dict[str, tuple[str, str]]]:
        """The items of the group's conversations found by its search, by conversation.

        Stops once every thread has its count, at the last page, at the page limit,
        or (in auto) when the pages still to read cost more than listing the threads
        still missing.
        """
        body = self._body(group)
        found: dict[str, dict[str, tuple[str, str]]] = {cid: {} for cid in group.expected}
        page, read, total = 1, 0, None
        while True:
            try:
                payload = self.search(body, page, self.page_size)
            except (BadRequestError, PermissionDeniedError) as error:
                # A key without the search role still reads every thread, by lists.
                self._refuse(error)
                return found
            data = payload.get("data")
            if not isinstance(data, list):
                msg = f"search for {self.context} records by id has no 'data' list"
                raise UnexpectedResponseError(msg)
            meta = payload.get("meta")
            meta = meta if isinstance(meta, dict) else {}
            if page == 1 and isinstance(meta.get("total"), int):
                total = meta["total"]
            read += len(data)
            self._hold(data, found)
            missing = [cid for cid, n in group.expected.items() if len(found[cid]) < n]
            pages = self._pages(meta, total, len(data))
            if not missing or not data or (pages is not None and page >= pages):
                break
            if page >= MAX_GROUP_PAGES or (
                self.strategy == "auto"
                and pages is not None
                and cost.search_cost(pages - page) >= group.list_cost(missing)
            ):
                break
            page += 1
        if self.how.by_customer:
            self.spill.observe(total if total is not None else read, group.items())
        return found

    def _pages(self, meta: t.Mapping[str, t.Any], total: int | None, got: int) -> int | None:
        """How many pages the whole search has, if the answer says."""
        if isinstance(meta.get("totalPages"), int):
            return int(meta["totalPages"])
        size = meta.get("pageSize") if isinstance(meta.get("pageSize"), int) else got
        if total is None or not size:
            return None
        return math.ceil(total / size)

    @staticmethod
    def _hold(data: list[t.Any], found: dict[str, dict[str, tuple[str, str]]]) -> None:
        """Keep the items of the group's conversations, once each, as compact JSON."""
        for item in data:
            if not isinstance(item, dict):
                continue
            cid = conversation_of(item)
            if cid is not None and cid in found:
                found[cid][str(item.get("id"))] = (
                    created_of(item),
                    json.dumps(item, separators=(",", ":")),
                )

    def _refuse(self, error: BadRequestError | PermissionDeniedError) -> None:
        """The API refused a search by id: list for the rest of the run."""
        self.refused = True
        self.logger.warning(
            "Kustomer refused a %s search by %s (%s); listing those threads per "
            "conversation for the rest of the run",
            self.context,
            self.how.id_field,
            error,
        )
