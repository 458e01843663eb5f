"""Request and response models of the REST API (what the OpenAPI document describes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowfed.server.problems import ProblemItem

#: The largest integer a database INTEGER column holds on every supported backend
#: (PostgreSQL's is 32-bit): bigger versions and offsets can name nothing and are refused
#: with a 422 instead of failing in the database driver.
INT32_MAX = 2**31 - 1

# --- service -------------------------------------------------------------------------------


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """Readiness of each dependency."""

    database: str
    bus: str


class Me(BaseModel):
    """The principal the request's token stands for."""

    token_id: str
    name: str
    role: str


# --- flows -----------------------------------------------------------------------------------


class FlowSubmission(BaseModel):
    """A flow as text (``source`` + optional ``format``) or as a JSON object (``flow``)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="YAML or JSON text of the flow.")
    format: Literal["yaml", "json"] | None = Field(
        default=None, description="Format of `source`; sniffed when omitted."
    )
    flow: dict[str, Any] | None = Field(
        default=None,
        description="The flow as a JSON object (flowfed format, or a seed-003 flow object).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> FlowSubmission:
        if (self.source is None) == (self.flow is None):
            raise ValueError("give exactly one of 'source' (flow text) or 'flow' (a flow object)")
        if self.flow is not None and self.format is not None:
            raise ValueError("'format' applies to 'source' only")
        return self


class FlowCreated(BaseModel):
    """A stored flow version."""

    id: str
    name: str
    version: int
    created_at: float
    warnings: list[ProblemItem] = Field(default_factory=list)


class FlowSummary(BaseModel):
    """A stored flow version, without its definition."""

    id: str
    name: str
    version: int
    format: str
    description: str | None = None
    steps: int
    created_at: float


class FlowDetail(FlowSummary):
    """A stored flow version with its definition and the text it was submitted as."""

    spec: dict[str, Any]
    source: str | None = None


class PlannedTask(BaseModel):
    """A task of a validated flow's plan."""

    step: str
    tool: str
    after: list[str]
    routed: bool
    # Its place in the plan (``Data Preprocessing/load[hospital-a:breast]``) and the task
    # in words ("Data loading (hospital-a)").
    task: str | None = None
    label: str | None = None


class ValidationOk(BaseModel):
    """A flow that passed parsing and planning."""

    valid: Literal[True] = True
    flow: str
    tasks: list[PlannedTask]
    warnings: list[ProblemItem] = Field(default_factory=list)


# --- runs --------------------------------------------------------------------------------------


