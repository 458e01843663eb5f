"""How a tool-side run ends badly: its exit codes and the exceptions behind them.

Every part of the tool-side runtime (loading the tool, reading inputs, writing outputs,
the channel, the engine's lifecycle) raises one of these, and the engine turns each into
an ``error`` frame and an exit code. They sit in a room of their own so those parts can
raise them without importing the engine.

Exit codes: 0 finished or terminated on request, 1 error, 2 bad command line,
75 platform unreachable within the timeout (``EX_TEMPFAIL``: worth retrying).

Example:
    >>> failure = RunFailure("input missing", phase="inputs", error_type="InputError")
    >>> failure.phase, str(failure)
    ('inputs', 'input missing')
"""

from __future__ import annotations

from collections.abc import Sequence

from flowfed.runtime.protocol import ErrorDetail

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 75


class RunFailure(Exception):
    """A failure the engine reports as a structured ``error`` frame."""

    def __init__(
        self,
        message: str,
        *,
        phase: str,
        error_type: str = "RuntimeError",
        details: Sequence[ErrorDetail] = (),
        tb: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase
        self.error_type = error_type
        self.details = list(details)
        self.tb = tb


class ChannelLost(Exception):
    """The platform closed the channel; nothing more can be reported over it."""


class PlatformUnreachable(Exception):
    """No WebSocket could be opened within the timeout (worth retrying later)."""


class PlatformRefused(Exception):
    """The platform answered the upgrade with an HTTP error (bad token: not worth retrying)."""
