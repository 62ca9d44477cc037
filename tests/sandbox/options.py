"""Options (behaviour switches) of the sandbox and API key specifications."""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import default_anchor

#: Roles that create outbound webhooks (the docs disagree on which one; any of them will do).
WEBHOOK_ADMIN_ROLES: tuple[str, ...] = (
    "org.permission.outbound_webhook",
    "org.outbound_webhooks",
    "org.admin.outbound_webhooks",
)

#: Roles per resource (read roles, except the outbound webhook write and delete ones).
#: A key needs any one of the names.
RESOURCE_ROLES: dict[str, tuple[str, ...]] = {
    "search": ("org.permission.search.create", "org.user.search.read"),
    "conversation": ("org.user.conversation.read", "org.permission.conversation.read"),
    "message": ("org.user.message.read", "org.permission.message.read"),
    "note": ("org.user.note.read", "org.permission.note.read"),
    "customer": ("org.user.customer.read", "org.permission.customer.read"),
    "tag": ("org.user.tag.read", "org.permission.tag.read"),
    "user": ("org.user.user.read", "org.permission.user.read"),
    "team": ("org.user.team.read", "org.permission.team.read"),
    "shortcut": ("org.user.shortcut.read", "org.permission.shortcut.read"),
    "metadata": ("org.user.metadata.read", "org.permission.metadata.read"),
    "company": ("org.user.company.read", "org.permission.company.read"),
    "kobject": ("org.user.kobject.read", "org.permission.kobject.read"),
    "brand": ("org.user.brand.read", "org.permission.brand.read"),
    "schedule": ("org.user.schedule.read", "org.permission.schedule.read"),
    "klass": ("org.user.klass.read", "org.permission.klass.read"),
    "routing": ("org.user.routing.read", "org.permission.routing.read"),
    "satisfaction": ("org.user.satisfaction.read", "org.permission.satisfaction.read"),
    "attachment": ("org.user.attachment.read", "org.permission.attachment.read"),
    "event": ("org.user.event.read", "org.permission.event.read"),
    "audit_logs": ("org.user.audit_logs.read", "org.permission.audit_logs.read"),
    # Outbound webhooks: which role creates one is UNCERTAIN upstream, so each of the
    # names Kustomer's documents use is accepted; a role that creates also reads/deletes.
    "outbound_webhook": (
        "org.permission.outbound_webhook.read",
        *WEBHOOK_ADMIN_ROLES,
    ),
    "outbound_webhook_write": WEBHOOK_ADMIN_ROLES,
    "outbound_webhook_delete": (
        "org.permission.outbound_webhook.delete",
        *WEBHOOK_ADMIN_ROLES,
    ),
}

#: every role a full key holds (a role named by two resources appears once)
ALL_ROLES: tuple[str, ...] = tuple(
    dict.fromkeys(role for roles in RESOURCE_ROLES.values() for role in roles)
)


@dataclass
class KeySpec:
    """An extra API key: which roles it has and how a missing role is reported.

    ``roles=None`` means every role. ``denial_status`` is 401 or 403 because the
    real API documents both for a missing role.
    """

    roles: frozenset[str] | None = None
    denial_status: int = 403
    expired: bool = False
    name: str = "extra key"

    @classmethod
    def without(cls, *resources: str, denial_status: int = 403) -> KeySpec:
        """Key with every role except the read roles of ``resources`` (e.g. "tag")."""
        banned = {role for res in resources for role in RESOURCE_ROLES[res]}
        return cls(
            roles=frozenset(r for r in ALL_ROLES if r not in banned),
            denial_status=denial_status,
            name=f"key without {','.join(resources)}",
        )

    @classmethod
    def expired_key(cls) -> KeySpec:
        """Key that is known but past its expiry."""
        return cls(expired=True, name="expired key")

    def allows(self, resource: str) -> bool:
        """Whether the key holds one of the read roles of ``resource``."""
        if self.roles is None:
            return True
        return any(role in self.roles for role in RESOURCE_ROLES[resource])

    def role_list(self) -> list[str]:
        """Roles as a sorted list (for /v1/auth/tokens/current)."""
        return sorted(ALL_ROLES if self.roles is None else self.roles)


