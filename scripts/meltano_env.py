"""Build (once) and locate the isolated Meltano installation used by the demo and tests.

Meltano lives in its own virtual environment under ``.tools/meltano`` so that its
pins never meet the tap's dependencies in ``.venv``. Meltano in turn installs the
tap (``pip_url: -e .``) and the loaders into ``.meltano/``.

Usage: ``python -m scripts.meltano_env`` builds it if needed and prints the path of
the ``meltano`` executable. ``MELTANO_SPEC`` overrides the requirement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MELTANO_SPEC = os.environ.get("MELTANO_SPEC", "meltano~=4.4")
MELTANO_VENV = ROOT / ".tools" / "meltano"
_DONE = MELTANO_VENV / ".installed"


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


def meltano_executable() -> Path:
    """Path of the ``meltano`` executable (it may not exist yet)."""
    return _bin(MELTANO_VENV, "meltano")


def _find_uv() -> str | None:
    for candidate in (_bin(ROOT / ".tools", "uv"), _bin(Path(sys.prefix), "uv")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("uv")


def ensure_meltano(python: str | None = None) -> Path:
    """Create ``.tools/meltano`` with ``MELTANO_SPEC`` unless a complete one is there."""
    exe = meltano_executable()
    if exe.exists() and _DONE.exists() and _DONE.read_text() == MELTANO_SPEC:
        return exe
    python = python or shutil.which(os.environ.get("PYTHON", "")) or sys.executable
    shutil.rmtree(MELTANO_VENV, ignore_errors=True)
    print(f"Installing {MELTANO_SPEC} into {MELTANO_VENV} ...", file=sys.stderr, flush=True)
    uv = _find_uv()
    if uv:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        subprocess.run(
            [uv, "venv", "--quiet", "--python", python, str(MELTANO_VENV)], check=True, env=env
        )
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(_bin(MELTANO_VENV, "python")),
                MELTANO_SPEC,
            ],
            check=True,
            env=env,
        )
    else:
        venv.EnvBuilder(with_pip=True).create(MELTANO_VENV)
        subprocess.run(
            [str(_bin(MELTANO_VENV, "python")), "-m", "pip", "install", "--quiet", MELTANO_SPEC],
            check=True,
        )
    _DONE.write_text(MELTANO_SPEC)
    return exe


if __name__ == "__main__":
    print(ensure_meltano())
