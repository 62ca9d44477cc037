"""Tests for the JSON Schema files in tap_kustomer/schemas.

The sample records under tests/fixtures/kustomer_samples/ are copies of the
examples in Kustomer's own OpenAPI spec plus a few anonymised records of a real
customer search page. They are stored raw (as the API returns them) and go through
the tap's own record processing (``post_process`` of its streams) before they are
validated against the streams' schemas.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from singer_sdk.helpers._typing import conform_record_data_types
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib import Schema

import tap_kustomer.schemas
from tap_kustomer.search import parse_timestamp
from tap_kustomer.tap import TapKustomer
from tests.tap_harness import REFERENCE_STREAMS, closed_port

SCHEMA_DIR = Path(tap_kustomer.schemas.__file__).parent
FIXTURES = Path(__file__).parent / "fixtures" / "kustomer_samples"
STREAMS = (
    "conversations",
    "messages",
    "notes",
    "attachments",
    "conversation_events",
    "customers",
    "tags",
    "companies",
    "kobjects",
    "audit_logs",
    *REFERENCE_STREAMS,
)
COMMON_COLUMNS = {"id", "type", "attributes", "relationships", "links", "updated_at"}
EXTRA_COLUMNS = {
    "conversations": {"resolved_at", "customer_id", "_sdc_deleted_at"},
    "messages": {"conversation_id", "customer_id"},
    "notes": {"conversation_id", "customer_id"},
    "attachments": {"conversation_id", "message_id", "customer_id"},
    "conversation_events": {"conversation_id", "customer_id"},
    "customers": {"_sdc_deleted_at"},
    "tags": set(),
    "companies": {"_sdc_deleted_at"},
    "kobjects": {"klass_id", "_sdc_deleted_at"},
    "audit_logs": {"created_at", "object_type", "object_id"},
    **{stream: set() for stream in REFERENCE_STREAMS},
}
RESOURCE_TYPES = {
    "conversations": "conversation",
    "messages": "message",
    "notes": "note",
    "customers": "customer",
    "attachments": "attachment",
    "conversation_events": "customer_event",
}
#: Columns of the common shape a stream does not have: attachments are never updated.
ABSENT_COLUMNS = {"attachments": {"updated_at"}, "audit_logs": {"updated_at"}}


# --------------------------------------------------------------------------- helpers


def load_schema(stream: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{stream}.json").read_text(encoding="utf-8"))


def load_records(fixture: str) -> list[dict[str, Any]]:
    payload = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    return payload["records"]


def _types(node: dict[str, Any]) -> list[str]:
    node_type = node.get("type", [])
    return [node_type] if isinstance(node_type, str) else list(node_type)


def walk(node: dict[str, Any], path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (path, subschema) for every schema node below and including `node`."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    for keyword in ("anyOf", "oneOf", "allOf"):
        for index, sub in enumerate(node.get(keyword, [])):
            yield from walk(sub, f"{path}<{keyword}{index}>")


@pytest.fixture(scope="module")
def tap() -> TapKustomer:
    """The tap, pointed at a closed port: custom attributes stay untyped, nothing is read."""
    config = {"api_key": "x" * 12, "api_url": f"http://127.0.0.1:{closed_port()}"}
    return TapKustomer(config=config, parse_env_config=False)


def processed(
    tap: TapKustomer, stream: str, raw: dict[str, Any], context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``raw`` as the tap's stream writes it: its own ``post_process`` (on a copy)."""
    record = tap.streams[stream].post_process(copy.deepcopy(raw), context)
    assert record is not None, f"{stream} dropped record {raw.get('id')}"
    return record


FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value:
        raise ValueError(value)
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None


def validator(tap: TapKustomer, stream: str) -> jsonschema.Draft202012Validator:
    """A validator of the schema the tap's stream declares."""
    schema = tap.streams[stream].schema
    return jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)


def assert_valid(tap: TapKustomer, stream: str, record: dict[str, Any]) -> None:
    errors = sorted(validator(tap, stream).iter_errors(record), key=lambda e: list(e.path))
    messages = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    assert not messages, f"{stream} record {record.get('id')} invalid:\n" + "\n".join(messages)


def relationship(type_: str, id_: str, self_link: str) -> dict[str, Any]:
    return {"links": {"self": self_link}, "data": {"type": type_, "id": id_}}


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("stream", STREAMS)
def test_schema_is_valid_draft_2020_12(stream: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(stream))


