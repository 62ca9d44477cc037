"""A stop signal ends the run within seconds, with its STATE written and a non-zero code,
even while requests wait on the rate budget or on a retry; the next run loses nothing."""

from __future__ import annotations

import signal
import time

import pytest

from tests.tap_harness import parse_messages, run_tap, spawn_tap
from tests.truth import config_for, expected_resolved, started, thread_ids

STOP_WITHIN_SECONDS = 10


def _conversations_written(path) -> int:
    text = path.read_text() if path.exists() else ""
    return text.count('"stream":"conversations"') + text.count('"stream": "conversations"')


def _wait_until_quiet(sandbox, seconds: float, deadline: float) -> None:
    """Wait until the tap has sent no request for ``seconds`` (it is waiting)."""
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sandbox.stats()["total_requests"]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.1)
    pytest.fail("the tap never started waiting")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("waiting_on", ["rate budget", "retry"])
def test_a_stop_signal_ends_the_run_within_seconds_and_loses_nothing(tmp_path, sig, waiting_on):
    sandbox = started(seed=5, customers=50, conversations=400)
    try:
        config = config_for(
            sandbox,
            thread_strategy="per_conversation",
            max_workers=4,
            # The first 50 threads fit in the first minute, the next ones must wait.
            max_requests_per_minute=120 if waiting_on == "rate budget" else None,
            backoff_base_seconds=30.0 if waiting_on == "retry" else 0.01,
        )
        config = {k: v for k, v in config.items() if v is not None}
        out = tmp_path / "out.jsonl"
        with out.open("w") as handle:
            process = spawn_tap(config, tmp_path, handle)
            try:
                deadline = time.monotonic() + 90
                while _conversations_written(out) < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert _conversations_written(out) >= 1, "no conversation was written"
                if waiting_on == "retry":
                    sandbox.options.fault_5xx_rate = 1.0
                _wait_until_quiet(sandbox, 1.5, deadline)
                sent = time.monotonic()
                process.send_signal(sig)
                process.wait(timeout=60)
                took = time.monotonic() - sent
            finally:
                if process.poll() is None:
                    process.kill()
        assert took < STOP_WITHIN_SECONDS, f"stopping took {took:.1f} s"
        assert process.returncode == 128 + sig
        first = parse_messages(out.read_text())
        states = [m["value"] for m in first if m["type"] == "STATE"]
        assert states, "no STATE was written"
        emitted = {
            m["record"]["id"]
            for m in first
            if m["type"] == "RECORD" and m["stream"] == "conversations"
        }
        sandbox.options.fault_5xx_rate = 0.0
        resumed = run_tap(config_for(sandbox), state=states[-1])
        expected = expected_resolved(sandbox)
        assert emitted < expected, "the run must have been stopped mid-way"
        assert expected <= emitted | resumed.ids("conversations")
        messages, notes = thread_ids(sandbox, resumed.ids("conversations"))
        assert resumed.ids("messages") == messages
        assert resumed.ids("notes") == notes
    finally:
        sandbox.stop()
