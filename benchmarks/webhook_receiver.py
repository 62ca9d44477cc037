"""Latency of the webhook receiver: signed deliveries answered after the queue committed them.

Usage::

    python -m benchmarks.webhook_receiver [--requests 500] [--concurrency 1]
        [--queue sqlite:///... | postgresql://...] [--body-bytes 4000]

It starts ``tap-kustomer-webhooks serve`` (uvicorn, as in production) on a free
loopback port with a fresh SQLite queue in a temporary directory (or ``--queue``),
sends 20 warm-up deliveries, then ``--requests`` signed conversation and message
events (each a new event id, spread over 100 conversations) from ``--concurrency``
threads with keep-alive connections, and prints the latency percentiles measured
by the client, from sending the request to reading the whole answer. Every answer
must be 202. The queue commits each delivery with ``synchronous=FULL``, so the
figures include one fsync per delivery on this machine's disk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from tap_kustomer.webhooks.signature import SIGNATURE_HEADER, sign
from tests.postgres import free_port

TOKEN = "benchmark-webhook-token-0123456789"  # noqa: S105 - a made-up token for the run
PATH = "/kustomer/webhook"
SCRIPT = Path(sys.executable).with_name("tap-kustomer-webhooks")


def event_body(n: int, body_bytes: int, run: str) -> bytes:
    """A delivery shaped like Kustomer's, padded to about ``body_bytes``; ids unique per run."""
    conversation = f"{n % 100:024x}"
    if n % 3:
        data = {"type": "conversation", "id": conversation, "attributes": {"status": "open"}}
        name = "kustomer.conversation.update"
    else:
        data = {
            "type": "message",
            "id": f"{n:024x}",
            "attributes": {"channel": "email"},
            "relationships": {
                "conversation": {"data": {"type": "conversation", "id": conversation}}
            },
        }
        name = "kustomer.message.create"
    event = {"id": f"{run}-{n}", "name": name, "org": "5f3c0a7e91d40b0900000000", "data": data}
    padding = max(0, body_bytes - len(json.dumps(event)))
    event["data"]["attributes"]["preview"] = "x" * padding  # type: ignore[index]
    return json.dumps(event).encode()


def start(queue_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """The receiver, as ``tap-kustomer-webhooks serve``; returns once /healthz answers."""
    env = {**os.environ, "KUSTOMER_WEBHOOK_TOKEN": TOKEN}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [str(SCRIPT), "serve", "--queue", queue_url, "--port", str(port)],
            env=env,
            stdout=handle,
            stderr=handle,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the receiver exited:\n{log.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the receiver did not start within 60 s")


def send(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """Post every body; return each delivery's latency in seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(mine: list[bytes]) -> None:
        with requests.Session() as session:
            session.trust_env = False
            for body in mine:
                headers = {SIGNATURE_HEADER: sign(TOKEN, body), "Content-Type": "application/json"}
                began = time.perf_counter()
                answer = session.post(url, data=body, headers=headers, timeout=30)
                elapsed = time.perf_counter() - began
                if answer.status_code != 202:
                    raise SystemExit(f"unexpected answer {answer.status_code}: {answer.text}")
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--body-bytes", type=int, default=4000)
    parser.add_argument("--queue", help="queue URL (default: a new SQLite file)")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:12]  # event ids of this run: new even in a PostgreSQL queue reused
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as workdir:
        queue_url = args.queue or f"sqlite:///{Path(workdir) / 'queue.db'}"
        port = free_port()
        log = Path(workdir) / "serve.log"
        process = start(queue_url, port, log)
        try:
            url = f"http://127.0.0.1:{port}{PATH}"
            send(url, [event_body(-n - 1, args.body_bytes, run) for n in range(20)], 1)  # warm-up
            bodies = [event_body(n, args.body_bytes, run) for n in range(args.requests)]
            began = time.perf_counter()
            latencies = send(url, bodies, args.concurrency)
            wall = time.perf_counter() - began
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    ms = [value * 1000 for value in latencies]
    figures = {
        "queue": "sqlite" if args.queue is None else args.queue.split(":", 1)[0],
        "requests": len(ms),
        "concurrency": args.concurrency,
        "body_bytes": len(bodies[0]),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "deliveries_per_second": round(len(ms) / wall, 1),
        "enqueued": health["counters"]["enqueued"],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
