"""The local engine: runs a TaskGraph with retries, timeouts, caching, routing and cancel.

One scheduler thread decides what runs; worker threads (or processes) run tools. Every
state change goes through the task's :class:`~flowfed.runtime.lifecycle.Lifecycle` and is
queued to the database writer, which commits in batches, so the hot path never waits on
the database or the display.

Example:
    >>> # see flowfed.api.run_flow for the one-call form used by the CLI
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import gc
import heapq
import itertools
import os
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import StaticPool

from flowfed.artifacts import (
    INLINE_MAX_BYTES,
    ArtifactStore,
    ByteSource,
    CatalogBlobs,
    NotMaterializable,
    inline_uri,
    is_inline,
    materialize,
)
from flowfed.artifacts.hashing import UNHASHABLE, cache_key_for, code_hash, task_identity
from flowfed.db import Database, Writer
from flowfed.engine.persist import Persister
from flowfed.engine.state import ArtifactRef, RunView, TaskRun
from flowfed.ids import new_id
from flowfed.plan.expressions import ExpressionError
from flowfed.plan.graph import TaskGraph, TaskNode
from flowfed.runtime.lifecycle import TERMINAL, IllegalTransition, Lifecycle, State
from flowfed.spec.models import END
from flowfed.tools.core import (
    Context,
    TaskCancelled,
    ToolOutputError,
    call_tool,
    config_field_names,
)

if TYPE_CHECKING:
    from flowfed.artifacts import Materialized
    from flowfed.executors import Executor
    from flowfed.runtime.remote import NodeDispatcher, RemoteOutput

Listener = Callable[[str, dict[str, Any]], None]

#: Executor kinds: worker threads, forked processes, ``python -m flowfed.runtime``
#: subprocesses over the runtime protocol, the same under a bubblewrap sandbox or in a container.
EXECUTORS = ("threads", "processes", "subprocess", "sandbox", "container")

#: Tools whose calls average less than this run on the scheduler thread (no hand-off).
QUICK_TASK_S = 0.001


class TaskFailed(Exception):
    """A task attempt ended in Error; carries the structured report."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get("message", "task failed"))
        self.report = report


@dataclass
class RunResult:
    """What a finished run reports (the CLI's ``--json`` is built from this).

    Example:
        >>> # result = flowfed.run_flow("flow.yaml")
        >>> # result.status, result.value("scores")
        >>> # ('success', {'accuracy': 0.87, 'auc': 0.96})
    """

    run_id: str
    status: str
    view: RunView
    error: str | None = None
    #: Federated rounds and the flow's ``report`` artifact (see :meth:`_Run._summary`).
    summary: dict[str, Any] = field(default_factory=dict)
    #: The latest reference of every artifact this run produced or reused, by name.
    outputs: dict[str, ArtifactRef] = field(default_factory=dict, repr=False)
    _artifacts: list[dict[str, Any]] | None = field(default=None, repr=False)
    _catalog: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)
    _source: Callable[[ArtifactRef], ByteSource] | None = field(default=None, repr=False)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The catalog rows of the run's artifacts (read from the database on first use:
        a caller that only wants the status or a value never pays for the query)."""
        if self._artifacts is None:
            self._artifacts = self._catalog() if self._catalog is not None else []
        return self._artifacts

    def value(self, name: str) -> Any:
        """The value of artifact ``name`` as this run left it (its latest version).

        Values the run computed in this process are returned as they are; cached or
        placed ones are loaded from the catalog or the artifact store.

        Example:
            >>> # flowfed.run_flow("flow.yaml").value("model").coef_.shape
            >>> # (1, 30)
        """
        ref = self.outputs.get(name)
        if ref is None:
            known = ", ".join(sorted(self.outputs)) or "none"
            raise KeyError(f"run {self.run_id} has no artifact named {name!r} (it has: {known})")
        if ref.has_value:
            return ref.value
        if self._source is None:
            raise LookupError(f"artifact {name!r} of run {self.run_id} has no stored bytes here")
        return ref.handle(self._source(ref)).load()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``flowfed run --json``."""
        steps = []
        for name in self.view.steps:
            tasks = self.view.tasks.get(name, [])
            steps.append(
                {
                    "name": name,
                    "status": self.view.step_state(name),
                    "tasks": [
                        {
                            "id": t.id,
                            "status": str(t.state),
                            "node": t.node.node,
                            **({"dataset": t.node.dataset} if t.node.dataset else {}),
                            **({"round": t.node.round} if t.node.round is not None else {}),
                            "cached": t.cached,
                            "attempt": t.attempt,
                            "iteration": t.iteration,
                            **({"error": t.error} if t.error else {}),
                            **({"metrics": t.metrics} if t.metrics else {}),
                        }
                        for t in tasks
                    ],
                }
            )
        return {
            "run_id": self.run_id,
            "flow": self.view.flow_name,
            "status": self.status,
            "error": self.error,
            "duration_s": round((self.view.ended_at or time.time()) - self.view.started_at, 4),
            "steps": steps,
            "artifacts": [
                {"name": a["name"], "version": a["version"], "hash": a["hash"], "id": a["id"]}
                for a in self.artifacts
            ],
            **({"summary": self.summary} if self.summary else {}),
        }


