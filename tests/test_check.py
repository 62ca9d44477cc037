"""``tap-kustomer --check``: the key's roles against the streams, from the config alone."""

from __future__ import annotations

import json
import re

import pytest

from tap_kustomer.check import (
    TOKEN_PATH,
    KeyInfo,
    StreamNeeds,
    compute_report,
    describe_rate_limits,
    missing_roles,
    render_report,
)
from tap_kustomer.tap import TapKustomer
from tests.sandbox import KeySpec
from tests.sandbox.options import ALL_ROLES
from tests.tap_harness import OPT_IN_STREAMS, catalog_for, closed_port, run_cli
from tests.truth import config_for, started

ERROR = "tap-kustomer: error: "
SKIP_HINT = "or set skip_unauthorized_streams: true to skip those streams instead"
ADD = "the API key cannot read every selected stream; add {what} to the key in Kustomer "
ADD += "(Settings > Security > API Keys): {needs}; " + SKIP_HINT
INVALID = (
    "Kustomer ({host}) rejected the API key (HTTP 401). Check api_key for typos or spaces, "
    "and that region/org_name/api_url point at your org's region"
)
EXPIRED = (
    "Kustomer rejected the API key: it has expired. Create a new key in Kustomer "
    "(Settings > Security > API Keys) and set api_key"
)
UNREACHABLE = (
    "Cannot reach Kustomer at {url} (ConnectionError); check region, org_name or api_url "
    "and your network"
)

#: Limited keys, long and distinctive so that any leak into the output is found.
KEYS: dict[str, KeySpec] = {
    "check-key-no-tag-5c1f9e0a": KeySpec.without("tag"),
    "check-key-no-note-5c1f9e0a": KeySpec.without("note"),
    "check-key-no-search-5c1f9e0a": KeySpec.without("search"),
    "check-key-no-customer-5c1f9e0a": KeySpec.without("customer"),
    "check-key-no-conversation-5c1f9e0a": KeySpec.without("conversation"),
    "check-key-no-attachment-5c1f9e0a": KeySpec.without("attachment"),
    "check-key-no-event-5c1f9e0a": KeySpec.without("event"),
    "check-key-no-audit_logs-5c1f9e0a": KeySpec.without("audit_logs"),
    "check-key-expired-5c1f9e0a": KeySpec.expired_key(),  # EXPIRED_KEY
    "check-key-legacy-5c1f9e0a": KeySpec(
        roles=frozenset(r for r in ALL_ROLES if r.startswith("org.user.")), name="legacy key"
    ),
    "check-key-broad-tag-5c1f9e0a": KeySpec(
        roles=frozenset(r for r in ALL_ROLES if ".tag." not in r) | {"org.permission.tag"},
        name="broad tag key",
    ),
}
INVALID_KEY = "check-key-unknown-5c1f9e0a"
EXPIRED_KEY = "check-key-expired-5c1f9e0a"


@pytest.fixture(scope="module")
def sandbox():
    sb = started(seed=1, conversations=30, customers=20)
    sb.options.extra_keys.update(KEYS)
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def stream_resources(sandbox):
    """Stream name -> resources, in the order the tap lists its streams."""
    tap = TapKustomer(config=config_for(sandbox), parse_env_config=False)
    return {name: type(stream).resources for name, stream in tap.streams.items()}


def check(sandbox, tmp_path, *, key=None, catalog=None, **settings):
    """Run ``--check`` as a program; the sandbox log then holds only this run's requests."""
    config = config_for(sandbox, **settings)
    if key is not None:
        config["api_key"] = key
    args = ["--check"]
    if catalog is not None:
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps(catalog))
        args += ["--catalog", str(path)]
    sandbox.reset_stats()
    run = run_cli(args, config=config, tmp_path=tmp_path)
    for secret in {config["api_key"], *KEYS, INVALID_KEY}:
        assert secret not in run.raw_stdout
        assert secret not in run.stderr
    return run


def rows(run) -> dict[str, str]:
    """Stream name -> its table row."""
    table = run.raw_stdout.split("\n\n")[1].splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["stream", "needed roles", "roles", "selected"]
    return {line.split()[0]: line for line in table[1:]}


