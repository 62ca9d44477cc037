"""Following Kustomer's ``links.next``: one set of rules for every JSON:API list.

Kustomer's lists link their next page host-relative (``/v1/tags?page=2&pageSize=100``)
and end with ``"next": null``. The rules live here once, so the threads' lister and
the SDK streams (through :class:`NextLinkPaginator`) stop, and fail, the same way:

- no next link, a null one, or an empty page: the list is over;
- no ``links`` at all (some per-conversation lists answer ``meta: {}`` only; whether
  they ever link is UNCERTAIN): a full page is followed by the next page number, a
  short page ends the list;
- a link back to a page already read: the list would loop forever, which is API
  trouble, not the end of the list (stopping there could drop the pages not read);
- more than :data:`MAX_PAGES` pages: a list that never ends.
"""

from __future__ import annotations

import typing as t
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from singer_sdk.pagination import BaseHATEOASPaginator
from typing_extensions import override

from tap_kustomer.errors import UnexpectedResponseError

if t.TYPE_CHECKING:
    import requests

#: A list longer than this many pages is taken as one that never ends.
MAX_PAGES = 10_000

PageAddress = tuple[str, dict[str, str]]
"""Where a page is: its host-relative path and its query parameters."""


def next_page(body: t.Mapping[str, t.Any]) -> PageAddress | None:
    """The path and query of the page after ``body``, or None when ``body`` is the last.

    An empty ``data`` list ends the list even if a next link is offered, since a page
    past the end would only repeat the question. An absolute link keeps only its path
    (requests go to the configured host); a link of only a query (``?page=2``) gives an
    empty path, meaning the path of the page just read.
    """
    if not isinstance(body, t.Mapping):
        return None
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return None
    links = body.get("links")
    link = links.get("next") if isinstance(links, t.Mapping) else None
    if isinstance(link, t.Mapping):  # JSON:API also allows {"href": ...}
        link = link.get("href")
    if not isinstance(link, str) or not link.strip():
        return None
    parts = urlsplit(link.strip())
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def numbered_next_page(
    body: t.Mapping[str, t.Any], params: t.Mapping[str, t.Any] | None
) -> PageAddress | None:
    """The next page by number, for a list that sends no ``links`` at all.

    Only a full page (as many items as ``pageSize`` asked for) can have a successor;
    a body with a ``links`` object, even without ``next``, has said where it ends.
    """
    if not isinstance(body, t.Mapping) or "links" in body or not params:
        return None
    data = body.get("data")
    try:
        page, size = int(params["page"]), int(params["pageSize"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(data, list) or size <= 0 or len(data) < size:
        return None
    following = {str(k): str(v) for k, v in params.items()}
    following["page"] = str(page + 1)
    return "", following


class PageTrail:
    """The pages one list has read, so a loop or a list without end is caught.

    Both are failures of the API, raised as :class:`UnexpectedResponseError` with
    one line, rather than a silent truncation or a request loop that never stops.
    """

    def __init__(self, what: str, *, max_pages: int = MAX_PAGES) -> None:
        """Name the list (for messages) and cap its length."""
        self.what = what
        self.max_pages = max_pages
        self.pages = 0
        self._seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()

    def read(self, path: str | None, params: t.Mapping[str, t.Any] | None = None) -> None:
        """Record that a page was read; at ``path``/``params`` if known (None: unknown)."""
        self.pages += 1
        if path is not None:
            self._seen.add(_key(path, params))

    def follow(
        self,
        body: t.Mapping[str, t.Any],
        path: str,
        params: t.Mapping[str, t.Any] | None = None,
    ) -> PageAddress | None:
        """The page after ``body`` (read from ``path`` with ``params``), or None at the end.

        Raises:
            UnexpectedResponseError: the link leads back to a page already read, or
                the list has gone on for ``max_pages`` pages.
        """
        link = next_page(body)
        if link is None:
            link = numbered_next_page(body, params)
        if link is None:
            return None
        target = (link[0] or path, link[1])
        if _key(*target) in self._seen:
            msg = (
                f"Kustomer's list at {self.what} links back to a page it already gave "
                f"({_render(*target)}) after {self.pages} pages; it would never end"
            )
            raise UnexpectedResponseError(msg)
        if self.pages >= self.max_pages:
            msg = f"Kustomer's list at {self.what} did not end after {self.max_pages} pages"
            raise UnexpectedResponseError(msg)
        return target


def _key(path: str, params: t.Mapping[str, t.Any] | None) -> tuple[str, frozenset[tuple[str, str]]]:
    return path, frozenset((str(k), str(v)) for k, v in (params or {}).items())


def _render(path: str, params: t.Mapping[str, str]) -> str:
    return urlunsplit(("", "", path, urlencode(params), ""))


class NextLinkPaginator(BaseHATEOASPaginator):
    """Page an SDK REST stream by the body's ``links.next``, by the rules of this module.

    The token is a :class:`urllib.parse.ParseResult` of the host-relative link; the
    stream requests ``url_base + token.path`` with ``parse_qsl(token.query)``.
    """

    def __init__(self, *, max_pages: int = MAX_PAGES) -> None:
        """Start a fresh trail: each paginator walks one list once."""
        super().__init__()
        self._trail = PageTrail("an unknown path", max_pages=max_pages)

    @override
    def get_next_url(self, response: requests.Response) -> str | None:
        """The next page's host-relative URL, or None when this page is the last."""
        request = getattr(response, "request", None)
        url = getattr(request, "url", None)
        path = ""
        if isinstance(url, str):
            parts = urlsplit(url)
            path = parts.path
            self._trail.what = path
            self._trail.read(path, dict(parse_qsl(parts.query, keep_blank_values=True)))
        else:
            self._trail.read(None)  # an unknown address still counts toward the cap
        body = response.json()
        params = dict(parse_qsl(urlsplit(url).query)) if isinstance(url, str) else None
        target = self._trail.follow(body if isinstance(body, t.Mapping) else {}, path, params)
        return _render(*target) if target is not None else None
