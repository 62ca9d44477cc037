"""Reading ahead of the batch being written, so the bulk read can hold what comes next.

The conversations walk yields pages of conversations; :func:`read_ahead` fetches the
next page while the current one's threads are read and written, and
:func:`with_upcoming` pairs each page with small planning views of the conversations
after it, so the bulk read holds their items as it passes them.
"""

from __future__ import annotations

import json
import queue
import threading
import typing as t
import zlib
from collections import deque

from tap_kustomer.threads.kinds import LIFETIME_ATTRIBUTES, MESSAGES, NOTES, Conversation

T = t.TypeVar("T")
Page = list[dict[str, t.Any]]

#: Conversations read ahead of the batch being written; the bulk read keeps their
#: items as it passes them (four search pages of conversations).
LOOKAHEAD_CONVERSATIONS = 2_000


def planning_view(conversation: Conversation) -> dict[str, t.Any]:
    """What the planner needs of a conversation read ahead: its id, lifetime and counts.

    A tenth of the memory of the whole record, for the thousands waiting ahead.
    """
    attributes = conversation.get("attributes") or {}
    view = {name: attributes[name] for name in LIFETIME_ATTRIBUTES if name in attributes}
    for kind in (MESSAGES, NOTES):
        if kind.count_attribute is not None and kind.count_attribute in attributes:
            view[kind.count_attribute] = attributes[kind.count_attribute]
    last_done = attributes.get("lastDone")
    if isinstance(last_done, dict):
        view["lastDone"] = {"createdAt": last_done.get("createdAt")}
    return {"id": conversation.get("id"), "attributes": view}


def with_upcoming(
    pages: t.Iterable[Page], ahead: int = LOOKAHEAD_CONVERSATIONS
) -> t.Iterator[tuple[Page, Page]]:
    """Each page with the planning views of the ``ahead`` conversations after it.

    Pages wait compressed, so holding thousands of conversations costs little; the
    planner keeps the upcoming conversations' items when its bulk read passes them.
    ``ahead=0`` releases each page as soon as it arrives, with no upcoming views: the
    first records come after the fewest requests (a test or record-limited run).
    """
    if ahead < 0:
        msg = f"ahead must be 0 or more, not {ahead}"
        raise ValueError(msg)
    if ahead == 0:
        for page in pages:
            yield page, []
        return
    waiting: deque[tuple[bytes, Page]] = deque()
    known = 0
    for page in pages:
        waiting.append(
            (zlib.compress(json.dumps(page).encode(), 1), list(map(planning_view, page)))
        )
        known += len(page)
        if known - len(waiting[0][1]) >= ahead:
            known -= len(waiting[0][1])
            yield _release(waiting)
    while waiting:
        yield _release(waiting)


def _release(waiting: deque[tuple[bytes, Page]]) -> tuple[Page, Page]:
    text, _ = waiting.popleft()
    page: Page = json.loads(zlib.decompress(text))
    return page, [view for _, views in waiting for view in views]


_END = object()


def read_ahead(pages: t.Iterable[T], depth: int = 1) -> t.Iterator[T]:
    """Yield from ``pages`` while a worker already fetches the next ``depth`` pages.

    The search walk waits on the network while the previous page's threads are being
    read and written; overlapping the two keeps the request budget busy. Errors of the
    worker are raised in the consumer, and closing the consumer stops the worker.
    """
    buffer: queue.Queue[t.Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Hand ``item`` over unless the consumer has gone (then never block on it)."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not offer(page):
                    return
            offer(_END)
        except BaseException as exc:
            offer(exc)

    worker = threading.Thread(target=produce, name="search-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
