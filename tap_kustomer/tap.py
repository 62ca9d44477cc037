"""tap-kustomer: the settings and the stream list."""

from __future__ import annotations

import logging
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import (
    EMIT_ACTIVATE_VERSION_CONFIG,
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)
from typing_extensions import override

from tap_kustomer import streams
from tap_kustomer.budget import RequestBudget
from tap_kustomer.client import REGION_URLS, KustomerStream, RunResources, resolve_api_url
from tap_kustomer.errors import ConfigurationError, install_redactor
from tap_kustomer.sdk_adapter import TerminationHook
from tap_kustomer.search import parse_timestamp
from tap_kustomer.stopping import RunStopped
from tap_kustomer.targeted import DEFAULT_BATCH_SIZE, leave_out_unqueued_streams

if t.TYPE_CHECKING:
    import click
    from singer_sdk.streams import Stream

ACTIVATE_VERSION_HELP = (
    "Emit ACTIVATE_VERSION for each full-table stream (tags, users, teams, klasses, "
    "shortcuts, brands, business_schedules, queues, satisfaction_surveys), so that a "
    "target can delete or mark the rows a run did not read again."
)

STREAM_TYPES: list[type[KustomerStream]] = [
    streams.ConversationsStream,
    streams.MessagesStream,
    streams.NotesStream,
    streams.AttachmentsStream,
    streams.ConversationEventsStream,
    streams.CustomersStream,
    streams.TagsStream,
    streams.UsersStream,
    streams.TeamsStream,
    streams.KlassesStream,
    streams.ShortcutsStream,
    streams.BrandsStream,
    streams.BusinessSchedulesStream,
    streams.QueuesStream,
    streams.SatisfactionSurveysStream,
    streams.CompaniesStream,
    streams.KobjectsStream,
    streams.AuditLogsStream,
]


