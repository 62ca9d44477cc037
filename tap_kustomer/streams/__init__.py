"""The streams, one module per family.

Conversations with their threads, records read through search, and full-table
reference lists.
"""

from tap_kustomer.streams.conversations import (
    AttachmentsStream,
    ConversationEventsStream,
    ConversationsStream,
    MessagesStream,
    NotesStream,
    ThreadStream,
)
from tap_kustomer.streams.reference import (
    BrandsStream,
    BusinessSchedulesStream,
    KlassesStream,
    QueuesStream,
    ReferenceStream,
    SatisfactionSurveysStream,
    ShortcutsStream,
    TagsStream,
    TeamsStream,
    UsersStream,
)
from tap_kustomer.streams.searched import (
    CompaniesStream,
    CustomersStream,
    KobjectsStream,
    SearchedStream,
    UpdatedSearchedStream,
)

__all__ = [
    "AttachmentsStream",
    "BrandsStream",
    "BusinessSchedulesStream",
    "CompaniesStream",
    "ConversationEventsStream",
    "ConversationsStream",
    "CustomersStream",
    "KlassesStream",
    "KobjectsStream",
    "MessagesStream",
    "NotesStream",
    "QueuesStream",
    "ReferenceStream",
    "SatisfactionSurveysStream",
    "SearchedStream",
    "ShortcutsStream",
    "TagsStream",
    "TeamsStream",
    "ThreadStream",
    "UpdatedSearchedStream",
    "UsersStream",
]