@pytest.mark.parametrize("stream", STREAMS)
def test_top_level_shape(stream: str) -> None:
    schema = load_schema(stream)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["id"]
    absent = ABSENT_COLUMNS.get(stream, set())
    assert set(schema["properties"]) == (COMMON_COLUMNS - absent) | EXTRA_COLUMNS[stream]
    assert schema["properties"]["id"] == {"type": "string"}
    if "updated_at" not in absent:
        assert schema["properties"]["updated_at"] == {
            "type": ["string", "null"],
            "format": "date-time",
        }
    links = schema["properties"]["links"]
    assert set(links["properties"]) >= {"self", "related"}
    assert links["additionalProperties"] is True


@pytest.mark.parametrize("stream", STREAMS)
def test_every_nested_object_keeps_unknown_keys(stream: str) -> None:
    schema = load_schema(stream)
    for path, node in walk(schema):
        if path == "$" or "object" not in _types(node):
            continue
        assert node.get("additionalProperties") is True, path
        # The SDK's record conformance indexes node["properties"] for dict values.
        assert isinstance(node.get("properties"), dict), path


@pytest.mark.parametrize("stream", STREAMS)
def test_every_node_is_typed_and_nullable(stream: str) -> None:
    schema = load_schema(stream)
    for path, node in walk(schema):
        if path in {"$", "$.id"}:
            continue
        types = _types(node)
        assert types, f"{path} has no type (the SDK cannot conform untyped nodes)"
        assert "null" in types, f"{path} is not nullable"
        if "array" in types:
            assert isinstance(node.get("items"), dict), f"{path} has no items schema"
            assert _types(node["items"]), f"{path}[] has no type"


@pytest.mark.parametrize("stream", STREAMS)
def test_timestamps_are_date_time(stream: str) -> None:
    schema = load_schema(stream)
    for path, node in walk(schema):
        name = path.rsplit(".", 1)[-1]
        if name.endswith("At") or name.endswith("_at"):
            assert node.get("format") == "date-time", path
            assert _types(node) == ["string", "null"], path


@pytest.mark.parametrize("stream", STREAMS)
def test_custom_attributes_are_open(stream: str) -> None:
    attributes = load_schema(stream)["properties"]["attributes"]
    assert attributes["additionalProperties"] is True
    if stream in {"tags", "attachments", "conversation_events", "audit_logs", *REFERENCE_STREAMS}:
        return
    assert attributes["properties"]["custom"] == {
        "type": ["object", "null"],
        "properties": {},
        "additionalProperties": True,
    }


@pytest.mark.parametrize("stream", STREAMS)
def test_relationships_shape(stream: str) -> None:
    relationships = load_schema(stream)["properties"]["relationships"]
    assert relationships["additionalProperties"] is True
    expected = {
        "conversations": {
            "org",
            "customer",
            "messages",
            "createdBy",
            "modifiedBy",
            "queue",
            "brand",
            "endedBy",
            "pinnedBy",
            "sla",
            "slaVersion",
            "subStatus",
        },
        "messages": {"org", "customer", "conversation", "createdBy", "modifiedBy", "shortcuts"},
        "notes": {
            "org",
            "customer",
            "conversation",
            "createdBy",
            "modifiedBy",
            "deletedBy",
            "userMentions",
            "teamMentions",
        },
        "attachments": {"org", "message"},
        "conversation_events": {"org", "customer", "conversation", "createdBy", "modifiedBy"},
        "customers": {"org", "createdBy", "modifiedBy"},
        "tags": {"org", "createdBy", "modifiedBy", "deletedBy"},
        "companies": {"org", "createdBy", "modifiedBy"},
        "kobjects": {"org", "klass", "customer", "company"},
        "users": {"org", "createdBy", "modifiedBy"},
        "teams": {"org", "createdBy", "modifiedBy", "deletedBy"},
        "klasses": {"org", "kobjects"},
        "shortcuts": {"org", "createdBy", "modifiedBy", "parent", "accessTeams", "accessUsers"},
        "brands": {"org", "createdBy", "modifiedBy"},
        "business_schedules": {"org", "createdBy", "modifiedBy", "deletedBy"},
        "queues": {"org", "createdBy", "modifiedBy"},
        "satisfaction_surveys": {"org", "createdBy", "modifiedBy", "template"},
        "audit_logs": {"user"},
    }[stream]
    assert expected <= set(relationships["properties"])
    many = {"shortcuts", "userMentions", "teamMentions"}
    many |= {"accessTeams", "accessUsers", "attachments"}  # of shortcuts
    for name, rel in relationships["properties"].items():
        assert set(rel["properties"]) == {"links", "data", "meta"}, name
        data_types = _types(rel["properties"]["data"])
        if name in many:
            assert "array" in data_types, name
            assert set(rel["properties"]["data"]["items"]["properties"]) == {"type", "id"}
        else:
            assert "object" in data_types, name
            assert set(rel["properties"]["data"]["properties"]) == {"type", "id"}


