"""The full-table reference streams against the sandbox: users, teams, klasses,
shortcuts, brands, business schedules, routing queues and satisfaction surveys (and
tags, on the same base): exact backfills, paging, roles, ACTIVATE_VERSION, deletes."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from tap_kustomer.errors import PermissionDeniedError
from tap_kustomer.streams.common import iso
from tap_kustomer.tap import TapKustomer
from tests.sandbox import KeySpec, Sandbox
from tests.sandbox.reference import KINDS, reference_of
from tests.tap_harness import closed_port, run_cli, run_tap
from tests.truth import API_KEY, config_for, started

#: stream -> (sandbox kind, role resource, role the tap names)
STREAMS = {
    "users": ("users", "user", "org.permission.user.read"),
    "teams": ("teams", "team", "org.permission.team.read"),
    "klasses": ("klasses", "klass", "org.permission.klass.read"),
    "shortcuts": ("shortcuts", "shortcut", "org.permission.shortcut.read"),
    "brands": ("brands", "brand", "org.permission.brand.read"),
    "business_schedules": ("schedules", "schedule", "org.permission.schedule.read"),
    "queues": ("queues", "routing", "org.permission.routing.read"),
    "satisfaction_surveys": ("satisfaction", "satisfaction", "org.permission.satisfaction.read"),
}
FULL_TABLE = ("tags", *STREAMS)


def key_without(resource: str) -> str:
    return f"key-without-{resource}"


@pytest.fixture(scope="module")
def org() -> Iterator[Sandbox]:
    """An org read, never changed, by the tests of this module; a key per missing role."""
    extra = {key_without(res): KeySpec.without(res) for _, res, _ in STREAMS.values()}
    extra["key-without-brand-401"] = KeySpec.without("brand", denial_status=401)
    sandbox = started(seed=23, customers=20, conversations=30, extra_keys=extra)
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def backfill(org):
    return run_tap(config_for(org), select=FULL_TABLE)


@pytest.fixture
def mutable_org() -> Iterator[Sandbox]:
    sandbox = started(seed=29, customers=10, conversations=10)
    yield sandbox
    sandbox.stop()


def sandbox_get(sb: Sandbox, path: str, key: str = API_KEY) -> requests.Response:
    return requests.get(
        f"{sb.base_url}{path}",  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def reads_of(sb: Sandbox, route: str) -> list[dict[str, str]]:
    """Query parameters of every request the sandbox logged on ``route``."""
    return [
        dict(parse_qsl(urlsplit(entry["path"]).query))
        for entry in sb.request_log()
        if urlsplit(entry["path"]).path == route
    ]


# --------------------------------------------------------------------------- backfill


@pytest.mark.parametrize("stream", STREAMS)
def test_backfill_emits_exactly_the_sandboxs_records(org, backfill, stream):
    kind = STREAMS[stream][0]
    truth = {r["id"]: r for r in reference_of(org).truth([kind])[kind]}
    records = backfill.records(stream)
    assert truth, f"the org must have {kind}"
    assert [r["id"] for r in records] == list(truth), "each record once, in list order"
    for record in records:
        want = truth[record["id"]]
        for column in ("type", "attributes", "relationships", "links"):
            assert record[column] == want[column], (record["id"], column)
        assert record["updated_at"] == iso(want["attributes"]["updatedAt"])


def test_tags_still_emit_every_tag_with_deleted_ones(org, backfill):
    tags = org.truth(["tags"])["tags"]
    assert any(t["attributes"]["deleted"] for t in tags)
    assert backfill.ids("tags") == {t["id"] for t in tags}


def test_each_stream_reads_pages_as_the_api_links_them():
    sb = started(seed=31, customers=5, conversations=5, users=520, brands=250)
    try:
        run = run_tap(config_for(sb), select=["users", "brands"])
        truth = reference_of(sb).truth(["users", "brands"])
        assert run.ids("users") == {u["id"] for u in truth["users"]}
        assert run.ids("brands") == {b["id"] for b in truth["brands"]}
        users = reads_of(sb, "/v1/users")
        assert [(r["page"], r["pageSize"]) for r in users] == [("1", "500"), ("2", "500")]
        brands = reads_of(sb, "/v1/brands")
        assert [(r["page"], r["pageSize"]) for r in brands] == [
            ("1", "100"),
            ("2", "100"),
            ("3", "100"),
        ]
    finally:
        sb.stop()


def test_users_ask_for_deactivated_ones_when_the_plain_list_has_none(mutable_org):
    data = reference_of(mutable_org)
    deactivated = {u["id"] for u in data.records("users") if u["attributes"].get("deletedAt")}
    assert deactivated
    run = run_tap(config_for(mutable_org), select=["users"])
    assert deactivated <= run.ids("users")
    assert reads_of(mutable_org, "/v1/users") == [{"page": "1", "pageSize": "500"}]

    data.users_include_deactivated_by_default = False
    mutable_org.reset_stats()
    run = run_tap(config_for(mutable_org), select=["users"])
    assert run.ids("users") == {u["id"] for u in data.records("users")}
    assert {"page": "1", "pageSize": "500", "deleted": "true"} in reads_of(mutable_org, "/v1/users")


def test_klasses_of_every_status_are_read(mutable_org):
    data = reference_of(mutable_org)
    disabled = data.add("klasses", status="disabled")
    existing_only = data.add("klasses", status="existing_only")
    run = run_tap(config_for(mutable_org), select=["klasses"])
    assert {disabled["id"], existing_only["id"]} < run.ids("klasses")
    assert run.ids("klasses") == {k["id"] for k in data.records("klasses")}
    statuses = [r.get("status") for r in reads_of(mutable_org, "/v1/klasses")]
    assert statuses == [None, "existing_only", "disabled"]


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("stream", STREAMS)
def test_a_key_without_the_streams_role_fails_with_one_line_naming_it(org, stream):
    _, resource, role = STREAMS[stream]
    config = config_for(org, api_key=key_without(resource))
    with pytest.raises(PermissionDeniedError) as raised:
        run_tap(config, select=[stream])
    message = str(raised.value)
    assert "\n" not in message
    assert role in message
    assert f"'{stream}'" in message
    assert "skip_unauthorized_streams" in message
    assert raised.value.role == role


def test_the_cli_prints_the_missing_role_as_one_line(org, tmp_path):
    config = config_for(org, api_key="key-without-brand-401")
    run = run_cli([], config={**config}, tmp_path=tmp_path, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-kustomer: error: "), last
    assert "org.permission.brand.read" in last
    assert "HTTP 401" in last


@pytest.mark.parametrize("stream", STREAMS)
def test_with_skip_unauthorized_streams_only_that_stream_is_skipped(org, backfill, stream, caplog):
    _, resource, role = STREAMS[stream]
    config = config_for(org, api_key=key_without(resource), skip_unauthorized_streams=True)
    with caplog.at_level(logging.WARNING):
        run = run_tap(config, select=FULL_TABLE)
    assert not run.records(stream)
    skipping = f"Skipping stream '{stream}'"
    warnings = [r.getMessage() for r in caplog.records if skipping in r.getMessage()]
    assert warnings
    assert role in warnings[0]
    for other in FULL_TABLE:
        if other != stream:
            assert run.ids(other) == backfill.ids(other), other


# --------------------------------------------------------------------------- ACTIVATE_VERSION


def activate_versions(run, stream: str) -> list[int]:
    return [
        m["version"]
        for m in run.messages
        if m.get("type") == "ACTIVATE_VERSION" and m.get("stream") == stream
    ]


def test_activate_version_is_emitted_for_every_full_table_stream_when_enabled(org):
    run = run_tap(config_for(org, emit_activate_version_messages=True), select=FULL_TABLE)
    for stream in FULL_TABLE:
        versions = activate_versions(run, stream)
        assert len(versions) == 1, stream
        first = next(
            i for i, m in enumerate(run.messages) if m["type"] == "RECORD" and m["stream"] == stream
        )
        marker = next(
            i
            for i, m in enumerate(run.messages)
            if m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream
        )
        assert marker < first, stream
        records = [m for m in run.messages if m["type"] == "RECORD" and m["stream"] == stream]
        assert records, stream
        assert {m.get("version") for m in records} == set(versions), stream


def test_no_activate_version_by_default(backfill):
    assert not [m for m in backfill.messages if m.get("type") == "ACTIVATE_VERSION"]


def test_the_setting_and_capability_are_advertised(tmp_path):
    run = run_cli(["--about", "--format", "json"], tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    about = json.loads(run.raw_stdout)
    assert "activate-version" in about["capabilities"]
    setting = about["settings"]["properties"]["emit_activate_version_messages"]
    assert setting["default"] is False


def test_a_skipped_stream_never_tells_the_target_its_table_is_gone(org):
    config = config_for(
        org,
        api_key=key_without("brand"),
        skip_unauthorized_streams=True,
        emit_activate_version_messages=True,
    )
    run = run_tap(config, select=["brands", "queues"])
    assert not activate_versions(run, "brands")
    assert not run.records("brands")
    assert len(activate_versions(run, "queues")) == 1
    assert run.records("queues")


@pytest.mark.parametrize("stream", STREAMS)
def test_a_record_deleted_in_kustomer_is_absent_from_the_next_run(mutable_org, stream):
    kind = STREAMS[stream][0]
    data = reference_of(mutable_org)
    config = config_for(mutable_org, emit_activate_version_messages=True)
    first = run_tap(config, select=[stream])
    gone = data.records(kind)[-1]["id"]
    assert gone in first.ids(stream)
    data.delete(kind, gone)
    added = data.add(kind)
    second = run_tap(config, select=[stream])
    assert gone not in second.ids(stream)
    assert added["id"] in second.ids(stream)
    assert second.ids(stream) == {r["id"] for r in data.records(kind)}
    assert len(activate_versions(second, stream)) == 1


# --------------------------------------------------------------------------- record shape


@pytest.fixture(scope="module")
def tap() -> TapKustomer:
    config = {"api_key": "x" * 12, "api_url": f"http://127.0.0.1:{closed_port()}"}
    return TapKustomer(config=config, parse_env_config=False)


def test_team_members_stay_a_list_of_user_ids(tap):
    raw = {"id": "t1", "type": "team", "attributes": {"members": {"type": "user", "id": "u1"}}}
    record = tap.streams["teams"].post_process(copy.deepcopy(raw))
    assert record["attributes"]["members"] == ["u1"]
    raw["attributes"]["members"] = ["u1", {"type": "user", "id": "u2"}]
    assert tap.streams["teams"].post_process(copy.deepcopy(raw))["attributes"]["members"] == [
        "u1",
        "u2",
    ]
    raw["attributes"]["members"] = None
    assert tap.streams["teams"].post_process(copy.deepcopy(raw))["attributes"]["members"] is None


def test_shortcut_access_lists_stay_lists(tap):
    one = {"type": "team", "id": "t1"}
    raw = {
        "id": "s1",
        "type": "shortcut",
        "attributes": {"name": "Thanks", "draft": {"text": "Thank you!"}},
        "relationships": {
            "accessTeams": {"data": one},
            "accessUsers": {"data": None},
            "attachments": {"data": []},
        },
    }
    record = tap.streams["shortcuts"].post_process(copy.deepcopy(raw))
    relationships = record["relationships"]
    assert relationships["accessTeams"]["data"] == [one]
    assert relationships["accessUsers"]["data"] is None
    assert relationships["attachments"]["data"] == []
    assert record["attributes"]["draft"] == {"text": "Thank you!"}


def test_undescribed_attributes_pass_through(tap):
    raw = {
        "id": "u1",
        "type": "user",
        "attributes": {
            "name": "Ana",
            "roleGroups": [{"id": "rg"}],
            "updatedAt": "2024-01-02T03:04:05Z",
        },
    }
    record = tap.streams["users"].post_process(copy.deepcopy(raw))
    assert record["attributes"]["roleGroups"] == [{"id": "rg"}]
    assert record["updated_at"] == iso("2024-01-02T03:04:05Z")


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize("kind", KINDS)
def test_sandbox_lists_are_paged_with_relative_next_links_and_capped(org, kind):
    spec = KINDS[kind]
    cap = spec.max_page_size or 100
    body = sandbox_get(org, f"{spec.path}?page=1&pageSize=5000").json()
    assert body["meta"] == {"page": 1, "pageSize": cap}
    assert body["links"]["self"] == f"{spec.path}?page=1&pageSize={cap}"
    assert body["links"]["prev"] is None
    assert body["links"]["next"] is None
    small = sandbox_get(org, f"{spec.path}?pageSize=1").json()
    assert len(small["data"]) == 1
    assert small["links"]["next"].startswith(f"{spec.path}?page=2&pageSize=1")
    for record in body["data"]:
        assert set(record) == {"type", "id", "attributes", "relationships", "links"}
        assert record["type"] == spec.type
        assert record["links"]["self"].endswith(record["id"])
        assert record["relationships"]["org"]["data"]["type"] == "org"


@pytest.mark.parametrize("stream", STREAMS)
def test_sandbox_denies_a_list_to_a_key_without_its_role(org, stream):
    kind, resource, role = STREAMS[stream]
    response = sandbox_get(org, KINDS[kind].path, key=key_without(resource))
    assert response.status_code == 403
    assert role in response.json()["errors"][0]["detail"]


def test_sandbox_reference_data_is_a_function_of_the_seed():
    def truth(seed: int) -> dict:
        sb = started(seed=seed, customers=5, conversations=5)
        try:
            return reference_of(sb).truth()
        finally:
            sb.stop()

    assert truth(41) == truth(41)
    assert truth(41)["brands"] != truth(42)["brands"]


def test_sandbox_serves_one_record_and_the_defaults(org):
    data = reference_of(org)
    for kind in ("brands", "schedules"):
        default = sandbox_get(org, f"{KINDS[kind].path}/default").json()["data"]
        assert default["attributes"]["default"] is True
        one = data.records(kind)[-1]
        assert sandbox_get(org, f"{KINDS[kind].path}/{one['id']}").json()["data"] == one
    system = [q for q in data.records("queues") if q["attributes"]["system"]]
    assert [q["attributes"]["name"] for q in system] == ["DEFAULT_QUEUE"]
    assert sandbox_get(org, "/v1/routing/queues/000000000000000000000000").status_code == 404
    assert sandbox_get(org, "/v1/klasses?status=sometimes").status_code == 400
