"""Local emulator of the Kustomer REST API for testing taps.

Start it in-process with ``Sandbox(SandboxOptions(...)).start()`` or from the
command line with ``python -m tests.sandbox --port 0``. Only the standard library
is used so the emulator runs anywhere the tests run.
"""

from .app import Sandbox
from .options import ALL_ROLES, RESOURCE_ROLES, KeySpec, SandboxOptions

__all__ = ["ALL_ROLES", "RESOURCE_ROLES", "KeySpec", "Sandbox", "SandboxOptions"]
