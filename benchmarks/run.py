"""Benchmark tap-kustomer against the sandbox API: requests, rate-limit use, CPU and memory.

Usage::

    python -m benchmarks.run [--sizes 1000,10000] [--strategies auto,per_conversation]
        [--workers 4] [--one-worker] [--latency-ms 60 --jitter-ms 10]
        [--org-rpm 1000 --search-rpm 100] [--share 100] [--no-legacy] [--seed 1] [--hours 4]

For each size (number of conversations) one sandbox process serves every run:

1. the backfills (our tap, once per strategy; then the older singer-io tap), all
   against the same, unchanged data;
2. the sandbox then simulates ``--hours`` of activity and its clock is moved past
   the tap's index lag;
3. the incremental runs, each from the final STATE of its own backfill, plus a
   ``per_conversation`` run from the state of every other strategy's backfill, to
   compare what the per-conversation plan would have cost.

Requests, 429s and the busiest 60 s windows come from the sandbox's counters
(reset before every run); CPU time and peak RSS from ``os.wait4`` on the tap's
process. Singer output goes to files that are read line by line. Figures are
printed as tables and written to ``benchmarks/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
API_KEY = "benchmark-key"
START_DATE = "2000-01-01T00:00:00Z"
STREAMS = ("conversations", "messages", "notes", "customers", "tags")
SEARCH_ROUTE = "POST /v1/customers/search"
#: the tap's own index lag (its default), which the clock is advanced past
INDEX_LAG_MINUTES = 15
STRATEGIES = ("auto", "per_conversation", "bulk")

SUMMARY_RE = re.compile(
    r"Conversations: (?P<search>\d+) search requests \((?P<ties>\d+) tie groups\); "
    r"threads of (?P<conversations>\d+) conversations: (?P<requests>\d+) requests "
    r"\((?P<bulk_searches>\d+) bulk searches\), (?P<bulk_threads>\d+) threads read in bulk, "
    r"(?P<single_threads>\d+) one by one"
)


class BenchmarkError(RuntimeError):
    """A run could not be carried out (the message says why)."""


# --------------------------------------------------------------------------------------
# sandbox process


class SandboxProcess:
    """The sandbox API as a child process, with its control endpoints."""

    def __init__(self, args: argparse.Namespace, size: int, work: Path) -> None:
        jitter = max(0.0, float(args.jitter_ms))
        # the sandbox adds uniform(0, jitter) to its latency: centre it on --latency-ms
        base = max(0.0, float(args.latency_ms) - jitter)
        self.cmd = [
            sys.executable, "-m", "tests.sandbox",
            "--port", "0",
            "--seed", str(args.seed),
            "--api-key", API_KEY,
            "--conversations", str(size),
            "--customers", str(max(20, size // 5)),
            "--latency-ms", str(base),
            "--latency-jitter-ms", str(2 * jitter),
            "--org-rpm", str(args.org_rpm),
            "--search-rpm", str(args.search_rpm),
        ]  # fmt: skip
        self.log_path = work / f"sandbox-{size}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int:
        """The sandbox's process id."""
        return self.proc.pid if self.proc else 0

    def start(self, timeout: float) -> str:
        """Start it and wait for the base URL on its first stdout line."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchmarkError(f"the sandbox did not start within {timeout:.0f} s:\n{tail}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        self.base_url = line.decode().splitlines()[0].strip()
        return self.base_url

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)

    def _call(self, method: str, name: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(  # noqa: S310 - a loopback URL we started
            f"{self.base_url}/__control/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The request counters since the last reset."""
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._call("POST", "reset_stats", {})

    def simulate_activity(self, hours: float, seed: int) -> dict[str, Any]:
        """A few hours of activity (the sandbox clock moves by ``hours``)."""
        return self._call("POST", "simulate_activity", {"hours": hours, "seed": seed})

    def advance_clock(self, seconds: float) -> str:
        """Move the sandbox clock forward."""
        return str(self._call("POST", "advance_clock", {"seconds": seconds})["now"])


# --------------------------------------------------------------------------------------
# one measured run


