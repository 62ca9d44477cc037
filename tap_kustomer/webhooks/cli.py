"""``tap-kustomer-webhooks``: register the webhook, then serve the receiver.

Secrets come from the environment or from files, never from a flag's value, which
``ps`` and shell history would show: the webhook token from
``KUSTOMER_WEBHOOK_TOKEN`` or ``--token-file``, the API key from
``TAP_KUSTOMER_API_KEY``. Both are scrubbed from every line written to stderr.
Errors a user can fix are one line, as in ``tap-kustomer``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import typing as t
from pathlib import Path

import click

from tap_kustomer.errors import (
    ConfigurationError,
    KustomerTapError,
    RedactingStream,
    install_redactor,
)
from tap_kustomer.webhooks.queue import DEFAULT_QUEUE_URL
from tap_kustomer.webhooks.register import WEBHOOK_EVENTS, register_webhook, write_token_file

PROG = "tap-kustomer-webhooks"
TOKEN_ENV = "KUSTOMER_WEBHOOK_TOKEN"  # noqa: S105 - the variable's name, not a token
QUEUE_ENV = "KUSTOMER_WEBHOOK_QUEUE"
API_KEY_ENV = "TAP_KUSTOMER_API_KEY"
DEFAULT_API_URL = "https://api.kustomerapp.com"
# Seconds uvicorn waits for requests in flight after SIGTERM before closing them.
GRACEFUL_SHUTDOWN_SECONDS = 10
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("tap_kustomer.webhooks")


def main() -> None:
    """Run the command; print a one-line error for anything the user can fix."""
    sys.stderr = RedactingStream(
        sys.stderr, [os.environ.get(TOKEN_ENV, ""), os.environ.get(API_KEY_ENV, "")]
    )
    try:
        cli.main(prog_name=PROG, standalone_mode=False)
    except KustomerTapError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT after its graceful stop
        raise SystemExit(130) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kustomer-singer-tap", prog_name=PROG)
def cli() -> None:
    """Receive Kustomer outbound webhooks into a durable queue of conversation ids."""


@cli.command()
@click.option(
    "--queue",
    "queue_url",
    default=DEFAULT_QUEUE_URL,
    envvar=QUEUE_ENV,
    show_default=True,
    help=(
        "Queue URL: sqlite:///relative.db, sqlite:////absolute.db or "
        f"postgresql://user@host:5432/db (also {QUEUE_ENV})."
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option(
    "--path",
    default="/kustomer/webhook",
    show_default=True,
    help="Path Kustomer posts to (GET /healthz is always served).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1_048_576,
    show_default=True,
    help="Larger deliveries are refused with 413 without being read.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the webhook token (default: the {TOKEN_ENV} environment variable).",
)
@click.option(
    "--insecure-no-signature",
    is_flag=True,
    help="Accept unsigned deliveries. Only for trying the receiver out; warns at every start.",
)
@click.option(
    "--limit-concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Connections served at once; more are answered 503 (Kustomer retries).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    *,
    queue_url: str,
    host: str,
    port: int,
    path: str,
    max_body_bytes: int,
    token_file: Path | None,
    insecure_no_signature: bool,
    limit_concurrency: int,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the receiver until SIGTERM or SIGINT (then finish requests in flight)."""
    try:
        import uvicorn

        from tap_kustomer.webhooks.receiver import ReceiverSettings, create_app
    except ImportError:
        msg = f"{PROG} serve needs the webhooks extra: pip install 'kustomer-singer-tap[webhooks]'"
        raise ConfigurationError(msg) from None
    from tap_kustomer.webhooks.queue import open_queue

    _configure_logging(log_level, [])
    token = None if insecure_no_signature else read_token(token_file)
    if token:
        _add_secret(token)  # from a file: not known when stderr was wrapped
    settings = ReceiverSettings(
        token=token,
        verify_signature=not insecure_no_signature,
        path=path,
        max_body_bytes=max_body_bytes,
    )
    app = create_app(open_queue(queue_url), settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our handler, with the redactor, on the root logger
        log_level=log_level,
        access_log=access_log,
        server_header=False,
        limit_concurrency=limit_concurrency,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()


def read_token(token_file: Path | None) -> str:
    """The webhook token, from ``token_file`` or the environment; one-line error if absent."""
    if token_file is None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            msg = (
                f"no webhook token: set {TOKEN_ENV} or --token-file (the file "
                f"`{PROG} register` wrote), or pass --insecure-no-signature to try it out"
            )
            raise ConfigurationError(msg)
        return token
    try:
        token = token_file.read_text(encoding="utf-8").strip()
        mode = token_file.stat().st_mode
    except OSError as exc:
        msg = f"cannot read the token file {token_file}: {exc.strerror or type(exc).__name__}"
        raise ConfigurationError(msg) from None
    if not token:
        msg = f"the token file {token_file} is empty"
        raise ConfigurationError(msg)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the token file %s is readable by others; chmod 600 it", token_file)
    return token


@cli.command()
@click.option(
    "--api-url",
    default=DEFAULT_API_URL,
    show_default=True,
    help=(
        "Kustomer API host (eu: https://api.prod2.kustomerapp.com, "
        "in: https://api.prod4.kustomerapp.com, or https://ORG.api.kustomerapp.com)."
    ),
)
@click.option("--name", required=True, help="Webhook name shown in Kustomer (up to 255 chars).")
@click.option("--url", required=True, help="Public https:// URL Kustomer delivers to.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save the webhook's signing token (mode 0600).",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    default=WEBHOOK_EVENTS,
    show_default=True,
    help="Event to subscribe to (repeat the option for several).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing token file.")
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True)
def register(
    *,
    api_url: str,
    name: str,
    url: str,
    token_file: Path,
    events: tuple[str, ...],
    overwrite: bool,
    timeout: float,
) -> None:
    """Create the outbound webhook (API key from TAP_KUSTOMER_API_KEY); save its token."""
    _configure_logging("warning", [])
    api_key = os.environ.get(API_KEY_ENV, "")
    if not api_key.strip():
        msg = f"no API key: set {API_KEY_ENV} (a key that may create outbound webhooks)"
        raise ConfigurationError(msg)
    _check_token_destination(token_file, overwrite=overwrite)
    created = register_webhook(
        api_url=api_url, api_key=api_key, name=name, url=url, events=events, timeout=timeout
    )
    _add_secret(created.token)
    try:
        write_token_file(token_file, created.token)
    except OSError as exc:
        msg = (
            f"webhook {created.webhook_id} was created but its token could not be written to "
            f"{token_file} ({exc.strerror or type(exc).__name__}); read it with "
            f"GET /v1/outbound-webhooks/{created.webhook_id}"
        )
        raise KustomerTapError(msg) from None
    click.echo(
        json.dumps({"webhook_id": created.webhook_id, "token_file": str(token_file.resolve())})
    )


def _check_token_destination(token_file: Path, *, overwrite: bool) -> None:
    """Fail before creating anything if the token could not be saved afterwards."""
    if token_file.exists() and not overwrite:
        msg = f"the token file {token_file} exists; remove it or pass --overwrite"
        raise ConfigurationError(msg)
    directory = token_file.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        msg = f"cannot write the token file in {directory}: create it or choose another path"
        raise ConfigurationError(msg)


def _configure_logging(level: str, secrets: t.Sequence[str]) -> None:
    """One stderr handler on the root logger, with every secret scrubbed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    install_redactor([secret for secret in secrets if secret])


def _add_secret(secret: str) -> None:
    """Scrub ``secret`` from stderr and logs from now on (a token learned at run time)."""
    install_redactor([secret])
