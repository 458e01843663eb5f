"""Running one task attempt: cache look-up, inputs, the tool call, outputs, the record.

The scheduler (:mod:`flowfed.engine.local`) decides *when* a task runs; :func:`attempt`
runs it once, through the lifecycle Pending → Initialized → Started → Running → Finished
(or Cached, Error, Cancelled), and records everything on the way. What it needs from its
run is the small :class:`TaskHost` interface, so the scheduler, the placed-task driver
(:mod:`flowfed.engine.placed`) and the federated driver (:mod:`flowfed.engine.federated`)
all run tasks the same way.

A failed attempt raises :class:`TaskFailed` (already recorded in Error); the scheduler
decides whether the step's ``retries`` run it again.

Example:
    >>> # try:
    >>> #     attempt(run, tr)          # run: a TaskHost (the scheduler's run)
    >>> # except TaskFailed as exc:
    >>> #     exc.report["message"]
"""

from __future__ import annotations

import json
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from flowfed.artifacts import INLINE_MAX_BYTES, NotMaterializable, inline_uri, materialize
from flowfed.engine.state import ArtifactRef, TaskRun
from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
from flowfed.plan.typecheck import returned_type_problem
from flowfed.runtime.lifecycle import State
from flowfed.tools.core import Context, TaskCancelled, ToolOutputError

if TYPE_CHECKING:
    from flowfed.artifacts import ArtifactStore, ByteSource
    from flowfed.engine.cache import TaskCache
    from flowfed.engine.record import RunRecord
    from flowfed.executors import Executor
    from flowfed.plan.graph import TaskGraph


#: The flow's ``config:`` key for its default task timeout (seconds).
TASK_TIMEOUT_KEY = "task_timeout"


def run_task_timeout(graph: TaskGraph, platform: float | None) -> float | None:
    """A run's default task timeout: the flow's ``config.task_timeout``, else the
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


class TaskFailed(Exception):
    """A task attempt ended in Error; carries the structured report."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get("message", "task failed"))
        self.report = report


class TaskHost(Protocol):
    """What running one task needs from its run.

    ``record`` moves the task and records its telemetry and end; ``cache`` is the run's
    cache (None: off); ``executor`` runs the tool call; ``source`` says where an input's
    bytes are; ``cancelled`` is whether the run is being cancelled; ``run_elsewhere``
    hands a task placed on a data node, or a federated step, to its driver.
    """

    run_id: str
    record: RunRecord
    cache: TaskCache | None
    store: ArtifactStore
    executor: Executor
    #: Per tool: a moving average of its call time (the scheduler runs quick tools inline).
    durations: dict[str, float]

    @property
    def cancelled(self) -> bool: ...

    def timeout_of(self, tr: TaskRun) -> float | None: ...

    def source(self, ref: ArtifactRef) -> ByteSource: ...

    def keep_bytes(self, hash: str, data: bytes) -> None: ...

    def run_elsewhere(self, tr: TaskRun) -> None: ...


def attempt(host: TaskHost, tr: TaskRun) -> None:
    """Run one attempt of ``tr``; raises :class:`TaskFailed` when it ends in Error.

    Returns with ``tr`` Finished, Cached or Cancelled (or already terminal: a cancel or
    timeout under its feet, whose result is then dropped).
    """
    node = tr.node
    key = None
    cache = host.cache
    if cache is not None and node.cache and not node.tool.seed_task:
        key, off = cache.key(node, tr.inputs)
        if off is not None:
            tr.message = off
            if "config" in off:
                host.record.writer.log(
                    run_id=host.run_id,
                    task_id=tr.id,
                    ts=time.time(),
                    level="warning",
                    message=f"caching is off for step '{node.step}': its config holds a value "
                    "that cannot be hashed canonically, so a cache hit could be wrong",
                )
        elif key is not None:
            hit = cache.hit(key)
            if hit is not None:
                tr.metrics.update(hit[1])
                return _cache_hit(host, tr, key, hit[0])
    tr.cache_key = key
    if node.placed or node.federated is not None:
        return host.run_elsewhere(tr)
    record = host.record
    if not record.move(tr, State.INITIALIZED):
        return None
    ctx = Context(
        record.telemetry(tr),
        run_id=host.run_id,
        task_id=tr.id,
        step=node.step,
        node=node.node,
        attempt=tr.attempt,
        iteration=tr.iteration,
    )
    tr.ctx = ctx
    if not record.move(tr, State.STARTED):
        return None
    try:
        args = load_inputs(host, tr)
    except Exception as exc:
        fail(host, tr, f"could not load inputs: {exc}", exc)
    if not record.move(tr, State.RUNNING):
        return None
    t0 = time.perf_counter()
    try:
        result = _call(host, tr, args, ctx)
    except TaskCancelled:
        record.move(tr, State.CANCELLED, "cancelled")
        return None
    except TaskFailed:
        raise
    except Exception as exc:
        fail(host, tr, f"{type(exc).__name__}: {exc}", exc)
    took = time.perf_counter() - t0
    name = node.tool.name
    prev = host.durations.get(name)
    host.durations[name] = took if prev is None else 0.7 * prev + 0.3 * took
    if ctx.cancelled or tr.state.terminal:
        return None  # cancelled or timed out while running: drop the result
    return _finish_outputs(host, tr, result, key)


