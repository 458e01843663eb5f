"""The tool-side engine over a Unix socket (`--unix-socket`), the channel of the sandbox
and container runners, against a real asyncio WebSocket server bound to that socket."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, unix_serve

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    ConfigMessage,
    HelloMessage,
    InlineInput,
    OutputMessage,
    StartMessage,
    StatusMessage,
    WelcomeMessage,
    dump_message,
    parse_message,
)

TOOL = """
def double(x: int) -> int:
    return 2 * x
"""


def serve_one(sock: Path, received: list[Any], auth: list[str]) -> threading.Thread:
    ready = threading.Event()

    async def handler(ws: ServerConnection) -> None:
        auth.append(ws.request.headers.get("Authorization", "") if ws.request else "")
        async for frame in ws:
            msg = parse_message(frame)
            received.append(msg)
            if isinstance(msg, HelloMessage):
                await ws.send(dump_message(WelcomeMessage(task_id="t1")))
                await ws.send(dump_message(ConfigMessage(values={})))
            elif isinstance(msg, StatusMessage) and msg.dst is State.INITIALIZED:
                start = StartMessage(inputs={"x": InlineInput(value=21)})
                await ws.send(dump_message(start))
            elif isinstance(msg, StatusMessage) and msg.dst.terminal:
                return

    async def main() -> None:
        async with unix_serve(handler, str(sock)):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    stop = threading.Event()
    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(10)
    t.stop = stop  # type: ignore[attr-defined]
    return t


def test_the_engine_speaks_the_protocol_over_a_unix_socket(tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(TOOL)
    sock = tmp_path / "control.sock"
    received: list[Any] = []
    auth: list[str] = []
    server = serve_one(sock, received, auth)
    env = {**os.environ, "FLOWFED_TOOL_TOKEN": "tok-123"}
    done = subprocess.run(
        [sys.executable, "-m", "flowfed.runtime", "--endpoint", "ws://localhost/",
         "--unix-socket", str(sock), "--tool", "tools.py:double", "--timeout", "30"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    server.stop.set()  # type: ignore[attr-defined]
    server.join(10)
    assert done.returncode == 0, done.stderr
    assert auth == ["Bearer tok-123"]
    states = [m.dst for m in received if isinstance(m, StatusMessage)]
    assert states[-1] is State.FINISHED
    (out,) = [m for m in received if isinstance(m, OutputMessage)]
    assert out.content() == b"42"


def test_a_missing_unix_socket_is_unreachable_within_the_timeout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowfed.runtime", "--endpoint", "ws://localhost/",
         "--unix-socket", str(tmp_path / "nothing.sock"), "--token", "t",
         "--tool", "textwrap:dedent", "--timeout", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 75
    missing = tmp_path / "nothing.sock"
    assert f"could not connect to ws://localhost/ over {missing} within 1 s" in done.stderr
