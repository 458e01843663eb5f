"""Simulated nodes: every node in this process, for research at scale (``--simulate``).

:class:`SimulatedNodes` implements :class:`~flowfed.runtime.remote.NodeDispatcher` like
the server's node hub, with the same data-locality contract: each simulated node keeps
its own store, a task reads only its own node's datasets and artifacts, and only
shareable outputs come back with their bytes. What it leaves out is the isolation and
the network: tools run in the calling thread, on Python objects (a node-local artifact
is kept as the object itself, so a round does not re-read its training table), and
timeouts are not enforced. Hundreds of nodes fit in one process.

Example:
    >>> sim = SimulatedNodes({})
    >>> sim.nodes()
    {}
"""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from typing import Any

from flowfed.artifacts import load
from flowfed.node.outputs import (
    OutputProblem,
    TaskProblem,
    task_context,
    task_dataset,
    task_outputs,
    task_tool,
)
from flowfed.runtime.remote import (
    NodeInfo,
    RemoteInput,
    RemoteResult,
    RemoteTask,
    RemoteTaskError,
    Telemetry,
)
from flowfed.runtime.usage import measured
from flowfed.tools.core import call_tool


def _error(node: str, message: str, etype: str, tb: str | None = None) -> RemoteTaskError:
    return RemoteTaskError(
        {"message": message, "type": etype, "traceback": tb, "context": {"node": node}}
    )


class _SimNode:
    def __init__(self, name: str, datasets: dict[str, Path]) -> None:
        from flowfed.node.datasets import scan_dataset

        self.name = name
        self.datasets = {n: scan_dataset(n, Path(p)) for n, p in datasets.items()}
        self.values: dict[str, Any] = {}  # this node's store: hash → value
        self.central: dict[str, Any] = {}  # central inputs already decoded: hash → value
        self.lock = threading.Lock()
        self.running = 0

    def info(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            online=True,
            datasets={
                n: {k: v for k, v in d.items() if k != "path"} for n, d in self.datasets.items()
            },
            running=self.running,
        )

    def _input(self, value: RemoteInput | list[RemoteInput], param: str) -> Any:
        if isinstance(value, list):
            return [self._input(v, param) for v in value]
        if value.location == "node":
            with self.lock:
                if value.hash in self.values:
                    return self.values[value.hash]
            raise _error(
                self.name,
                f"input '{param}' ({value.hash[:12]}) is not in node '{self.name}''s store",
                "InputError",
            )
        with self.lock:
            got = self.central.get(value.hash)
        if got is not None:
            return got
        if value.data is None:
            raise _error(self.name, f"central input '{param}' came without its bytes", "InputError")
        got = load(value.kind, value.data, value.meta)
        with self.lock:
            self.central[value.hash] = got
        return got

    def execute(self, task: RemoteTask, telemetry: Telemetry) -> RemoteResult:
        try:
            spec, cfg = task_tool(task, self.name)
            telemetry("state", {"state": "initialized"})
            dataset = task_dataset(task, self.name, self.datasets)
        except TaskProblem as exc:
            raise _error(self.name, str(exc), exc.etype) from None
        args = {p: self._input(v, p) for p, v in task.inputs.items()}
        telemetry("state", {"state": "started"})
        ctx = task_context(task, telemetry, self.name, dataset)
        telemetry("state", {"state": "running"})
        try:
            with measured(ctx.report_resources, "thread"):
                value = call_tool(spec, args, cfg, ctx)
        except Exception as exc:
            raise _error(
                self.name,
                f"the tool raised {type(exc).__name__}: {exc}",
                type(exc).__name__,
                traceback.format_exc(),
            ) from None

        def keep(mat: Any, kept: Any) -> None:
            # The value itself, not its bytes: the next round's task reads it as is.
            with self.lock:
                self.values[mat.hash] = kept

        try:
            outputs = task_outputs(spec, value, task, keep)
        except OutputProblem as exc:
            raise _error(self.name, str(exc), "OutputError") from None
        return RemoteResult(outputs=outputs)


class SimulatedNodes:
    """In-process nodes (a :class:`~flowfed.runtime.remote.NodeDispatcher`).

    ``layout`` maps node names to their datasets (``{name: {dataset: path}}``), as the
    local-nodes layout file does.
    """

    #: Tasks run in the calling thread, without waiting on I/O (the engine runs a round's
    #: tasks one after the other instead of handing them to threads).
    in_process = True

    def __init__(self, layout: dict[str, dict[str, Path]]) -> None:
        import flowfed.tools.library  # noqa: F401  (the built-in tools, as a node has them)

        self._nodes = {name: _SimNode(name, ds) for name, ds in layout.items()}

    def nodes(self) -> dict[str, NodeInfo]:
        """Every simulated node (always online)."""
        return {name: n.info() for name, n in self._nodes.items()}

    def run_task(
        self, task: RemoteTask, telemetry: Telemetry, cancel: threading.Event
    ) -> RemoteResult:
        """Run ``task`` on its simulated node, in this thread."""
        node = self._nodes.get(task.node)
        if node is None:
            known = ", ".join(sorted(self._nodes)) or "none"
            raise _error(
                task.node,
                f"node '{task.node}' is not one of the simulated nodes ({known})",
                "NodeOffline",
            )
        if cancel.is_set():
            raise _error(task.node, "cancelled", "Cancelled")
        node.running += 1
        try:
            return node.execute(task, telemetry)
        finally:
            node.running -= 1
