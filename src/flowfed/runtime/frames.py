"""The frames the engine composes from what it knows: ``hello``, telemetry and ``error``.

Each builder is a pure function of the run's facts (its tool, options, welcome, state),
so the engine's lifecycle reads as what it sends when, and what goes into a frame is
found here: a ``hello``'s tool and runtime description, the mapping of a tool's
:class:`~flowfed.tools.core.Context` events to ``log``/``metric``/``progress`` frames, and
an ``error``'s context.

Example:
    >>> telemetry_message("metric", {"name": "loss", "value": 0.5, "step": 1}).name
    'loss'
    >>> telemetry_message("resources", {}) is None
    True
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

from flowfed.runtime.channel import EngineOptions
from flowfed.runtime.failures import RunFailure
from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    ErrorMessage,
    HelloMessage,
    LogMessage,
    MetricMessage,
    ProgressMessage,
    RuntimeInfo,
    ToolInfo,
    WelcomeMessage,
)
from flowfed.runtime.tool_loading import tool_schema
from flowfed.runtime.usage import clean_counts
from flowfed.tools.core import ToolSpec


def hello_message(spec: ToolSpec | None, opts: EngineOptions) -> HelloMessage:
    """The first frame of a run: who runs (the tool, when it loaded) and where.

    ``spec`` is None when the tool failed to load: the platform still learns the
    entrypoint and the runtime that failed.
    """
    info = None
    if spec is not None:
        info = ToolInfo(
            name=spec.name,
            version=spec.version,
            type=str(spec.type),
            inputs=list(spec.inputs),
            outputs=spec.output_names,
            config_schema=tool_schema(spec),
        )
    from flowfed import __version__

    return HelloMessage(
        entrypoint=opts.tool,
        tool=info,
        runtime=RuntimeInfo(
            python=platform.python_version(),
            platform=platform.platform(),
            pid=os.getpid(),
            hostname=socket.gethostname(),
            flowfed=__version__,
        ),
        mode="development" if opts.dev else "production",
    )


def telemetry_message(
    kind: str, payload: dict[str, Any]
) -> LogMessage | MetricMessage | ProgressMessage | None:
    """The frame for a :class:`~flowfed.tools.core.Context` event; None for other kinds."""
    if kind == "log":
        level = payload.get("level", "info")
        return LogMessage(
            level=level if level in ("debug", "info", "warning", "error") else "info",
            message=payload["message"],
        )
    if kind == "metric":
        return MetricMessage(name=payload["name"], value=payload["value"], step=payload["step"])
    if kind == "progress":
        counts = clean_counts(payload) or {}
        return ProgressMessage(
            fraction=payload["fraction"],
            message=payload.get("message"),
            done=counts.get("done"),
            total=counts.get("total"),
            unit=counts.get("unit"),
        )
    return None


def error_message(
    failure: RunFailure,
    *,
    state: State,
    spec: ToolSpec | None,
    opts: EngineOptions,
    welcome: WelcomeMessage,
    elapsed_s: float,
    fatal: bool = True,
) -> ErrorMessage:
    """The structured ``error`` frame for ``failure``, with the run's context.

    The context (state, phase, tool, task identity, mode, interpreter, pid, time since
    start) is what a reader of the error needs without the tool's logs.
    """
    w = welcome
    context = {
        "state": str(state),
        "phase": failure.phase,
        "tool": spec.ref if spec else None,
        "entrypoint": opts.tool,
        "task_id": w.task_id,
        "run_id": w.run_id,
        "step": w.step,
        "node": w.node,
        "attempt": w.attempt,
        "mode": "development" if opts.dev else "production",
        "python": platform.python_version(),
        "pid": os.getpid(),
        "elapsed_s": round(elapsed_s, 3),
    }
    return ErrorMessage(
        message=failure.message,
        error_type=failure.error_type,
        phase=failure.phase,
        details=failure.details,
        traceback=failure.tb,
        context=context,
        fatal=fatal,
    )
