"""The org's audit log (``GET /v1/audit-logs``) and permanent deletes.

The store tells the log about every change of a conversation, customer, company or
kobject it makes after the org was generated (``before``/``after``, like the outbound
webhooks' observer) and about every permanent delete (``deleted``). Of the generated
history the log holds one create event (no user, no ``changes``) per record created
within the retention (365 days before the first read of the log); older ones expired.

Listing (the OAS's parameters):

* newest first (``createdAt``, then the order the changes happened, descending);
* ``count``: default 100, clamped to ``audit_max_page_size`` (1,000 as the OAS says);
* ``before=<id>``: the events older than that one (``links.next`` uses it);
  ``after=<id>``: the events newer than it (``links.prev``), still newest first. The OAS
  says each "requires" the other; here either works alone (UNCERTAIN);
* ``filter[objectType]`` (here also a comma list, UNCERTAIN), ``filter[include]`` (more
  object types, OR), ``filter[objectId]``, ``filter[userId]``;
* ``filter[start]`` inclusive and ``filter[end]`` exclusive on ``createdAt`` (whether
  either bound is inclusive upstream is UNCERTAIN);
* ``meta {count, total, cursorCount}``; ``links {self, first, prev, next}``, relative,
  ``next`` null on the last page (upstream may always offer one, UNCERTAIN).

UNCERTAIN upstream, chosen here: the verb of a delete (``eventVerb: delete``, name
``kustomer.<type>.delete``); the object type of a kobject (``kobject``, not in the OAS's
enum); what ``changes`` holds (the rendered attributes and relationships that differ;
null on create and delete); ``publishedAt`` (one second after ``createdAt``).
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlencode

from .clock import fmt_ms, parse_ts

#: The kinds whose changes and deletes the log records.
AUDITED = ("conversation", "customer", "company", "kobject")
#: Retention: ``expiresAt`` is about a year after ``createdAt`` (the OAS example).
RETENTION_MS = 365 * 24 * 3600 * 1000


class ApiQueryError(ValueError):
    """A query the endpoint refuses (HTTP 400)."""


class AuditLog:
    """Every audited change, oldest first; served newest first."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.events: list[dict[str, Any]] = []
        self._by_id: dict[str, int] = {}
        self._before: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._seq = itertools.count()
        self._seeded = False
        self._created: set[tuple[str, str]] = set()

    # -- hooks called by the store ------------------------------------------------
    def before(self, kind: str, idx: int, new: bool) -> None:
        """Remember the record as GET renders it before a change (None: a creation)."""
        if kind not in AUDITED or self.store.generating:
            return
        key = (kind, idx)
        if key not in self._before:
            rec = None if new else self.store.render(kind, self.store.records(kind)[idx])
            self._before[key] = rec

    def after(self, kind: str, idx: int, at: int) -> None:
        """Log a create or update of the record ``before`` saw."""
        if kind not in AUDITED or self.store.generating or (kind, idx) not in self._before:
            return
        old = self._before.pop((kind, idx))
        new = self.store.render(kind, self.store.records(kind)[idx])
        verb = "create" if old is None else "update"
        changes = None if old is None else diff(old, new)
        if old is None:
            self._created.add((kind, new["id"]))
        self._add(kind, new["id"], verb, at, _actor(new), changes)

    def deleted(self, kind: str, record_id: str, at: int, user_id: str | None) -> dict[str, Any]:
        """Log a permanent delete; returns the event as the endpoint serves it."""
        return self._add(kind, record_id, "delete", at, user_id, None)

    def _add(
        self,
        kind: str,
        object_id: str,
        verb: str,
        at: int,
        user_id: str | None,
        changes: dict[str, Any] | None,
    ) -> dict[str, Any]:
        seq = next(self._seq)
        event_id = f"{(at // 1000) & 0xFFFFFFFF:08x}{self.store.salt & 0xFFFFFF:06x}{seq:010x}"
        event = {
            "type": "audit_log",
            "id": event_id,
            "attributes": {
                "eventName": f"kustomer.{kind}.{verb}",
                "eventVerb": verb,
                "org": self.store.org_id,
                "userId": user_id,
                "userType": "user" if user_id else "system",
                "objectId": object_id,
                "objectType": kind,
                "client": "kustomer-sandbox",
                "ip": None,
                "changes": changes,
                "createdAt": fmt_ms(at),
                "publishedAt": fmt_ms(at + 1000),
                "expiresAt": fmt_ms(at + RETENTION_MS),
            },
            "relationships": {
                "user": {
                    "links": {"self": f"/v1/users/{user_id}"},
                    "data": {"type": "user", "id": user_id},
                }
            },
            "links": {"self": f"/v1/audit-logs/{event_id}"},
            "_key": (at, seq),
        }
        self._by_id[event_id] = len(self.events)
        self.events.append(event)
        return served(event)

    # -- reading ---------------------------------------------------------------------
    def _seed(self) -> None:
        """Create events of the generated records still within the retention.

        Made on the first read, not when the org is generated: big orgs that never read
        the log pay nothing.
        """
        if self._seeded:
            return
        self._seeded = True
        horizon = self.store.clock.now_ms() - RETENTION_MS
        for kind in AUDITED:
            for rec in self.store.records(kind):
                if rec["created"] >= horizon and (kind, rec["id"]) not in self._created:
                    self._add(kind, rec["id"], "create", rec["created"], None, None)

    def matching(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The events the filters of ``query`` select, newest first (cursor not applied)."""
        self._seed()
        types = _split(query.get("filter[objectType]")) + _split(query.get("filter[include]"))
        object_id = query.get("filter[objectId]")
        user_id = query.get("filter[userId]")
        start = _bound(query, "filter[start]")
        end = _bound(query, "filter[end]")
        out = []
        for event in self.events:
            attrs = event["attributes"]
            at = event["_key"][0]
            if types and attrs["objectType"] not in types:
                continue
            if object_id and attrs["objectId"] != object_id:
                continue
            if user_id and attrs["userId"] != user_id:
                continue
            if (start is not None and at < start) or (end is not None and at >= end):
                continue
            out.append(event)
        out.sort(key=lambda e: e["_key"], reverse=True)
        return out

    def page(self, path: str, query: dict[str, str], max_size: int) -> dict[str, Any]:
        """One page of ``GET /v1/audit-logs``."""
        try:
            count = int(query.get("count") or 100)
        except ValueError as exc:
            raise ApiQueryError(f"count {query.get('count')!r} is not a number") from exc
        if count < 1:
            raise ApiQueryError("count must be at least 1")
        count = min(count, max_size)
        everything = self.matching(query)
        items = everything
        before, after = query.get("before"), query.get("after")
        if before:
            key = self._key_of(before)
            items = [e for e in items if e["_key"] < key]
        if after:
            key = self._key_of(after)
            # the events just newer than ``after``, still newest first
            items = [e for e in items if e["_key"] > key][-count:]
        chunk = items[:count]
        base = {k: v for k, v in query.items() if k not in ("before", "after")}
        base["count"] = str(count)
        older = chunk and any(e["_key"] < chunk[-1]["_key"] for e in everything)
        links = {
            "self": _link(path, query),
            "first": _link(path, base),
            "prev": _link(path, {**base, "after": chunk[0]["id"]}) if chunk else None,
            "next": _link(path, {**base, "before": chunk[-1]["id"]}) if older else None,
        }
        return {
            "meta": {"count": len(chunk), "total": len(everything), "cursorCount": len(items)},
            "links": links,
            "data": [served(e) for e in chunk],
        }

    def _key_of(self, event_id: str) -> tuple[int, int]:
        pos = self._by_id.get(event_id)
        if pos is None:
            raise ApiQueryError(f"unknown audit log id {event_id!r}")
        key: tuple[int, int] = self.events[pos]["_key"]
        return key

    def truth(
        self, object_types: list[str] | tuple[str, ...] | None = None, since: Any = None
    ) -> list[dict[str, Any]]:
        """Every event (of ``object_types``, created at or after ``since``), oldest first."""
        query: dict[str, str] = {}
        if object_types:
            query["filter[objectType]"] = ",".join(object_types)
        if since is not None:
            query["filter[start]"] = fmt_ms(parse_ts(since))
        return [served(e) for e in reversed(self.matching(query))]


def served(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the endpoint serves it (a copy, without the sort key)."""
    import copy

    return copy.deepcopy({k: v for k, v in event.items() if k != "_key"})


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``{attributes: {name: {op, before, after}}, relationships: {...}}`` of what differs."""
    out: dict[str, Any] = {}
    for part in ("attributes", "relationships"):
        before, after = old.get(part) or {}, new.get(part) or {}
        changed = {}
        for name in sorted(set(before) | set(after)):
            if before.get(name) == after.get(name):
                continue
            if part == "relationships":
                was = (before.get(name) or {}).get("data")
                now = (after.get(name) or {}).get("data")
            else:
                was, now = before.get(name), after.get(name)
            op = "add" if name not in before else "remove" if name not in after else "replace"
            changed[name] = {"op": op, "before": was, "after": now}
        out[part] = changed
    return out


def _actor(rec: dict[str, Any]) -> str | None:
    data = ((rec.get("relationships") or {}).get("modifiedBy") or {}).get("data")
    return data.get("id") if isinstance(data, dict) else None


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _bound(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return parse_ts(raw)
    except (ValueError, TypeError) as exc:
        raise ApiQueryError(f"{name} {raw!r} is not a date") from exc


def _link(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path
