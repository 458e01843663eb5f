"""A run's record: every state change, event, telemetry sample and task end, written.

The scheduler (:mod:`flowfed.engine.local`), one task attempt (:mod:`flowfed.engine.task`)
and the placed and federated drivers all change tasks through this one object, so every
transition goes through the task's :class:`~flowfed.runtime.lifecycle.Lifecycle` and
reaches the database writer and the run's listeners the same way. Nothing here waits on
the database: the writer queues, and commits in batches on its own thread.

Example:
    >>> # record.move(tr, State.INITIALIZED); sink = record.telemetry(tr)
    >>> # sink("metric", {"name": "loss", "value": 0.1}); record.finish(tr, rows, [], key)
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from flowfed.engine.state import ArtifactRef, RunView, TaskRun
from flowfed.ids import new_id
from flowfed.plan.labels import task_label
from flowfed.runtime.lifecycle import TERMINAL, State
from flowfed.runtime.usage import clean_counts, clean_figures

if TYPE_CHECKING:
    from flowfed.artifacts import Materialized
    from flowfed.db import Writer
    from flowfed.engine.persist import Persister
    from flowfed.plan.graph import TaskNode
    from flowfed.runtime.remote import RemoteOutput

#: Figures of a task whose runner has not measured it yet (progress counts came first).
_NO_FIGURES: dict[str, Any] = {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0, "progress": None}

Listener = Callable[[str, dict[str, Any]], None]
#: A task's telemetry sink: ``sink(kind, payload)`` with kind ``log``, ``metric``,
#: ``progress`` (and whatever else a runner relays, which is announced as an event).
Sink = Callable[[str, dict[str, Any]], None]


class RunRecord:
    """Records one run: transitions, events, telemetry, task rows, task ends.

    Args:
        run_id: the run.
        view: the live view monitors read (new tasks join it here).
        writer: the database writer (queues; commits in batches).
        persister: writes artifact bytes before their catalog rows.
        listeners: called with ``(kind, event)`` for every event.
        record_events: whether events are written to the run's event log.
    """

    def __init__(
        self,
        run_id: str,
        view: RunView,
        writer: Writer,
        persister: Persister,
        listeners: list[Listener],
        *,
        record_events: bool,
        code_of: Callable[[TaskNode], str | None] | None = None,
    ) -> None:
        self.run_id = run_id
        #: The tool's effective code hash for a task's row (lineage shows it).
        self.code_of = code_of
        self.view = view
        self.writer = writer
        self.persister = persister
        self.listeners = listeners
        self.record_events = record_events
        #: Whether events go anywhere; read on the hot path so a run nobody watches does
        #: not build event payloads. Fixed for the run.
        self.emitting = bool(listeners) or record_events
        self.event_seq: Iterator[int] = itertools.count(1)

    # -- events and transitions ----------------------------------------------------------

    def emit(self, kind: str, tr: TaskRun | None, payload: dict[str, Any]) -> None:
        """Announce an event (to the event log when recorded, and to every listener)."""
        if not self.emitting:
            return
        event = {"run_id": self.run_id, "task_id": tr.id if tr else None, **payload}
        if tr is not None:
            # Enough about the task for a watcher to place it in the tree on its own.
            node = tr.node
            event.update(
                step=node.step,
                tool=node.tool.name,
                node=node.node,
                iteration=tr.iteration,
                attempt=tr.attempt,
                round=node.round,
                retries=node.retries,
                plan_key=node.id,
                label=task_label(node),
                **({"dataset": node.dataset} if node.dataset else {}),
                **({"variant": node.variant} if node.variant else {}),
            )
        if self.record_events:
            self.writer.event(
                run_id=self.run_id,
                seq=next(self.event_seq),
                kind=kind,
                task_id=event["task_id"],
                payload=event,
                ts=time.time(),
            )
        for listener in self.listeners:
            # A broken display must never break a run.
            with contextlib.suppress(Exception):
                listener(kind, event)

    def move(self, tr: TaskRun, dst: State, detail: str | None = None) -> bool:
        """Advance ``tr``; False if it was already terminal (cancelled under our feet).

        An illegal move raises :class:`~flowfed.runtime.lifecycle.IllegalTransition`.
        """
        with tr.lock:
            lifecycle = tr.lifecycle
            if lifecycle.state in TERMINAL:
                return False
            t = lifecycle.advance(dst, detail)
        now = t.at
        if dst is State.STARTED:
            tr.started_at = now
        elif dst in TERMINAL:
            tr.ended_at = now
        # States are StrEnum members, i.e. already the strings the catalog stores.
        self.writer.transition_row((tr.id, self.run_id, t.src, dst, now, tr.attempt, detail))
        if self.emitting:
            self.emit("transition", tr, {"src": str(t.src), "dst": str(dst), "detail": detail})
        return True

    def retry(self, tr: TaskRun, reason: str, *, delay: float = 0.0, resume: bool = False) -> None:
        """Start ``tr``'s next attempt after it ended in Error (Error → Pending).

        ``resume`` marks an attempt the platform owes the task (its server was killed
        under it), counted apart from the step's own ``retries``: its transition's detail
        starts with ``resumed:``, which is how a later restart counts it.
        """
        if resume:
            reason = f"resumed: {reason}"
        with tr.lock:
            tr.attempt += 1
            if resume:
                tr.resumes += 1
            t = tr.lifecycle.retry(reason)
            tr.error = None
            tr.started_at = tr.ended_at = None
            tr.progress = None
            if tr.resources is not None:
                tr.attempt_resources.append({"attempt": tr.attempt - 1, **tr.resources})
            tr.resources = None
        self.writer.transition_row(
            (tr.id, self.run_id, t.src, State.PENDING, t.at, tr.attempt, reason)
        )
        self.writer.update_task(
            task_id=tr.id,
            error=None,
            ended_at=None,
            resources=None,
            attempt_resources=list(tr.attempt_resources) or None,
        )
        self.emit(
            "retry",
            tr,
            {"attempt": tr.attempt, "delay": delay, **({"reason": reason} if resume else {})},
        )

    # -- telemetry -------------------------------------------------------------------------

    def telemetry(self, tr: TaskRun) -> Sink:
        """The sink a running task's telemetry goes to (logs, metrics, progress)."""
        writer, run_id, task_id, emit = self.writer, self.run_id, tr.id, self.emit

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
                counts = clean_counts(payload)
                if counts is not None:
                    tr.resources = {**(tr.resources or _NO_FIGURES), "progress": counts}
            elif kind == "waiting":
                # From the node hub: the task waits for its node to come back.
                node, since = payload.get("node"), payload.get("offline_since")
                if node:
                    when = time.strftime(" (offline since %H:%M:%S)", time.localtime(since))
                    tr.message = f"waiting for {node}" + (when if since else "")
                    payload = {**payload, "message": tr.message}
                elif tr.message and tr.message.startswith("waiting for "):
                    tr.message = None
            elif kind == "resources":
                figures = clean_figures(payload)
                if figures is None:
                    return
                counts = (tr.resources or _NO_FIGURES)["progress"]
                tr.resources = res = {**figures, "progress": counts}
                # Coalesced by the writer: at most one row update per drain.
                writer.update_task(task_id=task_id, resources=res)
                payload = res
            emit(kind, tr, payload)

        return sink

    # -- tasks -----------------------------------------------------------------------------

    def task_row(self, tr: TaskRun) -> dict[str, Any]:
        """The catalog row of a new task."""
        n = tr.node
        return {
            "id": tr.id,
            "run_id": self.run_id,
            "step": n.step,
            "tool": n.tool.name,
            "tool_version": n.tool.version,
            "code_hash": self.code_of(n) if self.code_of is not None else None,
            "node": n.node,
            "round": n.round,
            "plan_key": n.id,
            "label": task_label(n),
            "dataset": n.dataset,
            "variant": n.variant,
            "iteration": tr.iteration,
            "attempt": tr.attempt,
            "state": str(tr.state),
            "created_at": time.time(),
        }

    def add_task(self, tr: TaskRun) -> TaskRun:
        """A new task joins the run: into the live view, and its row to the catalog."""
        self.view.tasks.setdefault(tr.node.step, []).append(tr)
        self.writer.add_tasks([self.task_row(tr)])
        return tr

    def output_row(
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

    def finish(
        self,
        tr: TaskRun,
        rows: list[dict[str, Any]],
        to_store: list[Any],
        key: str | None,
        *,
        reused: dict[str, str] | None = None,
    ) -> None:
        """Move ``tr`` to Finished and persist its outputs (bytes first, then rows).

        ``key`` is its cache key (an entry is written for it); ``reused`` maps outputs
        to artifacts it passed on without producing them (a federated step's model).
        """
        now = time.time()
        if not self.move(tr, State.FINISHED):
            return
        tr.progress = 1.0
        if tr.resources is not None:
            self.writer.update_task(task_id=tr.id, resources=tr.resources)
        # Bytes first, catalog rows after, on the persister's thread: a crash in between
        # leaves only unreferenced objects, never a row without its bytes.
        self.persister.submit(
            tr.node.step,
            to_store,
            {
                "task_id": tr.id,
                "run_id": self.run_id,
                "state": State.FINISHED,
                "at": now,
                "artifacts": rows,
                "cache_key": key,
                "cached": False,
                "error": None,
                "metrics": tr.metrics or None,
                "progress": 1.0,
                "reused": reused or (),
            },
        )

    def end(
        self,
        tr: TaskRun,
        state: State,
        *,
        cache_key: str | None = None,
        error: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        reused: dict[str, str] | list[str] | None = None,
    ) -> None:
        """Close a task that produced no new artifacts (cached, error, skipped, cancelled).

        ``tr`` must already be in ``state`` (moved through :meth:`move`).
        """
        if tr.state is not state:
            raise ValueError(f"task {tr.id} is {tr.state}, not {state}: move it first")
        if tr.resources is not None:
            self.writer.update_task(task_id=tr.id, resources=tr.resources)
        self.writer.finish_task(
            task_id=tr.id,
            run_id=self.run_id,
            state=state,
            at=time.time(),
            artifacts=[],
            cache_key=cache_key,
            cached=state is State.CACHED,
            error=error,
            metrics=metrics,
            progress=1.0 if state is State.CACHED else tr.progress,
            reused=reused or [],
        )
