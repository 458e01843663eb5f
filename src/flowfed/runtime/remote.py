"""Tasks placed on a node: what the engine hands over and what comes back.

The engine runs a task placed on a data node (``on: each-dataset``, ``on: {nodes: [...]}``,
a federated step's training tasks) through a :class:`NodeDispatcher`. Two implement it:

* the server's node hub (``flowfed.server.nodes``), which sends the task over the node's
  authenticated WebSocket to a real node agent (``flowfed node start``);
* :class:`flowfed.engine.simulate.SimulatedNodes`, in-process nodes for ``--simulate``.

Everything here is plain data, importable by the engine, the server and the node agent
alike (the node never imports the engine or the server).

Data locality is part of the contract: an output the step does not declare shareable
comes back as hash, size and metadata only (``data`` is ``None``); its bytes stay in the
node's own store, and a later task on the same node names it by hash.

Example:
    >>> task = RemoteTask(run_id="r1", task_id="t1", node="hospital-a", dataset="breast",
    ...                   tool="flowfed.node_dataset", tool_version="1", config={},
    ...                   inputs={}, outputs={"data": "raw"}, shareable=[])
    >>> task.node, task.dataset
    ('hospital-a', 'breast')
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RemoteInput:
    """One input artifact of a remote task.

    ``location`` is ``"node"`` when the bytes are in the executing node's own store (the
    node loads them by ``hash``), ``"central"`` when they come from the central store:
    then ``data`` holds them (the engine inlines shareable inputs such as a global model).
    """

    name: str
    hash: str
    size: int
    kind: str
    type_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    location: str = "central"
    data: bytes | None = None
    pickled: bool = False


@dataclass
class RemoteTask:
    """A task the engine places on a node.

    ``inputs`` maps the tool's parameter to one :class:`RemoteInput` or, for a fan-in, a
    list of them. ``outputs`` maps the tool's output name to the artifact name the step
    gives it; ``shareable`` lists the tool outputs whose bytes travel back.
    ``config`` is the step's validated config as JSON data. ``dataset`` names the node
    dataset the task works on (``ctx.dataset`` on the node), or ``None``.
    """

    run_id: str
    task_id: str
    node: str
    dataset: str | None
    tool: str
    tool_version: str
    config: dict[str, Any]
    inputs: dict[str, RemoteInput | list[RemoteInput]]
    outputs: dict[str, str]
    shareable: list[str]
    timeout: float | None = None
    attempt: int = 1
    allow_pickle: bool = False
    step: str = ""
    round: int | None = None
    #: Who submitted the run and the flow's name: the node's policy checks both.
    principal: str = "anonymous"
    flow: str = ""
    #: The task is part of a secure-aggregation round: per-node facts (example counts,
    #: losses) leave the node only as its policy allows (by default, only in the aggregate).
    secure_aggregation: bool = False
    #: A federated training task's client-state scope (``run:<id>`` or ``flow:<name>``):
    #: the node keeps ``ctx.client_state`` under it, its step, node and dataset. None:
    #: the task has no client state. Only this name travels; the state stays on the node.
    client_state: str | None = None


@dataclass
class RemoteOutput:
    """One output as the node materialized it; ``data`` only when shareable."""

    hash: str
    size: int
    kind: str
    type_name: str
    meta: dict[str, Any] = field(default_factory=dict)
    pickled: bool = False
    data: bytes | None = None


@dataclass
class RemoteResult:
    """What a finished remote task returns: its outputs (by tool output name) and metrics."""

    outputs: dict[str, RemoteOutput]
    metrics: dict[str, float] = field(default_factory=dict)
    #: What the node's policy decided per output (released or refused, kind, size,
    #: rows covered, reason) and the node's audit entry for the task: what left the node.
    egress: list[dict[str, Any]] = field(default_factory=list)


class RemoteTaskError(Exception):
    """The task ended in Error on its node (or the node could not run it).

    ``report`` has the engine's error shape: ``message``, ``type``, ``traceback`` and
    ``context`` (at least ``node``).
    """

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get("message", "remote task failed"))
        self.report = report


@dataclass
class NodeInfo:
    """A node as the dispatcher knows it."""

    name: str
    online: bool
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: int = 0
    last_seen: float | None = None


#: ``telemetry(kind, payload)``: kind is ``"state"`` (payload ``{"state": "running"}``, one
#: of the lifecycle states the tool reached on the node), ``"log"`` (``level``,
#: ``message``), ``"metric"`` (``name``, ``value``, ``step``) or ``"progress"``
#: (``fraction``, ``message``), with the payload shapes of the local engine's telemetry.
Telemetry = Callable[[str, dict[str, Any]], None]


class NodeDispatcher(Protocol):
    """Runs tasks on nodes. Implementations must be safe to call from many threads."""

    def nodes(self) -> dict[str, NodeInfo]:
        """Every known node, online or not."""
        ...

    def run_task(
        self, task: RemoteTask, telemetry: Telemetry, cancel: threading.Event
    ) -> RemoteResult:
        """Run ``task`` on ``task.node`` and block until it ends.

        Waits for an offline node up to ``task.timeout`` (forever when ``None``) and then
        raises :class:`RemoteTaskError` naming the node. Raises :class:`RemoteTaskError`
        when the tool fails, the node drops the task or the task times out; returns
        early with an error when ``cancel`` is set (and tells the node to terminate).
        """
        ...
