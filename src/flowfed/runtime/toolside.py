"""The tool-side engine: drives one tool run through the lifecycle over the WebSocket channel.

It runs inside the tool's sandbox or container (``python -m flowfed.runtime``), so it
imports only ``flowfed.tools``, ``flowfed.runtime``, pydantic and websockets (httpx and
numpy only when an input needs them). The tool's code stays the domain function; this
module does everything around it:

``Pending``
    connect with the bearer token (retrying until ``--timeout``), send ``hello`` and a
    ``status`` for Pending, receive ``welcome`` and ``config``, validate the config against
    the tool's schema.
``Initialized``
    wait for ``start`` or ``terminate`` (and, in development mode, ``config`` updates),
    answering heartbeats; more than ``--timeout`` seconds without a frame is an error.
``Started``
    resolve and validate every input (inline, a path in the sandbox, a one-time URL), merge
    the hyperparameters into the config and validate again.
``Running``
    call the function through :func:`flowfed.tools.call_tool`; its :class:`Context` turns
    ``log``/``metric``/``progress`` calls into frames.
``Finished``
    send one ``output`` per declared output (content-hashed), then the final ``status``.
``Error`` / ``Cancelled``
    send a structured ``error`` (message, traceback, context) and the final ``status``.

Every state change goes through :class:`flowfed.runtime.lifecycle.Lifecycle` and is sent as
a ``status`` frame; temporary files are removed on every path.

Exit codes: 0 finished or terminated on request, 1 error, 2 bad command line,
75 platform unreachable within the timeout (``EX_TEMPFAIL``: worth retrying).

This module is the engine's lifecycle, the frames it receives and sends, and the command
line. The phases' work lives beside it, and its names are importable from here as well:

=======================================  ==========================================
:mod:`flowfed.runtime.channel`           ``EngineOptions``, opening the WebSocket
:mod:`flowfed.runtime.tool_loading`      ``load_tool``, its config schema and validation
:mod:`flowfed.runtime.inputs`            resolving and checking inputs (Started)
:mod:`flowfed.runtime.outputs`           ``materialize_value``, ``canonical_json`` (Finished)
:mod:`flowfed.runtime.failures`          exit codes, ``RunFailure`` and the channel's errors
:mod:`flowfed.runtime.frames`            the ``hello``, telemetry and ``error`` frames
:mod:`flowfed.runtime.taskenv`           what a node passes through the environment
=======================================  ==========================================
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from flowfed.runtime.channel import EngineOptions, open_channel
from flowfed.runtime.failures import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ChannelLost,
    PlatformRefused,
    PlatformUnreachable,
    RunFailure,
)
from flowfed.runtime.frames import error_message, hello_message, telemetry_message
from flowfed.runtime.inputs import resolve_inputs
from flowfed.runtime.lifecycle import Lifecycle, State
from flowfed.runtime.outputs import canonical_json, materialize_value, output_messages
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorDetail,
    ErrorMessage,
    HeartbeatMessage,
    LogMessage,
    Message,
    ProtocolError,
    ResourcesMessage,
    StartMessage,
    StatusMessage,
    TerminateMessage,
    WelcomeMessage,
    dump_message,
    parse_message,
)
from flowfed.runtime.taskenv import client_state_file, die_with_parent, task_context
from flowfed.runtime.tool_loading import load_tool, tool_schema, validate_config
from flowfed.runtime.usage import measured
from flowfed.tools.core import Context, ToolSpec, call_tool

# What devmode, the warm worker, a cluster worker and the tests import from here (most of
# it lived here before the phases got modules of their own).
__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EngineOptions",
    "RunFailure",
    "ToolEngine",
    "build_parser",
    "canonical_json",
    "load_tool",
    "main",
    "materialize_value",
    "tool_schema",
]

_CLOSED = object()


class ToolEngine:
    """One tool run over one WebSocket: the Pending → … → Finished/Error loop.

    ``connector`` opens the WebSocket (the tests never replace it; it exists so an embedding
    node agent can pass a pre-configured client).
    """

    def __init__(
        self,
        options: EngineOptions,
        *,
        connector: Callable[..., ClientConnection] = connect,
        stderr: Any = None,
    ) -> None:
        self.opts = options
        self._connector = connector
        self._stderr = stderr if stderr is not None else sys.stderr
        self._lc = Lifecycle()
        # RLock: the grace timer and the main thread both move the lifecycle.
        self._state_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._last_seen = time.monotonic()
        self._ws: ClientConnection | None = None
        self._spec: ToolSpec | None = None
        self._welcome = WelcomeMessage()
        self._config_values: dict[str, Any] = {}
        self._ctx: Context | None = None
        self._terminate: TerminateMessage | None = None
        self._violation: ProtocolError | None = None
        self._channel_lost = False
        self._workdir: Path | None = None
        self._started_at = time.monotonic()

    @property
    def state(self) -> State:
        """The run's lifecycle state (Pending until connected and configured)."""
        return self._lc.state

    @property
    def reached(self) -> set[State]:
        """Every state the run has been in (to tell a failed start from a failed execution)."""
        return {State.PENDING, *(tr.to for tr in self._lc.history)}

    # --- entry point -------------------------------------------------------------------

    def run(self) -> int:
        """Run the whole lifecycle; returns the process exit code."""
        try:
            self._ws = open_channel(self.opts, self._connector)
        except PlatformUnreachable as exc:
            self._say(f"flowfed runtime: {exc}")
            return EXIT_UNREACHABLE
        except PlatformRefused as exc:
            self._say(f"flowfed runtime: {exc}")
            return EXIT_ERROR
        receiver = threading.Thread(target=self._receive_loop, name="flowfed-rx", daemon=True)
        receiver.start()
        try:
            return self._lifecycle()
        except RunFailure as failure:
            self._report(failure)
            return EXIT_ERROR
        except ChannelLost as exc:
            self._say(f"flowfed runtime: {exc}")
            with self._state_lock:
                if not self._lc.state.terminal:
                    self._lc.advance(State.ERROR, str(exc))
            return EXIT_ERROR
        except Exception as exc:  # a bug in the engine itself: still report it, structured
            self._report(
                RunFailure(
                    f"runtime failure: {type(exc).__name__}: {exc}",
                    phase="runtime",
                    error_type=type(exc).__name__,
                    tb=traceback.format_exc(),
                )
            )
            return EXIT_ERROR
        finally:
            self._cleanup()
            self._close()

    def _lifecycle(self) -> int:
        # Pending: identify, receive the run identity and the config.
        try:
            self._spec = load_tool(self.opts.tool)
        finally:
            # hello goes first whatever happens, so the platform always knows who failed.
            self._send(hello_message(self._spec, self.opts))
            self._send(StatusMessage(src=None, dst=State.PENDING, detail="connected"))
        self._welcome = self._expect(WelcomeMessage, "welcome")
        config = self._expect(ConfigMessage, "config")
        self._validate_config(config.values, phase="config")
        self._config_values = dict(config.values)
        self._advance(State.INITIALIZED, f"config revision {config.revision} valid")

        start = self._idle()
        if start is None:
            return EXIT_OK

        self._advance(State.STARTED)
        self._workdir = Path(tempfile.mkdtemp(prefix="flowfed-run-"))
        args = resolve_inputs(self._spec, start, self._workdir, self.opts.timeout)
        cfg = self._validate_config(
            {**self._config_values, **start.hyperparameters}, phase="hyperparameters"
        )
        if self._terminate is not None:
            return self._cancelled(self._terminate)

        self._advance(State.RUNNING)
        result = self._call(args, cfg)
        self._drain_after_run()
        if self._terminate is not None:
            return self._cancelled(self._terminate)
        if self._violation is not None:
            raise self._protocol_failure(self._violation)

        outputs = output_messages(self._spec, result, start.outputs, self._workdir)
        for out in outputs:
            self._send(out)
        self._advance(State.FINISHED, f"{len(outputs)} output(s)")
        return EXIT_OK

    # --- phases ------------------------------------------------------------------------

    def _idle(self) -> StartMessage | None:
        """Initialized: wait for start (returned) or terminate (None)."""
        while True:
            msg = self._next("start")
            if isinstance(msg, StartMessage):
                return msg
            if isinstance(msg, TerminateMessage):
                self._cancelled(msg)
                return None
            if isinstance(msg, ConfigMessage) and self.opts.dev:
                self._update_config(msg)
                continue
            if isinstance(msg, ConfigMessage):
                raise RunFailure(
                    "config updates are accepted only in development mode (--dev)",
                    phase="protocol",
                    error_type="ProtocolError",
                    details=[ErrorDetail(field="type", message="unexpected 'config'")],
                )
            raise RunFailure(
                f"unexpected {msg.type!r} message while initialized",
                phase="protocol",
                error_type="ProtocolError",
                details=[ErrorDetail(field="type", message=f"unexpected {msg.type!r}")],
            )

    def _update_config(self, msg: ConfigMessage) -> None:
        # A bad update in development mode is the user's typo, not a dead run: report it,
        # keep the previous config and stay idle.
        try:
            self._validate_config(msg.values, phase="config")
        except RunFailure as failure:
            self._send(self._error_frame(failure, fatal=False))
            return
        self._config_values = dict(msg.values)
        self._send(LogMessage(message=f"config revision {msg.revision} applied"))

    def _validate_config(self, values: dict[str, Any], *, phase: str) -> BaseModel:
        assert self._spec is not None
        return validate_config(self._spec, values, phase=phase)

    def _call(self, args: dict[str, Any], cfg: BaseModel) -> Any:
        """Running: the domain function, with telemetry flowing out through its Context."""
        assert self._spec is not None
        w = self._welcome
        ctx = Context(
            self._telemetry,
            run_id=w.run_id,
            task_id=w.task_id,
            step=w.step,
            node=w.node,
            attempt=w.attempt,
            # A node agent's runner passes the task's dataset and round this way.
            **task_context(),
        )
        state_file = client_state_file()
        if state_file is not None:
            from flowfed.tools.client_state import ClientState

            # The node wrote this client's state into the task's own area (sandbox or
            # work folder); what the tool leaves is written back beside it for the node.
            held = state_file.read_bytes() if state_file.exists() else None
            ctx._client_state = ClientState() if held is None else ClientState.from_bytes(held)
        with self._state_lock:
            self._ctx = ctx
            # A terminate that arrived during Started must still stop a cooperative tool.
            if self._terminate is not None:
                ctx.cancel()
        try:
            # This process runs one task: its CPU and peak memory are the task's.
            with measured(self._resources, "process"):
                result = call_tool(self._spec, args, cfg, ctx)
            if state_file is not None and ctx._client_state.changed:
                out = state_file.with_name(state_file.name + ".out")
                out.write_bytes(ctx._client_state.to_bytes())
            return result
        except Exception as exc:
            if self._terminate is not None:
                return None  # the tool stopped because we asked it to
            raise RunFailure(
                f"{type(exc).__name__}: {exc}",
                phase="running",
                error_type=type(exc).__name__,
                tb=traceback.format_exc(),
            ) from None
        finally:
            self._ctx = None

    def _telemetry(self, kind: str, payload: dict[str, Any]) -> None:
        msg = telemetry_message(kind, payload)
        if msg is None:
            return
        try:
            self._send(msg)
        except ChannelLost:
            # The tool cannot do anything useful about a lost channel; stop it cooperatively.
            if self._ctx is not None:
                self._ctx.cancel()

    def _resources(self, figures: dict[str, float]) -> None:
        # From the usage sampler's thread too: a lost channel only loses a sample.
        with contextlib.suppress(ChannelLost):
            self._send(ResourcesMessage(**figures))

    def _cancelled(self, msg: TerminateMessage) -> int:
        self._advance(State.CANCELLED, f"terminated: {msg.reason}" if msg.reason else "terminated")
        return EXIT_OK

    def _drain_after_run(self) -> None:
        # Frames that raced with the start of Running were queued instead of handled.
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, TerminateMessage):
                self._terminate = self._terminate or item
            elif isinstance(item, ProtocolError):
                self._violation = self._violation or item
            elif item is _CLOSED:
                raise ChannelLost("the platform closed the channel during the run")
            else:
                self._violation = self._violation or ProtocolError(
                    f"unexpected {item.type!r} message while running", field="type"
                )

    # --- channel -----------------------------------------------------------------------

    def _receive_loop(self) -> None:
        assert self._ws is not None
        try:
            for frame in self._ws:
                self._last_seen = time.monotonic()
                try:
                    self._dispatch(parse_message(frame))
                except ProtocolError as exc:
                    self._dispatch(exc)
        except ConnectionClosed:
            pass
        finally:
            self._channel_lost = True
            self._inbox.put(_CLOSED)

    def _dispatch(self, item: Message | ProtocolError) -> None:
        if isinstance(item, HeartbeatMessage):
            # Answered here, whatever the main thread is doing, so a long tool stays alive.
            with contextlib.suppress(ChannelLost):
                self._send(HeartbeatMessage(seq=item.seq))
            return
        with self._state_lock:
            working = self._lc.state in (State.STARTED, State.RUNNING)
            if not working:
                self._inbox.put(item)
                return
            if isinstance(item, TerminateMessage):
                self._terminate = self._terminate or item
                self._stop_tool(item.grace_seconds)
                return
            self._violation = self._violation or (
                item
                if isinstance(item, ProtocolError)
                else ProtocolError(
                    f"unexpected {item.type!r} message while {self._lc.state}", field="type"
                )
            )
            if self._ctx is not None:
                self._ctx.cancel()

    def _stop_tool(self, grace: float) -> None:
        if self._ctx is not None:
            self._ctx.cancel()
        timer = threading.Timer(grace, self._hard_stop)
        timer.daemon = True
        timer.start()

    def _hard_stop(self) -> None:
        # The tool ignored cancellation for the whole grace period: record the cancel and
        # leave. os._exit because the main thread is stuck inside tool code.
        with self._state_lock:
            if self._lc.state not in (State.STARTED, State.RUNNING):
                return
            grace = self._terminate.grace_seconds if self._terminate else 0
            self._advance(
                State.CANCELLED, f"terminated; the tool did not return within {grace:g} s"
            )
        self._cleanup()
        self._close()
        os._exit(EXIT_OK)

    def _next(self, waiting_for: str) -> Message:
        """The next frame for the main thread, enforcing the idle timeout."""
        while True:
            remaining = self._last_seen + self.opts.timeout - time.monotonic()
            if remaining <= 0:
                raise RunFailure(
                    f"idle timeout: no message from the platform for {self.opts.timeout:g} s "
                    f"while waiting for {waiting_for!r}",
                    phase="timeout",
                    error_type="IdleTimeout",
                )
            try:
                item = self._inbox.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                continue
            if item is _CLOSED:
                raise ChannelLost(f"the platform closed the channel while awaiting {waiting_for}")
            if isinstance(item, ProtocolError):
                raise self._protocol_failure(item)
            return item

    def _expect(self, cls: type[Any], name: str) -> Any:
        msg = self._next(name)
        if not isinstance(msg, cls):
            raise RunFailure(
                f"expected a {name!r} message, got {msg.type!r}",
                phase="protocol",
                error_type="ProtocolError",
                details=[ErrorDetail(field="type", message=f"expected {name!r}")],
            )
        return msg

    def _protocol_failure(self, exc: ProtocolError) -> RunFailure:
        return RunFailure(
            f"protocol error: {exc}",
            phase="protocol",
            error_type="ProtocolError",
            details=[ErrorDetail(field=exc.field or "", message=str(exc))],
        )

    def _send(self, msg: Any) -> None:
        if self._ws is None or self._channel_lost:
            raise ChannelLost("the channel to the platform is closed")
        frame = dump_message(msg)
        try:
            with self._send_lock:
                self._ws.send(frame)
        except ConnectionClosed as exc:
            self._channel_lost = True
            raise ChannelLost(f"the platform closed the channel: {exc}") from None

    def _advance(self, dst: State, detail: str | None = None) -> None:
        with self._state_lock:
            tr = self._lc.advance(dst, detail)
            try:
                self._send(StatusMessage(src=tr.src, dst=tr.to, at=tr.at, detail=tr.detail))
            except ChannelLost:
                if dst not in (State.ERROR, State.CANCELLED):
                    raise

    # --- reporting and cleanup -----------------------------------------------------------

    def _error_frame(self, failure: RunFailure, *, fatal: bool = True) -> ErrorMessage:
        return error_message(
            failure,
            state=self._lc.state,
            spec=self._spec,
            opts=self.opts,
            welcome=self._welcome,
            elapsed_s=time.monotonic() - self._started_at,
            fatal=fatal,
        )

    def _report(self, failure: RunFailure) -> None:
        """Error: the structured error, then the final status (the last frame of the run)."""
        self._say(f"flowfed runtime: {failure.phase}: {failure.message}")
        if failure.tb:
            self._say(failure.tb.rstrip())
        with contextlib.suppress(ChannelLost):
            self._send(self._error_frame(failure))
        with self._state_lock:
            if not self._lc.state.terminal:
                self._advance(State.ERROR, failure.message[:500])

    def _say(self, text: str) -> None:
        print(text, file=self._stderr, flush=True)

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _close(self) -> None:
        if self._ws is not None:
            # Closing an already broken socket can fail; there is nothing left to do then.
            with contextlib.suppress(Exception):
                self._ws.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m flowfed.runtime``."""
    p = argparse.ArgumentParser(
        prog="python -m flowfed.runtime",
        description="Run one flowfed tool under the platform's control over a WebSocket.",
    )
    p.add_argument("--endpoint", required=True, help="ws:// or wss:// URL of the control channel")
    p.add_argument(
        "--token",
        default=os.environ.get("FLOWFED_TOOL_TOKEN"),
        help="bearer token (OAuth2 access token of role tool); default $FLOWFED_TOOL_TOKEN",
    )
    p.add_argument("--tool", required=True, help="module_or_file:function_name")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to connect, and the longest silence from the platform while waiting",
    )
    p.add_argument("--dev", action="store_true", help="development mode: accept config updates")
    p.add_argument(
        "--unix-socket",
        default=None,
        help="reach the endpoint through this Unix socket (sandbox and container runners)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the engine; returns the exit code.

    Example:
        >>> main(["--endpoint", "ws://127.0.0.1:9", "--token", "t", "--tool", "no_colon"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    die_with_parent()
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.token:
        parser.error("a token is required (--token or $FLOWFED_TOOL_TOKEN)")
    if ":" not in ns.tool:
        parser.error("--tool must read module_or_file:function_name")
    if ns.timeout <= 0:
        parser.error("--timeout must be positive")
    opts = EngineOptions(
        endpoint=ns.endpoint,
        token=ns.token,
        tool=ns.tool,
        timeout=ns.timeout,
        dev=ns.dev,
        unix_socket=ns.unix_socket,
    )
    return ToolEngine(opts).run()
