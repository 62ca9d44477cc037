"""The SDK internals the tap relies on, pinned: an SDK upgrade that renames or reshapes
one fails here, and nothing outside ``tap_kustomer/sdk_adapter.py`` may use them."""

from __future__ import annotations

import inspect
import json
import re
import signal
from pathlib import Path

import pytest
import singer_sdk

from tap_kustomer import sdk_adapter
from tap_kustomer.tap import TapKustomer

PACKAGE = Path(sdk_adapter.__file__).parent

EXPECTED_PARAMETERS = {
    ("Stream", "_write_schema_message"): ["self"],
    ("Stream", "_write_record_message"): ["self", "record"],
    ("Stream", "_write_state_message"): ["self"],
    ("Stream", "_increment_stream_state"): ["self", "latest_record", "context"],
    ("Tap", "_handle_termination"): ["self", "signum", "frame"],
    ("RESTStream", "_request"): ["self", "prepared_request", "context"],
}


@pytest.mark.parametrize(("owner", "name"), sorted(EXPECTED_PARAMETERS))
def test_each_private_method_used_still_has_its_signature(owner, name):
    method = getattr(getattr(singer_sdk, owner), name)
    assert list(inspect.signature(method).parameters) == EXPECTED_PARAMETERS[(owner, name)]


def test_the_pinned_names_are_the_ones_the_adapter_lists():
    listed = {
        (owner.rsplit(".", 1)[1], name)
        for owner, names in sdk_adapter.PRIVATE_NAMES.items()
        for name in names
    }
    assert listed - {("Stream", "_tap")} == set(EXPECTED_PARAMETERS)


def test_streams_still_keep_their_tap_as_underscore_tap():
    tap = TapKustomer(config={"api_key": "x" * 12, "api_url": "http://127.0.0.1:9"})
    stream = tap.streams["tags"]
    assert sdk_adapter.tap_of(stream) is tap


def test_the_sdk_installs_its_termination_handler_which_the_tap_routes():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        tap = TapKustomer(config={"api_key": "x" * 12, "api_url": "http://127.0.0.1:9"})
        for sig in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(sig)
            assert getattr(handler, "__self__", None) is tap
            assert handler.__func__ is sdk_adapter.TerminationHook._handle_termination
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def test_no_module_but_the_adapter_uses_a_private_sdk_name():
    private = {name for names in sdk_adapter.PRIVATE_NAMES.values() for name in names}
    names = "|".join(map(re.escape, private))
    pattern = re.compile(rf"\.({names})\b")
    offenders = [
        f"{path.name}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "sdk_adapter.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) or "sync_all" in line or "__enter__()" in line
    ]
    assert offenders == []


def test_the_tap_state_goes_out_through_the_public_state_writer(capsys):
    assert isinstance(inspect.getattr_static(singer_sdk.Tap, "state_writer"), property)
    tap = TapKustomer(config={"api_key": "x" * 12, "api_url": "http://127.0.0.1:9"})
    tap.state["bookmarks"] = {"tags": {"marker": 1}}
    sdk_adapter.write_tap_state(tap.streams["tags"])
    states = [m for m in messages(capsys.readouterr().out) if m["type"] == "STATE"]
    assert states[-1]["value"]["bookmarks"]["tags"] == {"marker": 1}


def test_the_direct_writer_writes_only_for_a_selected_stream(capsys):
    tap = TapKustomer(config={"api_key": "x" * 12, "api_url": "http://127.0.0.1:9"})
    stream = tap.streams["tags"]
    row = {"id": "t1", "type": "tag", "attributes": {"name": "vip"}}
    with sdk_adapter.direct_writer(stream, None) as write:
        write(row)
    records = [m for m in messages(capsys.readouterr().out) if m["type"] == "RECORD"]
    assert [(m["stream"], m["record"]["id"]) for m in records] == [("tags", "t1")]
    stream.selected = False
    with sdk_adapter.direct_writer(stream, None) as write:
        write(row)
    assert not [m for m in messages(capsys.readouterr().out) if m["type"] == "RECORD"]


def messages(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
