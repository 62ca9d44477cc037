"""Companies and kobjects: read through search like customers, proven against the sandbox.

Each stream's backfill emits exactly the sandbox's records up to the window end; the
next run emits exactly what changed; a bulk update larger than a search page is read
whole; kobjects keep their klass; a key without the stream's role fails in one line
or skips the stream when allowed.
"""

from __future__ import annotations

import copy
import json
import typing as t
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import requests

from tap_kustomer.search import parse_timestamp
from tap_kustomer.tap import TapKustomer
from tests.sandbox import KeySpec, Sandbox
from tests.tap_harness import catalog_for, closed_port, run_cli, run_tap
from tests.truth import API_KEY, config_for, settle, started, window_end

STREAMS = ("companies", "kobjects")
SMALL = {"seed": 23, "customers": 40, "conversations": 40, "companies": 45, "kobjects": 120}
NO_COMPANY, NO_KOBJECT = "key-without-company", "key-without-kobject"
ROLE = {"companies": "org.permission.company.read", "kobjects": "org.permission.kobject.read"}
KEY_WITHOUT = {"companies": NO_COMPANY, "kobjects": NO_KOBJECT}


@pytest.fixture
def org() -> Iterator[Sandbox]:
    """A small org with several klasses, changed freely by the test that gets it."""
    sandbox = started(**SMALL, klasses=4)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def keyed_org() -> Iterator[Sandbox]:
    """An org with keys that lack the company or the kobject role (read only)."""
    sandbox = started(
        **SMALL,
        extra_keys={NO_COMPANY: KeySpec.without("company"), NO_KOBJECT: KeySpec.without("kobject")},
    )
    try:
        yield sandbox
    finally:
        sandbox.stop()


def expected(sandbox: Sandbox, stream: str, since: t.Any = None) -> set[str]:
    """Ids a run started now must emit: updated (since ``since``) up to the window end."""
    return set(sandbox.updated_ids(stream, since=since, until=window_end(sandbox)))


def change_some(sandbox: Sandbox, stream: str) -> set[str]:
    """Update three records and add one; the ids of all four."""
    records = sandbox.truth([stream])[stream]
    oldest = sorted(records, key=lambda r: r["attributes"]["updatedAt"])[:3]
    if stream == "companies":
        for record in oldest:
            sandbox.update_company(record["id"], custom={"industryStr": "aerospace 🚀"})
        added = sandbox.add_company(name="Nouvelle Société")
    else:
        for record in oldest:
            sandbox.update_kobject(record["id"], title="Updated ✅")
        added = sandbox.add_kobject("subscription", custom={"planStr": "pro"})
    return {r["id"] for r in oldest} | {added["id"]}


# 1. Backfill: exactly the sandbox's records.


@pytest.mark.parametrize("stream", STREAMS)
def test_backfill_emits_exactly_the_sandbox_records(org: Sandbox, stream: str) -> None:
    run = run_tap(config_for(org), select=[stream])
    want = expected(org, stream)
    assert len(want) > 20, "the org must hold records of the stream"
    assert run.ids(stream) == want
    assert len(run.records(stream)) == len(want), "each record once"
    truth = {r["id"]: r for r in org.truth([stream])[stream]}
    for record in run.records(stream):
        source = truth[record["id"]]
        assert record["type"] == source["type"]
        assert record["attributes"]["updatedAt"] == source["attributes"]["updatedAt"]
        assert record["relationships"]["org"] == source["relationships"]["org"]
        assert record["links"] == source["links"]
        assert parse_timestamp(record["updated_at"]) == parse_timestamp(
            source["attributes"]["updatedAt"]
        )
    newest = max(parse_timestamp(r["updated_at"]) for r in run.records(stream))
    assert parse_timestamp(run.bookmark(stream)) == newest


@pytest.mark.parametrize("stream", STREAMS)
def test_records_match_the_stream_schema(org: Sandbox, stream: str) -> None:
    tap = TapKustomer(config=config_for(org), parse_env_config=False)
    schema = tap.streams[stream].schema
    validator = jsonschema.Draft202012Validator(schema)
    run = run_tap(config_for(org), select=[stream])
    for record in run.records(stream):
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (record["id"], errors)


