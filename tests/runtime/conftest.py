"""A real platform peer for the tool-side engine: an asyncio WebSocket server on loopback.

Each test writes a script for the platform side (what it sends, what it waits for) and
runs the tool side as a real ``python -m flowfed.runtime`` subprocess against it. Both
ends speak through :mod:`flowfed.runtime.protocol`, so the tests also pin the protocol.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    ConfigMessage,
    HelloMessage,
    Message,
    StatusMessage,
    WelcomeMessage,
    dump_message,
    parse_message,
)

TOKEN = "eyJ.test-tool-token.sig"

TOOLS = '''
"""Tools as an author writes them: domain functions only."""
import time
from pathlib import Path

from flowfed.tools import Context, tool


@tool(name="scale", version="1.2", type="preprocessing")
def scale(values: list, ctx: Context, *, factor: float = 2.0, label: str = "x") -> dict:
    ctx.log(f"scaling {len(values)} values")
    for i, _ in enumerate(values):
        ctx.metric("seen", i + 1, step=i)
        ctx.progress(i + 1, len(values))
    return {"label": label, "values": [v * factor for v in values]}


def reverse(data: Path) -> bytes:
    """A plain function (no decorator) taking a file."""
    return data.read_bytes()[::-1]


def boom(ctx: Context, *, why: str = "bad luck") -> int:
    ctx.log("about to fail")
    raise RuntimeError(why)


def stubborn() -> int:
    """Never checks for cancellation."""
    time.sleep(60)
    return 1


def sleepy(ctx: Context) -> int:
    for _ in range(400):
        ctx.check_cancelled()
        time.sleep(0.05)
    return 1
'''

M = TypeVar("M")


class Peer:
    """The platform's end of one tool connection; records every frame it receives."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.received: list[Message] = []

    async def send(self, msg: Any) -> None:
        await self.ws.send(dump_message(msg))

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def recv(self, timeout: float = 15) -> Message:
        msg = parse_message(await asyncio.wait_for(self.ws.recv(), timeout))
        self.received.append(msg)
        return msg

    async def until(self, cls: type[M], pred: Callable[[M], bool] = lambda m: True) -> M:
        """Receive until a frame of ``cls`` (matching ``pred``) arrives."""
        while True:
            msg = await self.recv()
            if isinstance(msg, cls) and pred(msg):
                return msg

    async def until_state(self, state: State) -> StatusMessage:
        return await self.until(StatusMessage, lambda m: m.dst == state)

    async def handshake(self, config: dict[str, Any] | None = None) -> HelloMessage:
        """hello → welcome + config; returns the hello (does not wait for Initialized)."""
        hello = await self.until(HelloMessage)
        await self.send(WelcomeMessage(task_id="t-1", run_id="r-1", step="scale", node="site-a"))
        await self.send(ConfigMessage(values=config or {}))
        return hello

    async def drain(self) -> None:
        """Read until the tool closes the channel."""
        try:
            while True:
                await self.recv(timeout=20)
        except (ConnectionClosed, TimeoutError):
            return

    def of(self, cls: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, cls)]


@dataclass
class Outcome:
    """What happened: the frames the platform received, and how the tool process ended."""

    returncode: int = -1
    stderr: str = ""
    auth: str | None = None
    peer: Peer | None = None
    elapsed: float = 0.0
    errors: list[BaseException] = field(default_factory=list)

    @property
    def received(self) -> list[Message]:
        return self.peer.received if self.peer else []

    def of(self, cls: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, cls)]

    @property
    def states(self) -> list[State]:
        return [m.dst for m in self.of(StatusMessage)]


Script = Callable[[Peer], Awaitable[None]]


async def spawn_tool(args: Sequence[str], cwd: Path, timeout: float = 40) -> tuple[int, str]:
    """Run ``python -m flowfed.runtime ARGS`` with its temp dir at ``cwd/tmp``."""
    (cwd / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(cwd / "tmp")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flowfed.runtime",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def run_platform(
    script: Script,
    tmp_path: Path,
    tool: str,
    *,
    args: Sequence[str] = (),
    token: str = TOKEN,
    timeout: float = 10,
) -> Outcome:
    """Serve one tool connection with ``script`` and run the tool process against it."""
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    return asyncio.run(_run(script, tools, tool, list(args), token, timeout))


async def _run(
    script: Script, tools: Path, tool: str, args: list[str], token: str, timeout: float
) -> Outcome:
    out = Outcome()

    def check_token(conn: ServerConnection, request: Request) -> Response | None:
        # What the real platform does: no valid bearer token, no upgrade.
        out.auth = request.headers.get("Authorization")
        if out.auth != f"Bearer {TOKEN}":
            return conn.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        peer = Peer(ws)
        out.peer = peer
        try:
            await script(peer)
            await peer.drain()
        except BaseException as exc:  # surfaced in the test after the process ends
            out.errors.append(exc)

    loop = asyncio.get_running_loop()
    async with serve(handler, "127.0.0.1", 0, process_request=check_token) as server:
        port = server.sockets[0].getsockname()[1]
        t0 = loop.time()
        out.returncode, out.stderr = await spawn_tool(
            [
                "--endpoint",
                f"ws://127.0.0.1:{port}/api/v1/tools/ws",
                "--token",
                token,
                "--tool",
                f"{tools}:{tool}",
                "--timeout",
                str(timeout),
                *args,
            ],
            cwd=tools.parent,
        )
        out.elapsed = loop.time() - t0
    if out.errors:
        raise AssertionError(f"platform script failed; tool stderr:\n{out.stderr}") from (
            out.errors[0]
        )
    return out


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server handing out download links: (base URL, path → bytes)."""
    files: dict[str, bytes] = {}
    handler = type("Files", (_Files,), {"files": files})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()
