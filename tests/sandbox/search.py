"""Evaluation of ``POST /v1/customers/search`` bodies: criteria, sort, validation."""

from __future__ import annotations

import bisect
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import parse_ts

if TYPE_CHECKING:
    from .store import Store

QUERY_CONTEXT_RE = re.compile(
    r"^(company|customer|message|conversation|conversation_time|note|kobject|kobject_.*"
    r"|work_session|work_item)$"
)
BODY_KEYS = {
    "searchHash",
    "queryContext",
    "includeDeleted",
    "timeZone",
    "and",
    "or",
    "not",
    "sort",
    "aggs",
    "fields",
}
OPS = ("gte", "gt", "lte", "lt", "equals")


@dataclass(frozen=True)
class Dialect:
    """What one search endpoint accepts: body keys, contexts, custom fields, sorts."""

    body_keys: frozenset[str]
    contexts: re.Pattern[str]
    custom_fields: bool = True
    sortable: Callable[[str], bool] = lambda name: True


#: ``POST /v1/customers/search``: every field it knows sorts.
STANDARD = Dialect(frozenset(BODY_KEYS), QUERY_CONTEXT_RE)

Getter = Callable[[Any], Any]
Pred = Callable[[Any], bool]
IndexFn = Callable[[str, Getter], tuple[list[Any], list[Any]]]
FilterFn = Callable[[str, Callable[[], tuple[list[Any], list[Any]]]], tuple[list[Any], list[Any]]]


class SearchError(ValueError):
    """A malformed query; the server answers 400 with this message."""


def search_resource(context: str) -> str:
    """The resource whose read role a search of ``context`` needs (besides search).

    Every ``kobject_<klass>`` context needs the kobject role: the API's per-klass
    roles (``org.permission.kobject.kobject_*.read``) are not modelled.
    """
    return "kobject" if context.startswith("kobject_") else context


def _done_at(key: str) -> Getter:
    def get(c: dict[str, Any]) -> Any:
        block = c[key]
        return None if block is None else block["at"]

    return get


