"""The command line: one-line errors, secrets kept out of every output, exit codes.

Everything a user can fix is printed as one line naming the fix; a traceback is
shown only with ``debug`` (and is redacted like every other line on stderr).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import typing as t

import click

from tap_kustomer.check import check_connection
from tap_kustomer.errors import KustomerTapError, RedactingStream
from tap_kustomer.stopping import RunStopped
from tap_kustomer.tap import TapKustomer

CHECK_HELP = (
    "Check the settings and the API key's roles against the streams (those selected in "
    "--catalog, or all), print a report and exit: 0 if every selected stream can be read."
)


class ConfigArgument(t.Protocol):
    """What the SDK's ``--config`` option hands to ``invoke``."""

    config: dict[str, t.Any]
    parse_env: bool


def main() -> None:
    """Run the CLI; print a one-line error (no traceback) for anything the user can fix."""
    config = _config_from_argv()
    sys.stderr = RedactingStream(sys.stderr, _secrets(config))
    _limit_heap_arenas()
    debug = bool(config.get("debug")) or os.environ.get("TAP_KUSTOMER_DEBUG", "").lower() in {
        "1",
        "true",
    }
    try:
        exit_code = TapKustomer.cli(standalone_mode=False)
    except RunStopped as stop:
        # The STATE is written; leave without waiting for requests still in flight.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(stop.code or 1))
    except KustomerTapError as exc:
        _fail(str(exc), exc, code=exc.exit_code, debug=debug)
    except ValueError as exc:
        if not type(exc).__name__.endswith("JSONDecodeError"):
            _fail(describe_unexpected(exc), exc, debug=debug)
        _fail(
            "a JSON file given to --config, --state or --catalog is not valid JSON "
            f"(line {getattr(exc, 'lineno', '?')}, column {getattr(exc, 'colno', '?')}); "
            "fix the file",
            exc,
            debug=debug,
        )
    except click.exceptions.ClickException as exc:
        _fail(exc.format_message(), exc, code=exc.exit_code or 2, debug=debug)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # the last line of defence for the CLI
        _fail(describe_unexpected(exc), exc, debug=debug)
    if isinstance(exit_code, int) and exit_code:
        sys.stderr.write("tap-kustomer: error: the configuration is invalid (see above)\n")
        raise SystemExit(exit_code)


def with_check_option(command: click.Command) -> click.Command:
    """Add ``--check`` to the SDK's command; ``TapKustomer.invoke`` receives it."""
    command.params.append(click.Option(["--check"], is_flag=True, help=CHECK_HELP))
    return command


def run_check(
    tap_class: type[TapKustomer],
    *,
    config: ConfigArgument | None,
    catalog: t.IO[str] | None,
) -> None:
    """``--check``: the tap from the settings (and catalog, for the selection), then the check.

    No mapper: it would list the streams, whose schemas ask Kustomer for custom
    attributes, before the key was checked.
    """
    tap = tap_class(
        config=config.config if config is not None else None,
        catalog=json.load(catalog) if catalog is not None else None,
        parse_env_config=config.parse_env if config is not None else False,
        validate_config=True,
        setup_mapper=False,
    )
    check_connection(tap, sys.stdout.write)
    sys.stdout.flush()


def describe_unexpected(exc: BaseException) -> str:
    """One line for an error the tap has no specific words for."""
    from singer_sdk.exceptions import ConfigValidationError

    if isinstance(exc, ConfigValidationError):
        details = "; ".join(str(e) for e in getattr(exc, "errors", []) or []) or str(exc)
        return f"the configuration is invalid: {details}"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(message: str, exc: BaseException, *, code: int = 1, debug: bool) -> t.NoReturn:
    line = f"tap-kustomer: error: {' '.join(message.split())}"
    if os.environ.get("SINGER_SDK_LOG_CONFIG"):
        # The user asked for a logging setup (JSON lines, say): the error is one record.
        logging.getLogger("tap-kustomer").error(line, exc_info=exc if debug else None)
    else:
        if debug:
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _config_from_argv() -> dict[str, t.Any]:
    """The settings of the ``--config`` files, read early for redaction and ``debug``."""
    config: dict[str, t.Any] = {}
    args = sys.argv[1:]
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            try:
                with open(args[index + 1], encoding="utf-8") as handle:
                    loaded = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(loaded, dict):
                config.update(loaded)
    return config


def _secrets(config: t.Mapping[str, t.Any]) -> list[str]:
    """The API key, from the config files and the environment."""
    candidates = [os.environ.get("TAP_KUSTOMER_API_KEY", ""), config.get("api_key")]
    return [s for s in candidates if isinstance(s, str) and s]


def _limit_heap_arenas(arenas: int = 2) -> None:
    """Let the process's threads share two glibc heap arenas instead of one each.

    Each worker thread that parses search pages would otherwise keep an arena of its
    own, holding freed pages: 15-30 MB of resident memory for nothing. Linux with
    glibc only; anywhere else this does nothing.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_arena_max = -8  # from glibc's malloc.h
        libc.mallopt(m_arena_max, arenas)
    except (OSError, AttributeError):
        return
