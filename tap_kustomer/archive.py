"""Reading history older than standard search's two years from Kustomer's archive search.

Standard search (``POST /v1/customers/search``) holds only records updated in the
last two years; archive search (``POST /v1/customers/archive/search``) holds the
older ones. Where exactly the two meet (a rolling ``now - 2 years`` on ``updatedAt``,
to the day or the millisecond, with or without overlap) is UNCERTAIN, so a window that
reaches back there is split with a margin on both sides of that horizon:

- the archive is read for ``updatedAt`` before ``horizon + margin``;
- standard search is read from ``horizon - margin`` (update-time walks), or from the
  window's start (resolution-time walks: a conversation resolved long ago but updated
  recently is only in standard search);
- a record both return (the overlap) is written once, from the archive, unless
  standard search has a newer version of it (a later ``updatedAt``).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tap_kustomer.search import parse_timestamp

ARCHIVE_SEARCH_PATH = "/v1/customers/archive/search"
#: Standard search covers records updated within about two years.
STANDARD_SEARCH_DAYS = 730
DEFAULT_MARGIN_DAYS = 7


@dataclass(frozen=True)
class ArchiveSplit:
    """Where one walk's window splits between archive and standard search."""

    horizon: datetime
    margin: timedelta

    @classmethod
    def at(cls, window_end: datetime, margin_days: float) -> ArchiveSplit:
        """The split for a run whose window ends at ``window_end`` (the server's now)."""
        return cls(
            horizon=window_end - timedelta(days=STANDARD_SEARCH_DAYS),
            margin=timedelta(days=max(0.0, margin_days)),
        )

    @property
    def archive_until(self) -> datetime:
        """The archive is read for ``updatedAt`` up to this."""
        return self.horizon + self.margin

    @property
    def standard_from(self) -> datetime:
        """Standard search holds every record updated from here on (with the margin)."""
        return self.horizon - self.margin

    def reaches(self, lower: datetime | None) -> bool:
        """Whether a window starting at ``lower`` needs the archive."""
        return lower is None or lower < self.archive_until


@dataclass
class ArchiveSeen:
    """Records written from the archive that standard search may return again.

    Only those updated in the overlap (from ``standard_from``) are kept, so memory
    holds about two margins' worth of ids, not the archive's years.
    """

    since: datetime
    updated: dict[str, datetime] = field(default_factory=dict)
    records: int = 0
    duplicates: int = 0

    def add(self, record: dict[str, t.Any]) -> None:
        """Remember a record written from the archive."""
        self.records += 1
        stamp = updated_at(record)
        if stamp is not None and stamp >= self.since:
            self.updated[str(record.get("id"))] = stamp

    def fresh(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        """``records`` of standard search, without those the archive already wrote.

        A record standard search has in a later version (a later ``updatedAt``) is
        kept: it is a change the archive's copy lacks.
        """
        kept = []
        for record in records:
            seen = self.updated.get(str(record.get("id")))
            stamp = updated_at(record)
            if seen is not None and (stamp is None or stamp <= seen):
                self.duplicates += 1
                continue
            kept.append(record)
        return kept


def updated_at(record: dict[str, t.Any]) -> datetime | None:
    """A record's ``attributes.updatedAt``."""
    attributes = record.get("attributes")
    return parse_timestamp(attributes.get("updatedAt")) if isinstance(attributes, dict) else None