def test_companies_have_typed_custom_attributes_and_customers_point_at_them(org: Sandbox) -> None:
    tap = TapKustomer(config=config_for(org), parse_env_config=False)
    custom = tap.streams["companies"].schema["properties"]["attributes"]["properties"]["custom"]
    assert "number" in custom["properties"]["employeesNum"]["type"]
    assert custom["properties"]["contractRenewalAt"]["format"] == "date-time"
    run = run_tap(config_for(org), select=["companies", "customers"])
    linked = {
        r["relationships"]["company"]["data"]["id"]
        for r in run.records("customers")
        if (r.get("relationships") or {}).get("company")
    }
    assert linked, "customers are related to companies"
    assert linked <= run.ids("companies")


# 2. The next run: exactly what changed.


@pytest.mark.parametrize("stream", STREAMS)
def test_next_run_emits_exactly_what_changed(org: Sandbox, stream: str) -> None:
    config = config_for(org)
    backfill = run_tap(config, select=[stream])
    assert backfill.ids(stream) == expected(org, stream)
    changed = change_some(org, stream)
    settle(org)
    incremental = run_tap(config, state=backfill.final_state, select=[stream])
    emitted = incremental.ids(stream)
    boundary = {
        r["id"] for r in backfill.records(stream) if r["updated_at"] == backfill.bookmark(stream)
    }
    assert changed <= emitted
    assert emitted - changed <= boundary, "only records at the bookmark may repeat"
    assert parse_timestamp(incremental.bookmark(stream)) > parse_timestamp(
        backfill.bookmark(stream)
    )
    # Nothing changed since: a third run emits at most the records at its bookmark.
    settle(org)
    third = run_tap(config, state=incremental.final_state, select=[stream])
    assert third.ids(stream) <= {
        r["id"]
        for r in incremental.records(stream)
        if r["updated_at"] == incremental.bookmark(stream)
    }


# 3. A bulk update larger than a search page.


@pytest.mark.parametrize("stream", STREAMS)
def test_a_tie_cluster_larger_than_a_search_page_is_read_completely(stream: str) -> None:
    sandbox = started(**{**SMALL, "companies": 30, "kobjects": 30}, tie_clusters=[(stream, 700)])
    try:
        cluster = next(c for c in sandbox.tie_cluster_times() if c["kind"] == stream)
        run = run_tap(config_for(sandbox), select=[stream])
        assert run.ids(stream) == expected(sandbox, stream)
        assert len(run.records(stream)) == len(run.ids(stream)), "each record once"
        at_tie = [r for r in run.records(stream) if r["updated_at"] == cluster["at"]]
        assert len(at_tie) >= 700
        # The tie was walked inside its timestamp (by creation time, or page by page
        # when every key ties), never past the search cap.
        field = f"{'company' if stream == 'companies' else 'kobject'}_updated_at"
        tie_bodies = [
            entry["body"]
            for entry in sandbox.request_log()
            if isinstance(entry.get("body"), dict)
            and any(
                set(criterion.get(field) or {}) == {"gte", "lte"}
                for criterion in entry["body"].get("and") or []
            )
        ]
        assert tie_bodies, "the walk split the tie group"
    finally:
        sandbox.stop()


# 4. Kobjects keep their klass.


def test_kobjects_carry_their_klass_relationship(org: Sandbox) -> None:
    run = run_tap(config_for(org), select=["kobjects"])
    truth = {r["id"]: r for r in org.truth(["kobjects"])["kobjects"]}
    klasses = {k["attributes"]["name"] for k in org.truth(["klasses"])["klasses"]}
    seen = set()
    for record in run.records("kobjects"):
        klass = record["relationships"]["klass"]["data"]
        assert klass["type"] == "klass"
        assert klass == truth[record["id"]]["relationships"]["klass"]["data"]
        assert record["klass_id"] == klass["id"]
        assert record["type"] == f"kobject.{klass['id']}"
        seen.add(klass["id"])
    assert seen == klasses, "kobjects of every klass come through the one search"


def test_a_kobject_without_a_klass_relationship_gets_it_from_its_type() -> None:
    config = {"api_key": "x" * 12, "api_url": f"http://127.0.0.1:{closed_port()}"}
    stream = TapKustomer(config=config, parse_env_config=False).streams["kobjects"]
    raw = {
        "type": "kobject.warranty_claim",
        "id": "5826ab180fcc2514008b2a94",
        "attributes": {"title": "Claim", "updatedAt": "2025-01-02T03:04:05.6Z"},
        "relationships": {"org": {"data": {"type": "org", "id": "57bb5d2e32e83a130052e94e"}}},
    }
    record = stream.post_process(copy.deepcopy(raw))
    assert record is not None
    assert record["relationships"]["klass"]["data"] == {"type": "klass", "id": "warranty_claim"}
    assert record["klass_id"] == "warranty_claim"
    assert record["updated_at"] == "2025-01-02T03:04:05.600Z"


