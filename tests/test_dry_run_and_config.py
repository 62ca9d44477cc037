"""Settings are checked before any request; ``--test`` shows a record after a few requests."""

from __future__ import annotations

import pytest

from tests.tap_harness import run_cli
from tests.truth import config_for, started

#: Key check, custom-attribute metadata (company, conversation, customer, message), one
#: small search per searched stream (conversations, customers, companies, kobjects), the
#: threads of the first page of two conversations with every child kind (messages, notes,
#: attachments, events), and the first page of each of the 9 reference lists.
DRY_RUN_MAX_REQUESTS = 1 + 4 + 4 + 2 * 4 + 9


@pytest.fixture(scope="module")
def big_org():
    sandbox = started(seed=3, customers=600, conversations=3000)
    yield sandbox
    sandbox.stop()


@pytest.mark.parametrize(
    ("setting", "value", "phrase"),
    [
        ("start_date", "last tuesday", "start_date 'last tuesday' is not a date"),
        ("end_date", "1999-01-01T00:00:00Z", "end_date 1999-01-01T00:00:00Z is not after"),
        ("api_url", "ftp://kustomer", "api_url 'ftp://kustomer' is not a URL"),
        ("rate_limit_share_percent", 0, "rate_limit_share_percent must be between 1 and 100"),
    ],
)
@pytest.mark.parametrize("mode", [["--discover"], []])
def test_a_bad_setting_fails_before_any_request(tmp_path, big_org, setting, value, phrase, mode):
    big_org.reset_stats()
    config = config_for(big_org, **{setting: value})
    run = run_cli(mode, config=config, tmp_path=tmp_path)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.startswith("tap-kustomer: error:")]
    assert len(lines) == 1
    assert phrase in lines[0]
    assert big_org.stats()["total_requests"] == 0


def test_discovery_reads_each_custom_attribute_definition_once(tmp_path, big_org):
    big_org.reset_stats()
    run = run_cli(["--discover"], config=config_for(big_org), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    metadata = [e["path"] for e in big_org.request_log() if "/v1/metadata/" in e["path"]]
    assert sorted(metadata) == sorted(set(metadata))
    assert big_org.stats()["total_requests"] == len(metadata)


def test_the_connection_test_shows_a_record_after_a_few_requests(tmp_path, big_org):
    big_org.reset_stats()
    run = run_cli(["--test"], config=config_for(big_org), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    for stream in ("conversations", "messages", "customers", "tags"):
        assert run.records(stream), f"no {stream} record"
    assert big_org.stats()["total_requests"] <= DRY_RUN_MAX_REQUESTS
