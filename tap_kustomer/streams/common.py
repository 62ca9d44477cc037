"""What the streams share: schemas with the org's custom attributes, flat columns."""

from __future__ import annotations

import copy
import typing as t

from singer_sdk import SchemaDirectory, StreamSchema
from typing_extensions import override

from tap_kustomer import schemas
from tap_kustomer.search import format_timestamp, parse_timestamp

SCHEMAS = SchemaDirectory(schemas)


class CustomAttributeSchema(StreamSchema):
    """The stream's schema file plus the org's custom attributes, typed by suffix.

    Custom attributes not described (or added later) still pass through, because
    ``attributes.custom`` allows additional properties; described ones become typed
    columns when a target flattens records.
    """

    @override
    def get_stream_schema(self, stream: t.Any, stream_class: t.Any) -> dict[str, t.Any]:
        """Read the definitions once per stream instance."""
        cached = stream.__dict__.get("_schema_with_custom_attributes")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        schema = copy.deepcopy(super().get_stream_schema(stream, stream_class))
        custom = path(schema, "properties", "attributes", "properties", "custom")
        if isinstance(custom, dict):
            custom.setdefault("properties", {}).update(stream.custom_attribute_types())
        stream.__dict__["_schema_with_custom_attributes"] = schema
        return schema


def path(record: dict[str, t.Any], *parts: str) -> t.Any:
    """The value at ``parts`` inside nested objects, or None where any step is missing."""
    node: t.Any = record
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def relationship_id(record: dict[str, t.Any], name: str) -> str | None:
    """The id a JSON:API relationship points at, or None."""
    value = path(record, "relationships", name, "data", "id")
    return str(value) if value else None


def iso(value: t.Any) -> str | None:
    """A timestamp column in one format, whatever precision the API used."""
    stamp = parse_timestamp(value)
    return format_timestamp(stamp) if stamp else None
