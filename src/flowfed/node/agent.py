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

This module imports the runtime, the tools and the artifact store, never the server, the
database or the engine.

Example:
    >>> server_ws_url("https://flowfed.example.org/")
    'wss://flowfed.example.org/api/v1/nodes/connect'
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowfed import __version__
from flowfed.artifacts import ArtifactStore, load
from flowfed.node.client_state import ClientStateStore, state_key
from flowfed.node.datasets import NodeSetupError, scan_dataset
from flowfed.node.egress import Egress, Release, error_type, rows_of
from flowfed.node.outputs import (
    OutputProblem,
    TaskProblem,
    task_context,
    task_dataset,
    task_outputs,
    task_tool,
)
from flowfed.node.policy import DEFAULT_POLICY, MAX_METRIC_NAMES, NodePolicy, PolicyRefusal
from flowfed.node.protocol import (
    HEARTBEAT_S,
    MAX_FRAME_BYTES,
    WS_PATH,
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
from flowfed.node.runners import RUNNERS, SandboxLimits
from flowfed.runtime.remote import RemoteInput, RemoteTask
from flowfed.runtime.usage import clean_counts, clean_figures, measured
from flowfed.tools.core import Context, ToolSpec, call_tool

log = logging.getLogger("flowfed.node")

#: Exit code when the server refuses the node's credentials (retrying cannot help).
EXIT_REFUSED = 3


class CredentialsRefused(RuntimeError):
    """The server refused the node token."""


class TaskFailure(Exception):
    """A task ended in Error on this node; ``etype`` says how (shown to the user)."""

    def __init__(
        self, message: str, etype: str, tb: str | None = None, *, public: bool = False
    ) -> None:
        super().__init__(message)
        self.etype = etype
        self.tb = tb
        #: The node wrote the message itself (a refusal, a timeout): it may leave as is.
        #: Anything else (what the tool raised or printed) stays on the node by default.
        self.public = public


#: How often a task waiting for the operator's approval looks again (seconds).
APPROVAL_POLL_S = 0.5


def server_ws_url(server: str) -> str:
    """The node endpoint for a server base URL (http, https, ws or wss)."""
    base = server.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    if not base.startswith(("ws://", "wss://")):
        raise NodeSetupError(f"--server must be an http(s):// or ws(s):// URL, got {server!r}")
    if base.endswith(WS_PATH):
        return base
    return base + WS_PATH


def load_credentials(path: Path) -> dict[str, str]:
    """The credentials file written by ``flowfed nodes add --out``: name, token[, server]."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeSetupError(f"cannot read credentials {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise NodeSetupError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise NodeSetupError(f"{path}: expected a JSON object with 'name' and 'token'")
    if not isinstance(data.get("name"), str):
        raise NodeSetupError(f"{path}: expected a JSON object with 'name' and 'token'")
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def parse_dataset_option(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (NodeSetupError otherwise)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise NodeSetupError(f"--dataset must read NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip()).expanduser()


@dataclass
class NodeConfig:
    """Everything ``flowfed node start`` was given."""

    name: str
    server: str
    token: str
    datasets: dict[str, Path] = field(default_factory=dict)
    #: ``sandbox`` (bubblewrap, warm workers) unless the operator chose otherwise.
    runner: str = "sandbox"
    max_tasks: int = 1
    work_dir: Path = Path(".flowfed-node")
    imports: list[str] = field(default_factory=list)
    max_backoff_s: float = 5.0
    #: Offer permessage-deflate on the WebSocket. Off by default: nearly every frame is a
    #: small heartbeat, telemetry or ack, which deflate makes ~0.1 ms of CPU dearer on
    #: both ends (a quarter of the server loop's time with 200 nodes busy) and which
    #: keeps zlib state per connection; output bytes are base64 of mostly binary data.
    #: Turn it on for compressible shareable outputs over a slow link.
    compression: bool = False
    #: Budget, in MB of their stored size, for node-store tables and arrays kept decoded
    #: between tasks (see :class:`_Decoded`); 0 turns the cache off.
    cache_mb: int = 256
    #: The node's own policy (``--policy FILE``); the strict default when none is given.
    policy: NodePolicy = DEFAULT_POLICY
    #: Memory, process and CPU-time limits of a sandboxed task (``runner="sandbox"``).
    limits: SandboxLimits = field(default_factory=SandboxLimits)


class _Decoded:
    """Tables and arrays from the node's store, decoded once and copied per task.

    A federated step reads the same training table from the node's store in every round;
    decoding its Parquet took longer than the round's training. Entries are keyed by
    content hash, so one can never be stale. Each task gets a deep copy, so a tool that
    changes its input in place cannot change what the next task reads. The budget counts
    serialized bytes, least recently used first out; anything larger is not kept.
    """

    KINDS = frozenset({"pandas", "numpy"})

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._lock = threading.Lock()
        self._items: dict[str, tuple[Any, int]] = {}  # insertion order = LRU order

    def get(self, hash: str) -> Any | None:
        with self._lock:
            item = self._items.pop(hash, None)
            if item is None:
                return None
            self._items[hash] = item
        return item[0].copy()

    def put(self, hash: str, value: Any, size: int) -> None:
        if self.budget <= 0 or size > self.budget:
            return
        with self._lock:
            if hash in self._items:
                return
            while self._items and self.size + size > self.budget:
                _, freed = self._items.pop(next(iter(self._items)))
                self.size -= freed
            self._items[hash] = (value.copy(), size)
            self.size += size


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
        self.decoded = _Decoded(config.cache_mb * 2**20)
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
        self._code_hashes: dict[int, str] = {}
        # How many of the node's rows each object in its store covers, by content hash:
        # the disclosure checks need it for outputs built from earlier outputs.
        self._rows_path = config.work_dir / "rows.json"
        self._rows: dict[str, int] = _read_rows(self._rows_path)
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
            final = TaskErrorMessage(task_id=task.task_id, report=self._error_report(task, exc))
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

    def _error_report(self, task: RemoteTask, exc: TaskFailure) -> dict[str, Any]:
        """The error as it leaves the node: by default its type, step, tool and node, and
        the node-local error id; the message and traceback stay here."""
        context = {
            "node": self.config.name,
            "task_id": task.task_id,
            "step": task.step,
            "tool": task.tool,
            "runner": self.config.runner,
        }
        full = {"message": str(exc), "type": exc.etype, "traceback": exc.tb, "context": context}
        error_id = self.journal.error(task.task_id, full)
        self.journal.append(
            {
                "kind": "task.failed",
                "task_id": task.task_id,
                "run_id": task.run_id,
                "error_id": error_id,
                "type": error_type(exc.etype),
            }
        )
        # A timeout or a cancellation is the platform's own word, whatever the tool did.
        if exc.public or exc.etype in ("Timeout", "Cancelled") or self.policy.share.errors:
            return {**full, "context": {**context, "error_id": error_id}}
        etype = error_type(exc.etype)
        return {
            "message": (
                f"{etype} in step '{task.step}', tool '{task.tool}', on node "
                f"'{self.config.name}': its message and traceback stay on the node "
                f"(the operator reads them with `flowfed node errors {error_id}`)"
            ),
            "type": etype,
            "traceback": None,
            "context": {**context, "error_id": error_id},
        }

    def _guarded(self, task: RemoteTask, sink: Any) -> Any:
        """The telemetry sink as the policy filters it: logs stay here (the server sees
        their level), metrics leave only with a plain name and a finite value, and per-node
        facts of a secure-aggregation round stay inside the aggregate."""
        policy = self.policy
        journal = self.journal
        name = self.config.name
        hide_facts = task.secure_aggregation and policy.secure_aggregation.release != "node"
        names: set[str] = set()

        def guarded(kind: str, payload: dict[str, Any]) -> None:
            if kind == "state":
                sink(kind, payload)
            elif kind == "log":
                level = str(payload.get("level", "info"))
                level = level if level in ("debug", "info", "warning", "error") else "info"
                message = str(payload.get("message", ""))
                journal.log(task.task_id, level, message, run_id=task.run_id, step=task.step)
                if not policy.share.logs:
                    message = f"[{level} kept on node '{name}': `flowfed node logs {task.task_id}`]"
                sink("log", {"level": level, "message": message})
            elif kind == "metric":
                metric, value = payload.get("name"), payload.get("value")
                known = metric in names or len(names) < MAX_METRIC_NAMES
                if not known or not policy.metric_allowed(metric, value):
                    log.warning(
                        "task %s: dropped a metric whose name or value may not leave the node",
                        task.task_id,
                    )
                    journal.log(
                        task.task_id,
                        "warning",
                        f"metric {metric!r} = {value!r} dropped by the node's policy "
                        "(names [A-Za-z0-9_.:-]{1,64}, finite numbers)",
                    )
                    return
                if hide_facts:
                    journal.log(
                        task.task_id,
                        "info",
                        f"metric {metric} = {value} kept on the node (secure aggregation)",
                    )
                    return
                names.add(str(metric))
                step = payload.get("step")
                step = step if isinstance(step, int) and not isinstance(step, bool) else None
                sink("metric", {"name": metric, "value": float(value or 0), "step": step})
            elif kind == "progress":
                fraction = payload.get("fraction")
                out: dict[str, Any] = {}
                if isinstance(fraction, int | float) and not isinstance(fraction, bool):
                    f = float(fraction)
                    out = {"fraction": min(1.0, max(0.0, f))} if math.isfinite(f) else {}
                if policy.share.logs and isinstance(payload.get("message"), str):
                    out["message"] = payload["message"]
                # Counts leave as numbers; the unit only as a known word unless logs are
                # shared, so a tool cannot spell out data in it.
                counts = clean_counts(payload, any_unit=policy.share.logs)
                if counts is not None:
                    out.update(counts)
                sink("progress", out)
            elif kind == "resources":
                # Measured by the runtime, not the tool; numbers only in any case.
                figures = clean_figures(payload)
                if figures is not None:
                    sink("resources", figures)

        return guarded

    def _code_hash(self, spec: ToolSpec) -> str:
        from flowfed.artifacts.codehash import code_hash

        key = id(spec.fn)
        h = self._code_hashes.get(key)
        if h is None:
            h = self._code_hashes[key] = code_hash(spec.fn)
        return h

    def _admit(self, task: RemoteTask, spec: ToolSpec, sink: Any, cancel: threading.Event) -> str:
        """Apply the policy's admission rules to ``task``; its tool's code hash.

        Raises :class:`TaskFailure` (``PolicyRefused``) naming the node and the rule; in
        manual approval mode, waits for ``flowfed node approve`` first.
        """
        policy = self.policy
        code = self._code_hash(spec)
        who = {
            "task_id": task.task_id,
            "run_id": task.run_id,
            "principal": task.principal,
            "flow": task.flow,
            "step": task.step,
            "tool": spec.name,
            "tool_version": spec.version,
            "code_hash": code,
            "inputs": _input_hashes(task),
        }
        try:
            policy.check_principal(task.principal, task.flow)
            policy.check_tool(spec.name, spec.version, code, True)
            policy.check_data_access(spec.name, task.config)
        except PolicyRefusal as exc:
            self.journal.append(
                {"kind": "task.refused", **who, "rule": exc.rule, "reason": str(exc)}
            )
            raise TaskFailure(
                f"node '{self.config.name}' refused the task (policy rule {exc.rule}): {exc}",
                "PolicyRefused",
                public=True,
            ) from None
        waits: list[tuple[str, str, dict[str, Any]]] = []
        if policy.tools.approval == "manual":
            waits.append(("tool", f"{spec.name}@{spec.version}#{code}", who))
        if policy.principals.approval == "manual":
            waits.append(("principal", task.principal, who))
        for kind, key, details in waits:
            if self.journal.is_approved(kind, key):
                continue
            request = self.journal.request_approval(kind, key, details)
            message = (
                f"waiting for approval at node '{self.config.name}' (new {kind} "
                f"{key.split('#')[0]}): the operator runs `flowfed node approve {request}`"
            )
            log.warning("task %s: %s", task.task_id, message)
            sink("progress", {"fraction": 0.0, "message": message})
            sink("log", {"level": "warning", "message": message})
            deadline = None if task.timeout is None else time.monotonic() + task.timeout
            while not self.journal.is_approved(kind, key):
                if cancel.is_set():
                    raise TaskFailure(
                        "cancelled while waiting for approval", "Cancelled", public=True
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise TaskFailure(
                        f"no approval at node '{self.config.name}' within the task's timeout "
                        f"({task.timeout:g}s): {message}",
                        "Timeout",
                        public=True,
                    )
                time.sleep(APPROVAL_POLL_S)
        self.journal.append({"kind": "task.admitted", **who})
        return code

    def _rows_in(
        self, task: RemoteTask, args: dict[str, Any], dataset: dict[str, Any] | None
    ) -> int | None:
        """How many of the node's rows the task's inputs cover (the largest of them)."""
        found: list[int] = []
        if dataset is not None and not any(
            v.location == "node" for vs in task.inputs.values() for v in _as_list(vs)
        ):
            found.append(int(dataset["rows"]))
        for name, value in task.inputs.items():
            for one, got in zip(_as_list(value), _as_list(args.get(name)), strict=False):
                if one.location != "node":
                    continue
                rows = self._rows.get(one.hash)
                if rows is None:
                    rows = rows_of(got)
                if rows is not None:
                    found.append(rows)
        return max(found) if found else None

    def _remember_rows(self, outputs: dict[str, Any], rows: int | None) -> None:
        if rows is None:
            return
        with self._lock:
            for o in outputs.values():
                self._rows[o.hash] = rows
            _write_rows(self._rows_path, self._rows)

    def execute(self, task: RemoteTask, cancel: threading.Event) -> ResultMessage:
        """Run one task to its result message (:class:`TaskFailure` on any error).

        The node's policy applies all the way: admission before anything is loaded,
        filtered telemetry while it runs, and an egress decision for every output the
        step asks to share; each step is written to the node's audit log.
        """
        raw = self._telemetry(task.task_id)
        sink = self._guarded(task, raw)
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
        self._admit(task, spec, raw, cancel)
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
        args = {name: self._input(task, name, v) for name, v in task.inputs.items()}
        rows = self._rows_in(task, args, dataset)
        width = _width(args, dataset)
        sink("state", {"state": "started"})
        ctx = task_context(task, sink, self.config.name, dataset)
        state_key_ = None
        if task.client_state is not None:
            # The step's state for this client, from the node's own folder; it is handed
            # to the tool and stored back here, and never put in a message.
            state_key_ = state_key(task.client_state, task.step, self.config.name, task.dataset)
            ctx._client_state = self.client_states.load(state_key_)
        sink("state", {"state": "running"})
        value = self._call(spec, task, args, cfg, ctx, cancel, dataset)
        decisions: list[Release] = []

        # A task that read nothing of this node (no dataset, no node-local input) cannot
        # release anything of it: its outputs derive from central inputs and config only
        # (the sandbox shows it no other file of the host).
        node_data = dataset is not None or any(
            v.location == "node" for vs in task.inputs.values() for v in _as_list(vs)
        )

        def release(name: str, mat: Any, value: Any) -> Release:
            if not node_data:
                decision = Release(name, mat.kind, True, None, mat.data, category="no-node-data")
                decisions.append(decision)
                return decision
            decision = self.egress.decide(spec.name, name, mat, value, rows, width)
            decisions.append(decision)
            return decision

        try:
            outputs = task_outputs(
                spec, value, task, lambda mat, _value: self.store.put(mat), release
            )
        except OutputProblem as exc:
            raise TaskFailure(str(exc), "OutputError", public=True) from None
        self._remember_rows(outputs, rows)
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

    def _input(self, task: RemoteTask, name: str, value: RemoteInput | list[RemoteInput]) -> Any:
        if isinstance(value, list):
            return [self._input(task, name, v) for v in value]
        if value.pickled and not task.allow_pickle:
            raise TaskFailure(
                f"input '{name}' is pickled but the task does not allow pickle",
                "InputError",
                public=True,
            )
        cached = value.location == "node" and value.kind in _Decoded.KINDS
        if cached:
            got = self.decoded.get(value.hash)
            if got is not None:
                return got
        if value.location == "node":
            try:
                data = self.store.get(value.hash, verify=True)
            except (FileNotFoundError, OSError) as exc:
                raise TaskFailure(
                    f"input '{name}' ({value.hash[:12]}) is not in node "
                    f"'{self.config.name}''s store: {exc}",
                    "InputError",
                    public=True,
                ) from None
        else:
            if value.data is None:
                raise TaskFailure(
                    f"central input '{name}' came without its bytes", "InputError", public=True
                )
            data = value.data
            if hashlib.sha256(data).hexdigest() != value.hash:
                raise TaskFailure(
                    f"input '{name}' does not match its hash {value.hash[:12]}",
                    "InputError",
                    public=True,
                )
        try:
            got = load(value.kind, data, value.meta)
        except Exception as exc:
            raise TaskFailure(
                f"cannot load input '{name}' ({value.kind}): {exc}", "InputError", public=True
            ) from None
        if cached:
            self.decoded.put(value.hash, got, len(data))
        return got

    def _call(
        self,
        spec: ToolSpec,
        task: RemoteTask,
        args: dict[str, Any],
        cfg: Any,
        ctx: Context,
        cancel: threading.Event,
        dataset: dict[str, Any] | None,
    ) -> Any:
        if self.config.runner == "inprocess":
            return self._call_inprocess(spec, task, args, cfg, ctx, cancel)
        from flowfed.executors.isolated import SandboxUnavailable
        from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
        from flowfed.node.runners import limit_hint, run_isolated, run_sandboxed

        limits = self.config.limits
        task_context = {"dataset": ctx.dataset, "round": task.round}
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_cancel, args=(cancel, done, ctx), daemon=True)
        watcher.start()
        try:
            if self.config.runner == "subprocess":
                return run_isolated(spec, args, task.config, ctx, task.timeout, task_context)
            # A warm sandbox per (run, dataset): it shows the tool that dataset's file
            # and nothing else of the node; each task still gets a fresh area and process.
            return run_sandboxed(
                self,
                base=self.config.work_dir.resolve() / "sandboxes",
                max_workers=max(4, 2 * self.config.max_tasks),
                run_id=task.run_id,
                dataset=dataset,
                imports=self.config.imports,
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
                if self.config.runner == "sandbox":
                    message += limit_hint(etype, message, limits)
            raise TaskFailure(message, etype, exc.remote_traceback) from None
        finally:
            done.set()

    @staticmethod
    def _watch_cancel(cancel: threading.Event, done: threading.Event, ctx: Context) -> None:
        # The isolated driver polls ctx.cancelled: a terminate from the server sets it.
        while not done.wait(0.1):
            if cancel.is_set():
                ctx.cancel()
                return

    def _call_inprocess(
        self,
        spec: ToolSpec,
        task: RemoteTask,
        args: dict[str, Any],
        cfg: Any,
        ctx: Context,
        cancel: threading.Event,
    ) -> Any:
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


def node_command(
    name: str,
    server: str,
    credentials: str | Path,
    datasets: dict[str, str | Path] | None = None,
    *,
    runner: str = "sandbox",
    max_tasks: int = 1,
    work_dir: str | Path | None = None,
    imports: list[str] | None = None,
    insecure: bool = False,
) -> list[str]:
    """The ``python -m flowfed node start ...`` command line for a node agent process.

    ``runner`` is ``sandbox`` by default; ``inprocess`` and ``subprocess`` isolate
    nothing and need ``insecure=True`` (``--insecure``), which the caller passes only
    when a person chose them explicitly.

    Example:
        >>> node_command("a", "http://127.0.0.1:8000", "a.json", {"d": "d.csv"})[3:7]
        ['node', 'start', '--name', 'a']
        >>> node_command("a", "u", "a.json", runner="inprocess", insecure=True)[-1]
        '--insecure'
    """
    import sys

    cmd = [
        sys.executable, "-m", "flowfed", "node", "start",
        "--name", name, "--server", server, "--credentials", str(credentials),
        "--runner", runner, "--max-tasks", str(max_tasks),
    ]  # fmt: skip
    if work_dir is not None:
        cmd += ["--work-dir", str(work_dir)]
    for ds, path in (datasets or {}).items():
        cmd += ["--dataset", f"{ds}={path}"]
    for entry in imports or []:
        cmd += ["--import", entry]
    if insecure:
        cmd.append("--insecure")
    return cmd


def spawn_node(
    name: str,
    server: str,
    credentials: str | Path,
    datasets: dict[str, str | Path] | None = None,
    *,
    log_file: str | Path | None = None,
    cwd: str | Path | None = None,
    **options: Any,
) -> Any:
    """Start a node agent as a subprocess (``subprocess.Popen``); its output goes to ``log_file``.

    ``options`` are :func:`node_command`'s (runner, max_tasks, work_dir, imports,
    insecure). The caller terminates it (``proc.terminate()``) when done.

    Example:
        >>> # proc = spawn_node("hospital-a", srv.url, "a.json", {"breast": "a.csv"})
    """
    import subprocess

    cmd = node_command(name, server, credentials, datasets, **options)
    if log_file is None:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL)
    with open(log_file, "ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _width(args: dict[str, Any], dataset: dict[str, Any] | None) -> int:
    """The most columns among the task's tables (and its dataset)."""
    widths = [len(dataset.get("columns") or [])] if dataset else []
    for value in args.values():
        for one in _as_list(value):
            columns = getattr(one, "columns", None)
            if columns is not None:
                widths.append(len(columns))
    return max(widths, default=0)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _input_hashes(task: RemoteTask) -> dict[str, Any]:
    return {
        name: [i.hash for i in v] if isinstance(v, list) else v.hash
        for name, v in task.inputs.items()
    }


def _read_rows(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


def _write_rows(path: Path, rows: dict[str, int]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(rows, f)
    os.replace(tmp, path)