# 5. A key without the stream's role.


@pytest.mark.parametrize("stream", STREAMS)
def test_a_key_without_the_role_fails_in_one_line_naming_it(
    keyed_org: Sandbox, stream: str, tmp_path: Path
) -> None:
    config = config_for(keyed_org, api_key=KEY_WITHOUT[stream])
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(catalog_for(config, [stream])))
    run = run_cli(["--catalog", str(catalog)], config=config, tmp_path=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-kustomer: error: "), last
    assert ROLE[stream] in last
    assert f"'{stream}'" in last
    assert "skip_unauthorized_streams" in last
    assert not run.records(stream)


@pytest.mark.parametrize("stream", STREAMS)
def test_a_key_without_the_role_skips_only_its_stream_when_allowed(
    keyed_org: Sandbox, stream: str, tmp_path: Path
) -> None:
    config = config_for(keyed_org, api_key=KEY_WITHOUT[stream], skip_unauthorized_streams=True)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(catalog_for(config, [*STREAMS, "customers"])))
    run = run_cli(["--catalog", str(catalog)], config=config, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert any(
        f"Skipping stream '{stream}'" in line and ROLE[stream] in line
        for line in run.stderr.splitlines()
    ), run.stderr[-2000:]
    assert not run.records(stream)
    for other in [s for s in STREAMS if s != stream] + ["customers"]:
        assert run.ids(other) == expected(keyed_org, other), other


# 6. The sandbox's search contexts (what the streams rely on).


def _search(sandbox: Sandbox, body: dict[str, t.Any], key: str = API_KEY) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/v1/customers/search?pageSize=500",  # type: ignore[attr-defined]
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_sandbox_searches_companies_and_kobjects_by_context(keyed_org: Sandbox) -> None:
    body = {
        "queryContext": "company",
        "and": [{"company_updated_at": {"gte": "2000-01-01"}}],
        "sort": [{"company_updated_at": "asc"}, {"company_created_at": "asc"}],
    }
    companies = _search(keyed_org, body).json()["data"]
    stamps = [c["attributes"]["updatedAt"] for c in companies]
    assert stamps == sorted(stamps)
    assert len(companies) == SMALL["companies"]
    kobjects = _search(keyed_org, {"queryContext": "kobject"}).json()["data"]
    assert {k["relationships"]["klass"]["data"]["id"] for k in kobjects} == {
        k["attributes"]["name"] for k in keyed_org.truth(["klasses"])["klasses"]
    }
    orders = _search(
        keyed_org,
        {"queryContext": "kobject_order", "sort": [{"kobject_order_updated_at": "desc"}]},
    ).json()["data"]
    assert orders
    assert {k["type"] for k in orders} == {"kobject.order"}
    assert _search(keyed_org, {"queryContext": "kobject_no_such_klass"}).json()["data"] == []
    bad = {"queryContext": "company", "and": [{"customer_updated_at": {"gte": "2000-01-01"}}]}
    assert _search(keyed_org, bad).status_code == 400
    assert _search(keyed_org, {"queryContext": "company"}, NO_COMPANY).status_code == 403
    assert _search(keyed_org, {"queryContext": "kobject_order"}, NO_KOBJECT).status_code == 403
    assert _search(keyed_org, {"queryContext": "kobject"}, NO_COMPANY).status_code == 200


def test_sandbox_index_lag_and_two_year_horizon_apply_to_companies_and_kobjects() -> None:
    sandbox = started(**SMALL, months=30, index_lag_seconds=120)
    try:
        horizon = sandbox.now() - timedelta(days=730)
        for stream, context in (("companies", "company"), ("kobjects", "kobject")):
            found = {r["id"] for r in _search(sandbox, {"queryContext": context}).json()["data"]}
            recent = set(sandbox.updated_ids(stream, since=horizon))
            assert found == recent < set(sandbox.updated_ids(stream)), "2 years only"
        company = sorted(sandbox.updated_ids("companies", since=horizon))[0]
        sandbox.update_company(company, name="Lagging Name")
        body = {"queryContext": "company", "and": [{"company_name": {"equals": "Lagging Name"}}]}
        assert _search(sandbox, body).json()["data"] == [], "not indexed yet"
        sandbox.advance_clock(121)
        assert [c["id"] for c in _search(sandbox, body).json()["data"]] == [company]
    finally:
        sandbox.stop()
