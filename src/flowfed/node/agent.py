"""The node agent (``flowfed node start``): keeps a site's data local and runs its tasks.

It opens one outbound WebSocket to the server (``/api/v1/nodes/connect``, authenticated by
the node token of its credentials file), registers its datasets (name, format, columns
and dtypes, row count, SHA-256 of the file; never a row), heartbeats, and runs the tasks
the server assigns to it:

* the tool comes from flowfed's built-in library or the agent's ``--import`` modules; its
  config is validated against the tool's schema;
* an input with location ``node`` is read from the node's own artifact store by hash (the
  output of an earlier task on this node); a ``central`` input comes inline;
* outputs are materialized into the node's own store under ``--work-dir``; only the
  outputs the step lists as shareable carry their bytes back, the others their hash;
* the tool runs in a thread (``inprocess``), in ``python -m flowfed.runtime``
  (``subprocess``) or in the same under bubblewrap with no network (``sandbox``).

A lost connection is retried with exponential backoff; on reconnect the agent reports
the tasks it still holds (running, or finished with an unacknowledged result) and sends
the held results again, so the engine waiting on the server gets them.

This module holds the agent itself: the connection (register, resume, heartbeats, frames)
and the order of a task's stages. The stages live beside it: admission
(:mod:`flowfed.node.admission`), inputs (:mod:`flowfed.node.task_inputs`), the tool call
(:mod:`flowfed.node.tool_call`), filtered telemetry and error reports
(:mod:`flowfed.node.task_reports`), egress (:mod:`flowfed.node.egress`); its configuration
and command line in :mod:`flowfed.node.agent_config`. None of them imports the server,
the database or the engine.

Example:
    >>> server_ws_url("https://flowfed.example.org/")
    'wss://flowfed.example.org/api/v1/nodes/connect'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flowfed import __version__
from flowfed.artifacts import ArtifactStore
from flowfed.node.admission import APPROVAL_POLL_S, Admission
from flowfed.node.agent_config import (
    NodeConfig,
    load_credentials,
    node_command,
    parse_dataset_option,
    server_ws_url,
    spawn_node,
)
from flowfed.node.client_state import ClientStateStore, state_key
from flowfed.node.datasets import NodeSetupError, scan_dataset
from flowfed.node.egress import Egress, Release
from flowfed.node.outputs import (
    OutputProblem,
    TaskProblem,
    task_context,
    task_dataset,
    task_outputs,
    task_tool,
)
from flowfed.node.protocol import (
    HEARTBEAT_S,
    MAX_FRAME_BYTES,
    AckMessage,
    AssignMessage,
    ColumnInfo,
    DatasetInfo,
    HeartbeatMessage,
    HeldTask,
    NodeProtocolError,
    RegisterMessage,
    ResultMessage,
    ResumeMessage,
    TaskErrorMessage,
    TelemetryMessage,
    TerminateMessage,
    WelcomeMessage,
    dump_node_message,
    output_to_wire,
    parse_node_message,
    task_from_wire,
)
from flowfed.node.runners import RUNNERS
from flowfed.node.task_failure import TaskFailure
from flowfed.node.task_inputs import DecodedCache, TaskInputs, as_list, width
from flowfed.node.task_reports import error_report, guarded_sink
from flowfed.node.tool_call import call_on_node
from flowfed.runtime.remote import RemoteTask

__all__ = [
    "APPROVAL_POLL_S",
    "EXIT_REFUSED",
    "CredentialsRefused",
    "NodeAgent",
    "NodeConfig",
    "NodeSetupError",
    "TaskFailure",
    "load_credentials",
    "node_command",
    "parse_dataset_option",
    "server_ws_url",
    "spawn_node",
]

log = logging.getLogger("flowfed.node")

#: Exit code when the server refuses the node's credentials (retrying cannot help).
EXIT_REFUSED = 3


class CredentialsRefused(RuntimeError):
    """The server refused the node token."""


@dataclass(eq=False)
class _Held:
    """A task this node holds until the server acknowledges its end."""

    task: RemoteTask
    state: str = "queued"  # queued | running | finished | error
    final: ResultMessage | TaskErrorMessage | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class NodeAgent:
    """One node agent; :meth:`run` blocks until stopped or refused.

    Example:
        >>> # NodeAgent(NodeConfig("hospital-a", "http://127.0.0.1:8000", "ffn_...",
        >>> #                      {"breast": Path("breast.csv")})).run()
    """

    def __init__(self, config: NodeConfig) -> None:
        if config.runner not in RUNNERS:
            raise NodeSetupError(
                f"--runner must be one of {', '.join(RUNNERS)}, got {config.runner!r}"
            )
        if config.max_tasks < 1:
            raise NodeSetupError(f"--max-tasks must be at least 1, got {config.max_tasks}")
        if config.cache_mb < 0:
            raise NodeSetupError(f"--cache-mb must be 0 (off) or more, got {config.cache_mb}")
        import flowfed.tools.library  # noqa: F401  (registers the built-in tools)

        self.config = config
        self.url = server_ws_url(config.server)
        self.datasets = {n: scan_dataset(n, p) for n, p in config.datasets.items()}
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self.store = ArtifactStore(str(config.work_dir.resolve() / "artifacts"))
        self.decoded = DecodedCache(config.cache_mb * 2**20)
        self.client_states = ClientStateStore(config.work_dir.resolve() / "client_state")
        self.pool = ThreadPoolExecutor(config.max_tasks, thread_name_prefix="flowfed-node-task")
        self.held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[Any] | None = None
        self._stop = threading.Event()
        self.heartbeat_s = HEARTBEAT_S
        self.max_frame = MAX_FRAME_BYTES
        from flowfed.node.journal import NodeJournal

        self.policy = config.policy
        self.egress = Egress(self.policy)
        self.journal = NodeJournal(config.work_dir)
        self.admission = Admission(self.policy, self.journal, config.name)
        # How many of the node's rows each object in its store covers, by content hash:
        # the disclosure checks need it for outputs built from earlier outputs.
        self.inputs = TaskInputs(
            self.store, self.decoded, config.name, config.work_dir / "rows.json"
        )
        self.journal.append(
            {
                "kind": "node.started",
                "node": config.name,
                "policy": self.policy.digest(),
                "runner": config.runner,
                "datasets": {n: d["hash"] for n, d in self.datasets.items()},
            }
        )

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        """Connect and serve until :meth:`stop`; the exit code (``EXIT_REFUSED``, 0)."""
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        """:meth:`run` as a coroutine, in the caller's running loop; the same exit code.

        Many agents can share one loop (``asyncio.gather(*(a.serve() for a in agents))``):
        that is how the node-scale benchmark and tests host hundreds of nodes in a few
        processes. Each agent's tools still run in its own worker threads.
        """
        try:
            await self._main()
        except CredentialsRefused as exc:
            log.error("%s", exc)
            return EXIT_REFUSED
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
        return 0

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread)."""
        self._stop.set()

    async def _main(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        self._loop = asyncio.get_running_loop()
        delay = 0.2
        while not self._stop.is_set():
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.config.token}"},
                    max_size=self.max_frame,
                    open_timeout=15,
                    ping_interval=None,
                    compression="deflate" if self.config.compression else None,
                ) as ws:
                    delay = 0.2
                    await self._session(ws)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise CredentialsRefused(
                        f"the server at {self.url} refused the credentials of node "
                        f"'{self.config.name}' (HTTP {status}): check the credentials file "
                        "or ask the admin for new ones (`flowfed nodes add`)"
                    ) from None
                log.warning("server answered HTTP %s; retrying in %.1fs", status, delay)
            except CredentialsRefused:
                raise
            except Exception as exc:  # refused, reset, timed out: the server may come back
                log.warning(
                    "connection to %s lost (%s: %s); retrying in %.1fs",
                    self.url, type(exc).__name__, exc, delay,
                )  # fmt: skip
            if self._stop.is_set():
                break
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.config.max_backoff_s)

    async def _session(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        await ws.send(
            dump_node_message(
                RegisterMessage(
                    node=self.config.name,
                    datasets=[self._public(d) for d in self.datasets.values()],
                    max_tasks=self.config.max_tasks,
                    runner=self.config.runner,
                    agent_version=__version__,
                )
            )
        )
        with self._lock:
            held = [HeldTask(task_id=k, state=h.state) for k, h in self.held.items()]
        await ws.send(dump_node_message(ResumeMessage(tasks=held)))
        try:
            first = parse_node_message(await asyncio.wait_for(ws.recv(), 30), self.max_frame)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in (4401, 4403):
                raise CredentialsRefused(
                    f"the server refused node '{self.config.name}': "
                    f"{exc.rcvd.reason or exc.rcvd.code}"
                ) from None
            raise
        if not isinstance(first, WelcomeMessage):
            raise NodeProtocolError(f"expected 'welcome', got {first.type!r}")
        self.heartbeat_s = first.heartbeat_s
        self.max_frame = first.max_frame
        log.info(
            "node '%s' connected to %s (%d dataset(s), %d task(s) held)",
            self.config.name, self.url, len(self.datasets), len(held),
        )  # fmt: skip
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._outbox = outbox
        # Results the server has not acknowledged yet travel again.
        with self._lock:
            finals = [h.final for h in self.held.values() if h.final is not None]
        for msg in finals:
            outbox.put_nowait(msg)
        sender = asyncio.create_task(self._sender(ws, outbox))
        beats = asyncio.create_task(self._heartbeats(outbox))
        try:
            while not self._stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), self.heartbeat_s * 3 + 1)
                except TimeoutError:
                    log.warning(
                        "no frame from the server for %.1fs: reconnecting", self.heartbeat_s * 3
                    )
                    return
                try:
                    msg = parse_node_message(frame, self.max_frame)
                except NodeProtocolError as exc:
                    log.warning("refused a frame from the server: %s", exc)
                    continue
                self._on_message(msg)
        finally:
            self._outbox = None
            sender.cancel()
            beats.cancel()
            with contextlib.suppress(BaseException):
                await sender
            with contextlib.suppress(BaseException):
                await beats

    async def _sender(self, ws: Any, outbox: asyncio.Queue[Any]) -> None:
        while True:
            msg = await outbox.get()
            await ws.send(dump_node_message(msg))

    async def _heartbeats(self, outbox: asyncio.Queue[Any]) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            seq += 1
            outbox.put_nowait(HeartbeatMessage(seq=seq))

    def _send(self, msg: Any) -> None:
        """Queue a frame from any thread (dropped while disconnected; results are re-sent)."""
        loop = self._loop
        if loop is None:
            return

        def put() -> None:
            if self._outbox is not None:
                self._outbox.put_nowait(msg)

        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(put)

    @staticmethod
    def _public(d: dict[str, Any]) -> DatasetInfo:
        return DatasetInfo(
            name=d["name"],
            format=d["format"],
            rows=d["rows"],
            columns=[ColumnInfo(**c) for c in d["columns"]],
            hash=d["hash"],
        )

    # -- messages from the server (loop thread) -------------------------------------

    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, AssignMessage):
            task = task_from_wire(msg.task)
            if task.node != self.config.name:
                log.warning("refused task %s placed on node '%s'", task.task_id, task.node)
                return
            with self._lock:
                h = self.held.get(task.task_id)
                if h is None:
                    h = self.held[task.task_id] = _Held(task)
                    self.pool.submit(self._run_held, h)
                    return
            if h.final is not None:
                self._send(h.final)
        elif isinstance(msg, AckMessage):
            with self._lock:
                self.held.pop(msg.task_id, None)
        elif isinstance(msg, TerminateMessage):
            with self._lock:
                h = self.held.get(msg.task_id)
                if h is not None and h.final is not None:
                    del self.held[msg.task_id]
            if h is not None:
                log.info("terminating task %s (%s)", msg.task_id, msg.reason)
                h.cancel.set()
        elif isinstance(msg, HeartbeatMessage):
            pass
        else:
            log.warning("refused a %r message from the server", msg.type)

    # -- running a task (pool threads) -----------------------------------------------

    def _run_held(self, h: _Held) -> None:
        task = h.task
        if h.cancel.is_set():
            with self._lock:
                self.held.pop(task.task_id, None)
            return
        h.state = "running"
        final: ResultMessage | TaskErrorMessage
        try:
            final = self.execute(task, h.cancel)
            log.info("task %s (%s) finished", task.task_id, task.tool)
        except Exception as exc:
            if not isinstance(exc, TaskFailure):
                # Whatever went wrong, the server must hear of it: a task that never
                # reports would hold its run until the task's timeout, or forever.
                log.exception("task %s (%s): internal error", task.task_id, task.tool)
                exc = TaskFailure(
                    f"node internal error: {type(exc).__name__}: {exc}",
                    "NodeError",
                    traceback.format_exc(),
                )
            log.info("task %s (%s) failed: %s", task.task_id, task.tool, exc)
            report = error_report(
                task,
                exc,
                journal=self.journal,
                policy=self.policy,
                node=self.config.name,
                runner=self.config.runner,
            )
            final = TaskErrorMessage(task_id=task.task_id, report=report)
        with self._lock:
            if h.cancel.is_set() and task.task_id not in self.held:
                return  # terminated and forgotten
            h.final = final
            h.state = "finished" if isinstance(final, ResultMessage) else "error"
        self._send(final)

    def _telemetry(self, task_id: str) -> Any:
        def sink(kind: str, payload: dict[str, Any]) -> None:
            self._send(TelemetryMessage(task_id=task_id, kind=kind, payload=payload))

        return sink

    def execute(self, task: RemoteTask, cancel: threading.Event) -> ResultMessage:
        """Run one task to its result message (:class:`TaskFailure` on any error).

        The node's policy applies all the way: admission before anything is loaded,
        filtered telemetry while it runs, and an egress decision for every output the
        step asks to share; each step is written to the node's audit log.
        """
        raw = self._telemetry(task.task_id)
        sink = guarded_sink(
            task, raw, policy=self.policy, journal=self.journal, node=self.config.name
        )
        try:
            spec, cfg = task_tool(task, self.config.name, " (start it with --import)")
        except TaskProblem as exc:
            self.journal.append(
                {"kind": "task.refused", "task_id": task.task_id, "run_id": task.run_id,
                 "principal": task.principal, "flow": task.flow, "tool": task.tool,
                 "rule": "tools.allow" if exc.etype == "UnknownTool" else "config",
                 "reason": str(exc)}
            )  # fmt: skip
            raise TaskFailure(str(exc), exc.etype, public=True) from None
        # The node's own words (waiting for approval) are not a tool's: unfiltered.
        self.admission.admit(task, spec, raw, cancel)
        try:
            # The lifecycle as the node sees it: config valid → initialized, inputs loaded →
            # started, the tool called → running; the result or error ends it.
            sink("state", {"state": "initialized"})
            dataset = task_dataset(task, self.config.name, self.datasets)
        except TaskProblem as exc:
            raise TaskFailure(str(exc), exc.etype, public=True) from None
        if dataset is not None:
            # Tools that release summaries (flowfed.evaluate_classifier) merge their bins
            # until each holds at least k rows: the node tells them its k.
            dataset = {**dataset, "disclosure": {"min_rows": self.policy.disclosure.min_rows}}
        args = {name: self.inputs.load(task, name, v) for name, v in task.inputs.items()}
        rows = self.inputs.rows_in(task, args, dataset)
        width_ = width(args, dataset)
        sink("state", {"state": "started"})
        ctx = task_context(task, sink, self.config.name, dataset)
        state_key_ = None
        if task.client_state is not None:
            # The step's state for this client, from the node's own folder; it is handed
            # to the tool and stored back here, and never put in a message.
            state_key_ = state_key(task.client_state, task.step, self.config.name, task.dataset)
            ctx._client_state = self.client_states.load(state_key_)
        sink("state", {"state": "running"})
        value = call_on_node(self, self.config, spec, task, args, cfg, ctx, cancel, dataset)
        decisions: list[Release] = []

        # A task that read nothing of this node (no dataset, no node-local input) cannot
        # release anything of it: its outputs derive from central inputs and config only
        # (the sandbox shows it no other file of the host).
        node_data = dataset is not None or any(
            v.location == "node" for vs in task.inputs.values() for v in as_list(vs)
        )

        def release(name: str, mat: Any, value: Any) -> Release:
            if not node_data:
                decision = Release(name, mat.kind, True, None, mat.data, category="no-node-data")
                decisions.append(decision)
                return decision
            decision = self.egress.decide(spec.name, name, mat, value, rows, width_)
            decisions.append(decision)
            return decision

        try:
            outputs = task_outputs(
                spec, value, task, lambda mat, _value: self.store.put(mat), release
            )
        except OutputProblem as exc:
            raise TaskFailure(str(exc), "OutputError", public=True) from None
        self.inputs.remember_rows(outputs, rows)
        egress = []
        for d in decisions:
            out = outputs[d.output]
            record = {
                "output": d.output,
                "kind": d.kind,
                "released": d.released,
                "hash": out.hash,
                "size": out.size if d.released else 0,
                "rows": d.rows,
                "category": d.category,
                "suppressed_cells": d.suppressed,
            }
            if not d.released:
                record.update(rule=d.rule, reason=d.reason)
            egress.append(record)
            self.journal.append(
                {
                    **record,
                    "output_kind": record["kind"],
                    "kind": "egress.released" if d.released else "egress.refused",
                    "task_id": task.task_id,
                    "run_id": task.run_id,
                }
            )
        refused = [d for d in decisions if not d.released]
        if refused:
            d = refused[0]
            raise TaskFailure(
                f"node '{self.config.name}' refused to release output '{d.output}' "
                f"({d.kind}) of step '{task.step}' (policy rule {d.rule}): {d.reason}",
                "EgressRefused",
                public=True,
            )
        if state_key_ is not None and ctx._client_state.changed:
            self.client_states.save(state_key_, ctx._client_state)
        entry = self.journal.append(
            {"kind": "task.finished", "task_id": task.task_id, "run_id": task.run_id,
             "outputs": {k: o.hash for k, o in outputs.items()}}
        )  # fmt: skip
        for record in egress:
            record["audit"] = entry.get("hash")
        return ResultMessage(
            task_id=task.task_id,
            outputs={k: output_to_wire(o) for k, o in outputs.items()},
            egress=egress,
        )
