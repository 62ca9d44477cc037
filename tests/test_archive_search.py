"""History older than standard search's two years, read from archive search."""

from __future__ import annotations

import logging
import typing as t
from collections import Counter
from datetime import timedelta

import pytest

from tests.tap_harness import TapRun, run_tap
from tests.truth import config_for, expected_resolved, settle, started, thread_ids

if t.TYPE_CHECKING:
    from tests.sandbox import Sandbox

ARCHIVE = "POST /v1/customers/archive/search"
SEARCH = "POST /v1/customers/search"
OLD_ORG = {"history_years": 4, "conversations": 400, "customers": 120}
SEARCHED = ("customers", "companies", "kobjects")


def _requests(sandbox: Sandbox, route: str) -> int:
    return sum(sandbox.stats()["by_route"].get(route, {}).values())


def _backfill_config(sandbox: Sandbox, **extra: t.Any) -> dict[str, t.Any]:
    start = sandbox.now() - timedelta(days=4 * 366)
    return config_for(sandbox, start_date=start.isoformat(), **extra)


def _no_duplicates(run: TapRun, stream: str) -> None:
    counts = Counter(r["id"] for r in run.records(stream))
    assert [i for i, n in counts.items() if n > 1] == [], f"{stream} written twice"


@pytest.fixture(scope="module")
def old_org() -> t.Iterator[Sandbox]:
    sandbox = started(**OLD_ORG)
    settle(sandbox)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def test_backfill_reads_the_archive_then_standard_search(
    old_org: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    old_org.reset_stats()
    horizon = old_org.now() - timedelta(days=730)
    with caplog.at_level(logging.INFO):
        run = run_tap(_backfill_config(old_org))
    resolved = expected_resolved(old_org)
    assert run.ids("conversations") == resolved
    old = {r["id"] for r in run.records("conversations") if r["updated_at"] < horizon.isoformat()}
    assert old, "the org has conversations older than two years"
    messages, notes = thread_ids(old_org, resolved)
    assert run.ids("messages") == messages
    assert run.ids("notes") == notes
    for stream in SEARCHED:
        assert run.ids(stream) == set(old_org.updated_ids(stream)), stream
    for stream in ("conversations", "messages", "notes", *SEARCHED):
        _no_duplicates(run, stream)
    archive, search = _requests(old_org, ARCHIVE), _requests(old_org, SEARCH)
    assert archive >= 4, "one archive walk per searched stream"
    assert search > 0
    logged = [r.getMessage() for r in caplog.records if "archive search read" in r.getMessage()]
    assert len(logged) == 4, logged
    # The incremental run after the backfill stays within standard search.
    old_org.reset_stats()
    again = run_tap(_backfill_config(old_org), state=run.final_state)
    assert _requests(old_org, ARCHIVE) == 0
    assert again.ids("conversations") <= resolved


def test_archive_off_leaves_old_records_out_with_a_warning(
    old_org: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    old_org.reset_stats()
    with caplog.at_level(logging.WARNING):
        run = run_tap(_backfill_config(old_org, archive_search=False))
    assert _requests(old_org, ARCHIVE) == 0
    horizon = old_org.now() - timedelta(days=730)
    for stream in SEARCHED:
        assert run.ids(stream) == set(old_org.updated_ids(stream, since=horizon)), stream
        assert run.ids(stream) < set(old_org.updated_ids(stream))
    assert "archive search, which this run does not read" in caplog.text


def test_archive_refused_warns_once_and_reads_standard_search(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = started(**OLD_ORG, archive_status=404)
    try:
        settle(sandbox)
        with caplog.at_level(logging.WARNING):
            run = run_tap(_backfill_config(sandbox))
        assert _requests(sandbox, ARCHIVE) == 1
        assert caplog.text.count("archive search is unavailable") == 1
        horizon = sandbox.now() - timedelta(days=730)
        assert run.ids("customers") == set(sandbox.updated_ids("customers", since=horizon))
    finally:
        sandbox.stop()


def test_archive_walk_stays_under_its_page_limit() -> None:
    """Pages of 5 and a limit of 3 pages: a walk by page number could not finish."""
    sandbox = started(**OLD_ORG, search_max_page_size=5, archive_max_pages=3)
    try:
        settle(sandbox)
        run = run_tap(_backfill_config(sandbox), select=["customers"])
        assert run.ids("customers") == set(sandbox.updated_ids("customers"))
        by_status = sandbox.stats()["by_route"][ARCHIVE]
        assert set(by_status) == {"200"}
        assert by_status["200"] > 3
    finally:
        sandbox.stop()