class LocalEngine:
    """Run task graphs on this machine.

    Args:
        db: the database (its writer records runs, tasks, transitions and artifacts).
        store: where artifact bytes go.
        executor: ``"threads"`` (default), ``"processes"`` (a forked child per call),
            ``"subprocess"`` or ``"sandbox"`` (``flowfed.executors.isolated``), or a
            cluster URL (``dask://local``, ``ray://HOST:PORT``: ``flowfed.executors``).
        max_workers: pool size (default: enough threads to overlap waiting tools).
        use_cache: look up and record cache entries (``--no-cache`` turns it off).
    """

    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        *,
        executor: str = "threads",
        max_workers: int | None = None,
        use_cache: bool = True,
        listeners: list[Listener] | None = None,
        record_events: bool = False,
        on_events: Callable[[list[dict[str, Any]]], None] | None = None,
        dispatcher: NodeDispatcher | None = None,
    ) -> None:
        # Cluster executors (dask://..., ray://...) run only the tool call remotely; the
        # built-in kinds keep their own paths in _Run._call (threads: no indirection).
        self.remote: Executor | None = None
        if executor not in EXECUTORS:
            from flowfed.executors import executor_from_url, is_cluster_url

            if not is_cluster_url(executor):
                raise ValueError(
                    f"unknown executor {executor!r}; use 'threads', 'processes', 'subprocess', "
                    "'sandbox', 'container', dask://local, dask://HOST:PORT, ray://local or ray://HOST:PORT"
                )
            self.remote = executor_from_url(executor, store=store)
        self.db = db
        self.store = store
        #: Runs the tasks placed on data nodes (the server's node hub, or simulated nodes).
        self.dispatcher = dispatcher
        self.executor_kind = executor
        self.max_workers = max_workers or min(32, (os.cpu_count() or 2) * 8)
        self.use_cache = use_cache
        self.listeners = list(listeners or [])
        # The server records every event (for late and returning watchers) and announces
        # them from the writer once committed; the CLI needs neither.
        self.record_events = record_events or on_events is not None
        self.on_events = on_events
        self._cancel = threading.Event()
        self._code_hashes: dict[int, str] = {}
        #: Identities of config-less tools by (name, version, code hash): see _Run._identity.
        self.bare_identities: dict[tuple[str, str, str], str | None] = {}
        self.view: RunView | None = None
        self._current: _Run | None = None

    # -- public ---------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the current run to stop: nothing new starts, running tasks end Cancelled.

        Safe from any thread. Live tasks are marked cancelled at once and their contexts
        cancelled, so a tool that calls ``ctx.check_cancelled()`` stops even while it runs
        on the scheduler thread; a tool that never checks is abandoned and its result
        dropped.
        """
        self._cancel.set()
        current = self._current
        if current is not None:
            current.cancel_live()

    def run(
        self,
        graph: TaskGraph,
        *,
        params: dict[str, Any] | None = None,
        flow_file: str | None = None,
        run_id: str | None = None,
        resume: bool = False,
        owner: str | None = None,
        lease_until: float | None = None,
        principal: str | None = None,
    ) -> RunResult:
        """Execute ``graph`` to completion (or cancellation) and return the result.

        With ``resume=True`` the run ``run_id`` already exists (a server that died left it
        behind): finished tasks stay finished with their artifacts, tasks that were in
        flight end in Error ("interrupted") and run again under their retry policy, and
        the event log continues where it stopped. ``owner`` and ``lease_until`` record
        which server process executes a new run (see ``Database.claim_runs``).
        ``principal`` names who submitted it; every placed task carries it to its node,
        whose policy checks it.
        """
        self._cancel.clear()
        run = _Run(self, graph, run_id or uuid.uuid4().hex, params or {}, flow_file)
        run.resume = resume
        run.owner, run.lease_until = owner, lease_until
        run.principal = principal
        self.view = run.view
        self._current = run
        try:
            return run.execute()
        finally:
            self._current = None

    def code_hash(self, node: TaskNode) -> str:
        """The tool's normalized code hash, computed once per tool."""
        fn = node.tool.fn
        h = self._code_hashes.get(id(fn))
        if h is None:
            h = code_hash(fn)
            self._code_hashes[id(fn)] = h
        return h


class _Kept:
    """A byte source that serves this run's kept bytes before asking ``inner``."""

    def __init__(self, run: _Run, inner: ByteSource) -> None:
        self.run, self.inner = run, inner

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        with self.run.kept_lock:
            data = self.run.kept.get(hash)
        return data if data is not None else self.inner.get(hash, verify=verify)

    def local_path(self, hash: str) -> Any:
        return self.inner.local_path(hash)


