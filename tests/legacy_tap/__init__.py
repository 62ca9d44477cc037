"""Run the unrelated singer-io ``tap-kustomer==1.1.0`` against the sandbox.

The old tap was written against the real API, so making it work unchanged is a
faithfulness check of the emulator. It lives in its own virtual environment
(``LEGACY_TAP_VENV``, default ``tests/legacy_tap/.venv``, git-ignored) because
its pinned dependencies clash with the project's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE = "tap-kustomer==1.1.0"
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "runner.py"
STREAMS = ("conversations", "messages", "notes", "customers", "tags")

#: pip output that means the package registry could not be reached
NETWORK_MARKERS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectionError",
    "Could not fetch URL",
    "No matching distribution found",
)


class RegistryUnreachableError(RuntimeError):
    """pip could not reach the package registry (tests skip on this)."""


def venv_path() -> Path:
    """Where the legacy tap's virtual environment lives."""
    return Path(os.environ.get("LEGACY_TAP_VENV", HERE / ".venv"))


def venv_python(venv: Path | None = None) -> Path:
    """The interpreter inside the legacy venv."""
    venv = venv or venv_path()
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return venv / sub


def ensure_venv(venv: Path | None = None) -> Path:
    """Create the venv and install the legacy tap once; returns its python.

    Raises RegistryUnreachableError when pip cannot download the package.
    """
    venv = venv or venv_path()
    python = venv_python(venv)
    marker = venv / ".tap-kustomer-installed"
    if python.exists() and marker.exists():
        return python
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300
        )
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", PACKAGE],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(m in output for m in NETWORK_MARKERS):
            raise RegistryUnreachableError(output[-2000:])
        raise RuntimeError(f"pip install {PACKAGE} failed:\n{output[-4000:]}")
    marker.write_text(PACKAGE + "\n")
    return python


def _env(base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LEGACY_TAP_BASE_URL"] = base_url
    env.pop("PYTHONPATH", None)
    return env


def make_catalog(
    python: Path, base_url: str, config_path: Path, streams: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Run the tap's discovery and mark ``streams`` (and all their fields) selected."""
    proc = subprocess.run(
        [str(python), str(RUNNER), "--config", str(config_path), "--discover"],
        capture_output=True,
        text=True,
        env=_env(base_url),
        timeout=300,
        check=True,
    )
    catalog = json.loads(proc.stdout)
    for entry in catalog["streams"]:
        chosen = entry["tap_stream_id"] in streams
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = chosen
    return catalog


def run_legacy_tap(
    base_url: str,
    api_key: str,
    start_date: str,
    streams: tuple[str, ...] | list[str],
    out_path: str | Path,
    state: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    timeout: float = 600,
) -> tuple[int, Path]:
    """Run the legacy tap in sync mode; Singer output goes to ``out_path``.

    Returns (exit code, stdout path). The tap's log (stderr) is written next to
    it as ``<out_path>.log``; config, catalog and state files too.
    """
    python = ensure_venv()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent
    config = {"api_token": api_key, "start_date": start_date, "user_agent": "legacy-tap-check"}
    config.update(extra_config or {})
    config_path = work / f"{out.stem}.config.json"
    config_path.write_text(json.dumps(config))
    catalog_path = work / f"{out.stem}.catalog.json"
    catalog_path.write_text(json.dumps(make_catalog(python, base_url, config_path, streams)))
    args = [str(python), str(RUNNER), "--config", str(config_path), "--catalog", str(catalog_path)]
    if state is not None:
        state_path = work / f"{out.stem}.state.json"
        state_path.write_text(json.dumps(state))
        args += ["--state", str(state_path)]
    log_path = out.with_name(out.name + ".log")
    with out.open("w") as stdout, log_path.open("w") as stderr:
        proc = subprocess.run(
            args, stdout=stdout, stderr=stderr, env=_env(base_url), timeout=timeout, check=False
        )
    return proc.returncode, out


def read_output(path: str | Path) -> dict[str, Any]:
    """Parse Singer output: records per stream, last state, schemas."""
    records: dict[str, list[dict[str, Any]]] = {}
    schemas: dict[str, Any] = {}
    state: dict[str, Any] | None = None
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg["type"] == "RECORD":
            records.setdefault(msg["stream"], []).append(msg["record"])
        elif msg["type"] == "SCHEMA":
            schemas[msg["stream"]] = msg["schema"]
        elif msg["type"] == "STATE":
            state = msg["value"]
    return {"records": records, "schemas": schemas, "state": state}
