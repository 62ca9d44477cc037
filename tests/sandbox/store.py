"""In-memory org, mutations, and the lagging search index view.

The search index is modelled as version history: every mutation stores a
snapshot stamped with the sandbox time of the change. A search at sandbox time
``now`` sees, per record, the newest snapshot whose stamp + lag <= now (or
nothing, for a record created too recently). GET endpoints read live records.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from . import children
from .clock import SandboxClock, fmt_ms
from .data import DAY, HOUR, MINUTE, Generator
from .options import SandboxOptions
from .records import (
    Msg,
    Note,
    klass_name,
    make_id,
    parse_id,
    render_company,
    render_conversation,
    render_customer,
    render_kobject,
    render_message,
    render_note,
)

_NEG = -(1 << 62)
SEARCH_KINDS = ("conversation", "customer", "message", "note", "company", "kobject")


class NotFoundError(KeyError):
    """Raised by mutations for an unknown id."""


class Store:
    """All records of the org plus version history for the search index."""

    def __init__(self, options: SandboxOptions, clock: SandboxClock) -> None:
        self.options = options
        self.clock = clock
        self.salt = (options.seed * 2_654_435_761 + 0x5A5A5A) & 0xFFFFFF
        self.org_id = ""
        self.users: list[dict[str, Any]] = []
        self.teams: list[dict[str, Any]] = []
        self.shortcuts: list[dict[str, Any]] = []
        self.tags: list[dict[str, Any]] = []
        self.customers: list[dict[str, Any]] = []
        self.conversations: list[dict[str, Any]] = []
        self.messages: list[Msg] = []
        self.notes: list[Note] = []
        self.companies: list[dict[str, Any]] = []
        self.klasses: list[dict[str, Any]] = []
        self.kobjects: list[dict[str, Any]] = []
        # outbound webhooks by id (outbound.py); ``observer`` hears of every change so
        # it can turn it into webhook events
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.observer: Any = None
        # audit.py: the audit log hears of every change (and delete) once generated;
        # permanently deleted records stay in their lists (ids are list positions)
        self.audit: Any = None
        self.deleted: dict[str, set[int]] = {k: set() for k in SEARCH_KINDS}
        self.cluster_times: list[tuple[str, int, int]] = []
        # children.py: events of conversations a mutation changed (the others derive
        # theirs from their state), the counter of mutation events' ids, and pinned
        # attachment counts per message index
        self.conv_events: dict[int, list[children.Event]] = {}
        self.event_counter = 0
        self.attachment_overrides: dict[int, int] = {}
        self.attachment_seed = children.seed_key(options.seed)
        self.pending: dict[str, dict[int, list[tuple[int, Any]]]] = {k: {} for k in SEARCH_KINDS}
        self.version = 0
        self.lock = threading.RLock()
        self.rng = random.Random(options.seed * 7919 + 17)
        self.generator = Generator(self, options)
        self.generating = True
        self.generator.generate()
        self.generating = False
        # A per-klass search context (kobject_<klass name>) sees the kobjects of its
        # klass through the same version history as the generic kobject context.
        for i in range(len(self.klasses)):
            self.pending[f"kobject_{klass_name(self, i)}"] = self.pending["kobject"]

    def search_kind(self, context: str) -> tuple[str, int | None]:
        """The record kind a search context reads, and the klass index it is limited to."""
        if context.startswith("kobject_"):
            for i in range(len(self.klasses)):
                if context == f"kobject_{klass_name(self, i)}":
                    return "kobject", i
        return context, None

    # -- lookups ----------------------------------------------------------------
    def records(self, kind: str) -> list[Any]:
        """The live list for a kind."""
        return {
            "conversation": self.conversations,
            "customer": self.customers,
            "message": self.messages,
            "note": self.notes,
            "tag": self.tags,
            "user": self.users,
            "team": self.teams,
            "shortcut": self.shortcuts,
            "company": self.companies,
            "kobject": self.kobjects,
            "klass": self.klasses,
        }[kind]

    def get(self, kind: str, id_: str) -> Any | None:
        """Live record by id, or None."""
        parsed = parse_id(id_)
        if parsed is None or parsed[0] != kind:
            return None
        items = self.records(kind)
        idx = parsed[1]
        if idx >= len(items) or idx in self.deleted.get(kind, ()):
            return None
        rec = items[idx]
        rec_id = rec.id if isinstance(rec, (Msg, Note)) else rec["id"]
        return rec if rec_id == id_ else None

    def _require(self, kind: str, id_: str) -> Any:
        rec = self.get(kind, id_)
        if rec is None:
            raise NotFoundError(f"{kind} {id_} not found")
        return rec

    def render(self, kind: str, rec: Any) -> dict[str, Any]:
        """JSON:API resource for a live record or a snapshot."""
        if kind == "conversation":
            return render_conversation(self, rec)
        if kind == "customer":
            return render_customer(self, rec)
        if kind == "message":
            return render_message(self, rec)
        if kind == "note":
            return render_note(self, rec)
        if kind == "company":
            return render_company(self, rec)
        if kind == "kobject" or kind.startswith("kobject_"):
            return render_kobject(self, rec)
        return rec

    # -- attachments and conversation events (children.py) -------------------------
    def message_attachment_ids(self, m: Msg) -> list[str]:
        """Ids of message ``m``'s attachments (for its ``relationships.attachments``)."""
        return children.attachment_ids_of(self, m)

    def attachment_ids(self, conversation_id: str) -> list[str]:
        """Truth: the ids ``GET /v1/conversations/{id}/attachments`` lists now, in order."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            return [a.id for a in children.conversation_attachments(self, conv)]

    def event_ids(self, conversation_id: str) -> list[str]:
        """Truth: the ids ``GET /v1/conversations/{id}/events`` lists now (createdAt
        ascending, the default order)."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            return [e.id for e in children.conversation_events(self, conv)]

    def attachment_count(self) -> int:
        """Truth: how many attachments the org's messages have in all."""
        with self.lock:
            return sum(children.attachment_count(self, m) for m in self.messages)

    def event_count(self) -> int:
        """Truth: how many events the org's conversations have in all."""
        with self.lock:
            return sum(children.event_count(self, c) for c in self.conversations)

    # -- search index view ------------------------------------------------------
    @staticmethod
    def _snap(rec: Any) -> Any:
        if isinstance(rec, dict):
            return {k: (v.copy() if isinstance(v, (list, dict)) else v) for k, v in rec.items()}
        return rec

    def _track(self, kind: str, idx: int, new: bool = False) -> None:
        """Call before changing a record: remembers what the index holds now."""
        pend = self.pending[kind]
        if idx not in pend:
            base = None if new else self._snap(self.records(kind)[idx])
            pend[idx] = [(_NEG, base)]
        if self.observer is not None:
            self.observer.before(kind, idx, new)
        if self.audit is not None:
            self.audit.before(kind, idx, new)

    def _changed(self, kind: str, idx: int, at: int) -> None:
        """Call after changing a record: queue the new version for the index."""
        self.pending[kind][idx].append((at, self._snap(self.records(kind)[idx])))
        self.version += 1
        if self.observer is not None:
            self.observer.after(kind, idx, at)
        if self.audit is not None:
            self.audit.after(kind, idx, at)

    def search_view(self, context: str) -> tuple[list[Any], bool]:
        """Records the search index holds right now, and whether any are lagging."""
        kind, klass = self.search_kind(context)
        items, lagging = self._search_view(kind)
        if klass is not None:
            items = [k for k in items if k["klass"] == klass]
        return items, lagging

    def _search_view(self, kind: str) -> tuple[list[Any], bool]:
        items = self.records(kind)
        pend = self.pending[kind]
        gone = self.deleted.get(kind, set())
        if not pend:
            return ([r for i, r in enumerate(items) if i not in gone] if gone else items), False
        now = self.clock.now_ms()
        lag = int(self.options.index_lag_seconds * 1000)
        out: list[Any] = []
        lagging = False
        done: list[int] = []
        for i, rec in enumerate(items):
            versions = pend.get(i)
            if versions is None:
                if i not in gone:
                    out.append(rec)
                continue
            chosen = None
            for pos in range(len(versions) - 1, -1, -1):
                stamp, snap = versions[pos]
                if stamp + lag <= now:
                    chosen = snap
                    if pos == len(versions) - 1:
                        done.append(i)
                    else:
                        lagging = True
                    break
            if chosen is not None:
                out.append(chosen)
        for i in done:
            del pend[i]
        return out, lagging

    # -- mutation helpers ---------------------------------------------------------
    def _now(self, at: int | None) -> int:
        return self.clock.now_ms() if at is None else at

    def _touch_conv(self, conv: dict[str, Any], at: int, user: int | None = None) -> None:
        conv["updated"] = max(at, conv["updated"])
        conv["modified"] = conv["updated"]
        conv["rev"] += 1
        if user is not None:
            conv["modifiedBy"] = user

    @staticmethod
    def _set_status(conv: dict[str, Any], status: str) -> None:
        # customer.conversationCounts stay as generated: changing them here would
        # alter a customer without bumping its updatedAt
        conv["status"] = status
        if status != "snoozed":
            conv["snooze"] = None

    def _done_block(self, conv: dict[str, Any], at: int, user: int) -> dict[str, Any]:
        msgs = [self.messages[i] for i in conv["msgs"]]
        return {
            "at": at,
            "by": user,
            "time": max(0, (at - conv["created"]) // 1000),
            "msgs": len(msgs),
            "out": sum(1 for m in msgs if m.direction == "out"),
            "dir": msgs[-1].direction if msgs else None,
            "notes": len(conv["notes"]),
        }

    # -- mutations --------------------------------------------------------------
    def reply(
        self,
        conversation_id: str,
        body: str | None = None,
        direction: str = "in",
        at: int | None = None,
        channel: str | None = None,
        attachments: int | None = None,
    ) -> Msg:
        """Add a message; an inbound message reopens a done/snoozed conversation.

        ``attachments`` pins the message's attachment count (0..4); None lets
        ``attachment_share`` decide, as for every generated message.
        """
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")
        if attachments is not None and not 0 <= attachments <= children.SLOTS:
            raise ValueError(f"attachments must be 0..{children.SLOTS}")
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            prev = self.messages[conv["msgs"][-1]] if conv["msgs"] else None
            if prev is None:
                dtype = f"initial-{direction}"
            elif prev.direction != direction:
                dtype = f"response-{direction}"
            else:
                dtype = f"followup-{direction}"
            idx = len(self.messages)
            user = conv["assigned"][0] if conv["assigned"] else 0
            msg = Msg(
                idx,
                make_id("message", idx, at, self.salt),
                conv["idx"],
                conv["cust"],
                at,
                at,
                at,
                direction,
                dtype,
                channel or (prev.channel if prev else conv["channels"][0]),
                self.rng.randrange(1 << 30),
                user,
                body if body is not None else f"Reply {idx} at {fmt_ms(at)}",
            )
            if attachments is not None:
                self.attachment_overrides[idx] = attachments
            self._track("message", idx, new=True)
            self.messages.append(msg)
            self._changed("message", idx, at)
            self._track("conversation", conv["idx"])
            conv["msgs"].append(idx)
            if direction == "in" and conv["status"] in ("done", "snoozed"):
                if conv["status"] == "done":
                    conv["reopenCount"] += 1
                self._set_status(conv, "open")
            self._touch_conv(conv, at)
            self._changed("conversation", conv["idx"], at)
            # the customer wrote an inbound message; an outbound one is its agent's
            children.record_change(self, conv, before, at, user if direction == "out" else None)
            return msg

    def resolve(self, conversation_id: str, at: int | None = None, user: int = 0) -> dict[str, Any]:
        """Mark done now: lastDone.createdAt = now, doneCount+1, firstDone if absent."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            self._track("conversation", conv["idx"])
            self._set_status(conv, "done")
            block = self._done_block(conv, at, user)
            conv["lastDone"] = block
            if conv["firstDone"] is None:
                conv["firstDone"] = dict(block)
            conv["doneCount"] += 1
            self._touch_conv(conv, at, user)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, user)
            return conv

    def reopen(self, conversation_id: str, at: int | None = None, user: int = 0) -> dict[str, Any]:
        """Set status open (lastDone keeps its createdAt), reopenCount+1."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            self._track("conversation", conv["idx"])
            if conv["status"] == "done":
                conv["reopenCount"] += 1
            self._set_status(conv, "open")
            self._touch_conv(conv, at, user)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, user)
            return conv

    def snooze(self, conversation_id: str, until_ms: int, at: int | None = None) -> dict[str, Any]:
        """Snooze a conversation until ``until_ms``."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            self._track("conversation", conv["idx"])
            self._set_status(conv, "snoozed")
            conv["snooze"] = until_ms
            self._touch_conv(conv, at)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, None)
            return conv

    def set_tags(
        self, conversation_id: str, tag_ids: list[str], at: int | None = None
    ) -> dict[str, Any]:
        """Replace the tag list (updatedAt bumped, lastDone untouched)."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            self._track("conversation", conv["idx"])
            conv["tags"] = list(dict.fromkeys(tag_ids))
            self._touch_conv(conv, at)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, None)
            return conv

    def set_custom(
        self, conversation_id: str, attrs: dict[str, Any], at: int | None = None
    ) -> dict[str, Any]:
        """Merge custom attributes into the conversation."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            self._track("conversation", conv["idx"])
            conv["custom"].update(attrs)
            self._touch_conv(conv, at)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, None)
            return conv

    def add_note(
        self,
        conversation_id: str,
        body: str | None = None,
        at: int | None = None,
        user: int = 0,
        mentions: list[int] | None = None,
    ) -> Note:
        """Add an internal note (noteCount+1, conversation updatedAt bumped)."""
        with self.lock:
            conv = self._require("conversation", conversation_id)
            at = self._now(at)
            before = children.begin_change(self, conv)
            idx = len(self.notes)
            note = Note(
                idx,
                make_id("note", idx, at, self.salt),
                conv["idx"],
                conv["cust"],
                at,
                at,
                user,
                list(mentions or []),
                self.rng.randrange(1 << 30),
                body if body is not None else f"Note {idx} 📝",
            )
            self._track("note", idx, new=True)
            self.notes.append(note)
            self._changed("note", idx, at)
            self._track("conversation", conv["idx"])
            conv["notes"].append(idx)
            self._touch_conv(conv, at, user)
            self._changed("conversation", conv["idx"], at)
            children.record_change(self, conv, before, at, user)
            return note

    _CUSTOMER_FIELDS = ("name", "firstName", "lastName", "externalId", "locale", "tags")

    def _apply_customer(self, rec: dict[str, Any], attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            if key in self._CUSTOMER_FIELDS:
                rec[key] = list(value) if key == "tags" else value
            elif key == "email":
                rec["emails"] = [{"email": value, "verified": False, "type": "home"}]
            elif key == "emails":
                rec["emails"] = [dict(e) for e in value]
            elif key == "phones":
                rec["phones"] = [dict(p) for p in value]
            elif key == "custom":
                rec["custom"].update(value)
            elif key == "company_id":
                rec["company"] = self._require("company", value)["idx"] if value else None
            else:
                raise ValueError(f"unsupported customer attribute {key!r}")

    def add_customer(self, at: int | None = None, **attrs: Any) -> dict[str, Any]:
        """Create a customer (generated fields, overridden by ``attrs``)."""
        with self.lock:
            at = self._now(at)
            idx = len(self.customers)
            self._track("customer", idx, new=True)
            rec = self.generator.new_customer(self.rng, at, at)
            rec["modified"] = None
            self._apply_customer(rec, attrs)
            self._changed("customer", idx, at)
            return rec

    def update_customer(
        self, customer_id: str, at: int | None = None, **attrs: Any
    ) -> dict[str, Any]:
        """Change customer attributes; updatedAt and modifiedAt = now."""
        with self.lock:
            rec = self._require("customer", customer_id)
            at = self._now(at)
            self._track("customer", rec["idx"])
            self._apply_customer(rec, attrs)
            rec["updated"] = max(at, rec["updated"])
            rec["modified"] = rec["updated"]
            rec["rev"] += 1
            self._changed("customer", rec["idx"], at)
            return rec

    def delete(self, kind: str, id_: str, at: int | None = None, user: int = 0) -> dict[str, Any]:
        """Delete a conversation, customer, company or kobject permanently.

        GET answers 404 from now on, search stops finding it once the index lag has
        passed (a conversation's messages and notes go with it), and only the audit
        log keeps a trace: one delete event, which is returned.
        """
        if kind not in ("conversation", "customer", "company", "kobject"):
            raise ValueError(f"{kind} records cannot be deleted here")
        with self.lock:
            rec = self._require(kind, id_)
            at = self._now(at)
            gone = [(kind, rec["idx"])]
            if kind == "conversation":
                gone += [("message", i) for i in rec["msgs"]]
                gone += [("note", i) for i in rec["notes"]]
            for what, idx in gone:
                versions = self.pending[what].setdefault(
                    idx, [(_NEG, self._snap(self.records(what)[idx]))]
                )
                versions.append((at, None))
                self.deleted[what].add(idx)
            self.version += 1
            user_id = self.users[user]["id"] if self.users else None
            if self.audit is None:
                return {}
            event: dict[str, Any] = self.audit.deleted(kind, id_, at, user_id)
            return event

    # -- companies and kobjects ---------------------------------------------------
    _COMPANY_FIELDS = ("name", "externalId", "domains", "tags")
    _KOBJECT_FIELDS = ("title", "description", "externalId", "images", "tags")

    @staticmethod
    def _apply(
        kind: str, rec: dict[str, Any], attrs: dict[str, Any], fields: tuple[str, ...]
    ) -> None:
        for key, value in attrs.items():
            if key in fields:
                rec[key] = list(value) if isinstance(value, (list, tuple)) else value
            elif key == "custom":
                rec["custom"].update(value)
            else:
                raise ValueError(f"unsupported {kind} attribute {key!r}")

    def _bump(self, kind: str, rec: dict[str, Any], at: int) -> None:
        rec["updated"] = max(at, rec["updated"])
        rec["modified"] = rec["updated"]
        rec["rev"] += 1
        self._changed(kind, rec["idx"], at)

    def add_company(self, at: int | None = None, **attrs: Any) -> dict[str, Any]:
        """Create a company (generated fields, overridden by ``attrs``)."""
        with self.lock:
            at = self._now(at)
            idx = len(self.companies)
            self._track("company", idx, new=True)
            rec = self.generator.new_company(self.rng, at, at)
            self._apply("company", rec, attrs, self._COMPANY_FIELDS)
            self._changed("company", idx, at)
            return rec

    def update_company(
        self, company_id: str, at: int | None = None, **attrs: Any
    ) -> dict[str, Any]:
        """Change company attributes; updatedAt and modifiedAt = now."""
        with self.lock:
            rec = self._require("company", company_id)
            at = self._now(at)
            self._track("company", rec["idx"])
            self._apply("company", rec, attrs, self._COMPANY_FIELDS)
            self._bump("company", rec, at)
            return rec

    def add_kobject(
        self,
        klass: str | None = None,
        customer_id: str | None = None,
        company_id: str | None = None,
        at: int | None = None,
        **attrs: Any,
    ) -> dict[str, Any]:
        """Create a kobject of the klass named ``klass`` (default: the first klass)."""
        with self.lock:
            at = self._now(at)
            names = [klass_name(self, i) for i in range(len(self.klasses))]
            if klass is not None and klass not in names:
                raise NotFoundError(f"klass {klass} not found")
            cust = self._require("customer", customer_id)["idx"] if customer_id else None
            company = self._require("company", company_id)["idx"] if company_id else None
            idx = len(self.kobjects)
            self._track("kobject", idx, new=True)
            rec = self.generator.new_kobject(
                self.rng, names.index(klass) if klass else 0, at, at, cust, company
            )
            self._apply("kobject", rec, attrs, self._KOBJECT_FIELDS)
            self._changed("kobject", idx, at)
            return rec

    def update_kobject(
        self, kobject_id: str, at: int | None = None, **attrs: Any
    ) -> dict[str, Any]:
        """Change kobject attributes; updatedAt and modifiedAt = now."""
        with self.lock:
            rec = self._require("kobject", kobject_id)
            at = self._now(at)
            self._track("kobject", rec["idx"])
            self._apply("kobject", rec, attrs, self._KOBJECT_FIELDS)
            self._bump("kobject", rec, at)
            return rec

    def add_conversation(
        self,
        customer_id: str | None = None,
        status: str = "open",
        messages: int = 1,
        at: int | None = None,
    ) -> dict[str, Any]:
        """Create a conversation with ``messages`` inbound-first messages, all at now."""
        if status not in ("open", "done", "snoozed"):
            raise ValueError("status must be open, done or snoozed")
        with self.lock:
            at = self._now(at)
            if customer_id is None:
                cust = self.rng.randrange(len(self.customers))
            else:
                cust = self._require("customer", customer_id)["idx"]
            idx = len(self.conversations)
            first_msg = len(self.messages)
            first_note = len(self.notes)
            self._track("conversation", idx, new=True)
            r = random.Random(self.rng.randrange(1 << 62))
            conv = self.generator.new_conversation(
                r,
                cust,
                at,
                messages,
                at,
                "open",
                updated=at,
                msg_created_at=at,
            )
            # a brand-new conversation has no history and no notes yet
            del self.notes[first_note:]
            conv["notes"] = []
            conv.update(
                lastDone=None,
                firstDone=None,
                doneCount=0,
                reopenCount=0,
                modified=at,
                snooze=None,
                rev=1,
            )
            for i in range(first_msg, len(self.messages)):
                self._track("message", i, new=True)
                self._changed("message", i, at)
            if status == "done":
                self._set_status(conv, "done")
                conv["lastDone"] = self._done_block(conv, at, 0)
                conv["firstDone"] = dict(conv["lastDone"])
                conv["doneCount"] = 1
            elif status == "snoozed":
                self._set_status(conv, "snoozed")
                conv["snooze"] = at + DAY
            self._changed("conversation", idx, at)
            return conv

    def _pick(self, r: random.Random, want: Any, recent: bool = False) -> list[dict[str, Any]]:
        """One random conversation matching ``want`` (sampled, so O(1) on big orgs)."""
        convs = self.conversations
        lo = max(0, len(convs) - 2000) if recent else 0
        for _ in range(200):
            conv = convs[r.randrange(lo, len(convs))]
            if want(conv) and conv["idx"] not in self.deleted["conversation"]:
                return [conv]
        return []

    def _live_choice(self, r: random.Random, kind: str) -> dict[str, Any]:
        """A random record of ``kind`` not deleted (the same draw when none is)."""
        items = self.records(kind)
        rec: dict[str, Any] = r.choice(items)
        for _ in range(200):
            if rec["idx"] not in self.deleted[kind]:
                break
            rec = r.choice(items)
        return rec

    # -- scenario ---------------------------------------------------------------
    def simulate_activity(self, hours: float, seed: int | None = None) -> dict[str, Any]:
        """Apply a few hours of plausible activity, stamped across the period.

        The events are stamped at increasing times in [now, now + hours]; the
        clock is then moved to now + hours. Returns ids touched per category.
        """
        r = random.Random(self.options.seed * 31 + 5 if seed is None else seed)
        start = self.clock.now_ms()
        span = max(1, int(hours * HOUR))
        per_hour = max(12, len(self.conversations) // 500)
        n_events = max(1, int(per_hour * hours))
        stamps = sorted(start + 1 + r.randrange(span) for _ in range(n_events))
        summary: dict[str, list[str]] = {
            "replied": [],
            "reopened_by_reply": [],
            "resolved": [],
            "re_resolved": [],
            "tagged": [],
            "custom_changed": [],
            "notes": [],
            "messages": [],
            "new_conversations": [],
            "new_customers": [],
            "updated_customers": [],
        }
        reopened: list[str] = []
        kinds = [
            "reply_done",
            "reply_open",
            "resolve_open",
            "re_resolve",
            "tag",
            "custom",
            "note",
            "new_conv",
            "new_cust",
            "upd_cust",
        ]
        weights = [18, 12, 20, 10, 10, 5, 6, 8, 5, 6]
        with self.lock:
            for at in stamps:
                kind = r.choices(kinds, weights=weights)[0]
                done = self._pick(r, lambda c: c["status"] == "done", recent=r.random() < 0.7)
                opened = self._pick(r, lambda c: c["status"] != "done")
                if kind == "reply_done" and done:
                    conv = done[0]
                    msg = self.reply(conv["id"], at=at)
                    summary["replied"].append(conv["id"])
                    summary["reopened_by_reply"].append(conv["id"])
                    summary["messages"].append(msg.id)
                    reopened.append(conv["id"])
                elif kind == "reply_open" and opened:
                    conv = opened[0]
                    msg = self.reply(conv["id"], direction=r.choice(["in", "out"]), at=at)
                    summary["replied"].append(conv["id"])
                    summary["messages"].append(msg.id)
                elif kind == "resolve_open" and opened:
                    conv = opened[0]
                    self.resolve(conv["id"], at=at, user=r.randrange(len(self.users)))
                    summary["resolved"].append(conv["id"])
                elif kind == "re_resolve" and reopened:
                    cid = reopened.pop(r.randrange(len(reopened)))
                    if self.get("conversation", cid)["status"] != "done":
                        msg = self.reply(
                            cid,
                            direction="out",
                            at=at,
                            body="Glad we could help — closing this now.",
                        )
                        summary["messages"].append(msg.id)
                        self.resolve(cid, at=at + 1, user=r.randrange(len(self.users)))
                        summary["re_resolved"].append(cid)
                        summary["resolved"].append(cid)
                elif kind == "tag" and self.tags:
                    conv = self._live_choice(r, "conversation")
                    tags = [t["id"] for t in r.sample(self.tags, min(2, len(self.tags)))]
                    self.set_tags(conv["id"], tags, at=at)
                    summary["tagged"].append(conv["id"])
                elif kind == "custom":
                    conv = self._live_choice(r, "conversation")
                    self.set_custom(
                        conv["id"],
                        {"escalatedBool": True, "refundAmountNum": r.randrange(5, 200)},
                        at=at,
                    )
                    summary["custom_changed"].append(conv["id"])
                elif kind == "note":
                    conv = self._live_choice(r, "conversation")
                    note = self.add_note(conv["id"], body="Checked with the team ✅", at=at)
                    summary["notes"].append(note.id)
                elif kind == "new_conv":
                    conv = self.add_conversation(at=at, messages=r.randint(1, 3))
                    summary["new_conversations"].append(conv["id"])
                elif kind == "new_cust":
                    cust = self.add_customer(at=at)
                    summary["new_customers"].append(cust["id"])
                elif kind == "upd_cust":
                    cust = self._live_choice(r, "customer")
                    self.update_customer(
                        cust["id"], at=at, custom={"tierStr": r.choice(["gold", "silver"])}
                    )
                    summary["updated_customers"].append(cust["id"])
        self.clock.advance_to(start + span)
        out: dict[str, Any] = {k: list(dict.fromkeys(v)) for k, v in summary.items()}
        out["start"] = fmt_ms(start)
        out["end"] = fmt_ms(start + span)
        return out


__all__ = ["DAY", "HOUR", "MINUTE", "NotFoundError", "Store"]
