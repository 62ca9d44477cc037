"""What attachments and conversation events add to a run's requests.

Usage::

    python -m benchmarks.thread_children [--sizes 2000,10000] [--attachment-share 0.15]
        [--hours 4] [--seed 5]

For each size one in-process sandbox org serves six backfills: the core five streams
("default") alone and with ``attachments``, ``conversation_events`` or both added, and
every stream selected by default ("tap default", fifteen streams) alone and with both,
then the same six incremental runs after ``--hours`` of simulated activity. Requests come from
the sandbox's counters (reset before each run), by route; the ratio is the run's
requests over the default selection's. Both children are listed per conversation
(search cannot find them), so they are not selected by default when they would more
than double a backfill's requests.
"""

from __future__ import annotations

import argparse
import sys
import time
import typing as t

from tap_kustomer.tap import STREAM_TYPES
from tests.tap_harness import run_tap
from tests.truth import config_for, settle, started

DEFAULT = ("conversations", "messages", "notes", "customers", "tags")
#: Every stream selected by default (the five above, companies, kobjects, the reference lists).
TAP_DEFAULT = tuple(stream.name for stream in STREAM_TYPES if stream.selected_by_default)
SELECTIONS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT,
    "+attachments": (*DEFAULT, "attachments"),
    "+conversation_events": (*DEFAULT, "conversation_events"),
    "+both": (*DEFAULT, "attachments", "conversation_events"),
    "tap default": TAP_DEFAULT,
    "tap default+both": (*TAP_DEFAULT, "attachments", "conversation_events"),
}
CHILD_ROUTES = {
    "attachments": "GET /v1/conversations/{id}/attachments",
    "conversation_events": "GET /v1/conversations/{id}/events",
}


def measure(sandbox: t.Any, states: dict[str, t.Any] | None) -> dict[str, dict[str, t.Any]]:
    """One run per selection (from its own state when given); figures by selection."""
    figures: dict[str, dict[str, t.Any]] = {}
    for label, streams in SELECTIONS.items():
        sandbox.reset_stats()
        began = time.perf_counter()
        state = states[label] if states else None
        run = run_tap(config_for(sandbox), state=state, select=streams)
        stats = sandbox.stats()
        routes = {route: sum(codes.values()) for route, codes in stats["by_route"].items()}
        figures[label] = {
            "requests": stats["total_requests"],
            "conversations": len(run.ids("conversations")),
            "attachments": len(run.records("attachments")),
            "events": len(run.records("conversation_events")),
            "attachment_lists": routes.get(CHILD_ROUTES["attachments"], 0),
            "event_lists": routes.get(CHILD_ROUTES["conversation_events"], 0),
            "seconds": time.perf_counter() - began,
            "state": run.final_state,
        }
    return figures


def report(size: int, phase: str, figures: dict[str, dict[str, t.Any]]) -> None:
    """One table: requests per selection, and the ratio to the default selection."""
    base = figures["default"]["requests"] or 1
    conversations = figures["default"]["conversations"] or 1
    print(f"\n{size:,} conversations, {phase}")
    print(
        f"{'selection':<22}{'requests':>9}{'x default':>10}{'req/conv':>9}"
        f"{'attachment lists':>18}{'event lists':>12}{'attachments':>12}{'events':>8}"
    )
    for label, row in figures.items():
        print(
            f"{label:<22}{row['requests']:>9,}{row['requests'] / base:>10.2f}"
            f"{row['requests'] / conversations:>9.2f}{row['attachment_lists']:>18,}"
            f"{row['event_lists']:>12,}{row['attachments']:>12,}{row['events']:>8,}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the backfills and incrementals for each size and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--attachment-share", type=float, default=0.15)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        sandbox = started(
            seed=args.seed,
            conversations=size,
            customers=max(size // 5, 10),
            org_rpm=1_000_000,
            search_rpm=1_000_000,
            attachment_share=args.attachment_share,
        )
        try:
            backfill = measure(sandbox, None)
            report(size, "backfill", backfill)
            sandbox.simulate_activity(hours=args.hours)
            settle(sandbox)
            states = {label: row["state"] for label, row in backfill.items()}
            report(size, f"incremental after {args.hours:g} h", measure(sandbox, states))
        finally:
            sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
