"""The warm sandboxes of a node agent: one per (run, dataset), reused, ended when idle.

:func:`run_sandboxed` is the sandbox runner's entry: it binds only the task's dataset
file and the ``--import`` tool files, and asks the agent's :class:`WorkerPool` for an idle
worker of that (run, dataset, binds, limits) key, starting one if none is free. Idle
workers end after :data:`IDLE_S`; at most ``max_workers`` live at once; every pool ends at
exit (:func:`shutdown_pools`) and with its agent.

A room of its own because it is scheduling and lifetime (which sandbox serves which
task, and for how long), apart from what one sandbox does (:mod:`flowfed.node.sandbox_worker`).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from flowfed.executors.isolated import tool_entrypoint
from flowfed.node.sandbox import SandboxLimits, tool_paths
from flowfed.node.sandbox_worker import SandboxWorker
from flowfed.node.subprocess_runner import TaskShim
from flowfed.tools.core import Context, ToolSpec

#: Seconds an idle warm worker is kept before it is ended.
IDLE_S = 60.0


class WorkerPool:
    """Warm sandboxes of one node agent, one per (run, dataset) at a time per task.

    A task takes an idle worker of its key (or starts one), and gives it back when it
    ends normally. Workers idle longer than ``idle_s`` end; at most ``max_workers`` live:
    the longest-idle one of another key makes way for a new one.

    Example:
        >>> pool = WorkerPool(Path("/tmp/flowfed-doc-pool"), max_workers=2)
        >>> pool.size, pool.shutdown()
        (0, None)
    """

    def __init__(self, base: Path, max_workers: int = 8, idle_s: float = IDLE_S) -> None:
        self.base = base
        self.max_workers = max(1, max_workers)
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._workers: list[SandboxWorker] = []
        self._closed = False
        self._reaper = threading.Thread(
            target=self._reap, name="flowfed-sandbox-reaper", daemon=True
        )
        self._reaper.start()

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._workers)

    def _take(self, key: tuple[Any, ...]) -> SandboxWorker | None:
        while True:
            with self._lock:
                found = next(
                    (w for w in self._workers if w.key == key and not w.busy and w.alive), None
                )
                if found is None:
                    return None
                found.busy = True
            if found.settle():
                return found
            with self._lock:  # its last call never ended cleanly: not reused
                if found in self._workers:
                    self._workers.remove(found)
            found.close()

    def _make_room(self) -> None:
        with self._lock:
            idle = sorted((w for w in self._workers if not w.busy), key=lambda w: w.idle_since)
            while len(self._workers) >= self.max_workers and idle:
                victim = idle.pop(0)
                self._workers.remove(victim)
                threading.Thread(target=victim.close, daemon=True).start()

    def call(
        self,
        key: tuple[Any, ...],
        readable: list[Path],
        limits: SandboxLimits,
        spec: ToolSpec,
        args: dict[str, Any],
        config: dict[str, Any],
        ctx: Context,
        timeout: float | None,
        task_context: dict[str, Any],
    ) -> Any:
        """Run a task in a warm worker of ``key`` (started with ``readable`` bound)."""
        worker = self._take(key)
        if worker is None:
            self._make_room()
            worker = SandboxWorker(key, readable, limits, self.base)
            worker.busy = True
            with self._lock:
                self._workers.append(worker)
        try:
            return worker.call(spec, args, config, ctx, timeout, task_context)
        finally:
            with self._lock:
                worker.busy = False
                worker.idle_since = time.monotonic()
                if not worker.alive or self._closed:
                    if worker in self._workers:
                        self._workers.remove(worker)
                    worker.close()

    def _reap(self) -> None:
        while not self._closed:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                old = [
                    w
                    for w in self._workers
                    if not w.busy and (now - w.idle_since > self.idle_s or not w.alive)
                ]
                for w in old:
                    self._workers.remove(w)
            for w in old:
                w.close()

    def shutdown(self) -> None:
        """End every worker (a busy one's task fails as its process exits)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.close()


_pools: weakref.WeakKeyDictionary[Any, WorkerPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def pool_for(owner: Any, base: Path, max_workers: int) -> WorkerPool:
    """The warm-worker pool of ``owner`` (a node agent), made on first use.

    Its workers end when idle, when the pool is shut down (:func:`shutdown_pools`, also
    at exit), and with the agent's process (bubblewrap's ``--die-with-parent``).
    """
    with _pools_lock:
        pool = _pools.get(owner)
        if pool is None:
            pool = _pools[owner] = WorkerPool(base, max_workers)
            weakref.finalize(owner, pool.shutdown)
        return pool


@atexit.register
def shutdown_pools() -> None:
    """End the warm workers of every pool in this process."""
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.shutdown()


def run_sandboxed(
    owner: Any,
    *,
    base: Path,
    max_workers: int,
    run_id: str,
    dataset: dict[str, Any] | None,
    imports: list[str],
    limits: SandboxLimits,
    spec: ToolSpec,
    args: dict[str, Any],
    config: dict[str, Any],
    ctx: Context,
    timeout: float | None,
    task_context: dict[str, Any],
) -> Any:
    """Run one node task in the warm sandbox of its (run, dataset).

    Only that dataset's file and the ``imports`` tool files are bound, so a worker never
    shows a task another run's or another dataset's file. Raises as :func:`run_isolated`.
    """
    readable = tool_paths(imports)
    source = inspect_source(spec)
    if source is not None:
        readable.append(source)
    path = Path(dataset["path"]).resolve() if dataset else None
    if path is not None:
        readable.append(path)
    key = (run_id, dataset["name"] if dataset else None, str(path), tuple(readable), limits)
    pool = pool_for(owner, base, max_workers)
    return pool.call(key, readable, limits, spec, args, config, ctx, timeout, task_context)


def inspect_source(spec: ToolSpec) -> Path | None:
    """The file (or package folder) to bind for a tool that the sandbox imports by path."""
    entry = tool_entrypoint(TaskShim(spec, "", "", {}))  # type: ignore[arg-type]
    source = entry.rpartition(":")[0]
    if not source.endswith(".py"):
        return None
    found = tool_paths([source])
    return found[0] if found else None
