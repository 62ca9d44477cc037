"""Run the tap in-process or as a program and read back the Singer messages it wrote."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from tap_kustomer.tap import TapKustomer

REPO = Path(__file__).resolve().parent.parent
#: Environment for a tap process under test: any HTTP(S) request to a host other than
#: loopback goes to a closed local port instead of the internet.
LOOPBACK_ONLY = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost,::1",
}


#: The full-table reference streams besides tags, and the sandbox's name of their list
#: (``reference_of(sandbox).truth([kind])``).
REFERENCE_STREAMS = {
    "users": "users",
    "teams": "teams",
    "klasses": "klasses",
    "shortcuts": "shortcuts",
    "brands": "brands",
    "business_schedules": "schedules",
    "queues": "queues",
    "satisfaction_surveys": "satisfaction",
}


def tap_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without TAP_KUSTOMER_* settings, loopback only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_KUSTOMER_")}
    env.update(LOOPBACK_ONLY)
    env.update(extra or {})
    return env


STREAMS = (
    "conversations",
    "messages",
    "notes",
    "customers",
    "tags",
    "companies",
    "kobjects",
    *REFERENCE_STREAMS,
)
#: Streams a run reads only when the catalog selects them: each costs a request per
#: emitted conversation or so, or (audit_logs) needs a role read-only keys rarely hold
#: and grows with every change in the org.
OPT_IN_STREAMS = ("attachments", "conversation_events", "audit_logs")


@dataclass
class TapRun:
    """The messages of one run, with helpers to ask what it emitted."""

    messages: list[dict[str, t.Any]]
    returncode: int = 0
    stderr: str = ""
    raw_stdout: str = field(default="", repr=False)

    def records(self, stream: str) -> list[dict[str, t.Any]]:
        return [
            m["record"]
            for m in self.messages
            if m.get("type") == "RECORD" and m.get("stream") == stream
        ]

    def ids(self, stream: str) -> set[str]:
        return {r["id"] for r in self.records(stream)}

    @property
    def states(self) -> list[dict[str, t.Any]]:
        return [m["value"] for m in self.messages if m.get("type") == "STATE"]

    @property
    def final_state(self) -> dict[str, t.Any] | None:
        return self.states[-1] if self.states else None

    def bookmark(self, stream: str) -> str | None:
        state = self.final_state or {}
        return (state.get("bookmarks", {}).get(stream) or {}).get("replication_key_value")


def parse_messages(text: str) -> list[dict[str, t.Any]]:
    """Singer messages of a stdout capture; a cut-off last line (killed run) is dropped."""
    messages = []
    for line in text.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            continue
    return messages


def catalog_for(config: dict[str, t.Any], select: t.Iterable[str]) -> dict[str, t.Any]:
    """The discovered catalog with only ``select`` streams selected."""
    wanted = set(select)
    catalog = TapKustomer(config=config, parse_env_config=False).catalog_dict
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in wanted
    return catalog


def run_tap(
    config: dict[str, t.Any],
    *,
    state: dict[str, t.Any] | None = None,
    select: t.Iterable[str] | None = None,
) -> TapRun:
    """Run a full sync in this process and collect its messages."""
    catalog = catalog_for(config, select) if select is not None else None
    return run_with_catalog(config, catalog, state=state)


def run_cli(
    args: list[str],
    *,
    config: dict[str, t.Any] | None = None,
    state: dict[str, t.Any] | None = None,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> TapRun:
    """Run ``tap-kustomer`` as a program, the way Meltano or a shell pipe does."""
    command = [sys.executable, "-m", "tap_kustomer", *args]
    if config is not None:
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        command += ["--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / "state.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=tap_env(env),
        check=False,
    )
    return TapRun(parse_messages(done.stdout), done.returncode, done.stderr, done.stdout)


def run_with_catalog(
    config: dict[str, t.Any],
    catalog: dict[str, t.Any] | None,
    *,
    state: dict[str, t.Any] | None = None,
) -> TapRun:
    """Run a full sync in this process with a catalog saved earlier."""
    tap = TapKustomer(config=config, state=state, catalog=catalog, parse_env_config=False)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tap.sync_all()
    return TapRun(parse_messages(buffer.getvalue()), raw_stdout=buffer.getvalue())


def closed_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on (free when asked; connecting is refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ReservedPort:
    """A free loopback port, held bound (not listening) until :meth:`release`.

    Lets a URL be known before its server starts: while held, nothing else (an
    outgoing connection's local port included) can take the port, and connecting to it
    is refused at once.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        import atexit
        import socket

        self.host = host
        self._socket = socket.socket()
        self._socket.bind((host, 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        atexit.register(self._socket.close)

    def release(self) -> int:
        """Free the port for the server about to bind it; returns the port."""
        self._socket.close()
        return self.port


def spawn_tap(config: dict[str, t.Any], workdir: Path, stdout: t.IO[str]) -> subprocess.Popen[str]:
    """Start ``tap-kustomer --config`` as a program writing its messages to ``stdout``.

    For tests that signal or kill a running tap; stderr is discarded.
    """
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "tap_kustomer", "--config", str(config_path)],
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=tap_env(),
        text=True,
    )