def cells(row: str) -> list[str]:
    return re.split(r"\s{2,}", row)


def selected_by_default(name: str) -> str:
    """The selection column of a run without a catalog."""
    return "no" if name in OPT_IN_STREAMS else "yes"


def last_error(run) -> str:
    return run.stderr.strip().splitlines()[-1]


def token_requests(sandbox) -> list[dict]:
    return [e for e in sandbox.request_log() if e["path"].split("?")[0].rstrip("/") == TOKEN_PATH]


# -- a key with every role -------------------------------------------------------------------


def test_every_role_every_stream_present(sandbox, stream_resources, tmp_path):
    run = check(sandbox, tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.raw_stdout
    assert f"  host:        {sandbox.base_url}\n" in out
    assert f"  org:         {sandbox.store.org_id}\n" in out
    assert "  API key:     full key, " in out
    assert re.search(r"rate limit:  1000 requests a minute, \d+ remaining, window resets in", out)
    table = rows(run)
    assert list(table) == list(stream_resources)
    for name, row in table.items():
        assert cells(row)[2:] == ["present", selected_by_default(name)], row
        needed = cells(row)[1].split(", ")
        assert len(needed) == len(stream_resources[name])
    assert cells(table["conversations"])[1] == (
        "org.permission.search.create, org.permission.conversation.read"
    )
    assert cells(table["tags"])[1] == "org.permission.tag.read"
    assert out.rstrip().splitlines()[-1] == "OK: the API key can read every selected stream."
    assert "tap-kustomer: error" not in run.stderr


def test_only_one_get_is_sent_to_the_token_path(sandbox, tmp_path):
    run = check(sandbox, tmp_path)
    assert run.returncode == 0, run.stderr
    assert [e["route"] for e in token_requests(sandbox)] == ["GET /v1/auth/tokens/current"]
    # Nothing else than the key's description and the custom-attribute definitions.
    assert {e["route"] for e in sandbox.request_log()} <= {
        "GET /v1/auth/tokens/current",
        "GET /v1/metadata/{id}",
    }


def test_a_rejected_key_costs_one_get_too(sandbox, tmp_path):
    host = sandbox.base_url.split("://")[1]
    for key, error in ((INVALID_KEY, INVALID.format(host=host)), (EXPIRED_KEY, EXPIRED)):
        run = check(sandbox, tmp_path, key=key)
        assert run.returncode == 1
        assert last_error(run) == ERROR + error
        assert [e["route"] for e in token_requests(sandbox)] == ["GET /v1/auth/tokens/current"]
        assert len(sandbox.request_log()) == 1


# -- missing roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "role"),
    [
        ("tag", "org.permission.tag.read"),
        ("note", "org.permission.note.read"),
        ("search", "org.permission.search.create"),
        ("customer", "org.permission.customer.read"),
    ],
)
def test_a_missing_role_is_named_with_its_streams(
    sandbox, stream_resources, tmp_path, resource, role
):
    run = check(sandbox, tmp_path, key=f"check-key-no-{resource}-5c1f9e0a")
    assert run.returncode == 1
    needing = [name for name, resources in stream_resources.items() if resource in resources]
    assert needing
    table = rows(run)
    for name, row in table.items():
        expected = f"MISSING {role}" if name in needing else "present"
        assert cells(row)[2:] == [expected, selected_by_default(name)], row
    needs = f"{role} (for {', '.join(needing)})"
    assert last_error(run) == ERROR + ADD.format(what="this role", needs=needs)
    search_note = "Note: search (org.permission.search.create) is absent."
    assert (search_note in run.raw_stdout) == (resource == "search")


@pytest.mark.parametrize(
    ("stream", "resource", "role"),
    [
        ("attachments", "attachment", "org.permission.attachment.read"),
        ("conversation_events", "event", "org.permission.event.read"),
        ("audit_logs", "audit_logs", "org.permission.audit_logs.read"),
    ],
)
def test_an_opt_in_stream_needs_its_role_only_when_selected(
    sandbox, stream_resources, tmp_path, stream, resource, role
):
    run = check(sandbox, tmp_path, key=f"check-key-no-{resource}-5c1f9e0a")
    assert run.returncode == 0, run.stderr
    assert cells(rows(run)[stream])[2:] == [f"MISSING {role}", "no"]
    catalog = catalog_for(config_for(sandbox), [*stream_resources])
    run = check(sandbox, tmp_path, key=f"check-key-no-{resource}-5c1f9e0a", catalog=catalog)
    assert run.returncode == 1
    assert cells(rows(run)[stream])[2:] == [f"MISSING {role}", "yes"]
    needs = f"{role} (for {stream})"
    assert last_error(run) == ERROR + ADD.format(what="this role", needs=needs)


