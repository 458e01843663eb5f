"""Inside the node's sandbox: a loopback port that leads to the control socket, then the tool.

``python -m flowfed.node.relay --unix SOCK -- CMD... ws://127.0.0.1:{port}`` listens on
``127.0.0.1:0`` of the sandbox's own (otherwise empty) network namespace, replaces
``{port}`` in CMD with that port, runs CMD, and pipes every connection to the Unix socket
SOCK (bound into the sandbox by the node). It exits with CMD's exit code. The tool thus has
one way out: the control channel.

Example:
    >>> main(["--unix", "/nonexistent.sock"])
    2
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence


async def _serve(sock: str, cmd: list[str]) -> int:
    from flowfed.node.runners import pipe_both

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(sock)
        except OSError:
            writer.close()
            return
        await pipe_both(reader, writer, up_reader, up_writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    argv = [a.replace("{port}", str(port)) for a in cmd]
    proc = await asyncio.create_subprocess_exec(*argv)
    code = await proc.wait()
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay; returns the command's exit code (2 for a bad command line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[0] != "--unix" or args[2] != "--":
        print("usage: python -m flowfed.node.relay --unix SOCK -- CMD...", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args[1], args[3:]))


if __name__ == "__main__":
    sys.exit(main())
