"""The search walk against a small in-memory search that has Kustomer's cap and re-sorts.

These tests pin the walk's algorithm; the scenario tests run it against the sandbox.
"""

from __future__ import annotations

import copy
import functools
import random
from datetime import datetime, timedelta, timezone

import pytest

from tap_kustomer.errors import SearchCapError
from tap_kustomer.search import (
    SearchWalk,
    WalkKey,
    format_timestamp,
    parse_timestamp,
)

BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)
FIELDS = {"done_at": ("doneAt",), "created_at": ("createdAt",), "updated_at": ("updatedAt",)}
KEYS = [WalkKey(name, path) for name, path in FIELDS.items()]


def record(rid: int, done: datetime, created: datetime, updated: datetime) -> dict:
    return {
        "id": f"{rid:024x}",
        "attributes": {
            "doneAt": format_timestamp(done),
            "createdAt": format_timestamp(created),
            "updatedAt": format_timestamp(updated),
        },
    }


_parse = functools.lru_cache(maxsize=None)(parse_timestamp)


class FakeSearch:
    """Filters, multi-key sort, page numbers, and a cap of 10,000 like the real search."""

    def __init__(self, records: list[dict], cap: int = 10_000) -> None:
        self.records = records
        self.cap = cap
        self.calls = 0
        self.before_each_call = None

    def __call__(self, body: dict, page: int, page_size: int) -> dict:
        self.calls += 1
        if self.before_each_call:
            self.before_each_call(self)
        matching = [r for r in self.records if all(self._match(r, c) for c in body["and"])]
        sort_fields = [next(iter(s)) for s in body.get("sort", [])]
        matching.sort(key=lambda r: (*[self._value(r, f) for f in sort_fields], r["id"]))
        start = (page - 1) * page_size
        if start >= self.cap:
            return {"data": [], "meta": {"total": len(matching)}}
        data = copy.deepcopy(matching[start : min(start + page_size, self.cap)])
        return {"data": data, "meta": {"total": len(matching), "page": page}}

    @staticmethod
    def _value(rec: dict, field: str) -> datetime:
        return _parse(rec["attributes"][FIELDS[field][0]])

    def _match(self, rec: dict, criterion: dict) -> bool:
        ((field, ops),) = criterion.items()
        value = self._value(rec, field)
        for op, raw in ops.items():
            bound = _parse(raw)
            if op == "gte" and not value >= bound:
                return False
            if op == "gt" and not value > bound:
                return False
            if op == "lte" and not value <= bound:
                return False
        return True


def walk_ids(search: FakeSearch, lower: datetime | None = None, upper: datetime | None = None):
    walk = SearchWalk(
        search=search,
        query_context="conversation",
        criteria=[],
        keys=KEYS,
        lower=lower,
        upper=upper,
        cap=search.cap,
    )
    out = []
    for page in walk.pages():
        out.extend(page)
    return out, walk


def assert_ascending(records: list[dict]) -> None:
    values = [parse_timestamp(r["attributes"]["doneAt"]) for r in records]
    assert values == sorted(values)


def spread(n: int, start: int = 0) -> list[dict]:
    return [
        record(start + i, BASE + timedelta(seconds=i), BASE, BASE + timedelta(seconds=i))
        for i in range(n)
    ]


def test_walks_past_the_cap_without_page_numbers():
    records = spread(23_456)
    search = FakeSearch(records)
    out, walk = walk_ids(search)
    assert {r["id"] for r in out} == {r["id"] for r in records}
    assert len(out) == len(records)
    assert_ascending(out)
    # About one request per 500 records, plus the boundary overlap.
    assert walk.stats.requests <= len(records) // 500 + 3


def test_ties_longer_than_a_page_are_walked_by_the_next_key():
    tie_time = BASE + timedelta(days=1)
    tied = [
        record(100_000 + i, tie_time, BASE + timedelta(seconds=i), tie_time) for i in range(3_000)
    ]
    records = spread(700) + tied + spread(300, start=50_000)
    for r in records[-300:]:
        r["attributes"]["doneAt"] = format_timestamp(tie_time + timedelta(minutes=5))
    search = FakeSearch(records)
    out, walk = walk_ids(search)
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in records)
    assert walk.stats.tie_groups >= 1
    assert_ascending(out)


def test_records_tied_on_every_key_are_all_read():
    tie_time = BASE + timedelta(days=2)
    tied = [record(200_000 + i, tie_time, tie_time, tie_time) for i in range(2_400)]
    records = spread(50) + tied + spread(50, start=300_000)
    for r in records[-50:]:
        r["attributes"]["doneAt"] = format_timestamp(tie_time + timedelta(hours=1))
    out, walk = walk_ids(FakeSearch(records))
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in records)
    assert len(out) == len(records)
    assert walk.stats.tie_reads >= 1


def test_a_tie_larger_than_the_cap_on_every_key_fails_loudly():
    tie_time = BASE + timedelta(days=2)
    tied = [record(i, tie_time, tie_time, tie_time) for i in range(1_200)]
    with pytest.raises(SearchCapError, match="at most 1000"):
        walk_ids(FakeSearch(tied, cap=1_000))


def test_records_that_move_during_the_walk_do_not_push_others_out():
    records = spread(5_000)
    rng = random.Random(3)
    moved: set[str] = set()

    def move_some(search: FakeSearch) -> None:
        # Re-resolve a few already-walked or not-yet-walked records: their key jumps ahead.
        for r in rng.sample(search.records, 40):
            later = parse_timestamp(r["attributes"]["doneAt"]) + timedelta(days=30)
            r["attributes"]["doneAt"] = format_timestamp(later)
            moved.add(r["id"])

    search = FakeSearch(records)
    search.before_each_call = move_some
    out, _ = walk_ids(search, upper=BASE + timedelta(days=365))
    assert {r["id"] for r in out} == {r["id"] for r in records}
    assert_ascending(out)


def test_window_bounds_are_inclusive_and_respected():
    records = spread(100)
    lower, upper = BASE + timedelta(seconds=10), BASE + timedelta(seconds=20)
    out, _ = walk_ids(FakeSearch(records), lower=lower, upper=upper)
    assert [r["id"] for r in out] == [r["id"] for r in records[10:21]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-03-01T12:00:00.123Z", "2025-03-01T12:00:00.123Z"),
        ("2025-03-01T12:00:00Z", "2025-03-01T12:00:00.000Z"),
        ("2025-03-01 12:00:00+00:00", "2025-03-01T12:00:00.000Z"),
        ("2025-03-01T14:00:00.5+02:00", "2025-03-01T12:00:00.500Z"),
        ("2025-03-01", "2025-03-01T00:00:00.000Z"),
    ],
)
def test_timestamps_parse_in_every_form_kustomer_uses(raw: str, expected: str):
    assert format_timestamp(parse_timestamp(raw)) == expected


def test_garbage_is_not_a_timestamp():
    assert parse_timestamp("yesterday") is None
