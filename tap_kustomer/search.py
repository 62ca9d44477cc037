"""The search walk: every record of a time window, in ascending order, exactly once.

Kustomer's search serves at most 10,000 results per query, offers ``links.next`` past
that cap, and re-sorts while data changes. So the walk never pages by number through a
moving result set. It asks for the *first* page of ``key >= cursor`` again and again,
moving the cursor to the last key it saw (keyset pagination):

- the cap is never reached, because every query starts at page 1;
- a record that moves (reopened, re-resolved, retagged) cannot shift others out of a
  page, because no page is addressed by its position;
- a run of records sharing one key value longer than a page is walked by the next key
  (e.g. creation time) inside that value, and only when every key ties is the tie
  group read by page number, under the cap, until two reads agree.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from tap_kustomer.errors import SearchCapError, UnexpectedResponseError

SEARCH_PAGE_SIZE = 500
SEARCH_RESULT_CAP = 10_000
_MAX_TIE_READS = 6

SearchFunction = t.Callable[[dict[str, t.Any], int, int], dict[str, t.Any]]
"""Run one search: (body, page, page_size) -> the JSON response."""

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_timestamp(value: t.Any) -> datetime | None:
    """Parse Kustomer's ISO timestamps (any fraction length, ``Z`` or offset) to UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    match = _ISO.match(str(value).strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    stamp = datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        micro,
        tzinfo=timezone.utc,
    )
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset_minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        stamp -= timedelta(minutes=offset_minutes)
    return stamp


def format_timestamp(value: datetime) -> str:
    """Render a UTC timestamp the way Kustomer does: milliseconds and ``Z``."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def settled_end(config: t.Mapping[str, t.Any], server_time: float) -> datetime:
    """The newest time a run may read: the server's now less the lag, at most end_date.

    Kustomer indexes (and publishes) changes late; reading only what is older than the
    lag means a record that arrives late still lands after the bookmark, for the next run.
    """
    lag = timedelta(minutes=float(config.get("index_lag_minutes", 15)))
    end = datetime.fromtimestamp(server_time, tz=timezone.utc) - lag
    end_date = parse_timestamp(config.get("end_date"))
    return min(end, end_date) if end_date else end


@dataclass(frozen=True)
class WalkKey:
    """One ordering key: its search field and where its value sits in a record."""

    search_field: str
    attribute_path: tuple[str, ...]

    def value(self, record: dict[str, t.Any]) -> datetime | None:
        """The record's value for this key, as a UTC datetime."""
        node: t.Any = record.get("attributes") or {}
        for part in self.attribute_path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return parse_timestamp(node)


@dataclass
class WalkStats:
    """What one walk cost, for logs and tests."""

    requests: int = 0
    records: int = 0
    tie_groups: int = 0
    tie_reads: int = 0
    #: ``meta.total`` of the first query: what the whole walk will roughly cost.
    first_total: int | None = None


