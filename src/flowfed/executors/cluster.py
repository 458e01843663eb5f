"""What the Dask and Ray executors share: connect once, ship plain data, wait or cancel.

:class:`ClusterExecutor` is the base of :mod:`flowfed.executors.dask_executor` and
:mod:`flowfed.executors.ray_executor`; :func:`flowfed.executors.executor_from_url` builds
them from a parsed :class:`ClusterURL`. A cluster connects (or ``dask://local`` and
``ray://local`` start) on the first call, never before: a fully cached run starts none.

Example:
    >>> target = ClusterURL("dask://local", "dask", "local", {})
    >>> target.address
    'local'
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from flowfed.executors.processes import ProcessTaskError, wait_for_call
from flowfed.executors.worker import (
    DEFAULT_INLINE_MAX,
    WorkerCall,
    WorkerResult,
    relay,
    ship,
    unship_result,
)

if TYPE_CHECKING:
    from flowfed.artifacts import ArtifactStore
    from flowfed.plan.graph import TaskNode
    from flowfed.tools.core import Context

__all__ = ["ClusterExecutor", "ClusterURL", "ExecutorUnavailable"]

#: Seconds a failed connect is remembered: calls meanwhile fail at once instead of each
#: waiting out the connect timeout again; after it a call tries again (a server outlives
#: a cluster's restart).
RETRY_CONNECT_S = 30.0


class ExecutorUnavailable(RuntimeError):
    """The cluster named by an executor URL cannot be reached or started."""


class ClusterURL(NamedTuple):
    """A cluster executor URL, parsed once by :func:`parse_cluster_url`.

    ``address`` is what follows ``scheme://`` up to the query: ``"local"``, ``HOST:PORT``,
    or an address with a scheme of its own (``dask://tls://HOST:PORT``). ``options`` are
    the query's parameters (the last value of each).
    """

    url: str
    scheme: str
    address: str
    options: dict[str, str]


class ClusterExecutor:
    """What Dask and Ray share: plain-data calls, the store for large values, wait/cancel.

    Built from a parsed :class:`ClusterURL` (``self.address``, ``self.options``).
    Subclasses implement :meth:`_connect`, :meth:`_submit` (returns a handle),
    :meth:`_poll` (the :class:`WorkerResult` or None while running), :meth:`_cancel` and
    :meth:`_shutdown`. Connecting happens once, on :meth:`start` or the first call
    (the engine never calls :meth:`start` itself: a fully cached run starts no cluster).
    """

    name = "cluster"

    def __init__(self, target: ClusterURL, store: ArtifactStore | None) -> None:
        self.url = target.url
        #: ``"local"`` or where the cluster is (see :class:`ClusterURL`).
        self.address = target.address
        self.store = store
        self.options = target.options
        self.inline_max = int(self.options.get("inline_max", DEFAULT_INLINE_MAX))
        self._lock = threading.Lock()
        self._started = False
        self._failed: tuple[float, ExecutorUnavailable] | None = None

    # -- to implement -------------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _submit(self, call: WorkerCall, key: str) -> Any:
        raise NotImplementedError

    def _poll(self, handle: Any, wait: float) -> WorkerResult | None:
        raise NotImplementedError

    def _cancel(self, handle: Any) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) the cluster; raises :class:`ExecutorUnavailable`."""
        with self._lock:
            if self._started:
                return
            if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_CONNECT_S:
                raise self._failed[1]
            try:
                self._connect()
            except ExecutorUnavailable as exc:
                self._failed = (time.monotonic(), exc)
                raise
            except Exception as exc:
                err = ExecutorUnavailable(
                    f"executor {self.url}: cannot connect: {type(exc).__name__}: {exc}"
                )
                self._failed = (time.monotonic(), err)
                raise err from exc
            self._failed = None
            self._started = True

    @property
    def started(self) -> bool:
        """Whether this executor connected (or started its cluster) in this process."""
        return self._started

    def call(
        self,
        node: TaskNode,
        args: dict[str, Any],
        task_id: str,
        ctx: Context,
        timeout: float | None,
    ) -> Any:
        """Run the call on the cluster; wait for it, cancel it on timeout or cancel."""
        try:
            self.start()
        except ExecutorUnavailable as exc:
            raise ProcessTaskError(str(exc), etype="ExecutorUnavailable") from None
        from flowfed.executors.isolated import tool_entrypoint

        pickle = node.allow_pickle or node.tool.allow_pickle
        call = WorkerCall(
            tool=tool_entrypoint(node),
            config=node.config_data,
            args={k: ship(v, self.store, self.inline_max, pickle) for k, v in args.items()},
            task_id=task_id,
            step=node.step,
            node=node.node,
            store=self._store_url(),
            inline_max=self.inline_max,
            allow_pickle=pickle,
        )
        handle = self._submit(call, f"flowfed-{node.step}-{task_id}-{ctx.attempt}")

        def poll(wait: float) -> tuple[WorkerResult] | None:
            done = self._poll(handle, wait)
            return None if done is None else (done,)

        try:
            result = wait_for_call(poll, ctx, timeout, "cluster task cancelled")
        except BaseException:
            self._cancel(handle)
            raise
        relay(ctx, result.telemetry)
        if result.error is not None:
            message, tb, etype = result.error
            raise ProcessTaskError(message, tb, etype)
        return unship_result(result.value)

    def _store_url(self) -> str | None:
        if self.store is None:
            return None
        return self.store.root if self.store.local else self.store.url

    def close(self) -> None:
        """Disconnect (and stop a cluster this executor started)."""
        with self._lock:
            if self._started:
                self._started = False
                self._shutdown()
