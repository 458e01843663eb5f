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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from flowfed.executors.cluster import ClusterExecutor, ClusterURL, ExecutorUnavailable
from flowfed.executors.processes import ProcessTaskError, ProcessTimeout, wait_for_call
from flowfed.runtime.usage import measured
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

#: The executors named by a word (everything else is a cluster URL): worker threads,
#: forked processes, ``python -m flowfed.runtime`` subprocesses over the runtime protocol,
#: the same under a bubblewrap sandbox, or in a container. The one list of them.
KINDS = ("threads", "processes", "subprocess", "sandbox", "container")

#: Executors that run the tool in another process (never on the engine's scheduler thread).
ISOLATED = ("subprocess", "sandbox", "container")


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
            with measured(ctx.report_resources, "thread"):
                return call_tool(node.tool, args, node.config, ctx)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                with measured(ctx.report_resources, "thread"):
                    box["value"] = call_tool(node.tool, args, node.config, ctx)
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=target, name=f"flowfed-tool-{node.step}", daemon=True)
        t.start()

        def poll(wait: float) -> tuple[Any] | None:
            t.join(wait)
            if t.is_alive():
                return None
            if "error" in box:
                raise box["error"]
            return (box.get("value"),)

        try:
            return wait_for_call(poll, ctx, timeout, "abandoned")
        except (ProcessTaskError, ProcessTimeout):
            ctx.cancel()  # the thread cannot be killed: its telemetry stops, its result drops
            raise


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


_shared: dict[tuple[str, int], ClusterExecutor] = {}
_shared_lock = threading.Lock()

_USAGE = f"use {', '.join(KINDS)}, dask://local, dask://HOST:PORT, ray://local or ray://HOST:PORT"
_CLUSTER_SCHEMES = ("dask", "ray")


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