def test_tombstones_without_the_audit_role_are_a_note_not_an_error(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key="check-key-no-audit_logs-5c1f9e0a")
    assert run.returncode == 0, run.stderr
    assert "write no tombstones" in run.raw_stdout
    assert "emit_deletes: false" in run.raw_stdout
    quiet = check(sandbox, tmp_path, key="check-key-no-audit_logs-5c1f9e0a", emit_deletes=False)
    assert "tombstones" not in quiet.raw_stdout
    full = check(sandbox, tmp_path)
    assert "tombstones" not in full.raw_stdout


def test_skip_unauthorized_streams_already_on_is_named(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key="check-key-no-tag-5c1f9e0a", skip_unauthorized_streams=True)
    assert run.returncode == 1
    assert last_error(run) == ERROR + (
        "the API key cannot read every selected stream; add this role to the key in Kustomer "
        "(Settings > Security > API Keys): org.permission.tag.read (for tags); "
        "skip_unauthorized_streams is on, so a run skips those streams instead"
    )


def test_a_deselected_stream_may_lack_its_role(sandbox, stream_resources, tmp_path):
    selected = [name for name in stream_resources if name not in {"tags", *OPT_IN_STREAMS}]
    catalog = catalog_for(config_for(sandbox), selected)
    run = check(sandbox, tmp_path, key="check-key-no-tag-5c1f9e0a", catalog=catalog)
    assert run.returncode == 0, run.stderr
    table = rows(run)
    assert cells(table["tags"])[2:] == ["MISSING org.permission.tag.read", "no"]
    for name in selected:
        assert cells(table[name])[2:] == ["present", "yes"]
    assert run.raw_stdout.rstrip().endswith("OK: the API key can read every selected stream.")


def test_the_parent_of_a_selected_stream_is_read_for_it(sandbox, tmp_path):
    catalog = catalog_for(config_for(sandbox), ["messages"])
    run = check(sandbox, tmp_path, key="check-key-no-conversation-5c1f9e0a", catalog=catalog)
    assert run.returncode == 1
    table = rows(run)
    assert cells(table["conversations"])[2:] == [
        "MISSING org.permission.conversation.read",
        "no (read for messages)",
    ]
    assert cells(table["messages"])[2:] == ["present", "yes"]
    assert cells(table["tags"])[3] == "no"
    needs = "org.permission.conversation.read (for conversations)"
    assert last_error(run) == ERROR + ADD.format(what="this role", needs=needs)


def test_legacy_role_names_count(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key="check-key-legacy-5c1f9e0a")
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(cells(row)[2] == "present" for row in rows(run).values())


def test_a_broad_grant_counts_with_a_note(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key="check-key-broad-tag-5c1f9e0a")
    assert run.returncode == 0, run.stdout + run.stderr
    assert cells(rows(run)["tags"])[2:] == ["present (assumed: org.permission.tag)", "yes"]
    assert (
        "Note: org.permission.tag is a broad grant; it is assumed to cover "
        "org.permission.tag.read (UNCERTAIN in Kustomer's docs). If reads fail, add that role."
    ) in run.raw_stdout


# -- the key, the host and the settings ------------------------------------------------------


def test_an_invalid_key_is_one_line(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key=INVALID_KEY)
    assert run.returncode == 1
    assert run.raw_stdout == ""
    host = sandbox.base_url.split("://")[1]
    assert last_error(run) == ERROR + INVALID.format(host=host)
    assert sum(line.startswith(ERROR) for line in run.stderr.splitlines()) == 1


def test_an_expired_key_is_one_line(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key=EXPIRED_KEY)
    assert run.returncode == 1
    assert run.raw_stdout == ""
    assert last_error(run) == ERROR + EXPIRED


