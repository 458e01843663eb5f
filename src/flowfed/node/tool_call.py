"""Calling a task's tool on a node: with the node's runner, under its timeout and cancel.

:func:`call_on_node` runs the tool in a thread of the agent (``inprocess``), in a child
process (``subprocess``) or in a warm sandbox (``sandbox``, :mod:`flowfed.node.runners`),
passes a terminate from the server on to the tool, and turns whatever goes wrong
(a hang, a crash, garbage, an exception) into a :class:`TaskFailure` worded for the user.

A room of its own because it is the one place a tool's code runs; what it is given
(:mod:`flowfed.node.task_inputs`) and what may leave (:mod:`flowfed.node.egress`) are apart.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

from flowfed.node.agent_config import NodeConfig
from flowfed.node.task_failure import TaskFailure
from flowfed.runtime.remote import RemoteTask
from flowfed.runtime.usage import measured
from flowfed.tools.core import Context, ToolSpec, call_tool


def call_on_node(
    owner: Any,
    config: NodeConfig,
    spec: ToolSpec,
    task: RemoteTask,
    args: dict[str, Any],
    cfg: Any,
    ctx: Context,
    cancel: threading.Event,
    dataset: dict[str, Any] | None,
) -> Any:
    """Call ``spec`` with the node's runner; its value, or :class:`TaskFailure`.

    ``owner`` (the agent) keys the warm sandboxes; a terminate sets ``cancel``.
    """
    if config.runner == "inprocess":
        return call_inprocess(spec, task, args, cfg, ctx, cancel)
    from flowfed.executors.isolated import SandboxUnavailable
    from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
    from flowfed.node.runners import limit_hint, run_isolated, run_sandboxed

    limits = config.limits
    task_context = {"dataset": ctx.dataset, "round": task.round}
    done = threading.Event()
    watcher = threading.Thread(target=watch_cancel, args=(cancel, done, ctx), daemon=True)
    watcher.start()
    try:
        if config.runner == "subprocess":
            return run_isolated(spec, args, task.config, ctx, task.timeout, task_context)
        # A warm sandbox per (run, dataset): it shows the tool that dataset's file
        # and nothing else of the node; each task still gets a fresh area and process.
        return run_sandboxed(
            owner,
            base=config.work_dir.resolve() / "sandboxes",
            max_workers=max(4, 2 * config.max_tasks),
            run_id=task.run_id,
            dataset=dataset,
            imports=config.imports,
            limits=limits,
            spec=spec,
            args=args,
            config=task.config,
            ctx=ctx,
            timeout=task.timeout,
            task_context=task_context,
        )
    except SandboxUnavailable as exc:
        raise TaskFailure(str(exc), "IsolationError", public=True) from None
    except ProcessTimeout as exc:
        raise TaskFailure(f"the tool hung: {exc}", "Timeout") from None
    except ProcessTaskError as exc:
        etype = getattr(exc, "etype", None) or "Error"
        message = str(exc)
        if etype == "ProcessExited":
            message = f"the tool's process exited: {message}"
        elif etype in ("ProtocolError", "OutputError") or message.startswith("output '"):
            # The tool-side runtime refuses an output it cannot materialize.
            message = f"the tool sent garbage: {message}"
        elif etype not in ("Cancelled",):
            message = message.removeprefix(f"{etype}: ")
            message = f"the tool raised {etype}: {message}"
            if config.runner == "sandbox":
                message += limit_hint(etype, message, limits)
        raise TaskFailure(message, etype, exc.remote_traceback) from None
    finally:
        done.set()


def watch_cancel(cancel: threading.Event, done: threading.Event, ctx: Context) -> None:
    """Cancel ``ctx`` once ``cancel`` is set, until ``done``."""
    # The isolated driver polls ctx.cancelled: a terminate from the server sets it.
    while not done.wait(0.1):
        if cancel.is_set():
            ctx.cancel()
            return


def call_inprocess(
    spec: ToolSpec,
    task: RemoteTask,
    args: dict[str, Any],
    cfg: Any,
    ctx: Context,
    cancel: threading.Event,
) -> Any:
    """Call ``spec`` in a thread of the agent (``--runner inprocess``), with its timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with measured(ctx.report_resources, "thread"):
                box["value"] = call_tool(spec, args, cfg, ctx)
        except BaseException as exc:  # reported to the waiting thread
            box["error"] = exc
            box["tb"] = traceback.format_exc()

    t = threading.Thread(target=target, name=f"flowfed-tool-{task.task_id}", daemon=True)
    t.start()
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    while t.is_alive():
        if cancel.is_set():
            ctx.cancel()
            raise TaskFailure("cancelled", "Cancelled")
        if deadline is not None and time.monotonic() >= deadline:
            ctx.cancel()  # a cooperative tool stops; the thread is abandoned otherwise
            raise TaskFailure(
                f"the tool hung: no result after {task.timeout:g}s (its timeout)", "Timeout"
            )
        t.join(0.05)
    if "error" in box:
        exc = box["error"]
        raise TaskFailure(
            f"the tool raised {type(exc).__name__}: {exc}", type(exc).__name__, box["tb"]
        )
    return box.get("value")