class _Run:
    """The state of one run; lives for the duration of :meth:`LocalEngine.run`."""

    def __init__(
        self,
        engine: LocalEngine,
        graph: TaskGraph,
        run_id: str,
        params: dict[str, Any],
        flow_file: str | None,
    ) -> None:
        self.e = engine
        self.g = graph
        self.run_id = run_id
        self.params = params
        self.flow_file = flow_file
        self.writer: Writer = engine.db.writer(on_commit=engine.on_events)
        self.event_seq = itertools.count(1)
        self.persister = Persister(engine.store, self.writer)
        self.identities: dict[str, object] = {}
        self.resume = False
        self.owner: str | None = None
        self.lease_until: float | None = None
        self.principal: str | None = None
        self.resubmit: list[TaskRun] = []
        self.blobs = CatalogBlobs(engine.db)
        self.durations: dict[str, float] = {}  # per tool: moving average of call time
        self.view = RunView(run_id, graph.flow.name, graph.step_names(), started_at=time.time())
        self.done_q: queue.SimpleQueue[tuple[TaskRun, Any]] = queue.SimpleQueue()
        self.latest: dict[str, ArtifactRef] = {}
        self.generation = 0
        self.consumed: dict[str, dict[str, int]] = {}
        self.input_lists: dict[str, list[str]] = {}  # node id -> input_names(), computed once
        self.inputs_seen: dict[str, int] = {}  # node id -> inputs known present (see _ready)
        self.active: set[str] = set()  # plan tasks submitted or waiting to retry
        self.started_ids: set[str] = set()
        self.activations: dict[str, int] = {}
        self.executions: dict[str, int] = {}
        self.retry_heap: list[tuple[float, int, TaskRun]] = []
        self.unrouted_failures: list[str] = []
        self.any_failure = False
        self.fatal: str | None = None
        self.seed_context: dict[str, Any] = {"flow_id": graph.flow.name, "execution_id": run_id}
        self.order = {name: i for i, name in enumerate(graph.tasks)}
        self.pool: cf.Executor | None = None
        self._seq = 0
        # Bytes of artifacts produced in this run, for placed tasks that consume them:
        # the catalog and store are written behind the hot path and may lag.
        self.placed = any(n.placed or n.federated is not None for n in graph.tasks.values())
        #: Whether events go anywhere (listeners or the event log); read on the hot path so
        #: a run nobody watches does not build event payloads. Fixed for the run.
        self.emitting = bool(engine.listeners) or engine.record_events
        self.kept: dict[str, bytes] = {}
        self.kept_lock = threading.Lock()
        self.pending_store: dict[str, list[Any]] = {}

    def keep_bytes(self, hash: str, data: bytes) -> None:
        """Remember an artifact's bytes for placed consumers later in this run."""
        with self.kept_lock:
            self.kept[hash] = data

    def bytes_of(self, ref: ArtifactRef) -> bytes:
        """The bytes of a central artifact: kept from this run, else catalog or store."""
        return self._source(ref).get(ref.hash)

    # -- driving ---------------------------------------------------------------------------

    def execute(self) -> RunResult:
        # Everything alive now (the plan, the tools, imported modules) outlives the run:
        # frozen, the collector's full passes skip it instead of re-walking it every few
        # thousand allocations (a sixth of a 2,000-task chain's time). Both calls are O(1);
        # unfreezing hands those objects back to the collector afterwards. Skipped when
        # something else froze already (a concurrent run, or an application that freezes
        # before forking workers): its freeze is not ours to undo.
        mine = gc.get_freeze_count() == 0
        if mine:
            gc.freeze()
        try:
            return self._execute()
        finally:
            if mine:
                gc.unfreeze()

    def _execute(self) -> RunResult:
        g = self.g
        if self.resume:
            self._restore()
        else:
            self.writer.create_run(
                run_id=self.run_id,
                flow_name=g.flow.name,
                flow_version=g.flow.version,
                flow_file=self.flow_file,
                spec=g.flow.model_dump(mode="json", fallback=repr),
                params=self.params,
                created_at=self.view.started_at,
                owner=self.owner,
                lease_until=self.lease_until,
                principal=self.principal,
            )
        self._emit(
            "run",
            None,
            {
                "status": "running",
                "flow": g.flow.name,
                "steps": self.view.steps,
                **({"resumed": True} if self.resume else {}),
            },
        )
        # One query for every cache entry of this flow's tools: look-ups on the hot path
        # are then dict accesses, not a database round trip per task.
        self.cache_index = (
            self.e.db.cache_index({n.tool.name for n in g.tasks.values()})
            if self.e.use_cache
            else {}
        )
        self._resolve_models()
        self.pool = self._make_pool()
        for tr in self.resubmit:
            self._submit(tr)
        try:
            self._loop()
        except KeyboardInterrupt:
            self.e.cancel()
            self._drain_cancel()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
        return self._finish()

    def _resolve_models(self) -> None:
        """Registry models the flow names (``models:``) become this run's first artifacts."""
        if not self.g.external:
            return
        from flowfed.db.registry import BadModelRef, ModelNotFound, resolve_model_ref

        for key, (ref, where) in self.g.external.items():
            try:
                row = resolve_model_ref(self.e.db, ref)
            except (ModelNotFound, BadModelRef) as exc:
                self.fatal = f"{where}: {exc}"
                return
            self.latest[key] = ArtifactRef.from_row(key, row)

    def _make_pool(self) -> cf.Executor:
        # Worker threads orchestrate in every mode; with "processes" each tool call itself
        # runs in a forked child (flowfed.executors.processes), with "subprocess" and
        # "sandbox" in `python -m flowfed.runtime` (flowfed.executors.isolated).
        return cf.ThreadPoolExecutor(self.e.max_workers, thread_name_prefix="flowfed-task")

    def _loop(self) -> None:
        self._consider(list(self.g.tasks))
        while True:
            if self.e._cancel.is_set():
                self._drain_cancel()
                return
            if not self.active and not self.retry_heap:
                return
            timeout = 0.2
            if self.retry_heap:
                timeout = max(0.0, min(timeout, self.retry_heap[0][0] - time.monotonic()))
            try:
                tr, outcome = self.done_q.get(timeout=timeout)
            except queue.Empty:
                self._release_retries()
                continue
            self._complete(tr, outcome)
            # Drain whatever else finished meanwhile before re-planning: fewer wake-ups.
            while True:
                try:
                    tr, outcome = self.done_q.get_nowait()
                except queue.Empty:
                    break
                self._complete(tr, outcome)
            self._release_retries()

    def cancel_live(self) -> None:
        """Cancel every task not yet ended (called from any thread by ``engine.cancel``)."""
        for runs in list(self.view.tasks.values()):
            for tr in list(runs):
                self._cancel_task(tr)

    def _restore(self) -> None:
        """Rebuild the scheduler's state of an interrupted run from the database."""
        state = self.e.db.resume_state(self.run_id)
        self.event_seq = itertools.count(state["max_seq"] + 1)
        by_step: dict[str, list[dict[str, Any]]] = {}
        for row in state["tasks"]:
            by_step.setdefault(row.get("plan_key") or row["step"], []).append(row)
        routed_from: list[TaskRun] = []
        for step, rows in by_step.items():
            node = self.g.tasks.get(step)
            if node is None or node.federated is not None:
                # A federated step's round tasks are re-run with the step: the step's
                # own row decides, its children are history.
                continue
            restored: list[TaskRun] = []
            for row in rows:
                tr = TaskRun(row["id"], node, iteration=row["iteration"], attempt=row["attempt"])
                tr.lifecycle = Lifecycle(state=State(row["state"]))
                tr.metrics = dict(row.get("metrics") or {})
                tr.cached = bool(row.get("cached"))
                tr.error = row.get("error")
                tr.cache_key = row.get("cache_key")
                restored.append(tr)
            self.view.tasks.setdefault(node.step, []).extend(restored)
            self.started_ids.add(step)
            self.executions[step] = max(t.iteration for t in restored)
            last, row = restored[-1], rows[-1]
            if last.state in (State.FINISHED, State.CACHED):
                for out_name, art in row["outputs"].items():
                    if out_name not in node.outputs:
                        continue
                    self.generation += 1
                    ref = ArtifactRef.from_row(node.outputs[out_name], art, self.generation)
                    last.outputs[out_name] = ref
                    self.latest[ref.name] = ref
                routed_from.append(last)
            elif last.state is State.ERROR:
                self.any_failure = True
                routed_from.append(last)
            elif not last.state.terminal:
                self._interrupted(last)
        for step in by_step:
            node = self.g.tasks.get(step)
            if node is not None:
                self.consumed[step] = {
                    a: self.latest[a].generation for a in node.input_names() if a in self.latest
                }
        # Routing decisions of tasks that ended before the restart are made again from
        # their recorded outcome and metrics, so routed steps still get their turn.
        for tr in routed_from:
            target = self._route(tr, success=tr.state is not State.ERROR)
            if tr.state is State.ERROR and (target is None or target == END):
                self.unrouted_failures.append(tr.step)
            if target and target != END and target not in by_step:
                self.activations[target] = self.activations.get(target, 0) + 1

    def _interrupted(self, tr: TaskRun) -> None:
        """A task the dead server was running: record why it stopped, then retry it."""
        message = "interrupted: the server running this task stopped"
        report = {
            "message": message,
            "type": "Interrupted",
            "traceback": None,
            "context": {"step": tr.step, "attempt": tr.attempt},
        }
        tr.error = report
        self._move(tr, State.ERROR, message)
        self._record_end(tr, State.ERROR, error=report, metrics=tr.metrics or None)
        node = tr.node
        if tr.attempt <= node.retries:
            tr.attempt += 1
            tr.lifecycle = Lifecycle()
            tr.error = None
            self.writer.update_task(task_id=tr.id, attempt=tr.attempt, state="pending", error=None)
            self._emit("retry", tr, {"attempt": tr.attempt, "delay": 0.0, "reason": message})
            tr.inputs = self._input_refs(node)
            self.active.add(node.id)
            self.resubmit.append(tr)
        else:
            self.any_failure = True
            target = self._route(tr, success=False)
            if target is None or target == END:
                self.unrouted_failures.append(tr.step)
            else:
                self.activations[target] = self.activations.get(target, 0) + 1

    def _release_retries(self) -> None:
        now = time.monotonic()
        while self.retry_heap and self.retry_heap[0][0] <= now:
            _, _, tr = heapq.heappop(self.retry_heap)
            self._submit(tr)

    # -- readiness -------------------------------------------------------------------------

    def _consider(self, names: list[str] | set[str]) -> None:
        if self.fatal or self.e._cancel.is_set():
            return
        started: list[TaskRun] = []
        for name in sorted(names, key=self.order.__getitem__):
            if name in self.active:
                continue
            node = self.g.tasks[name]
            if not self._ready(node):
                continue
            if node.routed:
                self.activations[name] -= 1
            tr = self._start(node)
            if tr is not None:
                started.append(tr)
        if not started:
            return
        self._dispatch(started)

    def _quick(self, node: TaskNode) -> bool:
        """Whether the tool is known to take well under a millisecond per call."""
        d = self.durations.get(node.tool.name)
        return d is not None and d < QUICK_TASK_S and node.timeout is None

    def _dispatch(self, started: list[TaskRun]) -> None:
        """Send tasks to the pool, or run them right here when a hand-off would cost more.

        Handing a task to a worker thread and back costs tens of microseconds plus a fight
        for the GIL, more than a quick tool itself. Tools measured quick in this run run on
        the scheduler thread; the others go to the pool, except the last, which the
        scheduler would only wait for. Of several ready tasks of a tool not yet measured,
        one runs here first to measure it.
        """
        pending = list(started)
        while pending:
            quick = [t for t in pending if self._quick(t.node)]
            rest = [t for t in pending if not self._quick(t.node)]
            probe = None
            if rest:
                counts: dict[str, int] = {}
                for t in rest:
                    counts[t.node.tool.name] = counts.get(t.node.tool.name, 0) + 1
                probe = next(
                    (
                        t
                        for t in rest
                        if counts[t.node.tool.name] > 1
                        and t.node.tool.name not in self.durations
                        and t.node.timeout is None
                    ),
                    None,
                )
            if probe is not None:
                pending.remove(probe)
                self._work(self._prepare(probe), inline=True)
                continue
            for tr in rest[:-1] if not quick else rest:
                self._submit(tr)
            for tr in quick:
                self._work(self._prepare(tr), inline=True)
            if rest and not quick:
                self._work(self._prepare(rest[-1]), inline=True)
            return

    def _ready(self, node: TaskNode) -> bool:
        if node.routed and self.activations.get(node.id, 0) <= 0:
            return False
        latest = self.latest
        names = self._inputs_of(node)
        # Artifacts only ever join `latest`: the scan resumes where the last look found a
        # missing one, so a fan-in of N inputs costs O(N) over the run, not O(N) per look.
        i = self.inputs_seen.get(node.id, 0)
        n = len(names)
        while i < n and names[i] in latest:
            i += 1
        if i < n:
            self.inputs_seen[node.id] = i
            return False
        if node.ancestors and node.ancestors & self.active:
            return False
        if node.routed:
            return True
        seen = self.consumed.get(node.id)
        if seen is None:
            return True
        # An unrouted step re-runs only when a loop produced new versions of its inputs.
        return any(latest[a].generation > seen.get(a, -1) for a in names)

    def _inputs_of(self, node: TaskNode) -> list[str]:
        """``node.input_names()``, built once per run (readiness reads it on every look)."""
        names = self.input_lists.get(node.id)
        if names is None:
            names = self.input_lists[node.id] = node.input_names()
        return names

    def _input_refs(self, node: TaskNode) -> dict[str, ArtifactRef | list[ArtifactRef]]:
        """The latest version of every input (a list for a fan-in), as far as produced."""
        latest = self.latest
        refs: dict[str, ArtifactRef | list[ArtifactRef]] = {}
        for p, a in node.inputs.items():
            if isinstance(a, list):
                refs[p] = [latest[x] for x in a if x in latest]
            elif a in latest:
                refs[p] = latest[a]
        return refs

    def _start(self, node: TaskNode) -> TaskRun | None:
        count = self.executions.get(node.id, 0) + 1
        if count > self.g.flow.max_iterations:
            self.fatal = (
                f"step '{node.step}' would run a {count}th time, past the flow's max_iterations "
                f"({self.g.flow.max_iterations}): a loop through 'next' conditions never ended"
            )
            return None
        self.executions[node.id] = count
        tr = TaskRun(new_id(), node, iteration=count)
        tr.inputs = self._input_refs(node)
        self.consumed[node.id] = {a: self.latest[a].generation for a in self._inputs_of(node)}
        self.view.tasks.setdefault(node.step, []).append(tr)
        self.started_ids.add(node.id)
        self.writer.add_tasks([self._task_row(tr)])
        self.active.add(node.id)
        return tr

    def _task_row(self, tr: TaskRun) -> dict[str, Any]:
        n = tr.node
        return {
            "id": tr.id,
            "run_id": self.run_id,
            "step": n.step,
            "tool": n.tool.name,
            "tool_version": n.tool.version,
            "node": n.node,
            "round": n.round,
            "plan_key": n.id,
            "dataset": n.dataset,
            "variant": n.variant,
            "iteration": tr.iteration,
            "attempt": tr.attempt,
            "state": str(tr.state),
            "created_at": time.time(),
        }

    def _source(self, ref: ArtifactRef) -> ByteSource:
        """Where a reference's bytes live: the catalog for small objects, else the store
        (in a run with placed tasks, bytes kept from this run come first)."""
        src: ByteSource = self.blobs if is_inline(ref.uri) else self.e.store
        return _Kept(self, src) if self.placed else src

    def _source_version(self, node: TaskNode) -> str | None:
        """The version of the outside data a tool reads ("" when it cannot tell)."""
        fn = node.tool.source_version
        if fn is None:
            return None
        try:
            version = fn(node.config_data)
        except Exception:  # an unreadable source: the tool itself will say why
            return ""
        return "" if version is None else str(version)

    def _identity(self, node: TaskNode) -> str | None:
        """The node's tool + code + config fingerprint, computed once per run."""
        got = self.identities.get(node.id, UNHASHABLE)
        if got is UNHASHABLE:
            tool = node.tool
            code = self.e.code_hash(node)
            if config_field_names(type(node.config)):
                got = task_identity(tool.name, tool.version, code, node.config_data)
            else:
                # A tool without config has one identity however many tasks run it (a
                # chain of 10,000 steps of one tool hashes it once).
                bare = self.e.bare_identities
                key = (tool.name, tool.version, code)
                got = bare.get(key, UNHASHABLE)
                if got is UNHASHABLE:
                    got = bare[key] = task_identity(tool.name, tool.version, code, {})
            self.identities[node.id] = got
        return got  # type: ignore[return-value]

    def _prepare(self, tr: TaskRun) -> TaskRun:
        if tr.node.tool.seed_task:
            # Seed-003 tasks read every earlier result from the shared context.
            tr.seed_context = dict(self.seed_context)  # type: ignore[attr-defined]
        return tr

    def _submit(self, tr: TaskRun) -> None:
        assert self.pool is not None
        try:
            self.pool.submit(self._work, self._prepare(tr))
        except RuntimeError:  # pool shut down by a cancel in flight
            self.done_q.put((tr, TaskCancelled("run cancelled")))

    # -- completion ------------------------------------------------------------------------

    def _complete(self, tr: TaskRun, outcome: Any) -> None:
        node = tr.node
        if (
            isinstance(outcome, TaskFailed)
            and tr.attempt <= node.retries
            and not (self.e._cancel.is_set())
        ):
            delay = node.retry_backoff * (2 ** (tr.attempt - 1))
            tr.attempt += 1
            tr.lifecycle = Lifecycle()
            tr.error = None
            self.writer.update_task(task_id=tr.id, attempt=tr.attempt, state="pending", error=None)
            self._seq += 1
            heapq.heappush(self.retry_heap, (time.monotonic() + delay, self._seq, tr))
            self._emit("retry", tr, {"attempt": tr.attempt, "delay": delay})
            return
        self.active.discard(node.id)
        candidates: set[str] = set(self.g.downstream.get(node.id, ()))
        state = tr.state
        if state in (State.FINISHED, State.CACHED):
            for out_name, ref in tr.outputs.items():
                self.generation += 1
                ref.generation = self.generation
                self.latest[node.outputs[out_name]] = ref
            if node.tool.seed_task:
                res = tr.outputs.get("result")
                self.seed_context[f"{node.step}_result"] = getattr(tr, "seed_result", None) or (
                    res.value if res else None
                )
            target = self._route(tr, success=True)
        elif state is State.ERROR:
            self.any_failure = True
            if node.tool.seed_task:
                self.seed_context[f"{node.step}_result"] = getattr(tr, "seed_result", None)
            target = self._route(tr, success=False)
            if target is None or target == END:
                self.unrouted_failures.append(node.step)
        else:  # cancelled
            return
        if target and target != END:
            self.activations[target] = self.activations.get(target, 0) + 1
            candidates.add(target)
        self._consider(candidates)

    def _route(self, tr: TaskRun, *, success: bool) -> str | None:
        r = tr.node.route
        if r is None:
            return None
        if not success:
            return r.failure
        if r.when is None:
            return r.success
        scope = {
            "metrics": dict(tr.metrics),
            "outputs": {k: v.value for k, v in tr.outputs.items() if v.has_value},
            "status": "success",
            "attempt": tr.attempt,
            "iteration": tr.iteration,
            "config": self.g.config,
        }
        try:
            holds = bool(tr.node.route.when.evaluate(scope))  # type: ignore[union-attr]
        except ExpressionError as exc:
            self.fatal = f"step '{tr.step}': condition failed to evaluate: {exc}"
            return None
        return r.success if holds else r.otherwise

    def _drain_cancel(self) -> None:
        """Cancel everything live and wait briefly for running tools to notice."""
        for runs in self.view.tasks.values():
            for tr in runs:
                self._cancel_task(tr)
        self.retry_heap.clear()
        deadline = time.monotonic() + 2.0
        while self.active and time.monotonic() < deadline:
            try:
                tr, _ = self.done_q.get(timeout=0.05)
            except queue.Empty:
                continue
            self.active.discard(tr.node.id)

    def _cancel_task(self, tr: TaskRun) -> None:
        ctx = getattr(tr, "ctx", None)
        if ctx is not None:
            ctx.cancel()
        self._move(tr, State.CANCELLED, "run cancelled")

    def _finish(self) -> RunResult:
        cancelled = self.e._cancel.is_set()
        # Steps that never ran get a terminal task so the record says why.
        for name, node in self.g.tasks.items():
            if name in self.started_ids:
                continue
            tr = TaskRun(new_id(), node)
            self.view.tasks.setdefault(node.step, []).append(tr)
            self.writer.add_tasks([self._task_row(tr)])
            if cancelled:
                reason = "run cancelled"
                dst = State.CANCELLED
            else:
                dst = State.SKIPPED
                missing = [a for a in node.input_names() if a not in self.latest]
                if self.fatal:
                    reason = "run stopped"
                elif missing:
                    prod = self.g.producers.get(missing[0], "?")
                    reason = (
                        f"input '{missing[0]}' was never produced (step '{prod}' did not finish)"
                    )
                else:
                    reason = "no condition routed to it"
            tr.message = reason
            self._move(tr, dst, reason)
            self._record_end(tr, dst)
        self.persister.close()
        if self.persister.errors and not self.fatal:
            self.fatal = "; ".join(self.persister.errors)
        if cancelled:
            status, error = "cancelled", "run cancelled"
        elif self.fatal:
            status, error = "failed", self.fatal
        elif self.unrouted_failures or (self.g.flow.failure_policy == "any" and self.any_failure):
            status = "failed"
            failed = self.unrouted_failures or [
                n for n, runs in self.view.tasks.items() if runs[-1].state is State.ERROR
            ]
            error = "step(s) failed: " + ", ".join(dict.fromkeys(failed))
        else:
            status, error = "success", None
        self.view.status = status
        self.view.error = error
        self.view.ended_at = time.time()
        self._emit("run", None, {"status": status, "error": error})
        self.writer.finish_run(
            run_id=self.run_id, status=status, ended_at=self.view.ended_at, error=error
        )
        self.writer.close()
        db, run_id = self.e.db, self.run_id
        blobs, store = self.blobs, self.e.store
        result = RunResult(
            run_id,
            status,
            self.view,
            error,
            self._summary(),
            outputs=dict(self.latest),
            _catalog=lambda: db.run_artifacts(run_id),
            # Not self._source: the result must not keep this run's kept bytes alive.
            _source=lambda ref: blobs if is_inline(ref.uri) else store,
        )
        if isinstance(db.engine.pool, StaticPool):
            # An in-memory database (one shared connection) is gone once closed: read the
            # catalog while it exists.
            result.artifacts  # noqa: B018
        return result

    def _summary(self) -> dict[str, Any]:
        """Rounds and timing of federated steps, and the value of the flow's ``report``."""
        out: dict[str, Any] = {}
        for runs in self.view.tasks.values():
            for t in runs:
                if t.node.federated is not None and t.state is State.FINISHED:
                    out["rounds"] = int(t.metrics.get("rounds", 0))
                    out["seconds_per_round"] = t.metrics.get("seconds_per_round")
                    out.update(getattr(t, "fl_summary", None) or {})
                    ref = t.outputs.get(t.node.federated.model_output)
                    if ref is not None:
                        out["model"] = {"name": ref.name, "id": ref.id, "hash": ref.hash}
        report = self.g.flow.report
        if not report:
            return out
        # A swept flow has one report per subvariant: report[learning_rate=0.1], ...
        found = {
            name[len(report) + 1 : -1] if name != report else "": ref
            for name, ref in self.latest.items()
            if name == report or (name.startswith(report + "[") and name.endswith("]"))
        }
        values: dict[str, Any] = {}
        for label, ref in found.items():
            try:
                values[label] = ref.value if ref.has_value else ref.handle(self._source(ref)).load()
            except Exception as exc:  # the run's result stands; say why the report is absent
                values[label] = {"error": f"cannot load report '{ref.name}': {exc}"}
        if "" in values:
            out["metrics"] = values[""]
        elif values:
            out["variants"] = values
        return out

    # -- the worker side -------------------------------------------------------------------

    def _emit(self, kind: str, tr: TaskRun | None, payload: dict[str, Any]) -> None:
        if not self.emitting:
            return
        event = {"run_id": self.run_id, "task_id": tr.id if tr else None, **payload}
        if tr is not None:
            # Enough about the task for a watcher to place it in the tree on its own.
            event.update(
                step=tr.step,
                tool=tr.node.tool.name,
                node=tr.node.node,
                iteration=tr.iteration,
                attempt=tr.attempt,
                round=tr.node.round,
                retries=tr.node.retries,
                plan_key=tr.node.id,
                **({"dataset": tr.node.dataset} if tr.node.dataset else {}),
                **({"variant": tr.node.variant} if tr.node.variant else {}),
            )
        if self.e.record_events:
            self.writer.event(
                run_id=self.run_id,
                seq=next(self.event_seq),
                kind=kind,
                task_id=event["task_id"],
                payload=event,
                ts=time.time(),
            )
        for listener in self.e.listeners:
            # A broken display must never break a run.
            with contextlib.suppress(Exception):
                listener(kind, event)

    def _move(self, tr: TaskRun, dst: State, detail: str | None = None) -> bool:
        """Advance ``tr``; False if it was already terminal (cancelled under our feet)."""
        with tr.lock:
            lifecycle = tr.lifecycle
            if lifecycle.state in TERMINAL:
                return False
            t = lifecycle.advance(dst, detail)  # IllegalTransition propagates
        now = t.at
        if dst is State.STARTED:
            tr.started_at = now
        elif dst in TERMINAL:
            tr.ended_at = now
        # States are StrEnum members, i.e. already the strings the catalog stores (reading
        # ``.value`` goes through a Python-level descriptor, twice per transition).
        src = t.src
        self.writer.transition_row((tr.id, self.run_id, src, dst, now, tr.attempt, detail))
        if self.emitting:
            self._emit("transition", tr, {"src": str(src), "dst": str(dst), "detail": detail})
        return True

    def _telemetry(self, tr: TaskRun) -> Callable[[str, dict[str, Any]], None]:
        writer, run_id, task_id = self.writer, self.run_id, tr.id

        def sink(kind: str, payload: dict[str, Any]) -> None:
            now = time.time()
            if kind == "log":
                writer.log(
                    run_id=run_id,
                    task_id=task_id,
                    ts=now,
                    level=payload["level"],
                    message=payload["message"],
                )
            elif kind == "metric":
                tr.metrics[payload["name"]] = payload["value"]
                writer.metric(
                    run_id=run_id,
                    task_id=task_id,
                    name=payload["name"],
                    value=payload["value"],
                    step=payload.get("step"),
                    ts=now,
                )
            elif kind == "progress":
                tr.progress = payload["fraction"]
                if payload.get("message"):
                    tr.message = payload["message"]
            self._emit(kind, tr, payload)

        return sink

    def _work(self, tr: TaskRun, inline: bool = False) -> None:
        try:
            outcome: Any = self._attempt(tr)
        except TaskFailed as exc:
            outcome = exc
        except KeyboardInterrupt:
            if not inline:
                raise
            # Ctrl-C while the scheduler thread itself runs the tool: hand the task back as
            # cancelled, then let the interrupt cancel the run.
            self.done_q.put((tr, TaskCancelled("run cancelled")))
            raise
        except BaseException as exc:
            outcome = exc
            if not tr.state.terminal:
                tr.error = {
                    "message": f"internal error: {exc}",
                    "type": type(exc).__name__,
                    "traceback": traceback.format_exc(),
                }
                with contextlib.suppress(IllegalTransition):
                    self._move(tr, State.ERROR, tr.error["message"])
        self.done_q.put((tr, outcome))

    def _attempt(self, tr: TaskRun) -> Any:
        node = tr.node
        e = self.e
        # Cache look-up: tool identity + code + config + input content hashes.
        key = None
        if e.use_cache and node.cache and not node.tool.seed_task:
            identity = self._identity(node)
            hashes = {
                p: ",".join(r.hash for r in ref) if isinstance(ref, list) else ref.hash
                for p, ref in tr.inputs.items()
            }
            source = self._source_version(node)
            if source is not None:
                hashes["\0source"] = source
            key = None if identity is None or source == "" else cache_key_for(identity, hashes)
            if key is None and source == "":
                tr.message = "caching off: the version of the data it reads is unknown"
            elif key is None:
                tr.message = "caching off: config cannot be hashed canonically"
                self.writer.log(
                    run_id=self.run_id,
                    task_id=tr.id,
                    ts=time.time(),
                    level="warning",
                    message=f"caching is off for step '{node.step}': its config holds a value "
                    "that cannot be hashed canonically, so a cache hit could be wrong",
                )
            else:
                hit = self.cache_index.get(key)
                if hit is not None and all(
                    is_inline(a.get("uri")) or e.store.exists(a["hash"]) for a in hit[0].values()
                ):
                    tr.metrics.update(hit[1])
                    return self._cache_hit(tr, key, hit[0])
        tr.cache_key = key
        if node.placed or node.federated is not None:
            return self._attempt_placed(tr)
        if not self._move(tr, State.INITIALIZED):
            return None
        ctx = Context(
            self._telemetry(tr),
            run_id=self.run_id,
            task_id=tr.id,
            step=node.step,
            node=node.node,
            attempt=tr.attempt,
            iteration=tr.iteration,
        )
        tr.ctx = ctx  # type: ignore[attr-defined]
        if not self._move(tr, State.STARTED):
            return None
        try:
            args = self._load_inputs(tr)
        except Exception as exc:
            self._fail(tr, f"could not load inputs: {exc}", exc)
        if not self._move(tr, State.RUNNING):
            return None
        t0 = time.perf_counter()
        try:
            result = self._call(tr, args, ctx)
        except TaskCancelled:
            self._move(tr, State.CANCELLED, "cancelled")
            return None
        except TaskFailed:
            raise
        except Exception as exc:
            self._fail(tr, f"{type(exc).__name__}: {exc}", exc)
        took = time.perf_counter() - t0
        name = node.tool.name
        prev = self.durations.get(name)
        self.durations[name] = took if prev is None else 0.7 * prev + 0.3 * took
        if ctx.cancelled or tr.state.terminal:
            return None  # cancelled or timed out while running: drop the result
        return self._finish_outputs(tr, result, key)

    def _attempt_placed(self, tr: TaskRun) -> None:
        """A task on a data node, or a federated step (flowfed.engine.placed/federated)."""
        from flowfed.engine.placed import NoNodes, record_remote, run_placed
        from flowfed.runtime.remote import RemoteTaskError

        node = tr.node
        if not self._move(tr, State.INITIALIZED):
            return None
        if node.federated is not None:
            from flowfed.engine.federated import FederatedDriver

            return FederatedDriver(self, tr).drive()
        try:
            result = run_placed(self, tr)
            rows = record_remote(self, tr, result)
        except RemoteTaskError as exc:
            handle = getattr(tr, "ctx", None)
            if handle is not None and handle.cancelled:
                self._move(tr, State.CANCELLED, "cancelled")
                return None
            self._remote_failure(tr, exc.report)
        except (NoNodes, ValueError) as exc:
            self._fail(tr, str(exc), None)
        if tr.state.terminal:
            return None
        return self._finish_rows(tr, rows, self.pending_store.pop(tr.id, []), None)

    def _remote_failure(self, tr: TaskRun, remote: dict[str, Any]) -> None:
        """End ``tr`` in Error with a node's report (its message, type and traceback)."""
        report = self._report(
            tr, str(remote.get("message") or "remote task failed"), None, remote.get("type")
        )
        report["traceback"] = remote.get("traceback")
        report["context"].update(
            {k: v for k, v in (remote.get("context") or {}).items() if k not in report["context"]}
        )
        raise TaskFailed(report)

    def _call(self, tr: TaskRun, args: dict[str, Any], ctx: Context) -> Any:
        node = tr.node
        if node.tool.seed_task:
            args = {"context": getattr(tr, "seed_context", {})}
        kind = self.e.executor_kind
        remote = self.e.remote
        if remote is not None:
            return self._out_of_thread(
                tr, ctx, lambda: remote.call(node, args, tr.id, ctx, node.timeout)
            )
        if kind == "processes":
            from flowfed.executors import processes

            return self._out_of_thread(
                tr, ctx, lambda: processes.call_in_process(node, args, tr.id, ctx, node.timeout)
            )
        if kind in ("subprocess", "sandbox", "container"):
            from flowfed.executors import isolated

            return self._out_of_thread(
                tr,
                ctx,
                lambda: isolated.call_isolated(node, args, tr.id, ctx, node.timeout, runner=kind),
            )
        if node.timeout is None:
            return call_tool(node.tool, args, node.config, ctx)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call_tool(node.tool, args, node.config, ctx)
            except BaseException as exc:
                box["error"] = exc

        # Python threads cannot be killed: a timed-out tool is abandoned (its context is
        # cancelled so its telemetry stops and check_cancelled() raises), its result dropped.
        t = threading.Thread(target=target, name=f"flowfed-tool-{node.step}", daemon=True)
        t.start()
        t.join(node.timeout)
        if t.is_alive():
            ctx.cancel()
            raise TaskFailed(
                self._report(tr, f"timed out after {node.timeout:g}s", None, "TimeoutError")
            )
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _out_of_thread(self, tr: TaskRun, ctx: Context, call: Callable[[], Any]) -> Any:
        """Run ``call`` (a process or isolated executor) and map its failures to the task's."""
        from flowfed.executors.processes import ProcessTaskError, ProcessTimeout

        try:
            return call()
        except ProcessTimeout as exc:
            raise TaskFailed(self._report(tr, str(exc), None, "TimeoutError")) from None
        except ProcessTaskError as exc:
            if ctx.cancelled:
                raise TaskCancelled(str(exc)) from None
            report = self._report(tr, str(exc), None, exc.etype)
            report["traceback"] = exc.remote_traceback
            raise TaskFailed(report) from None

    def _load_inputs(self, tr: TaskRun) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for param, ref in tr.inputs.items():
            spec = tr.node.tool.inputs.get(param)
            lazy = spec is not None and spec.lazy
            if not lazy and type(ref) is ArtifactRef and ref.has_value:
                args[param] = ref.value  # what a handle's load() returns, without the handle
                continue
            if isinstance(ref, list):
                handles = [r.handle(self._source(r)) for r in ref]
                args[param] = handles if lazy else [h.load() for h in handles]
                continue
            handle = ref.handle(self._source(ref))
            args[param] = handle if lazy else handle.load()
        return args

    def _fail(self, tr: TaskRun, message: str, exc: BaseException | None) -> None:
        raise TaskFailed(self._report(tr, message, exc))

    def _report(
        self, tr: TaskRun, message: str, exc: BaseException | None, etype: str | None = None
    ) -> dict[str, Any]:
        node = tr.node
        tb = "".join(traceback.format_exception(exc)) if exc is not None else None
        report = {
            "message": message,
            "type": etype or (type(exc).__name__ if exc else "Error"),
            "traceback": tb,
            "context": {
                "step": node.step,
                "tool": node.tool.ref,
                "node": node.node,
                "attempt": tr.attempt,
                "iteration": tr.iteration,
                "config": node.config_json(),
                "inputs": {
                    p: [{"name": x.name, "hash": x.hash} for x in r]
                    if isinstance(r, list)
                    else {"name": r.name, "hash": r.hash}
                    for p, r in tr.inputs.items()
                },
            },
        }
        tr.error = report
        self._move(tr, State.ERROR, message)
        self._record_end(tr, State.ERROR, error=report, metrics=tr.metrics or None)
        return report

    def _finish_outputs(self, tr: TaskRun, result: Any, key: str | None) -> None:
        node = tr.node
        if node.tool.seed_task:
            result = self._seed_result(tr, result)
        try:
            values = node.tool.split_outputs(result)
        except ToolOutputError as exc:
            self._fail(tr, str(exc), None)
        materialized = {}
        for out_name, value in values.items():
            if out_name not in node.outputs:
                continue  # an output the step chose not to keep
            try:
                materialized[out_name] = (value, materialize(value, allow_pickle=node.allow_pickle))
            except NotMaterializable as exc:
                self._fail(tr, f"output '{out_name}' of tool '{node.tool.name}': {exc}", None)
        now = time.time()
        rows = []
        parents = [ref.id for ref in tr.input_refs()]
        to_store = []
        for out_name, (value, m) in materialized.items():
            inline = len(m.data) <= INLINE_MAX_BYTES
            uri = inline_uri(m.hash) if inline else self.e.store.uri(m.hash)
            if not inline:
                to_store.append(m)
            rows.append(
                self._output_row(
                    tr,
                    out_name,
                    m,
                    uri=uri,
                    shareable=True,
                    blob=m.data if inline else None,
                    parents=parents,
                    now=now,
                    value=value,
                    has_value=True,
                )
            )
            if self.placed:
                self.keep_bytes(m.hash, m.data)
        return self._finish_rows(tr, rows, to_store, key)

    def _output_row(
        self,
        tr: TaskRun,
        out_name: str,
        m: Materialized | RemoteOutput,
        *,
        uri: str,
        shareable: bool,
        blob: bytes | None,
        parents: list[str],
        now: float,
        value: Any = None,
        has_value: bool = False,
    ) -> dict[str, Any]:
        """Put output ``out_name`` on ``tr`` as a reference and return its catalog row
        (from this process's materialization, or a node's description of its own)."""
        node = tr.node
        aid = new_id()
        name = node.outputs[out_name]
        tr.outputs[out_name] = ArtifactRef(
            aid,
            name,
            m.hash,
            m.size,
            m.kind,
            m.type_name,
            uri,
            meta=dict(m.meta),
            value=value,
            has_value=has_value,
        )
        return {
            "id": aid,
            "name": name,
            "hash": m.hash,
            "size": m.size,
            "kind": m.kind,
            "type_name": m.type_name,
            "uri": uri,
            "run_id": self.run_id,
            "task_id": tr.id,
            "step": node.step,
            "node": node.node,
            "shareable": shareable,
            "pickled": m.pickled,
            "created_at": now,
            "meta": dict(m.meta),
            "parents": parents,
            "output": out_name,
            "blob": blob,
        }

    def _finish_rows(
        self, tr: TaskRun, rows: list[dict[str, Any]], to_store: list[Any], key: str | None
    ) -> None:
        """Move ``tr`` to Finished and persist its outputs (bytes first, then rows)."""
        node = tr.node
        now = time.time()
        if not self._move(tr, State.FINISHED):
            return None
        # Bytes first, catalog rows after, on the persister's thread: a crash in between
        # leaves only unreferenced objects, never a row without its bytes.
        self.persister.submit(
            node.step,
            to_store,
            {
                "task_id": tr.id,
                "run_id": self.run_id,
                "state": "finished",
                "at": now,
                "artifacts": rows,
                "cache_key": key,
                "cached": False,
                "error": None,
                "metrics": tr.metrics or None,
                "progress": 1.0,
            },
        )
        tr.progress = 1.0
        return None

    def _seed_result(self, tr: TaskRun, result: Any) -> Any:
        if not isinstance(result, dict) or result.get("status") not in ("success", "failure"):
            self._fail(
                tr,
                "a seed-003 task must return {'status': 'success'|'failure', "
                f"'data': ..., 'error': ...}}, got {result!r:.200}",
                None,
            )
        tr.seed_result = result  # type: ignore[attr-defined]
        if result["status"] == "failure":
            self._fail(tr, str(result.get("error") or "task reported failure"), None)
        return result.get("data")

    def _record_end(
        self,
        tr: TaskRun,
        state: State,
        *,
        cache_key: str | None = None,
        error: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        reused: dict[str, str] | list[str] | None = None,
    ) -> None:
        """Close a task that produced no new artifacts (cached, error, skipped, cancelled)."""
        self.writer.finish_task(
            task_id=tr.id,
            run_id=self.run_id,
            state=str(state),
            at=time.time(),
            artifacts=[],
            cache_key=cache_key,
            cached=state is State.CACHED,
            error=error,
            metrics=metrics,
            progress=1.0 if state is State.CACHED else tr.progress,
            reused=reused or [],
        )

    def _cache_hit(self, tr: TaskRun, key: str, hit: dict[str, dict[str, Any]]) -> None:
        node = tr.node
        for out_name, art in hit.items():
            if out_name in node.outputs:
                tr.outputs[out_name] = ArtifactRef.from_row(node.outputs[out_name], art)
        tr.cached = True
        tr.cache_key = key
        tr.progress = 1.0
        # Loops read outputs in conditions: cached values are loaded only when one does.
        if node.route is not None and node.route.when is not None:
            for ref in tr.outputs.values():
                handle = ref.handle(self._source(ref))
                ref.value, ref.has_value = handle.load(), True
        if self._move(tr, State.CACHED, "cache hit"):
            self._record_end(
                tr, State.CACHED, cache_key=key, reused={o: r.id for o, r in tr.outputs.items()}
            )
        return None
