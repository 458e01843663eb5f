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
from collections import OrderedDict
from pathlib import Path
from typing import Any

from flowfed.artifacts import load
from flowfed.node.client_state import ClientStateStore, state_key
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


class _CentralValues:
    """Central inputs decoded once for every simulated node: the last ``size`` of them.

    One round sends the same global model to every participant; decoding it once per
    node and keeping every round's copy grew memory with nodes x rounds (x nodes again
    for a model whose ``training`` block lists the round's participants), about 1.4 MB
    per client over a run. Tools receive the shared object, as every task of one
    simulated node always did: an input is read, never modified (docs/federated.md).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, value: RemoteInput, node: str, param: str) -> Any:
        with self._lock:
            got = self._values.get(value.hash)
            if got is not None:
                self._values.move_to_end(value.hash)
                return got
        if value.data is None:
            raise _error(node, f"central input '{param}' came without its bytes", "InputError")
        got = load(value.kind, value.data, value.meta)
        with self._lock:
            self._values[value.hash] = got
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return got


class _SimNode:
    def __init__(
        self,
        name: str,
        datasets: dict[str, Path],
        state_dir: Path | None = None,
        central: _CentralValues | None = None,
    ) -> None:
        from flowfed.node.datasets import scan_dataset

        self.name = name
        self.datasets = {n: scan_dataset(n, Path(p)) for n, p in datasets.items()}
        self.values: dict[str, Any] = {}  # this node's store: hash → value
        # Central inputs already decoded, shared by the simulated nodes (bounded).
        self.central = central if central is not None else _CentralValues()
        self.lock = threading.Lock()
        self.running = 0
        # ctx.client_state: a run's in this process; a flow's (kept across runs, for
        # personalization) in the simulated node's own folder, when it has one.
        self.states = ClientStateStore(None)
        self.kept = ClientStateStore(state_dir / name / "client_state") if state_dir else None

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
        return self.central.get(value, self.name, param)

    def _states(self, scope: str) -> ClientStateStore:
        if scope.startswith("flow:") and self.kept is not None:
            return self.kept
        return self.states

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
        key = None
        if task.client_state is not None:
            key = state_key(task.client_state, task.step, self.name, task.dataset)
            store = self._states(task.client_state)
            ctx._client_state = store.load(key)
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
            # The value itself, not its bytes: the next round's task reads it as is. An
            # output whose bytes travel (a shareable one: every model update) is read from
            # its central copy afterwards, never from here: keeping it would hold every
            # round's update of every node until the run ends.
            with self.lock:
                self.values[mat.hash] = kept

        try:
            outputs = task_outputs(spec, value, task, keep, keep_shareable=False)
        except OutputProblem as exc:
            raise _error(self.name, str(exc), "OutputError") from None
        if key is not None and ctx._client_state.changed:
            store.save(key, ctx._client_state)  # only after a task that succeeded
        return RemoteResult(outputs=outputs)


class SimulatedNodes:
    """In-process nodes (a :class:`~flowfed.runtime.remote.NodeDispatcher`).

    ``layout`` maps node names to their datasets (``{name: {dataset: path}}``), as the
    local-nodes layout file does.
    """

    #: Tasks run in the calling thread, without waiting on I/O (the engine runs a round's
    #: tasks one after the other instead of handing them to threads).
    in_process = True

    def __init__(self, layout: dict[str, dict[str, Path]], state_dir: Path | None = None) -> None:
        import flowfed.tools.library  # noqa: F401  (the built-in tools, as a node has them)

        # state_dir: where simulated nodes keep client state a step keeps across runs
        # (``client_state: keep``); without it, that state lasts as long as the process.
        central = _CentralValues()
        self._nodes = {name: _SimNode(name, ds, state_dir, central) for name, ds in layout.items()}

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