class RunRequest(BaseModel):
    """Start a run of a stored flow (``flow`` + optional ``version``) or of an inline one."""

    model_config = ConfigDict(extra="forbid")

    flow: str | None = Field(default=None, description="Name of a stored flow.")
    version: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Stored version (latest if omitted)."
    )
    definition: dict[str, Any] | None = Field(default=None, description="An inline flow object.")
    source: str | None = Field(default=None, description="Inline flow text (YAML or JSON).")
    format: Literal["yaml", "json"] | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Config overrides.")
    cache: bool = Field(default=True, description="false: run every task (no cache look-ups).")

    @model_validator(mode="after")
    def _one_of(self) -> RunRequest:
        given = [k for k in ("flow", "definition", "source") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'flow' (a stored flow's name), 'definition' (a flow "
                "object) or 'source' (flow text)"
            )
        if self.version is not None and self.flow is None:
            raise ValueError("'version' applies to a stored 'flow' only")
        return self


class RunAccepted(BaseModel):
    """A run that was started."""

    run_id: str
    status: str
    retry_of: str | None = None


class RunSummary(BaseModel):
    """A run without its tasks."""

    id: str
    flow_name: str
    flow_version: str
    flow_file: str | None = None
    status: str
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    ended_at: float | None = None
    #: When it started (its creation) and how long it took (so far, while it runs).
    started_at: float | None = None
    duration_s: float | None = None
    #: The run this one retries (``POST /runs/{id}/retry``), and the trigger that started it.
    retry_of: str | None = None
    trigger: str | None = None


class RunPage(BaseModel):
    """One page of runs, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[RunSummary]
    next_cursor: str | None = None


class Transition(BaseModel):
    """A lifecycle transition of a task."""

    src: str
    dst: str
    at: float
    attempt: int
    detail: str | None = None


class Counts(BaseModel):
    """Progress as counts: ``5000/5000 images``, ``14/30 rounds`` (``total`` None: unknown)."""

    done: float
    total: float | None = None
    unit: str | None = None


class TaskResources(BaseModel):
    """What a task attempt used: wall and CPU seconds, peak memory (RSS), progress counts."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    progress: Counts | None = None


class WaitingOn(BaseModel):
    """The offline node a task waits for, and since when (ISO 8601, UTC)."""

    node: str
    #: None for a node never heard from.
    offline_since: str | None = None


class Task(BaseModel):
    """One execution of a tool for a step."""

    id: str
    run_id: str
    step: str
    tool: str
    tool_version: str
    node: str
    round: int | None = None
    # Where the planner put the task: its key in the plan (a federated round task's is
    # ``Step/round 3/hospital-a:breast``), the node's dataset it reads and its sweep values.
    plan_key: str | None = None
    # The task in words: "Local model training (hospital-a)" (seed 000's monitor).
    label: str | None = None
    dataset: str | None = None
    variant: dict[str, Any] | None = None
    iteration: int
    attempt: int
    state: str
    cache_key: str | None = None
    cached: bool
    error: dict[str, Any] | None = None
    metrics: dict[str, float] | None = None
    progress: float | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    transitions: list[Transition] = Field(default_factory=list)
    #: This attempt's resource use (live while it runs; docs/dashboard.md, "Data").
    resources: TaskResources | None = None
    #: Each earlier attempt's: ``[{"attempt": 1, "wall_s": ..., ...}]``.
    attempt_resources: list[dict[str, Any]] | None = None
    duration_s: float | None = None
    #: Set while the task waits on an offline node.
    waiting_on: WaitingOn | None = None


class Step(BaseModel):
    """A step of a run with its tasks (one per iteration)."""

    name: str
    # What the step is for, as the flow says (seed 000's ``process``, ``output``...).
    type: str | None = None
    status: str
    tasks: list[Task]
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    #: Rounds done over rounds for a federated step, else tasks done over tasks.
    progress: Counts | None = None
    #: Running, but nothing moved for ``$FLOWFED_STALL_AFTER`` seconds (default 60).
    stalled: bool = False


class RunDetail(RunSummary):
    """A run with its flow definition, its steps (tasks grouped) and all tasks in order."""

    spec: dict[str, Any]
    steps: list[Step]
    tasks: list[Task]


class LogLine(BaseModel):
    """A log line of a task."""

    id: int
    ts: float
    level: str
    message: str


class LogPage(BaseModel):
    """A window of a task's log lines."""

    task_id: str
    offset: int
    limit: int
    total: int
    items: list[LogLine]
    next_offset: int | None = None


class MetricSample(BaseModel):
    """One reported metric value."""

    name: str
    value: float
    step: int | None = None
    ts: float


class TaskMetrics(BaseModel):
    """A task's metrics: the latest value of each and every sample."""

    task_id: str
    latest: dict[str, float]
    samples: list[MetricSample]


# --- artifacts ------------------------------------------------------------------------------


class Artifact(BaseModel):
    """A catalogued artifact."""

    id: str
    name: str
    version: int
    hash: str
    size: int
    kind: str
    type_name: str
    run_id: str
    task_id: str
    step: str
    node: str
    shareable: bool
    pickled: bool
    created_at: float
    meta: dict[str, Any] | None = None


class Producer(BaseModel):
    """The task, step and tool that produced an artifact."""

    task_id: str | None = None
    step: str | None = None
    tool: str | None = None
    tool_version: str | None = None
    #: The tool's effective code hash when the task ran (what the cache key covers: the
    #: tool's normalized source and all the user's code it reaches).
    code_hash: str | None = None
    run_id: str | None = None


class ArtifactDetail(Artifact):
    """An artifact with its producer and parents' ids."""

    parents: list[str]
    producer: Producer


class LineageNode(BaseModel):
    """A node of a lineage tree; ``parents`` are subtrees."""

    id: str
    name: str | None = None
    version: int | None = None
    hash: str | None = None
    kind: str | None = None
    step: str | None = None
    node: str | None = None
    run_id: str | None = None
    producer: Producer | None = None
    missing: bool = False
    cycle: bool = False
    #: an ancestor reached again: drawn once, then marked (its parents are not repeated)
    shown: bool = False
    parents: list[LineageNode] = Field(default_factory=list)


# --- tools ------------------------------------------------------------------------------------


class ToolInput(BaseModel):
    """A tool input (a positional parameter)."""

    name: str
    type: str
    required: bool


class ToolOutput(BaseModel):
    """A tool output."""

    name: str
    type: str
    model: bool


class Tool(BaseModel):
    """A registered tool, with its config JSON Schema."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    version: str
    type: str
    description: str
    module: str | None = None
    inputs: list[ToolInput]
    outputs: list[ToolOutput]
    config_schema: dict[str, Any]
    is_async: bool = Field(alias="async")
    seed_task: bool


# --- seed 003 -----------------------------------------------------------------------------


class SeedExecuteRequest(BaseModel):
    """Seed 003's request: ``{"flow": {id, name, start_task, tasks, conditions}}``."""

    flow: dict[str, Any]
    #: The context every task starts with, as ``context["input_data"]`` (an object;
    #: anything else is reported, with its line, beside the flow's other problems).
    input_data: Any = None


class SeedTaskResult(BaseModel):
    """Seed 003's per-task result."""

    task_name: str
    status: str
    data: Any = None
    error: str | None = None


class SeedExecution(BaseModel):
    """Seed 003's execution result."""

    execution_id: str
    status: str
    task_results: list[SeedTaskResult]
    #: Why a failed execution stopped (the failed tasks, or the iteration limit); null
    #: when it succeeded.
    error: str | None = None


# --- nodes ---------------------------------------------------------------------------


class NodeColumn(BaseModel):
    """A dataset column."""

    name: str
    dtype: str


class NodeDataset(BaseModel):
    """A dataset a node registered: schema, row count, content hash (never rows)."""

    name: str
    format: str
    rows: int
    columns: list[NodeColumn]
    hash: str


class NodeItem(BaseModel):
    """A node: online or not, when it was last heard from, its datasets and running tasks."""

    name: str
    online: bool
    last_seen: float | None
    datasets: list[NodeDataset]
    running: int


class NodeList(BaseModel):
    """Every node."""

    items: list[NodeItem]
