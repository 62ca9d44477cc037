"""Requests per conversation of targeted runs (the conversations a webhook queue names).

Usage::

    python -m benchmarks.targeted [--org 3000] [--sizes 10,100,1000] [--seed 7]
        [--batch-size 50]

One in-process sandbox org of ``--org`` conversations; for each size, that many
resolved conversations, spread evenly over the org's history, are queued directly
(one event each, as the webhook receiver writes them) in a fresh SQLite queue, and one
targeted run reads them with the default selection. Requests come from the sandbox's
counters (reset before each run), by route.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import typing as t
from datetime import datetime, timedelta
from pathlib import Path

from tap_kustomer.webhooks.queue import QueuedEvent, open_queue
from tests.tap_harness import run_tap
from tests.truth import config_for, started


def resolution_times(sandbox: t.Any) -> dict[str, datetime]:
    """Each resolved conversation's last resolution time."""
    return {
        c["id"]: datetime.fromisoformat(
            c["attributes"]["lastDone"]["createdAt"].replace("Z", "+00:00")
        )
        for c in sandbox.truth(["conversations"])["conversations"]
        if (c["attributes"].get("lastDone") or {}).get("createdAt")
    }


def queue_ids(url: str, ids: t.Sequence[str], resolved: dict[str, datetime]) -> None:
    """One conversation update event per id, arriving as the webhook of its resolution."""
    queue = open_queue(url)
    try:
        queue.enqueue(
            [
                QueuedEvent(
                    event_id=f"bench-{n}",
                    event_name="kustomer.conversation.update",
                    conversation_id=cid,
                    received_at=resolved[cid] + timedelta(seconds=30),
                )
                for n, cid in enumerate(ids)
            ]
        )
    finally:
        queue.close()


def scattered(ids: t.Sequence[str], count: int) -> list[str]:
    """``count`` ids spread evenly over ``ids`` (the org's history, oldest first)."""
    count = min(count, len(ids))
    step = len(ids) / count
    return [ids[int(i * step)] for i in range(count)]


def measure(
    sandbox: t.Any, ids: list[str], batch_size: int, workdir: Path, strategy: str = "auto"
) -> dict[str, t.Any]:
    """One targeted run over ``ids``; its requests by route."""
    url = f"sqlite:///{workdir / f'queue-{len(ids)}.db'}"
    queue_ids(url, ids, resolution_times(sandbox))
    sandbox.reset_stats()
    began = time.perf_counter()
    config = config_for(
        sandbox, webhook_queue=url, webhook_batch_size=batch_size, thread_strategy=strategy
    )
    run = run_tap(config)
    seconds = time.perf_counter() - began
    stats = sandbox.stats()
    return {
        "emitted": len(run.ids("conversations")),
        "messages": len(run.records("messages")),
        "notes": len(run.records("notes")),
        "requests": stats["total_requests"],
        "routes": {route: sum(codes.values()) for route, codes in stats["by_route"].items()},
        "seconds": seconds,
    }


def report(queued: int, row: dict[str, t.Any]) -> None:
    """One block: totals, then requests by route."""
    per = row["requests"] / max(1, row["emitted"])
    print(
        f"\n{queued:,} queued: {row['emitted']:,} conversations emitted "
        f"({row['messages']:,} messages, {row['notes']:,} notes), "
        f"{row['requests']:,} requests, {per:.2f} requests/conversation, {row['seconds']:.1f} s"
    )
    for route, count in sorted(row["routes"].items(), key=lambda item: -item[1]):
        print(f"  {route:<45}{count:>7,}{count / max(1, row['emitted']):>8.2f}/conv")


def main(argv: list[str] | None = None) -> int:
    """Build the org, then one targeted run per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--org", type=int, default=3000)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--thread-strategy",
        default="auto",
        choices=["auto", "per_conversation", "batched", "bulk"],
        help="the tap's thread_strategy (auto: threads searched by ids)",
    )
    args = parser.parse_args(argv)
    sandbox = started(
        seed=args.seed,
        conversations=args.org,
        customers=max(args.org // 5, 10),
        org_rpm=1_000_000,
        search_rpm=1_000_000,
    )
    try:
        done = sandbox.resolved_conversation_ids()
        print(
            f"Org: {args.org:,} conversations, {len(done):,} resolved; "
            f"webhook_batch_size {args.batch_size}"
        )
        with tempfile.TemporaryDirectory(prefix="targeted-bench-") as workdir:
            for size in (int(s) for s in args.sizes.split(",") if s.strip()):
                ids = scattered(done, size)
                row = measure(sandbox, ids, args.batch_size, Path(workdir), args.thread_strategy)
                report(size, row)
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
