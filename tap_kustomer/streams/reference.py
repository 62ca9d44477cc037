"""Full-table reference streams, read from Kustomer's paged lists.

Each run reads the whole list again: Kustomer's list endpoints have no ``updatedAt``
filter, and the lists are small. With ``emit_activate_version_messages`` a target
learns which rows the run did not see again (deleted in Kustomer) and removes or
marks them.

UNCERTAIN: users, teams, shortcuts, routing/queues and tags are not in the local
OpenAPI spec. Their paths and roles come from Kustomer's developer docs; their paging
(``page``/``pageSize``, then ``links.next``) and page-size caps (users and teams 500,
the rest 100) are assumed to be those of the documented lists. Attributes the schemas
do not describe still pass through (every nested object keeps unknown keys).
"""

from __future__ import annotations

import typing as t
from urllib.parse import ParseResult, parse_qsl, urlparse

from singer_sdk import StreamSchema
from typing_extensions import override

from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import LEGACY_ROLE_BY_RESOURCE, ROLE_BY_RESOURCE, PermissionDeniedError
from tap_kustomer.pagination import NextLinkPaginator
from tap_kustomer.streams.common import SCHEMAS, iso, path

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext


class ReferenceStream(KustomerStream):
    """One whole JSON:API list per run, in pages linked by ``links.next``.

    A stream whose role the key lacks fails with one line naming the role, or, with
    ``skip_unauthorized_streams``, is skipped with a warning.
    """

    primary_keys = ("id",)
    schema = StreamSchema(SCHEMAS)
    #: The largest page the endpoint serves (Kustomer caps most lists at 100).
    page_size: t.ClassVar[int] = 100
    #: Query parameters of further reads of the same list, for records the plain list
    #: may leave out (deleted, disabled...); each read adds only records not seen yet.
    #: A read for ``deleted`` ones is skipped when the plain list already had some.
    extra_reads: t.ClassVar[tuple[dict[str, str], ...]] = ()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Start with the plain list, and no known denial."""
        super().__init__(*args, **kwargs)
        self._read_params: dict[str, str] = {}
        self._skipped = False

    @override
    def get_new_paginator(self) -> NextLinkPaginator:
        """The lists come in pages linked by ``links.next``."""
        return NextLinkPaginator()

    @override
    def get_http_request(self, *, page: PageContext[ParseResult | None]) -> HTTPRequest:
        """First page by size; later pages exactly as the API linked them."""
        request = super().get_http_request(page=page)
        token = page.next_page_token
        if token is not None:
            request.url = f"{self.url_base}{token.path}"
            request.params = dict(parse_qsl(token.query))
        else:
            request.params.update({"page": 1, "pageSize": self.page_size, **self._read_params})
        return request

    @property
    @override
    def emit_activate_version_messages(self) -> bool:
        """As configured, but only for a list this key may read.

        The SDK writes ACTIVATE_VERSION before the first record; for a stream skipped
        for a missing role it would tell the target that the whole table is gone. One
        small request first finds out, and fails or skips the stream as a read would.
        """
        if not super().emit_activate_version_messages or self._skipped:
            return False
        self.check_key_once()
        try:
            self.request_json("GET", str(self.path), params={"page": 1, "pageSize": 1})
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
            self._skipped = True
            return False
        return True

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Every record of the list, each once."""
        if self._skipped:
            return
        self.check_key_once()
        try:
            with self.progress() as progress:
                for record in self._all_records(context):
                    yield record
                    progress.add()
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    def _all_records(self, context: Context | None) -> t.Iterator[dict[str, t.Any]]:
        seen: set[str] = set()
        any_deleted = False
        for params in ({}, *self.extra_reads):
            if "deleted" in params and any_deleted:
                continue
            self._read_params = dict(params)
            for record in super().get_records(context):
                key = str(record.get("id"))
                if key in seen:
                    continue
                seen.add(key)
                any_deleted = any_deleted or is_deleted(record)
                yield record
        self._read_params = {}

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat column updated_at."""
        row["updated_at"] = iso(path(row, "attributes", "updatedAt"))
        return row

    @override
    def _access_error(self, response: requests.Response) -> Exception:
        """Name the role of this stream's list.

        The client tells a bad key from a missing role, but knows the roles of the
        search and conversation paths only.
        """
        error = super()._access_error(response)
        if not isinstance(error, PermissionDeniedError) or not self.resources:
            return error
        resource = self.resources[0]
        role = ROLE_BY_RESOURCE[resource]
        return PermissionDeniedError(
            f"The API key lacks the role {role} (or {LEGACY_ROLE_BY_RESOURCE[resource]}) "
            f"that stream '{self.name}' needs (HTTP {response.status_code} on "
            f"{urlparse(response.url).path}). Give a key that role, or deselect stream "
            f"'{self.name}' (or set skip_unauthorized_streams: true)",
            role=role,
            resource=resource,
        )


def is_deleted(record: dict[str, t.Any]) -> bool:
    """Whether Kustomer flags the record deleted (tags) or deactivated (users)."""
    return bool(path(record, "attributes", "deleted") or path(record, "attributes", "deletedAt"))


def as_list(value: t.Any) -> list[t.Any] | None:
    """A list for a value downstream code unnests: JSON:API may send one item bare."""
    if value is None or isinstance(value, list):
        return value
    return [value]


class TagsStream(ReferenceStream):
    """Every tag, deleted ones included with their flag.

    Whether the list includes deleted tags by default is not documented, so when none
    came back deleted the tap asks for them explicitly.
    """

    name = "tags"
    resources = ("tag",)
    path = "/v1/tags"
    extra_reads = ({"deleted": "true"},)


class UsersStream(ReferenceStream):
    """Every user, machine users (API keys) included.

    ``deleted=true`` lists only deactivated users; whether the plain list includes them
    is UNCERTAIN, so they are asked for when none came back.
    """

    name = "users"
    resources = ("user",)
    path = "/v1/users"
    page_size = 500
    extra_reads = ({"deleted": "true"},)


class TeamsStream(ReferenceStream):
    """Every team with its members' user ids."""

    name = "teams"
    resources = ("team",)
    path = "/v1/teams"
    page_size = 500

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """``attributes.members`` stays a list of user ids (UNCERTAIN: never an object)."""
        attributes = row.get("attributes")
        if isinstance(attributes, dict) and "members" in attributes:
            members = as_list(attributes["members"])
            attributes["members"] = (
                None
                if members is None
                else [m.get("id") if isinstance(m, dict) else m for m in members]
            )
        return super().prepare_record(row, context)


