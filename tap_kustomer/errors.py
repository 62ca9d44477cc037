"""User-facing errors and secret redaction.

Every failure a user can fix (a bad key, a missing role, a wrong region, a bad date)
is raised as a :class:`KustomerTapError` whose message is one line that names the
problem and the fix. The CLI prints that line instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import typing as t

from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from typing_extensions import override

if t.TYPE_CHECKING:
    import requests

REDACTED = "***REDACTED***"
# Shorter strings are not real API keys, and scrubbing them would mangle ordinary words.
MIN_SECRET_LENGTH = 8

# Roles a read-only key needs, by resource, as Kustomer names them (permission sets).
ROLE_BY_RESOURCE: dict[str, str] = {
    "search": "org.permission.search.create",
    "conversation": "org.permission.conversation.read",
    "message": "org.permission.message.read",
    "note": "org.permission.note.read",
    "customer": "org.permission.customer.read",
    "tag": "org.permission.tag.read",
    "metadata": "org.permission.metadata.read",
    "company": "org.permission.company.read",
    "kobject": "org.permission.kobject.read",
    "klass": "org.permission.klass.read",
    "user": "org.permission.user.read",
    "team": "org.permission.team.read",
    "shortcut": "org.permission.shortcut.read",
    "brand": "org.permission.brand.read",
    "schedule": "org.permission.schedule.read",
    "routing": "org.permission.routing.read",
    "satisfaction": "org.permission.satisfaction.read",
    "attachment": "org.permission.attachment.read",
    "event": "org.permission.event.read",
    "audit_logs": "org.permission.audit_logs.read",
}

#: Other names Kustomer accepts for the same read (the older per-user role family).
LEGACY_ROLE_BY_RESOURCE: dict[str, str] = {
    resource: role.replace("org.permission.", "org.user.")
    for resource, role in ROLE_BY_RESOURCE.items()
    if resource != "search"
} | {"search": "org.user.search.read"}


class KustomerTapError(Exception):
    """An error whose message is the whole story for the user."""

    exit_code = 1


class ConfigurationError(KustomerTapError):
    """The configuration cannot work; nothing was requested."""


class AuthenticationError(KustomerTapError):
    """Kustomer rejected the API key itself."""


class PermissionDeniedError(KustomerTapError):
    """The key is valid but lacks the role one resource needs."""

    def __init__(self, message: str, *, role: str, resource: str) -> None:
        """Keep the role so a stream may be skipped instead of failing the run."""
        super().__init__(message)
        self.role = role
        self.resource = resource


class ApiUnavailableError(KustomerTapError):
    """Kustomer could not be reached or kept failing after every retry."""


class UnexpectedResponseError(KustomerTapError):
    """Kustomer answered with something this tap cannot read."""


class SearchCapError(UnexpectedResponseError):
    """More records share every walk key than one search may return."""


# Answers the retry loop acts on. They extend the SDK's two kinds, which its request
# loop and ``validate_response`` contract know: retriable, and fatal.


class RateLimitedError(RetriableAPIError):
    """A 429: wait for the window to reset, not for a blind backoff."""

    def __init__(self, message: str, response: requests.Response, wait_seconds: float) -> None:
        """Carry the wait the budget computed from the rate-limit headers."""
        super().__init__(message, response)
        self.wait_seconds = wait_seconds


class MalformedResponseError(RetriableAPIError):
    """A 2xx whose body is not the JSON object Kustomer promises (truncated, HTML)."""


class NotFoundError(FatalAPIError):
    """A 404: the object is gone (deleted between search and fetch) or the path is wrong."""


class BadRequestError(FatalAPIError, UnexpectedResponseError):
    """A 400 the tap cannot retry: the query or a setting is wrong."""


class SecretRedactor(logging.Filter):
    """Scrub known secrets from every log record before any handler formats it.

    The record keeps its shape: the format string, each argument, every extra
    attribute and the exception are redacted one by one instead of being rendered
    to text, because JSON logs (``singer_sdk.logging.StructuredFormatter``) read
    ``args`` for metric points and ``exc_info`` for exception details.
    """

    def __init__(self, secrets: t.Iterable[str]) -> None:
        """Remember the secrets (blank and short ones are ignored)."""
        super().__init__()
        self.secrets: list[str] = []
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str) -> None:
        """Also scrub ``secret``, stripped and as JSON writes it, from now on."""
        if not secret or len(secret.strip()) < MIN_SECRET_LENGTH:
            return
        forms = {secret, secret.strip()}
        # A secret with a quote, backslash or non-ASCII character appears escaped in JSON.
        forms |= {json.dumps(form)[1:-1] for form in list(forms)}
        forms |= {json.dumps(form, ensure_ascii=False)[1:-1] for form in list(forms)}
        if not forms <= set(self.secrets):
            # A new list, not an in-place sort: other threads may be reading the old one.
            self.secrets = sorted({*self.secrets, *forms}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret and bearer token replaced."""
        return _BEARER.sub("Bearer " + REDACTED, self._replace_secrets(text))

    def _replace_secrets(self, text: str) -> str:
        """Only the known secrets, not the bearer pattern (which would eat a ``%s``)."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def redact_value(self, value: object) -> object:
        """Return ``value`` with secrets replaced in every string inside it.

        The result is ``value`` itself when there was nothing to replace, so types
        that readers test with ``isinstance`` (metric points, enums) survive.
        """
        return _Scrub(self).value(value, 0)

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        """Redact each part of the record in place, keeping ``args`` and ``exc_info``."""
        scrub = _Scrub(self)
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, exc, tb = record.exc_info
            clean = scrub.exception(exc, 0)
            if clean is not exc:
                record.exc_info = (exc_type, clean, tb)
                record.exc_text = None  # rendered again, from the redacted exception
        if record.args and isinstance(record.msg, str):
            # A format string: "Bearer %s" is checked once rendered, in _join_split_secret.
            record.msg = self._replace_secrets(record.msg)
        else:
            record.msg = scrub.value(record.msg, 0)
        if record.args:
            record.args = scrub.args(record.args)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_METADATA:
                clean_value = scrub.value(value, 0)
                if clean_value is not value:
                    setattr(record, name, clean_value)
        self._join_split_secret(record)
        return True

    def _join_split_secret(self, record: logging.LogRecord) -> None:
        """Render the message if a secret or token only shows once format and arguments meet."""
        try:
            message = record.getMessage()
        except Exception:  # the formatter reports a bad format itself
            return
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None


# Bearer tokens never hold quotes or backslashes, so a match never ends a JSON string.
_BEARER = re.compile(r"Bearer\s+[^\s'\"\\]+")
# Past this depth nested values are checked as text, not walked.
_MAX_DEPTH = 32
# Marks a value whose redaction has begun but not ended (so a cycle leads back to it).
_IN_PROGRESS = object()
# Record attributes set by logging itself that never carry message text.
_RECORD_METADATA = frozenset({
    "msg", "args", "exc_info", "name", "levelname", "levelno", "pathname", "filename",
    "module", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "taskName",
})  # fmt: skip


class _RedactedText:
    """Stands in for an object whose ``str`` or ``repr`` would show a secret."""

    __slots__ = ("_repr", "_str")

    def __init__(self, text: str, representation: str) -> None:
        """Keep both renderings, already redacted."""
        self._str = text
        self._repr = representation

    @override
    def __str__(self) -> str:
        return self._str

    @override
    def __repr__(self) -> str:
        return self._repr

    @override
    def __format__(self, format_spec: str) -> str:
        return format(self._str, format_spec)


class _RedactedExceptionMixin:
    """Puts redacted text in front of an exception class's own ``__str__``/``__repr__``."""

    __slots__ = ()

    @override
    def __str__(self) -> str:
        return str(self.__dict__.get("_redacted_str", REDACTED))

    @override
    def __repr__(self) -> str:
        return str(self.__dict__.get("_redacted_repr", REDACTED))


