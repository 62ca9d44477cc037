"""Entry point run by the LEGACY venv's python: singer-io tap-kustomer, host redirected.

tap-kustomer 1.1.0 hard-codes Kustomer's production host as an instance attribute
set in ``KustomerClient.__init__``. We wrap that constructor so the attribute
points at the sandbox (a loopback address, checked), then hand over to the tap's
own ``main``. The tap's files are not touched. Usage:

    LEGACY_TAP_BASE_URL=http://127.0.0.1:PORT python runner.py <tap args...>
"""

import ipaddress
import os
import sys
from urllib.parse import urlparse

import tap_kustomer
from tap_kustomer import client as legacy_client


def _patch(base_url):
    host = urlparse(base_url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"runner: refusing non-loopback base URL {base_url!r}")
    original_init = legacy_client.KustomerClient.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.base_url = base_url.rstrip("/") + "/v1"

    legacy_client.KustomerClient.__init__ = init


def main():
    """Patch the host, then run the tap with our argv."""
    _patch(os.environ["LEGACY_TAP_BASE_URL"])
    sys.argv = ["tap-kustomer", *sys.argv[1:]]
    tap_kustomer.main()


if __name__ == "__main__":
    main()
