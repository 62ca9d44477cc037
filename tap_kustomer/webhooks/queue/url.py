"""Queue URLs: which backend, where, and how to show the URL without its password.

SQLite URLs follow SQLAlchemy's (and so Meltano's ``MELTANO_DATABASE_URI``)
convention: ``sqlite:///queue.db`` is relative to the working directory and
``sqlite:////var/lib/kustomer/queue.db`` (four slashes) is absolute. PostgreSQL
URLs are libpq's: ``postgresql://user@host:5432/db?sslmode=require``; the password
is best left to ``PGPASSWORD`` or ``~/.pgpass`` rather than written in the URL.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tap_kustomer.errors import ConfigurationError

DEFAULT_QUEUE_URL = "sqlite:///kustomer-webhooks.db"
_EXAMPLES = "use sqlite:///path/to/queue.db or postgresql://user@host:5432/dbname"
_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}

Backend = t.Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class QueueLocation:
    """A parsed queue URL.

    ``target`` is what the backend connects to (a file path, or a libpq URL that
    may hold a password, so it is kept out of ``repr``); ``display`` is safe to log.
    """

    backend: Backend
    target: str = field(repr=False)
    display: str


def parse_queue_url(url: str) -> QueueLocation:
    """Parse ``url``; raise a one-line :class:`ConfigurationError` when it cannot work."""
    text = url.strip()
    scheme, separator, rest = text.partition("://")
    if not separator:
        msg = f"the queue URL {_hide_password(text)!r} has no scheme; {_EXAMPLES}"
        raise ConfigurationError(msg)
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _sqlite(text, rest)
    if scheme in _POSTGRES_SCHEMES:
        return _postgres(text, rest)
    msg = f"the queue URL scheme {scheme!r} is not supported; {_EXAMPLES}"
    raise ConfigurationError(msg)


def _sqlite(text: str, rest: str) -> QueueLocation:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db``; no host, no query."""
    if not rest.startswith("/"):
        msg = (
            f"the SQLite queue URL {text!r} names a host; write sqlite:///relative/queue.db "
            "or sqlite:////absolute/queue.db (three or four slashes)"
        )
        raise ConfigurationError(msg)
    path = rest[1:]
    if "?" in path or "#" in path:
        msg = f"the SQLite queue URL {text!r} has a query or fragment; give only the file path"
        raise ConfigurationError(msg)
    if not path or path.endswith("/"):
        msg = f"the SQLite queue URL {text!r} names no file; {_EXAMPLES}"
        raise ConfigurationError(msg)
    if path == ":memory:" or path.startswith("file:"):
        msg = f"the SQLite queue URL {text!r} is not a file on disk; a queue must be durable"
        raise ConfigurationError(msg)
    return QueueLocation("sqlite", str(Path(path)), text)


def _postgres(text: str, rest: str) -> QueueLocation:
    """A libpq URL with a database name; the scheme is normalised to ``postgresql``."""
    parts = urlsplit("postgresql://" + rest)
    display = _hide_password(text)
    try:
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        port = 0
    if port == 0:
        msg = f"the PostgreSQL queue URL {display!r} has an invalid port"
        raise ConfigurationError(msg)
    if not parts.hostname and "host=" not in parts.query:  # host= in the query: a socket
        msg = f"the PostgreSQL queue URL {display!r} names no host; {_EXAMPLES}"
        raise ConfigurationError(msg)
    if not parts.path.strip("/"):
        msg = f"the PostgreSQL queue URL {display!r} names no database; {_EXAMPLES}"
        raise ConfigurationError(msg)
    if parts.fragment:
        msg = f"the PostgreSQL queue URL {display!r} has a fragment (#...); remove it"
        raise ConfigurationError(msg)
    return QueueLocation("postgresql", "postgresql://" + rest, display)


def _hide_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{tail}"