def test_key_attribute_types() -> None:
    conversation = load_schema("conversations")["properties"]["attributes"]["properties"]
    for name in ("messageCount", "noteCount", "outboundMessageCount", "priority", "rev"):
        assert _types(conversation[name]) == ["integer", "null"], name
    assert _types(conversation["satisfaction"]) == ["number", "null"]
    assert _types(conversation["sentiment"]["properties"]["confidence"]) == ["number", "null"]
    for name in ("tags", "assignedUsers", "assignedTeams", "channels"):
        assert conversation[name]["items"]["type"] == ["string", "null"], name
    last_done = conversation["lastDone"]["properties"]
    assert last_done["createdAt"]["format"] == "date-time"
    assert {
        "createdBy",
        "createdByTeams",
        "assignedTeams",
        "assignedUsers",
        "time",
        "businessTime",
    } <= set(last_done)
    assert conversation["lastDone"] == conversation["firstDone"]

    meta = load_schema("messages")["properties"]["attributes"]["properties"]["meta"]
    for key in ("to", "cc", "bcc"):
        assert set(meta["properties"][key]["items"]["properties"]) == {"email", "name", "external"}

    customer = load_schema("customers")["properties"]["attributes"]["properties"]
    assert set(customer["emails"]["items"]["properties"]) >= {"email", "verified", "type", "id"}
    assert _types(customer["deleted"]) == ["boolean", "null"]


# --------------------------------------------------------------------------- streams and SDK


def test_the_tap_has_one_stream_per_schema_file(tap: TapKustomer) -> None:
    files = {path.stem for path in SCHEMA_DIR.glob("*.json")}
    assert set(tap.streams) == files == set(STREAMS)


@pytest.mark.parametrize("stream", STREAMS)
def test_stream_schema_is_its_file_when_no_custom_attribute_is_described(
    tap: TapKustomer, stream: str
) -> None:
    assert tap.streams[stream].schema == load_schema(stream)


@pytest.mark.parametrize("stream", STREAMS)
def test_singer_schema_round_trip_is_lossless(stream: str) -> None:
    schema = load_schema(stream)
    assert Schema.from_dict(schema).to_dict() == schema


def test_sdk_conformance_keeps_unknown_nested_attributes(tap: TapKustomer) -> None:
    raw = copy.deepcopy(load_records("messages_openapi.json")[0])
    raw["attributes"]["meta"]["to"] = [{"email": "a@example.com", "unexpected": "kept"}]
    raw["attributes"]["brandNewAttribute"] = {"x": 1}
    raw["relationships"]["shopify-orders"] = {"links": {"self": "/v1/x"}, "meta": {"k": True}}
    record = processed(tap, "messages", raw)
    assert record["attributes"]["brandNewAttribute"] == {"x": 1}
    assert record["attributes"]["meta"]["to"][0]["unexpected"] == "kept"
    assert record["relationships"]["shopify-orders"]["meta"] == {"k": True}
    conformed = conform_record_data_types(
        "messages",
        record,
        tap.streams["messages"].schema,
        TypeConformanceLevel.RECURSIVE,
        logging.getLogger("test"),
    )
    assert conformed["attributes"]["brandNewAttribute"] == {"x": 1}
    assert conformed["attributes"]["meta"]["to"][0]["unexpected"] == "kept"
    assert conformed["relationships"]["shopify-orders"]["meta"] == {"k": True}
    assert conformed == record


@pytest.mark.parametrize(
    ("stream", "fixture"),
    [
        ("conversations", "conversations_openapi.json"),
        ("messages", "messages_openapi.json"),
        ("notes", "notes_openapi.json"),
        ("customers", "customers_openapi.json"),
        ("customers", "customers_search_sample.json"),
    ],
)
def test_sdk_conformance_of_samples_is_lossless(
    tap: TapKustomer, stream: str, fixture: str
) -> None:
    schema = tap.streams[stream].schema
    for raw in load_records(fixture):
        record = processed(tap, stream, raw)
        conformed = conform_record_data_types(
            stream, record, schema, TypeConformanceLevel.RECURSIVE, logging.getLogger("test")
        )
        assert conformed == record


