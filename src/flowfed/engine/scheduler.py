"""The scheduler of one run: the ready queue, routing, retries, cancel, resume.

A :class:`Scheduler` lives for one :meth:`flowfed.engine.local.LocalEngine.run`. It
decides when each task runs and hands it to :func:`flowfed.engine.task.attempt` (on a
worker thread, or on its own thread for quick tools), placed and federated tasks to
:mod:`flowfed.engine.placed` and :mod:`flowfed.engine.federated`; it is the
:class:`~flowfed.engine.task.TaskHost` they run in. A run left behind by a dead server is
rebuilt by :mod:`flowfed.engine.resume`.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import heapq
import queue
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from flowfed.artifacts import ByteSource, CatalogBlobs, is_inline
from flowfed.db import Writer
from flowfed.engine.cache import TaskCache, load_index
from flowfed.engine.persist import Persister
from flowfed.engine.record import RunRecord
from flowfed.engine.result import RunResult, close, summarize
from flowfed.engine.resume import restore
from flowfed.engine.state import ArtifactRef, RunView, TaskRun
from flowfed.engine.task import TaskFailed, attempt
from flowfed.ids import new_id
from flowfed.plan.expressions import ExpressionError
from flowfed.plan.graph import TaskGraph, TaskNode
from flowfed.runtime.lifecycle import IllegalTransition, State
from flowfed.spec.composite import part_names
from flowfed.spec.models import END
from flowfed.tools.core import TaskCancelled

if TYPE_CHECKING:
    from flowfed.engine.local import LocalEngine

#: Tools whose calls average less than this run on the scheduler thread (no hand-off).
QUICK_TASK_S = 0.001

#: The error type of a call whose cluster executor cannot be reached or started.
UNAVAILABLE = "ExecutorUnavailable"

#: The flow's ``config:`` key for its default task timeout (seconds).
TASK_TIMEOUT_KEY = "task_timeout"


class _Kept:
    """A byte source that serves this run's kept bytes before asking ``inner``."""

    def __init__(self, run: Scheduler, inner: ByteSource) -> None:
        self.run, self.inner = run, inner

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        with self.run.kept_lock:
            data = self.run.kept.get(hash)
        return data if data is not None else self.inner.get(hash, verify=verify)

    def local_path(self, hash: str) -> Any:
        return self.inner.local_path(hash)