class TapKustomer(TerminationHook, Tap):
    """Singer tap for Kustomer: resolved conversations with whole threads."""

    name = "tap-kustomer"
    package_name = "kustomer-singer-tap"
    # Not BATCH: threads are written as records while conversations are walked.
    # ACTIVATE_VERSION for the full-table reference streams (tags, users, teams...),
    # with the SDK's setting emit_activate_version_messages (added below).
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        TapCapabilities.ACTIVATE_VERSION,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType(nullable=False),
            required=True,
            secret=True,
            title="API Key",
            description=(
                "Kustomer API key (Settings > Security > API Keys) with the read roles of "
                "the selected streams and org.permission.search.create."
            ),
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start Date",
            description=(
                "Read records resolved (or updated) at or after this ISO-8601 time on the "
                "first run; a saved bookmark wins over it. Unset: all searchable history."
            ),
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            title="End Date",
            description="Optional upper bound (ISO-8601) for a bounded backfill.",
        ),
        th.Property(
            "region",
            th.StringType,
            default="us",
            allowed_values=sorted(REGION_URLS),
            title="Region",
            description=(
                "Kustomer region of the org: us (api.kustomerapp.com), eu "
                "(api.prod2.kustomerapp.com) or in (api.prod4.kustomerapp.com)."
            ),
        ),
        th.Property(
            "org_name",
            th.StringType,
            title="Org Name",
            description="Org subdomain; the tap then calls https://{org_name}.api.kustomerapp.com.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            title="API URL",
            description="Scheme and host of the API, without /v1; overrides region and org_name.",
        ),
        th.Property(
            "resolved_only",
            th.BooleanType,
            default=True,
            title="Resolved Conversations Only",
            description=(
                "Extract only resolved (done) conversations, bookmarked on resolution "
                "time; false extracts every conversation, bookmarked on update time."
            ),
        ),
        th.Property(
            "data_mutability",
            th.BooleanType,
            default=False,
            title="Data Mutability",
            description=(
                "Emit a resolved conversation again (with its whole thread) whenever it "
                "changes after it was emitted, e.g. tags or custom fields, even if it was "
                "not resolved again."
            ),
        ),
        th.Property(
            "index_lag_minutes",
            th.IntegerType,
            default=15,
            title="Search Index Lag (minutes)",
            description=(
                "Kustomer's search index can lag behind changes; each run reads only what "
                "is older than this, leaving the rest to the next run so nothing is missed."
            ),
        ),
        th.Property(
            "archive_search",
            th.BooleanType,
            default=True,
            title="Archive Search",
            description=(
                "Read records updated more than 2 years ago (beyond standard search) from "
                "Kustomer's archive search when the window reaches back that far; false "
                "leaves them out with a warning."
            ),
        ),
        th.Property(
            "archive_margin_days",
            th.IntegerType,
            default=7,
            title="Archive Margin (days)",
            description=(
                "Days on both sides of the 2-year horizon read from both archive and "
                "standard search (duplicates dropped by id), since the exact cutoff is "
                "not documented."
            ),
        ),
        th.Property(
            "rate_limit_share_percent",
            th.IntegerType,
            default=80,
            title="Rate Limit Share (%)",
            description=(
                "Share of the org's per-minute limits (from x-ratelimit headers) this tap "
                "may use, leaving the rest to the org's other integrations."
            ),
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType,
            title="Max Requests per Minute",
            description="Hard cap on this tap's requests per minute (all endpoints).",
        ),
        th.Property(
            "max_search_requests_per_minute",
            th.IntegerType,
            title="Max Search Requests per Minute",
            description="Hard cap on this tap's search requests per minute.",
        ),
        th.Property(
            "max_workers",
            th.IntegerType,
            default=4,
            title="Max Workers",
            description="Concurrent requests for conversation threads.",
        ),
        th.Property(
            "thread_strategy",
            th.StringType,
            default="auto",
            allowed_values=["auto", "per_conversation", "bulk", "batched"],
            title="Thread Strategy",
            description=(
                "How threads are read: per_conversation (a request per thread), bulk "
                "(search pages of 500 messages/notes by time window, grouped by "
                "conversation and checked against each conversation's counts), batched "
                "(search the notes of up to 20 conversations and the messages of up to 20 "
                "customers at once, checked the same way), or auto (the cheapest per batch)."
            ),
        ),
        th.Property(
            "webhook_queue",
            th.StringType,
            secret=True,
            title="Webhook Queue",
            description=(
                "URL of the queue the webhook receiver writes (sqlite:///path/queue.db or "
                "postgresql://user@host:5432/db). When set, the run is targeted: only the "
                "queued conversations are read, with their whole threads, and no search is "
                "made; other streams are skipped."
            ),
        ),
        th.Property(
            "webhook_batch_size",
            th.IntegerType,
            default=DEFAULT_BATCH_SIZE,
            title="Webhook Batch Size",
            description=(
                "Conversations per GET /v1/conversations/{ids} in a targeted run; halved "
                "automatically if Kustomer refuses a batch."
            ),
        ),
        th.Property(
            "emit_deletes",
            th.BooleanType,
            default=True,
            title="Emit Deletes",
            description=(
                "At the end of each run, write a record with id and _sdc_deleted_at for "
                "each conversation, customer, company and kobject deleted in Kustomer since "
                "the last run, read from the audit log (needs "
                "org.permission.audit_logs.read; without it one warning, no deletes)."
            ),
        ),
        th.Property(
            "audit_log_object_types",
            th.ArrayType(th.StringType),
            title="Audit Log Object Types",
            description=(
                "Object types the audit_logs stream reads (e.g. conversation, customer, "
                "user); empty or unset: every type."
            ),
        ),
        th.Property(
            "request_timeout",
            th.IntegerType,
            default=60,
            title="Request Timeout (s)",
            description="Seconds to wait for one response before retrying it.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=8,
            title="Max Retries",
            description=(
                "Retries of one request on 429, 5xx, timeouts, dropped connections and "
                "unreadable bodies before the run stops (its state saved)."
            ),
        ),
        th.Property(
            "skip_unauthorized_streams",
            th.BooleanType,
            default=False,
            title="Skip Unauthorized Streams",
            description=(
                "When the key lacks the role of a stream, skip that stream with a warning "
                "instead of failing the run."
            ),
        ),
        th.Property(
            "fail_on_type_mismatch",
            th.BooleanType,
            default=False,
            title="Fail on Type Mismatch",
            description=(
                "Stop the run when Kustomer sends a value that cannot be converted to its "
                "field's type; by default it is loaded as null with a warning."
            ),
        ),
        th.Property(
            "debug",
            th.BooleanType,
            default=False,
            title="Debug",
            description="Print full Python tracebacks on errors (secrets still redacted).",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            title="User Agent",
            description="User-Agent header to send.",
        ),
    ).to_dict()

    @classmethod
    @override
    def append_builtin_config(cls, config_jsonschema: dict[str, t.Any]) -> None:
        """Also offer the SDK's ``emit_activate_version_messages`` setting.

        The SDK's streams read it, but its taps do not declare it (its targets declare
        their side), so without this the setting would be undocumented.
        """
        super().append_builtin_config(config_jsonschema)
        if TapCapabilities.ACTIVATE_VERSION in cls.capabilities:
            properties = config_jsonschema.setdefault("properties", {})
            for name, setting in EMIT_ACTIVATE_VERSION_CONFIG["properties"].items():
                properties.setdefault(name, {**setting, "description": ACTIVATE_VERSION_HELP})

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Scrub the key from all output before anything can log it."""
        super().__init__(*args, **kwargs)
        install_redactor([str(self.config.get("api_key") or "")])

    @property
    @override
    def streams(self) -> dict[str, Stream]:
        """The streams; with ``webhook_queue`` set, only conversations and their threads."""
        loaded = super().streams
        if self.config.get("webhook_queue"):
            leave_out_unqueued_streams(loaded.values(), self.logger)
        return loaded

    @cached_property
    def run(self) -> RunResources:
        """What every stream of this run shares: the budget, the key check, metadata."""
        share = float(self.config.get("rate_limit_share_percent") or 80) / 100.0
        return RunResources(
            budget=RequestBudget(
                share=share,
                max_requests_per_minute=self.config.get("max_requests_per_minute"),
                max_search_requests_per_minute=self.config.get("max_search_requests_per_minute"),
            )
        )

    @override
    def on_stop_signal(self, signum: int) -> None:
        """Write the STATE, then end the run as a process stopped by a signal does.

        Every stream is sorted, so the state covers exactly what was written; the
        next run resumes there. The CLI exits without waiting for requests in flight.
        """
        self.logger.warning("Stopped by signal %d; the STATE written resumes the run", signum)
        self.state_writer.write_state(self.state)
        raise RunStopped(signum)

    @override
    def load_state(self, state: dict[str, t.Any]) -> None:
        """Keep the conversations bookmark when ``data_mutability`` or ``resolved_only`` flips.

        The SDK would restart from ``start_date`` when the replication key changes. The
        old value is a safe start for the new key: everything resolved before it was
        emitted, and everything updated before it was emitted if it was resolved.
        """
        super().load_state(carry_over_bookmark(state, self.config, self.logger))

    @classmethod
    @override
    def get_singer_command(cls) -> click.Command:
        """The SDK's command plus ``--check`` (the plumbing lives in :mod:`tap_kustomer.cli`)."""
        from tap_kustomer.cli import with_check_option  # cli imports this module

        return with_check_option(super().get_singer_command())

    @classmethod
    @override
    def invoke(cls, *, check: bool = False, **kwargs: t.Any) -> None:
        """With ``--check``, check the key against the streams instead of syncing."""
        from tap_kustomer.cli import run_check

        if check and not kwargs.get("about"):
            run_check(cls, config=kwargs.get("config"), catalog=kwargs.get("catalog"))
            return
        super().invoke(**kwargs)

    @override
    def discover_streams(self) -> list[Stream]:
        """Every stream, once the settings are known to be usable (before any request)."""
        check_config(self.config)
        return [stream_type(tap=self) for stream_type in STREAM_TYPES]