def build_fields(store: Store) -> dict[str, dict[str, tuple[str, Getter]]]:
    """Supported search fields per queryContext: name -> (type, getter)."""
    cust_id = lambda c: store.customers[c["cust"]]["id"]  # noqa: E731
    conv_id = lambda c: store.conversations[c.conv]["id"]  # noqa: E731
    user_id = lambda i: store.users[i]["id"]  # noqa: E731

    def done_by(key: str) -> Getter:
        return lambda c: None if c[key] is None else user_id(c[key]["by"])

    def company_id(c: dict[str, Any]) -> str | None:
        idx = c.get("company")
        return None if idx is None else str(store.companies[idx]["id"])

    def kobject_fields(prefix: str) -> dict[str, tuple[str, Getter]]:
        # The standard-attribute schema lists kobject_{created,updated,imported}_at;
        # the archive search lists ^kobject_.*_{created_at,updated_at,customer_id,
        # company_id}$. Which names a per-klass context takes in standard search is
        # UNCERTAIN, so a kobject_<klass> context accepts both spellings.
        return {
            f"{prefix}_created_at": ("dt", lambda k: k["created"]),
            f"{prefix}_updated_at": ("dt", lambda k: k["updated"]),
            f"{prefix}_imported_at": ("dt", lambda k: None),
            f"{prefix}_customer_id": (
                "str",
                lambda k: None if k["cust"] is None else store.customers[k["cust"]]["id"],
            ),
            f"{prefix}_company_id": ("str", company_id),
            f"{prefix}_id": ("str", lambda k: k["id"]),
        }

    klass_contexts = {}
    for klass in store.klasses:
        context = f"kobject_{klass['attributes']['name']}"
        klass_contexts[context] = {**kobject_fields("kobject"), **kobject_fields(context)}

    return {
        **klass_contexts,
        # company_created_at/company_updated_at are in the OAS's sort list and
        # archive-search fields, not in its standard-attribute schema (UNCERTAIN).
        "company": {
            "company_created_at": ("dt", lambda c: c["created"]),
            "company_updated_at": ("dt", lambda c: c["updated"]),
            "company_imported_at": ("dt", lambda c: c.get("imported")),
            "company_name": ("str", lambda c: c["name"]),
            "company_tags": ("list", lambda c: c["tags"]),
        },
        "kobject": kobject_fields("kobject"),
        "conversation": {
            "conversation_status": ("str", lambda c: c["status"]),
            "conversation_created_at": ("dt", lambda c: c["created"]),
            "conversation_updated_at": ("dt", lambda c: c["updated"]),
            "conversation_modified_at": ("dt", lambda c: c["modified"]),
            "conversation_last_done_created_at": ("dt", _done_at("lastDone")),
            "conversation_last_done_created_by": ("str", done_by("lastDone")),
            "conversation_first_done_created_by": ("str", done_by("firstDone")),
            "conversation_imported_at": ("dt", lambda c: c.get("imported")),
            "conversation_tags": ("list", lambda c: c["tags"]),
            "conversation_customer_id": ("str", cust_id),
            "conversation_message_count": ("num", lambda c: len(c["msgs"])),
            "conversation_note_count": ("num", lambda c: len(c["notes"])),
            "conversation_priority": ("num", lambda c: c["priority"]),
            "conversation_direction": ("str", lambda c: c["direction"]),
            "conversation_name": ("str", lambda c: c["name"]),
            "conversation_channels": ("list", lambda c: c["channels"]),
            "conversation_assigned_users": ("list", lambda c: [user_id(u) for u in c["assigned"]]),
        },
        "customer": {
            "customer_created_at": ("dt", lambda c: c["created"]),
            "customer_updated_at": ("dt", lambda c: c["updated"]),
            "customer_modified_at": ("dt", lambda c: c["modified"]),
            "customer_name": ("str", lambda c: c["name"]),
            "customer_email": ("list", lambda c: [e["email"] for e in c["emails"]]),
            "customer_locale": ("str", lambda c: c["locale"]),
            "customer_tags": ("list", lambda c: c["tags"]),
            "customer_companyId": ("str", company_id),
        },
        "message": {
            "message_created_at": ("dt", lambda m: m.created),
            "message_updated_at": ("dt", lambda m: m.updated),
            "message_sent_at": ("dt", lambda m: m.sent),
            "message_customer_id": ("str", lambda m: store.customers[m.cust]["id"]),
            "message_channel": ("str", lambda m: m.channel),
            "message_direction": ("str", lambda m: m.direction),
            "message_direction_type": ("str", lambda m: m.dtype),
            # not in Kustomer's standard-attribute list; accepted for convenience
            "message_conversation_id": ("str", conv_id),
        },
        "note": {
            "note_created_at": ("dt", lambda n: n.created),
            "note_updated_at": ("dt", lambda n: n.updated),
            "note_modified_at": ("dt", lambda n: n.updated),
            "note_conversation_id": ("str", conv_id),
            "note_customer_id": ("str", lambda n: store.customers[n.cust]["id"]),
            "note_user_mentions": ("list", lambda n: [user_id(u) for u in n.mentions]),
            "note_deleted": ("bool", lambda n: False),
        },
    }


_SUFFIX_TYPES = (("At", "dt"), ("Num", "num"), ("Bool", "bool"))


def _custom_field(context: str, name: str) -> tuple[str, Getter] | None:
    prefix = f"{context}_custom_"
    if context not in ("conversation", "customer", "company") or not name.startswith(prefix):
        return None
    attr = name[len(prefix) :]
    if not attr:
        return None
    kind = next((t for suffix, t in _SUFFIX_TYPES if attr.endswith(suffix)), "str")

    def get(rec: dict[str, Any]) -> Any:
        value = rec["custom"].get(attr)
        if kind == "dt" and isinstance(value, str):
            try:
                return parse_ts(value)
            except ValueError:
                return None
        return value

    return kind, get