class Scheduler:
    """One run of :class:`LocalEngine`: the ready queue, routing, retries and resume.

    It is the :class:`~flowfed.engine.task.TaskHost` (and
    :class:`~flowfed.engine.placed.PlacedHost`) its tasks run in.
    """

    def __init__(
        self,
        engine: LocalEngine,
        graph: TaskGraph,
        run_id: str,
        params: dict[str, Any],
        flow_file: str | None,
    ) -> None:
        self.e = engine
        self.g = self.graph = graph
        self.run_id = run_id
        self.params = params
        self.flow_file = flow_file
        self.store = engine.store
        self.executor = engine.executor
        self.dispatcher = engine.dispatcher
        self.writer: Writer = engine.db.writer(on_commit=engine.on_events)
        self.persister = Persister(engine.store, self.writer)
        self.view = RunView(run_id, graph.flow.name, graph.step_names(), started_at=time.time())
        self.view.types = graph.step_types()
        self.view.flow_type = graph.flow.type if "type" in graph.flow.model_fields_set else None
        self.view.parts = {s.name: part_names(s) for s in graph.flow.steps if s.tools}
        self.record = RunRecord(
            run_id,
            self.view,
            self.writer,
            self.persister,
            engine.listeners,
            record_events=engine.record_events,
            code_of=engine.codes.recorded,
        )
        self.cache: TaskCache | None = None
        self.default_timeout = _flow_timeout(graph, engine.task_timeout)
        self.resume = False
        #: The server inserted the run's row when it accepted the run (see LocalEngine.run).
        self.recorded = False
        self.owner: str | None = None
        self.lease_until: float | None = None
        self.principal: str | None = None
        self.resubmit: list[TaskRun] = []
        self.blobs = CatalogBlobs(engine.db)
        self.durations: dict[str, float] = {}  # per tool: moving average of call time
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
        if graph.flow.input_data is not None:  # seed 003's top-level input_data
            self.seed_context["input_data"] = graph.flow.input_data
        self.order = {name: i for i, name in enumerate(graph.tasks)}
        self.pool: cf.Executor | None = None
        self._seq = 0
        # Bytes of artifacts produced in this run, for placed tasks that consume them:
        # the catalog and store are written behind the hot path and may lag.
        self.placed = any(n.placed or n.federated is not None for n in graph.tasks.values())
        self.kept: dict[str, bytes] = {}
        self.kept_lock = threading.Lock()

    # -- what a task needs from its run (flowfed.engine.task.TaskHost) ---------------------

    @property
    def cancelled(self) -> bool:
        """Whether the run is being cancelled."""
        return self.e.cancel_event.is_set()

    @property
    def suspended(self) -> bool:
        """Whether a draining server is handing this run over (see ``LocalEngine.suspend``)."""
        return self.e.suspend_event.is_set()

    def timeout_of(self, tr: TaskRun) -> float | None:
        """The step's ``timeout``, else the run's default task timeout."""
        t = tr.node.timeout
        return self.default_timeout if t is None else t

    def source(self, ref: ArtifactRef) -> ByteSource:
        """Where a reference's bytes live: the catalog for small objects, else the store
        (in a run with placed tasks, bytes kept from this run come first)."""
        src: ByteSource = self.blobs if is_inline(ref.uri) else self.store
        return _Kept(self, src) if self.placed else src

    def keep_bytes(self, hash: str, data: bytes) -> None:
        """Remember an artifact's bytes for placed consumers later in this run."""
        if not self.placed:
            return
        with self.kept_lock:
            self.kept[hash] = data

    def bytes_of(self, ref: ArtifactRef) -> bytes:
        """The bytes of a central artifact: kept from this run, else catalog or store."""
        return self.source(ref).get(ref.hash)

    def run_elsewhere(self, tr: TaskRun) -> None:
        """A task on a data node, or a federated step (flowfed.engine.placed/federated)."""
        from flowfed.engine.placed import attempt_placed

        if not self.record.move(tr, State.INITIALIZED):
            return None
        if tr.node.federated is not None:
            from flowfed.engine.federated import FederatedDriver

            return FederatedDriver(self, tr).drive()
        return attempt_placed(self, tr)

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
            restore(self)
        elif not self.recorded:
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
        self.record.emit(
            "run",
            None,
            {
                "status": "running",
                "flow": g.flow.name,
                "steps": self.view.steps,
                **({"types": self.view.types} if self.view.types else {}),
                **({"flow_type": self.view.flow_type} if self.view.flow_type else {}),
                **({"parts": self.view.parts} if self.view.parts else {}),
                **({"rounds": rounds} if (rounds := _rounds_of(g)) else {}),
                **({"resumed": True} if self.resume else {}),
            },
        )
        if self.e.use_cache:
            # One query for every cache entry of this flow's tools: look-ups on the hot
            # path are then dict accesses, not a database round trip per task.
            index = load_index(self.e.db, {n.tool.name for n in g.tasks.values()})
            self.cache = TaskCache(index, self.store, self.e.codes)
        self._resolve_models()
        start = g.flow.start
        if start is not None and start not in self.started_ids and g.tasks[start].routed:
            # Seed 003's start_task runs first even when a condition routes back to it
            # (a retry or poll loop), which makes it a routed step: its first turn is given.
            self.activations[start] = self.activations.get(start, 0) + 1
        # Worker threads orchestrate in every mode; the executor decides where each tool
        # call itself runs (flowfed.executors).
        self.pool = cf.ThreadPoolExecutor(self.e.max_workers, thread_name_prefix="flowfed-task")
        for tr in self.resubmit:
            self._submit(tr)
        try:
            self._loop()
        except KeyboardInterrupt:
            self.e.cancel()
            self._drain_cancel()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.suspended and not self.cancelled:
            return self._suspended()
        return close(self)

    def _suspended(self) -> RunResult:
        """Leave the run open for another server: flush what is recorded, end nothing."""
        self.abandon_live()
        self.persister.close()
        self.writer.close()
        self.view.status = "suspended"
        summary = summarize(self.view, self.g, self.latest, self.source)
        return RunResult(self.run_id, "suspended", self.view, None, summary)

    def _resolve_models(self) -> None:
        """Registry models the flow names (``models:``) become this run's first artifacts,
        as do the catalog artifacts it takes as inputs (resolved before planning)."""
        for key, row in self.g.catalog.items():
            self.latest[key] = ArtifactRef.from_row(key, row)
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

    def _loop(self) -> None:
        self._consider(list(self.g.tasks))
        while True:
            if self.cancelled:
                self._drain_cancel()
                return
            if not self.active and not self.retry_heap:
                return
            if self.suspended:
                waiting = {tr.node.id for _, _, tr in self.retry_heap}
                if not (self.active - waiting) or time.monotonic() >= self.e.suspend_deadline:
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

    def abandon_live(self) -> None:
        """Tasks still in flight belong to the adopting server now (see ``suspend``).

        They end here in memory only, so a late result records nothing, and their tools
        are told to stop; their rows stay as they are, so the adopter resumes them.
        """
        for runs in list(self.view.tasks.values()):
            for tr in list(runs):
                with tr.lock:
                    if tr.lifecycle.state.terminal:
                        continue
                    tr.lifecycle.advance(State.CANCELLED, "handed over")
                if tr.ctx is not None:
                    tr.ctx.cancel()

    def _release_retries(self) -> None:
        if self.suspended:
            return  # the adopting server retries them
        now = time.monotonic()
        while self.retry_heap and self.retry_heap[0][0] <= now:
            _, _, tr = heapq.heappop(self.retry_heap)
            self._submit(tr)

    def _consider(self, names: list[str] | set[str]) -> None:
        if self.fatal or self.cancelled or self.suspended:
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

    def _limit(self, node: TaskNode) -> float | None:
        """The step's timeout, else the run's default (a task with one never runs inline:
        only a thread of its own can be abandoned when it runs over)."""
        return self.default_timeout if node.timeout is None else node.timeout

    def _quick(self, node: TaskNode) -> bool:
        """Whether the tool is known to take well under a millisecond per call."""
        d = self.durations.get(node.tool.name)
        return d is not None and d < QUICK_TASK_S and self._limit(node) is None

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
                        and self._limit(t.node) is None
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
        flow = self.g.flow
        if flow.iterations == "run" and sum(self.executions.values()) >= flow.max_iterations:
            # Seed 003's loop counts every task it runs against one limit.
            self.fatal = (
                f"stopped after {flow.max_iterations} task runs (the flow's max_iterations) "
                f"before step '{node.step}' could run again: a loop through its conditions "
                "never ended"
            )
            return None
        if count > flow.max_iterations:
            self.fatal = (
                f"step '{node.step}' would run a {_ordinal(count)} time, past the flow's "
                f"max_iterations ({self.g.flow.max_iterations}): a loop through 'next' "
                "conditions never ended"
            )
            return None
        self.executions[node.id] = count
        tr = TaskRun(new_id(), node, iteration=count)
        tr.inputs = self._input_refs(node)
        self.consumed[node.id] = {a: self.latest[a].generation for a in self._inputs_of(node)}
        self.record.add_task(tr)
        self.started_ids.add(node.id)
        self.active.add(node.id)
        return tr

    def _prepare(self, tr: TaskRun) -> TaskRun:
        if tr.node.tool.seed_task:
            # Seed-003 tasks read every earlier result from the shared context.
            tr.seed_context = dict(self.seed_context)
        return tr

    def _submit(self, tr: TaskRun) -> None:
        assert self.pool is not None
        try:
            self.pool.submit(self._work, self._prepare(tr))
        except RuntimeError:  # pool shut down by a cancel in flight
            self.done_q.put((tr, TaskCancelled("run cancelled")))

    def _work(self, tr: TaskRun, inline: bool = False) -> None:
        outcome: Any = None
        try:
            attempt(self, tr)
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
                try:
                    if self.record.move(tr, State.ERROR, tr.error["message"]):
                        self.record.end(tr, State.ERROR, error=tr.error)
                except IllegalTransition:
                    pass
        self.done_q.put((tr, outcome))

    # -- completion and routing --------------------------------------------------------------

    def _complete(self, tr: TaskRun, outcome: Any) -> None:
        node = tr.node
        if isinstance(outcome, TaskFailed) and outcome.report.get("type") == UNAVAILABLE:
            # The cluster could not be reached or started (it starts on the first call,
            # so a fully cached run never starts one): no task can run, so none retries.
            self.fatal = self.e.unavailable = str(outcome.report["message"])
        elif (
            isinstance(outcome, TaskFailed)
            and tr.retries_used < node.retries
            and not self.cancelled
        ):
            delay = node.retry_backoff * (2**tr.retries_used)
            self.record.retry(tr, f"retry {tr.retries_used + 1} of {node.retries}", delay=delay)
            self._seq += 1
            heapq.heappush(self.retry_heap, (time.monotonic() + delay, self._seq, tr))
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
                self.seed_context[f"{node.step}_result"] = tr.seed_result or (
                    res.value if res else None
                )
            target = self._route(tr, success=True)
        elif state is State.ERROR:
            self.any_failure = True
            if node.tool.seed_task:
                self.seed_context[f"{node.step}_result"] = tr.seed_result
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
        ctx = tr.ctx
        if ctx is not None:
            ctx.cancel()
        self.record.move(tr, State.CANCELLED, "run cancelled")


def _flow_timeout(graph: TaskGraph, platform: float | None) -> float | None:
    """The run's default task timeout: the flow's ``config.task_timeout``, else the
    platform's (``--task-timeout``), else none."""
    raw = graph.config.get(TASK_TIMEOUT_KEY) if isinstance(graph.config, dict) else None
    if raw is None:
        return platform
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if value <= 0:
        raise ValueError(
            f"config.{TASK_TIMEOUT_KEY} must be a positive number of seconds, got {raw!r}"
        )
    return value


_SUFFIX = {1: "st", 2: "nd", 3: "rd"}


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 101st."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{_SUFFIX.get(n % 10, 'th')}"


def _rounds_of(g: Any) -> dict[str, int]:
    """Each federated step's configured rounds (watchers show "round 14/30")."""
    return {n.step: n.federated.settings.rounds for n in g.tasks.values() if n.federated}
