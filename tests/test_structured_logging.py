"""JSON logs (the SDK's ``structured-logging``) keep their structure and never show the key.

A user turns JSON logs on by pointing ``SINGER_SDK_LOG_CONFIG`` at a logging config
that uses ``singer_sdk.logging.StructuredFormatter``. The tap's secret redaction must
then leave every record whole: METRIC lines carry their metric point as data, an
exception carries its type, message and traceback, and the API key is in no field.
The program runs below use that exact switch; the unit tests feed ``SecretRedactor``
records shaped the ways logging calls shape them.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from singer_sdk import metrics
from singer_sdk.logging import ConsoleFormatter, StructuredFormatter

from tap_kustomer.errors import (
    MIN_SECRET_LENGTH,
    REDACTED,
    AuthenticationError,
    PermissionDeniedError,
    RedactingStream,
    SecretRedactor,
)
from tests.sandbox import Sandbox, SandboxOptions
from tests.tap_harness import REPO, run_cli, tap_env

KEY = "sk-live-jsonlogs-5e7c1a9b3d8f2e4a6c0b"
REJECTED_KEY = "sk-live-jsonlogs-rejected-7d2f9a4c1e8b"

LOG_CONFIG = """\
version: 1
disable_existing_loggers: false
formatters:
  json:
    (): singer_sdk.logging.StructuredFormatter
handlers:
  stderr:
    class: logging.StreamHandler
    formatter: json
    stream: ext://sys.stderr
root:
  level: INFO
  handlers: [stderr]
"""


def fragments(key: str) -> list[str]:
    return [key, key[:12], key[-12:]]


def strings_in(value: object) -> Iterator[str]:
    """Every key and string value of decoded JSON, however deep."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings_in(v)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def assert_key_absent(key: str, *texts: str) -> None:
    """Neither the raw text nor any decoded JSON field holds the key or a fragment of it."""
    for text in texts:
        for fragment in fragments(key):
            assert fragment not in text
        for line in text.splitlines():
            try:
                decoded = json.loads(line)
            except ValueError:
                continue
            for value in strings_in(decoded):
                for fragment in fragments(key):
                    assert fragment not in value, line


def json_lines(stderr: str) -> list[dict[str, t.Any]]:
    """Every stderr line decoded; fails on the first line that is not a JSON object."""
    lines = []
    for line in stderr.splitlines():
        try:
            decoded = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
        assert isinstance(decoded, dict), line
        lines.append(decoded)
    return lines


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxOptions(seed=41, api_key=KEY, conversations=30, customers=20)) as sb:
        yield sb


@pytest.fixture
def json_logging(tmp_path: Path) -> dict[str, str]:
    """The environment a user sets to get JSON logs."""
    path = tmp_path / "logging.yaml"
    path.write_text(LOG_CONFIG)
    return {"SINGER_SDK_LOG_CONFIG": str(path)}


def config_for(sb: Sandbox, key: str = KEY) -> dict[str, t.Any]:
    return {"api_key": key, "api_url": sb.base_url, "start_date": "2000-01-01T00:00:00Z"}


# A tap program with JSON logs on.


def test_a_sync_writes_only_json_lines_with_structured_metrics(
    sandbox: Sandbox, json_logging: dict[str, str], tmp_path: Path
) -> None:
    run = run_cli([], config=config_for(sandbox), tmp_path=tmp_path, env=json_logging)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.records("conversations")
    lines = json_lines(run.stderr)
    assert lines
    metric_lines = [line for line in lines if line.get("message") == "METRIC"]
    assert metric_lines, "no METRIC line kept its metric point"
    assert not [line for line in lines if str(line.get("message")).startswith("METRIC:")]
    for line in metric_lines:
        info = line["metric_info"]
        assert set(info) == {"type", "metric", "value", "tags"}
        assert info["type"] in {"counter", "timer"}
        assert isinstance(info["value"], (int, float))
        assert isinstance(info["tags"], dict)
    names = {line["metric_info"]["metric"] for line in metric_lines}
    assert {"record_count", "http_request_duration"} <= names
    counts = [
        m["metric_info"]
        for m in metric_lines
        if m["metric_info"]["metric"] == "record_count"
        and m["metric_info"]["tags"].get("stream") == "conversations"
    ]
    assert sum(c["value"] for c in counts) == len(run.records("conversations"))
    assert_key_absent(KEY, run.raw_stdout, run.stderr)


def test_a_rejected_key_is_logged_as_json_without_the_key(
    sandbox: Sandbox, json_logging: dict[str, str], tmp_path: Path
) -> None:
    run = run_cli([], config=config_for(sandbox, REJECTED_KEY), tmp_path=tmp_path, env=json_logging)
    assert run.returncode != 0
    # Every line is JSON, the CLI's one-line error included.
    records = json_lines(run.stderr)
    errors = [r for r in records if "tap-kustomer: error:" in str(r.get("message"))]
    assert len(errors) == 1
    assert "rejected the API key" in errors[0]["message"]
    assert_key_absent(REJECTED_KEY, run.raw_stdout, run.stderr)


