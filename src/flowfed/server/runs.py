"""The run manager: executes submitted runs in background threads, one engine per run.

Each run gets its own :class:`~flowfed.engine.local.LocalEngine` (an engine runs one
graph at a time) that records every event and announces committed ones on the bus, so
WebSocket watchers see the run live. The manager keeps the engines of live runs, which is
what ``POST /runs/{id}/cancel`` reaches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, update

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.plan.graph import TaskGraph
from flowfed.server.metrics import ServerMetrics

log = logging.getLogger("flowfed.server.runs")

#: Runs one server process executes at once (``FLOWFED_MAX_RUNS``); later ones wait for
#: a slot, ``running`` and leased like the others. Hundreds of runs at once would only
#: fight over the interpreter and the database's connections, the accept path included.
DEFAULT_MAX_RUNS = "16"

#: Longest a recorded run waits for a burst of submissions to end before it starts
#: (``FLOWFED_ACCEPT_FIRST_S``): while runs are being submitted, starting the ones already
#: accepted would take the CPU and the database from the requests still waiting for their
#: 202. 0 starts every run at once.
DEFAULT_ACCEPT_FIRST_S = "1.0"

#: A burst is over when no submission is in flight and none ended this long ago (seconds).
ACCEPT_QUIET_S = 0.02

#: Seconds a draining server (SIGTERM) gives tasks in flight to end before handing their
#: runs over (``flowfed server --drain-timeout``).
DEFAULT_DRAIN_S = 30.0

#: Seconds a server's claim on a run lasts without renewal (``FLOWFED_RUN_LEASE_S``): how
#: long after a crash another server waits before resuming the run.
DEFAULT_LEASE_S = "15"


class RunStartError(RuntimeError):
    """The run could not even be recorded (the database refused it)."""


class ServerDraining(RunStartError):
    """This server is shutting down and takes no new run (503 with ``Retry-After``)."""


@dataclass(eq=False)
class ActiveRun:
    """A run executing in this process."""

    run_id: str
    engine: Any
    thread: threading.Thread | None = None
    recorded: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    result: Any = None


class RunManager:
    """Start, track and cancel runs of this server process."""

    def __init__(
        self,
        db: Database,
        artifacts_url: str,
        publish: Callable[[list[dict[str, Any]]], None],
        metrics: ServerMetrics,
        executor: str = "threads",
        dispatcher: Any = None,
        task_timeout: float | None = None,
    ) -> None:
        self.db = db
        self.task_timeout = task_timeout
        #: The node hub: runs place their data-node tasks through it.
        self.dispatcher = dispatcher
        self.artifacts_url = artifacts_url
        self.executor = executor
        self.publish = publish
        self.metrics = metrics
        self._lock = threading.Lock()
        self._active: dict[str, ActiveRun] = {}
        self._closed = False
        # This process's claim on the runs it executes. A server that dies stops renewing
        # its leases; once they run out, a live server claims those runs and resumes them.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = float(os.environ.get("FLOWFED_RUN_LEASE_S", DEFAULT_LEASE_S))
        self._slots = threading.BoundedSemaphore(
            max(1, int(os.environ.get("FLOWFED_MAX_RUNS", DEFAULT_MAX_RUNS)))
        )
        self.accept_first_s = float(
            os.environ.get("FLOWFED_ACCEPT_FIRST_S", DEFAULT_ACCEPT_FIRST_S)
        )
        # Submissions being accepted now, and when the last one ended (monotonic); the
        # gate is open (set) when none has been in flight for ACCEPT_QUIET_S.
        self._accepting = 0
        self._accepted_at = 0.0
        self._burst = threading.Condition()
        self._quiet = threading.Event()
        self._quiet.set()
        self._stop = threading.Event()
        threading.Thread(target=self._gate_loop, name="flowfed-run-gate", daemon=True).start()
        self._leaser = threading.Thread(
            target=self._lease_loop, name="flowfed-run-leases", daemon=True
        )
        self._leaser.start()

    def _lease_loop(self) -> None:
        """Renew our leases and adopt runs whose server died, every third of a lease."""
        while True:
            try:
                self.db.renew_leases(self.owner, self.active_ids(), self.lease_s)
                if not self._closed:
                    for run_id in self.db.claim_runs(self.owner, self.lease_s):
                        self._resume(run_id)
            except Exception:  # a database hiccup must not end lease keeping
                log.exception("lease upkeep failed; retrying")
            if self._stop.wait(self.lease_s / 3):
                return

    @contextlib.contextmanager
    def accepting(self) -> Iterator[None]:
        """Mark one submission in flight: recorded runs wait for the burst to end.

        Example:
            >>> with manager.accepting():  # doctest: +SKIP
            ...     manager.start(graph)  # recorded now, executed once the burst is over
        """
        with self._burst:
            self._accepting += 1
            if self._quiet.is_set():
                self._quiet.clear()
                self._burst.notify()  # the gate thread watches for the end of the burst
        try:
            yield
        finally:
            with self._burst:
                self._accepting -= 1
                self._accepted_at = time.monotonic()

    def _gate_loop(self) -> None:
        """Open the gate (``_quiet``) once no submission has been in flight for a while.

        One thread polls, and only during a burst: runs held back wait on the event and
        cost nothing while they wait (hundreds of them polling would cost as much CPU as
        the submissions they give way to).
        """
        while not self._stop.is_set():
            with self._burst:
                while self._quiet.is_set() and not self._stop.is_set():
                    self._burst.wait(1.0)
                busy = self._accepting > 0 or (
                    time.monotonic() - self._accepted_at < ACCEPT_QUIET_S
                )
                if not busy:
                    self._quiet.set()
                    continue
            time.sleep(ACCEPT_QUIET_S / 2)

    def _after_the_burst(self) -> None:
        """Wait (at most ``accept_first_s``) until no submission is being accepted.

        Accepting a run is a short promise (a row and a 202); executing it is the long
        work. Under a burst of submissions, runs that start at once slow down every
        acceptance still queued behind them, so they give way first. A steady stream of
        submissions delays a run by ``accept_first_s`` at most.
        """
        self._quiet.wait(self.accept_first_s)

    def _resume(self, run_id: str) -> None:
        """Continue a claimed run from where its dead server left it."""
        from flowfed.plan.graph import plan
        from flowfed.spec.models import Flow
        from flowfed.tools import get_registry

        row = self.db.get_run(run_id)
        if row is None:
            return
        try:
            flow = Flow.model_validate(row["spec"])
            from flowfed.db.registry import resolve_catalog_inputs
            from flowfed.plan.graph import catalog_inputs

            catalog = resolve_catalog_inputs(self.db, catalog_inputs(flow))
            graph = plan(flow, get_registry(), row.get("params") or {}, catalog)
        except Exception as exc:
            self._mark_failed(run_id, f"cannot resume after a server restart: {exc}")
            return
        log.warning("resuming run %s left behind by a stopped server", run_id)
        self._launch(
            run_id,
            graph,
            row.get("params") or {},
            row.get("flow_file"),
            use_cache=True,
            resume=True,
            principal=row.get("principal"),
        )

    def start(
        self,
        graph: TaskGraph,
        *,
        params: dict[str, Any] | None = None,
        flow_file: str | None = None,
        use_cache: bool = True,
        wait: bool = False,
        run_id: str | None = None,
        principal: str | None = None,
        retry_of: str | None = None,
    ) -> ActiveRun:
        """Record the run (one INSERT) and queue it; return once its row is committed.

        The run executes in a background thread when a slot is free (``FLOWFED_MAX_RUNS``
        at once). With ``wait=True`` the call returns only when the run has ended (seed
        003's synchronous execute). Blocking: call it from a worker thread, not the loop.
        ``run_id`` (default: a new uuid4 hex) lets a caller record the id before the run
        exists (the trigger service does, to recover a start cut short by a crash).
        ``principal`` names the submitter; every placed task carries it to its node.
        """
        run_id = run_id or uuid.uuid4().hex
        with self._lock:
            if self._closed:
                raise ServerDraining("the server is shutting down: submit the run to another")
        self._record(run_id, graph, params or {}, flow_file, principal, retry_of)
        active = self._launch(
            run_id,
            graph,
            params or {},
            flow_file,
            use_cache=use_cache,
            resume=False,
            principal=principal,
            recorded=True,
        )
        active.recorded.set()
        if wait:
            assert active.thread is not None
            active.thread.join()
        return active

    def _record(
        self,
        run_id: str,
        graph: TaskGraph,
        params: dict[str, Any],
        flow_file: str | None,
        principal: str | None,
        retry_of: str | None = None,
    ) -> None:
        """Insert the run's row, ``running`` and leased to us (RunStartError if refused)."""
        flow = graph.flow
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(m.runs).values(
                        id=run_id,
                        flow_name=flow.name,
                        flow_version=flow.version,
                        flow_file=flow_file,
                        spec=_spec_of(graph),
                        params=params,
                        status="running",
                        error=None,
                        created_at=time.time(),
                        ended_at=None,
                        owner=self.owner,
                        lease_until=time.time() + self.lease_s,
                        principal=principal,
                        retry_of=retry_of,
                    )
                )
        except Exception as exc:
            raise RunStartError(f"could not record the run: {type(exc).__name__}: {exc}") from None

    def _launch(
        self,
        run_id: str,
        graph: TaskGraph,
        params: dict[str, Any],
        flow_file: str | None,
        *,
        use_cache: bool,
        resume: bool,
        principal: str | None = None,
        recorded: bool = False,
    ) -> ActiveRun:
        from flowfed.artifacts import ArtifactStore
        from flowfed.engine.local import LocalEngine

        active = ActiveRun(run_id, engine=None)

        def on_events(events: list[dict[str, Any]]) -> None:
            # The first committed event is the run's own "running" event: its row exists.
            active.recorded.set()
            self.publish(events)

        active.engine = LocalEngine(
            self.db,
            ArtifactStore(self.artifacts_url),
            executor=self.executor,
            use_cache=use_cache,
            record_events=True,
            on_events=on_events,
            dispatcher=self.dispatcher,
            task_timeout=self.task_timeout,
        )
        with self._lock:
            if self._closed:
                raise ServerDraining("the server is shutting down: submit the run to another")
            self._active[run_id] = active
        thread = threading.Thread(
            target=self._execute,
            args=(active, graph, params, flow_file, resume, principal, recorded),
            name=f"flowfed-run-{run_id[:8]}",
            daemon=True,
        )
        active.thread = thread
        self.metrics.runs_started.inc()
        self.metrics.runs_active.inc()
        thread.start()
        return active

    def _execute(
        self,
        active: ActiveRun,
        graph: TaskGraph,
        params: dict[str, Any],
        flow_file: str | None,
        resume: bool = False,
        principal: str | None = None,
        recorded: bool = False,
    ) -> None:
        status = "failed"
        self._after_the_burst()
        self._slots.acquire()
        try:
            if self._closed:
                # Drained before it had a slot: it stays recorded, for another server.
                status = "suspended"
                return
            result = active.engine.run(
                graph,
                params=params,
                flow_file=flow_file,
                run_id=active.run_id,
                resume=resume,
                owner=self.owner,
                lease_until=time.time() + self.lease_s,
                principal=principal,
                recorded=recorded,
            )
            active.result = result
            status = result.status
            if status == "suspended":
                log.warning("run %s handed over: another server resumes it", active.run_id)
        except BaseException as exc:
            active.error = exc
            log.exception("run %s stopped by an internal error", active.run_id)
            self._mark_failed(active.run_id, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._slots.release()
            active.recorded.set()
            with self._lock:
                self._active.pop(active.run_id, None)
            self.metrics.runs_active.dec()
            if status != "suspended":
                self.metrics.runs_finished.labels(status).inc()

    def _mark_failed(self, run_id: str, error: str) -> None:
        # The engine's writer may be gone: record the end directly so the run does not
        # stay "running" forever.
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(m.runs)
                    .where(m.runs.c.id == run_id, m.runs.c.status == "running")
                    .values(status="failed", error=error, ended_at=time.time())
                )
        except Exception:
            log.exception("could not record the failure of run %s", run_id)

    def is_active(self, run_id: str) -> bool:
        """Whether ``run_id`` is executing in this process."""
        with self._lock:
            return run_id in self._active

    def active_ids(self) -> list[str]:
        """Ids of the runs executing in this process."""
        with self._lock:
            return list(self._active)

    def cancel(self, run_id: str) -> bool:
        """Ask a live run to stop; False if it is not executing here."""
        with self._lock:
            active = self._active.get(run_id)
        if active is None:
            return False
        _cancel(active.engine)
        return True

    @property
    def draining(self) -> bool:
        """Whether this process stopped taking work (SIGTERM): new runs are refused."""
        return self._closed

    def drain(self, timeout: float = DEFAULT_DRAIN_S) -> list[str]:
        """Stop taking work and hand every live run over to another server.

        New runs are refused and no run is adopted from now on. Each live run starts no
        further task; its tasks in flight have up to ``timeout`` seconds to end and be
        recorded. Then the runs are left ``running`` with their leases released, so another
        server (or this one restarted) adopts each at once and resumes it: what finished
        stays finished, a task still in flight runs again. Returns the ids handed over.
        Safe to call twice (the second call waits for the first's runs).

        Example:
            >>> # manager.drain(30.0)   # what SIGTERM does in `flowfed server`
        """
        self._stop.set()
        self._quiet.set()  # runs held back for a burst go on to their "suspended" end
        with self._burst:
            self._burst.notify_all()
        with self._lock:
            self._closed = True
            live = list(self._active.values())
        deadline = time.monotonic() + max(0.0, timeout)
        for active in live:
            suspend = getattr(active.engine, "suspend", None)
            if suspend is not None:
                suspend(deadline)
        for active in live:
            if active.thread is not None:
                active.thread.join(max(0.0, deadline - time.monotonic()))
        # Past the deadline: what is still in flight is dropped here and resumed where the
        # run is adopted. A tool that never returns may hold its thread; its result is
        # ignored whenever it comes.
        for active in live:
            if active.thread is not None and active.thread.is_alive():
                hand_over = getattr(active.engine, "hand_over", None)
                if hand_over is not None:
                    hand_over()
        for active in live:
            if active.thread is not None:
                active.thread.join(2.0)
        handed = [a.run_id for a in live if a.result is None or a.result.status == "suspended"]
        self._release(handed)
        return handed

    def _release(self, run_ids: list[str]) -> None:
        """Give up our leases on ``run_ids`` so that another server claims them right away."""
        if not run_ids:
            return
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(m.runs)
                    .where(
                        m.runs.c.id.in_(run_ids),
                        m.runs.c.owner == self.owner,
                        m.runs.c.status == "running",
                    )
                    .values(lease_until=0.0)
                )
        except Exception:  # the leases then run out by themselves
            log.exception("could not release the leases of runs %s", run_ids)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Drain (see :meth:`drain`) with ``timeout``; what is left is adopted elsewhere."""
        self.drain(timeout)


def _spec_of(graph: TaskGraph) -> Any:
    """The flow as the run row stores it (computed once per planned graph)."""
    spec = getattr(graph, "_flowfed_spec", None)
    if spec is None:
        spec = graph.flow.model_dump(mode="json", fallback=repr)
        with contextlib.suppress(AttributeError):  # a graph that takes no attributes
            graph._flowfed_spec = spec  # type: ignore[attr-defined]
    return spec


def _cancel(engine: Any) -> None:
    """Stop a run; the engine also cancels the contexts of tools running right now."""
    engine.cancel()
