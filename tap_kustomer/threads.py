"""The thread planner: the whole thread (messages and notes) of each emitted conversation.

A conversation is emitted with every message and note it has, every time it is
emitted, so a conversation reopened by a reply and resolved again carries the reply.
The planner fetches the threads of a batch of conversations before any of them is
written, with bounded concurrency drawing on the shared request budget.
"""

from __future__ import annotations

import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlparse

THREAD_PAGE_SIZE = 100
_MAX_THREAD_PAGES = 10_000

RequestJson = t.Callable[..., dict[str, t.Any]]
"""``request_json(method, path, params=...)`` of a Kustomer stream."""


class ConversationGoneError(LookupError):
    """The conversation disappeared (deleted) between search and thread fetch."""


@dataclass
class Thread:
    """Everything said in one conversation."""

    messages: list[dict[str, t.Any]] = field(default_factory=list)
    notes: list[dict[str, t.Any]] = field(default_factory=list)


@dataclass
class ThreadStats:
    """What fetching threads cost."""

    conversations: int = 0
    requests: int = 0
    skipped_empty: int = 0
    gone: int = 0


def _count(conversation: dict[str, t.Any], name: str) -> int | None:
    value = (conversation.get("attributes") or {}).get(name)
    return value if isinstance(value, int) and value >= 0 else None


class ThreadPlanner:
    """Fetch the threads of batches of conversations, one conversation at a time each."""

    def __init__(
        self,
        request_json: RequestJson,
        *,
        want_messages: bool = True,
        want_notes: bool = True,
        workers: int = 1,
        is_not_found: t.Callable[[Exception], bool] = lambda exc: False,
        logger: logging.Logger | None = None,
    ) -> None:
        """Bind the request function and what to fetch."""
        self.request_json = request_json
        self.want_messages = want_messages
        self.want_notes = want_notes
        self.workers = max(1, workers)
        self.is_not_found = is_not_found
        self.logger = logger or logging.getLogger(__name__)
        self.stats = ThreadStats()

    def fetch(self, conversations: t.Sequence[dict[str, t.Any]]) -> dict[str, Thread]:
        """The thread of every conversation in the batch, keyed by conversation id."""
        if not (self.want_messages or self.want_notes) or not conversations:
            return {str(c.get("id")): Thread() for c in conversations}
        if self.workers == 1 or len(conversations) == 1:
            threads = [self._thread(c) for c in conversations]
        else:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="thread-fetch") as pool:
                threads = list(pool.map(self._thread, conversations))
        return {str(c.get("id")): thread for c, thread in zip(conversations, threads, strict=True)}

    def _thread(self, conversation: dict[str, t.Any]) -> Thread:
        conversation_id = str(conversation.get("id"))
        self.stats.conversations += 1
        thread = Thread()
        try:
            if self.want_messages:
                if _count(conversation, "messageCount") == 0:
                    self.stats.skipped_empty += 1
                else:
                    thread.messages = self.list_all(
                        f"/v1/conversations/{conversation_id}/messages"
                    )
            if self.want_notes:
                if _count(conversation, "noteCount") == 0:
                    self.stats.skipped_empty += 1
                else:
                    thread.notes = self.list_all(f"/v1/conversations/{conversation_id}/notes")
        except Exception as exc:
            if not self.is_not_found(exc):
                raise
            self.stats.gone += 1
            self.logger.warning(
                "Conversation %s was deleted before its thread could be read; "
                "emitting it without messages and notes",
                conversation_id,
            )
            return Thread()
        return thread

    def list_all(self, path: str) -> list[dict[str, t.Any]]:
        """Every item of a paged list endpoint, following ``links.next`` to the end."""
        items: list[dict[str, t.Any]] = []
        seen_ids: set[str] = set()
        visited: set[str] = set()
        target: str = path
        params: dict[str, t.Any] | None = {"page": 1, "pageSize": THREAD_PAGE_SIZE}
        for _ in range(_MAX_THREAD_PAGES):
            body = self.request_json("GET", target, params=params)
            self.stats.requests += 1
            data = body.get("data")
            if not isinstance(data, list):
                msg = f"Kustomer's answer on {path} has no 'data' list"
                raise TypeError(msg)
            for item in data:
                if isinstance(item, dict) and str(item.get("id")) not in seen_ids:
                    seen_ids.add(str(item.get("id")))
                    items.append(item)
            links = body.get("links")
            link = links.get("next") if isinstance(links, dict) else None
            if not link or not data or link in visited:
                return items
            visited.add(link)
            parsed = urlparse(str(link))
            target = parsed.path or path
            params = dict(parse_qsl(parsed.query))
        msg = f"{path} did not end after {_MAX_THREAD_PAGES} pages"
        raise RuntimeError(msg)
