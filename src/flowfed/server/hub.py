"""The node hub: the server's end of the node agents' WebSockets, and the engine's dispatcher.

:class:`NodeHub` implements :class:`flowfed.runtime.remote.NodeDispatcher`. Node agents
(``flowfed node start``) connect to ``/api/v1/nodes/connect`` with their node token; the
engine's worker threads call :meth:`NodeHub.run_task`, which blocks until the node
reports the task's result or error. The hub lives in the server's asyncio loop; every
method the engine calls is thread-safe and works before the loop runs (a task for a node
that is not connected waits for it, up to the liveness deadline).

**Liveness.** A node that sends nothing (no heartbeat, no frame) for ``liveness_s``
seconds is dropped; a node whose connection dropped and that has not come back within
``liveness_s`` of when it was last heard from is *offline since* that moment
(:meth:`NodeHub.offline_since`). Its tasks then fail at once with "node 'X' offline since
T" instead of waiting, and federated rounds leave it out of their samples
(:meth:`NodeHub.offline_nodes`) until it connects again.

When a node re-registers a dataset whose content hash changed, the hub records a row in
``node_dataset_changes`` and publishes a bus event of kind ``node.dataset_changed``
(payload ``{"node", "dataset", "old_hash", "new_hash"}``, ``run_id`` ``"_nodes"``): the
trigger service starts flows from either.

Example:
    >>> hub = NodeHub()            # what create_app does; the lifespan attaches db and loop
    >>> hub.nodes()
    {}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.node.protocol import (
    HEARTBEAT_S,
    MAX_FRAME_BYTES,
    AssignMessage,
    DatasetInfo,
    ResultMessage,
    ResumeMessage,
    TaskErrorMessage,
    TelemetryMessage,
    TerminateMessage,
    result_from_wire,
    task_to_wire,
)
from flowfed.runtime.remote import NodeInfo, RemoteResult, RemoteTask, RemoteTaskError, Telemetry
from flowfed.server.node_conn import Connection, PendingTask, offline, when
from flowfed.server.node_store import record_registration, stored_nodes

# The name operators filter on (and tests capture): the hub was flowfed.server.nodes.
log = logging.getLogger("flowfed.server.nodes")

#: Missed heartbeats before a silent node is considered gone (and grace for its tasks).
MISSED_HEARTBEATS = 3
#: Seconds the hub waits past a task's timeout for the node's own timeout report.
TIMEOUT_MARGIN_S = 5.0
#: Seconds between checks that a connected node's credentials still exist.
RECHECK_S = 5.0
#: The ``run_id`` (bus channel) node events are published under: not a run, but every
#: broker needs a concrete channel name (NATS refuses wildcards in a published subject).
NODE_EVENTS = "_nodes"
#: Seconds between looks at the database for nodes added or removed by an admin.
SYNC_S = 1.0
#: Seconds a ``run_task`` thread sleeps between looks at its cancel flag and deadlines
#: (its own task's frames wake it at once) while few tasks are in flight ...
CANCEL_POLL_S = 0.1
#: ... and the most such looks per second across all tasks once many are: with hundreds
#: of tasks in flight, every look takes the GIL from the server's event loop, and the
#: heartbeats it serves arrive late. The interval then grows, up to MAX_POLL_S.
POLLS_PER_S = 200.0
MAX_POLL_S = 1.0


class NodeHub:
    """Dispatches tasks to connected node agents (a :class:`NodeDispatcher`).

    ``heartbeat_s`` is the interval nodes are told to heartbeat at; a node silent for
    :data:`MISSED_HEARTBEATS` intervals is dropped, and a task whose node dropped fails
    unless the node reconnects and resumes it within the same grace. ``max_frame`` is the
    largest frame accepted from a node.

    Example:
        >>> hub = NodeHub(heartbeat_s=1.0)
        >>> hub.grace_s                 # the liveness deadline: 3 missed heartbeats
        3.0
        >>> NodeHub(liveness_s=20.0).grace_s
        20.0
    """

    def __init__(
        self,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        max_frame: int = MAX_FRAME_BYTES,
        missed_heartbeats: int = MISSED_HEARTBEATS,
        liveness_s: float | None = None,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.max_frame = max_frame
        #: The liveness deadline: seconds a node may be silent (or gone) before it is
        #: offline (``flowfed server --node-liveness``; default 3 missed heartbeats).
        self.grace_s = liveness_s or heartbeat_s * missed_heartbeats
        self.db: Database | None = None
        self.publish: Callable[[list[dict[str, Any]]], None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._conns: dict[str, Connection] = {}
        self._known: dict[str, NodeInfo] = {}
        self._pending: dict[str, PendingTask] = {}
        #: Nodes not connected: (monotonic, wall) time they were last heard from, or
        #: when this hub started to wait for them (they were never heard from since).
        self._gone: dict[str, tuple[float, float]] = {}
        #: Nodes reported offline in the log (once per absence).
        self._reported: set[str] = set()
        self._synced = 0.0
        #: Refused attempts (also logged): what the tests and operators look at.
        self.refusals: list[dict[str, Any]] = []
        #: Called in the server's loop as ``(node, seq)`` when a heartbeat arrives (None:
        #: nobody listens). The node-scale benchmark times arrivals with it; keep it cheap.
        self.on_heartbeat: Callable[[str, int], None] | None = None

    # -- wiring ---------------------------------------------------------------------

    def attach(
        self,
        db: Database,
        publish: Callable[[list[dict[str, Any]]], None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Give the hub its database, bus and loop (the server's lifespan does this)."""
        self.db, self.publish, self.loop = db, publish, loop
        since = (time.monotonic(), time.time())
        with self._cond:
            for row in stored_nodes(db):
                if row["name"] not in self._conns:
                    # A node gets one liveness deadline from our start to connect.
                    self._gone.setdefault(row["name"], since)
                self._known[row["name"]] = NodeInfo(
                    name=row["name"],
                    online=row["name"] in self._conns,
                    datasets={d["name"]: d for d in row["datasets"] or []},
                    last_seen=row["last_seen"],
                )
        # Nobody is connected to a freshly started server, whatever the rows say.
        with db.transaction() as conn:
            conn.execute(update(m.nodes).values(status="offline"))

    def drop_connection(self, name: str, code: int = 1012) -> bool:
        """Close node ``name``'s connection (it reconnects and resumes); False if offline.

        Safe from any thread. Operators use it to move a node to a restarted server;
        tests use it to prove that a reconnecting node resumes its tasks.
        """
        with self._cond:
            conn = self._conns.get(name)
        if conn is None or self.loop is None:
            return False
        fut = asyncio.run_coroutine_threadsafe(conn.ws.close(code=code), conn.loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        return True

    def detach(self) -> None:
        """Stop using the database (server shutdown); waiting tasks see every node offline."""
        with self._cond:
            for conn in self._conns.values():
                conn.closed = True
            self._conns.clear()
            # A task already on a node cannot report back through a stopped server.
            for p in self._pending.values():
                if p.sent is not None and p.outcome is None:
                    p.outcome = RemoteTaskError(
                        self._report(
                            p.task, "the server stopped while the task was running", "NodeOffline"
                        )
                    )
            for p in self._pending.values():
                p.notify()
        self.db = None

    def sync(self) -> None:
        """Learn the nodes added to the database since (``flowfed nodes add``), drop removed."""
        db = self.db
        if db is None:
            return
        self._synced = time.monotonic()
        rows = {r["name"]: r for r in stored_nodes(db)}
        with self._cond:
            for name, row in rows.items():
                if name not in self._known:
                    self._gone.setdefault(name, (time.monotonic(), time.time()))
                    self._known[name] = NodeInfo(
                        name=name,
                        online=False,
                        datasets={d["name"]: d for d in row["datasets"] or []},
                        last_seen=row["last_seen"],
                    )
            for name in [n for n in self._known if n not in rows and n not in self._conns]:
                del self._known[name]
                self._gone.pop(name, None)

    def refuse(self, who: str, reason: str) -> None:
        """Log (and keep) a refused attempt, naming the node or token it came from."""
        log.warning("refused node message from %s: %s", who, reason)
        with self._cond:
            self.refusals.append({"who": who, "reason": reason, "ts": time.time()})
            del self.refusals[:-1000]

    # -- NodeDispatcher ---------------------------------------------------------------

    def nodes(self) -> dict[str, NodeInfo]:
        """Every known node (registered in the database or connected), online or not."""
        if time.monotonic() - self._synced > SYNC_S:
            with contextlib.suppress(Exception):  # a database hiccup: answer from memory
                self.sync()
        with self._cond:
            # One pass over the tasks, not one per node: the engine asks on every placement.
            running: dict[str, int] = {}
            for p in self._pending.values():
                if p.sent is not None and p.outcome is None:
                    running[p.task.node] = running.get(p.task.node, 0) + 1
            out: dict[str, NodeInfo] = {}
            for name, info in self._known.items():
                out[name] = NodeInfo(
                    name=name,
                    online=name in self._conns,
                    datasets=dict(info.datasets),
                    running=running.get(name, 0),
                    last_seen=info.last_seen,
                )
            return out

    def offline_since(self, name: str, liveness_s: float | None = None) -> float | None:
        """When node ``name`` was last heard from, if it is offline; None while it may
        still be (or come back) online.

        A node is offline once it has not been connected for the liveness deadline
        (``liveness_s``, default :attr:`grace_s`) since it was last heard from (or since
        this hub started, for a node not heard from since). Returns a wall-clock time.
        """
        with self._cond:
            return self._offline_since(name, time.monotonic(), liveness_s)

    def offline_nodes(self, liveness_s: float | None = None) -> dict[str, float]:
        """Every offline node and when it was last heard from (see :meth:`offline_since`).

        What federated rounds leave out of their samples until the node is back.
        """
        now = time.monotonic()
        with self._cond:
            out = {n: self._offline_since(n, now, liveness_s) for n in list(self._gone)}
        return {n: t for n, t in out.items() if t is not None}

    def _offline_since(self, name: str, now: float, liveness_s: float | None) -> float | None:
        gone = self._gone.get(name)
        if gone is None or name in self._conns:
            return None
        if now - gone[0] < (liveness_s or self.grace_s):
            return None
        if name not in self._reported:
            self._reported.add(name)
            log.warning("node '%s' is offline: not heard from since %s", name, when(gone[1]))
        return gone[1]

    def run_task(
        self, task: RemoteTask, telemetry: Telemetry, cancel: threading.Event
    ) -> RemoteResult:
        """Run ``task`` on ``task.node``; block until it ends (see :class:`NodeDispatcher`).

        Example:
            >>> # result = hub.run_task(task, lambda kind, payload: None, threading.Event())
        """
        node = task.node
        start = time.monotonic()
        deadline = None if task.timeout is None else start + task.timeout
        p = PendingTask(task, wake=threading.Condition(self._lock))
        with self._cond:
            if task.task_id in self._pending:
                raise RemoteTaskError(
                    self._report(task, f"task {task.task_id} is already running", "Duplicate")
                )
            self._pending[task.task_id] = p
        waiting = False
        try:
            while True:
                send_to: Connection | None = None
                with self._cond:
                    items, p.telemetry = p.telemetry, []
                    outcome = p.outcome
                    now = time.monotonic()
                    if outcome is None and not items:
                        if cancel.is_set():
                            conn = p.sent
                            self._cond.release()
                            try:
                                if conn is not None:
                                    conn.send_threadsafe(
                                        TerminateMessage(task_id=task.task_id, reason="cancelled")
                                    )
                            finally:
                                self._cond.acquire()
                            raise RemoteTaskError(self._report(task, "cancelled", "Cancelled"))
                        if p.sent is None:
                            conn = self._conns.get(node)
                            since = None if conn else self._offline_since(node, now, None)
                            if conn is not None:
                                p.sent = send_to = conn
                                p.sent_at, p.lost_at = now, None
                                if waiting:
                                    # Picked up with the next telemetry: the wait is over.
                                    p.telemetry.append(("waiting", {"node": None}))
                                    waiting = False
                            elif since is None and not waiting:
                                # Within the liveness grace: say what the task waits for.
                                waiting = True
                                gone = self._gone.get(node)
                                p.telemetry.append(
                                    ("waiting", {"node": node, "offline_since": gone and gone[1]})
                                )
                                continue
                            elif since is not None:
                                raise RemoteTaskError(
                                    self._report(task, offline(node, since), "NodeOffline")
                                )
                            elif deadline is not None and now >= deadline:
                                raise RemoteTaskError(
                                    self._report(
                                        task,
                                        f"node '{node}' is offline: waited {task.timeout:g}s "
                                        "(the task's timeout) for it to connect",
                                        "NodeOffline",
                                    )
                                )
                        elif p.lost_at is not None and now - p.lost_at > self.grace_s:
                            gone = self._gone.get(node)
                            who = f"{offline(node, gone[1])}: it" if gone else f"node '{node}'"
                            why = f"{who} went offline while running the task"
                            raise RemoteTaskError(self._report(task, why, "NodeOffline"))
                        elif p.lost_at is not None and not waiting:
                            # Its node dropped mid-task: the task waits for it to return.
                            waiting = True
                            gone = self._gone.get(node)
                            p.telemetry.append(
                                ("waiting", {"node": node, "offline_since": gone and gone[1]})
                            )
                            continue
                        elif (
                            task.timeout is not None
                            and now >= p.sent_at + task.timeout + TIMEOUT_MARGIN_S
                        ):
                            # The node times the tool from its start; this is the backstop
                            # for a node that never reports back.
                            conn = p.sent
                            send_to = None
                            self._cond.release()
                            try:
                                conn.send_threadsafe(
                                    TerminateMessage(task_id=task.task_id, reason="timeout")
                                )
                            finally:
                                self._cond.acquire()
                            raise RemoteTaskError(
                                self._report(
                                    task,
                                    f"timed out after {task.timeout:g}s on node '{node}' "
                                    "(the node did not report back)",
                                    "Timeout",
                                )
                            )
                        if send_to is None:
                            # Woken by this task's own events; the timeout is for the
                            # cancel flag and the deadlines, which nothing signals.
                            assert p.wake is not None
                            p.wake.wait(self._poll_s())
                            continue
                for kind, payload in items:
                    with contextlib.suppress(Exception):  # telemetry never fails a task
                        telemetry(kind, payload)
                if outcome is not None and not items:
                    if isinstance(outcome, RemoteTaskError):
                        raise outcome
                    return outcome
                if send_to is not None and not send_to.send_threadsafe(
                    AssignMessage(task=task_to_wire(task))
                ):
                    with self._cond:
                        if p.sent is send_to and p.outcome is None:
                            p.sent = None  # the connection died under us: send again later
        finally:
            with self._cond:
                self._pending.pop(task.task_id, None)

    def _poll_s(self) -> float:
        """How long a waiting ``run_task`` sleeps before looking at its cancel flag again."""
        return min(MAX_POLL_S, max(CANCEL_POLL_S, len(self._pending) / POLLS_PER_S))

    @staticmethod
    def _report(task: RemoteTask, message: str, etype: str) -> dict[str, Any]:
        return {
            "message": message,
            "type": etype,
            "traceback": None,
            "context": {"node": task.node, "task_id": task.task_id, "tool": task.tool},
        }

    # -- the WebSocket side (runs in the loop) ---------------------------------------

    def _seen(self, name: str) -> None:
        conn = self._conns.get(name)
        if conn is not None:
            conn.heard = time.monotonic()
        with self._cond:
            info = self._known.get(name)
            if info is not None:
                info.last_seen = time.time()

    def _connect(
        self, conn: Connection, resume: ResumeMessage
    ) -> tuple[Connection | None, list[str]]:
        held = {t.task_id for t in resume.tasks}
        with self._cond:
            old = self._conns.get(conn.name)
            if old is not None:
                old.closed = True
            self._conns[conn.name] = conn
            self._gone.pop(conn.name, None)
            if conn.name in self._reported:
                self._reported.discard(conn.name)
                log.warning("node '%s' is back online", conn.name)
            for task_id, p in self._pending.items():
                if p.task.node != conn.name or p.sent is None or p.outcome is not None:
                    continue
                if task_id in held:
                    p.sent, p.lost_at = conn, None  # re-attached: the node still runs it
                    p.telemetry.append(("waiting", {"node": None}))  # the wait is over
                else:
                    p.outcome = RemoteTaskError(
                        self._report(
                            p.task,
                            f"node '{conn.name}' went offline while running the task "
                            "(it came back without it)",
                            "NodeOffline",
                        )
                    )
            foreign = held - {k for k, p in self._pending.items() if p.task.node == conn.name}
            for p in self._pending.values():
                if p.task.node == conn.name:  # waiting for this node, or re-attached/failed
                    p.notify()
        return old, sorted(foreign)

    def _disconnect(self, conn: Connection) -> None:
        conn.closed = True
        # Liveness counts from the last frame: a killed agent's heartbeats stopped then.
        heard = conn.heard
        wall = time.time() - (time.monotonic() - heard)
        with self._cond:
            if self._conns.get(conn.name) is conn:
                del self._conns[conn.name]
                self._gone[conn.name] = (heard, wall)
                for p in self._pending.values():
                    if p.sent is conn and p.outcome is None:
                        p.lost_at = heard
                        p.notify()

    def _mark_offline(self, name: str) -> None:
        """Record in the database that ``name`` went offline (unless it reconnected)."""
        db = self.db
        with self._cond:
            if db is None or name in self._conns:
                return
        with contextlib.suppress(Exception), db.transaction() as c:
            c.execute(
                update(m.nodes)
                .where(m.nodes.c.name == name)
                .values(status="offline", last_seen=time.time())
            )

    def _own(self, conn: Connection, task_id: str, what: str) -> PendingTask | None:
        """The pending task if it is this node's; refusals are logged."""
        with self._cond:
            p = self._pending.get(task_id)
        if p is not None and p.task.node != conn.name:
            self.refuse(
                f"node '{conn.name}'",
                f"sent {what} for task {task_id}, which is placed on node '{p.task.node}'",
            )
            return None
        return p

    def _telemetry(self, conn: Connection, msg: TelemetryMessage) -> None:
        p = self._own(conn, msg.task_id, "telemetry")
        if p is None:
            return
        with self._cond:
            if p.outcome is None:
                p.telemetry.append((msg.kind, dict(msg.payload)))
                p.notify()

    def _finished(self, conn: Connection, msg: ResultMessage | TaskErrorMessage) -> bool:
        with self._cond:
            p = self._pending.get(msg.task_id)
        if p is None:
            return True  # nobody waits any more: let the node forget it
        if self._own(conn, msg.task_id, msg.type) is None:
            return False
        if isinstance(msg, ResultMessage):
            outcome: RemoteResult | RemoteTaskError
            try:
                result = result_from_wire(msg)
            except ValueError as exc:
                outcome = RemoteTaskError(
                    self._report(p.task, f"node sent an unreadable result: {exc}", "ProtocolError")
                )
            else:
                outcome = result
                stray = [k for k in result.outputs if k not in p.task.outputs]
                leaked = [
                    k
                    for k, o in result.outputs.items()
                    if o.data is not None and k not in p.task.shareable
                ]
                if stray or leaked:
                    outcome = RemoteTaskError(
                        self._report(
                            p.task,
                            f"node '{conn.name}' sent outputs the step does not declare "
                            f"({stray}) or bytes of outputs that are not shareable ({leaked})",
                            "ProtocolError",
                        )
                    )
        else:
            report = dict(msg.report)
            report.setdefault("message", "the task failed on its node")
            context = dict(report.get("context") or {})
            context["node"] = conn.name
            report["context"] = context
            outcome = RemoteTaskError(report)
        with self._cond:
            if p.outcome is None:
                p.outcome = outcome
            p.notify()
        return True

    # -- database (worker threads) ---------------------------------------------------

    def _registered(self, name: str, datasets: list[DatasetInfo]) -> None:
        new = {d.name: d.model_dump() for d in datasets}
        now = time.time()
        db = self.db
        changes = record_registration(db, name, new, now) if db is not None else []
        with self._cond:
            self._known[name] = NodeInfo(name=name, online=True, datasets=new, last_seen=now)
        if changes and self.publish is not None:
            events = [
                {"run_id": NODE_EVENTS, "kind": "node.dataset_changed", "ts": now,
                 "payload": {k: ch[k] for k in ("node", "dataset", "old_hash", "new_hash")}}
                for ch in changes
            ]  # fmt: skip
            with contextlib.suppress(Exception):  # the record in the table is the truth
                self.publish(events)
            for ch in changes:
                log.info(
                    "node '%s' dataset '%s' changed: %s -> %s",
                    name, ch["dataset"], ch["old_hash"], ch["new_hash"],
                )  # fmt: skip
