"""Compact internal records and their JSON:API rendering.

Records are stored compactly (ints for timestamps, indexes for links) so that
tens of thousands of conversations with their threads fit in memory and can be
generated quickly; the full JSON:API shape is built only when rendered.
"""

from __future__ import annotations

from typing import Any

from .clock import fmt_ms, fmt_opt

KIND_CODES = {
    "customer": 0x01,
    "conversation": 0x02,
    "message": 0x03,
    "note": 0x04,
    "tag": 0x05,
    "user": 0x06,
    "team": 0x07,
    "shortcut": 0x08,
    "org": 0x09,
    # 0x0a is the token id of /v1/auth/tokens/current (server.py)
    "attachment": 0x0B,
    # conversation events: "event" for the history derived from a conversation's
    # state, "event_log" for the events mutations record (a global counter)
    "event": 0x0C,
    "event_log": 0x0D,
    # far from the codes above, so kinds added elsewhere are unlikely to collide
    "company": 0x21,
    "kobject": 0x22,
    "klass": 0x23,
}
CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}


def make_id(kind: str, idx: int, created_ms: int, salt: int) -> str:
    """Build a 24-hex id shaped like a Mongo ObjectId (time prefix, salt, counter).

    The kind and list index are encoded in the last five bytes so an id can be
    resolved without a lookup table.
    """
    secs = (created_ms // 1000) & 0xFFFFFFFF
    return f"{secs:08x}{salt & 0xFFFFFF:06x}{KIND_CODES[kind]:02x}{idx:08x}"


def parse_id(value: str) -> tuple[str, int] | None:
    """Inverse of make_id: (kind, index) or None if it cannot be one of ours."""
    if len(value) != 24:
        return None
    try:
        int(value, 16)
    except ValueError:
        return None
    if value != value.lower():
        return None
    kind = CODE_KINDS.get(int(value[14:16], 16))
    if kind is None:
        return None
    return kind, int(value[16:], 16)


def rel(type_: str, id_: str, plural: str) -> dict[str, Any]:
    """One JSON:API relationship entry with links.self and data."""
    return {"links": {"self": f"/v1/{plural}/{id_}"}, "data": {"type": type_, "id": id_}}


class Msg:
    """A message (kept tiny: there can be hundreds of thousands)."""

    __slots__ = (
        "body",
        "channel",
        "conv",
        "created",
        "cust",
        "direction",
        "dtype",
        "id",
        "idx",
        "sent",
        "updated",
        "user",
        "v",
    )

    def __init__(
        self,
        idx: int,
        id_: str,
        conv: int,
        cust: int,
        created: int,
        updated: int,
        sent: int,
        direction: str,
        dtype: str,
        channel: str,
        v: int,
        user: int,
        body: str | None = None,
    ) -> None:
        self.idx = idx
        self.id = id_
        self.conv = conv
        self.cust = cust
        self.created = created
        self.updated = updated
        self.sent = sent
        self.direction = direction
        self.dtype = dtype
        self.channel = channel
        self.v = v
        self.user = user
        self.body = body


class Note:
    """An internal note on a conversation."""

    __slots__ = ("body", "conv", "created", "cust", "id", "idx", "mentions", "updated", "user", "v")

    def __init__(
        self,
        idx: int,
        id_: str,
        conv: int,
        cust: int,
        created: int,
        updated: int,
        user: int,
        mentions: list[int],
        v: int,
        body: str | None = None,
    ) -> None:
        self.idx = idx
        self.id = id_
        self.conv = conv
        self.cust = cust
        self.created = created
        self.updated = updated
        self.user = user
        self.mentions = mentions
        self.v = v
        self.body = body


PREVIEWS = [
    "Hi, I never received my order, can you check?",
    "Can you please help me?",
    "Where is my refund? It's been two weeks.",
    "Thanks so much, that fixed it! 🙏",
    "I'd like to change my shipping address.",
    "Le colis est arrivé endommagé 😞",
    "¿Pueden ayudarme con mi pedido?",
    "The app keeps crashing when I log in.",
    "Following up on my previous email.",
    "Please cancel my subscription.",
    "We have issued a refund to your original payment method.",
    "Happy to help! Could you share your order number?",
    "Your replacement ships today. Tracking: 1Z999AA10123456784",
    "注文がまだ届いていません。",
    "Can I get an invoice for order #10031?",
    "",
]
SUBJECTS = [
    "Order problem",
    "Re: Refund request",
    "Question about billing",
    "Re: Re: Damaged item",
    "Account access",
    "Réclamation 📦",
]
NOTE_BODIES = [
    "Customer called twice about this, please prioritise.",
    "Hey __{user}__, can you take a look at this refund?",
    "Escalated to tier 2 ⚠️",
    "Refund approved by __{user}__.",
    "Checked with the warehouse: item is back-ordered.",
    "VIP customer 💎 handle with care",
]
CHANNEL_APPS = {
    "email": "postmark",
    "chat": "chat",
    "sms": "twilio",
    "facebook": "facebook",
    "voice": "voice",
    "whatsapp": "whatsapp",
    "instagram": "instagram",
    "twitter-dm": "twitter",
}
LANGS = ["en", "en_us", "fr", "es", "ja", "de"]
COLORS = ["silver", "red", "blue", "green", "purple", "orange", "teal"]
ICONS = ["binoculars", "rocket", "star", "flag", "leaf"]


def _message_meta(m: Msg, cust_email: str, cust_phone: str) -> dict[str, Any]:
    """Channel-specific meta, with the polymorphic to/cc/bcc of the real API."""
    v = m.v
    if m.channel == "email":
        support = "support@sandbox-org.example"
        sender, recipient = (cust_email, support) if m.direction == "in" else (support, cust_email)
        shape = v % 6
        to: Any
        if shape <= 2:
            to = [{"email": recipient}]
        elif shape == 3:
            to = {"email": recipient}
        elif shape == 4:
            to = recipient
        else:
            to = [{"email": recipient}, {"email": "orders@sandbox-org.example"}]
        meta: dict[str, Any] = {
            "from": sender,
            "to": to,
            "cc": []
            if v % 4
            else (
                [{"email": "cc-team@sandbox-org.example"}]
                if v % 8
                else {"email": "cc-team@sandbox-org.example"}
            ),
            "subject": SUBJECTS[v % len(SUBJECTS)],
            "recipient": {"email": support, "mailboxHash": ""},
        }
        if v % 7 == 0:
            meta["bcc"] = "audit@sandbox-org.example"
        if m.dtype != "initial-in":
            meta["inReplyTo"] = f"<{m.id}@mail.sandbox-org.example>"
        return meta
    if m.channel == "sms":
        return {"from": cust_phone, "to": "+15550001111" if v % 2 else {"phone": "+15550001111"}}
    if m.channel == "voice":
        return {
            "trackingId": f"call-{m.id[-8:]}",
            "status": "completed",
            "placedAt": fmt_ms(m.sent),
        }
    if m.channel in ("facebook", "instagram"):
        return {"permalink": None, "messageType": "message"}
    return {}


def render_message(store: Any, m: Msg) -> dict[str, Any]:
    """Full JSON:API message resource."""
    cust = store.customers[m.cust]
    conv = store.conversations[m.conv]
    v = m.v
    preview = m.body if m.body is not None else PREVIEWS[v % len(PREVIEWS)]
    # contact details as they were when the customer was created, so that a later
    # customer update does not silently change already-sent messages
    email = cust["origEmail"]
    phone = cust["origPhone"]
    attrs: dict[str, Any] = {
        "channel": m.channel,
        "app": CHANNEL_APPS.get(m.channel, m.channel),
        "size": len(preview.encode()) + 120 * (v % 5),
        "direction": m.direction,
        "directionType": m.dtype,
        "preview": preview[:200],
        "subject": SUBJECTS[v % len(SUBJECTS)] if m.channel == "email" else None,
        "meta": _message_meta(m, email, phone),
        "status": "received" if m.direction == "in" else ("error" if v % 97 == 0 else "sent"),
        "sentAt": fmt_ms(m.sent),
        "createdAt": fmt_ms(m.created),
        "updatedAt": fmt_ms(m.updated),
        "lang": LANGS[v % len(LANGS)] if v % 9 else None,
        "auto": m.direction == "out" and v % 13 == 0,
        "redacted": v % 211 == 0,
        "assignedUsers": [],
        "assignedTeams": [],
        "createdByTeams": [],
        "reactions": [],
        "intentDetections": [],
        "sentiment": {"polarity": (v % 3) - 1, "confidence": round((v % 100) / 100, 2)}
        if v % 3
        else {},
        "rev": 1 if m.updated == m.created else 2,
    }
    if m.updated != m.created:
        attrs["modifiedAt"] = fmt_ms(m.updated)
    if m.channel == "email":
        attrs["externalId"] = f"<{m.id}@mail.sandbox-org.example>"
    relationships: dict[str, Any] = {
        "org": rel("org", store.org_id, "orgs"),
        "customer": rel("customers", cust["id"], "customers"),
        "conversation": rel("conversation", conv["id"], "conversations"),
    }
    if m.direction == "out":
        uid = store.users[m.user]["id"]
        relationships["createdBy"] = rel("user", uid, "users")
    if store.options.message_attachment_refs:
        # UNCERTAIN upstream whether messages carry this; an option can drop it
        relationships["attachments"] = {
            "data": [{"type": "attachment", "id": a} for a in store.message_attachment_ids(m)]
        }
    links = {"self": f"/v1/messages/{m.id}"}
    if m.channel == "email":
        links["related"] = f"/v1/postmark/messages/{m.id}"
    return {
        "type": "message",
        "id": m.id,
        "attributes": attrs,
        "relationships": relationships,
        "links": links,
    }


def render_note(store: Any, n: Note) -> dict[str, Any]:
    """Full JSON:API note resource."""
    user = store.users[n.user]
    if n.body is not None:
        body = n.body
    else:
        mention = store.users[n.mentions[0]]["attributes"]["displayName"] if n.mentions else "Agent"
        body = NOTE_BODIES[n.v % len(NOTE_BODIES)].format(user=mention)
    attrs: dict[str, Any] = {
        "body": body,
        "createdAt": fmt_ms(n.created),
        "updatedAt": fmt_ms(n.updated),
        "modifiedAt": fmt_ms(n.updated),
        "deleted": False,
        "createdByTeams": [],
    }
    return {
        "type": "note",
        "id": n.id,
        "attributes": attrs,
        "relationships": {
            "org": rel("org", store.org_id, "orgs"),
            "customer": rel("customer", store.customers[n.cust]["id"], "customers"),
            "createdBy": rel("user", user["id"], "users"),
            "conversation": rel("conversation", store.conversations[n.conv]["id"], "conversations"),
            "userMentions": {
                "data": [{"type": "user", "id": store.users[u]["id"]} for u in n.mentions]
            },
        },
        "links": {"self": f"/v1/notes/{n.id}"},
    }


def _done_block(store: Any, done: dict[str, Any] | None) -> dict[str, Any]:
    """lastDone / firstDone: full when the conversation was ever done, else the stub."""
    if done is None:
        return {"createdByTeams": [], "assignedTeams": [], "assignedUsers": []}
    uid = store.users[done["by"]]["id"]
    return {
        "createdAt": fmt_ms(done["at"]),
        "createdBy": uid,
        "createdByTeams": [],
        "assignedTeams": [],
        "assignedUsers": [uid],
        "time": done["time"],
        "businessTime": done["time"] // 2,
        "noteCount": done["notes"],
        "messageCount": done["msgs"],
        "outboundMessageCount": done["out"],
        "lastMessageDirection": done["dir"],
        "source": "user",
    }


def render_conversation(store: Any, c: dict[str, Any]) -> dict[str, Any]:
    """Full JSON:API conversation resource (from a live record or a snapshot)."""
    msgs = [store.messages[i] for i in c["msgs"]]
    out_count = sum(1 for m in msgs if m.direction == "out")
    last_msg = msgs[-1] if msgs else None
    first_in = next((m for m in msgs if m.direction == "in"), None)
    last_in = next((m for m in reversed(msgs) if m.direction == "in"), None)
    v = c["v"]
    attrs: dict[str, Any] = {
        "name": c["name"],
        "channels": sorted({m.channel for m in msgs}) if msgs else list(c["channels"]),
        "status": c["status"],
        "messageCount": len(msgs),
        "noteCount": len(c["notes"]),
        "outboundMessageCount": out_count,
        "inboundMessageCount": len(msgs) - out_count,
        "satisfaction": v % 6 if v % 4 == 0 else 0,
        "sentiment": {"polarity": (v % 3) - 1, "confidence": 0.8} if v % 5 else {},
        "createdAt": fmt_ms(c["created"]),
        "updatedAt": fmt_ms(c["updated"]),
        "modifiedAt": fmt_ms(c["modified"]),
        "lastActivityAt": fmt_ms(c["updated"]),
        "lastMessageAt": fmt_opt(last_msg.created if last_msg else None),
        "lastMessageDirection": last_msg.direction if last_msg else None,
        "firstMessageIn": {"sentAt": fmt_ms(first_in.sent), "id": first_in.id} if first_in else {},
        "lastMessageIn": {"sentAt": fmt_ms(last_in.sent), "id": last_in.id} if last_in else {},
        "tags": list(c["tags"]),
        "suggestedTags": [],
        "assignedUsers": [store.users[u]["id"] for u in c["assigned"]],
        "assignedTeams": [],
        "direction": c["direction"],
        "priority": c["priority"],
        "preview": c["preview"],
        "custom": dict(c["custom"]),
        "doneCount": c["doneCount"],
        "reopenCount": c["reopenCount"],
        "snoozeCount": 1 if c["snooze"] is not None else 0,
        "lastDone": _done_block(store, c["lastDone"]),
        "firstDone": _done_block(store, c["firstDone"]),
        "defaultLang": "en_us",
        "ended": c["status"] == "done" and c["channels"][:1] == ["chat"],
        "rev": c["rev"],
    }
    if c["snooze"] is not None:
        attrs["snooze"] = {"time": fmt_ms(c["snooze"]), "status": "scheduled"}
    if c.get("imported") is not None:
        attrs["importedAt"] = fmt_ms(c["imported"])
    creator = store.users[c["createdBy"]]["id"]
    modifier = store.users[c["modifiedBy"]]["id"]
    return {
        "type": "conversation",
        "id": c["id"],
        "attributes": attrs,
        "relationships": {
            "org": rel("org", store.org_id, "orgs"),
            "customer": rel("customer", store.customers[c["cust"]]["id"], "customers"),
            "messages": {"links": {"self": f"/v1/conversations/{c['id']}/messages"}},
            "createdBy": rel("user", creator, "users"),
            "modifiedBy": rel("user", modifier, "users"),
        },
        "links": {"self": f"/v1/conversations/{c['id']}"},
    }


def render_customer(store: Any, c: dict[str, Any]) -> dict[str, Any]:
    """Full JSON:API customer resource."""
    v = c["v"]
    attrs: dict[str, Any] = {
        "name": c["name"],
        "displayName": c["name"],
        "displayColor": COLORS[v % len(COLORS)],
        "displayIcon": ICONS[v % len(ICONS)],
        "firstName": c["firstName"],
        "lastName": c["lastName"],
        "externalId": c["externalId"],
        "externalIds": [{"externalId": c["externalId"], "verified": True}]
        if c["externalId"]
        else [],
        "sharedExternalIds": [],
        "emails": [dict(e) for e in c["emails"]],
        "sharedEmails": [],
        "phones": [dict(p) for p in c["phones"]],
        "sharedPhones": [],
        "socials": [],
        "sharedSocials": [],
        "urls": [],
        "locations": [],
        "whatsapps": [],
        "facebookIds": [],
        "instagramIds": [],
        "smoochIds": [],
        "activeUsers": [],
        "watchers": [],
        "createdAt": fmt_ms(c["created"]),
        "updatedAt": fmt_ms(c["updated"]),
        "lastActivityAt": fmt_ms(c["updated"]),
        "deleted": False,
        "verified": v % 3 != 0,
        "rev": c["rev"],
        "locale": c["locale"],
        "tags": list(c["tags"]),
        "custom": dict(c["custom"]),
        "conversationCounts": dict(c["counts"]),
        "lastConversation": {"tags": [], "channels": []},
        "preview": {},
        "progressiveStatus": None,
    }
    if c["modified"] is not None:
        attrs["modifiedAt"] = fmt_ms(c["modified"])
    relationships: dict[str, Any] = {
        "org": rel("org", store.org_id, "orgs"),
        "messages": {"links": {"self": f"/v1/customers/{c['id']}/messages"}},
    }
    if c.get("company") is not None:
        # The shape an audit-log change of a customer shows (relationships.company);
        # the customer's own attributes.company string is left out (its meaning is
        # UNCERTAIN: a name or an id).
        relationships["company"] = rel("company", store.companies[c["company"]]["id"], "companies")
    return {
        "type": "customer",
        "id": c["id"],
        "attributes": attrs,
        "relationships": relationships,
        "links": {"self": f"/v1/customers/{c['id']}"},
    }


def render_company(store: Any, c: dict[str, Any]) -> dict[str, Any]:
    """Full JSON:API company resource (the OAS example of GET /v1/companies/{id})."""
    attrs: dict[str, Any] = {
        "name": c["name"],
        "externalId": c["externalId"],
        "domains": list(c["domains"]),
        "tags": list(c["tags"]),
        "custom": dict(c["custom"]),
        "createdAt": fmt_ms(c["created"]),
        "updatedAt": fmt_ms(c["updated"]),
        "modifiedAt": fmt_ms(c["modified"]),
        "deleted": False,
        "rev": c["rev"],
    }
    if c.get("imported") is not None:
        attrs["importedAt"] = fmt_ms(c["imported"])
    return {
        "type": "company",
        "id": c["id"],
        "attributes": attrs,
        "relationships": {
            "org": rel("org", store.org_id, "orgs"),
            "createdBy": rel("user", store.users[c["createdBy"]]["id"], "users"),
            "modifiedBy": rel("user", store.users[c["modifiedBy"]]["id"], "users"),
        },
        "links": {"self": f"/v1/companies/{c['id']}"},
    }


def klass_name(store: Any, idx: int) -> str:
    """The name of the store's ``idx``-th klass (what kobjects and search contexts use)."""
    return str(store.klasses[idx]["attributes"]["name"])


def render_kobject(store: Any, k: dict[str, Any]) -> dict[str, Any]:
    """Full JSON:API kobject resource, as the OAS examples of /v1/klasses/{name} show it.

    ``type`` is ``kobject.<klass name>`` and ``relationships.klass`` points at the klass
    by *name* under the singular key ``link``, both as in the OAS examples. Whether a
    search result carries the same ``type`` (or plain ``kobject``) is UNCERTAIN.
    """
    name = klass_name(store, k["klass"])
    attrs: dict[str, Any] = {
        "title": k["title"],
        "description": k["description"],
        "icon": store.klasses[k["klass"]]["attributes"]["icon"],
        "images": list(k["images"]),
        "externalId": k["externalId"],
        "tags": list(k["tags"]),
        "custom": dict(k["custom"]),
        "createdAt": fmt_ms(k["created"]),
        "updatedAt": fmt_ms(k["updated"]),
        "modifiedAt": fmt_ms(k["modified"]),
        "rev": k["rev"],
    }
    relationships: dict[str, Any] = {
        "org": rel("org", store.org_id, "orgs"),
        "klass": {"link": {"self": f"/v1/klasses/{name}"}, "data": {"type": "klass", "id": name}},
    }
    if k["cust"] is not None:
        relationships["customer"] = rel("customer", store.customers[k["cust"]]["id"], "customers")
    if k["company"] is not None:
        relationships["company"] = rel("company", store.companies[k["company"]]["id"], "companies")
    return {
        "type": f"kobject.{name}",
        "id": k["id"],
        "attributes": attrs,
        "relationships": relationships,
        "links": {"self": f"/v1/klasses/{name}/{k['id']}"},
    }
