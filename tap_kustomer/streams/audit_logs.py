"""The org's audit log: every change Kustomer records, incremental on creation time."""

from __future__ import annotations

import typing as t
from datetime import datetime

from singer_sdk import StreamSchema
from typing_extensions import override

from tap_kustomer.audit_log import AUDIT_LOG_PATH, MAX_PAGE_SIZE, read_events
from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import PermissionDeniedError
from tap_kustomer.search import settled_end
from tap_kustomer.streams.common import SCHEMAS, iso, path

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class AuditLogsStream(KustomerStream):
    """Audit log events created since the last run, of the configured object types.

    The log comes newest first, so the stream is not sorted: the SDK moves the
    bookmark only once the whole window was read. Each run reads up to the newest
    settled time (now minus ``index_lag_minutes``, or ``end_date``), so an event
    published late still lands after the bookmark. Not selected by default: the key
    needs a role read-only keys rarely have, and the log grows with every change in
    the org (see the schema's description).
    """

    name = "audit_logs"
    resources = ("audit_logs",)
    path = AUDIT_LOG_PATH
    primary_keys = ("id",)
    replication_key = "created_at"
    is_sorted = False
    selected_by_default = False
    schema = StreamSchema(SCHEMAS)
    #: Events per page: the most the endpoint serves.
    page_size: t.ClassVar[int] = MAX_PAGE_SIZE

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        """No signpost: the window's end already comes from the server's clock.

        The SDK's signpost is the local clock, which would cap the bookmark below
        events the server stamped later (a skewed clock).
        """
        return

    def window_end(self) -> datetime:
        """The newest creation time this run reads."""
        return settled_end(self.config, self.budget.server_time())

    def object_types(self) -> list[str]:
        """The configured object types; empty reads every type."""
        value = self.config.get("audit_log_object_types") or []
        return [str(kind) for kind in value if str(kind).strip()]

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Every event of the window, newest first."""
        self.check_key_once()
        start = self.get_starting_timestamp(context)
        try:
            with self.progress() as progress:
                for event in read_events(
                    self.request_json,
                    object_types=self.object_types(),
                    start=start,
                    end=self.window_end(),
                    page_size=self.page_size,
                ):
                    yield event
                    progress.add()
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat columns created_at, object_type, object_id."""
        row["created_at"] = iso(path(row, "attributes", "createdAt"))
        object_type = path(row, "attributes", "objectType")
        object_id = path(row, "attributes", "objectId")
        row["object_type"] = str(object_type) if object_type is not None else None
        row["object_id"] = str(object_id) if object_id is not None else None
        return row
