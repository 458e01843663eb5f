"""The planner's output types: a :class:`TaskGraph` of :class:`TaskNode` s and :class:`Route` s.

These are what the engine, the executors, the server and the monitors read; the rest of
:mod:`flowfed.plan` only builds them. They live in a room of their own so a reader of a
plan (an executor, a report) imports the data types without the compiler, and so the
compiler's modules (checks, expansion, rounds) share them without importing each other.

Example:
    >>> Route(success="train", failure=None)
    Route(success='train', failure=None, when=None, otherwise=None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowfed.plan.expressions import Expression
from flowfed.plan.placement import FederatedPlan
from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.models import Flow
from flowfed.tools.core import ToolSpec


@dataclass(frozen=True, slots=True)
class Route:
    """A step's compiled routing (``next``)."""

    success: str | None
    failure: str | None
    when: Expression | None = None
    otherwise: str | None = None


@dataclass(slots=True)
class TaskNode:
    """One task of the plan: a tool on a node, with validated config and artifact wiring."""

    id: str
    step: str
    tool: ToolSpec
    config: BaseModel
    #: Tool input → artifact (instance) name, or a list of them for a fan-in.
    inputs: dict[str, str | list[str]]
    outputs: dict[str, str]
    deps: tuple[str, ...]
    routed: bool = False
    route: Route | None = None
    retries: int = 0
    retry_backoff: float = 0.5
    timeout: float | None = None
    cache: bool = True
    allow_pickle: bool = False
    node: str = "local"
    round: int | None = None
    ancestors: frozenset[str] = frozenset()
    #: The node dataset the task works on (``on: each-dataset``).
    dataset: str | None = None
    #: Tool outputs whose bytes may leave the data node (placed tasks only).
    shareable: frozenset[str] = frozenset()
    #: Set on a ``kind: federated`` step's task: how the engine runs its rounds.
    federated: FederatedPlan | None = None
    #: The swept config values of this subvariant (``sweep:``), or None.
    variant: dict[str, Any] | None = None
    #: The task in words for the monitors ("Local model training (hospital-a)"); see
    #: :func:`flowfed.plan.labels.task_label` for the tasks the engine adds itself.
    label: str | None = None
    #: The tool's name within its step when the step holds several (``tools:``); the
    #: task's ``step`` is then the step as written ("Data Preprocessing").
    part: str | None = None
    #: A federated training task's client state: ``run`` (kept for this run's rounds) or
    #: ``keep`` (kept across runs of the flow); None for every other task.
    client_state: str | None = None

    @property
    def placed(self) -> bool:
        """Whether the task runs on a data node rather than the central engine."""
        return self.node != "local"

    def input_names(self) -> list[str]:
        """Every artifact (instance) name the task consumes, fan-ins flattened."""
        out: list[str] = []
        for v in self.inputs.values():
            if isinstance(v, list):
                out.extend(v)
            else:
                out.append(v)
        return out

    @property
    def config_data(self) -> dict[str, Any]:
        """The validated config as Python values (what the cache key encodes)."""
        return self.config.model_dump()

    def config_json(self) -> dict[str, Any]:
        """The validated config as JSON-able data (for reports); odd values as their repr."""
        return self.config.model_dump(mode="json", fallback=repr)


@dataclass
class TaskGraph:
    """The executable plan of a flow."""

    flow: Flow
    tasks: dict[str, TaskNode]
    producers: dict[str, str]
    downstream: dict[str, tuple[str, ...]]
    config: dict[str, Any]
    file: str | None = None
    warnings: list[Diagnostic] = field(default_factory=list)
    #: Inputs from the model registry: input name (``registry:NAME@VERSION``) → the
    #: reference, and where it was written (for a located error when it does not resolve).
    external: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Inputs from the catalog (``inputs: {table: scaled:2}`` or an artifact id): the
    #: reference as written → the artifact row it was resolved to before planning.
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)

    def step_names(self) -> list[str]:
        """Step names in flow order."""
        return [s.name for s in self.flow.steps]

    def step_types(self) -> dict[str, str]:
        """Each step's ``type`` (seed 000's ``process``, ``output``...), where it has one."""
        return {s.name: s.type for s in self.flow.steps if s.type}