# Original exception class (and whether it could be subclassed) -> its redacted twin class.
_TWIN_CLASSES: dict[tuple[type[BaseException], bool], type[BaseException]] = {}


def _twin_class(cls: type[BaseException], *, subclass: bool) -> type[BaseException]:
    """A class named like ``cls`` (a subclass of it when possible) that prints redacted."""
    key = (cls, subclass)
    twin = _TWIN_CLASSES.get(key)
    if twin is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        base: type[BaseException] = cls if subclass else Exception
        twin = t.cast(
            "type[BaseException]",
            type(cls.__name__, (_RedactedExceptionMixin, base), namespace),
        )
        _TWIN_CLASSES[key] = twin
    return twin


def _twin(exc: BaseException, parts: _ExceptionParts) -> BaseException:
    """A copy of ``exc`` built from redacted parts, keeping its traceback and chain.

    A copy and not ``exc`` itself: the exception may still be in use (raised again,
    inspected by the caller) after this record is written.
    """
    for subclass in (True, False):
        try:
            cls = _twin_class(type(exc), subclass=subclass)
            twin = cls.__new__(cls)
            twin.__dict__.update(vars(exc))
            twin.args = parts.args
        except Exception:  # noqa: S112 - a class that refuses copies: next option
            continue
        break
    else:
        twin = Exception(parts.text)
    if parts.notes is not None:
        twin.__dict__["__notes__"] = parts.notes
    twin.__dict__["_redacted_str"] = parts.text
    twin.__dict__["_redacted_repr"] = parts.representation
    twin.__traceback__ = exc.__traceback__
    twin.__cause__ = parts.cause
    twin.__context__ = parts.context
    twin.__suppress_context__ = exc.__suppress_context__
    return twin