def _call(host: TaskHost, tr: TaskRun, args: dict[str, Any], ctx: Context) -> Any:
    """The tool call through the run's executor; its failures become the task's."""
    node = tr.node
    if node.tool.seed_task:
        args = {"context": tr.seed_context or {}}
    try:
        return host.executor.call(node, args, tr.id, ctx, host.timeout_of(tr))
    except ProcessTimeout as exc:
        raise TaskFailed(
            report(host, tr, _timeout_message(host, tr, exc), None, "TimeoutError")
        ) from None
    except ProcessTaskError as exc:
        if ctx.cancelled:
            raise TaskCancelled(str(exc)) from None
        rep = report(host, tr, str(exc), None, exc.etype)
        rep["traceback"] = exc.remote_traceback
        raise TaskFailed(rep) from None


def _timeout_message(host: TaskHost, tr: TaskRun, exc: Exception) -> str:
    if tr.node.timeout is None:
        # The platform's default stopped it: say where that limit comes from.
        return (
            f"{exc} (the run's default task timeout; give step '{tr.step}' a 'timeout:' "
            "of its own, or raise config.task_timeout / --task-timeout)"
        )
    return str(exc)


def load_inputs(host: TaskHost, tr: TaskRun) -> dict[str, Any]:
    """The tool's arguments: each input's value (or a lazy handle when it asks for one)."""
    args: dict[str, Any] = {}
    for param, ref in tr.inputs.items():
        spec = tr.node.tool.inputs.get(param)
        lazy = spec is not None and spec.lazy
        if not lazy and type(ref) is ArtifactRef and ref.has_value:
            args[param] = ref.value  # what a handle's load() returns, without the handle
            continue
        if isinstance(ref, list):
            handles = [r.handle(host.source(r)) for r in ref]
            args[param] = handles if lazy else [h.load() for h in handles]
            continue
        handle = ref.handle(host.source(ref))
        args[param] = handle if lazy else handle.load()
    return args


def fail(host: TaskHost, tr: TaskRun, message: str, exc: BaseException | None) -> NoReturn:
    """End ``tr`` in Error with ``message`` and raise :class:`TaskFailed`."""
    raise TaskFailed(report(host, tr, message, exc))


def report(
    host: TaskHost,
    tr: TaskRun,
    message: str,
    exc: BaseException | None,
    etype: str | None = None,
    *,
    data: Any = None,
) -> dict[str, Any]:
    """Move ``tr`` to Error and record why: message, type, traceback, runtime context
    (and, for a seed-003 task that reported failure, the ``data`` it returned)."""
    node = tr.node
    tb = "".join(traceback.format_exception(exc)) if exc is not None else None
    rep = {
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
    if data is not None:
        rep["data"] = json.loads(json.dumps(data, default=repr))
    tr.error = rep
    record = host.record
    if record.move(tr, State.ERROR, message):
        record.end(tr, State.ERROR, error=rep, metrics=tr.metrics or None)
    return rep


def _finish_outputs(host: TaskHost, tr: TaskRun, result: Any, key: str | None) -> None:
    node = tr.node
    if node.tool.seed_task:
        result = _seed_result(host, tr, result)
    try:
        values = node.tool.split_outputs(result)
    except ToolOutputError as exc:
        fail(host, tr, str(exc), None)
    # The tool-type rules hold for what a tool returns, not only for its annotations
    # (the planner's check): `-> Any` does not let a preprocessing tool make a model.
    broken = returned_type_problem(node.tool.type, node.tool.name, values)
    if broken is not None:
        fail(host, tr, broken, None)
    materialized = {}
    for out_name, value in values.items():
        if out_name not in node.outputs:
            continue  # an output the step chose not to keep
        try:
            materialized[out_name] = (value, materialize(value, allow_pickle=node.allow_pickle))
        except NotMaterializable as exc:
            fail(host, tr, f"output '{out_name}' of tool '{node.tool.name}': {exc}", None)
    now = time.time()
    rows = []
    parents = [ref.id for ref in tr.input_refs()]
    to_store = []
    record, store = host.record, host.store
    for out_name, (value, m) in materialized.items():
        inline = len(m.data) <= INLINE_MAX_BYTES
        uri = inline_uri(m.hash) if inline else store.uri(m.hash)
        if not inline:
            to_store.append(m)
        rows.append(
            record.output_row(
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
        host.keep_bytes(m.hash, m.data)
    record.finish(tr, rows, to_store, key)


def _seed_result(host: TaskHost, tr: TaskRun, result: Any) -> Any:
    if not isinstance(result, dict) or result.get("status") not in ("success", "failure"):
        fail(
            host,
            tr,
            "a seed-003 task must return {'status': 'success'|'failure', "
            f"'data': ..., 'error': ...}}, got {result!r:.200}",
            None,
        )
    tr.seed_result = result
    if result["status"] == "failure":
        message = str(result.get("error") or "task reported failure")
        # A failed task's data is part of its result (seed 003 keeps it).
        raise TaskFailed(report(host, tr, message, None, data=result.get("data")))
    return result.get("data")


def _cache_hit(host: TaskHost, tr: TaskRun, key: str, hit: dict[str, dict[str, Any]]) -> None:
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
            handle = ref.handle(host.source(ref))
            ref.value, ref.has_value = handle.load(), True
    record = host.record
    if record.move(tr, State.CACHED, "cache hit"):
        record.end(tr, State.CACHED, cache_key=key, reused={o: r.id for o, r in tr.outputs.items()})
    return None