def test_with_debug_the_error_record_carries_the_exception(
    sandbox: Sandbox, json_logging: dict[str, str], tmp_path: Path
) -> None:
    config = {**config_for(sandbox, REJECTED_KEY), "debug": True}
    run = run_cli([], config=config, tmp_path=tmp_path, env=json_logging)
    assert run.returncode != 0
    errors = [r for r in json_lines(run.stderr) if "tap-kustomer: error:" in str(r.get("message"))]
    assert len(errors) == 1
    assert errors[0]["exception"]["type"] == "AuthenticationError"
    assert_key_absent(REJECTED_KEY, run.raw_stdout, run.stderr)


# The CLI never logs an exception with exc_info, so this program sets logging up as the
# CLI does (stderr wrapped, then the SDK reads SINGER_SDK_LOG_CONFIG, then the tap's
# redactor) and logs one whose message, arguments, extras, notes and cause hold the key.
LOG_AN_EXCEPTION = textwrap.dedent("""
    import logging, sys
    from singer_sdk._logging import _setup_console_logging
    from tap_kustomer.errors import AuthenticationError, RedactingStream, install_redactor

    key = sys.argv[1]
    sys.stderr = RedactingStream(sys.stderr, [])
    _setup_console_logging()
    install_redactor([key])
    logger = logging.getLogger("tap-kustomer.conversations")
    try:
        try:
            raise ConnectionError(f"GET /v1/tags with Authorization: Bearer {key}")
        except ConnectionError as cause:
            error = AuthenticationError(f"Kustomer rejected the API key {key}")
            if hasattr(error, "add_note"):  # Python 3.11+
                error.add_note(f"key used: {key}")
            raise error from cause
    except AuthenticationError as exc:
        logger.exception(
            "Sync failed for %s", {"api_key": key}, extra={"config": {"api_key": [key]}}
        )
        assert key in str(exc), "the caller's exception is left as it was"
""")


