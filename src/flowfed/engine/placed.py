"""Tasks placed on data nodes: hand them to a NodeDispatcher, record what comes back.

The engine's scheduler treats a placed task like any other; only its attempt differs.
Inputs travel as :class:`~flowfed.runtime.remote.RemoteInput`: an artifact produced on
the same node goes by hash (its bytes never left the node), anything central goes with
its bytes. Outputs come back as hash, size and metadata; only those the step declares
shareable bring their bytes, which are stored centrally. The others are catalogued with
a ``node://NODE/HASH`` address and no bytes: lineage and hashes are complete, the data
stays where it is.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from flowfed.artifacts import INLINE_MAX_BYTES, Materialized, inline_uri
from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.engine.task import TaskFailed, TaskHost, fail, report
from flowfed.runtime.lifecycle import State
from flowfed.runtime.remote import (
    RemoteInput,
    RemoteResult,
    RemoteTask,
    RemoteTaskError,
)

if TYPE_CHECKING:
    from flowfed.plan.graph import TaskGraph
    from flowfed.runtime.remote import NodeDispatcher


class StepFailed(Exception):
    """A placed or federated step cannot go on (too few updates, a failed aggregation)."""


class PlacedHost(TaskHost, Protocol):
    """What a placed task needs from its run, beyond :class:`TaskHost`."""

    graph: TaskGraph
    dispatcher: NodeDispatcher | None
    #: Who submitted the run; every placed task carries it to its node's policy.
    principal: str | None

    def bytes_of(self, ref: ArtifactRef) -> bytes: ...

    @property
    def suspended(self) -> bool:
        """Whether a draining server is handing the run over: start no new round."""
        ...


NODE_URI = "node://"

#: How far a node's reported state may move the engine's view of the task, in order.
_ORDER = {State.INITIALIZED: 0, State.STARTED: 1, State.RUNNING: 2}


def node_uri(node: str, hash: str) -> str:
    """The catalog address of an object that stays in ``node``'s own store."""
    return f"{NODE_URI}{node}/{hash}"


def held_by(uri: str) -> str | None:
    """The node holding an object addressed by :func:`node_uri` (``None``: central)."""
    if not uri.startswith(NODE_URI):
        return None
    return uri[len(NODE_URI) :].split("/", 1)[0]


class _CancelHandle:
    """Stands in for a tool Context on a placed task: cancelling sets the dispatcher's event."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def cancel(self) -> None:
        self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


class NoNodes(RuntimeError):
    """A placed task in a run that has no node dispatcher."""


def remote_inputs(run: PlacedHost, tr: TaskRun) -> dict[str, RemoteInput | list[RemoteInput]]:
    """``tr``'s inputs as the node receives them (bytes only for central artifacts)."""
    node = tr.node

    def one(ref: ArtifactRef) -> RemoteInput:
        holder = held_by(ref.uri)
        if holder is not None and holder != node.node:
            raise ValueError(
                f"input '{ref.name}' stays on node '{holder}' and cannot reach node "
                f"'{node.node}' (declare it shareable in its step if its bytes may travel)"
            )
        data = None
        if holder is None:
            data = run.bytes_of(ref)
        return RemoteInput(
            name=ref.name,
            hash=ref.hash,
            size=ref.size,
            kind=ref.kind,
            type_name=ref.type_name,
            meta=dict(ref.meta),
            location="node" if holder else "central",
            data=data,
            pickled=ref.kind == "pickle",
        )

    out: dict[str, RemoteInput | list[RemoteInput]] = {}
    for param, ref in tr.inputs.items():
        out[param] = [one(r) for r in ref] if isinstance(ref, list) else one(ref)
    return out


def _secure_step(run: PlacedHost, step: str) -> bool:
    """Whether ``step`` is a federated step with secure aggregation (its node tasks then
    keep per-node facts inside the aggregate, as the node's policy decides)."""
    for t in run.graph.tasks.values():
        if t.step == step and t.federated is not None:
            return bool(t.federated.settings.secure_aggregation)
    return False


def _state_scope(run: PlacedHost, mode: str | None) -> str | None:
    """The client-state scope a node keys ``ctx.client_state`` by (docs/federated.md)."""
    if mode is None:
        return None
    return f"flow:{run.graph.flow.name}" if mode == "keep" else f"run:{run.run_id}"


