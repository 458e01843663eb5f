"""The live, in-memory view of a run that monitors read (never the hot path's business).

The engine mutates these objects from its scheduler and worker threads; the terminal
monitor (and later the server) reads them on its own clock. Reads are racy by design
and harmless: a monitor frame may be one transition behind.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowfed.artifacts import ArtifactHandle, ByteSource
from flowfed.plan.graph import TaskNode
from flowfed.runtime.lifecycle import Lifecycle, State


class Cancellable(Protocol):
    """What cancels a running attempt: its tool :class:`~flowfed.tools.core.Context`, or
    the handle of a task running on a node."""

    def cancel(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...


@dataclass(eq=False)
class ArtifactRef:
    """An artifact available to consumers: catalog identity plus, in process, its value."""

    id: str
    name: str
    hash: str
    size: int
    kind: str
    type_name: str
    uri: str
    generation: int = 0
    value: Any = None
    has_value: bool = False
    version: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, name: str, art: dict[str, Any], generation: int = 0) -> ArtifactRef:
        """A reference to a catalogued artifact (as the database returns it), under the
        artifact name the consuming plan uses."""
        return cls(
            art["id"],
            name,
            art["hash"],
            art["size"],
            art["kind"],
            art.get("type_name", ""),
            art.get("uri", ""),
            generation=generation,
            version=art.get("version"),
            meta=art.get("meta") or {},
        )

    def handle(self, store: ByteSource) -> ArtifactHandle:
        """A lazy handle on this artifact (no read until ``load()``; none at all in process)."""
        extra = {"value": self.value} if self.has_value else {}
        return ArtifactHandle(
            store,
            id=self.id,
            name=self.name,
            version=self.version,
            hash=self.hash,
            size=self.size,
            kind=self.kind,
            type_name=self.type_name,
            uri=self.uri,
            meta=self.meta,
            **extra,
        )


@dataclass(eq=False)
class TaskRun:
    """One execution of a plan task (one per iteration when conditions loop)."""

    id: str
    node: TaskNode
    iteration: int = 1
    attempt: int = 1
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    cached: bool = False
    cache_key: str | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    progress: float | None = None
    message: str | None = None
    inputs: dict[str, ArtifactRef | list[ArtifactRef]] = field(default_factory=dict)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: How the running attempt is cancelled (set once it starts; None before).
    ctx: Cancellable | None = None
    #: Seed-003 tasks: the shared context they read, and the dict the tool returned.
    seed_context: dict[str, Any] | None = None
    seed_result: dict[str, Any] | None = None
    #: A finished federated step's facts for the run summary (strategy, rounds, DP).
    fl_summary: dict[str, Any] | None = None
    #: Attempts the platform started again after an interruption it caused (a server
    #: killed mid-task): counted apart from the step's own ``retries``.
    resumes: int = 0
    #: This attempt's resource use ``{wall_s, cpu_s, peak_rss_mb, progress}`` (None until
    #: its runner reports; see :mod:`flowfed.runtime.usage`), and each earlier attempt's.
    resources: dict[str, Any] | None = None
    attempt_resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retries_used(self) -> int:
        """Attempts after the first that the step's own ``retries`` paid for."""
        return self.attempt - 1 - self.resumes

    @property
    def state(self) -> State:
        """Current lifecycle state."""
        return self.lifecycle.state

    @property
    def step(self) -> str:
        """The step this task belongs to."""
        return self.node.step

    def input_refs(self) -> list[ArtifactRef]:
        """Every input reference, fan-in lists flattened."""
        out: list[ArtifactRef] = []
        for ref in self.inputs.values():
            if isinstance(ref, list):
                out.extend(ref)
            else:
                out.append(ref)
        return out


@dataclass
class RunView:
    """Everything a monitor shows: the flow, its steps and their tasks."""

    run_id: str
    flow_name: str
    steps: list[str]
    tasks: dict[str, list[TaskRun]] = field(default_factory=dict)
    status: str = "running"
    started_at: float = 0.0
    ended_at: float | None = None
    error: str | None = None
    #: Each step's ``type`` (seed 000's ``process``, ``output``...), where it has one.
    types: dict[str, str] = field(default_factory=dict)
    #: The flow's ``type`` (seed 000's ``training``), shown beside its name.
    flow_type: str | None = None
    #: The planned names of the tools of each step that holds several (``tools:``): such a
    #: step is not done while one of them has no task yet.
    parts: dict[str, list[str]] = field(default_factory=dict)

    def tools_waiting(self, step: str) -> int:
        """How many tools of ``step`` (one of several tools) have no task yet, while the run
        goes on (0 once it ended)."""
        parts = self.parts.get(step)
        if not parts or self.status != "running":
            return 0
        from flowfed.spec.composite import tools_waiting

        return tools_waiting(parts, [t.node.id for t in self.tasks.get(step, [])])

    def step_state(self, step: str) -> str:
        """A step's summary state: pending, running, completed, failed, skipped, cancelled."""
        state = self._step_state(step)
        if state in ("completed", "pending") and self.tools_waiting(step):
            return "running" if self.tasks.get(step) else "pending"
        return state

    def _step_state(self, step: str) -> str:
        runs = self.tasks.get(step, [])
        if not runs:
            return "pending"
        states = {t.state for t in runs}
        if states & {State.INITIALIZED, State.STARTED, State.RUNNING}:
            return "running"
        # A step placed on many datasets has one task per placement: each one's latest
        # run counts, and one failure fails the step.
        latest = {t.node.id: t.state for t in runs}
        if len(latest) > 1:
            ends = set(latest.values())
            if State.ERROR in ends:
                return "failed"
            if ends <= {State.FINISHED, State.CACHED}:
                return "completed"
            if State.CANCELLED in ends:
                return "cancelled"
            if State.PENDING in ends:
                return "running"
        last = runs[-1].state
        if last is State.ERROR:
            return "failed"
        if last in (State.FINISHED, State.CACHED):
            return "completed"
        if last is State.SKIPPED:
            return "skipped"
        if last is State.CANCELLED:
            return "cancelled"
        return "pending"

    def step_progress(self, step: str) -> float:
        """Fraction of a step done (a finished task counts 1, a running one its progress)."""
        runs = self.tasks.get(step, [])
        if not runs:
            return 0.0
        total = 0.0
        for t in runs:
            if t.state.terminal:
                total += 1.0
            elif t.progress is not None:
                total += t.progress
        return total / (len(runs) + self.tools_waiting(step))