@dataclass
class RunResult:
    """The figures of one tap run."""

    label: str
    phase: str  # backfill | incremental
    tap: str  # ours | legacy
    strategy: str = ""
    workers: int = 0
    from_state_of: str = ""
    returncode: int = 0
    timed_out: bool = False
    error: str = ""
    wall_s: float = 0.0
    requests: int = 0
    search_requests: int = 0
    other_requests: int = 0
    rate_limited: int = 0
    rate_limited_search: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    peak_60s_org: int = 0
    peak_60s_search: int = 0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    max_rss_mb: float = 0.0
    records: dict[str, int] = field(default_factory=dict)
    tap_summary: dict[str, int] = field(default_factory=dict)
    derived: dict[str, float | None] = field(default_factory=dict)

    @property
    def record_total(self) -> int:
        """Records of all streams."""
        return sum(self.records.values())

    @property
    def ok(self) -> bool:
        """Whether the run finished with exit code 0."""
        return self.returncode == 0 and not self.timed_out

    def derive(self, org_rpm: float, search_rpm: float) -> None:
        """Per-conversation, per-record, per-minute and utilisation figures."""
        minutes = self.wall_s / 60 if self.wall_s > 0 else None
        accepted = self.requests - self.rate_limited
        accepted_search = self.search_requests - self.rate_limited_search
        conversations = self.records.get("conversations", 0)
        cpu = self.cpu_user_s + self.cpu_sys_s
        rpm = accepted / minutes if minutes else None
        search_rpm_achieved = accepted_search / minutes if minutes else None
        # a run shorter than a minute can use at most one minute's budget
        budget_minutes = max(minutes or 0.0, 1.0)
        self.derived = {
            "requests_per_conversation": self.requests / conversations if conversations else None,
            "requests_per_record": self.requests / self.record_total if self.record_total else None,
            "rpm": rpm,
            "search_rpm": search_rpm_achieved,
            "org_utilisation_pct": 100 * accepted / (org_rpm * budget_minutes),
            "search_utilisation_pct": 100 * accepted_search / (search_rpm * budget_minutes),
            "peak_60s_org_pct": 100 * self.peak_60s_org / org_rpm,
            "peak_60s_search_pct": 100 * self.peak_60s_search / search_rpm,
            "cpu_s": cpu,
            "cpu_s_per_1k_records": 1000 * cpu / self.record_total if self.record_total else None,
        }


