"""Full-table reference streams, read from Kustomer's paged lists."""

from __future__ import annotations

import typing as t
from urllib.parse import ParseResult, parse_qsl

from singer_sdk import StreamSchema
from typing_extensions import override

from tap_kustomer.client import KustomerStream
from tap_kustomer.errors import PermissionDeniedError
from tap_kustomer.pagination import NextLinkPaginator
from tap_kustomer.streams.common import SCHEMAS, iso, path

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext


class TagsStream(KustomerStream):
    """Every tag, deleted ones included with their flag."""

    name = "tags"
    resources = ("tag",)
    path = "/v1/tags"
    primary_keys = ("id",)
    schema = StreamSchema(SCHEMAS)
    page_size = 100

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Track the ids written, so the pass for deleted tags adds only new ones."""
        super().__init__(*args, **kwargs)
        self._extra_params: dict[str, str] = {}

    @override
    def get_new_paginator(self) -> NextLinkPaginator:
        """Tags come in pages linked by ``links.next``."""
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
            request.params.update({"page": 1, "pageSize": self.page_size, **self._extra_params})
        return request

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """All tags; then, if none came back deleted, ask for deleted ones explicitly.

        Whether the list includes deleted tags by default is not documented, so the
        tap reads both ways and keeps each tag once.
        """
        self.check_key_once()
        try:
            with self.progress() as progress:
                for tag in self._all_tags(context):
                    yield tag
                    progress.add()
        except PermissionDeniedError as error:
            if not self.skip_if_allowed(error):
                raise
        self.log_type_fixes()

    def _all_tags(self, context: Context | None) -> t.Iterator[dict[str, t.Any]]:
        seen: set[str] = set()
        any_deleted = False
        self._extra_params = {}
        for record in super().get_records(context):
            seen.add(str(record.get("id")))
            any_deleted = any_deleted or bool(path(record, "attributes", "deleted"))
            yield record
        if any_deleted:
            return
        self._extra_params = {"deleted": "true"}
        for record in super().get_records(context):
            if str(record.get("id")) not in seen and path(record, "attributes", "deleted"):
                seen.add(str(record.get("id")))
                yield record

    @override
    def prepare_record(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Add the flat column updated_at."""
        row["updated_at"] = iso(path(row, "attributes", "updatedAt"))
        return row
