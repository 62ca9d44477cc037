"""Searches and 429s per minute under both rate-limit header conventions (simulated).

Usage::

    python -m benchmarks.rate_conventions [--minutes 10] [--share 0.8] [--latency 0.01]
        [--budget-file PATH]

Kustomer does not document which budget a successful search's ``x-ratelimit-*``
headers describe, nor whether a 429 carries ``x-ratelimit-limit``. This runs the tap's
request budget against ``benchmarks/rate_model.py`` for each combination, with
continuous search demand on a fake clock (no real waiting, no network), and prints the
429s and the searches accepted in each search window, and the searches per window once
the budget has settled (from the second window on), for windows aligned on minutes and
for windows opened by the first request (as the sandbox's). ``--budget-file`` loads
another ``budget.py`` (for instance ``git show HEAD:tap_kustomer/budget.py`` saved to a
file) to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import typing as t
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rate_model import (
    CONVENTIONS,
    WINDOW_MODES,
    SimClock,
    SimulatedKustomer,
    run_searches,
)

ORG_LIMIT = 1000
SEARCH_LIMITS = (10, 100)
SETTLED_FROM = 1  # window 0 shows the learning


def load_budget_module(path: str | None) -> ModuleType:
    """The tap's budget module, or the one at ``path`` for a before/after comparison."""
    if path is None:
        from tap_kustomer import budget

        return budget
    spec = importlib.util.spec_from_file_location("compared_budget", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def make_budget(module: ModuleType, clock: SimClock, share: float) -> t.Any:
    """A RequestBudget on the fake clock, built the same way for old and new modules.

    Older modules take no clock, so their two RateBudgets are replaced by clocked ones.
    """
    budget = module.RequestBudget(share=share, sleep=clock.sleep)
    for name, limit in (("org", 300), ("search", 100)):
        setattr(
            budget,
            name,
            module.RateBudget(
                name,
                default_limit=limit,
                share=share,
                clock=clock.monotonic,
                wall_clock=clock.wall,
                sleep=clock.sleep,
            ),
        )
    return budget


def run_case(
    module: ModuleType,
    *,
    search_limit: int,
    convention: str,
    limit_on_429: bool,
    windows: str,
    minutes: int,
    share: float,
    latency: float,
) -> list[tuple[int, int]]:
    """(searches, 429s) in each of the first ``minutes`` search windows."""
    clock = SimClock()
    server = SimulatedKustomer(
        clock,
        org_limit=ORG_LIMIT,
        search_limit=search_limit,
        convention=convention,
        limit_on_429=limit_on_429,
        windows=windows,
    )
    budget = make_budget(module, clock, share)
    run_searches(budget, server, clock, minutes=minutes + 0.5, latency=latency)
    return server.per_window(minutes)


def main(argv: list[str] | None = None) -> int:
    """Print one line per search limit, header convention and 429 variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="server windows to report")
    parser.add_argument("--share", type=float, default=0.8, help="rate_limit_share_percent/100")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per answer")
    parser.add_argument("--budget-file", help="another budget.py to measure instead")
    args = parser.parse_args(argv)
    module = load_budget_module(args.budget_file)
    print(f"budget: {module.__file__}")
    print(
        f"org limit {ORG_LIMIT}/min, share {args.share}, {args.latency} s per answer; "
        f"'settled' = searches per window from window {SETTLED_FROM} on"
    )
    for windows in WINDOW_MODES:
        print(f"\nwindows: {windows}")
        print(
            f"{'search/min':>10}  {'convention':<10} {'429 limit':<9}  "
            f"{'429s per window':<21} {'searches per window':<40} settled"
        )
        for search_limit in SEARCH_LIMITS:
            for convention in CONVENTIONS:
                for limit_on_429 in (True, False):
                    per_window = run_case(
                        module,
                        search_limit=search_limit,
                        convention=convention,
                        limit_on_429=limit_on_429,
                        windows=windows,
                        minutes=args.minutes,
                        share=args.share,
                        latency=args.latency,
                    )
                    refused = " ".join(str(r) for _, r in per_window)
                    searches = " ".join(str(n) for n, _ in per_window)
                    later = {n for n, _ in per_window[SETTLED_FROM:]}
                    settled = "/".join(str(n) for n in sorted(later))
                    print(
                        f"{search_limit:>10}  {convention:<10} "
                        f"{'yes' if limit_on_429 else 'no':<9}  "
                        f"{refused:<21} {searches:<40} {settled:>7}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
