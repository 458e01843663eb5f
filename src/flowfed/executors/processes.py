"""Run a tool call in its own forked process: crash isolation and killable timeouts.

Each call forks a child that runs only the tool function and talks back over a pipe:
telemetry messages (``log``, ``metric``, ``progress``) while it runs, then one ``result``
or ``error``. A timeout or a cancel kills the child, which threads cannot do. Fork keeps
tools imported from flow files (registered under synthetic module names) callable
without re-importing them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from flowfed.plan.graph import TaskNode
from flowfed.runtime.usage import measured
from flowfed.tools.core import Context, call_tool


class ProcessTaskError(Exception):
    """A tool that raised (or died) inside its process; the message carries its traceback."""

    def __init__(self, message: str, tb: str | None = None, etype: str = "Error") -> None:
        super().__init__(message)
        self.remote_traceback = tb
        self.etype = etype


class ProcessTimeout(Exception):
    """The tool did not finish within its step's timeout and was killed."""


#: Seconds between checks for cancel and timeout while a call runs elsewhere.
POLL_S = 0.05

_T = TypeVar("_T")


def wait_for_call(
    poll: Callable[[float], tuple[_T] | None],
    ctx: Context,
    timeout: float | None,
    stopped: str,
) -> _T:
    """Wait for a call running elsewhere (a thread, a child process, a cluster task).

    ``poll(wait)`` waits up to ``wait`` seconds and returns ``(value,)`` once the call
    returned, or None while it runs (it raises the call's own failure). Between polls a
    cancelled ``ctx`` raises :class:`ProcessTaskError` (type ``Cancelled``) and a passed
    ``timeout`` :class:`ProcessTimeout` ("timed out after 2s (``stopped``)"); the caller
    stops the call in either case. The one wait loop of every executor.

    Example:
        >>> from flowfed.tools.core import Context
        >>> wait_for_call(lambda wait: (42,), Context(), 1.0, "abandoned")
        42
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
        done = poll(wait)
        if done is not None:
            return done[0]
        if ctx.cancelled:
            raise ProcessTaskError("cancelled", etype="Cancelled")
        if deadline is not None and time.monotonic() >= deadline:
            raise ProcessTimeout(f"timed out after {timeout:g}s ({stopped})")


def _child(conn: Connection, node: TaskNode, args: dict[str, Any], task_id: str) -> None:
    # The usage sampler sends from its own thread: one message at a time on the pipe.
    lock = threading.Lock()

    def sink(kind: str, payload: dict[str, Any]) -> None:
        with lock:
            conn.send(("telemetry", kind, payload))

    ctx = Context(sink, task_id=task_id, step=node.step, node=node.node)
    try:
        with measured(ctx.report_resources, "process"):
            value = call_tool(node.tool, args, node.config, ctx)
        with lock:
            conn.send(("result", value))
    except BaseException as exc:
        # The parent may be gone already; there is nobody left to tell.
        with contextlib.suppress(Exception):
            lock.acquire(timeout=5)
            conn.send(
                (
                    "error",
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                    type(exc).__name__,
                )
            )
    finally:
        conn.close()
        os._exit(0)  # skip atexit handlers inherited from the parent (DB pools, threads)


def call_in_process(
    node: TaskNode, args: dict[str, Any], task_id: str, ctx: Context, timeout: float | None
) -> Any:
    """Call ``node``'s tool in a forked child; relay its telemetry to ``ctx``."""
    fork = mp.get_context("fork")
    parent, child = fork.Pipe(duplex=False)
    proc = fork.Process(target=_child, args=(child, node, args, task_id), daemon=True)
    proc.start()
    child.close()

    def poll(wait: float) -> tuple[Any] | None:
        if parent.poll(wait):
            try:
                msg = parent.recv()
            except EOFError:
                proc.join(1)
                raise ProcessTaskError(
                    f"tool process exited with code {proc.exitcode} without a result",
                    etype="ProcessExited",
                ) from None
            if msg[0] == "telemetry" and msg[1] == "resources":
                ctx.report_resources(msg[2])
                return None
            if msg[0] == "telemetry":
                getattr(ctx, msg[1])(**_telemetry_kwargs(msg[1], msg[2]))
                return None
            if msg[0] == "result":
                return (msg[1],)
            raise ProcessTaskError(msg[1], msg[2], msg[3])
        if not proc.is_alive() and not parent.poll(0):
            raise ProcessTaskError(
                f"tool process died with exit code {proc.exitcode}", etype="ProcessExited"
            )
        return None

    try:
        return wait_for_call(poll, ctx, timeout, "process killed")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()


def _telemetry_kwargs(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind == "log":
        return {"message": payload["message"], "level": payload["level"]}
    if kind == "metric":
        return {"name": payload["name"], "value": payload["value"], "step": payload.get("step")}
    if payload.get("total") is not None or payload.get("unit") is not None:
        return {
            "done": payload.get("done", 0),
            "total": payload.get("total"),
            "message": payload.get("message"),
            "unit": payload.get("unit"),
        }
    return {"done": payload["fraction"], "message": payload.get("message")}