class KlassesStream(ReferenceStream):
    """Every klass (custom object type), whatever its status.

    The list returns only ``enabled`` klasses unless asked for another status.
    """

    name = "klasses"
    resources = ("klass",)
    path = "/v1/klasses"
    extra_reads = ({"status": "existing_only"}, {"status": "disabled"})


class ShortcutsStream(ReferenceStream):
    """Every shortcut (saved reply), with the teams and users it is limited to."""

    name = "shortcuts"
    resources = ("shortcut",)
    path = "/v1/shortcuts"

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Access lists stay lists: a single team or user may come as a bare object."""
        for name in ("accessTeams", "accessUsers", "attachments"):
            relationship = path(row, "relationships", name)
            if isinstance(relationship, dict) and "data" in relationship:
                relationship["data"] = as_list(relationship["data"])
        return super().prepare_record(row, context)


class BrandsStream(ReferenceStream):
    """Every brand of the org, the default one included."""

    name = "brands"
    resources = ("brand",)
    path = "/v1/brands"


class BusinessSchedulesStream(ReferenceStream):
    """Every business schedule: opening minutes per weekday ("0" = Sunday) and timezone."""

    name = "business_schedules"
    resources = ("schedule",)
    path = "/v1/schedules"


class QueuesStream(ReferenceStream):
    """Every routing queue, the system queue DEFAULT_QUEUE included."""

    name = "queues"
    resources = ("routing",)
    path = "/v1/routing/queues"


class SatisfactionSurveysStream(ReferenceStream):
    """Every satisfaction (CSAT) survey form; responses have no list endpoint."""

    name = "satisfaction_surveys"
    resources = ("satisfaction",)
    path = "/v1/satisfaction"
