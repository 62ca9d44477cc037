"""Searched streams that also report permanent deletes, as tombstones.

Search never returns a deleted conversation, customer, company or kobject, so each of
those streams ends its sync by reading the audit log's delete events since its last
window (see :mod:`tap_kustomer.tombstones`) and writing one record per deleted id with
``_sdc_deleted_at`` set. The window's end is kept in the stream's state under its own
key, so the replication bookmark never moves for a tombstone.

Tombstones never fail a run: without the audit log role (or when the log cannot be
read) one warning says so and the run goes on; the window does not move, so a later
run with the role catches up.
"""

from __future__ import annotations

import typing as t

from typing_extensions import override

from tap_kustomer.errors import ROLE_BY_RESOURCE, KustomerTapError, PermissionDeniedError
from tap_kustomer.sdk_adapter import write_record
from tap_kustomer.search import format_timestamp, parse_timestamp
from tap_kustomer.streams import searched
from tap_kustomer.tombstones import DELETES_KEY, OBJECT_TYPES, Tombstone, read_deletes

if t.TYPE_CHECKING:
    from datetime import datetime

    from singer_sdk.helpers.types import Context

#: The run-wide note that the key cannot read the audit log (one warning per run).
_DENIED = "audit_logs_denied"


class TombstonesMixin(searched.SearchedStream):
    """Write a tombstone for each object of this stream deleted since the last run."""

    _deletes_from: datetime | None = None

    def deletes_wanted(self) -> bool:
        """Whether this sync writes tombstones: asked for, selected, and not a dry run."""
        return (
            bool(self.config.get("emit_deletes", True))
            and self.name in OBJECT_TYPES
            and self.selected
            and self.record_limit is None
        )

    def start_deletes_window(self) -> None:
        """Note where a first window for deletes starts: this sync's own window end.

        Anything deleted before it was already gone from search when the walk read it,
        so no earlier delete can concern a record this stream wrote. A first sync reads
        no deletes (it costs no request); it saves this point, and the next sync reads
        every delete after it, those made while this one ran included.
        """
        if self.deletes_wanted():
            self.check_key_once()  # the window end follows the server's clock
            self._deletes_from = self.window_end()

    def emit_tombstones(self, context: Context | None) -> None:
        """Write the tombstones of deletes since the saved window end, and move it."""
        if not self.deletes_wanted() or self.run.notes.get(_DENIED):
            return
        state = self.get_context_state(context)
        start = parse_timestamp(state.get(DELETES_KEY))
        if start is None:
            if self._deletes_from is not None:
                state[DELETES_KEY] = format_timestamp(self._deletes_from)
            return
        end = self.window_end()
        tombstones: list[Tombstone] = []
        if start < end:
            try:
                tombstones = read_deletes(self.request_json, OBJECT_TYPES[self.name], start, end)
            except PermissionDeniedError:
                with self.run.lock:
                    first = not self.run.notes.get(_DENIED)
                    self.run.notes[_DENIED] = True
                if first:
                    self.logger.warning(
                        "Deletes are not reported: the API key lacks %s, which reads the "
                        "audit log where Kustomer records them (set emit_deletes: false to "
                        "stop trying)",
                        ROLE_BY_RESOURCE["audit_logs"],
                    )
                return
            except KustomerTapError as error:
                self.logger.warning(
                    "%s: deletes are not reported this run (the audit log could not be "
                    "read: %s); the next run tries the same window again",
                    self.name,
                    error,
                )
                return
        for tombstone in tombstones:
            write_record(self, self.tombstone_record(tombstone))
        if tombstones:
            self.logger.info("%s: %d deleted in Kustomer", self.name, len(tombstones))
        state[DELETES_KEY] = format_timestamp(end)

    def tombstone_record(self, tombstone: Tombstone) -> dict[str, t.Any]:
        """A record with only ``id`` and ``_sdc_deleted_at`` set."""
        record: dict[str, t.Any] = dict.fromkeys(self.schema.get("properties", {}))
        record["id"] = tombstone.id
        record["_sdc_deleted_at"] = tombstone.deleted_at
        return record

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """The walk's records, then the tombstones of deletes since the last run."""
        self.start_deletes_window()
        yield from super().get_records(context)
        self.emit_tombstones(context)


class CustomersStream(TombstonesMixin, searched.CustomersStream):
    """Customers created or updated since the last run, and those deleted."""


class CompaniesStream(TombstonesMixin, searched.CompaniesStream):
    """Companies created or updated since the last run, and those deleted."""


class KobjectsStream(TombstonesMixin, searched.KobjectsStream):
    """Custom objects created or updated since the last run, and those deleted."""
