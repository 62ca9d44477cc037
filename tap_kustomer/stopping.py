"""How a run that was asked to stop ends."""

from __future__ import annotations


class RunStopped(SystemExit):
    """SIGTERM or SIGINT ended the run after its STATE was written.

    Its code is 128 + the signal, as for a process killed by it, so an orchestrator
    does not count the stopped run as finished.
    """

    def __init__(self, signum: int) -> None:
        """Exit with 128 + ``signum``."""
        super().__init__(128 + signum)
        self.signum = signum