def carry_over_bookmark(
    state: dict[str, t.Any], config: t.Mapping[str, t.Any], logger: logging.Logger
) -> dict[str, t.Any]:
    """The state with the conversations bookmark renamed to the key the settings choose."""
    bookmark = (state.get("bookmarks") or {}).get("conversations")
    if not isinstance(bookmark, dict) or not bookmark.get("replication_key_value"):
        return state
    key = streams.ConversationsStream.replication_key_for(config)
    if bookmark.get("replication_key") in (None, key):
        return state
    logger.info(
        "Conversations now follow %s; continuing from the %s bookmark %s",
        key,
        bookmark.get("replication_key"),
        bookmark["replication_key_value"],
    )
    renamed = {**bookmark, "replication_key": key}
    renamed.pop("starting_replication_value", None)
    return {**state, "bookmarks": {**state["bookmarks"], "conversations": renamed}}


def check_config(config: t.Mapping[str, t.Any]) -> None:
    """Reject settings that cannot work, naming the fix, before any request."""
    key = config.get("api_key")
    if isinstance(key, str) and key != key.strip():
        msg = "api_key has leading or trailing spaces; paste the key without them"
        raise ConfigurationError(msg)
    if isinstance(key, str) and not key.strip():
        msg = "api_key is empty; set it to a Kustomer API key"
        raise ConfigurationError(msg)
    dates = {}
    for name in ("start_date", "end_date"):
        raw = config.get(name)
        if raw in (None, ""):
            continue
        parsed = parse_timestamp(raw)
        if parsed is None:
            msg = f"{name} {raw!r} is not a date; use ISO-8601, e.g. 2024-01-31T00:00:00Z"
            raise ConfigurationError(msg)
        dates[name] = parsed
    if "start_date" in dates and "end_date" in dates and dates["end_date"] <= dates["start_date"]:
        msg = (
            f"end_date {config['end_date']} is not after start_date {config['start_date']}; "
            "swap them or remove end_date"
        )
        raise ConfigurationError(msg)
    for name in ("rate_limit_share_percent",):
        value = config.get(name)
        if value is not None and not 0 < float(value) <= 100:
            msg = f"{name} must be between 1 and 100, not {value}"
            raise ConfigurationError(msg)
    resolve_api_url(config)
