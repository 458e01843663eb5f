"""What a cluster worker runs for one tool call: plain data in, plain data out.

Cluster executors (Dask, Ray) never ship the engine, the task graph or a live
:class:`~flowfed.tools.core.Context` to a worker. They send a :class:`WorkerCall`: the
tool's entry point (``module:function`` or ``/path/file.py:function``, re-imported on the
worker), its config as data (validated again against the tool's schema), and its inputs,
small ones inline and large ones as :class:`StoredValue` (a content hash in the artifact
store the worker reads itself). The worker answers with a :class:`WorkerResult`: the value
(again stored when large), the telemetry the tool emitted (logs, metrics, progress), or
the error with its traceback. So large data moves through the artifact store, never
through the cluster's scheduler, and the engine keeps lifecycle, retries, caching and
lineage exactly as for local runs.

Example:
    >>> call = WorkerCall(tool="textwrap:dedent", config={}, args={"text": "  hi"},
    ...                   task_id="t1", step="s", node="local")
    >>> run_call(call).value
    'hi'
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowfed.artifacts import ArtifactStore, Materialized, NotMaterializable, load, materialize
from flowfed.runtime.usage import measured
from flowfed.tools.core import Context, ToolSpec, call_tool

#: Values whose stored form is larger than this travel through the artifact store.
DEFAULT_INLINE_MAX = 1 << 20


@dataclass(frozen=True)
class StoredValue:
    """A value put in the artifact store: the receiver loads it by hash."""

    store: str
    hash: str
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """Read the bytes back from the store and rebuild the value."""
        return load(self.kind, ArtifactStore(self.store).get(self.hash), self.meta)


@dataclass
class WorkerCall:
    """One tool call, as plain picklable data."""

    tool: str
    config: dict[str, Any]
    args: dict[str, Any]
    task_id: str
    step: str
    node: str
    store: str | None = None
    inline_max: int = DEFAULT_INLINE_MAX
    allow_pickle: bool = False


@dataclass
class WorkerResult:
    """What came back: the value or the error, the telemetry, and where it ran."""

    value: Any = None
    error: tuple[str, str, str] | None = None  # message, traceback, exception type
    telemetry: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    where: str = ""


_tools: dict[tuple[str, int, int], ToolSpec] = {}
_tools_lock = threading.Lock()


def _tool(ref: str) -> ToolSpec:
    """The ToolSpec behind ``ref``, imported once per worker process and file version.

    A cluster worker lives longer than one run: a tools file edited since it was imported
    is imported again (its size or mtime changed), and tools are imported into a private
    registry, so two flows whose files both define a tool ``train`` do not collide.
    """
    from flowfed.runtime.toolside import load_tool
    from flowfed.tools import core

    path = ref.rpartition(":")[0]
    try:
        st = os.stat(path)
        version = (ref, st.st_mtime_ns, st.st_size)
    except OSError:  # a module name, not a file
        version = (ref, 0, 0)
    with _tools_lock:
        spec = _tools.get(version)
        if spec is not None:
            return spec
        if version[1] and any(k[0] == ref for k in _tools):
            # A copy (one C call): another thread of this worker may import a module
            # meanwhile, and iterating sys.modules itself then fails ("dictionary changed
            # size"). list(sys.modules.items()) is no cure: building the list allocates,
            # the collector may run finalizers, and those let other threads in.
            for name, mod in sys.modules.copy().items():
                # Also its plain name: a tools file may be aliased to it (flowfed.tools.loading).
                own = name.startswith("flowfed_tools_") or name == Path(path).stem
                if own and getattr(mod, "__file__", None) == path:
                    sys.modules.pop(name, None)
        # This thread's registrations only: tools running on the worker's other threads
        # keep registering (their own imports) into the process-wide registry.
        with core.registering_into(core.Registry()):
            spec = load_tool(ref)
        _tools[version] = spec
        return spec


def ship(value: Any, store: ArtifactStore | None, inline_max: int, allow_pickle: bool) -> Any:
    """``value`` itself, or a :class:`StoredValue` when its stored form is over ``inline_max``.

    Values the materializers cannot store travel inline (the cluster pickles them).
    """
    if store is None or value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        m: Materialized = materialize(value, allow_pickle=allow_pickle)
    except NotMaterializable:
        return value
    if m.size <= inline_max:
        return value
    store.put(m)
    return StoredValue(store.url if not store.local else store.root, m.hash, m.kind, m.meta)


def unship(value: Any) -> Any:
    """The inverse of :func:`ship`."""
    return value.load() if isinstance(value, StoredValue) else value


def ship_result(value: Any, store: ArtifactStore | None, inline_max: int, pickle: bool) -> Any:
    """:func:`ship` for a tool's result: each element of a tuple or dict on its own."""
    if isinstance(value, dict):
        return {k: ship(v, store, inline_max, pickle) for k, v in value.items()}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(ship(v, store, inline_max, pickle) for v in value)
    if isinstance(value, tuple):  # a namedtuple keeps its type
        return type(value)(*(ship(v, store, inline_max, pickle) for v in value))
    return ship(value, store, inline_max, pickle)


def unship_result(value: Any) -> Any:
    """The inverse of :func:`ship_result`."""
    if isinstance(value, dict):
        return {k: unship(v) for k, v in value.items()}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(unship(v) for v in value)
    if isinstance(value, tuple):
        return type(value)(*(unship(v) for v in value))
    return unship(value)


def run_call(call: WorkerCall) -> WorkerResult:
    """Run one tool call on this worker; never raises (errors come back as data)."""
    out = WorkerResult(where=f"{socket.gethostname()}:{os.getpid()}")

    def sink(kind: str, payload: dict[str, Any]) -> None:
        out.telemetry.append((kind, {**payload, "ts": time.time()}))

    ctx = Context(sink, task_id=call.task_id, step=call.step, node=call.node)
    try:
        spec = _tool(call.tool)
        config = spec.config_model.model_validate(call.config)
        args = {k: unship(v) for k, v in call.args.items()}
        # Dask runs tasks in worker threads, Ray in worker processes: the thread's CPU is
        # this task's either way. Samples are kept and relayed with the result.
        with measured(ctx.report_resources, "thread"):
            value = call_tool(spec, args, config, ctx)
        store = ArtifactStore(call.store) if call.store else None
        out.value = ship_result(value, store, call.inline_max, call.allow_pickle)
    except BaseException as exc:
        out.error = (f"{type(exc).__name__}: {exc}", traceback.format_exc(), type(exc).__name__)
    return out


def relay(ctx: Context, telemetry: list[tuple[str, dict[str, Any]]]) -> None:
    """Replay a worker's telemetry into the engine's context for the task (of its
    resource samples only the last, the attempt's final figures)."""
    last = max((i for i, (k, _) in enumerate(telemetry) if k == "resources"), default=-1)
    for i, (kind, p) in enumerate(telemetry):
        if kind == "resources" and i != last:
            continue
        if kind == "log":
            ctx.log(p["message"], p["level"])
        elif kind == "metric":
            ctx.metric(p["name"], p["value"], p.get("step"))
        elif kind == "progress" and (p.get("total") is not None or p.get("unit") is not None):
            ctx.progress(p.get("done", 0), p.get("total"), p.get("message"), unit=p.get("unit"))
        elif kind == "progress":
            ctx.progress(p["fraction"], message=p.get("message"))
        elif kind == "resources":
            ctx.report_resources({k: v for k, v in p.items() if k != "ts"})
