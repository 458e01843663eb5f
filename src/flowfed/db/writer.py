"""The background database writer.

Every call here only appends a tuple to a queue (well under a microsecond); one thread
drains whatever has accumulated and commits it as ONE transaction, in multi-row batches per
table (:mod:`flowfed.db.batch`). Task and run updates are coalesced per row inside a drain
(last write wins): nothing in a drain reads them back.

A failed drain is rolled back entirely and its exception is kept; the next :meth:`flush` or
:meth:`close` raises it (once), so errors are never lost but never hit the hot path either.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from flowfed.db import models as m
from flowfed.db.batch import insert_many, insert_picked, insert_tuples, update_many
from flowfed.db.versions import assign_versions

# Which states stamp ``tasks.ended_at`` is the lifecycle's to say (a module of no imports).
from flowfed.runtime.lifecycle import TERMINAL

#: Upper bound of operations per transaction, so one drain never holds locks for long.
MAX_BATCH = 20_000

#: Attempts for a drain that hits a unique violation (two PostgreSQL writers assigning the
#: same artifact version concurrently); the retry re-reads the max version.
VERSION_RETRIES = 8

_FLUSH = "flush"
_STOP = "stop"

_TASK_FIELDS = frozenset(c.name for c in m.tasks.c) - {"id", "run_id"}
_ARTIFACT_COLS = tuple(c.name for c in m.artifacts.c)
_ARTIFACT_NONE = dict.fromkeys(_ARTIFACT_COLS)
_TASK_DEFAULTS: dict[str, Any] = {
    "code_hash": None,
    "node": "local",
    "round": None,
    "plan_key": None,
    "label": None,
    "dataset": None,
    "variant": None,
    "iteration": 1,
    "attempt": 1,
    "cached": False,
    "cache_key": None,
    "error": None,
    "metrics": None,
    "progress": None,
    "started_at": None,
    "ended_at": None,
    "resources": None,
    "attempt_resources": None,
}
_TASK_INSERT_COLS = tuple(c.name for c in m.tasks.c)
_CACHE_UPDATE_COLS = ("tool", "run_id", "task_id", "outputs", "created_at")
_TRANSITION_COLS = ("task_id", "run_id", "src", "dst", "at", "attempt", "detail")


class Writer:
    """Applies queued catalog writes in order from one background thread.

    Every method except :meth:`create_run`, :meth:`flush` and :meth:`close` only enqueues.
    """

    def __init__(
        self,
        engine: Engine,
        on_commit: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._engine = engine
        # Called in the writer thread with the run events of each committed batch: events
        # are announced only once they are durable, so a client that replays the log and
        # then follows the live stream never sees an event the database does not have.
        self._on_commit = on_commit
        self._q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._put = self._q.put
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._failed_batches = 0
        self.closed = False
        #: Number of committed transactions (observability, and tests of the batching).
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="flowfed-db-writer", daemon=True)
        self._thread.start()

    # -- operations (enqueue only) --------------------------------------------------------

    def _enqueue(self, op: str, payload: Any) -> None:
        if self.closed:
            raise RuntimeError("database writer is closed")
        self._put((op, payload))

    def create_run(
        self,
        *,
        run_id: str,
        flow_name: str,
        flow_version: str,
        flow_file: str | None,
        spec: Any,
        params: Any,
        created_at: float,
        owner: str | None = None,
        lease_until: float | None = None,
        principal: str | None = None,
    ) -> None:
        """Insert a run row (status ``running``) and wait until it is committed."""
        self._enqueue(
            "run",
            {
                "id": run_id,
                "flow_name": flow_name,
                "flow_version": flow_version,
                "flow_file": flow_file,
                "spec": spec,
                "params": params,
                "status": "running",
                "error": None,
                "created_at": created_at,
                "ended_at": None,
                "owner": owner,
                "lease_until": lease_until,
                "principal": principal,
            },
        )
        self.flush()

    def add_tasks(self, rows: list[dict[str, Any]]) -> None:
        """Insert task rows (missing optional columns take their defaults)."""
        self._enqueue("tasks", rows)

    def transition(
        self,
        *,
        task_id: str,
        run_id: str,
        src: str,
        dst: str,
        at: float,
        attempt: int = 1,
        detail: str | None = None,
    ) -> None:
        """Record a lifecycle transition and move ``tasks.state`` (and its timestamps)."""
        self._enqueue("transition", (task_id, run_id, src, dst, at, attempt, detail))

    def transition_row(self, row: tuple[str, str, str, str, float, int, str | None]) -> None:
        """:meth:`transition` for the engine's hot path: ``(task_id, run_id, src, dst, at,
        attempt, detail)`` as one tuple; states as strings (``State`` members are)."""
        if self.closed:
            raise RuntimeError("database writer is closed")
        self._put(("transition", row))

    def finish_task(
        self,
        *,
        task_id: str,
        run_id: str,
        state: str,
        at: float,
        artifacts: list[dict[str, Any]],
        cache_key: str | None,
        cached: bool,
        error: dict[str, Any] | None,
        metrics: dict[str, Any] | None,
        progress: float | None,
        reused: Sequence[str] | Mapping[str, str] = (),
    ) -> None:
        """Close a task: final state, new artifacts (versions assigned here), cache entry.

        ``artifacts`` rows carry every artifact column except ``version``, plus ``parents``
        (artifact ids) and ``output`` (the tool's output name). ``reused`` lists the artifact
        ids a cache hit reused (or maps output name to id), so the run lists them too.
        ``metrics`` is merged into the task's latest-value-per-name metrics.
        """
        self._enqueue(
            "finish",
            (
                task_id,
                run_id,
                state,
                at,
                artifacts,
                cache_key,
                cached,
                error,
                metrics,
                progress,
                reused,
            ),
        )

    def event(
        self,
        *,
        run_id: str,
        seq: int,
        kind: str,
        task_id: str | None,
        payload: dict[str, Any],
        ts: float,
    ) -> None:
        """Append a run event (``seq`` increases by one per run, from 1)."""
        self._enqueue("event", (run_id, seq, task_id, kind, payload, ts))

    def log(self, *, run_id: str, task_id: str, ts: float, level: str, message: str) -> None:
        """Append a log line."""
        self._enqueue("log", (run_id, task_id, ts, level, message))

    def metric(
        self,
        *,
        run_id: str,
        task_id: str,
        name: str,
        value: float,
        step: int | None,
        ts: float,
    ) -> None:
        """Append a metric sample and update the task's latest value for ``name``."""
        self._enqueue("metric", (run_id, task_id, name, value, step, ts))

    def update_task(self, *, task_id: str, **fields: Any) -> None:
        """Set task columns (e.g. ``progress``, ``metrics``, ``attempt``, ``node``)."""
        unknown = fields.keys() - _TASK_FIELDS
        if unknown:
            # Checked here rather than in the thread so the caller gets the traceback.
            raise ValueError(f"unknown task fields: {sorted(unknown)}")
        self._enqueue("update", (task_id, fields))

    def finish_run(
        self, *, run_id: str, status: str, ended_at: float, error: str | None = None
    ) -> None:
        """Set a run's final status (``success|failed|cancelled``)."""
        self._enqueue("finish_run", (run_id, status, ended_at, error))

    # -- synchronization ------------------------------------------------------------------

    def flush(self) -> None:
        """Block until everything enqueued so far is committed; raise a pending write error."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the writer thread")
        if self._thread.is_alive():
            done = threading.Event()
            self._put((_FLUSH, done))
            while not done.wait(1.0):
                if not self._thread.is_alive():
                    raise RuntimeError("database writer thread died")
        self._raise_pending()

    def close(self) -> None:
        """Flush, then stop the thread. Idempotent; raises a pending write error."""
        if self.closed:
            self._raise_pending()
            return
        try:
            self.flush()
        finally:
            self.closed = True
            if self._thread.is_alive():
                self._put((_STOP, None))
                self._thread.join()

    def _raise_pending(self) -> None:
        with self._lock:
            err, self._error = self._error, None
            failed, self._failed_batches = self._failed_batches, 0
        if err is not None:
            if failed > 1:
                err.add_note(f"{failed - 1} later write batch(es) failed as well")
            raise err

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        get, get_nowait = self._q.get, self._q.get_nowait
        while True:
            batch = [get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            ops: list[tuple[str, Any]] = []
            waiters: list[threading.Event] = []
            stop = False
            for item in batch:
                if item[0] == _FLUSH:
                    waiters.append(item[1])
                elif item[0] == _STOP:
                    stop = True
                else:
                    ops.append(item)
            if ops:
                try:
                    self._apply(ops)
                except BaseException as exc:  # keep the thread alive; report on flush
                    with self._lock:
                        if self._error is None:
                            self._error = exc
                        self._failed_batches += 1
            for w in waiters:
                w.set()
            if stop:
                return

    def _apply(self, ops: list[tuple[str, Any]]) -> None:
        retries = VERSION_RETRIES if any(op == "finish" and p[4] for op, p in ops) else 1
        for attempt in range(retries):
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(sqlite_begin="IMMEDIATE")
                    with conn.begin():
                        _write(conn, ops)
                self.commits += 1
                if self._on_commit is not None:
                    events = [
                        {
                            "run_id": p[0],
                            "seq": p[1],
                            "task_id": p[2],
                            "kind": p[3],
                            "payload": p[4],
                            "ts": p[5],
                        }
                        for op, p in ops
                        if op == "event"
                    ]
                    if events:
                        self._on_commit(events)
                return
            except IntegrityError:
                if attempt == retries - 1:
                    raise


def _write(conn: Connection, ops: list[tuple[str, Any]]) -> None:
    """Apply one drain inside the caller's transaction (grouped per table, in op order)."""
    run_rows: list[dict[str, Any]] = []
    # Tasks inserted by this drain, by id: their updates from the same drain are folded
    # into the inserted row (a quick task is created and finished within one drain, so it
    # costs one INSERT instead of an INSERT and an UPDATE).
    task_rows: dict[str, dict[str, Any]] = {}
    dup_task_rows: list[dict[str, Any]] = []
    trans_rows: list[tuple[Any, ...]] = []
    log_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    metric_rows: list[dict[str, Any]] = []
    art_rows: list[dict[str, Any]] = []
    # Rows of the narrow tables are built as tuples in column order (no dict per row).
    blob_rows: dict[str, tuple[str, bytes]] = {}
    parent_rows: list[tuple[str, str]] = []
    ra_rows: dict[tuple[str, str], tuple[str, str, str, str | None, bool]] = {}
    cache_rows: dict[str, dict[str, Any]] = {}
    task_upd: dict[str, dict[str, Any]] = {}
    metric_merge: dict[str, dict[str, Any]] = {}
    run_upd: dict[str, dict[str, Any]] = {}

    def merge_metrics(task_id: str, values: Mapping[str, Any]) -> None:
        upd = task_upd.setdefault(task_id, {})
        if "metrics" in upd:  # base already known in this drain (an explicit replace)
            upd["metrics"].update(values)
        else:
            metric_merge.setdefault(task_id, {}).update(values)

    for op, p in ops:
        if op == "transition":
            task_id, run_id, src, dst, at, attempt, detail = p
            dst = str(dst)
            trans_rows.append((task_id, run_id, str(src), dst, at, attempt, detail))
            upd = task_upd.setdefault(task_id, {})
            upd["state"] = dst
            upd["attempt"] = attempt
            if dst == "started":
                upd["started_at"] = at
            elif dst in TERMINAL:
                upd["ended_at"] = at
        elif op == "tasks":
            for r in p:
                row = {**_TASK_DEFAULTS, **r}
                row["state"] = str(row["state"])
                if row["id"] in task_rows:
                    # A second insert of one id must fail as it would on its own.
                    dup_task_rows.append(row)
                else:
                    task_rows[row["id"]] = row
        elif op == "event":
            run_id, seq, task_id, kind, payload, ts = p
            event_rows.append(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "task_id": task_id,
                    "kind": kind,
                    "payload": payload,
                    "ts": ts,
                }
            )
        elif op == "log":
            run_id, task_id, ts, level, message = p
            log_rows.append(
                {"run_id": run_id, "task_id": task_id, "ts": ts, "level": level, "message": message}
            )
        elif op == "metric":
            run_id, task_id, name, value, step, ts = p
            value = float(value)
            metric_rows.append(
                {
                    "run_id": run_id,
                    "task_id": task_id,
                    "name": name,
                    "value": value,
                    "step": step,
                    "ts": ts,
                }
            )
            merge_metrics(task_id, {name: value})
        elif op == "finish":
            (
                task_id,
                run_id,
                state,
                at,
                artifacts,
                cache_key,
                cached,
                error,
                metrics,
                progress,
                reused,
            ) = p
            upd = task_upd.setdefault(task_id, {})
            upd["state"] = str(state)
            upd["ended_at"] = at
            upd["cache_key"] = cache_key
            upd["cached"] = bool(cached)
            upd["error"] = error
            if progress is not None:
                upd["progress"] = progress
            if metrics:
                merge_metrics(task_id, metrics)
            outputs: dict[str, str] = {}
            for a in artifacts:
                # Extra keys (parents, output, blob) ride along; the INSERT picks columns.
                art_rows.append({**_ARTIFACT_NONE, **a})
                aid = a["id"]
                blob = a.get("blob")
                if blob is not None:
                    blob_rows[a["hash"]] = (a["hash"], blob)
                parents = a.get("parents")
                if parents:
                    parent_rows.extend((aid, pid) for pid in dict.fromkeys(parents))
                output = a.get("output")
                if output is not None:
                    outputs[output] = aid
                ra_rows[(run_id, aid)] = (run_id, aid, task_id, output, False)
            # (type() first: an ABC isinstance check costs a microsecond per task)
            mapping = type(reused) is dict or isinstance(reused, Mapping)
            pairs = reused.items() if mapping else ((None, r) for r in reused)
            for output, aid in pairs:
                ra_rows.setdefault((run_id, aid), (run_id, aid, task_id, output, True))
            if cache_key is not None and str(state) == "finished":
                cache_rows[cache_key] = {
                    "key": cache_key,
                    "tool": "",  # filled from the tasks table by _fill_cache_tools
                    "run_id": run_id,
                    "task_id": task_id,
                    "outputs": outputs,
                    "created_at": at,
                }
        elif op == "update":
            task_id, fields = p
            upd = task_upd.setdefault(task_id, {})
            upd.update(fields)
            if "metrics" in fields:
                # An explicit replace: earlier merges in this drain are superseded.
                upd["metrics"] = dict(fields["metrics"] or {})
                metric_merge.pop(task_id, None)
        elif op == "finish_run":
            run_id, status, ended_at, error = p
            run_upd.setdefault(run_id, {}).update(
                {"status": status, "ended_at": ended_at, "error": error}
            )
        elif op == "run":
            run_rows.append(p)
        else:  # pragma: no cover - only this module creates ops
            raise ValueError(f"unknown writer op {op!r}")

    if run_rows:
        insert_many(conn, m.runs, run_rows)
    if task_rows:
        for task_id, row in task_rows.items():
            folded = task_upd.pop(task_id, None)
            if folded:
                row.update(folded)
            merge = metric_merge.pop(task_id, None)
            if merge:
                row["metrics"] = {**(row["metrics"] or {}), **merge}
        insert_picked(conn, m.tasks, _TASK_INSERT_COLS, list(task_rows.values()) + dup_task_rows)
    if blob_rows:
        insert_tuples(
            conn, m.blobs, ("hash", "data"), list(blob_rows.values()), "ON CONFLICT DO NOTHING"
        )
    if art_rows:
        assign_versions(conn, art_rows)
        insert_picked(conn, m.artifacts, _ARTIFACT_COLS, art_rows)
        if parent_rows:
            insert_tuples(conn, m.artifact_parents, ("artifact_id", "parent_id"), parent_rows)
    if ra_rows:
        insert_tuples(
            conn,
            m.run_artifacts,
            ("run_id", "artifact_id", "task_id", "output", "reused"),
            list(ra_rows.values()),
            "ON CONFLICT DO NOTHING",
        )
    if cache_rows:
        _fill_cache_tools(conn, cache_rows, task_rows)
        insert_many(
            conn,
            m.cache_entries,
            list(cache_rows.values()),
            'ON CONFLICT ("key") DO UPDATE SET '
            + ", ".join(f"{c} = excluded.{c}" for c in _CACHE_UPDATE_COLS),
        )
    if trans_rows:
        insert_tuples(conn, m.transitions, _TRANSITION_COLS, trans_rows)
    if event_rows:
        insert_many(conn, m.events, event_rows)
    if log_rows:
        insert_many(conn, m.logs, log_rows)
    if metric_rows:
        insert_many(conn, m.metrics, metric_rows)
    if metric_merge:
        t = m.tasks
        for tid, current in conn.execute(
            select(t.c.id, t.c.metrics).where(t.c.id.in_(list(metric_merge)))
        ):
            task_upd.setdefault(tid, {})["metrics"] = {**(current or {}), **metric_merge[tid]}
    if task_upd:
        update_many(conn, m.tasks, task_upd)
    if run_upd:
        update_many(conn, m.runs, run_upd)


def _fill_cache_tools(
    conn: Connection, cache_rows: dict[str, dict[str, Any]], new_tasks: dict[str, dict[str, Any]]
) -> None:
    """Set each cache entry's tool from its task: this drain's new rows, else the table."""
    t = m.tasks
    tools = {tid: row["tool"] for tid, row in new_tasks.items()}
    task_ids = list({r["task_id"] for r in cache_rows.values()} - tools.keys())
    if task_ids:
        tools.update(conn.execute(select(t.c.id, t.c.tool).where(t.c.id.in_(task_ids))).all())
    for r in cache_rows.values():
        r["tool"] = tools.get(r["task_id"], "")
