"""Where a tool call runs: one small interface over every kind of executor.

The engine keeps everything around a call: lifecycle, retries, caching, artifacts,
lineage. An :class:`Executor` only runs the call itself and returns its value, relaying
the tool's telemetry to the task's :class:`~flowfed.tools.core.Context`. Failures are
:class:`~flowfed.executors.processes.ProcessTaskError` (the tool raised, with its remote
traceback) or :class:`~flowfed.executors.processes.ProcessTimeout`, which the engine turns
into the same Error report for every executor.

An executor is named by a URL: one of :data:`KINDS`, or a cluster URL.

=========================  ==========================================================
``threads``                worker threads in the engine's process (the default)
``processes``              a forked child process per call
``subprocess``             ``python -m flowfed.runtime`` per call, over the runtime protocol
``sandbox``                the same inside a bubblewrap sandbox (no network, no host files)
``container``              the same inside an OCI container (podman or docker)
``dask://local``           a Dask ``LocalCluster`` started here (``?workers=2&processes=0``)
``dask://host:8786``       an existing Dask scheduler
``ray://local``            a local Ray (joins ``$RAY_ADDRESS`` when set; ``?cpus=2``)
``ray://host:10001``       an existing Ray cluster through Ray Client
=========================  ==========================================================

Cluster URLs take ``inline_max=BYTES`` (default 1 MiB): inputs and outputs larger than
that are written to the artifact store and read back by hash on the other side.

Example:
    >>> ex = executor_from_url("threads")
    >>> ex.name
    'threads'
    >>> executor_from_url("spark://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown executor 'spark://x': use threads, processes, subprocess, ...

Tasks placed on data nodes do not go through an executor: the engine hands them to a
:class:`~flowfed.runtime.remote.NodeDispatcher` (the server's node hub, or simulated
nodes), whose contract is :mod:`flowfed.runtime.remote`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
from flowfed.executors.worker import (
    DEFAULT_INLINE_MAX,
    WorkerCall,
    WorkerResult,
    relay,
    ship,
    unship_result,
)
from flowfed.tools.core import call_tool

if TYPE_CHECKING:
    from flowfed.artifacts import ArtifactStore
    from flowfed.plan.graph import TaskNode
    from flowfed.tools.core import Context

__all__ = [
    "KINDS",
    "ClusterExecutor",
    "ClusterURL",
    "Executor",
    "ExecutorUnavailable",
    "ProcessTaskError",
    "ProcessTimeout",
    "check_executor",
    "executor_from_url",
    "is_cluster_url",
    "parse_cluster_url",
]

#: Seconds between checks for cancel and timeout while a cluster call runs.
POLL_S = 0.05

#: Seconds a failed connect is remembered: calls meanwhile fail at once instead of each
#: waiting out the connect timeout again; after it a call tries again (a server outlives
#: a cluster's restart).
RETRY_CONNECT_S = 30.0

#: The executors named by a word (everything else is a cluster URL): worker threads,
#: forked processes, ``python -m flowfed.runtime`` subprocesses over the runtime protocol,
#: the same under a bubblewrap sandbox, or in a container. The one list of them.
KINDS = ("threads", "processes", "subprocess", "sandbox", "container")

#: Executors that run the tool in another process (never on the engine's scheduler thread).
ISOLATED = ("subprocess", "sandbox", "container")


class ExecutorUnavailable(RuntimeError):
    """The cluster named by an executor URL cannot be reached or started."""


@runtime_checkable
class Executor(Protocol):
    """Runs one tool call; the engine does everything else.

    ``call`` returns the tool's value or raises ``ProcessTaskError`` /
    ``ProcessTimeout``; it relays telemetry into ``ctx`` and stops early (raising
    ``ProcessTaskError`` with type ``Cancelled``) once ``ctx.cancelled`` is set.
    """

    name: str

    def start(self) -> None: ...

    def call(
        self,
        node: TaskNode,
        args: dict[str, Any],
        task_id: str,
        ctx: Context,
        timeout: float | None,
    ) -> Any: ...

    def close(self) -> None: ...


class _InProcessExecutor:
    """An executor with nothing to connect or stop: the engine's own process runs it."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class ThreadsExecutor(_InProcessExecutor):
    """Call the tool in the calling thread (the engine's pool provides the threads).

    With a timeout the call runs in a thread of its own. Python threads cannot be
    killed: a timed-out tool is abandoned (its context is cancelled, so its telemetry
    stops and ``check_cancelled()`` raises) and its result dropped.
    """

    name = "threads"

    def call(
        self,
        node: TaskNode,
        args: dict[str, Any],
        task_id: str,
        ctx: Context,
        timeout: float | None,
    ) -> Any:
        if timeout is None:
            return call_tool(node.tool, args, node.config, ctx)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call_tool(node.tool, args, node.config, ctx)
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=target, name=f"flowfed-tool-{node.step}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            ctx.cancel()
            raise ProcessTimeout(f"timed out after {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box.get("value")


class ProcessesExecutor(_InProcessExecutor):
    """A forked child per call (:mod:`flowfed.executors.processes`)."""

    name = "processes"

    def call(
        self,
        node: TaskNode,
        args: dict[str, Any],
        task_id: str,
        ctx: Context,
        timeout: float | None,
    ) -> Any:
        from flowfed.executors.processes import call_in_process

        return call_in_process(node, args, task_id, ctx, timeout)


class IsolatedExecutor(_InProcessExecutor):
    """``python -m flowfed.runtime`` per call (:mod:`flowfed.executors.isolated`), as a
    plain subprocess, in a bubblewrap sandbox or in an OCI container."""

    def __init__(self, runner: str) -> None:
        self.name = runner

    def call(
        self,
        node: TaskNode,
        args: dict[str, Any],
        task_id: str,
        ctx: Context,
        timeout: float | None,
    ) -> Any:
        from flowfed.executors.isolated import call_isolated

        return call_isolated(node, args, task_id, ctx, timeout, runner=self.name)


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
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = self._poll(handle, POLL_S)
            if result is not None:
                break
            if ctx.cancelled:
                self._cancel(handle)
                raise ProcessTaskError("cancelled", etype="Cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                self._cancel(handle)
                raise ProcessTimeout(f"timed out after {timeout:g}s (cluster task cancelled)")
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


_shared: dict[tuple[str, int], ClusterExecutor] = {}
_shared_lock = threading.Lock()

_USAGE = f"use {', '.join(KINDS)}, dask://local, dask://HOST:PORT, ray://local or ray://HOST:PORT"
_CLUSTER_SCHEMES = ("dask", "ray")


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


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a cluster executor (``dask://...`` or ``ray://...``)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme in _CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse ``dask://...`` or ``ray://...``; :class:`ValueError` says what is wrong.

    Example:
        >>> target = parse_cluster_url("dask://127.0.0.1:8786/?workers=2&workers=3")
        >>> target.scheme, target.address, target.options
        ('dask', '127.0.0.1:8786', {'workers': '3'})
    """
    if not is_cluster_url(url):
        raise ValueError(f"unknown executor {url!r}: {_USAGE}")
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"executor {url!r} names no host: {_USAGE}")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if "inline_max" in options and not options["inline_max"].isdigit():
        raise ValueError(f"executor {url!r}: inline_max must be a number of bytes")
    # Not parts.netloc: an address may carry its own scheme (dask://tls://HOST:PORT).
    address = url.split("://", 1)[1].split("?", 1)[0].rstrip("/")
    return ClusterURL(url, parts.scheme, address, options)


def _factory(scheme: str) -> Callable[[ClusterURL, ArtifactStore | None], ClusterExecutor]:
    if scheme == "dask":
        from flowfed.executors.dask_executor import DaskExecutor

        return DaskExecutor
    from flowfed.executors.ray_executor import RayExecutor

    return RayExecutor


def executor_from_url(url: str, *, store: ArtifactStore | None = None) -> Executor:
    """The executor a URL names (see the module docstring for the URLs).

    Cluster executors are shared per URL and store within a process, so a server running
    many flows connects (or starts ``dask://local``) once. Nothing connects until
    ``start()`` or the first call.

    Example:
        >>> executor_from_url("dask://127.0.0.1:8786?inline_max=4096").name
        'dask'
    """
    if url == "threads":
        return ThreadsExecutor()
    if url == "processes":
        return ProcessesExecutor()
    if url in ISOLATED:
        return IsolatedExecutor(url)
    target = parse_cluster_url(url)
    with _shared_lock:
        key = (url, id(store))
        ex = _shared.get(key)
        if ex is None:
            ex = _factory(target.scheme)(target, store)
            _shared[key] = ex
        return ex


def check_executor(url: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``url`` names an executor.

    Example:
        >>> check_executor("sandbox")
        >>> check_executor("dask://local")
    """
    if url not in KINDS:
        parse_cluster_url(url)


def close_all() -> None:
    """Close every shared cluster executor (at exit, and in tests)."""
    with _shared_lock:
        items = list(_shared.values())
        _shared.clear()
    for ex in items:
        ex.close()
