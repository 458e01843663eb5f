"""How the tool side reaches the platform: what it was told, and the retrying connect.

:class:`EngineOptions` is what ``python -m flowfed.runtime`` (or a warm worker, or
``flowfed tool dev``) asks of one run; :func:`open_channel` opens its WebSocket, over TCP or
a Unix socket, retrying while the platform is not listening yet. Reaching the platform is
a concern of its own, apart from what the engine then says over the channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect, unix_connect

from flowfed.runtime.failures import PlatformRefused, PlatformUnreachable


@dataclass
class EngineOptions:
    """What ``python -m flowfed.runtime`` was asked to do."""

    endpoint: str
    token: str
    tool: str
    timeout: float = 30.0
    dev: bool = False
    max_frame: int = 16 * 1024 * 1024
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: Connect over this Unix socket instead of TCP (the sandbox and container runners
    #: bind one into a tool that has no network at all); ``endpoint`` is then only the URI.
    unix_socket: str | None = None


def open_channel(
    opts: EngineOptions, connector: Callable[..., ClientConnection] = connect
) -> ClientConnection:
    """Open the channel ``opts`` names, retrying refused connections until its timeout.

    Raises :class:`~flowfed.runtime.failures.PlatformRefused` when the platform answers
    with an HTTP error or the endpoint is malformed (not worth retrying), and
    :class:`~flowfed.runtime.failures.PlatformUnreachable` when nothing answered in time.

    Example:
        >>> opts = EngineOptions(endpoint="ws://127.0.0.1:9/", token="t", tool="m:f", timeout=0.1)
        >>> open_channel(opts)
        Traceback (most recent call last):
        ...
        flowfed.runtime.failures.PlatformUnreachable: could not connect to ws://127.0.0.1:9/ ...
    """
    deadline = time.monotonic() + opts.timeout
    headers = {"Authorization": f"Bearer {opts.token}", **opts.extra_headers}
    delay = 0.05
    last: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            if opts.unix_socket is not None:
                return unix_connect(
                    opts.unix_socket,
                    opts.endpoint,
                    additional_headers=headers,
                    open_timeout=remaining,
                    close_timeout=2,
                    max_size=opts.max_frame,
                )
            return connector(
                opts.endpoint,
                additional_headers=headers,
                open_timeout=remaining,
                close_timeout=2,
                max_size=opts.max_frame,
            )
        except InvalidStatus as exc:
            raise PlatformRefused(
                f"{opts.endpoint} refused the connection: HTTP {exc.response.status_code}"
            ) from None
        except InvalidURI as exc:
            raise PlatformRefused(f"bad endpoint: {exc}") from None
        except (OSError, TimeoutError, Exception) as exc:
            # The orchestrator may start the tool before the platform listens: retry.
            last = exc
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 1.0)
    raise PlatformUnreachable(
        f"could not connect to {opts.endpoint}"
        + (f" over {opts.unix_socket}" if opts.unix_socket else "")
        + f" within {opts.timeout:g} s"
        + (f": {type(last).__name__}: {last}" if last else "")
    )