# --------------------------------------------------------------------------- sample records


@pytest.mark.parametrize(
    ("stream", "fixture"),
    [
        ("conversations", "conversations_openapi.json"),
        ("messages", "messages_openapi.json"),
        ("notes", "notes_openapi.json"),
        ("customers", "customers_openapi.json"),
        ("customers", "customers_search_sample.json"),
        ("conversation_events", "conversation_events_openapi.json"),
    ],
)
def test_sample_records_validate(tap: TapKustomer, stream: str, fixture: str) -> None:
    records = load_records(fixture)
    assert records
    for raw in records:
        assert raw["type"] == RESOURCE_TYPES[stream]
        record = processed(tap, stream, raw, {"conversation_id": "c1"})
        assert parse_timestamp(record["updated_at"]) == parse_timestamp(
            raw["attributes"]["updatedAt"]
        )
        assert_valid(tap, stream, record)


def test_attachment_samples_get_the_id_their_list_only_links_to(tap: TapKustomer) -> None:
    records = load_records("attachments_openapi.json")
    assert [("id" in raw) for raw in records] == [False, False, True]
    context = {"conversation_id": "c1", "customer_id": "u1"}
    written = [processed(tap, "attachments", raw, context) for raw in records]
    for raw, record in zip(records, written, strict=True):
        assert record["id"] == raw["links"]["self"].rsplit("/", 1)[1]
        assert record["message_id"] == raw["relationships"]["message"]["data"]["id"]
        assert (record["conversation_id"], record["customer_id"]) == ("c1", "u1")
        assert record["links"]["related"].startswith("https://")
        assert "updated_at" not in record
        assert_valid(tap, "attachments", record)