def run_placed(run: PlacedHost, tr: TaskRun, config: dict[str, Any] | None = None) -> RemoteResult:
    """Send ``tr`` to its node and block until it ends; moves the lifecycle as it goes.

    Raises :class:`RemoteTaskError` (the node's report), :class:`NoNodes`, or
    ``ValueError`` for inputs that cannot reach the node.
    """
    node = tr.node
    dispatcher = run.dispatcher
    if dispatcher is None:
        raise NoNodes(
            f"step '{node.step}' is placed on node '{node.node}', but this run has no nodes: "
            "run it with local nodes (the flow's 'nodes:' or --nodes), --simulate, or on a "
            "server that nodes connect to"
        )
    task = RemoteTask(
        run_id=run.run_id,
        task_id=tr.id,
        node=node.node,
        dataset=node.dataset,
        tool=node.tool.name,
        tool_version=node.tool.version,
        config=config if config is not None else node.config_json(),
        inputs=remote_inputs(run, tr),
        outputs=dict(node.outputs),
        shareable=sorted(node.shareable),
        timeout=run.timeout_of(tr),
        attempt=tr.attempt,
        allow_pickle=node.allow_pickle,
        step=node.step,
        round=node.round,
        principal=run.principal or "anonymous",
        flow=run.graph.flow.name,
        secure_aggregation=_secure_step(run, node.step),
        client_state=_state_scope(run, node.client_state),
    )
    sink = run.record.telemetry(tr)
    lock = threading.Lock()

    def telemetry(kind: str, payload: dict[str, Any]) -> None:
        if kind != "state":
            sink(kind, payload)
            return
        try:
            dst = State(str(payload.get("state")))
        except ValueError:
            return
        # The node reports initialized → started → running; the engine moved to
        # initialized itself, so only forward steps apply (a late message is ignored).
        with lock:
            if dst in _ORDER and _ORDER.get(tr.state, -1) < _ORDER[dst]:
                for step in (State.STARTED, State.RUNNING):
                    if _ORDER[tr.state] < _ORDER[step] <= _ORDER[dst]:
                        run.record.move(
                            tr, step, f"on node {node.node}" if step is State.STARTED else None
                        )

    cancel = threading.Event()
    tr.ctx = _CancelHandle(cancel)
    if run.cancelled:
        cancel.set()
    result = dispatcher.run_task(task, telemetry, cancel)
    with lock:
        for step in (State.STARTED, State.RUNNING):
            if not tr.state.terminal and _ORDER.get(tr.state, 99) < _ORDER[step]:
                run.record.move(tr, step)
    return result


def record_remote(
    run: PlacedHost, tr: TaskRun, result: RemoteResult
) -> tuple[list[dict[str, Any]], list[Materialized]]:
    """Turn a node's result into artifact refs on ``tr``: its catalog rows, and the
    objects whose bytes the central store must keep."""
    node = tr.node
    now = time.time()
    if result.egress:
        # What the node's policy let leave (and refused): the run page's "what left
        # this node", from the node's own decision and audit entry.
        run.record.emit("egress", tr, {"egress": list(result.egress)})
    parents = [ref.id for ref in tr.input_refs()]
    rows: list[dict[str, Any]] = []
    to_store: list[Materialized] = []
    tr.metrics.update(result.metrics)
    for out_name, ro in result.outputs.items():
        if out_name not in node.outputs:
            continue
        blob = None
        if ro.data is not None:
            m = Materialized(
                ro.kind, ro.type_name, ro.data, ro.hash, pickled=ro.pickled, meta=dict(ro.meta)
            )
            inline = m.size <= INLINE_MAX_BYTES
            uri = inline_uri(m.hash) if inline else run.store.uri(m.hash)
            if inline:
                blob = m.data
            else:
                to_store.append(m)
            run.keep_bytes(m.hash, m.data)
        else:
            uri = node_uri(node.node, ro.hash)
        rows.append(
            run.record.output_row(
                tr,
                out_name,
                ro,
                uri=uri,
                shareable=ro.data is not None,
                blob=blob,
                parents=parents,
                now=now,
            )
        )
    missing = [o for o in node.outputs if o not in result.outputs]
    if missing:
        raise RemoteTaskError(
            {
                "message": f"node '{node.node}' returned no output {missing[0]!r}",
                "type": "OutputError",
                "traceback": None,
                "context": {"node": node.node},
            }
        )
    return rows, to_store


def attempt_placed(run: PlacedHost, tr: TaskRun) -> None:
    """Run ``tr`` (already Initialized) on its node and record what comes back.

    Raises :class:`~flowfed.engine.task.TaskFailed` with the node's report when it fails.
    """
    try:
        result = run_placed(run, tr)
        rows, to_store = record_remote(run, tr, result)
    except RemoteTaskError as exc:
        handle = tr.ctx
        if handle is not None and handle.cancelled:
            run.record.move(tr, State.CANCELLED, "cancelled")
            return None
        remote_failure(run, tr, exc.report)
    except (NoNodes, ValueError) as exc:
        fail(run, tr, str(exc), None)
    if tr.state.terminal:
        return None
    # The cancel handle (an Event: a lock and a condition) has nothing left to cancel;
    # a federated run keeps every round's task, so it would stay for the whole run.
    tr.ctx = None
    run.record.finish(tr, rows, to_store, None)
    return None


def remote_failure(run: TaskHost, tr: TaskRun, remote: dict[str, Any]) -> None:
    """End ``tr`` in Error with a node's report (its message, type and traceback)."""
    rep = report(
        run, tr, str(remote.get("message") or "remote task failed"), None, remote.get("type")
    )
    rep["traceback"] = remote.get("traceback")
    rep["context"].update(
        {k: v for k, v in (remote.get("context") or {}).items() if k not in rep["context"]}
    )
    raise TaskFailed(rep)
