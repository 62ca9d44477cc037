"""The lister: one conversation's items of one kind, straight from its own list.

``GET /v1/conversations/{id}/messages`` (``/notes``, ``/attachments``, ``/events``),
100 a page, following ``links.next`` by the rules of :mod:`tap_kustomer.pagination`.
One request per short thread: the cheap way for a handful of conversations, and the
exact one for any thread the bulk read could not complete.
"""

from __future__ import annotations

import typing as t

from tap_kustomer.errors import UnexpectedResponseError
from tap_kustomer.pagination import MAX_PAGES, PageTrail
from tap_kustomer.threads.cost import THREAD_PAGE_SIZE
from tap_kustomer.threads.kinds import ThreadKind, item_key

RequestJson = t.Callable[..., t.Mapping[str, t.Any]]
"""``request_json(method, path, params=...)`` of a Kustomer stream: the parsed body."""


class ThreadLister:
    """List whole threads one conversation at a time.

    Stateless between calls, so the planner may run many lists at once on its pool.
    """

    def __init__(
        self,
        request_json: RequestJson,
        *,
        page_size: int = THREAD_PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> None:
        """Bind the request function; ``max_pages`` caps a list that would never end."""
        self.request_json = request_json
        self.page_size = page_size
        self.max_pages = max_pages

    def thread(self, cid: str, kind: ThreadKind) -> list[dict[str, t.Any]]:
        """Every ``kind`` item of conversation ``cid``, in the API's order."""
        return self.list_all(f"/v1/conversations/{cid}/{kind.list_suffix}")

    def list_all(self, path: str) -> list[dict[str, t.Any]]:
        """Every item of the paged list at ``path``, each once, following ``links.next``.

        Raises:
            UnexpectedResponseError: a page has no ``data`` list, a next link leads
                back to a page already read, or the list never ends.
        """
        trail = PageTrail(path, max_pages=self.max_pages)
        items: list[dict[str, t.Any]] = []
        seen_ids: set[str] = set()
        target = path
        params: dict[str, t.Any] = {"page": 1, "pageSize": self.page_size}
        while True:
            body = self.request_json("GET", target, params=params)
            trail.read(target, params)
            data = body.get("data") if isinstance(body, t.Mapping) else None
            if not isinstance(data, list):
                msg = f"Kustomer's answer to GET {path} has no 'data' list"
                raise UnexpectedResponseError(msg)
            for item in data:
                if isinstance(item, dict) and item_key(item) not in seen_ids:
                    seen_ids.add(item_key(item))
                    items.append(item)
            following = trail.follow(body, target, params)
            if following is None:
                return items
            target, params = following[0], dict(following[1])