def test_a_logged_exception_keeps_its_details_in_json(json_logging: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOG_AN_EXCEPTION, KEY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=tap_env(json_logging),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = json_lines(done.stderr)
    assert line["level"] == "error"
    assert line["message"] == f"Sync failed for {{'api_key': '{REDACTED}'}}"
    assert line["extra"]["config"] == {"api_key": [REDACTED]}
    exception = line["exception"]
    assert exception["type"] == "AuthenticationError"
    assert exception["module"] == "tap_kustomer.errors"
    assert exception["message"] == f"Kustomer rejected the API key {REDACTED}"
    assert exception["traceback"][-1]["function"] == "<module>"
    assert exception["cause"]["type"] == "ConnectionError"
    assert exception["cause"]["message"].endswith(f"Bearer {REDACTED}")
    assert exception["cause"]["traceback"]
    assert_key_absent(KEY, done.stdout, done.stderr)


# SecretRedactor on single records.


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A logger with a JSON handler and a console handler, both behind the redactor."""
    json_out, console_out = io.StringIO(), io.StringIO()
    logger = logging.getLogger("tests.structured_logging")
    redactor = SecretRedactor([KEY])
    handlers = []
    for stream, formatter in (
        (json_out, StructuredFormatter()),
        (console_out, ConsoleFormatter()),
    ):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        logger.addHandler(handler)
        handlers.append(handler)
    logger.addFilter(redactor)  # a record passes the redactor more than once
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, json_out, console_out
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.removeFilter(redactor)


def make_record(msg: str, args: t.Any = None, **attrs: t.Any) -> logging.LogRecord:
    record = logging.LogRecord("tap-kustomer", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(attrs)
    return record


def test_tuple_args_are_redacted_and_kept() -> None:
    record = make_record("key %s, %d tries, headers %r", (KEY, 3, {"Authorization": KEY}))
    assert SecretRedactor([KEY]).filter(record)
    assert record.args == (REDACTED, 3, {"Authorization": REDACTED})
    assert (
        record.getMessage() == f"key {REDACTED}, 3 tries, headers {{'Authorization': '{REDACTED}'}}"
    )


def test_dict_args_are_redacted_recursively() -> None:
    nested = {"key": KEY, "tries": 2, "deep": [{"token": f"x-{KEY}-y"}, (KEY,)]}
    record = make_record("%(key)s after %(tries)d: %(deep)s", (nested,))
    SecretRedactor([KEY]).filter(record)
    assert isinstance(record.args, dict)
    assert record.args == {
        "key": REDACTED,
        "tries": 2,
        "deep": [{"token": f"x-{REDACTED}-y"}, (REDACTED,)],
    }
    assert KEY not in record.getMessage()
    assert nested["key"] == KEY, "the caller's dict is not changed"


def test_extras_are_redacted() -> None:
    record = make_record("ok", None, config={"api_key": KEY, "n": 1}, token=KEY, count=7)
    SecretRedactor([KEY]).filter(record)
    assert record.__dict__["config"] == {"api_key": REDACTED, "n": 1}
    assert record.__dict__["token"] == REDACTED
    assert record.__dict__["count"] == 7


def test_exc_info_is_kept_and_redacted(
    capture: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, json_out, console_out = capture
    try:
        raise PermissionDeniedError(f"key {KEY} lacks a role", role="r", resource="tag")
    except PermissionDeniedError as exc:
        raised = exc
        logger.exception("failed")
    line = json.loads(json_out.getvalue())
    assert line["exception"]["type"] == "PermissionDeniedError"
    assert line["exception"]["message"] == f"key {REDACTED} lacks a role"
    assert line["exception"]["traceback"][0]["function"] == "test_exc_info_is_kept_and_redacted"
    console = console_out.getvalue()
    assert "Traceback (most recent call last)" in console
    assert f"PermissionDeniedError: key {REDACTED} lacks a role" in console
    assert KEY not in json_out.getvalue() + console
    assert str(raised) == f"key {KEY} lacks a role", "the raised exception is not changed"


def test_the_record_keeps_exc_info_with_the_original_type_and_traceback() -> None:
    try:
        raise AuthenticationError(f"rejected {KEY}")
    except AuthenticationError:
        exc_info = sys.exc_info()
    record = make_record("failed", None)
    record.exc_info = exc_info
    SecretRedactor([KEY]).filter(record)
    assert record.exc_info is not None
    exc_type, exc, tb = record.exc_info
    assert exc_type is AuthenticationError
    assert isinstance(exc, AuthenticationError)
    assert str(exc) == f"rejected {REDACTED}"
    assert exc.args == (f"rejected {REDACTED}",)
    assert tb is exc_info[2]


def test_metric_points_stay_metric_points(
    capture: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, json_out, _ = capture
    point = metrics.Point("counter", metrics.Metric.RECORD_COUNT, 5, {"stream": "tags"})
    metrics.log(logger, point)
    secret_point = metrics.Point("timer", metrics.Metric.HTTP_REQUEST_DURATION, 0.5, {"q": KEY})
    metrics.log(logger, secret_point)
    first, second = (json.loads(line) for line in json_out.getvalue().splitlines())
    assert first["message"] == "METRIC"
    assert first["metric_info"] == {
        "type": "counter",
        "metric": "record_count",
        "value": 5,
        "tags": {"stream": "tags"},
    }
    assert second["message"] == "METRIC"
    assert second["metric_info"]["tags"] == {"q": REDACTED}
    assert secret_point.tags == {"q": KEY}, "the meter's own tags are not changed"


def test_a_clean_record_is_left_exactly_as_it_was() -> None:
    point = metrics.Point("counter", metrics.Metric.RECORD_COUNT, 1, {"stream": "notes"})
    record = make_record("METRIC: %s", (point,))
    args = record.args
    SecretRedactor([KEY]).filter(record)
    assert record.msg == "METRIC: %s"
    assert record.args is args


def test_a_secret_split_between_format_and_argument_is_caught() -> None:
    record = make_record(KEY[:10] + "%s", (KEY[10:],))
    SecretRedactor([KEY]).filter(record)
    assert record.getMessage() == REDACTED


def test_short_secrets_are_kept_and_bearer_tokens_always_go() -> None:
    short = "x" * (MIN_SECRET_LENGTH - 1)
    record = make_record("%s and Authorization: Bearer %s", (short, "abc.def-123"))
    SecretRedactor([short]).filter(record)
    assert record.getMessage() == f"{short} and Authorization: Bearer {REDACTED}"


# The stream around stderr, the last line of defence.


def test_the_stream_keeps_json_lines_valid() -> None:
    quoted = 'sk-live-"quoted\\key"-9f8e7d6c'
    out = io.StringIO()
    stream = RedactingStream(out, [KEY, quoted])
    lines = [
        json.dumps({"message": f"key {KEY}", "extra": {"k": [KEY]}}),
        json.dumps({"message": f"odd key {quoted}"}),
        json.dumps({"message": f"odd key {quoted}"}, ensure_ascii=False),
        json.dumps({"header": "Bearer tok\\en", "n": 12345678}),
    ]
    stream.write(lines[0] + "\n" + lines[1] + "\n")
    stream.writelines([lines[2] + "\n", lines[3] + "\n"])
    decoded = [json.loads(line) for line in out.getvalue().splitlines()]
    assert decoded[0] == {"message": f"key {REDACTED}", "extra": {"k": [REDACTED]}}
    assert decoded[1] == decoded[2] == {"message": f"odd key {REDACTED}"}
    assert decoded[3] == {"header": f"Bearer {REDACTED}\\en", "n": 12345678}
    for text in (KEY, quoted, json.dumps(quoted)[1:-1]):
        assert text not in out.getvalue()
