"""The local engine: runs a TaskGraph with retries, timeouts, caching, routing and cancel.

:class:`LocalEngine` is what callers hold; each :meth:`LocalEngine.run` makes one
:class:`~flowfed.engine.scheduler.Scheduler` (the ready queue, routing, retries and
resume), which runs each task through :func:`flowfed.engine.task.attempt` and records
through :class:`~flowfed.engine.record.RunRecord`. Worker threads (or processes, or
clusters: :mod:`flowfed.executors`) run tools. Every state change goes through the
task's :class:`~flowfed.runtime.lifecycle.Lifecycle` and is queued to the database
writer, which commits in batches, so the hot path never waits on the database.

Example:
    >>> # see flowfed.api.run_flow for the one-call form used by the CLI
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowfed.engine.cache import CodeHashes
from flowfed.engine.record import Listener
from flowfed.engine.result import RunResult
from flowfed.engine.scheduler import Scheduler
from flowfed.engine.state import RunView
from flowfed.engine.task import TaskFailed
from flowfed.executors import Executor, executor_from_url

if TYPE_CHECKING:
    from flowfed.artifacts import ArtifactStore
    from flowfed.db import Database
    from flowfed.executors import ClusterExecutor
    from flowfed.plan.graph import TaskGraph
    from flowfed.runtime.remote import NodeDispatcher

__all__ = ["LocalEngine", "RunResult", "Scheduler", "TaskFailed"]


class LocalEngine:
    """Run task graphs on this machine.

    Args:
        db: the database (its writer records runs, tasks, transitions and artifacts).
        store: where artifact bytes go.
        executor: one of :data:`flowfed.executors.KINDS` (``"threads"``, the default;
            ``"processes"``, ``"subprocess"``, ``"sandbox"``, ``"container"``) or a
            cluster URL (``dask://local``, ``ray://HOST:PORT``): see :mod:`flowfed.executors`.
        max_workers: pool size (default: enough threads to overlap waiting tools).
        use_cache: look up and record cache entries (``--no-cache`` turns it off).
        task_timeout: the platform's default task timeout in seconds, for steps without
            a ``timeout:`` of their own; a flow's ``config: {task_timeout: S}`` comes
            before it. None: no default (a step without ``timeout:`` may run forever).

    Example:
        >>> # engine = LocalEngine(db, store, task_timeout=3600)
        >>> # engine.run(graph).status
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
        task_timeout: float | None = None,
    ) -> None:
        # Raises ValueError naming the choices for an unknown kind or URL. Nothing
        # connects yet: a cluster starts on its first call, so a fully cached run
        # never starts one.
        self.executor: Executor = executor_from_url(executor, store=store)
        self.db = db
        self.store = store
        #: Runs the tasks placed on data nodes (the server's node hub, or simulated nodes).
        self.dispatcher = dispatcher
        self.executor_kind = executor
        self.max_workers = max_workers or min(32, (os.cpu_count() or 2) * 8)
        self.use_cache = use_cache
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(
                f"task_timeout must be a positive number of seconds, got {task_timeout}"
            )
        self.task_timeout = task_timeout
        self.listeners = list(listeners or [])
        # The server records every event (for late and returning watchers) and announces
        # them from the writer once committed; the CLI needs neither.
        self.record_events = record_events or on_events is not None
        self.on_events = on_events
        self.cancel_event = threading.Event()
        #: Set by :meth:`suspend`: start nothing new, hand the run to another server.
        self.suspend_event = threading.Event()
        self.suspend_deadline = 0.0
        #: Code hashes and config-less identities, shared by this engine's runs.
        self.codes = CodeHashes()
        self.view: RunView | None = None
        #: Why the last run stopped when its cluster executor could not be reached or
        #: started (None: it could, or was never needed).
        self.unavailable: str | None = None
        self._current: Scheduler | None = None

    @property
    def remote(self) -> ClusterExecutor | None:
        """The executor when it is a cluster (Dask, Ray): it connects on its first call."""
        from flowfed.executors import ClusterExecutor

        return self.executor if isinstance(self.executor, ClusterExecutor) else None

    def cancel(self) -> None:
        """Ask the current run to stop: nothing new starts, running tasks end Cancelled.

        Safe from any thread. Live tasks are marked cancelled at once and their contexts
        cancelled, so a tool that calls ``ctx.check_cancelled()`` stops even while it runs
        on the scheduler thread; a tool that never checks is abandoned and its result
        dropped.
        """
        self.cancel_event.set()
        current = self._current
        if current is not None:
            current.cancel_live()

    def suspend(self, deadline: float) -> None:
        """Hand the current run over (a draining server): start no task, keep the run open.

        Tasks in flight may end, and are recorded, until ``deadline`` (``time.monotonic``);
        then :meth:`run` returns with status ``suspended``, leaving the run ``running`` in
        the catalog for another server (or this one restarted) to adopt and resume: tasks
        that finished stay finished, tasks still in flight are resumed as interrupted.
        Final for this engine: a run started after it is suspended at once.
        """
        self.suspend_deadline = deadline
        self.suspend_event.set()

    def hand_over(self) -> None:
        """Past the drain deadline: stop now, dropping what is still in flight (safe from
        any thread; a tool running on the scheduler thread is told to stop and its result
        is ignored whenever it returns)."""
        self.suspend(0.0)
        current = self._current
        if current is not None:
            current.abandon_live()

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
        recorded: bool = False,
    ) -> RunResult:
        """Execute ``graph`` to completion (or cancellation) and return the result.

        With ``resume=True`` the run ``run_id`` already exists (a server that died left it
        behind): finished tasks stay finished with their artifacts, and a task that was in
        flight ends in Error ("interrupted") and runs again: once on the platform's
        account (its step's ``retries`` stay whole), then under its retry policy. The
        event log continues where it stopped. ``owner`` and ``lease_until`` record
        which server process executes a new run (see ``Database.claim_runs``).
        ``principal`` names who submitted it; every placed task carries it to its node,
        whose policy checks it. ``recorded=True``: the caller inserted the run's row
        (status ``running``) already, as the server does when it accepts a run.
        """
        self.cancel_event.clear()
        self.unavailable = None
        run = Scheduler(self, graph, run_id or uuid.uuid4().hex, params or {}, flow_file)
        run.resume = resume
        run.recorded = recorded
        run.owner, run.lease_until = owner, lease_until
        run.principal = principal
        self.view = run.view
        self._current = run
        try:
            return run.execute()
        finally:
            self._current = None