def test_an_attachment_without_any_id_is_skipped_with_a_warning(
    tap: TapKustomer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = copy.deepcopy(load_records("attachments_openapi.json")[0])
    del raw["links"]["self"]
    assert tap.streams["attachments"].post_process(raw, {"conversation_id": "c9"}) is None
    assert "attachment of conversation c9" in caplog.text


def test_message_sample_convenience_columns(tap: TapKustomer) -> None:
    record = processed(tap, "messages", load_records("messages_openapi.json")[0])
    assert record["conversation_id"] == record["relationships"]["conversation"]["data"]["id"]
    assert record["customer_id"] == record["relationships"]["customer"]["data"]["id"]
    assert record["relationships"]["customer"]["data"]["type"] == "customers"


@pytest.mark.parametrize("stream", ["messages", "notes"])
def test_a_thread_record_without_its_conversation_link_takes_the_conversation_read(
    tap: TapKustomer, stream: str
) -> None:
    raw = copy.deepcopy(load_records(f"{stream}_openapi.json")[0])
    del raw["relationships"]["conversation"]
    record = processed(tap, stream, raw, {"conversation_id": "65f0c0ffee0000000000c0de"})
    assert record["conversation_id"] == "65f0c0ffee0000000000c0de"
    assert_valid(tap, stream, record)


def test_note_sample_user_mentions_are_a_list(tap: TapKustomer) -> None:
    records = [processed(tap, "notes", raw) for raw in load_records("notes_openapi.json")]
    mentioned = [r for r in records if "userMentions" in r["relationships"]]
    assert mentioned
    assert isinstance(mentioned[0]["relationships"]["userMentions"]["data"], list)


def _done_conversation() -> dict[str, Any]:
    conversation_id = "65f0c0ffee0000000000c0de"
    return {
        "type": "conversation",
        "id": conversation_id,
        "attributes": {
            "name": "Refund",
            "status": "done",
            "channels": ["email"],
            "messageCount": 3,
            "noteCount": 1,
            "outboundMessageCount": 1,
            "inboundMessageCount": 2,
            "priority": 3,
            "satisfaction": 0.5,
            "satisfactionLevel": {"score": 1, "rating": 5, "status": "rated", "answers": []},
            "sentiment": {"polarity": -1, "confidence": 0.73},
            "createdAt": "2024-05-01T09:00:00.000Z",
            "updatedAt": "2024-05-02T10:00:00.000Z",
            "modifiedAt": "2024-05-02T10:00:00.000Z",
            "tags": ["5849765dc41e372700cc84a3"],
            "suggestedTags": [{"tag": "5849765dc41e372700cc84a4", "confidence": 0.4}],
            "assignedUsers": ["58190b991f2932100010d683"],
            "assignedTeams": [],
            "firstResponse": {
                "sentAt": "2024-05-01T09:05:00.000Z",
                "time": 300,
                "businessTime": 300,
                "createdByTeams": [],
            },
            "lastDone": {
                "createdAt": "2024-05-02T10:00:00.000Z",
                "createdBy": "58190b991f2932100010d683",
                "createdByTeams": [],
                "assignedUsers": ["58190b991f2932100010d683"],
                "assignedTeams": [],
                "time": 90000,
                "businessTime": 27122,
                "messageCountByChannel": {"email": 3},
                "someFutureKey": True,
            },
            "firstDone": {"createdByTeams": [], "assignedTeams": [], "assignedUsers": []},
            "doneCount": 1,
            "reopenCount": 0,
            "totalDone": {"time": 10, "businessTime": 5},
            "modificationHistory": {
                "statusAt": "2024-05-02T10:00:00.000Z",
                "brandAt": None,
                "someNewAt": "2024-05-02T10:00:00.000Z",
            },
            "snooze": {"time": None, "status": "canceled"},
            "custom": {"contactReasonTree": "billing.refund", "orderNum": 12.5},
            "predictions": [{"model": "x"}],
            "roleGroupVersions": [],
            "unknownTopLevelAttribute": {"anything": [1, 2]},
        },
        "relationships": {
            "customer": relationship(
                "customer", "58210c3db0f09110006b7953", "/v1/customers/58210c3db0f09110006b7953"
            ),
            "messages": {"links": {"self": f"/v1/conversations/{conversation_id}/messages"}},
            "queue": relationship(
                "queue", "5a7b6d7067cd0a00013a7982", "/v1/routing/queues/5a7b6d7067cd0a00013a7982"
            ),
            "brand": {"data": None},
        },
        "links": {"self": f"/v1/conversations/{conversation_id}"},
    }


def test_done_conversation_with_resolution_time_validates(tap: TapKustomer) -> None:
    record = processed(tap, "conversations", _done_conversation())
    assert record["resolved_at"] == "2024-05-02T10:00:00.000Z"
    assert record["customer_id"] == "58210c3db0f09110006b7953"
    assert_valid(tap, "conversations", record)


def test_open_conversation_has_null_resolution_time(tap: TapKustomer) -> None:
    raw = _done_conversation()
    raw["attributes"]["status"] = "open"
    raw["attributes"]["lastDone"] = {"createdByTeams": [], "assignedTeams": [], "assignedUsers": []}
    record = processed(tap, "conversations", raw)
    assert record["resolved_at"] is None
    assert_valid(tap, "conversations", record)


@pytest.mark.parametrize(
    ("to_value", "expected"),
    [
        ([{"email": "a@example.com", "name": "A"}], [{"email": "a@example.com", "name": "A"}]),
        ({"email": "a@example.com"}, [{"email": "a@example.com"}]),
        ("a@example.com", [{"email": "a@example.com"}]),
        ("+15550001111", [{"external": "+15550001111"}]),
        ([], []),
    ],
)
def test_message_recipient_variants_validate(
    tap: TapKustomer, to_value: Any, expected: list[Any]
) -> None:
    raw = copy.deepcopy(load_records("messages_openapi.json")[0])
    raw["attributes"]["meta"]["to"] = to_value
    raw["attributes"]["meta"]["cc"] = to_value
    raw["attributes"]["meta"]["bcc"] = to_value
    record = processed(tap, "messages", raw)
    assert record["attributes"]["meta"]["to"] == expected
    assert record["attributes"]["meta"]["cc"] == expected
    assert record["attributes"]["meta"]["bcc"] == expected
    assert_valid(tap, "messages", record)


def test_unnormalised_recipient_string_is_rejected(tap: TapKustomer) -> None:
    raw = copy.deepcopy(load_records("messages_openapi.json")[0])
    raw["attributes"]["meta"]["to"] = "a@example.com"
    record = processed(tap, "messages", raw)
    assert_valid(tap, "messages", record)
    record["attributes"]["meta"]["to"] = "a@example.com"
    assert not validator(tap, "messages").is_valid(record)


def test_voice_message_and_error_validate(tap: TapKustomer) -> None:
    record = processed(
        tap,
        "messages",
        {
            "type": "message",
            "id": "67dd47dfbc632c1804db1bf2",
            "attributes": {
                "channel": "voice",
                "direction": "in",
                "directionType": "initial-in",
                "status": "error",
                "size": 0,
                "sentiment": {"polarity": 0, "confidence": 0.61},
                "meta": {
                    "trackingId": "t-1",
                    "placedAt": "2024-05-01T09:00:00.000Z",
                    "answeredAt": None,
                    "endedAt": "2024-05-01T09:03:00.000Z",
                    "externalRecordingUrl": None,
                    "status": "completed",
                    "payload": {"callSid": "CA1"},
                    "to": "+15550001111",
                },
                "error": {
                    "status": 400,
                    "code": "invalid-recipient",
                    "title": "x",
                    "meta": {"appErrorCode": 406},
                },
                "errorAt": "2024-05-01T09:00:00.000Z",
                "createdAt": "2024-05-01T09:00:00.000Z",
                "updatedAt": "2024-05-01T09:00:00.000Z",
                "reactions": [],
                "intentDetections": [],
            },
            "relationships": {
                "conversation": relationship(
                    "conversation",
                    "65f0c0ffee0000000000c0de",
                    "/v1/conversations/65f0c0ffee0000000000c0de",
                ),
                "shortcuts": {"data": [{"type": "shortcut", "id": "5a7b6d7067cd0a00013a7983"}]},
            },
            "links": {"self": "/v1/messages/67dd47dfbc632c1804db1bf2"},
        },
    )
    assert record["conversation_id"] == "65f0c0ffee0000000000c0de"
    assert record["customer_id"] is None
    assert record["attributes"]["meta"]["to"] == [{"external": "+15550001111"}]
    assert_valid(tap, "messages", record)


def test_deleted_note_validates(tap: TapKustomer) -> None:
    record = processed(
        tap,
        "notes",
        {
            "type": "note",
            "id": "5828a3be7c7f551a00b5b721",
            "attributes": {
                "body": "Ping __Agent Smith__",
                "createdAt": "2024-05-01T09:00:00.000Z",
                "updatedAt": "2024-05-03T09:00:00.000Z",
                "modifiedAt": "2024-05-03T09:00:00.000Z",
                "createdByTeams": ["5a7b6d7067cd0a00013a7984"],
                "deleted": True,
                "deletedAt": "2024-05-03T09:00:00.000Z",
            },
            "relationships": {
                "deletedBy": relationship(
                    "user", "58190b991f2932100010d683", "/v1/users/58190b991f2932100010d683"
                ),
                "userMentions": {"data": [{"type": "user", "id": "58190b991f2932100010d683"}]},
                "teamMentions": {"data": []},
            },
            "links": {"self": "/v1/notes/5828a3be7c7f551a00b5b721"},
        },
    )
    assert_valid(tap, "notes", record)


def test_tag_record_validates(tap: TapKustomer) -> None:
    record = processed(
        tap,
        "tags",
        {
            "type": "tag",
            "id": "5849765dc41e372700cc84a3",
            "attributes": {
                "name": "refund",
                "color": "#ff0000",
                "createdAt": "2016-12-08T15:13:21.696Z",
                "updatedAt": "2016-12-08T15:13:21.696Z",
                "modifiedAt": None,
                "deleted": False,
                "deletedAt": None,
            },
            "relationships": {
                "org": relationship(
                    "org", "57f29863a1dbf61100e6aa92", "/v1/orgs/57f29863a1dbf61100e6aa92"
                ),
            },
            "links": {"self": "/v1/tags/5849765dc41e372700cc84a3"},
        },
    )
    assert record["updated_at"] == "2016-12-08T15:13:21.696Z"
    assert_valid(tap, "tags", record)


@pytest.mark.parametrize(
    ("stream", "mutate"),
    [
        ("conversations", lambda r: r["attributes"].__setitem__("messageCount", "three")),
        ("conversations", lambda r: r["attributes"]["lastDone"].__setitem__("createdAt", 5)),
        ("conversations", lambda r: r["attributes"].__setitem__("tags", "not-a-list")),
        ("conversations", lambda r: r.__setitem__("unexpectedColumn", 1)),
        ("conversations", lambda r: r.pop("id")),
        ("conversations", lambda r: r["attributes"].__setitem__("createdAt", "yesterday")),
    ],
)
def test_schema_rejects_bad_records(tap: TapKustomer, stream: str, mutate: Any) -> None:
    record = processed(tap, stream, _done_conversation())
    assert_valid(tap, stream, record)
    mutate(record)
    assert not validator(tap, stream).is_valid(record)
