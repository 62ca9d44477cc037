"""Streams read through search, walked in ascending order of their replication key."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone

from typing_extensions import override

from tap_kustomer.archive import (
    DEFAULT_MARGIN_DAYS,
    STANDARD_SEARCH_DAYS,
    ArchiveSeen,
    ArchiveSplit,
)
from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import BadRequestError, NotFoundError, PermissionDeniedError
from tap_kustomer.sdk_adapter import direct_writer
from tap_kustomer.search import (
    SEARCH_PAGE_SIZE,
    SearchWalk,
    WalkKey,
    settled_end,
)
from tap_kustomer.streams.common import (
    SCHEMAS,
    CustomAttributeSchema,
    iso,
    path,
    relationship_id,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

__all__ = ["STANDARD_SEARCH_DAYS", "SearchedStream"]


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
        return settled_end(self.config, self.budget.server_time())

    def new_walk(self, context: Context | None, split: ArchiveSplit | None = None) -> SearchWalk:
        """The standard-search walk from the bookmark (or start_date) to the window end.

        With ``split`` the archive has read the older part: the walk starts where
        standard search holds everything (see :meth:`standard_lower`).
        """
        lower = self.get_starting_timestamp(context)
        upper = self.window_end()
        if split is not None:
            lower = self.standard_lower(lower, split)
        else:
            self.warn_if_beyond_horizon(lower, upper)
        return SearchWalk(
            search=self.search,
            query_context=self.query_context,
            criteria=self.walk_criteria(),
            keys=self.walk_keys(),
            lower=lower,
            upper=upper,
            page_size=self.walk_page_size(),
        )

    def warn_if_beyond_horizon(self, lower: datetime | None, upper: datetime) -> None:
        """Say that records older than standard search's two years are left out."""
        horizon = upper - timedelta(days=STANDARD_SEARCH_DAYS)
        if lower is None or lower < horizon:
            self.logger.warning(
                "%s: Kustomer's standard search holds only records updated in the last 2 "
                "years (since %s); older ones are only in its archive search, which this "
                "run does not read (archive_search is off or unavailable)",
                self.name,
                horizon.date().isoformat(),
            )

    # Archive search: the part of the window older than standard search holds.

    def standard_lower(self, lower: datetime | None, split: ArchiveSplit) -> datetime | None:
        """Where the standard walk starts once the archive read the older part.

        An update-time walk needs standard search only from ``split.standard_from``:
        everything updated before it came from the archive.
        """
        return split.standard_from if lower is None else max(lower, split.standard_from)

    def archive_plan(self, context: Context | None) -> ArchiveSplit | None:
        """The split of this run's window, or None when only standard search is read.

        None when the window stays within standard search, when ``archive_search`` is
        off or failed earlier in the run, and in a dry run (which reads a handful of
        recent records).
        """
        now = datetime.fromtimestamp(self.budget.server_time(), tz=timezone.utc)
        margin = float(self.config.get("archive_margin_days", DEFAULT_MARGIN_DAYS))
        split = ArchiveSplit.at(now, margin)
        if not split.reaches(self.get_starting_timestamp(context)):
            return None
        if not self.config.get("archive_search", True) or self.run.archive_unavailable:
            return None
        return None if self.record_limit is not None else split

    def archive_walk(self, context: Context | None, split: ArchiveSplit) -> SearchWalk:
        """The archive walk: by update then creation time, up to ``split.archive_until``.

        Archive search filters and sorts on ``<context>_updated_at``/``_created_at``
        only, so every stream walks it by update time, with no other criteria. Each
        query starts at page 1 (keyset), so none reaches its 100-page limit.
        """
        return SearchWalk(
            search=self.archive_search,
            query_context=self.query_context,
            criteria=[],
            keys=[
                WalkKey(f"{self.query_context}_updated_at", ("updatedAt",)),
                WalkKey(f"{self.query_context}_created_at", ("createdAt",)),
            ],
            lower=self.get_starting_timestamp(context),
            upper=min(split.archive_until, self.window_end()),
            page_size=self.walk_page_size(),
        )

    def archive_pages(self, walk: SearchWalk) -> t.Iterator[list[dict[str, t.Any]]]:
        """The archive walk's pages; an archive refused outright ends it with a warning.

        A 403, 404 or 400 on the first archive query means the key or org lacks the
        feature: the run goes on with standard search only, and says so once. The
        same answer later in a walk is a real failure and stops the run.
        """
        try:
            yield from walk.pages()
        except (PermissionDeniedError, NotFoundError, BadRequestError) as error:
            if walk.stats.requests > 0:
                raise
            self.run.archive_unavailable = str(error)
            self.logger.warning(
                "Kustomer's archive search is unavailable (%s); reading standard search "
                "only, so records updated more than 2 years ago are left out",
                error,
            )

    def write_archive(self, context: Context | None, split: ArchiveSplit) -> ArchiveSeen:
        """Write the archive's records of the window, before any standard-search record.

        They are written, not yielded to the SDK, so the bookmark does not move while
        the archive is read: the archive comes in update-time order, which is neither
        the bookmark's key nor before what standard search returns next. A run stopped
        here resumes from the old bookmark and reads the archive again.
        """
        seen = ArchiveSeen(split.standard_from)
        walk = self.archive_walk(context, split)
        with direct_writer(self, context) as write:
            for page in self.archive_pages(walk):
                for row in page:
                    seen.add(row)
                    write(row)
        if self.archive_read(split):
            self.log_archive(walk, seen, split)
        return seen

    def archive_read(self, split: ArchiveSplit | None) -> ArchiveSplit | None:
        """``split`` if the archive was read, None if it turned out unavailable."""
        return None if self.run.archive_unavailable else split

    def log_archive(self, walk: SearchWalk, seen: ArchiveSeen, split: ArchiveSplit) -> None:
        """One line: which part of the window the archive read, and what it gave."""
        self.logger.info(
            "%s: archive search read records updated from %s to %s: %d records in %d "
            "requests; standard search reads from %s",
            self.name,
            _day(walk.lower),
            _day(walk.upper),
            seen.records,
            walk.stats.requests,
            _day(self.standard_lower(walk.lower, split)),
        )

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Every record of the window, oldest first."""
        self.check_key_once()
        try:
            with self.progress() as progress, self.state_written_on_failure():
                split = self.archive_plan(context)
                seen = self.write_archive(context, split) if split else None
                walk = self.new_walk(context, self.archive_read(split))
                for page in walk.pages():
                    progress.set_total(walk.stats.first_total)
                    yield from seen.fresh(page) if seen else page
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


def _day(value: datetime | None) -> str:
    """A date for a log line; None is the start of history."""
    return value.date().isoformat() if value else "the beginning"


def klass_from_type(value: t.Any) -> str | None:
    """The klass name in a kobject's type ``kobject.<klass>``, or None."""
    if isinstance(value, str) and value.startswith("kobject.") and len(value) > len("kobject."):
        return value[len("kobject.") :]
    return None
