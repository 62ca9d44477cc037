"""The streams, one module per family.

Conversations with their threads, records read through search, and full-table
reference lists.
"""

from tap_kustomer.streams.conversations import (
    ConversationsStream,
    MessagesStream,
    NotesStream,
    ThreadStream,
)
from tap_kustomer.streams.reference import TagsStream
from tap_kustomer.streams.searched import CustomersStream, SearchedStream

__all__ = [
    "ConversationsStream",
    "CustomersStream",
    "MessagesStream",
    "NotesStream",
    "SearchedStream",
    "TagsStream",
    "ThreadStream",
]
