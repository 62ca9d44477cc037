"""The streams, one module per family.

Conversations with their threads, records read through search (customers, companies
and kobjects with their deletes), full-table reference lists, and the audit log.
"""

from tap_kustomer.streams.audit_logs import AuditLogsStream
from tap_kustomer.streams.conversations import (
    AttachmentsStream,
    ConversationEventsStream,
    ConversationsStream,
    MessagesStream,
    NotesStream,
    ThreadStream,
)
from tap_kustomer.streams.deletes import (
    CompaniesStream,
    CustomersStream,
    KobjectsStream,
    TombstonesMixin,
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
from tap_kustomer.streams.searched import SearchedStream, UpdatedSearchedStream

__all__ = [
    "AttachmentsStream",
    "AuditLogsStream",
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
    "TombstonesMixin",
    "UpdatedSearchedStream",
    "UsersStream",
]