def run_measured(
    cmd: list[str],
    stdout_path: Path,
    stderr_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> tuple[int, bool, float, Any]:
    """Run ``cmd`` to completion; returns (exit code, timed out, wall s, rusage)."""
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
        timed_out = False
        reaped = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = True
                    break
                if time.monotonic() - started > timeout:
                    timed_out = True
                    proc.kill()
                    _pid, status, usage = os.wait4(proc.pid, 0)
                    reaped = True
                    break
                time.sleep(0.05)
        finally:
            if not reaped:
                proc.kill()
                os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped here, so Popen must not wait for it again
    return code, timed_out, wall, usage


def scan_output(path: Path) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Records per stream and the last STATE, reading the Singer output line by line."""
    counts: dict[str, int] = {}
    last_state: bytes | None = None
    with path.open("rb") as handle:
        for line in handle:
            head = line[:64]
            if b"RECORD" in head:
                try:
                    stream = json.loads(line)["stream"]
                except (ValueError, KeyError):
                    continue  # a cut-off last line of a killed run
                counts[stream] = counts.get(stream, 0) + 1
            elif b"STATE" in head:
                last_state = line
    state = None
    if last_state is not None:
        with contextlib.suppress(ValueError, KeyError):
            state = json.loads(last_state)["value"]
    return counts, state


def fill_from_stats(result: RunResult, stats: dict[str, Any]) -> None:
    """Request counts of the run from the sandbox's counters."""
    result.requests = int(stats["total_requests"])
    search = stats["by_route"].get(SEARCH_ROUTE, {})
    result.search_requests = sum(int(n) for n in search.values())
    result.other_requests = result.requests - result.search_requests
    result.rate_limited = int(stats["rate_limited"])
    result.rate_limited_search = int(search.get("429", 0))
    result.by_status = {k: int(v) for k, v in stats["by_status"].items()}
    result.peak_60s_org = int(stats["max_accepted_in_60s"]["org"])
    result.peak_60s_search = int(stats["max_accepted_in_60s"]["search"])


def fill_from_process(
    result: RunResult, code: int, timed_out: bool, wall: float, usage: Any, stderr: Path
) -> None:
    """Exit code, wall time, CPU and memory of the finished process."""
    result.returncode = code
    result.timed_out = timed_out
    result.wall_s = wall
    result.cpu_user_s = float(usage.ru_utime)
    result.cpu_sys_s = float(usage.ru_stime)
    result.max_rss_mb = float(usage.ru_maxrss) / 1024.0  # KiB on Linux
    if timed_out:
        result.error = "timed out"
    elif code != 0:
        lines = [x for x in stderr.read_text(errors="replace").splitlines() if x.strip()]
        result.error = lines[-1][:300] if lines else f"exit code {code}"


def tap_executable() -> list[str]:
    """Our tap as a program: the venv's console script, else ``python -m tap_kustomer``."""
    script = Path(sys.executable).with_name("tap-kustomer")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tap_kustomer"]


def selected_catalog(config_path: Path) -> dict[str, Any]:
    """Our discovered catalog with only :data:`STREAMS` selected, the older tap's set.

    Both taps then read the same five streams, so their requests compare; the reference
    streams our tap selects by default are left out.
    """
    discovered = subprocess.run(
        [*tap_executable(), "--config", str(config_path), "--discover"],
        check=True,
        capture_output=True,
        text=True,
    )
    catalog: dict[str, Any] = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in STREAMS
    return catalog


@dataclass
class TapConfig:
    """One configuration of our tap under test."""

    label: str
    strategy: str
    workers: int


def run_ours(
    sb: SandboxProcess,
    conf: TapConfig,
    phase: str,
    work: Path,
    args: argparse.Namespace,
    state: dict[str, Any] | None,
    from_state_of: str = "",
) -> tuple[RunResult, dict[str, Any] | None]:
    """One run of our tap; returns its figures and its final STATE."""
    label = conf.label if not from_state_of else f"{conf.label} (state of {from_state_of})"
    stem = re.sub(r"[^a-z0-9]+", "-", f"{phase}-{label}".lower()).strip("-")
    config = {
        "api_key": API_KEY,
        "api_url": sb.base_url,
        "start_date": START_DATE,
        # an integer when it is one: the setting may be declared as an integer
        "rate_limit_share_percent": int(args.share) if args.share.is_integer() else args.share,
        "max_workers": conf.workers,
        "thread_strategy": conf.strategy,
    }
    config_path = work / f"{stem}.config.json"
    config_path.write_text(json.dumps(config))
    catalog_path = work / f"{stem}.catalog.json"
    catalog_path.write_text(json.dumps(selected_catalog(config_path)))
    cmd = [*tap_executable(), "--config", str(config_path), "--catalog", str(catalog_path)]
    if state is not None:
        state_path = work / f"{stem}.state.json"
        state_path.write_text(json.dumps(state))
        cmd += ["--state", str(state_path)]
    out_path, err_path = work / f"{stem}.jsonl", work / f"{stem}.log"
    result = RunResult(
        label=label,
        phase=phase,
        tap="ours",
        strategy=conf.strategy,
        workers=conf.workers,
        from_state_of=from_state_of,
    )
    progress(f"  {phase:<11} ours   {label} ...")
    sb.reset_stats()
    code, timed_out, wall, usage = run_measured(cmd, out_path, err_path, args.timeout)
    fill_from_stats(result, sb.stats())
    fill_from_process(result, code, timed_out, wall, usage, err_path)
    result.records, final_state = scan_output(out_path)
    with err_path.open(errors="replace") as log:
        for line in log:
            match = SUMMARY_RE.search(line)
            if match:
                result.tap_summary = {k: int(v) for k, v in match.groupdict().items()}
    result.derive(args.org_rpm, args.search_rpm)
    progress(f"    {describe(result)}")
    return result, final_state


# --------------------------------------------------------------------------------------
# the older singer-io tap


class Legacy:
    """The singer-io tap-kustomer 1.1.0, run in its own venv with its host redirected."""

    def __init__(self) -> None:
        self.python: Path | None = None
        self.problem = ""

    def prepare(self) -> bool:
        """Build (or find) its venv; False with ``problem`` set when that fails."""
        try:
            from tests.legacy_tap import ensure_venv

            self.python = ensure_venv()
        except Exception as exc:  # any failure means: skip the legacy part
            first = " ".join(str(exc).split())[:300]
            self.problem = f"{type(exc).__name__}: {first}"
            return False
        return True

    def run(
        self,
        sb: SandboxProcess,
        phase: str,
        work: Path,
        args: argparse.Namespace,
        state: dict[str, Any] | None,
    ) -> tuple[RunResult, dict[str, Any] | None]:
        """One run (sync mode) of the legacy tap, measured like ours."""
        from tests.legacy_tap import RUNNER, make_catalog

        assert self.python is not None
        stem = f"{phase}-legacy"
        config = {"api_token": API_KEY, "start_date": START_DATE, "user_agent": "benchmark"}
        config_path = work / f"{stem}.config.json"
        config_path.write_text(json.dumps(config))
        catalog = make_catalog(self.python, sb.base_url, config_path, STREAMS)
        catalog_path = work / f"{stem}.catalog.json"
        catalog_path.write_text(json.dumps(catalog))
        cmd = [
            str(self.python), str(RUNNER), "--config", str(config_path),
            "--catalog", str(catalog_path),
        ]  # fmt: skip
        if state is not None:
            state_path = work / f"{stem}.state.json"
            state_path.write_text(json.dumps(state))
            cmd += ["--state", str(state_path)]
        env = dict(os.environ)
        env["LEGACY_TAP_BASE_URL"] = sb.base_url
        env.pop("PYTHONPATH", None)
        out_path, err_path = work / f"{stem}.jsonl", work / f"{stem}.log"
        result = RunResult(label="tap-kustomer 1.1.0", phase=phase, tap="legacy", workers=1)
        progress(f"  {phase:<11} legacy tap-kustomer 1.1.0 ...")
        sb.reset_stats()
        code, timed_out, wall, usage = run_measured(cmd, out_path, err_path, args.timeout, env)
        fill_from_stats(result, sb.stats())
        fill_from_process(result, code, timed_out, wall, usage, err_path)
        result.records, final_state = scan_output(out_path)
        result.derive(args.org_rpm, args.search_rpm)
        progress(f"    {describe(result)}")
        return result, final_state


# --------------------------------------------------------------------------------------
# one size


def tap_configs(args: argparse.Namespace) -> list[TapConfig]:
    """The configurations of our tap to run, from --strategies, --workers, --one-worker."""
    configs = [TapConfig(s, s, args.workers) for s in args.strategies]
    if args.one_worker:
        configs.append(TapConfig("auto, 1 worker", "auto", 1))
    return configs


def bench_size(
    size: int, args: argparse.Namespace, work: Path, legacy: Legacy | None
) -> dict[str, Any]:
    """All runs for one data size on one sandbox."""
    sb = SandboxProcess(args, size, work)
    started = time.monotonic()
    sb.start(args.sandbox_timeout)
    progress(
        f"size {size}: sandbox pid {sb.pid} at {sb.base_url} "
        f"(started in {time.monotonic() - started:.1f} s)"
    )
    runs: list[RunResult] = []
    states: dict[str, dict[str, Any] | None] = {}
    activity: dict[str, int] = {}
    legacy_state: dict[str, Any] | None = None
    legacy_ok = False
    try:
        configs = tap_configs(args)
        for conf in configs:
            result, states[conf.label] = run_ours(sb, conf, "backfill", work, args, None)
            runs.append(result)
        if legacy is not None:
            result, legacy_state = legacy.run(sb, "backfill", work, args, None)
            runs.append(result)
            legacy_ok = result.ok
        summary = sb.simulate_activity(args.hours, args.seed)
        activity = {k: len(v) for k, v in summary.items() if isinstance(v, list)}
        sb.advance_clock((INDEX_LAG_MINUTES + 5) * 60)
        progress(f"  simulated {args.hours:g} h of activity: {activity}")
        for conf in configs:
            state = states[conf.label]
            if state is None:
                progress(f"  (no incremental run for {conf.label}: its backfill left no STATE)")
                continue
            result, _ = run_ours(sb, conf, "incremental", work, args, state)
            runs.append(result)
        for conf in configs:
            state = states[conf.label]
            if conf.strategy == "per_conversation" or state is None:
                continue
            twin = TapConfig("per_conversation", "per_conversation", conf.workers)
            if conf.workers != args.workers:
                plural = "s" if conf.workers != 1 else ""
                twin.label = f"per_conversation, {conf.workers} worker{plural}"
            result, _ = run_ours(sb, twin, "incremental", work, args, state, conf.label)
            runs.append(result)
        if legacy is not None and legacy_ok and legacy_state is not None:
            result, _ = legacy.run(sb, "incremental", work, args, legacy_state)
            runs.append(result)
    finally:
        sb.stop()
    return {
        "size": size,
        "customers": max(20, size // 5),
        "sandbox_pid": sb.pid,
        "simulated_activity": activity,
        "runs": [run_dict(r) for r in runs],
        "comparisons": comparisons(runs),
    }


def run_dict(result: RunResult) -> dict[str, Any]:
    """JSON-ready figures of one run."""
    out = asdict(result)
    out["record_total"] = result.record_total
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def comparisons(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Auto vs per-conversation (incremental) and ours vs the legacy tap."""
    out: list[dict[str, Any]] = []
    incremental = [r for r in runs if r.phase == "incremental" and r.tap == "ours"]
    for run in incremental:
        if run.strategy == "per_conversation":
            continue
        twin = next((r for r in incremental if r.from_state_of == run.label), None)
        if twin is None:
            continue
        out.append({
            "kind": "plan",
            "phase": "incremental",
            "what": f"{run.label} / per_conversation (same state), requests",
            "ours": run.requests,
            "other": twin.requests,
            "ratio": _ratio(run.requests, twin.requests),
            "ok": run.requests <= twin.requests,
        })  # fmt: skip
    for phase in ("backfill", "incremental"):
        legacy = next((r for r in runs if r.tap == "legacy" and r.phase == phase), None)
        if legacy is None or not legacy.ok:
            continue
        for run in runs:
            if run.tap != "ours" or run.phase != phase or run.from_state_of:
                continue
            out.append({
                "kind": "legacy",
                "phase": phase,
                "what": run.label,
                "requests_ratio": _ratio(run.requests, legacy.requests),
                "wall_ratio": _ratio(run.wall_s, legacy.wall_s),
                "cpu_ratio": _ratio(
                    run.cpu_user_s + run.cpu_sys_s, legacy.cpu_user_s + legacy.cpu_sys_s
                ),
            })  # fmt: skip
    return out


# --------------------------------------------------------------------------------------
# output


def progress(text: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def describe(result: RunResult) -> str:
    """A one-line summary of a run."""
    status = "ok" if result.ok else f"FAILED ({result.error})"
    return (
        f"{status}: {result.wall_s:.1f} s, {result.requests} requests "
        f"({result.search_requests} search, {result.rate_limited} x 429), "
        f"{result.record_total} records"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = []
    for index, row in enumerate([headers, *rows]):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


COST_HEADERS = [
    "run", "wall s", "requests", "search", "other", "429", "req/conv", "req/rec",
    "rpm", "org %", "search rpm", "search %", "peak60 org", "peak60 search",
    "CPU s", "CPU s/1k rec", "RSS MB",
]  # fmt: skip

RECORD_HEADERS = [
    "run", "exit", "conversations", "messages", "notes", "customers", "tags", "total",
    "thread conv", "thread req", "bulk searches", "bulk threads", "one by one",
]  # fmt: skip


def _run_name(run: dict[str, Any]) -> str:
    tap = "legacy" if run["tap"] == "legacy" else "ours"
    return f"{run['phase']}: {tap} {run['label']}"


def cost_row(run: dict[str, Any]) -> list[str]:
    """One row of the cost table."""
    d = run["derived"]
    return [
        _run_name(run),
        _num(run["wall_s"]),
        str(run["requests"]),
        str(run["search_requests"]),
        str(run["other_requests"]),
        str(run["rate_limited"]),
        _num(d["requests_per_conversation"], 2),
        _num(d["requests_per_record"], 3),
        _num(d["rpm"], 0),
        _num(d["org_utilisation_pct"]),
        _num(d["search_rpm"], 0),
        _num(d["search_utilisation_pct"]),
        str(run["peak_60s_org"]),
        str(run["peak_60s_search"]),
        _num(d["cpu_s"], 2),
        _num(d["cpu_s_per_1k_records"], 2),
        _num(run["max_rss_mb"], 0),
    ]


def record_row(run: dict[str, Any]) -> list[str]:
    """One row of the records table."""
    rec = run["records"]
    summ = run["tap_summary"]
    exit_text = "timeout" if run["timed_out"] else str(run["returncode"])
    return [
        _run_name(run),
        exit_text,
        *[str(rec.get(s, 0)) for s in STREAMS],
        str(run["record_total"]),
        *[
            str(summ[k]) if k in summ else "-"
            for k in ("conversations", "requests", "bulk_searches", "bulk_threads",
                      "single_threads")
        ],
    ]  # fmt: skip


def format_size(report: dict[str, Any], meta: dict[str, Any]) -> str:
    """The tables of one size."""
    out = [
        "",
        f"=== {report['size']} conversations, {report['customers']} customers "
        f"(sandbox pid {report['sandbox_pid']}; budget {meta['org_rpm']} org rpm / "
        f"{meta['search_rpm']} search rpm; tap share {meta['share']}%) ===",
        "",
        table(COST_HEADERS, [cost_row(r) for r in report["runs"]]),
        "",
        table(RECORD_HEADERS, [record_row(r) for r in report["runs"]]),
    ]
    if report["simulated_activity"]:
        touched = ", ".join(f"{k} {v}" for k, v in report["simulated_activity"].items() if v)
        out += ["", f"simulated {meta['hours']:g} h of activity: {touched}"]
    failed = [r for r in report["runs"] if r["timed_out"] or r["returncode"] != 0]
    for run in failed:
        out.append(f"FAILED {_run_name(run)}: {run['error']}")
    comps = report["comparisons"]
    if comps:
        out.append("")
        for c in comps:
            if c["kind"] == "plan":
                verdict = "ok" if c["ok"] else "AUTO COSTS MORE"
                out.append(
                    f"incremental plan: {c['what']}: {c['ours']} / {c['other']} = "
                    f"{_num(c['ratio'], 3)} ({verdict})"
                )
            else:
                out.append(
                    f"{c['phase']} vs legacy: {c['what']}: requests x{_num(c['requests_ratio'], 3)}"
                    f", wall x{_num(c['wall_ratio'], 3)}, CPU x{_num(c['cpu_ratio'], 3)}"
                )
    return "\n".join(out)


def format_summary(reports: list[dict[str, Any]]) -> str:
    """A compact summary of every size."""
    rows = []
    for report in reports:
        for run in report["runs"]:
            d = run["derived"]
            rows.append([
                f"{report['size']} {_run_name(run)}",
                "ok" if not run["timed_out"] and run["returncode"] == 0 else "FAILED",
                _num(run["wall_s"]),
                str(run["requests"]),
                str(run["rate_limited"]),
                _num(d["requests_per_conversation"], 2),
                _num(d["org_utilisation_pct"]),
                _num(d["search_utilisation_pct"]),
                _num(d["cpu_s_per_1k_records"], 2),
                _num(run["max_rss_mb"], 0),
                str(run["record_total"]),
            ])  # fmt: skip
    headers = [
        "size run", "status", "wall s", "requests", "429", "req/conv", "org %", "search %",
        "CPU s/1k rec", "RSS MB", "records",
    ]  # fmt: skip
    return "\n".join(["", "=== summary ===", "", table(headers, rows)])


LEGEND = """\
Columns: requests = every /v1 response the sandbox counted (429s included); search =
POST /v1/customers/search; req/conv = requests per conversation record emitted (ours:
resolved conversations only; the legacy tap emits every updated conversation); req/rec =
requests per record of all streams; rpm and search rpm = accepted (non-429) requests per
minute of the run's wall time; org % = accepted requests / (org budget x wall minutes),
search % = accepted searches / (search budget x wall minutes), a run shorter than a
minute counting as one minute (the budget is per 60 s window); peak60 = most requests
accepted in any 60 s span; CPU s = user+sys of the tap's process (os.wait4); RSS MB = its
peak resident set. Latency {latency} ms +- {jitter} ms (uniform);
rate_limit_share_percent = {share}. The sandbox runs on the same machine ({cpus} cores),
so the tap and the API share the CPUs."""


# --------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="1000,10000", help="conversations per sandbox")
    parser.add_argument(
        "--strategies",
        default="auto,per_conversation",
        help=f"comma-separated thread strategies: {', '.join(STRATEGIES)}",
    )
    parser.add_argument("--workers", type=int, default=4, help="max_workers of the tap")
    parser.add_argument(
        "--one-worker", action="store_true", help="also run auto with max_workers=1"
    )
    parser.add_argument("--latency-ms", type=float, default=60.0, help="mean sandbox latency")
    parser.add_argument(
        "--jitter-ms", type=float, default=10.0, help="latency varies uniformly by +- this much"
    )
    parser.add_argument("--org-rpm", type=int, default=1000, help="sandbox org budget")
    parser.add_argument("--search-rpm", type=int, default=100, help="sandbox search budget")
    parser.add_argument(
        "--share", type=float, default=100.0, help="the tap's rate_limit_share_percent"
    )
    parser.add_argument(
        "--no-legacy", action="store_true", help="skip the older singer-io tap-kustomer 1.1.0"
    )
    parser.add_argument("--seed", type=int, default=1, help="sandbox data seed")
    parser.add_argument(
        "--hours",
        type=float,
        default=4.0,
        help="hours of simulated activity before the incremental runs",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per tap run")
    parser.add_argument(
        "--sandbox-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for a sandbox to start",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON figures are written"
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the tap outputs, logs and states (path printed)",
    )
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--sizes must be integers, not {args.sizes!r}")
    args.strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    for strategy in args.strategies:
        if strategy not in STRATEGIES:
            parser.error(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not args.strategies and not args.one_worker:
        parser.error("--strategies is empty and --one-worker is not given: nothing to run")
    if not args.sizes or any(n < 1 for n in args.sizes):
        parser.error("--sizes needs positive integers")
    if not 0 < args.share <= 100:
        parser.error("--share must be in (0, 100]")
    return args


def _git(*args: str) -> str:
    """Output of a git command in the repository ('' when git is unavailable)."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run succeeded, 1 otherwise."""
    args = parse_args(argv)
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _on_sigterm)
    meta = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "org_rpm": args.org_rpm,
        "search_rpm": args.search_rpm,
        "share": args.share,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "workers": args.workers,
        "hours": args.hours,
        "seed": args.seed,
        "start_date": START_DATE,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "git_commit": _git("rev-parse", "HEAD"),
        "tap_changes_not_committed": bool(_git("status", "--porcelain", "--", "tap_kustomer")),
        "order": "per size one sandbox: all backfills, then simulated activity, then every "
        "incremental run from its own backfill's STATE",
    }
    legacy: Legacy | None = None
    if not args.no_legacy:
        legacy = Legacy()
        if not legacy.prepare():
            progress(f"legacy tap skipped: its venv could not be built ({legacy.problem})")
            meta["legacy_skipped"] = legacy.problem
            legacy = None
    work = Path(tempfile.mkdtemp(prefix="tap-kustomer-bench-"))
    reports: list[dict[str, Any]] = []
    try:
        for size in args.sizes:
            report = bench_size(size, args, work, legacy)
            reports.append(report)
            print(format_size(report, meta), flush=True)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        if args.keep_work:
            progress(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(format_summary(reports))
    dirty = " (tap_kustomer has uncommitted changes)" if meta["tap_changes_not_committed"] else ""
    print(f"\ncommit {meta['git_commit'] or 'unknown'}{dirty}")
    print()
    print(
        LEGEND.format(
            latency=_num(args.latency_ms, 0),
            jitter=_num(args.jitter_ms, 0),
            share=_num(args.share, 0),
            cpus=os.cpu_count(),
        )
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.results_dir / f"{stamp}.json"
    out_path.write_text(json.dumps({"meta": meta, "sizes": reports}, indent=2))
    print(f"\nfigures written to {out_path}")
    failed = [r for rep in reports for r in rep["runs"] if r["timed_out"] or r["returncode"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
