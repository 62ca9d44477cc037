"""Seconds from a stop signal to the tap's exit, and the requests of a dry run (``--test``).

Usage::

    python -m benchmarks.stop_latency [--repeat 3]

For each signal (SIGTERM, SIGINT) and each thing the tap can be waiting on (the rate
budget: 120 requests a minute with per-conversation threads; a retry: every answer a
500 with 30 s backoff), it starts ``tap-kustomer`` against a local sandbox, waits until
a conversation is written and the tap has gone quiet (waiting), sends the signal, and
prints the seconds until the process exited with its exit code. Then it runs ``--test``
against a 3,000-conversation sandbox and prints the requests it made.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tap_harness import run_cli, spawn_tap
from tests.truth import config_for, started


def _written(path: Path) -> int:
    return path.read_text().count('"stream":"conversations"') if path.exists() else 0


def stop_once(sig: int, waiting_on: str, workdir: Path) -> tuple[float, int]:
    """Seconds from ``sig`` to exit, and the exit code, for one run."""
    sandbox = started(seed=5, customers=50, conversations=400)
    try:
        config = config_for(sandbox, thread_strategy="per_conversation", max_workers=4)
        if waiting_on == "rate budget":
            config["max_requests_per_minute"] = 120
        else:
            config["backoff_base_seconds"] = 30.0
        out = workdir / "out.jsonl"
        with out.open("w") as handle:
            process = spawn_tap(config, workdir, handle)
            deadline = time.monotonic() + 120
            while _written(out) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            if waiting_on == "retry":
                sandbox.options.fault_5xx_rate = 1.0
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline:
                count = sandbox.stats()["total_requests"]
                if count != last:
                    last, since = count, time.monotonic()
                elif time.monotonic() - since >= 1.5:
                    break
                time.sleep(0.1)
            sent = time.monotonic()
            process.send_signal(sig)
            process.wait(timeout=300)
            return time.monotonic() - sent, process.returncode
    finally:
        sandbox.stop()


def dry_run_requests(workdir: Path) -> int:
    """Requests ``tap-kustomer --test`` makes against a 3,000-conversation org."""
    sandbox = started(seed=3, customers=600, conversations=3000)
    try:
        sandbox.reset_stats()
        run = run_cli(["--test"], config=config_for(sandbox), tmp_path=workdir)
        if run.returncode != 0:
            raise SystemExit(run.stderr)
        return int(sandbox.stats()["total_requests"])
    finally:
        sandbox.stop()


def main() -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("signal   waiting on    seconds to exit (each run)   exit code")
    with tempfile.TemporaryDirectory() as tmp:
        for sig in (signal.SIGTERM, signal.SIGINT):
            for waiting_on in ("rate budget", "retry"):
                runs = [stop_once(sig, waiting_on, Path(tmp)) for _ in range(args.repeat)]
                seconds = " ".join(f"{took:.2f}" for took, _ in runs)
                codes = sorted({code for _, code in runs})
                print(f"{signal.Signals(sig).name:<8} {waiting_on:<13} {seconds:<28} {codes}")
        print(f"--test requests (3,000 conversations): {dry_run_requests(Path(tmp))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
