"""The SDK's standard tap tests, and the command line, against a running sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_kustomer.tap import STREAM_TYPES, TapKustomer
from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import OPT_IN_STREAMS, STREAMS, ReservedPort, catalog_for, run_cli

API_KEY = "standard-tests-key"

# The SDK builds its test class at import time from a config, so the sandbox's URL
# must be known then; the sandbox itself serves only while this module's tests run.
# (Discovery at import finds nothing listening and leaves custom attributes untyped.)
_PORT = ReservedPort()
CONFIG = {
    "api_key": API_KEY,
    "api_url": _PORT.url,
    "start_date": "2020-01-01T00:00:00Z",
    "index_lag_minutes": 5,
}

# Every stream selected, those not selected by default too (attachments, events): the
# SDK's dry run forces selection only after the stream maps are built from the catalog.
CATALOG = catalog_for(CONFIG, [stream.name for stream in STREAM_TYPES])

TestTapKustomer = get_tap_test_class(
    TapKustomer,
    config=CONFIG,
    catalog=CATALOG,
    suite_config=SuiteConfig(max_records_limit=60),
    parse_env_config=False,
)


@pytest.fixture(scope="module", autouse=True)
def sandbox() -> Iterator[Sandbox]:
    """The org every test of this module reads, at ``CONFIG["api_url"]``."""
    org = Sandbox(SandboxOptions(seed=17, api_key=API_KEY, customers=40, conversations=120))
    org.start(_PORT.host, _PORT.release())
    try:
        yield org
    finally:
        org.stop()


def test_cli_emits_all_five_streams(tmp_path):
    run = run_cli([], config=CONFIG, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    for stream in STREAMS:
        assert run.records(stream), f"no {stream} records"
    schemas = [m["stream"] for m in run.messages if m["type"] == "SCHEMA"]
    for stream in STREAMS:
        assert schemas.count(stream) == 1, f"{stream}: one SCHEMA per run, got {schemas}"
        first_record = next(
            i for i, m in enumerate(run.messages) if m["type"] == "RECORD" and m["stream"] == stream
        )
        first_schema = next(
            i for i, m in enumerate(run.messages) if m["type"] == "SCHEMA" and m["stream"] == stream
        )
        assert first_schema < first_record
    assert run.final_state["bookmarks"]["conversations"]["replication_key"] == "resolved_at"


def test_cli_discover_lists_the_streams_with_keys(tmp_path):
    run = run_cli(["--discover"], config=CONFIG, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    catalog = json.loads(run.raw_stdout)
    entries = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(entries) == {*STREAMS, *OPT_IN_STREAMS}
    root = {
        name: next(m["metadata"] for m in s["metadata"] if m["breadcrumb"] == [])
        for name, s in entries.items()
    }
    assert root["conversations"]["replication-key"] == "resolved_at"
    assert root["customers"]["replication-key"] == "updated_at"
    assert all(root[name]["table-key-properties"] == ["id"] for name in entries)
    assert {name for name in entries if root[name]["selected-by-default"]} == set(STREAMS)
    for name in OPT_IN_STREAMS:
        assert "not selected by default" in entries[name]["schema"]["description"].lower()
    custom = entries["conversations"]["schema"]["properties"]["attributes"]["properties"]["custom"][
        "properties"
    ]
    assert custom, "custom attributes from /v1/metadata are typed in the schema"
    for name, schema in custom.items():
        if name.endswith("Num"):
            assert "number" in schema["type"]
        if name.endswith("At"):
            assert schema.get("format") == "date-time"


def test_cli_about_describes_every_setting(tmp_path):
    run = run_cli(["--about", "--format", "json"], tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    about = json.loads(run.raw_stdout)
    names = set(about["settings"]["properties"])
    assert {
        "api_key",
        "start_date",
        "end_date",
        "api_url",
        "region",
        "org_name",
        "data_mutability",
        "resolved_only",
    } <= names
    assert about["settings"]["properties"]["api_key"].get("secret") is True
    assert about["name"] == "tap-kustomer"
    assert about["version"] not in (None, "", "[could not be detected]")


def test_data_mutability_switches_the_bookmark_to_update_time(tmp_path):
    run = run_cli([], config={**CONFIG, "data_mutability": True}, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.final_state["bookmarks"]["conversations"]["replication_key"] == "updated_at"


def test_resolved_only_false_reads_every_conversation(tmp_path):
    run = run_cli([], config={**CONFIG, "resolved_only": False}, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    statuses = {r["attributes"]["status"] for r in run.records("conversations")}
    assert "done" in statuses
    assert statuses - {"done"}, "open and snoozed conversations are included"