class _ExceptionParts(t.NamedTuple):
    """What a twin exception is built from."""

    text: str
    representation: str
    args: tuple[t.Any, ...]
    notes: object
    cause: BaseException | None
    context: BaseException | None


class _Scrub:
    """One redaction pass over one value graph; remembers what it met, so cycles end."""

    def __init__(self, redactor: SecretRedactor) -> None:
        """Redact with ``redactor``."""
        self._redact = redactor.redact
        # id -> (original, result); the original is kept so its id cannot be reused.
        self._seen: dict[int, tuple[object, object]] = {}

    def args(
        self, args: tuple[object, ...] | t.Mapping[str, object]
    ) -> tuple[object, ...] | t.Mapping[str, object]:
        """Redact a record's arguments, tuple or mapping, keeping the container type."""
        return t.cast("tuple[object, ...] | t.Mapping[str, object]", self.value(args, 0))

    def value(self, value: object, depth: int) -> object:
        """Redact ``value``; return it unchanged (the same object) if it held no secret."""
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            redacted = self._redact(value)
            return value if redacted == value else redacted
        if isinstance(value, BaseException):
            return self.exception(value, depth)
        if id(value) in self._seen:
            done = self._seen[id(value)][1]
            # A container holding itself: shown as Python shows it, never the original.
            return _RedactedText("...", "...") if done is _IN_PROGRESS else done
        if depth > _MAX_DEPTH:
            return self._opaque(value)
        self._seen[id(value)] = (value, _IN_PROGRESS)
        if isinstance(value, t.Mapping):
            clean = self._mapping(value, depth)
        elif isinstance(value, (list, tuple, set, frozenset)):
            clean = self._collection(value, depth)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            clean = self._dataclass(value, depth)
        else:
            clean = self._opaque(value)
        self._seen[id(value)] = (value, clean)
        return clean

    def exception(self, exc: BaseException, depth: int) -> BaseException:
        """Redact an exception's message, arguments, notes and chain into a twin."""
        if id(exc) in self._seen:
            done = self._seen[id(exc)][1]
            return exc if done is _IN_PROGRESS else t.cast("BaseException", done)
        self._seen[id(exc)] = (exc, _IN_PROGRESS)
        text, text_changed = self._text(str, exc)
        representation, repr_changed = self._text(repr, exc)
        args = t.cast("tuple[t.Any, ...]", self.value(exc.args, depth + 1))
        notes_before = exc.__dict__.get("__notes__")
        notes = self.value(notes_before, depth + 1)
        cause = self._link(exc.__cause__, depth + 1)
        context = self._link(exc.__context__, depth + 1)
        unchanged = (
            not (text_changed or repr_changed)
            and args is exc.args
            and notes is notes_before
            and cause is exc.__cause__
            and context is exc.__context__
        )
        if unchanged:
            return exc
        twin = _twin(exc, _ExceptionParts(text, representation, args, notes, cause, context))
        self._seen[id(exc)] = (exc, twin)
        return twin

    def _link(self, exc: BaseException | None, depth: int) -> BaseException | None:
        """The redacted cause or context; a chain that loops or runs too long is cut."""
        if exc is None or depth > _MAX_DEPTH:
            return None
        if id(exc) in self._seen and self._seen[id(exc)][1] is _IN_PROGRESS:
            return None
        return self.exception(exc, depth)

    def _text(self, render: t.Callable[[object], str], value: object) -> tuple[str, bool]:
        """Render ``value`` redacted, and say whether redaction changed anything."""
        try:
            text = render(value)
        except Exception:  # an object that cannot print leaks nothing
            return f"<unprintable {type(value).__name__}>", False
        redacted = self._redact(text)
        return redacted, redacted != text

    def _opaque(self, value: object) -> object:
        """An object of unknown shape: replaced by its redacted text if that shows a secret."""
        text, text_changed = self._text(str, value)
        representation, repr_changed = self._text(repr, value)
        if text_changed or repr_changed:
            return _RedactedText(text, representation)
        return value

    def _mapping(self, value: t.Mapping[object, object], depth: int) -> object:
        try:
            items = list(value.items())
        except RuntimeError:  # changed by another thread while being read
            return self._opaque(value)
        clean = [(self.value(k, depth + 1), self.value(v, depth + 1)) for k, v in items]
        if all(k2 is k and v2 is v for (k, v), (k2, v2) in zip(items, clean, strict=True)):
            return value
        try:
            return type(value)(clean)  # type: ignore[call-arg]
        except Exception:  # a mapping type that cannot be built from pairs
            return dict(clean)

    def _collection(
        self,
        value: list[object] | tuple[object, ...] | set[object] | frozenset[object],
        depth: int,
    ) -> object:
        try:
            items = list(value)
        except RuntimeError:  # changed by another thread while being read
            return self._opaque(value)
        clean = [self.value(item, depth + 1) for item in items]
        if all(new is old for old, new in zip(items, clean, strict=True)):
            return value
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            try:
                make = t.cast("t.Callable[..., tuple[object, ...]]", type(value))
                return make(*clean)
            except Exception:  # a tuple type with extra rules
                return tuple(clean)
        try:
            return type(value)(clean)
        except Exception:  # a collection type that cannot be built from items
            return tuple(clean) if isinstance(value, tuple) else list(clean)

    def _dataclass(self, value: object, depth: int) -> object:
        changes: dict[str, object] = {}
        for field in dataclasses.fields(value):  # type: ignore[arg-type]
            if not field.init:
                continue
            old = getattr(value, field.name, None)
            new = self.value(old, depth + 1)
            if new is not old:
                changes[field.name] = new
        if not changes:
            return value
        try:
            return dataclasses.replace(value, **changes)  # type: ignore[type-var]
        except Exception:  # a dataclass that validates its fields
            return self._opaque(value)


