"""User-facing errors and secret redaction.

Every failure a user can fix (a bad key, a missing role, a wrong region, a bad date)
is raised as a :class:`KustomerTapError` whose message is one line that names the
problem and the fix. The CLI prints that line instead of a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
import typing as t

REDACTED = "***REDACTED***"
# Shorter strings are not real API keys, and scrubbing them would mangle ordinary words.
MIN_SECRET_LENGTH = 8

# Roles a read-only key needs, by resource, as Kustomer names them.
ROLE_BY_RESOURCE: dict[str, str] = {
    "search": "org.permission.search.create",
    "conversation": "org.permission.conversation.read",
    "message": "org.permission.message.read",
    "note": "org.permission.note.read",
    "customer": "org.permission.customer.read",
    "tag": "org.permission.tag.read",
    "metadata": "org.permission.metadata.read",
}


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


class SecretRedactor(logging.Filter):
    """Scrub known secrets from every log record before any handler formats it."""

    def __init__(self, secrets: t.Iterable[str]) -> None:
        """Remember the secrets (blank ones are ignored)."""
        super().__init__()
        self.secrets = sorted(
            {s for s in secrets if s and len(s.strip()) >= MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
            stripped = secret.strip()
            if stripped and stripped in text:
                text = text.replace(stripped, REDACTED)
        return _BEARER.sub("Bearer " + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, redacted, so arguments cannot leak it back."""
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_BEARER = re.compile(r"Bearer\s+[^\s'\"]+")


def install_redactor(secrets: t.Iterable[str]) -> SecretRedactor:
    """Attach one redactor to every handler that exists now, and to the root logger."""
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
    """A text stream that scrubs secrets from everything written through it."""

    def __init__(self, stream: t.TextIO, secrets: t.Iterable[str]) -> None:
        """Wrap ``stream``."""
        self._stream = stream
        self._redactor = SecretRedactor(secrets)

    def add_secret(self, secret: str) -> None:
        """Also scrub ``secret`` from now on."""
        if len(secret.strip()) >= MIN_SECRET_LENGTH and secret not in self._redactor.secrets:
            self._redactor.secrets.append(secret)
            self._redactor.secrets.sort(key=len, reverse=True)

    def write(self, text: str) -> int:
        """Write ``text`` with secrets replaced."""
        self._stream.write(self._redactor.redact(text))
        return len(text)

    def __getattr__(self, name: str) -> t.Any:
        """Everything else (flush, fileno, isatty...) is the wrapped stream's."""
        return getattr(self._stream, name)
