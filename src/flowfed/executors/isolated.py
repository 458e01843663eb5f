"""Run a tool call in a separate interpreter (optionally sandboxed) over the runtime protocol.

The platform end of :mod:`flowfed.runtime.protocol` for one call: a private asyncio
``websockets`` server on ``127.0.0.1:0`` (in a background thread) that accepts exactly one
connection carrying a one-time bearer token, and a subprocess
``python -m flowfed.runtime --endpoint ws://127.0.0.1:PORT --tool <file_or_module>:<fn>``
(the token travels in ``$FLOWFED_TOOL_TOKEN``, never on the command line). The calling
thread drives the conversation: ``hello`` → ``welcome`` + ``config``; ``initialized`` →
``start``; ``log``/``metric``/``progress`` are relayed to the engine's :class:`Context`;
every ``status`` is checked with :func:`~flowfed.runtime.lifecycle.check_transition`;
``output`` frames are decoded with the artifact materializers.

JSON-able inputs travel inline; anything else (bytes, NumPy, pandas, files, models) is
materialized into the call's private work directory and passed by path with its kind.

Three runners (``runner=``):

``subprocess``
    a plain child interpreter; the channel is a WebSocket on ``127.0.0.1``.
``sandbox``
    the same under bubblewrap: the whole file system read-only, a private ``/tmp``, fresh
    namespaces for everything (network included: no interface but an empty loopback), and
    only the call's work directory writable. The channel is a Unix socket inside that work
    directory, the one way out of the sandbox.
``container``
    ``docker run`` / ``podman run`` (:func:`container_engine`) of the tool image
    (``$FLOWFED_CONTAINER_IMAGE``, default :data:`DEFAULT_IMAGE`): read-only root,
    ``--network none``, no capabilities, CPU and memory limits, the work directory (with
    the Unix socket of the channel) and the tool's source folder mounted at the same paths.

A tool that dies before connecting, exits without a result, or stops answering heartbeats
(:data:`HEARTBEAT_S`, ``$FLOWFED_HEARTBEAT_S``; :data:`MISSED_BEATS` in a row) ends in
Error with its exit code and the tail of its stderr.

The command lines of the sandbox and the container are built in
:mod:`flowfed.executors.isolation_commands`, the call's input and output files handled in
:mod:`flowfed.executors.tool_io` (both re-exported here); this module is the conversation.

Failures map onto :mod:`flowfed.executors.processes`' exceptions (``ProcessTaskError``,
``ProcessTimeout``) so the engine handles every out-of-thread executor the same way.
"""

from __future__ import annotations

__all__ = [
    "CONNECT_S",
    "DEFAULT_CPUS",
    "DEFAULT_IMAGE",
    "DEFAULT_MEMORY",
    "GRACE_S",
    "HEARTBEAT_S",
    "MISSED_BEATS",
    "RUNNERS",
    "ContainerUnavailable",
    "SandboxUnavailable",
    "ToolCall",
    "ToolChannel",
    "call_isolated",
    "container_command",
    "container_engine",
    "container_limits",
    "drive_tool",
    "run_tool_process",
    "sandbox_command",
    "tool_entrypoint",
]

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from flowfed.executors.isolation_commands import (
    DEFAULT_CPUS,
    DEFAULT_IMAGE,
    DEFAULT_MEMORY,
    ContainerUnavailable,
    SandboxUnavailable,
    container_command,
    container_engine,
    container_limits,
    sandbox_command,
    tool_entrypoint,
)
from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
from flowfed.executors.tool_io import decode_output, stderr_tail, wire_inputs
from flowfed.plan.graph import TaskNode
from flowfed.runtime.lifecycle import IllegalTransition, State, check_transition
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorMessage,
    HeartbeatMessage,
    HelloMessage,
    LogMessage,
    MetricMessage,
    OutputMessage,
    OutputPolicy,
    ProgressMessage,
    ProtocolError,
    ResourcesMessage,
    StartMessage,
    StatusMessage,
    TerminateMessage,
    WelcomeMessage,
    dump_message,
    parse_message,
)
from flowfed.tools.core import Context

#: Seconds between platform heartbeats (the tool side answers them; any frame keeps it alive).
#: ``$FLOWFED_HEARTBEAT_S`` overrides it per call.
HEARTBEAT_S = 5.0
#: Heartbeat intervals without any frame from the tool after which it is declared hung.
MISSED_BEATS = 6
#: Seconds a tool process gets to connect (interpreter start-up, imports, container start).
CONNECT_S = 60.0
#: The runners :func:`call_isolated` knows.
RUNNERS = ("subprocess", "sandbox", "container")
#: Seconds a terminated tool gets to stop before its process is killed.
GRACE_S = 2.0

