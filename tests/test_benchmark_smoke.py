"""Smoke test of the benchmark script: a tiny sandbox, no latency, a huge budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_runs_and_prints_sane_figures(tmp_path):
    results = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "benchmarks.run",
        "--sizes", "200", "--strategies", "auto", "--no-legacy",
        "--latency-ms", "0", "--jitter-ms", "0",
        "--org-rpm", "100000", "--search-rpm", "100000",
        "--hours", "1", "--timeout", "120", "--results-dir", str(results),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for column in (
        "wall s",
        "requests",
        "search",
        "429",
        "req/conv",
        "req/rec",
        "org %",
        "search %",
        "CPU s",
        "CPU s/1k rec",
        "RSS MB",
        "conversations",
        "messages",
    ):
        assert column in out, column
    for row in (
        "backfill: ours auto",
        "incremental: ours auto",
        "incremental: ours per_conversation (state of auto)",
        "=== summary ===",
    ):
        assert row in out, row
    assert "incremental plan: auto / per_conversation" in out

    files = list(results.glob("*.json"))
    assert len(files) == 1
    report = json.loads(files[0].read_text())
    assert report["meta"]["share"] == 100
    (size,) = report["sizes"]
    assert size["size"] == 200
    runs = {(r["phase"], r["label"]): r for r in size["runs"]}
    assert set(runs) == {
        ("backfill", "auto"),
        ("incremental", "auto"),
        ("incremental", "per_conversation (state of auto)"),
    }
    for run in runs.values():
        assert run["returncode"] == 0
        assert not run["timed_out"]
        assert run["requests"] > 0
        assert run["search_requests"] > 0
        assert run["record_total"] > 0
        assert run["wall_s"] > 0
        assert run["cpu_user_s"] + run["cpu_sys_s"] > 0
        assert run["max_rss_mb"] > 10
        derived = run["derived"]
        for key in ("org_utilisation_pct", "search_utilisation_pct"):
            assert 0 < derived[key] <= 100.5, (key, derived[key])
        assert derived["requests_per_record"] > 0
    backfill = runs[("backfill", "auto")]
    assert backfill["records"]["conversations"] > 0
    assert backfill["records"]["messages"] > backfill["records"]["conversations"]
    assert backfill["rate_limited"] == 0
    assert backfill["tap_summary"]["conversations"] == backfill["records"]["conversations"]
