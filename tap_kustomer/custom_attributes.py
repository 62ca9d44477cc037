"""Custom attributes: Kustomer types each one by the suffix of its name."""

from __future__ import annotations

import typing as t

# Kustomer types a custom attribute by the suffix of its name.
SUFFIX_TYPES: tuple[tuple[str, dict[str, t.Any]], ...] = (
    ("Str", {"type": ["string", "null"]}),
    ("Txt", {"type": ["string", "null"]}),
    ("Url", {"type": ["string", "null"]}),
    ("Tree", {"type": ["string", "null"]}),
    ("Id", {"type": ["string", "null"]}),
    ("Num", {"type": ["number", "null"]}),
    ("At", {"type": ["string", "null"], "format": "date-time"}),
    ("Bool", {"type": ["boolean", "null"]}),
)


def custom_attribute_schema(name: str, definition: t.Any) -> dict[str, t.Any] | None:
    """The JSON schema of one custom attribute, from its name suffix (None if unknown)."""
    multi = isinstance(definition, dict) and bool(definition.get("multi"))
    for suffix, schema in SUFFIX_TYPES:
        if name.endswith(suffix):
            if multi:
                return {"type": ["array", "null"], "items": dict(schema)}
            return dict(schema)
    return None


def custom_types_from_metadata(body: dict[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    """Schemas of the attributes a ``GET /v1/metadata/{resource}`` answer describes."""
    data = body.get("data")
    attributes = data.get("attributes") if isinstance(data, dict) else None
    properties = attributes.get("properties") if isinstance(attributes, dict) else None
    if not isinstance(properties, dict):
        return {}
    types = {}
    for name, definition in properties.items():
        schema = custom_attribute_schema(str(name), definition)
        if schema is not None:
            types[str(name)] = schema
    return types