def test_an_unreachable_host_is_named(sandbox, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    run = check(sandbox, tmp_path, api_url=url)
    assert run.returncode == 1
    assert run.raw_stdout == ""
    assert last_error(run) == ERROR + UNREACHABLE.format(url=url)
    assert sandbox.stats()["total_requests"] == 0


def test_bad_settings_fail_before_any_request(sandbox, tmp_path):
    run = check(sandbox, tmp_path, key=" check-key-no-tag-5c1f9e0a ")
    assert run.returncode == 1
    assert last_error(run) == ERROR + (
        "api_key has leading or trailing spaces; paste the key without them"
    )
    run = check(sandbox, tmp_path, end_date="1999-01-01T00:00:00Z")
    assert run.returncode == 1
    assert last_error(run) == ERROR + (
        "end_date 1999-01-01T00:00:00Z is not after start_date 2000-01-01T00:00:00Z; "
        "swap them or remove end_date"
    )
    assert sandbox.stats()["total_requests"] == 0


@pytest.fixture
def faulty():
    """A sandbox whose key check answers 5xx at random (deterministic for its seed)."""
    sb = started(seed=1, conversations=5, customers=5)
    sb.options.fault_routes = ["/auth/tokens"]
    yield sb
    sb.stop()


def test_server_errors_are_retried(faulty, tmp_path):
    faulty.options.fault_5xx_rate = 0.7
    run = check(faulty, tmp_path)
    assert run.returncode == 0, run.stderr
    statuses = [e["status"] for e in token_requests(faulty)]
    assert statuses[-1] == 200
    assert statuses[:-1]
    assert set(statuses[:-1]) <= {500, 503}
    assert {e["route"] for e in token_requests(faulty)} == {"GET /v1/auth/tokens/current"}


def test_a_server_that_keeps_failing_is_one_line(faulty, tmp_path):
    faulty.options.fault_5xx_rate = 1.0
    run = check(faulty, tmp_path, max_retries=2)
    assert run.returncode == 1
    assert run.raw_stdout == ""
    assert re.fullmatch(
        re.escape(f"{ERROR}Kustomer at {faulty.base_url} kept failing after 3 attempts (HTTP ")
        + r"50[03] .*\); run the check again later",
        last_error(run),
    ), last_error(run)
    assert [e["route"] for e in token_requests(faulty)] == ["GET /v1/auth/tokens/current"] * 3


# -- the pure layers -------------------------------------------------------------------------


def test_the_report_reads_both_role_families_and_broad_grants():
    streams = [
        StreamNeeds("conversations", ("search", "conversation"), selected=False, read_for=("x",)),
        StreamNeeds("tags", ("tag",), selected=True),
        StreamNeeds("customers", ("search", "customer"), selected=False),
    ]
    roles = ["org.user.search.read", "org.permission.conversation", "org.admin.tag.read"]
    report = compute_report(roles, streams)
    assert [(r.name, r.missing, r.assumed, r.read) for r in report] == [
        (
            "conversations",
            (),
            (("org.permission.conversation", "org.permission.conversation.read"),),
            True,
        ),
        ("tags", ("org.permission.tag.read",), (), True),
        ("customers", ("org.permission.customer.read",), (), False),
    ]
    assert missing_roles(report) == {"org.permission.tag.read": ["tags"]}


def test_the_rendering_shows_the_key_tail_and_no_more():
    key = KeyInfo(name="etl", last_chars="abcdefghij", org_id="org1", roles=())
    lines = render_report(key, "https://kustomer.sandbox.invalid", "not reported", [])
    assert "  API key:     etl, ending in ...efghij" in lines
    assert "  host:        https://kustomer.sandbox.invalid" in lines


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        (
            {"x-ratelimit-limit": "1000", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"},
            "1000 requests a minute, 7 remaining, window resets in 30 s",
        ),
        (
            {"x-ratelimit-remaining": "7", "x-ratelimit-reset": "1700000045"},
            "limit not reported, 7 remaining, window resets in 45 s",
        ),
        ({}, "not reported (no x-ratelimit-* headers)"),
    ],
)
def test_rate_limits_as_the_headers_report_them(headers, text):
    assert describe_rate_limits(headers, now=1_700_000_000.0) == text