@dataclass
class SandboxOptions:
    """Every knob of the sandbox.

    Data fields (seed, now, customers, conversations, tags, users, tie_clusters)
    are read once when the Sandbox is built. All other fields are read on every
    request, so tests may change them at runtime (``sb.options.fault_5xx_rate = .2``).
    """

    # --- data -------------------------------------------------------------
    seed: int = 1
    now: str = field(default_factory=default_anchor)
    customers: int = 100
    conversations: int = 300
    tags: int = 50
    users: int = 8
    months: int = 18
    #: years of generated history, overriding ``months`` (e.g. 4: about half the
    #: records are older than standard search's two years); None = use ``months``
    history_years: float | None = None
    #: extra clusters sharing one timestamp: (kind, size), kind in
    #: "resolve" | "import" | "customers"
    tie_clusters: list[tuple[str, int]] = field(default_factory=list)

    # --- auth ---------------------------------------------------------------
    api_key: str = "sandbox-key"
    extra_keys: dict[str, KeySpec] = field(default_factory=dict)

    # --- rate limits (real time) ---------------------------------------------
    org_rpm: int = 1000
    search_rpm: int = 100
    #: "epoch" = x-ratelimit-reset in real epoch seconds; "delta" = seconds until reset
    reset_format: str = "epoch"
    #: which budget a successful search's headers describe (undocumented upstream):
    #: "search" = the search window's; "org" = the org window's (a search 429 still
    #: carries the search window's headers)
    search_headers: str = "search"
    #: False: a 429 carries x-ratelimit-remaining/reset but no x-ratelimit-limit
    rate_limit_429_limit_header: bool = True

    # --- latency and faults ----------------------------------------------------
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_5xx_rate: float = 0.0
    fault_502_html_rate: float = 0.0
    fault_reset_rate: float = 0.0
    fault_truncated_rate: float = 0.0
    #: restrict faults to routes whose template contains one of these strings
    #: (e.g. ["/search"]); None = every /v1 route
    fault_routes: list[str] | None = None
    faults_exempt_control: bool = True

    # --- search -------------------------------------------------------------
    index_lag_seconds: float = 0.0
    #: past the reachable window: "error" (HTTP 400) | "empty" (200, no data)
    cap_behavior: str = "error"
    search_result_cap: int = 10_000
    search_max_page_size: int = 500
    search_default_page_size: int = 100
    #: reject unknown top-level body keys with 400 (the OAS says
    #: additionalProperties: false)
    search_strict_body: bool = True
    #: standard search only covers records updated within this many days (the
    #: OAS says 2 years; older ones need archive search); None = no limit
    search_max_age_days: float | None = 730.0
    #: where the two-year cutoff falls: "ms" (exactly now - search_max_age_days) or
    #: "day" (that instant floored to UTC midnight); the real granularity is UNCERTAIN
    search_cutoff_granularity: str = "ms"
    #: archive search (``POST /v1/customers/archive/search``) holds records updated
    #: before the cutoff plus this many days, so both indexes hold the records at the
    #: boundary (whether the real indexes overlap is UNCERTAIN); 0 = no overlap
    archive_overlap_days: float = 1.0
    #: archive search's "hard limit of 100 pages": a later page is answered 400
    archive_max_pages: int = 100
    #: answer every archive search with this status (403, 404, 400: an org or key
    #: without the feature); None = serve it
    archive_status: int | None = None
    #: the OAS limits and/or/not arrays to 20 unique criteria; None = no limit
    search_max_criteria: int | None = 20
    #: bodies above this size get 413 (the docs say 100 kb)
    max_body_bytes: int = 100_000

    # --- list endpoints --------------------------------------------------------
    list_max_page_size: int = 100
    tags_include_deleted_by_default: bool = True
    multi_get_max_ids: int = 100

    # --- per-conversation children (read on every request; see children.py) ----
    #: share of messages with 1-3 attachments, decided per message from the seed (so a
    #: message made later by a mutation is decided the same way); 0 = no attachments
    attachment_share: float = 0.15
    #: messages carry ``relationships.attachments.data`` (refs to their attachments);
    #: False leaves the key out, since whether the real API sends it is UNCERTAIN
    message_attachment_refs: bool = True
    #: the attachments and events lists carry ``links`` (self/first/prev/next); False
    #: drops them (UNCERTAIN upstream), so a client must page until a short page
    child_list_links: bool = True

    # --- outbound webhooks (read on every use; see outbound.py) -------------------
    #: accept ``http://`` URLs whose host is loopback (Kustomer requires https; a local
    #: receiver in tests has no certificate). Other http URLs are refused either way.
    webhook_allow_http_loopback: bool = True
    webhook_max_per_org: int = 5
    webhook_max_events: int = 12
    #: seconds a receiver has to answer one delivery (Kustomer: "a few seconds")
    webhook_timeout_seconds: float = 2.0
    #: waits before each retry after a failed attempt (Kustomer: 1, 1, 2, 5, 10, 15, 30
    #: minutes); when they run out the webhook is disabled
    webhook_retry_delays: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.5])
    #: share of deliveries sent twice (same event id, same body)
    webhook_duplicate_rate: float = 0.0
    #: > 1: new deliveries go out in windows of this many, shuffled (never in order)
    webhook_reorder: int = 0
    #: how long a reorder window waits to fill before a short window is sent
    webhook_reorder_hold_seconds: float = 0.1
    #: every attempt fails as if the network were down (no request is made)
    webhook_deliveries_fail: bool = False

    # --- audit log (read on every request; see audit.py) ---------------------------
    #: the largest ``count`` of ``GET /v1/audit-logs`` (the OAS: 1,000); larger ones are
    #: clamped, so a small value makes a client page
    audit_max_page_size: int = 1000

    # --- bookkeeping -----------------------------------------------------------
    request_log_size: int = 5000

    # --- companies and custom objects (data, read once) -------------------------
    #: drawn from a random stream of their own, so these never change the records
    #: above; tie_clusters also takes the kinds "companies" and "kobjects"
    companies: int = 20
    kobjects: int = 60
    #: how many klasses (custom object types) the kobjects spread over, 1..5
    klasses: int = 3
    #: share of customers linked to a company (relationships.company)
    customers_with_company: float = 0.6

    # --- reference lists (data, read when first served; see reference.py) -----------
    brands: int = 2
    schedules: int = 2
    queues: int = 3
    satisfaction_surveys: int = 2

    def key_spec(self, key: str) -> KeySpec | None:
        """Resolve an API key (exact match, no trimming) to its spec."""
        if key == self.api_key:
            return KeySpec(name="full key")
        return self.extra_keys.get(key)
