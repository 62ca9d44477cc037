"""Make records match their schema before a target sees them.

Kustomer sometimes sends a number as a string, a single recipient where a list is
expected, or a value of another type entirely. A target that validates records would
reject the whole batch. Lossless fixes are applied silently; a value that cannot be
converted is set to null with a warning naming the field (or, with
``fail_on_type_mismatch``, stops the run with a one-line error).
"""

from __future__ import annotations

import decimal
import json
import logging
import re
import typing as t
from collections import Counter

from tap_kustomer.errors import UnexpectedResponseError

_INTEGER = re.compile(r"^[+-]?\d+$")
_NOT_COERCIBLE = object()


def _json_types(schema: dict[str, t.Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [str(x) for x in declared]
    return []


def _coerce(value: t.Any, json_type: str) -> t.Any:
    """A lossless conversion of ``value`` to ``json_type``, or ``_NOT_COERCIBLE``."""
    if json_type == "integer":
        if isinstance(value, str) and _INTEGER.match(value.strip()):
            return int(value.strip())
        if isinstance(value, (float, decimal.Decimal)) and value == int(value):
            return int(value)
    elif json_type == "number":
        if isinstance(value, str):
            try:
                number = decimal.Decimal(value.strip())
            except decimal.InvalidOperation:
                return _NOT_COERCIBLE
            return number if number.is_finite() else _NOT_COERCIBLE
    elif json_type == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, decimal.Decimal)):
            return str(value)
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True, default=str)
    elif json_type == "boolean":
        if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
            return value.strip().lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif json_type == "array" and value is not None:
        return [value]
    return _NOT_COERCIBLE


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float, decimal.Decimal),
    "object": (dict,),
    "array": (list,),
}


class _Node:
    """One schema node, compiled: the exact Python types allowed, and its children."""

    __slots__ = ("allowed", "items", "properties", "types")

    def __init__(self, schema: dict[str, t.Any]) -> None:
        self.types = _json_types(schema)
        known = [x for x in self.types if x in _PYTHON_TYPES]
        self.allowed: frozenset[type] | None = (
            frozenset(py for x in known for py in _PYTHON_TYPES[x]) if known else None
        )
        properties = schema.get("properties")
        self.properties = (
            {key: _Node(sub) for key, sub in properties.items() if isinstance(sub, dict)}
            if isinstance(properties, dict)
            else None
        )
        items = schema.get("items")
        self.items = _Node(items) if isinstance(items, dict) else None


class RecordConformer:
    """Conform records of one stream to its schema, counting what it had to change."""

    def __init__(
        self,
        stream_name: str,
        schema: dict[str, t.Any],
        *,
        fail_on_mismatch: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        """Bind the stream's schema and the mismatch policy."""
        self.stream_name = stream_name
        self.root = _Node(schema)
        self.fail_on_mismatch = fail_on_mismatch
        self.logger = logger or logging.getLogger(__name__)
        self.nulled: Counter[str] = Counter()
        self.coerced: Counter[str] = Counter()

    def conform(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """Fix ``record`` in place and return it."""
        self._object(record, self.root, "", record)
        return record

    def _object(
        self, node: dict[str, t.Any], schema: _Node, path: str, record: dict[str, t.Any]
    ) -> None:
        properties = schema.properties
        if not properties:
            return
        for key, value in node.items():
            sub = properties.get(key)
            if sub is None:
                continue
            if (sub.allowed is None or type(value) in sub.allowed) and (
                not (value.__class__ is dict or value.__class__ is list)
            ):
                continue  # the common case: a scalar of the right type
            node[key] = self._value(value, sub, f"{path}.{key}" if path else key, record)

    def _value(self, value: t.Any, schema: _Node, path: str, record: dict[str, t.Any]) -> t.Any:
        if schema.allowed is not None and type(value) not in schema.allowed:
            value = self._mismatch(value, schema.types, path, record)
        if isinstance(value, dict):
            self._object(value, schema, path, record)
        elif isinstance(value, list) and schema.items is not None:
            items = schema.items
            for index, item in enumerate(value):
                fits = items.allowed is None or type(item) in items.allowed
                if fits and not isinstance(item, (dict, list)):
                    continue
                value[index] = self._value(item, items, f"{path}[]", record)
        return value

    def _mismatch(
        self, value: t.Any, types: list[str], path: str, record: dict[str, t.Any]
    ) -> t.Any:
        for json_type in types:
            if json_type == "null":
                continue
            coerced = _coerce(value, json_type)
            if coerced is not _NOT_COERCIBLE:
                self.coerced[path] += 1
                return coerced
        expected = " or ".join(x for x in types if x != "null")
        if self.fail_on_mismatch:
            msg = (
                f"Kustomer sent {self.stream_name} record {record.get('id')!r} with "
                f"{path} of type {type(value).__name__} where {expected} is expected; set "
                "fail_on_type_mismatch to false to load such values as null with a warning"
            )
            raise UnexpectedResponseError(msg)
        if self.nulled[path] == 0:
            self.logger.warning(
                "Field %s of %s record %s is a %s, not %s: loaded as null (further such "
                "values of this field are counted at the end of the run)",
                path,
                self.stream_name,
                record.get("id"),
                type(value).__name__,
                expected,
            )
        self.nulled[path] += 1
        return None

    def summary(self) -> str | None:
        """One line of what was changed, if anything."""
        if not self.nulled and not self.coerced:
            return None
        parts = []
        if self.coerced:
            parts.append("converted " + ", ".join(f"{p} x{n}" for p, n in self.coerced.items()))
        if self.nulled:
            parts.append("nulled " + ", ".join(f"{p} x{n}" for p, n in self.nulled.items()))
        return f"{self.stream_name}: " + "; ".join(parts)