@dataclass
class SearchWalk:
    """Walk one search query through a time window by keyset pagination.

    ``pages()`` yields lists of records, each list in ascending key order and every
    record at or after the previous list's last key. A record is yielded once per walk
    unless it moved (its key changed) while the walk ran, in which case it may come
    again with its new values, which is safe for upserting targets.
    """

    search: SearchFunction
    query_context: str
    criteria: list[dict[str, t.Any]]
    keys: t.Sequence[WalkKey]
    lower: datetime | None = None
    upper: datetime | None = None
    page_size: int = SEARCH_PAGE_SIZE
    cap: int = SEARCH_RESULT_CAP
    stats: WalkStats = field(default_factory=WalkStats)

    def pages(self) -> t.Iterator[list[dict[str, t.Any]]]:
        """Yield the window's records, page by page, in ascending key order."""
        bounds: list[dict[str, t.Any]] = []
        primary = self.keys[0].search_field
        if self.upper is not None:
            bounds.append({primary: {"lte": format_timestamp(self.upper)}})
        yield from self._walk(self.criteria + bounds, list(self.keys), self.lower, set())

    # The walk proper.

    def _query(
        self, criteria: list[dict[str, t.Any]], keys: list[WalkKey], page: int = 1
    ) -> tuple[list[dict[str, t.Any]], int | None]:
        body = {
            "queryContext": self.query_context,
            "and": criteria,
            "sort": [{key.search_field: "asc"} for key in (keys or self.keys[:1])],
        }
        payload = self.search(body, page, self.page_size)
        self.stats.requests += 1
        data = payload.get("data")
        if not isinstance(data, list):
            msg = "search response has no 'data' list"
            raise UnexpectedResponseError(msg)
        meta = payload.get("meta") or {}
        total = meta.get("total") if isinstance(meta, dict) else None
        total = total if isinstance(total, int) else None
        if self.stats.requests == 1:
            self.stats.first_total = total
        return data, total

    def _walk(
        self,
        criteria: list[dict[str, t.Any]],
        keys: list[WalkKey],
        lower: datetime | None,
        exclude: set[str],
    ) -> t.Iterator[list[dict[str, t.Any]]]:
        """Keyset-walk ``criteria`` by ``keys[0]``, skipping ids in ``exclude``."""
        if not keys:
            yield from self._read_tie_group(criteria, exclude)
            return
        key = keys[0]
        cursor, inclusive = lower, True
        seen_at_cursor: set[str] = set()
        while True:
            window = list(criteria)
            if cursor is not None:
                op = "gte" if inclusive else "gt"
                window.append({key.search_field: {op: format_timestamp(cursor)}})
            records, total = self._query(window, keys)
            if not records:
                return
            keyed = [(self._value(key, r), r) for r in records]
            keyed.sort(key=lambda pair: pair[0])
            first_value, last_value = keyed[0][0], keyed[-1][0]
            more = total is None or total > len(records)
            if first_value == last_value and more:
                # One key value fills the page: walk inside it by the next key.
                self.stats.tie_groups += 1
                stamp = format_timestamp(last_value)
                tie = [*criteria, {key.search_field: {"gte": stamp, "lte": stamp}}]
                carried = seen_at_cursor if cursor == last_value else set()
                yield from self._walk(tie, keys[1:], None, exclude | carried)
                cursor, inclusive, seen_at_cursor = last_value, False, set()
                continue
            fresh = [r for _, r in keyed if _id(r) not in seen_at_cursor and _id(r) not in exclude]
            if fresh:
                self.stats.records += len(fresh)
                yield fresh
            if not more:
                return
            at_last = {_id(r) for value, r in keyed if value == last_value}
            if last_value == cursor:
                at_last |= seen_at_cursor
            cursor, inclusive, seen_at_cursor = last_value, True, at_last

    def _value(self, key: WalkKey, record: dict[str, t.Any]) -> datetime:
        value = key.value(record)
        if value is None:
            msg = (
                f"search for {self.query_context} records returned {_id(record)!r} "
                f"without a readable {'.'.join(key.attribute_path)}"
            )
            raise UnexpectedResponseError(msg)
        return value

    def _read_tie_group(
        self, criteria: list[dict[str, t.Any]], exclude: set[str]
    ) -> t.Iterator[list[dict[str, t.Any]]]:
        """Read a group tied on every key by page number until one read is consistent.

        A read is consistent when every page reported the same total and the read saw
        that many distinct ids: nothing moved, so nothing was skipped.
        """
        yielded = set(exclude)
        for _ in range(_MAX_TIE_READS):
            self.stats.tie_reads += 1
            page = 1
            totals: set[int] = set()
            read_ids: set[str] = set()
            while True:
                records, total = self._query(criteria, [], page)
                if total is not None:
                    totals.add(total)
                    if total > self.cap:
                        msg = (
                            f"{total} {self.query_context} records share every walk key "
                            f"({', '.join(k.search_field for k in self.keys)}) but one "
                            f"search returns at most {self.cap}"
                        )
                        raise SearchCapError(msg)
                read_ids.update(_id(r) for r in records)
                fresh = [r for r in records if _id(r) not in yielded]
                if fresh:
                    yielded.update(_id(r) for r in fresh)
                    self.stats.records += len(fresh)
                    yield fresh
                if not records or (total is not None and page * self.page_size >= total):
                    break
                page += 1
            if len(totals) <= 1 and len(read_ids) >= max(totals, default=0):
                return
        msg = (
            f"{self.query_context} records tied on every walk key kept changing over "
            f"{_MAX_TIE_READS} reads"
        )
        raise SearchCapError(msg)


def _id(record: dict[str, t.Any]) -> str:
    return str(record.get("id"))
