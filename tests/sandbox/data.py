"""Deterministic org generator: the dataset is a pure function of the options.

Everything is drawn from one ``random.Random(seed)`` in a fixed order, and all
times are offsets from ``options.now``, so two sandboxes with the same seed and
now serve byte-identical data.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .clock import fmt_ms, parse_ts
from .records import PREVIEWS, Msg, Note, make_id

if TYPE_CHECKING:
    from .options import SandboxOptions
    from .store import Store

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000

FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Emma",
    "François",
    "Grace",
    "Hiro",
    "Ingrid",
    "José",
    "Kai",
    "Lena",
    "Mohammed",
    "Nora",
    "Oliver",
    "Priya",
    "Quinn",
    "Rafael",
    "Søren",
    "Tariq",
    "Uma",
    "Valentina",
    "Wei",
    "Xavier",
    "Yuki",
    "Zoë",
    "Björk",
    "Łukasz",
    "Ayşe",
    "Nguyễn",
]
LAST_NAMES = [
    "Smith",
    "García",
    "Müller",
    "Rossi",
    "Kowalski",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Nielsen",
    "Haddad",
    "O'Brien",
    "van der Berg",
    "Ødegaard",
    "Çelik",
    "Silva",
    "Kim",
    "李",
    "Иванова",
]
EMOJI = ["🚀", "🌟", "🐼", "☕", "🎉"]
TAG_NAMES = [
    "billing",
    "refund",
    "shipping",
    "damaged",
    "vip",
    "bug",
    "feature-request",
    "urgent",
    "returns",
    "exchange",
    "account",
    "login",
    "cancellation",
    "wholesale",
    "press",
    "spam",
    "feedback",
    "warranty",
    "international",
    "subscription",
]
TAG_COLORS = ["#e53935", "#8e24aa", "#3949ab", "#039be5", "#00897b", "#7cb342", "#fdd835"]
REASONS = [
    "billing.refund",
    "billing.invoice",
    "shipping.delayed",
    "shipping.lost",
    "product.defect",
    "account.access",
    "general.question",
]
TIERS = ["bronze", "silver", "gold", "platinum"]
LOCALES = ["en_US", "en_GB", "fr_FR", "es_ES", "ja_JP", "de_DE", None]
CHANNELS = ["email"] * 5 + ["chat"] * 3 + ["sms", "facebook", "voice", "whatsapp", "instagram"]

CONVERSATION_CUSTOM = {
    "contactReasonTree": ("string", "Contact reason"),
    "orderNumberStr": ("string", "Order number"),
    "refundAmountNum": ("number", "Refund amount"),
    "escalatedBool": ("boolean", "Escalated"),
    "followUpAt": ("date", "Follow-up date"),
    "resolutionNotesTxt": ("string", "Resolution notes"),
}
CUSTOMER_CUSTOM = {
    "tierStr": ("string", "Tier"),
    "lifetimeValueNum": ("number", "Lifetime value"),
    "signupAt": ("date", "Signup date"),
    "vipBool": ("boolean", "VIP"),
    "accountManagerStr": ("string", "Account manager"),
    "websiteUrl": ("url", "Website"),
}
MESSAGE_CUSTOM: dict[str, tuple[str, str]] = {}
COMPANY_CUSTOM = {
    "industryStr": ("string", "Industry"),
    "employeesNum": ("number", "Employees"),
    "contractRenewalAt": ("date", "Contract renewal"),
    "enterpriseBool": ("boolean", "Enterprise"),
}
COMPANY_WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"]
COMPANY_SUFFIXES = [
    "Widgets",
    "Logistics",
    "Foods",
    "Labs",
    "Outfitters",
    "Café ☕",
    "GmbH",
    "株式会社",
]
INDUSTRIES = ["retail", "software", "logistics", "hospitality", None]
#: klasses (custom object types): name, display name, icon, color. Names follow the
#: OAS examples (lower case); one has an underscore, as klass names may.
KLASSES = [
    ("order", "Order", "truck-delivery", "#1e88e5"),
    ("subscription", "Subscription", "autorenew", "#8e24aa"),
    ("return", "Return", "package-variant", "#e53935"),
    ("shipment", "Shipment", "truck", "#00897b"),
    ("warranty_claim", "Warranty claim", "shield-check", "#fdd835"),
]
CARRIERS = ["ups", "fedex", "dhl", "usps"]
PLANS = ["starter", "pro", "enterprise"]


def _time_span(options: SandboxOptions) -> tuple[int, int]:
    """[start, end] of generated activity: ~``months`` ending a few minutes before now."""
    now = parse_ts(options.now)
    end = now - 5 * MINUTE
    if options.history_years is not None:
        start = end - int(options.history_years * 365.25 * DAY)
    else:
        start = end - int(options.months * 30.44 * DAY)
    return start, end


def _customer_record(
    store: Store, r: random.Random, idx: int, created: int, updated: int
) -> dict[str, Any]:
    first = r.choice(FIRST_NAMES)
    last = r.choice(LAST_NAMES)
    name = f"{first} {last}"
    if r.random() < 0.05:
        name = f"{name} {r.choice(EMOJI)}"
    slug = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
    slug = slug.encode("ascii", "ignore").decode() or "customer"
    emails = [{"email": f"{slug}{idx}@example.com", "verified": r.random() < 0.6, "type": "home"}]
    if r.random() < 0.2:
        emails.append({"email": f"{slug}{idx}@work.example.org", "verified": False, "type": "work"})
    phones = (
        [{"phone": f"+1555{r.randrange(10**7):07d}", "verified": False, "type": "mobile"}]
        if r.random() < 0.6
        else []
    )
    custom: dict[str, Any] = {
        "tierStr": r.choice(TIERS),
        "lifetimeValueNum": round(r.random() * 5000, 2) if r.random() < 0.8 else None,
        "signupAt": fmt_ms(created - r.randrange(400) * DAY) if r.random() < 0.7 else None,
        "vipBool": r.random() < 0.1,
    }
    if r.random() < 0.3:
        custom["accountManagerStr"] = None
    if r.random() < 0.2:
        custom["websiteUrl"] = f"https://{slug}.example.com"
    return {
        "idx": idx,
        "id": make_id("customer", idx, created, store.salt),
        "created": created,
        "updated": updated,
        "modified": updated if r.random() < 0.04 else None,
        "v": r.randrange(1 << 30),
        "name": name,
        "firstName": first,
        "lastName": last,
        "emails": emails,
        "origEmail": emails[0]["email"],
        "origPhone": phones[0]["phone"] if phones else "+15550000000",
        "phones": phones,
        "externalId": f"shop-{r.randrange(10**9)}" if r.random() < 0.5 else None,
        "tags": [],
        "custom": custom,
        "locale": r.choice(LOCALES),
        "counts": {"all": 0, "snoozed": 0, "open": 0, "done": 0},
        "rev": 1 + r.randrange(4),
    }


def _conversation_custom(r: random.Random, created: int) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "contactReasonTree": r.choice(REASONS) if r.random() < 0.8 else None,
        "orderNumberStr": f"#100{r.randrange(10**6):06d}" if r.random() < 0.6 else None,
        "escalatedBool": r.random() < 0.08,
    }
    if r.random() < 0.3:
        custom["refundAmountNum"] = round(r.random() * 300, 2)
    if r.random() < 0.15:
        custom["followUpAt"] = fmt_ms(created + r.randrange(1, 14) * DAY)
    if r.random() < 0.05:
        custom["resolutionNotesTxt"] = "Refunded 💸 and apologised"
    return custom


class Generator:
    """Builds the org into a Store; also used by mutations to create records."""

    def __init__(self, store: Store, options: SandboxOptions) -> None:
        self.store = store
        self.options = options
        self.r = random.Random(options.seed)
        # Companies and kobjects draw from a stream of their own, so adding them (or
        # changing their counts) leaves every other record exactly as it was.
        self.extra = random.Random(options.seed * 104_729 + 0xC0FFEE)
        self.start, self.end = _time_span(options)

    # -- small fixed lists ------------------------------------------------------
    def _users_teams_tags(self) -> None:
        st, r = self.store, self.r
        base = self.start - 60 * DAY
        st.org_id = make_id("org", 0, base, st.salt)
        for i in range(max(1, self.options.users)):
            first = FIRST_NAMES[(i * 7) % len(FIRST_NAMES)]
            last = LAST_NAMES[(i * 5) % len(LAST_NAMES)]
            created = base + i * HOUR
            uid = make_id("user", i, created, st.salt)
            st.users.append(
                {
                    "type": "user",
                    "id": uid,
                    "attributes": {
                        "name": f"{first} {last}",
                        "displayName": f"{first} {last}",
                        "email": f"agent{i}@sandbox-org.example",
                        "userType": "machine" if i == 0 else "user",
                        "roleGroups": [],
                        "createdAt": fmt_ms(created),
                        "updatedAt": fmt_ms(created + DAY),
                        "modifiedAt": fmt_ms(created + DAY),
                    },
                    "relationships": {"org": {"data": {"type": "org", "id": st.org_id}}},
                    "links": {"self": f"/v1/users/{uid}"},
                }
            )
        for i, team in enumerate(["Tier 1", "Tier 2", "Billing"]):
            created = base + i * DAY
            tid = make_id("team", i, created, st.salt)
            st.teams.append(
                {
                    "type": "team",
                    "id": tid,
                    "attributes": {
                        "name": team,
                        "displayName": team,
                        "members": [u["id"] for u in st.users[i::3]],
                        "createdAt": fmt_ms(created),
                        "updatedAt": fmt_ms(created + 2 * DAY),
                    },
                    "links": {"self": f"/v1/teams/{tid}"},
                }
            )
        for i, title in enumerate(["Refund issued", "Where is my order", "Thanks", "Escalate"]):
            created = base + i * DAY
            sid = make_id("shortcut", i, created, st.salt)
            st.shortcuts.append(
                {
                    "type": "shortcut",
                    "id": sid,
                    "attributes": {
                        "name": title,
                        "text": f"{title} — template text",
                        "createdAt": fmt_ms(created),
                        "updatedAt": fmt_ms(created + DAY),
                    },
                    "links": {"self": f"/v1/shortcuts/{sid}"},
                }
            )
        span = self.end - self.start
        for i in range(self.options.tags):
            created = self.start - 30 * DAY + int(r.random() * span * 0.8)
            updated = created + int(r.random() * (self.end - created) * 0.5)
            name = TAG_NAMES[i % len(TAG_NAMES)]
            if i >= len(TAG_NAMES):
                name = f"{name}-{i // len(TAG_NAMES) + 1}"
            deleted = r.random() < 0.12
            tid = make_id("tag", i, created, st.salt)
            creator = st.users[r.randrange(len(st.users))]["id"]
            attrs: dict[str, Any] = {
                "name": name,
                "color": r.choice(TAG_COLORS),
                "createdAt": fmt_ms(created),
                "updatedAt": fmt_ms(updated),
                "modifiedAt": fmt_ms(updated),
                "deleted": deleted,
            }
            relationships: dict[str, Any] = {
                "org": {
                    "links": {"self": f"/v1/orgs/{st.org_id}"},
                    "data": {"type": "org", "id": st.org_id},
                },
                "createdBy": {
                    "links": {"self": f"/v1/users/{creator}"},
                    "data": {"type": "user", "id": creator},
                },
            }
            if deleted:
                attrs["deletedAt"] = attrs["updatedAt"]
                relationships["deletedBy"] = relationships["createdBy"]
            st.tags.append(
                {
                    "type": "tag",
                    "id": tid,
                    "attributes": attrs,
                    "relationships": relationships,
                    "links": {"self": f"/v1/tags/{tid}"},
                }
            )

    # -- customers --------------------------------------------------------------
    def new_customer(self, r: random.Random, created: int, updated: int) -> dict[str, Any]:
        """Create and register a customer record."""
        st = self.store
        rec = _customer_record(st, r, len(st.customers), created, updated)
        if st.tags and r.random() < 0.15:
            rec["tags"] = [st.tags[r.randrange(len(st.tags))]["id"]]
        st.customers.append(rec)
        return rec

    # -- conversations ----------------------------------------------------------
    def new_conversation(
        self,
        r: random.Random,
        cust: int,
        created: int,
        n_msgs: int,
        last_ms: int,
        status: str,
        done_at: int | None = None,
        updated: int | None = None,
        msg_created_at: int | None = None,
        imported: bool = False,
    ) -> dict[str, Any]:
        """Create and register a conversation with its thread and notes.

        ``last_ms`` bounds message times; ``done_at``/``updated`` force exact
        stamps (tie clusters); ``msg_created_at`` forces every message's
        createdAt/updatedAt (bulk import).
        """
        st = self.store
        idx = len(st.conversations)
        channel = r.choice(CHANNELS)
        direction = "in" if r.random() < 0.8 else "out"
        users = len(st.users)
        # thread times: gaps scaled into [created, last_ms]
        times = [created]
        if n_msgs > 1:
            mean = 20 * MINUTE if n_msgs > 50 else 3 * HOUR
            gaps = [max(5000, int(r.expovariate(1 / mean))) for _ in range(n_msgs - 1)]
            total = sum(gaps)
            room = max(0, last_ms - created)
            if total > room:
                factor = room / total
                gaps = [int(g * factor) for g in gaps]
            t = created
            for g in gaps:
                t += g
                times.append(t)
        msg_ids: list[int] = []
        cur_dir = direction
        agent = r.randrange(users)
        for j in range(n_msgs):
            if j:
                cur_dir = ("out" if cur_dir == "in" else "in") if r.random() < 0.7 else cur_dir
            if j == 0:
                dtype = f"initial-{cur_dir}"
            else:
                prev = st.messages[msg_ids[-1]].direction
                dtype = f"response-{cur_dir}" if prev != cur_dir else f"followup-{cur_dir}"
            sent = times[j] if j < len(times) else times[-1]
            mcreated = sent + r.randrange(200, 20_000)
            if msg_created_at is not None:
                mcreated = msg_created_at
            mupdated = mcreated
            if msg_created_at is None and updated is None and r.random() < 0.1:
                mupdated = min(mcreated + r.randrange(1000, 2 * DAY), self.end)
                mupdated = max(mupdated, mcreated)
            midx = len(st.messages)
            m = Msg(
                midx,
                make_id("message", midx, mcreated, st.salt),
                idx,
                cust,
                mcreated,
                mupdated,
                sent,
                cur_dir,
                dtype,
                channel if r.random() < 0.95 else r.choice(CHANNELS),
                r.randrange(1 << 30),
                agent,
            )
            st.messages.append(m)
            msg_ids.append(midx)
        last_activity = max((st.messages[i].updated for i in msg_ids), default=created)
        # notes
        n_notes = r.choices((0, 1, 2, 3), weights=(55, 25, 12, 8))[0]
        note_ids: list[int] = []
        for _ in range(n_notes):
            ncreated = created + int(r.random() * max(1, last_activity - created)) + 1000
            if msg_created_at is not None:
                ncreated = msg_created_at
            nidx = len(st.notes)
            mentions = [r.randrange(users)] if r.random() < 0.4 else []
            st.notes.append(
                Note(
                    nidx,
                    make_id("note", nidx, ncreated, st.salt),
                    idx,
                    cust,
                    ncreated,
                    ncreated,
                    r.randrange(users),
                    mentions,
                    r.randrange(1 << 30),
                )
            )
            note_ids.append(nidx)
            last_activity = max(last_activity, ncreated)
        done_count = 0
        last_done = first_done = None
        counts = self._counts(msg_ids)
        if status == "done" or (status != "done" and r.random() < 0.2 and n_msgs > 1):
            if done_at is None:
                if status == "done":
                    done_at = min(last_activity + r.randrange(MINUTE, 2 * DAY), self.end)
                else:
                    # done once, then reopened by a later message
                    done_at = st.messages[msg_ids[-2]].created + 1000
                done_at = max(done_at, last_activity if status == "done" else done_at)
            done_count = 1 if r.random() < 0.8 else 2 + r.randrange(2)
            by = r.randrange(users)
            last_done = self._done(created, done_at, by, counts)
            first_at = done_at
            if done_count > 1 and len(msg_ids) > 1:
                first_at = st.messages[msg_ids[len(msg_ids) // 2]].created + 1000
                first_at = min(first_at, done_at)
            first_done = self._done(created, first_at, by, counts)
        if updated is None:
            updated = max(last_activity, done_at or 0, created) + r.randrange(0, 5000)
            updated = min(max(updated, done_at or 0, last_activity), max(self.end, last_activity))
        modified = updated if r.random() < 0.7 else created + int((updated - created) * r.random())
        tag_pool = st.tags
        tags = (
            [
                tag_pool[r.randrange(len(tag_pool))]["id"]
                for _ in range(r.choices((0, 1, 2, 4), weights=(40, 35, 18, 7))[0])
            ]
            if tag_pool
            else []
        )
        first_preview = ""
        if msg_ids:
            m0 = st.messages[msg_ids[0]]
            first_preview = PREVIEWS[m0.v % len(PREVIEWS)]
        reopen_count = max(0, done_count - (1 if status == "done" else 0))
        rec: dict[str, Any] = {
            "idx": idx,
            "id": make_id("conversation", idx, created, st.salt),
            "cust": cust,
            "created": created,
            "updated": updated,
            "modified": min(modified, updated),
            "status": status,
            "lastDone": last_done,
            "firstDone": first_done,
            "doneCount": done_count,
            "reopenCount": reopen_count,
            "tags": list(dict.fromkeys(tags)),
            "msgs": msg_ids,
            "notes": note_ids,
            "custom": _conversation_custom(r, created),
            "v": r.randrange(1 << 30),
            "priority": r.choices((1, 2, 3, 4, 5), weights=(5, 15, 60, 15, 5))[0],
            "channels": [channel],
            "direction": direction,
            "name": first_preview[:40] if r.random() < 0.5 else "",
            "preview": first_preview,
            "assigned": [agent] if r.random() < 0.7 else [],
            "createdBy": agent,
            "modifiedBy": r.randrange(users),
            "snooze": (updated + r.randrange(HOUR, 7 * DAY)) if status == "snoozed" else None,
            "rev": 1 + len(msg_ids) + done_count,
            "imported": created if imported else None,
        }
        st.conversations.append(rec)
        if st.generating:
            cust_rec = st.customers[cust]
            cust_rec["counts"]["all"] += 1
            cust_rec["counts"][status] += 1
        return rec

    def _counts(self, msg_ids: list[int]) -> dict[str, Any]:
        msgs = self.store.messages
        out = sum(1 for i in msg_ids if msgs[i].direction == "out")
        last_dir = msgs[msg_ids[-1]].direction if msg_ids else None
        return {"msgs": len(msg_ids), "out": out, "dir": last_dir}

    @staticmethod
    def _done(created: int, at: int, by: int, counts: dict[str, Any]) -> dict[str, Any]:
        return {
            "at": at,
            "by": by,
            "time": max(0, (at - created) // 1000),
            "msgs": counts["msgs"],
            "out": counts["out"],
            "dir": counts["dir"],
            "notes": 0,
        }

    def _thread_len(self, r: random.Random) -> int:
        k = r.random()
        if k < 0.05:
            return 0
        if k < 0.07:
            return r.randint(120, 350)
        return r.randint(2, 10)

    # -- whole org --------------------------------------------------------------
    def generate(self) -> None:
        """Fill the store: users, teams, tags, customers, conversations, clusters."""
        opts, r = self.options, self.r
        self._users_teams_tags()
        span = self.end - self.start
        for _ in range(max(1, opts.customers)):
            created = self.start + int(r.random() * span * 0.97)
            updated = created + int((self.end - created) * (r.random() ** 2))
            self.new_customer(r, created, updated)
        n_cust = len(self.store.customers)
        for _ in range(opts.conversations):
            created = self.start + int(r.random() * span * 0.995)
            n_msgs = self._thread_len(r)
            age = self.end - created
            k = r.random()
            if age < 3 * DAY:
                status = "done" if k < 0.45 else ("open" if k < 0.85 else "snoozed")
            else:
                status = "done" if k < 0.78 else ("open" if k < 0.9 else "snoozed")
            self.new_conversation(
                r, r.randrange(n_cust), created, n_msgs, self.end - MINUTE, status
            )
        self._klasses_companies_kobjects()
        for kind, size in opts.tie_clusters:
            self._cluster(kind, int(size))
        self._link_customers_to_companies()

    # -- companies and custom objects ----------------------------------------------
    def new_company(self, r: random.Random, created: int, updated: int) -> dict[str, Any]:
        """Create and register a company."""
        st = self.store
        idx = len(st.companies)
        word = COMPANY_WORDS[idx % len(COMPANY_WORDS)]
        suffix = COMPANY_SUFFIXES[(idx // len(COMPANY_WORDS)) % len(COMPANY_SUFFIXES)]
        name = f"{word} {suffix}"
        if idx >= len(COMPANY_WORDS) * len(COMPANY_SUFFIXES):
            name = f"{name} {idx}"
        slug = word.lower()
        custom: dict[str, Any] = {
            "industryStr": r.choice(INDUSTRIES),
            "employeesNum": r.randrange(1, 5000) if r.random() < 0.8 else None,
            "enterpriseBool": r.random() < 0.2,
        }
        if r.random() < 0.5:
            custom["contractRenewalAt"] = fmt_ms(created + r.randrange(30, 400) * DAY)
        users = len(st.users)
        rec: dict[str, Any] = {
            "idx": idx,
            "id": make_id("company", idx, created, st.salt),
            "created": created,
            "updated": updated,
            "modified": updated,
            "name": name,
            "externalId": f"crm-{r.randrange(10**8):08d}" if r.random() < 0.6 else None,
            "domains": [f"{slug}{idx}.example.com"] if r.random() < 0.7 else [],
            "tags": [st.tags[r.randrange(len(st.tags))]["id"]]
            if st.tags and r.random() < 0.2
            else [],
            "custom": custom,
            "createdBy": r.randrange(users),
            "modifiedBy": r.randrange(users),
            "rev": 1 + r.randrange(3),
            "imported": None,
        }
        st.companies.append(rec)
        return rec

    def _kobject_custom(self, r: random.Random, name: str, created: int) -> dict[str, Any]:
        if name == "order":
            return {
                "orderNumberNum": 1000 + r.randrange(10**5),
                "totalPriceNum": round(r.random() * 400, 2),
                "orderStatusStr": r.choice(["fulfilled", "pending", "cancelled"]),
                "orderedAt": fmt_ms(created - r.randrange(0, 3) * DAY),
            }
        if name == "subscription":
            return {
                "planStr": r.choice(PLANS),
                "seatsNum": r.randrange(1, 50),
                "renewsAt": fmt_ms(created + r.randrange(30, 365) * DAY),
                "activeBool": r.random() < 0.8,
            }
        if name == "return":
            return {
                "reasonStr": r.choice(["damaged", "wrong size", "changed mind"]),
                "refundAmountNum": round(r.random() * 120, 2),
                "receivedBool": r.random() < 0.5,
            }
        if name == "shipment":
            return {
                "carrierStr": r.choice(CARRIERS),
                "trackingNumberStr": f"1Z{r.randrange(10**12):012d}",
                "shippedAt": fmt_ms(created),
            }
        return {
            "productStr": r.choice(["kettle", "headphones", "backpack"]),
            "approvedBool": r.random() < 0.6,
            "claimAmountNum": r.randrange(10, 300),
        }

    def new_kobject(
        self,
        r: random.Random,
        klass: int,
        created: int,
        updated: int,
        cust: int | None,
        company: int | None,
    ) -> dict[str, Any]:
        """Create and register a kobject of the ``klass``-th klass."""
        st = self.store
        idx = len(st.kobjects)
        name = st.klasses[klass]["attributes"]["name"]
        display = st.klasses[klass]["attributes"]["displayName"]
        number = 1000 + idx
        rec: dict[str, Any] = {
            "idx": idx,
            "id": make_id("kobject", idx, created, st.salt),
            "klass": klass,
            "cust": cust,
            "company": company,
            "created": created,
            "updated": updated,
            "modified": updated,
            "title": f"{display} #{number}",
            "description": f"{display} {number} for {name.replace('_', ' ')} tests",
            "images": [],
            "externalId": f"{name}-{number}" if r.random() < 0.7 else None,
            "tags": [],
            "custom": self._kobject_custom(r, name, created),
            "rev": r.randrange(3),
        }
        st.kobjects.append(rec)
        return rec

    def _klasses_companies_kobjects(self) -> None:
        opts, r, st = self.options, self.extra, self.store
        base = self.start - 45 * DAY
        for i in range(max(1, min(opts.klasses, len(KLASSES)))):
            name, display, icon, color = KLASSES[i]
            created = base + i * DAY
            kid = make_id("klass", i, created, st.salt)
            st.klasses.append(
                {
                    "type": "klass",
                    "id": kid,
                    "attributes": {
                        "name": name,
                        "displayName": display,
                        "icon": icon,
                        "color": color,
                        "status": "enabled",
                        "mixins": [],
                        "createdAt": fmt_ms(created),
                        "updatedAt": fmt_ms(created + DAY),
                    },
                    "relationships": {
                        "org": {
                            "links": {"self": f"/v1/orgs/{st.org_id}"},
                            "data": {"type": "org", "id": st.org_id},
                        },
                        "kobjects": {"links": {"self": f"/v1/klasses/{name}"}},
                    },
                    "links": {"self": f"/v1/klasses/{kid}"},
                }
            )
        span = self.end - self.start
        for _ in range(max(0, opts.companies)):
            created = self.start + int(r.random() * span * 0.97)
            updated = created + int((self.end - created) * (r.random() ** 2))
            self.new_company(r, created, updated)
        for _ in range(max(0, opts.kobjects)):
            self._random_kobject(r, self.start + int(r.random() * span * 0.97))

    def _random_kobject(self, r: random.Random, created: int, updated: int | None = None) -> None:
        st = self.store
        if updated is None:
            updated = created + int((self.end - created) * (r.random() ** 3))
        cust = r.randrange(len(st.customers)) if st.customers and r.random() < 0.85 else None
        company = r.randrange(len(st.companies)) if st.companies and r.random() < 0.3 else None
        self.new_kobject(r, r.randrange(len(st.klasses)), created, updated, cust, company)

    def _link_customers_to_companies(self) -> None:
        r, st = self.extra, self.store
        if not st.companies:
            return
        share = self.options.customers_with_company
        for cust in st.customers:
            cust["company"] = r.randrange(len(st.companies)) if r.random() < share else None

    def _cluster(self, kind: str, size: int) -> None:
        """Many records sharing one exact timestamp (bulk resolve / import / customers,
        companies, kobjects)."""
        if kind in ("companies", "kobjects"):
            self._extra_cluster(kind, size)
            return
        r = self.r
        span = self.end - self.start
        t = self.start + int(span * (0.55 + 0.4 * r.random()))
        self.store.cluster_times.append((kind, size, t))
        if kind == "customers":
            for _ in range(size):
                self.new_customer(r, t, t)
            return
        n_cust = len(self.store.customers)
        if kind == "resolve":
            for _ in range(size):
                created = t - r.randrange(HOUR, 60 * DAY)
                self.new_conversation(
                    r,
                    r.randrange(n_cust),
                    created,
                    r.randint(1, 3),
                    t - MINUTE,
                    "done",
                    done_at=t,
                    updated=t,
                )
        elif kind == "import":
            for _ in range(size):
                sent_start = t - r.randrange(30 * DAY, 365 * DAY)
                self.new_conversation(
                    r,
                    r.randrange(n_cust),
                    sent_start,
                    r.randint(1, 3),
                    sent_start + 10 * DAY,
                    "done",
                    done_at=t,
                    updated=t,
                    msg_created_at=t,
                    imported=True,
                )
                conv = self.store.conversations[-1]
                conv["created"] = t
                conv["modified"] = t
        else:
            raise ValueError(f"unknown tie cluster kind {kind!r}")

    def _extra_cluster(self, kind: str, size: int) -> None:
        """A bulk import of companies (every timestamp equal) or of kobjects (one
        updatedAt, creation times spread: the walk's second key splits them)."""
        r = self.extra
        span = self.end - self.start
        t = self.start + int(span * (0.55 + 0.4 * r.random()))
        self.store.cluster_times.append((kind, size, t))
        for _ in range(size):
            if kind == "companies":
                rec = self.new_company(r, t, t)
                rec["imported"] = t
            else:
                self._random_kobject(r, t - r.randrange(HOUR, 60 * DAY), updated=t)
