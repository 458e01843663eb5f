"""The subprocess runner, and the task shim both process runners hand to the isolated driver.

``--runner subprocess`` runs each task in ``python -m flowfed.runtime``: a plain child
process of the agent, no isolation (development only, it needs ``--insecure``). Like the
sandbox's workers it speaks the tool-side protocol to :mod:`flowfed.executors.isolated`,
which expects a plan ``TaskNode``; :class:`TaskShim` is the little of one it reads.

A room of its own because it is a runner of its own kind; the sandbox modules
(:mod:`flowfed.node.sandbox_worker`, :mod:`flowfed.node.worker_pool`) import the shim from
here, and this runner needs nothing of theirs.

Example:
    >>> shim = TaskShim(tool=None, step="train", node="hospital-a", config={"epochs": 1})
    >>> shim.config_json()
    {'epochs': 1}
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowfed.executors.isolated import ToolCall, ToolChannel, run_tool_process, tool_entrypoint
from flowfed.tools.core import Context, ToolSpec


@dataclass(eq=False)
class TaskShim:
    """The parts of a plan ``TaskNode`` that :mod:`flowfed.executors.isolated` reads."""

    tool: ToolSpec
    step: str
    node: str
    config: dict[str, Any]

    def config_json(self) -> dict[str, Any]:
        """The task's config, as a ``TaskNode`` gives it."""
        return self.config


def run_isolated(
    spec: ToolSpec,
    args: dict[str, Any],
    config: dict[str, Any],
    ctx: Context,
    timeout: float | None,
    task_context: dict[str, Any],
) -> Any:
    """Run ``spec`` in ``python -m flowfed.runtime``, a plain child process (no isolation).

    Returns the tool's value in the shape :meth:`ToolSpec.split_outputs` expects; raises
    :class:`~flowfed.executors.processes.ProcessTaskError` or ``ProcessTimeout`` as
    :func:`flowfed.executors.isolated.call_isolated` does.
    """
    from flowfed.node.client_state import hand_over, take_back

    shim = TaskShim(spec, ctx.step, ctx.node, config)
    workdir = Path(tempfile.mkdtemp(prefix="flowfed-node-task-")).resolve()
    task_context = dict(task_context)
    state_file = hand_over(ctx, workdir, task_context)
    entry = tool_entrypoint(shim)  # type: ignore[arg-type]
    channel = ToolChannel()
    env = dict(os.environ)
    env["FLOWFED_TOOL_TOKEN"] = channel.token
    env["FLOWFED_TASK_CONTEXT"] = json.dumps(task_context)
    env["TMPDIR"] = str(workdir / "tmp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The tool process ends with the agent, even when the agent is killed outright.
    env["FLOWFED_PARENT_PID"] = str(os.getpid())
    (workdir / "tmp").mkdir()
    cmd = [
        sys.executable, "-m", "flowfed.runtime", "--tool", entry, "--timeout", "60",
        "--endpoint", f"ws://127.0.0.1:{channel.port}",
    ]  # fmt: skip
    call = ToolCall(shim, ctx.task_id, ctx, workdir)  # type: ignore[arg-type]
    try:
        value = run_tool_process(call, channel, cmd, env, args, timeout, workdir)
        take_back(ctx, state_file)
        return value
    finally:
        channel.close()
        shutil.rmtree(workdir, ignore_errors=True)
