"""How a node agent runs a tool: in a thread, in a subprocess, or in a bubblewrap sandbox.

``subprocess`` and ``sandbox`` reuse :mod:`flowfed.executors.isolated` (its private control
channel, conversation driver and bubblewrap prefix); this module adapts them to a node's
task (no plan ``TaskNode``) and adds what a node needs on top:

* the task's identity reaches the tool's :class:`~flowfed.tools.Context` through
  ``$FLOWFED_TASK_CONTEXT`` (the dataset the task works on and its round);
* the sandbox gets **no network**: bubblewrap unshares the network namespace too, and the
  only way out is the control channel, a Unix socket in the call's work directory that
  this process relays to the channel's loopback port. Inside the sandbox,
  ``python -m flowfed.node.relay`` listens on the sandbox's own loopback and forwards to
  that socket, so the tool-side runtime connects to ``ws://127.0.0.1:PORT`` unchanged.

Example:
    >>> RUNNERS
    ('inprocess', 'subprocess', 'sandbox')
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowfed.executors.isolated import (
    _Call,
    _Channel,
    _run_process,
    sandbox_command,
    tool_entrypoint,
)
from flowfed.executors.processes import ProcessTaskError
from flowfed.tools.core import Context, ToolSpec

RUNNERS = ("inprocess", "subprocess", "sandbox")


@dataclass
class _TaskShim:
    """The parts of a plan ``TaskNode`` that :mod:`flowfed.executors.isolated` reads."""

    tool: ToolSpec
    step: str
    node: str
    config: dict[str, Any]

    def config_json(self) -> dict[str, Any]:
        return self.config


class _UnixRelay:
    """Accepts connections on a Unix socket and pipes each to ``127.0.0.1:port``."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="flowfed-node-relay", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        await pipe_both(reader, writer, up_reader, up_writer)

    def close(self) -> None:
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(5)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()


async def pipe_both(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    r2: asyncio.StreamReader,
    w2: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes."""
    await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))


def run_isolated(
    spec: ToolSpec,
    args: dict[str, Any],
    config: dict[str, Any],
    ctx: Context,
    timeout: float | None,
    sandbox: bool,
    task_context: dict[str, Any],
    readable: list[Path] | None = None,
) -> Any:
    """Run ``spec`` in ``python -m flowfed.runtime`` (in the no-network sandbox if asked).

    Returns the tool's value in the shape :meth:`ToolSpec.split_outputs` expects; raises
    :class:`~flowfed.executors.processes.ProcessTaskError` or ``ProcessTimeout`` as
    :func:`flowfed.executors.isolated.call_isolated` does.
    """
    shim = _TaskShim(spec, ctx.step, ctx.node, config)
    workdir = Path(tempfile.mkdtemp(prefix="flowfed-node-task-")).resolve()
    entry = tool_entrypoint(shim)  # type: ignore[arg-type]
    roots = [Path.cwd(), Path(sys.prefix), Path(__file__).resolve().parents[2]]
    roots += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    roots += list(readable or [])
    source = entry.rpartition(":")[0]
    if source.endswith(".py"):
        roots.append(Path(source).parent)
    channel = _Channel()
    relay: _UnixRelay | None = None
    env = dict(os.environ)
    env["FLOWFED_TOOL_TOKEN"] = channel.token
    env["FLOWFED_TASK_CONTEXT"] = json.dumps(task_context)
    env["TMPDIR"] = str(workdir / "tmp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    (workdir / "tmp").mkdir()
    runtime = [sys.executable, "-m", "flowfed.runtime", "--tool", entry, "--timeout", "60"]
    if sandbox:
        prefix = [a for a in sandbox_command(workdir, roots) if a != "--share-net"]
        sock = workdir / "control.sock"
        relay = _UnixRelay(sock, channel.port)
        cmd = [
            *prefix,
            sys.executable,
            "-m",
            "flowfed.node.relay",
            "--unix",
            str(sock),
            "--",
            *runtime,
            "--endpoint",
            "ws://127.0.0.1:{port}",
        ]
    else:
        cmd = [*runtime, "--endpoint", f"ws://127.0.0.1:{channel.port}"]
    call = _Call(shim, ctx.task_id, ctx, workdir)  # type: ignore[arg-type]
    try:
        return _run_process(call, channel, cmd, env, args, timeout, workdir)
    finally:
        channel.close()
        if relay is not None:
            relay.close()
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["RUNNERS", "ProcessTaskError", "run_isolated"]
