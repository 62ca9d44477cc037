"""The whole thread (messages and notes) of each emitted conversation.

A conversation is emitted with every message and note it has, every time it is
emitted, so a conversation reopened by a reply and resolved again carries the reply.
Its attachments and events, when selected, come the same way, always per conversation
(search cannot find them); attachments only where the messages name some.

Three ways to read the threads of a batch of conversations, chosen by cost:

- **per conversation** (:mod:`.lister`): ``GET /v1/conversations/{id}/messages`` and
  ``/notes``, 100 a page; at least one request per thread, cheap for a handful;
- **bulk** (:mod:`.bulk`): search the messages (and notes) created in the batch's time
  span, 500 a page, and group them by conversation; a backfill reads thousands of
  threads with a few dozen requests;
- **by id** (:mod:`.batched`): search the notes of up to 20 conversations, or the
  messages of up to 20 customers, at once; a small incremental run or a batch of
  webhooks reads its threads with a search or two per kind.

:mod:`.cost` prices them (a search counts as a few list requests: its budget is
scarcer), :mod:`.planner` composes them batch by batch, and :mod:`.lookahead` feeds
it the conversations ahead. Search results are accepted only for a thread whose size
equals the conversation's own ``messageCount``/``noteCount``; any other thread is
listed per conversation, so the output is always exactly the whole thread.
"""

from tap_kustomer.threads.kinds import ALL_KINDS, ATTACHMENTS, EVENTS, MESSAGES, NOTES, ThreadKind
from tap_kustomer.threads.lookahead import (
    LOOKAHEAD_CONVERSATIONS,
    planning_view,
    read_ahead,
    with_upcoming,
)
from tap_kustomer.threads.planner import Thread, ThreadPlanner, ThreadStats

__all__ = [
    "ALL_KINDS",
    "ATTACHMENTS",
    "EVENTS",
    "LOOKAHEAD_CONVERSATIONS",
    "MESSAGES",
    "NOTES",
    "Thread",
    "ThreadKind",
    "ThreadPlanner",
    "ThreadStats",
    "planning_view",
    "read_ahead",
    "with_upcoming",
]
