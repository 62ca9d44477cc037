"""Streams read through search, walked in ascending order of their replication key."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone

from typing_extensions import override

from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import PermissionDeniedError
from tap_kustomer.search import SEARCH_PAGE_SIZE, SearchWalk, WalkKey, parse_timestamp
from tap_kustomer.streams.common import (
    SCHEMAS,
    CustomAttributeSchema,
    iso,
    path,
    relationship_id,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

#: Standard search covers records updated within about two years.
STANDARD_SEARCH_DAYS = 730


class SearchedStream(KustomerStream):
    """A stream read through search, walked in ascending order of its replication key."""

    is_sorted = True
    path = "/v1/customers/search"
    http_method = "POST"
    query_context: t.ClassVar[str]

    def walk_keys(self) -> list[WalkKey]:
        """The ordering keys of the walk, replication key first."""
        raise NotImplementedError

    def walk_criteria(self) -> list[dict[str, t.Any]]:
        """Filters besides the time window."""
        return []

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        """No signpost: the walk's upper bound already comes from the server's clock."""
        return

    def window_end(self) -> datetime:
        """The newest time this run may read: settled in the search index, before end_date.

        Search lags behind changes; reading only what is older than the lag means a
        record indexed late still lands after the bookmark and is read next run.
        """
        lag = timedelta(minutes=float(self.config.get("index_lag_minutes", 15)))
        server_now = datetime.fromtimestamp(self.budget.server_time(), tz=timezone.utc)
        end = server_now - lag
        end_date = parse_timestamp(self.config.get("end_date"))
        return min(end, end_date) if end_date else end

    def new_walk(self, context: Context | None) -> SearchWalk:
        """A walk from the bookmark (or start_date) to the window end."""
        lower = self.get_starting_timestamp(context)
        upper = self.window_end()
        horizon = upper - timedelta(days=STANDARD_SEARCH_DAYS)
        if lower is None or lower < horizon:
            self.logger.warning(
                "%s: Kustomer's standard search holds only records updated in the last 2 "
                "years (since %s); older ones are only in its archive search, which this "
                "tap does not read",
                self.name,
                horizon.date().isoformat(),
            )
        return SearchWalk(
            search=self.search,
            query_context=self.query_context,
            criteria=self.walk_criteria(),
            keys=self.walk_keys(),
            lower=lower,
            upper=upper,
            page_size=self.walk_page_size(),
        )

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Every record of the window, oldest first."""
        self.check_key_once()
        try:
            with self.progress() as progress, self.state_written_on_failure():
                walk = self.new_walk(context)
                for page in walk.pages():
                    progress.set_total(walk.stats.first_total)
                    yield from page
                    progress.add(len(page))
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    @property
    def record_limit(self) -> int | None:
        """The records a dry run (``--test``) or a test suite reads before it stops."""
        return self.ABORT_AT_RECORD_COUNT

    def walk_page_size(self) -> int:
        """Records per search page: fewer when the run stops after a handful."""
        limit = self.record_limit
        return SEARCH_PAGE_SIZE if limit is None else max(2, min(SEARCH_PAGE_SIZE, limit + 1))


class UpdatedSearchedStream(SearchedStream):
    """A searched stream bookmarked on update time, walked by update then creation time.

    Customers, companies and kobjects share this shape: their search fields are
    ``<context>_updated_at`` and ``<context>_created_at``, their records carry
    ``attributes.updatedAt``/``createdAt``, and a change bumps ``updatedAt``, so the
    bookmark on update time catches every change on the next run.
    """

    primary_keys = ("id",)
    replication_key = "updated_at"
    STATE_MSG_FREQUENCY = 1000

    @override
    def walk_keys(self) -> list[WalkKey]:
        """Update time, then creation time (which splits a bulk update's ties)."""
        return [
            WalkKey(f"{self.query_context}_updated_at", ("updatedAt",)),
            WalkKey(f"{self.query_context}_created_at", ("createdAt",)),
        ]

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat column updated_at."""
        row["updated_at"] = iso(path(row, "attributes", "updatedAt"))
        return row


class CustomersStream(UpdatedSearchedStream):
    """Customers created or updated since the last run."""

    name = "customers"
    resources = ("search", "customer")
    query_context = "customer"
    metadata_resource = "customer"
    schema = CustomAttributeSchema(SCHEMAS)


class CompaniesStream(UpdatedSearchedStream):
    """Companies created or updated since the last run.

    Search fields ``company_updated_at``/``company_created_at`` are in the OAS's list
    of sortable fields (and its archive-search fields) but not in its standard-attribute
    schema; MeltanoLabs' tap reads companies the same way. UNCERTAIN until checked
    against a live org.
    """

    name = "companies"
    resources = ("search", "company")
    query_context = "company"
    metadata_resource = "company"
    schema = CustomAttributeSchema(SCHEMAS)


class KobjectsStream(UpdatedSearchedStream):
    """Custom objects (kobjects) of every klass created or updated since the last run.

    One search of the generic ``kobject`` context (in the OAS's queryContext enum, with
    ``kobject_updated_at``/``kobject_created_at`` in its standard-attribute schema)
    covers every klass, so one table holds them all, as dbt-kustomer expects. The
    per-klass contexts (``kobject_<klass>``) are not used: their field names in
    standard search are UNCERTAIN. Custom attributes differ per klass, so
    ``attributes.custom`` stays untyped (open).
    """

    name = "kobjects"
    resources = ("search", "kobject")
    query_context = "kobject"
    schema = CustomAttributeSchema(SCHEMAS)

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add updated_at and klass_id, and make sure the klass relationship is there.

        dbt-kustomer reads ``relationships.klass.data.{id,type}``. The API's examples
        give it (the klass *name* as id); should a search result lack it, the
        ``kobject.<klass>`` type names the klass as well (whether search results use
        that type or plain ``kobject`` is UNCERTAIN).
        """
        row = super().prepare_record(row, context) or row
        klass = relationship_id(row, "klass") or klass_from_type(row.get("type"))
        if klass and not relationship_id(row, "klass"):
            relationships = row.get("relationships")
            if not isinstance(relationships, dict):
                relationships = row["relationships"] = {}
            entry = relationships.get("klass")
            if not isinstance(entry, dict):
                entry = relationships["klass"] = {}
            entry["data"] = {"type": "klass", "id": klass}
        row["klass_id"] = klass
        return row


def klass_from_type(value: t.Any) -> str | None:
    """The klass name in a kobject's type ``kobject.<klass>``, or None."""
    if isinstance(value, str) and value.startswith("kobject.") and len(value) > len("kobject."):
        return value[len("kobject.") :]
    return None