_CLOSED = object()
#: The private channel's own server log: one "listening/open/closed" line per tool call
#: is noise in a node's log, so only warnings and errors get through.
_CHANNEL_LOG = logging.getLogger("flowfed.isolated.channel")
_CHANNEL_LOG.setLevel(logging.WARNING)


class ToolChannel:
    """The private WebSocket server: one connection, authenticated at the upgrade."""

    def __init__(self, unix_path: Path | None = None) -> None:
        self.unix_path = unix_path
        self.token = secrets.token_urlsafe(32)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self._ws: ServerConnection | None = None
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="flowfed-isolated", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or not self.port:
            raise ProcessTaskError(
                f"could not start the tool channel: {self._error}", etype="IsolationError"
            )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the caller through _error
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        if self.unix_path is not None:
            async with unix_serve(
                self._handler,
                str(self.unix_path),
                process_request=self._authorize,
                max_size=64 * 1024 * 1024,
                logger=_CHANNEL_LOG,
            ) as server:
                self._server = server
                # Only the tool's uid needs it; a container user of the same uid does.
                os.chmod(self.unix_path, 0o600)
                self.port = -1
                self._ready.set()
                await self._stop.wait()
            return
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._authorize,
            max_size=64 * 1024 * 1024,
            logger=_CHANNEL_LOG,
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _authorize(self, conn: ServerConnection, request: Request) -> Response | None:
        expected = f"Bearer {self.token}"
        given = request.headers.get("Authorization", "")
        if self._ws is not None or not secrets.compare_digest(given, expected):
            return conn.respond(HTTPStatus.UNAUTHORIZED, "invalid or reused tool token\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        if self._ws is not None:
            await ws.close(1008, "one tool per channel")
            return
        self._ws = ws
        try:
            async for frame in ws:
                try:
                    self.inbox.put(parse_message(frame))
                except ProtocolError as exc:
                    self.inbox.put(exc)
        except ConnectionClosed:
            pass
        finally:
            self.inbox.put(_CLOSED)

    def send(self, msg: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        fut = asyncio.run_coroutine_threadsafe(ws.send(dump_message(msg)), self.loop)
        with contextlib.suppress(Exception):  # a closed channel: the caller notices on read
            fut.result(5)

    def close(self) -> None:
        stop = self._stop
        if stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(5)


class ToolCall:
    """One conversation with one tool process, driven from the calling thread."""

    def __init__(self, node: TaskNode, task_id: str, ctx: Context, workdir: Path) -> None:
        self.node = node
        self.task_id = task_id
        self.ctx = ctx
        self.workdir = workdir
        self.state: State | None = None
        self.outputs: dict[str, Any] = {}
        self.error: ErrorMessage | None = None
        self.terminated = False

    def on_status(self, msg: StatusMessage) -> None:
        if self.state is None:
            if msg.src is not None or msg.dst is not State.PENDING:
                raise ProcessTaskError(
                    f"the tool's first status must be null → pending, got {msg.src} → {msg.dst}",
                    etype="ProtocolError",
                )
        else:
            if msg.src is not self.state:
                raise ProcessTaskError(
                    f"the tool reported {msg.src} → {msg.dst} while it was {self.state}",
                    etype="ProtocolError",
                )
            try:
                check_transition(self.state, msg.dst)
            except IllegalTransition as exc:
                raise ProcessTaskError(str(exc), etype="ProtocolError") from None
        self.state = msg.dst

    def start_message(self, args: dict[str, Any]) -> StartMessage:
        out_dir = self.workdir / "outputs"
        out_dir.mkdir(parents=True, exist_ok=True)
        return StartMessage(
            inputs=wire_inputs(args, self.workdir),
            outputs=OutputPolicy(directory=str(out_dir)),
        )

    def result(self) -> Any:
        tool = self.node.tool
        if tool.output_kind == "none":
            return None
        names = tool.output_names
        missing = [n for n in names if n not in self.outputs]
        if missing:
            raise ProcessTaskError(
                f"the tool process sent no output {missing}", etype="OutputError"
            )
        if tool.output_kind == "single":
            return self.outputs[names[0]]
        return {n: self.outputs[n] for n in names}


def call_isolated(
    node: TaskNode,
    args: dict[str, Any],
    task_id: str,
    ctx: Context,
    timeout: float | None,
    sandbox: bool = False,
    runner: str | None = None,
) -> Any:
    """Call ``node``'s tool in ``python -m flowfed.runtime`` under ``runner``.

    ``runner`` is one of :data:`RUNNERS` (default ``"sandbox"`` if ``sandbox`` else
    ``"subprocess"``). Returns the value in the shape :meth:`ToolSpec.split_outputs`
    expects. Raises :class:`ProcessTaskError` (tool error, protocol violation, dead or hung
    process, cancel) or :class:`ProcessTimeout`.
    """
    kind = runner or ("sandbox" if sandbox else "subprocess")
    if kind not in RUNNERS:
        raise ValueError(f"unknown runner {kind!r}; use one of {', '.join(RUNNERS)}")
    workdir = Path(tempfile.mkdtemp(prefix="flowfed-isolated-")).resolve()
    entry = tool_entrypoint(node)
    # Everything the child interpreter imports from: an editable install's source tree
    # or a virtualenv may live under /tmp (a CI checkout), which the sandbox hides.
    readable = [Path.cwd(), Path(sys.prefix), Path(__file__).resolve().parents[2]]
    readable += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    source = entry.rpartition(":")[0]
    if source.endswith(".py"):
        readable.append(Path(source).parent)
    (workdir / "tmp").mkdir()
    sock = workdir / "control.sock" if kind != "subprocess" else None
    container_name = f"flowfed-{task_id[:24]}-{secrets.token_hex(4)}"
    engine = ""
    try:
        if kind == "sandbox":
            prefix = sandbox_command(workdir, readable)
            python = [sys.executable]
        elif kind == "container":
            engine = container_engine()
            cpus, memory = container_limits(node)
            # Only the tool's own folder: the image brings Python and flowfed.
            mounts = [Path(source).parent] if source.endswith(".py") else []
            prefix = container_command(
                engine,
                os.environ.get("FLOWFED_CONTAINER_IMAGE") or DEFAULT_IMAGE,
                workdir,
                name=container_name,
                readable=mounts,
                cpus=cpus,
                memory=memory,
                env={"TMPDIR": str(workdir / "tmp"), "PYTHONUNBUFFERED": "1"},
            )
            python = ["python"]
        else:
            prefix, python = [], [sys.executable]
    except (SandboxUnavailable, ContainerUnavailable):
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    channel = ToolChannel(sock)
    call = ToolCall(node, task_id, ctx, workdir)
    env = dict(os.environ)
    env["FLOWFED_TOOL_TOKEN"] = channel.token
    env["TMPDIR"] = str(workdir / "tmp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not prefix:
        # A plain child ends with us, even if we are killed outright (a sandbox or a
        # container has its own tie: --die-with-parent, the engine's --rm).
        env["FLOWFED_PARENT_PID"] = str(os.getpid())
    else:
        env.pop("FLOWFED_PARENT_PID", None)
    if sock is not None:
        endpoint = ["--endpoint", "ws://localhost/", "--unix-socket", str(sock)]
    else:
        endpoint = ["--endpoint", f"ws://127.0.0.1:{channel.port}"]
    cmd = [
        *prefix,
        *python,
        "-m",
        "flowfed.runtime",
        *endpoint,
        "--tool",
        entry,
        "--timeout",
        "60",
    ]
    try:
        return run_tool_process(call, channel, cmd, env, args, timeout, workdir)
    finally:
        if kind == "container" and engine:
            # Killing `docker run` does not stop its container: remove it by name.
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [engine, "rm", "--force", container_name],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                )
        channel.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run_tool_process(
    call: ToolCall,
    channel: Any,
    cmd: list[str],
    env: dict[str, str],
    args: dict[str, Any],
    timeout: float | None,
    workdir: Path,
) -> Any:
    """Start the tool's process, drive the call to its end, and reap the process.

    Its output goes to ``workdir/stderr.log`` (its tail explains a crash). The process
    gets a grace period to end on its own after a terminate, then is killed.
    """
    stderr_path = workdir / "stderr.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        return drive_tool(call, channel, proc, args, timeout, stderr_path)
    finally:
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(GRACE_S if call.terminated else 0.5)
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _heartbeat_s() -> float:
    raw = os.environ.get("FLOWFED_HEARTBEAT_S", "").strip()
    try:
        value = float(raw) if raw else HEARTBEAT_S
    except ValueError:
        value = HEARTBEAT_S
    return value if value > 0 else HEARTBEAT_S


def _dead(proc: subprocess.Popen[bytes], why: str, stderr_path: Path, etype: str) -> Exception:
    """Kill ``proc`` (if still alive) and describe its end: why, exit code, stderr tail."""
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    return ProcessTaskError(
        f"{why} (exit code {proc.returncode})" + stderr_tail(stderr_path), etype=etype
    )


def drive_tool(
    call: ToolCall,
    channel: ToolChannel,
    proc: subprocess.Popen[bytes],
    args: dict[str, Any],
    timeout: float | None,
    stderr_path: Path,
) -> Any:
    """Drive one call over ``channel`` with the running tool process ``proc`` to its end.

    Sends the call's ``args``, relays the tool's telemetry to ``call.ctx``, checks the
    heartbeats and the ``timeout``, and returns the tool's value or raises its failure
    (with the tail of ``stderr_path``). The node's warm sandbox workers drive their calls
    with it too, so a task runs under the same rules on a node as centrally.
    """
    ctx = call.ctx
    node = call.node
    beat = _heartbeat_s()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    beat_at = started + beat
    heard = started  # when the tool last sent a frame
    seq = 0
    closed = False
    while True:
        now = time.monotonic()
        if not call.terminated and ctx.cancelled:
            call.terminated = True
            channel.send(TerminateMessage(reason="cancelled", grace_seconds=GRACE_S))
            raise ProcessTaskError("cancelled", etype="Cancelled")
        if deadline is not None and now >= deadline:
            call.terminated = True
            channel.send(TerminateMessage(reason="timeout", grace_seconds=GRACE_S))
            raise ProcessTimeout(f"timed out after {timeout:g}s (tool process terminated)")
        if call.state is None and not closed and now - started > CONNECT_S:
            raise _dead(
                proc,
                f"the tool process did not connect within {CONNECT_S:g} s",
                stderr_path,
                "ConnectTimeout",
            )
        if call.state is not None and not closed and now - heard > beat * MISSED_BEATS:
            raise _dead(
                proc,
                f"the tool stopped answering heartbeats: nothing for {now - heard:.0f} s "
                f"({MISSED_BEATS} heartbeats of {beat:g} s); killed it",
                stderr_path,
                "HeartbeatTimeout",
            )
        if now >= beat_at and call.state is not None:
            seq += 1
            channel.send(HeartbeatMessage(seq=seq))
            beat_at = now + beat
        wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - now))
        try:
            msg = channel.inbox.get(timeout=wait)
        except queue.Empty:
            if proc.poll() is not None and (closed or call.state is None):
                if call.state is None:
                    why = "the tool process exited before connecting"
                else:
                    why = f"the tool process exited while {call.state} without a result"
                raise _dead(proc, why, stderr_path, "ProcessExited") from None
            continue
        if msg is _CLOSED:
            closed = True
            continue
        heard = time.monotonic()
        if isinstance(msg, ProtocolError):
            raise ProcessTaskError(f"protocol error from the tool: {msg}", etype="ProtocolError")
        if isinstance(msg, HelloMessage):
            if msg.tool is not None:
                channel.send(
                    WelcomeMessage(
                        task_id=call.task_id,
                        run_id=ctx.run_id or "local",
                        step=node.step,
                        node=node.node or "local",
                        attempt=max(1, ctx.attempt or 1),
                    )
                )
                channel.send(ConfigMessage(values=node.config_json(), revision=1))
        elif isinstance(msg, StatusMessage):
            call.on_status(msg)
            if msg.dst is State.INITIALIZED:
                channel.send(call.start_message(args))
            elif msg.dst is State.FINISHED:
                return call.result()
            elif msg.dst is State.ERROR:
                err = call.error
                if err is None:
                    raise ProcessTaskError(
                        f"the tool failed: {msg.detail or 'no detail'}", etype="Error"
                    )
                raise ProcessTaskError(err.message, err.traceback, err.error_type)
            elif msg.dst is State.CANCELLED:
                raise ProcessTaskError(
                    f"the tool was cancelled: {msg.detail or ''}".rstrip(": "), etype="Cancelled"
                )
        elif isinstance(msg, LogMessage):
            ctx.log(msg.message, msg.level)
        elif isinstance(msg, MetricMessage):
            ctx.metric(msg.name, msg.value, msg.step)
        elif isinstance(msg, ProgressMessage):
            if msg.total is not None or msg.unit is not None:
                ctx.progress(msg.done or 0, msg.total, msg.message, unit=msg.unit)
            else:
                ctx.progress(msg.fraction, message=msg.message)
        elif isinstance(msg, ResourcesMessage):
            ctx.report_resources(
                {"wall_s": msg.wall_s, "cpu_s": msg.cpu_s, "peak_rss_mb": msg.peak_rss_mb}
            )
        elif isinstance(msg, OutputMessage):
            call.outputs[msg.name] = decode_output(msg, call.workdir / "outputs")
        elif isinstance(msg, ErrorMessage):
            call.error = msg
        # heartbeats echoed by the tool need no answer
