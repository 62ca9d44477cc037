"""Reference lists: users, teams, shortcuts, brands, business schedules, klasses,
routing queues and satisfaction surveys, as their GET list endpoints serve them.

Brands, schedules, queues and surveys are generated here, from a random stream of
their own (so they never change the records of the rest of the org). Users, teams,
shortcuts and klasses live in the store (they are referenced by conversations and
kobjects); this module renders them the way the API does and lays runtime changes
over them: a record added at runtime is kept here, a deleted one is hidden here, so
the store's indexes stay valid.

Shapes follow the OAS examples (brands, schedules, klasses, satisfaction) and the
excerpts of Kustomer's developer docs (users, teams, shortcuts, queues); what those
do not show is marked UNCERTAIN in ``README.md``.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import fmt_ms, parse_ts
from .store import NotFoundError

if TYPE_CHECKING:
    from .app import Sandbox
    from .store import Store

DAY = 86_400_000
HOUR = 3_600_000


@dataclass(frozen=True)
class Kind:
    """One reference list: JSON:API type, list path, role resource, page-size cap."""

    name: str
    type: str
    path: str
    resource: str
    #: None: the sandbox's ``list_max_page_size`` (100, like most Kustomer lists)
    max_page_size: int | None = None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("users", "user", "/v1/users", "user", 500),
        Kind("teams", "team", "/v1/teams", "team", 500),
        Kind("shortcuts", "shortcut", "/v1/shortcuts", "shortcut"),
        Kind("brands", "brand", "/v1/brands", "brand"),
        Kind("schedules", "schedule", "/v1/schedules", "schedule"),
        Kind("klasses", "klass", "/v1/klasses", "klass"),
        Kind("queues", "queue", "/v1/routing/queues", "routing"),
        Kind("satisfaction", "satisfaction", "/v1/satisfaction", "satisfaction"),
    )
}
#: Kinds whose records live in the store (runtime additions are kept here).
STORED = ("users", "teams", "shortcuts", "klasses")
#: Id codes of records made here; far from the store's codes (records.KIND_CODES).
_CODES = {
    "users": 0x41,
    "teams": 0x42,
    "shortcuts": 0x43,
    "brands": 0x44,
    "schedules": 0x45,
    "klasses": 0x46,
    "queues": 0x47,
    "satisfaction": 0x48,
}
KLASS_STATUSES = ("enabled", "disabled", "existing_only")

BRAND_NAMES = ["Outlet", "Wholesale", "Kids", "Pro", "Travel"]
SCHEDULES = [
    ("Business Hours", "America/New_York", [None, *[[[540, 1020]]] * 5, None]),
    ("Weekend Support", "Europe/London", [[[600, 960]], *[None] * 5, [[600, 960]]]),
    ("APAC Shifts", "Asia/Tokyo", [None, *[[[480, 720], [780, 1080]]] * 5, None]),
    ("Around the Clock", "UTC", [[[0, 1440]]] * 7),
]
QUEUES = ["Billing", "VIP Support", "Returns", "Escalations", "Spanish"]
SURVEYS = [
    ("Satisfaction Form for Email", "email", "postmark"),
    ("Chat CSAT", "chat", "kustomer"),
    ("SMS quick rating", "sms", "twilio"),
]


def _rel(type_: str, id_: str, plural: str) -> dict[str, Any]:
    return {"links": {"self": f"/v1/{plural}/{id_}"}, "data": {"type": type_, "id": id_}}


class ReferenceData:
    """The reference lists of one sandbox, with runtime additions and deletions.

    Built on first use (see :func:`reference_of`) from the options and the store;
    every method takes the store's lock, as the HTTP handlers run under it.
    """

    def __init__(self, store: Store, seed: int, sizes: dict[str, int]) -> None:
        self.store = store
        self.lock = store.lock
        self.r = random.Random(seed * 1_000_003 + 0x5EF)
        self.base = store.generator.start - 55 * DAY
        self.counters = dict.fromkeys(_CODES, 0)
        self.own: dict[str, list[dict[str, Any]]] = {name: [] for name in KINDS}
        self.removed: set[str] = set()
        #: Whether ``GET /v1/users`` without ``deleted`` lists deactivated users too
        #: (undocumented upstream; switchable for tests).
        self.users_include_deactivated_by_default = True
        self._decorate_stored()
        make = {
            "brands": self._brand,
            "schedules": self._schedule,
            "queues": self._queue,
            "satisfaction": self._survey,
        }
        for kind, build in make.items():
            for i in range(max(0, sizes.get(kind, 0))):
                # created after the users (60 days before the org's history starts)
                self.own[kind].append(build(i, self.base + (i * 7 * HOUR) % (50 * DAY)))

    # -- ids and common parts ----------------------------------------------------------
    def _new_id(self, kind: str, created: int) -> str:
        counter = self.counters[kind]
        self.counters[kind] += 1
        salt = self.store.salt & 0xFFFFFF
        return f"{(created // 1000) & 0xFFFFFFFF:08x}{salt:06x}{_CODES[kind]:02x}{counter:08x}"

    def _user_id(self, i: int) -> str:
        return str(self.store.users[i % len(self.store.users)]["id"])

    def _stamps(self, created: int, *, modified: bool = True) -> dict[str, str]:
        updated = created + int(self.r.random() * 20 * DAY)
        stamps = {"createdAt": fmt_ms(created), "updatedAt": fmt_ms(updated)}
        if modified:
            stamps["modifiedAt"] = stamps["updatedAt"]
        return stamps

    def _relationships(self, by: str | None) -> dict[str, Any]:
        org = self.store.org_id
        relationships: dict[str, Any] = {"org": _rel("org", org, "orgs")}
        if by is not None:
            relationships["createdBy"] = _rel("user", by, "users")
            relationships["modifiedBy"] = _rel("user", by, "users")
        return relationships

    def _resource(
        self, kind: str, id_: str, attributes: dict[str, Any], relationships: dict[str, Any]
    ) -> dict[str, Any]:
        plural = KINDS[kind].path.removeprefix("/v1/")
        return {
            "type": KINDS[kind].type,
            "id": id_,
            "attributes": attributes,
            "relationships": relationships,
            "links": {"self": f"/v1/{plural}/{id_}"},
        }

    # -- generated kinds -------------------------------------------------------------------
    def _brand(self, i: int, created: int, **attrs: Any) -> dict[str, Any]:
        """The first brand is the org's default one, made at registration (no creator)."""
        first = i == 0 and not self.own["brands"]
        if first:
            name = "default"
        else:
            name = BRAND_NAMES[(i - 1) % len(BRAND_NAMES)]
            if i > len(BRAND_NAMES):
                name = f"{name} {i // len(BRAND_NAMES) + 1}"
        attributes = {"name": name, "default": first, **self._stamps(created, modified=not first)}
        attributes.update(attrs)
        by = None if first else self._user_id(i)
        return self._resource(
            "brands", self._new_id("brands", created), attributes, self._relationships(by)
        )

    def _schedule(self, i: int, created: int, **attrs: Any) -> dict[str, Any]:
        name, timezone, days = SCHEDULES[i % len(SCHEDULES)]
        if i >= len(SCHEDULES):
            name = f"{name} {i // len(SCHEDULES) + 1}"
        attributes = {
            "name": name,
            "hours": {str(day): copy.deepcopy(spans) for day, spans in enumerate(days)},
            "timezone": timezone,
            "default": i == 0 and not self.own["schedules"],
            **self._stamps(created),
        }
        attributes.update(attrs)
        return self._resource(
            "schedules",
            self._new_id("schedules", created),
            attributes,
            self._relationships(self._user_id(i)),
        )

    def _queue(self, i: int, created: int, **attrs: Any) -> dict[str, Any]:
        """The first queue is the org's system queue, DEFAULT_QUEUE."""
        system = i == 0 and not self.own["queues"]
        name = "DEFAULT_QUEUE" if system else QUEUES[(i - 1) % len(QUEUES)]
        if not system and i > len(QUEUES):
            name = f"{name} {i // len(QUEUES) + 1}"
        attributes = {
            "name": name,
            "system": system,
            "priority": 1 if system else self.r.randint(1, 10),
            "itemSize": 1 if system else self.r.choice([1, 1, 2, 0.5]),
            "restrictTransfersByUsers": False if system else self.r.random() < 0.3,
            **self._stamps(created),
        }
        attributes.update(attrs)
        return self._resource(
            "queues",
            self._new_id("queues", created),
            attributes,
            self._relationships(None if system else self._user_id(i)),
        )

    def _survey(self, i: int, created: int, **attrs: Any) -> dict[str, Any]:
        name, channel, app = SURVEYS[i % len(SURVEYS)]
        if i >= len(SURVEYS):
            name = f"{name} {i // len(SURVEYS) + 1}"
        attributes = {
            "name": name,
            "formType": "csat",
            "enabled": self.r.random() < 0.8,
            "channel": channel,
            "description": f"Sent when {channel} conversations are marked done.",
            "from": {"channel": channel, "account": "support@sandbox-org.example", "app": app},
            "metaTitle": "Satisfaction",
            "metaDescription": f"{channel} survey",
            "delayTime": self.r.choice([0, 0, 3600]),
            "scale": {
                "options": self.r.choice([2, 5]),
                "type": self.r.choice(["number", "emoji", "thumbs"]),
                "labelLow": "Terrible",
                "labelHigh": "Amazing",
            },
            "introduction": "Tell us about your experience.",
            "ratingPrompt": "How satisfied are you with your interaction?",
            "questions": [],
            "positiveQuestions": [],
            "negativeQuestions": [],
            "allQuestions": [],
            "followUpType": "all",
            "criteria": {"and": [], "or": []},
            **self._stamps(created),
        }
        attributes.update(attrs)
        return self._resource(
            "satisfaction",
            self._new_id("satisfaction", created),
            attributes,
            self._relationships(self._user_id(i)),
        )

    # -- kinds of the store, rendered ------------------------------------------------------
    def _decorate_stored(self) -> None:
        """What the store does not hold: deactivated users, shortcut access lists."""
        users = self.store.users
        self.deactivated: dict[str, int] = {}
        if len(users) >= 3:
            user = users[self.r.randrange(1, len(users))]
            created = parse_ts(user["attributes"]["createdAt"])
            self.deactivated[str(user["id"])] = created + 30 * DAY
        teams = [str(t["id"]) for t in self.store.teams]
        self.access: dict[str, tuple[list[str], list[str]]] = {}
        for i, shortcut in enumerate(self.store.shortcuts):
            access_teams = [teams[i % len(teams)]] if teams and i % 2 == 1 else []
            access_users = [self._user_id(i + 1)] if i % 3 == 2 else []
            self.access[str(shortcut["id"])] = (access_teams, access_users)

    def _render_user(self, raw: dict[str, Any]) -> dict[str, Any]:
        user = copy.deepcopy(raw)
        relationships = user.setdefault("relationships", {})
        relationships["org"] = _rel("org", self.store.org_id, "orgs")
        user.setdefault("links", {"self": f"/v1/users/{user['id']}"})
        deleted_at = self.deactivated.get(str(user["id"]))
        if deleted_at is not None:
            attributes = user["attributes"]
            attributes["deletedAt"] = attributes["updatedAt"] = fmt_ms(deleted_at)
            attributes["modifiedAt"] = attributes["updatedAt"]
        return user

    def _render_team(self, raw: dict[str, Any]) -> dict[str, Any]:
        team = copy.deepcopy(raw)
        attributes = team["attributes"]
        attributes.setdefault("modifiedAt", attributes.get("updatedAt"))
        relationships = team.setdefault("relationships", {})
        relationships.update(self._relationships(self._user_id(0)))
        return team

    def _render_shortcut(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``draft.text`` (the API's name for the reply text) and team/user access lists."""
        if "draft" in raw["attributes"]:
            return copy.deepcopy(raw)
        attrs = raw["attributes"]
        access_teams, access_users = self.access.get(str(raw["id"]), ([], []))
        relationships = self._relationships(self._user_id(0))
        relationships["accessTeams"] = {"data": [{"type": "team", "id": i} for i in access_teams]}
        relationships["accessUsers"] = {"data": [{"type": "user", "id": i} for i in access_users]}
        return self._resource(
            "shortcuts",
            str(raw["id"]),
            {
                "name": attrs.get("name"),
                "draft": {"text": attrs.get("text")},
                "createdAt": attrs.get("createdAt"),
                "updatedAt": attrs.get("updatedAt"),
                "modifiedAt": attrs.get("modifiedAt", attrs.get("updatedAt")),
            },
            relationships,
        )

    def _stored(self, kind: str) -> list[dict[str, Any]]:
        if kind == "users":
            return [self._render_user(u) for u in self.store.users]
        if kind == "teams":
            return [self._render_team(t) for t in self.store.teams]
        if kind == "shortcuts":
            return [self._render_shortcut(s) for s in self.store.shortcuts]
        return [copy.deepcopy(k) for k in getattr(self.store, "klasses", [])]

    # -- reading -----------------------------------------------------------------------------
    def records(self, kind: str) -> list[dict[str, Any]]:
        """The live list of ``kind`` (a key of :data:`KINDS`), as GET renders it."""
        with self.lock:
            items = self._stored(kind) if kind in STORED else []
            items += [copy.deepcopy(rec) for rec in self.own[kind]]
            return [rec for rec in items if rec["id"] not in self.removed]

    def listing(self, kind: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """What the list endpoint returns for ``query``: its filters applied.

        Raises:
            ValueError: a filter value the endpoint does not accept.
        """
        items = self.records(kind)
        if kind == "users":
            flag = query.get("deleted")
            if flag not in (None, "true", "false"):
                raise ValueError("deleted must be true or false")
            if flag is None and not self.users_include_deactivated_by_default:
                flag = "false"
            if flag is not None:
                want = flag == "true"
                items = [u for u in items if bool(u["attributes"].get("deletedAt")) == want]
        if kind == "klasses":
            status = query.get("status", "enabled")
            if status not in KLASS_STATUSES:
                raise ValueError(f"status must be one of {', '.join(KLASS_STATUSES)}")
            items = [k for k in items if k["attributes"].get("status", "enabled") == status]
        return items

    def get(self, kind: str, id_: str) -> dict[str, Any] | None:
        """One live record by id (``default``: the default brand or schedule), or None."""
        if id_ == "default" and kind in ("brands", "schedules"):
            return next((r for r in self.records(kind) if r["attributes"].get("default")), None)
        return next((rec for rec in self.records(kind) if rec["id"] == id_), None)

    def truth(self, kinds: list[str] | tuple[str, ...] | None = None) -> dict[str, list[Any]]:
        """Every live record per kind (default: all kinds), fresh copies."""
        return {kind: self.records(kind) for kind in (kinds or KINDS)}

    # -- runtime changes ------------------------------------------------------------------------
    def add(self, kind: str, **attrs: Any) -> dict[str, Any]:
        """Create a record of ``kind`` stamped now; ``attrs`` override its attributes."""
        with self.lock:
            now = self.store.clock.now_ms()
            i = len(self.records(kind))
            if kind == "brands":
                rec = self._brand(max(i, 1), now, **attrs)
            elif kind == "schedules":
                rec = self._schedule(max(i, 1), now, **attrs)
            elif kind == "queues":
                rec = self._queue(max(i, 1), now, **attrs)
            elif kind == "satisfaction":
                rec = self._survey(i, now, **attrs)
            else:
                rec = self._added_stored(kind, i, now, attrs)
            stamp = fmt_ms(now)
            rec["attributes"].update({"createdAt": stamp, "updatedAt": stamp})
            if "modifiedAt" in rec["attributes"]:
                rec["attributes"]["modifiedAt"] = stamp
            rec["attributes"].update({k: v for k, v in attrs.items() if k.endswith("At")})
            self.own[kind].append(rec)
            return copy.deepcopy(rec)

    def _added_stored(self, kind: str, i: int, now: int, attrs: dict[str, Any]) -> dict[str, Any]:
        id_ = self._new_id(kind, now)
        by = self._user_id(0)
        if kind == "users":
            attributes = {
                "name": f"New Agent {i}",
                "displayName": f"New Agent {i}",
                "email": f"new-agent{i}@sandbox-org.example",
                "userType": "user",
                "roleGroups": [],
            }
            relationships = {"org": _rel("org", self.store.org_id, "orgs")}
        elif kind == "teams":
            attributes = {"name": f"Team {i}", "displayName": f"Team {i}", "members": [by]}
            relationships = self._relationships(by)
        elif kind == "shortcuts":
            attributes = {"name": f"Shortcut {i}", "draft": {"text": "New reply text"}}
            relationships = self._relationships(by)
            relationships["accessTeams"] = {"data": []}
            relationships["accessUsers"] = {"data": []}
        elif kind == "klasses":
            name = f"custom_klass_{i}"
            attributes = {
                "name": name,
                "displayName": f"Custom Klass {i}",
                "icon": "box",
                "color": "#5F9EA0",
                "status": "enabled",
                "mixins": [],
            }
            relationships = {
                "org": _rel("org", self.store.org_id, "orgs"),
                "kobjects": {"links": {"self": f"/v1/klasses/{name}"}},
            }
        else:
            raise KeyError(f"unknown reference kind {kind!r}")
        attributes["modifiedAt"] = None
        attributes.update(attrs)
        return self._resource(kind, id_, attributes, relationships)

    def delete(self, kind: str, id_: str) -> dict[str, Any]:
        """Remove a record from every listing (a hard delete); returns it as it was.

        Raises:
            NotFoundError: no live record of ``kind`` has that id.
        """
        with self.lock:
            rec = self.get(kind, id_)
            if rec is None:
                raise NotFoundError(f"{kind} {id_} not found")
            self.removed.add(id_)
            return rec


def kind_of_path(path: str) -> tuple[Kind, str | None]:
    """The kind a list or by-id path names, and the id (None for the list).

    Raises:
        KeyError: the path is not a reference list's.
    """
    for kind in KINDS.values():
        if path == kind.path:
            return kind, None
        head, _, tail = path.rpartition("/")
        if head == kind.path and tail:
            return kind, tail
    raise KeyError(path)


_ATTR = "_reference_data"


def reference_of(sandbox: Sandbox) -> ReferenceData:
    """The reference lists of ``sandbox``, built on first use from its options.

    Sizes come from ``options.brands``, ``options.schedules``, ``options.queues`` and
    ``options.satisfaction_surveys``; users, teams, shortcuts and klasses from the store.
    """
    # The store's lock, which request handlers already hold: one lock, no lock order.
    with sandbox.store.lock:
        data = sandbox.__dict__.get(_ATTR)
        if data is None:
            opts = sandbox.options
            sizes = {
                "brands": opts.brands,
                "schedules": opts.schedules,
                "queues": opts.queues,
                "satisfaction": opts.satisfaction_surveys,
            }
            data = ReferenceData(sandbox.store, opts.seed, sizes)
            sandbox.__dict__[_ATTR] = data
        return data
