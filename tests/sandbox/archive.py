"""Archive search (``POST /v1/customers/archive/search``): its body, fields and sorts.

Kustomer's standard search holds records updated in the last two years; its archive
search holds the older ones, with a smaller body schema (OAS, ``CustomerArchiveSearch``):
no ``note`` context, no ``aggs``/``fields``/``searchHash``, a short list of filterable
fields (no ``conversation_status``, no ``conversation_last_done_created_at``) and a
shorter list of sortable ones. The records, the paging and the envelope are those of
standard search.
"""

from __future__ import annotations

import re
from typing import Any

from .search import Dialect, Getter

ARCHIVE_PATH = "/v1/customers/archive/search"
ARCHIVE_CONTEXT_RE = re.compile(r"^(message|conversation|customer|kobject|kobject_.*|company)$")
ARCHIVE_BODY_KEYS = frozenset(
    {"queryContext", "includeDeleted", "timeZone", "and", "or", "not", "sort"}
)

#: The OAS's filterable fields per context (its ``any_text`` fields are not modelled).
_FILTERABLE = {
    "conversation": ("id", "created_at", "updated_at", "customer_id", "deleted"),
    "customer": ("id", "companyId", "created_at", "updated_at", "deleted"),
    "message": ("id", "created_at", "updated_at", "conversation_id"),
    "kobject": ("id", "created_at", "updated_at", "customer_id", "company_id"),
    "company": ("created_at", "updated_at"),
}
_SORTABLE = re.compile(
    r"^(conversation_(created_at|updated_at|customer_id|deleted)"
    r"|customer_(companyId|created_at|updated_at|deleted)"
    r"|message_(id|created_at|updated_at)"
    r"|kobject.*_(created|updated)_at"
    r"|company_(created_at|updated_at))$"
)

ARCHIVE = Dialect(
    ARCHIVE_BODY_KEYS,
    ARCHIVE_CONTEXT_RE,
    custom_fields=False,
    sortable=lambda name: bool(_SORTABLE.match(name)),
)


def _id_field(prefix: str) -> tuple[str, Getter]:
    return "str", lambda rec: rec["id"] if isinstance(rec, dict) else rec.id


def archive_fields(
    standard: dict[str, dict[str, tuple[str, Getter]]],
) -> dict[str, dict[str, tuple[str, Getter]]]:
    """The archive's fields per context, taken from standard search's where they exist."""
    out: dict[str, dict[str, tuple[str, Getter]]] = {}
    for context, fields in standard.items():
        base = "kobject" if context.startswith("kobject") else context
        names = _FILTERABLE.get(base)
        if names is None:
            continue  # note: not in the archive
        prefixes = {base, context}
        table: dict[str, tuple[str, Getter]] = {}
        for prefix in prefixes:
            for name in names:
                full = f"{prefix}_{name}"
                if full in fields:
                    table[full] = fields[full]
                elif name == "id":
                    table[full] = _id_field(prefix)
                elif name == "deleted":
                    table[full] = ("bool", _never_deleted)
        out[context] = table
    return out


def _never_deleted(rec: Any) -> bool:
    """The sandbox keeps no deleted records in search."""
    return False