def install_redactor(secrets: t.Iterable[str]) -> SecretRedactor:
    """Attach one redactor to every handler that exists now, and to every logger.

    Handlers matter most: records of loggers created later still pass them.
    """
    secrets = list(secrets)
    redactor = SecretRedactor(secrets)
    stderr = sys.stderr
    if isinstance(stderr, RedactingStream):
        for secret in secrets:
            stderr.add_secret(secret)
    root = logging.getLogger()
    loggers = [
        root,
        *[
            logger
            for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ],
    ]
    for logger in loggers:
        if redactor not in logger.filters:
            logger.addFilter(redactor)
        for handler in logger.handlers:
            if redactor not in handler.filters:
                handler.addFilter(redactor)
    return redactor


class RedactingStream:
    """A text stream that scrubs secrets from everything written through it.

    The last line of defence (the CLI wraps ``sys.stderr`` in it): log records are
    already redacted by :class:`SecretRedactor`, but tracebacks and other direct
    writes are not. JSON log lines stay valid JSON: a secret is replaced inside a
    JSON string by ``***REDACTED***``, which has no character JSON escapes, and the
    secret is also matched in its JSON-escaped form, so the assumption that holds
    it together is only that a secret is written as (part of) a JSON string. A line
    that replacing would still break (a secret written as a bare JSON number, say)
    is parsed, redacted value by value and written again.
    """

    def __init__(self, stream: t.TextIO, secrets: t.Iterable[str]) -> None:
        """Wrap ``stream``."""
        self._stream = stream
        self._redactor = SecretRedactor(secrets)

    def add_secret(self, secret: str) -> None:
        """Also scrub ``secret`` from now on."""
        self._redactor.add_secret(secret)

    def write(self, text: str) -> int:
        """Write ``text`` with secrets replaced."""
        redacted = self._redactor.redact(text)
        if redacted != text:
            lines = text.splitlines(keepends=True)
            # Once more over the whole: a bearer token may follow on the next line.
            redacted = self._redactor.redact("".join(map(self._redact_line, lines)))
        self._stream.write(redacted)
        return len(text)

    def writelines(self, lines: t.Iterable[str]) -> None:
        """Write each line through :meth:`write` (not straight to the wrapped stream)."""
        for line in lines:
            self.write(line)

    def _redact_line(self, line: str) -> str:
        """One line redacted; a JSON line that text replacement would break, re-encoded."""
        redacted = self._redactor.redact(line)
        body = line.rstrip("\r\n")
        if redacted == line or not body.lstrip().startswith(("{", "[")):
            return redacted
        try:
            json.loads(redacted)
        except ValueError:
            pass
        else:
            return redacted
        try:
            parsed = json.loads(body)
        except ValueError:
            return redacted
        encoded = json.dumps(self._redactor.redact_value(parsed), separators=(",", ":"))
        return encoded + line[len(body) :]

    def __getattr__(self, name: str) -> t.Any:
        """Everything else (flush, fileno, isatty...) is the wrapped stream's."""
        return getattr(self._stream, name)
