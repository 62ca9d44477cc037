"""Command line: ``python -m tests.sandbox --port 0 --seed 7 --api-key KEY``.

The first stdout line is the base URL (flushed at once) so a parent process can
read it; the server then runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from types import FrameType

from .app import Sandbox
from .options import KeySpec, SandboxOptions

_SKIP = {"tie_clusters", "extra_keys", "fault_routes", "now", "webhook_retry_delays"}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text}")


def _tie(text: str) -> tuple[str, int]:
    kind, _, size = text.rpartition(":")
    try:
        return (kind or "resolve"), int(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected KIND:SIZE or SIZE") from exc


def _delays(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected seconds separated by commas") from exc


def build_parser() -> argparse.ArgumentParser:
    """One flag per simple SandboxOptions field, plus structured ones."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.sandbox", description="Local Kustomer API emulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--now", help="ISO anchor of the sandbox clock (default: now, floored)")
    defaults = SandboxOptions(now="2000-01-01T00:00:00.000Z")
    for f in dataclasses.fields(SandboxOptions):
        if f.name in _SKIP:
            continue
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=_bool, default=value, metavar="BOOL")
        elif isinstance(value, (int, float, str)):
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument(
        "--tie-cluster",
        action="append",
        type=_tie,
        default=[],
        metavar="KIND:SIZE",
        help="repeatable; KIND is resolve|import|customers; bare SIZE = resolve",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        help="shorthand: total fault probability, split evenly over the four fault kinds "
        "(5xx, 502 html, reset, truncated)",
    )
    parser.add_argument(
        "--webhook-retry-delays",
        type=_delays,
        default=None,
        metavar="S1,S2,...",
        help="seconds before each webhook delivery retry (default 0.05,0.1,0.2,0.5)",
    )
    parser.add_argument(
        "--fault-route",
        action="append",
        default=None,
        help="limit faults to routes containing this text (repeatable)",
    )
    parser.add_argument(
        "--expired-key",
        action="append",
        default=[],
        help="an extra key that answers 401 Expired token",
    )
    parser.add_argument(
        "--limited-key",
        action="append",
        default=[],
        metavar="KEY:RES1,RES2[:STATUS]",
        help="an extra key lacking the read roles of the resources",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> SandboxOptions:
    """Map parsed flags onto SandboxOptions."""
    kwargs = {}
    for f in dataclasses.fields(SandboxOptions):
        if f.name not in _SKIP and hasattr(args, f.name):
            kwargs[f.name] = getattr(args, f.name)
    opts = SandboxOptions(**kwargs)
    if args.now:
        opts.now = args.now
    opts.tie_clusters = list(args.tie_cluster)
    opts.fault_routes = args.fault_route
    if args.webhook_retry_delays is not None:
        opts.webhook_retry_delays = args.webhook_retry_delays
    if args.fault_rate is not None:
        share = args.fault_rate / 4
        opts.fault_5xx_rate = opts.fault_502_html_rate = share
        opts.fault_reset_rate = opts.fault_truncated_rate = share
    for key in args.expired_key:
        opts.extra_keys[key] = KeySpec.expired_key()
    for spec in args.limited_key:
        parts = spec.split(":")
        if len(parts) < 2:
            raise SystemExit(f"--limited-key needs KEY:RESOURCES, got {spec!r}")
        status = int(parts[2]) if len(parts) > 2 else 403
        opts.extra_keys[parts[0]] = KeySpec.without(*parts[1].split(","), denial_status=status)
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until a signal arrives."""
    args = build_parser().parse_args(argv)
    sandbox = Sandbox(options_from_args(args))
    base_url = sandbox.start(args.host, args.port)
    sys.stdout.write(base_url + "\n")
    sys.stdout.flush()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