def _combine(preds_and: list[Pred], preds_or: list[Pred], preds_not: list[Pred]) -> Pred:
    """One predicate: every ``and``, at least one ``or`` (if any), no ``not``."""

    def pred(rec: Any) -> bool:
        for p in preds_and:
            if not p(rec):
                return False
        if preds_or and not any(p(rec) for p in preds_or):
            return False
        return not any(p(rec) for p in preds_not)

    return pred


class Query:
    """A validated search body, compiled to a predicate and a sort."""

    def __init__(
        self,
        store: Store,
        body: Any,
        fields: dict[str, dict[str, tuple[str, Getter]]],
        strict: bool = True,
        max_criteria: int | None = 20,
        dialect: Dialect | None = None,
    ) -> None:
        self.max_criteria = max_criteria
        self.dialect = dialect or STANDARD
        if not isinstance(body, dict):
            raise SearchError("request body must be a JSON object")
        if strict:
            unknown = sorted(set(body) - self.dialect.body_keys)
            if unknown:
                raise SearchError(f"unknown body properties: {', '.join(unknown)}")
        context = body.get("queryContext")
        if not isinstance(context, str) or not self.dialect.contexts.match(context):
            raise SearchError(f"invalid queryContext: {context!r}")
        self.context = context
        self.fields = fields.get(context)
        tz = body.get("timeZone")
        if tz is not None and not isinstance(tz, str):
            raise SearchError("timeZone must be a string")
        self.tz = tz
        self.store = store
        preds_and = self._compile_group(body.get("and"))
        preds_or = self._compile_group(body.get("or"))
        preds_not = self._compile_group(body.get("not"))
        self.ranges = self._range_criteria(body.get("and"))
        self._preds = (preds_and, preds_or, preds_not)
        self._groups = {k: body.get(k) for k in ("and", "or", "not")}
        self.pred = _combine(preds_and, preds_or, preds_not)
        self.sort = self._compile_sort(body.get("sort"))
        canon = {k: body.get(k) for k in ("and", "or", "not", "sort", "timeZone")}
        self.cache_key = context + json.dumps(canon, sort_keys=True, default=str)

    # -- compile ---------------------------------------------------------------
    def _field(self, name: str) -> tuple[str, Getter]:
        if self.fields is not None and name in self.fields:
            return self.fields[name]
        custom = _custom_field(self.context, name) if self.dialect.custom_fields else None
        if custom is not None:
            return custom
        raise SearchError(f"unsupported search field {name!r} for queryContext {self.context!r}")

    def _compile_group(self, value: Any) -> list[Pred]:
        if value is None:
            return []
        if isinstance(value, dict):
            value = [value] if value else []
        if not isinstance(value, list):
            raise SearchError("and/or/not must be an object or a list of objects")
        if self.max_criteria is not None:
            # the OAS: arrays of at most 20 unique criteria
            if len(value) > self.max_criteria:
                raise SearchError(f"at most {self.max_criteria} criteria per and/or/not list")
            canon = [json.dumps(item, sort_keys=True, default=str) for item in value]
            if len(set(canon)) != len(canon):
                raise SearchError("criteria in an and/or/not list must be unique")
        return [self._compile_node(item) for item in value]

    def _compile_node(self, node: Any) -> Pred:
        if not isinstance(node, dict) or not node:
            raise SearchError(f"invalid criterion: {node!r}")
        parts: list[Pred] = []
        for key, spec in node.items():
            if key == "and":
                subs = self._compile_group(spec)
                parts.append(lambda r, s=subs: all(p(r) for p in s))
            elif key == "or":
                subs = self._compile_group(spec)
                parts.append(lambda r, s=subs: not s or any(p(r) for p in s))
            elif key == "not":
                subs = self._compile_group(spec)
                parts.append(lambda r, s=subs: not any(p(r) for p in s))
            else:
                parts.append(self._compile_criterion(key, spec))
        if len(parts) == 1:
            return parts[0]
        return lambda r: all(p(r) for p in parts)

    def _coerce(self, kind: str, value: Any) -> Any:
        if kind == "dt":
            try:
                return parse_ts(value, self.tz)
            except ValueError as exc:
                raise SearchError(str(exc)) from exc
        if kind == "num":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise SearchError(f"not a number: {value!r}")
            try:
                return float(value)
            except ValueError as exc:
                raise SearchError(f"not a number: {value!r}") from exc
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise SearchError(f"not a boolean: {value!r}")
            return value
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SearchError(f"not a string: {value!r}")
        return str(value)

    def _compile_criterion(self, name: str, spec: Any) -> Pred:
        kind, get = self._field(name)
        if not isinstance(spec, dict) or not spec:
            raise SearchError(f"criterion for {name} must be an object of operators")
        checks: list[Pred] = []
        for op, raw in spec.items():
            if op not in OPS:
                raise SearchError(f"unsupported operator {op!r}")
            if op == "equals" and isinstance(raw, list):
                wanted = {self._coerce(kind, v) for v in raw}
            elif op == "equals":
                wanted = {self._coerce(kind, raw)}
            else:
                wanted = None
                bound = self._coerce(kind, raw)
            checks.append(self._make_check(kind, get, op, wanted if op == "equals" else bound))
        if len(checks) == 1:
            return checks[0]
        return lambda r: all(c(r) for c in checks)

    @staticmethod
    def _make_check(kind: str, get: Getter, op: str, arg: Any) -> Pred:
        def values(rec: Any) -> list[Any]:
            value = get(rec)
            if value is None:
                return []
            if kind == "list":
                return [v for v in value if v is not None]
            if kind == "num":
                return [float(value)] if isinstance(value, (int, float)) else []
            if kind == "str":
                return [str(value)]
            return [value]

        if op == "equals":
            return lambda r: any(v in arg for v in values(r))
        if op == "gte":
            return lambda r: any(v >= arg for v in values(r))
        if op == "gt":
            return lambda r: any(v > arg for v in values(r))
        if op == "lte":
            return lambda r: any(v <= arg for v in values(r))
        return lambda r: any(v < arg for v in values(r))

    def _compile_sort(self, value: Any) -> list[tuple[str, Getter, bool]]:
        if value is None:
            return []
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise SearchError("sort must be an object or a list of objects")
        out: list[tuple[str, Getter, bool]] = []
        for item in items:
            if not isinstance(item, dict):
                raise SearchError("sort entries must be objects")
            for name, direction in item.items():
                if direction not in ("asc", "desc"):
                    raise SearchError(f"sort direction must be asc or desc, got {direction!r}")
                kind, get = self._field(name)
                if not self.dialect.sortable(name):
                    raise SearchError(f"{name!r} is not a sortable field")
                getter = _sort_getter(kind, get)
                out.append((name, getter, direction == "desc"))
        if len(out) > 5:
            raise SearchError("at most 5 sort keys")
        return out

    # -- run ---------------------------------------------------------------------
    def _range_criteria(self, value: Any) -> list[tuple[int, str, Getter, dict[str, int]]]:
        """Top-level ``and`` criteria that are pure datetime ranges (index-friendly).

        Each comes with its position in the ``and`` list.
        """
        items = [value] if isinstance(value, dict) else (value or [])
        out = []
        for position, item in enumerate(items):
            if not isinstance(item, dict) or len(item) != 1:
                continue
            ((name, spec),) = item.items()
            if name in ("and", "or", "not") or not isinstance(spec, dict) or not spec:
                continue
            kind, get = self._field(name)
            if kind != "dt" or not set(spec) <= {"gte", "gt", "lte", "lt"}:
                continue
            out.append((position, name, get, {op: self._coerce("dt", v) for op, v in spec.items()}))
        return out

    def residual(self, name: str) -> tuple[str, Pred] | None:
        """The criteria besides the ranges on ``name``: a cache key and a predicate.

        None when the ranges on ``name`` are the whole query.
        """
        on_name = {position for position, field, _, _ in self.ranges if field == name}
        preds_and, preds_or, preds_not = self._preds
        rest_and = [p for i, p in enumerate(preds_and) if i not in on_name]
        if not rest_and and not preds_or and not preds_not:
            return None
        items = self._groups["and"]
        items = [items] if isinstance(items, dict) else (items or [])
        rest_items = [item for i, item in enumerate(items) if i not in on_name]
        canon = {"and": rest_items, "or": self._groups["or"], "not": self._groups["not"]}
        key = f"{self.context}|{name}|{self.tz}|" + json.dumps(canon, sort_keys=True, default=str)
        return key, _combine(rest_and, preds_or, preds_not)

    def run(
        self,
        records: list[Any],
        index: IndexFn | None = None,
        need: int | None = None,
        filtered: FilterFn | None = None,
    ) -> list[Any]:
        """Filter and order; ties are finally ordered by id ascending.

        With ``index`` (sorted (value, id) per datetime field) the range criteria on
        one field narrow the candidates by bisection; the other criteria filter the
        index once per data version (``filtered`` caches that). When the sort starts
        with that field ascending, only the first ``need`` hits (and the rest of the
        boundary value's group) are fully ordered; the remainder stays in index
        order, which is all a page needs. Keyset walks stay fast on big orgs.
        """
        if index is not None and self.ranges:
            primary = self.sort[0][0] if self.sort else None
            name = next((r[1] for r in self.ranges if r[1] == primary), self.ranges[0][1])
            get = next(r[2] for r in self.ranges if r[1] == name)
            keys, recs = index(name, get)
            residual = self.residual(name)
            if residual is not None:
                key, pred = residual

                def narrow(
                    keys: list[Any] = keys, recs: list[Any] = recs, pred: Pred = pred
                ) -> tuple[list[Any], list[Any]]:
                    kept = [i for i, r in enumerate(recs) if pred(r)]
                    return [keys[i] for i in kept], [recs[i] for i in kept]

                keys, recs = filtered(key, narrow) if filtered else narrow()
            lo, hi = 0, len(keys)
            for _, field, _, ops in self.ranges:
                if field != name:
                    continue
                for op, bound in ops.items():
                    if op == "gte":
                        lo = max(lo, bisect.bisect_left(keys, bound))
                    elif op == "gt":
                        lo = max(lo, bisect.bisect_right(keys, bound))
                    elif op == "lte":
                        hi = min(hi, bisect.bisect_right(keys, bound))
                    else:
                        hi = min(hi, bisect.bisect_left(keys, bound))
            if lo >= hi:
                return []
            hits = recs[lo:hi]
            if not self.sort or self.sort[0][0] != name or self.sort[0][2]:
                return self._order(hits)
            if len(self.sort) == 1:
                return hits
            if need is None or need >= len(hits):
                return self._order(hits)
            # Everything up to the need-th hit's primary value, ordered in full.
            end = bisect.bisect_right(keys, keys[lo + need - 1], lo, hi) - lo
            return self._order(hits[:end]) + hits[end:]
        return self._order([r for r in records if self.pred(r)])

    def _order(self, hits: list[Any]) -> list[Any]:
        hits.sort(key=_rec_id)
        for _name, getter, desc in reversed(self.sort):
            present = [r for r in hits if getter(r) is not None]
            missing = [r for r in hits if getter(r) is None]
            present.sort(key=getter, reverse=desc)
            hits = present + missing
        return hits


def _sort_getter(kind: str, get: Getter) -> Getter:
    """Sort key: first element of lists, floats for numbers, None when missing."""
    if kind == "list":
        return lambda r: (get(r) or [None])[0]
    if kind == "num":

        def num(r: Any) -> float | None:
            value = get(r)
            return float(value) if isinstance(value, (int, float)) else None

        return num
    return get


def _rec_id(rec: Any) -> str:
    return rec["id"] if isinstance(rec, dict) else rec.id


class ResultCache:
    """Small LRU of query results, valid while no mutation happened."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[int, list[Any]]] = OrderedDict()

    def get(self, key: str, version: int) -> list[Any] | None:
        """Cached hits for key if computed at this data version."""
        hit = self.items.get(key)
        if hit is None or hit[0] != version:
            return None
        self.items.move_to_end(key)
        return hit[1]

    def put(self, key: str, version: int, hits: list[Any]) -> None:
        """Remember hits for key at version."""
        self.items[key] = (version, hits)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
