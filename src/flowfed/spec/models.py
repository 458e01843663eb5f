"""The flow model: one shape for YAML files, JSON files and the Python API.

Example:
    >>> flow = Flow(
    ...     name="demo",
    ...     config={"threshold": 0.5},
    ...     steps=[
    ...         Step(name="load", tool="load_csv", outputs=["raw"]),
    ...         Step(name="clean", tool="clean", inputs={"df": "raw"},
    ...              params={"threshold": "${config.threshold}"}, outputs=["clean"]),
    ...     ],
    ... )
    >>> [s.name for s in flow.steps]
    ['load', 'clean']
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

END = "end"
"""The routing target that ends a branch of the flow."""

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\- ]*$"


class Next(BaseModel):
    """Where a step routes when it ends.

    ``success`` / ``failure`` name the step to run next (or ``end``). With ``when``, a
    successful step routes to ``success`` only when the expression over its ``metrics``
    and ``outputs`` holds, and to ``otherwise`` when it does not.
    """

    model_config = ConfigDict(extra="forbid")

    success: str | None = None
    failure: str | None = None
    when: str | None = None
    otherwise: str | None = None

    def targets(self) -> list[str]:
        """Every step this routing can name (``end`` excluded)."""
        return [t for t in (self.success, self.failure, self.otherwise) if t and t != END]


class OnNodes(BaseModel):
    """Placement on named nodes: one task per node (``on: {nodes: [hospital-a]}``)."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[str] = Field(min_length=1)


#: Where a step's tasks run: ``central`` (the default: the engine's own executor),
#: ``each-dataset`` (one task per entry of ``config.datasets``, ``node:dataset``, on the
#: node holding it) or ``{nodes: [...]}``.
Placement = Literal["central", "each-dataset"] | OnNodes


class EarlyStopping(BaseModel):
    """Stop a federated step when a round metric stops improving."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class Privacy(BaseModel):
    """Client-level differential privacy (DP-FedAvg): clip each change, add noise."""

    model_config = ConfigDict(extra="forbid")

    clip_norm: float = Field(gt=0)
    noise_multiplier: float = Field(ge=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)


class Federated(BaseModel):
    """The settings of a ``kind: federated`` step (see docs/federated.md)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(ge=1, le=100_000)
    strategy: str = "fedavg"
    strategy_config: dict[str, Any] = Field(default_factory=dict)
    min_nodes: int | None = Field(default=None, ge=1)
    fraction_fit: float = Field(default=1.0, gt=0, le=1)
    local_epochs: int | None = Field(default=None, ge=1)
    round_timeout: float | None = Field(default=None, gt=0)
    #: Seconds a node may go unheard before the rounds leave it out (default: the
    #: server's ``--node-liveness``); see docs/nodes.md, Offline nodes.
    node_liveness: float | None = Field(default=None, gt=0)
    early_stopping: EarlyStopping | None = None
    secure_aggregation: bool = False
    privacy: Privacy | None = None
    seed: int = 0
    #: ``fixed``: ``ceil(fraction_fit * n)`` nodes without replacement each round;
    #: ``poisson``: each node independently with probability ``fraction_fit`` (the DP
    #: accountant then uses the Poisson analysis). See docs/federated.md, Sampling.
    sampling: Literal["fixed", "poisson"] = "fixed"
    #: Federated evaluation: the step input (a per-dataset artifact) each node evaluates
    #: the global model on; it is not passed to the trainer. See docs/federated.md.
    validation: str | None = Field(default=None, min_length=1)
    #: The node tool that evaluates (model, table) -> {rows, val_loss, val_accuracy}.
    evaluate_tool: str = "flowfed.fl_evaluate"
    #: The share of participants that evaluate (at least one).
    fraction_evaluate: float = Field(default=1.0, gt=0, le=1)
    #: Evaluate (federated and central) after every N-th round and after the last.
    evaluate_every: int = Field(default=1, ge=1)
    #: A central tool (model) -> {metric: number}, run on the global model.
    evaluate_fn: str | None = Field(default=None, min_length=1)
    #: How long a node keeps its ``ctx.client_state`` for this step: ``run`` (this run's
    #: rounds; a new run starts fresh) or ``keep`` (across runs of the flow:
    #: personalization). See docs/federated.md, Per-client state.
    client_state: Literal["run", "keep"] = "run"


#: What a step is for, as seed 000 writes it (``type: process``); shown by the monitors.
StepType = Literal["data", "process", "training", "output"]

#: The keys of a step that belong to each of its tools when it holds several (``tools:``).
PER_TOOL_KEYS = ("params", "inputs", "outputs", "shareable", "sweep", "models", "label")


class StepTool(BaseModel):
    """One tool of a step that holds several (``tools:``): seed 000's "Data
    Preprocessing" runs image normalization and then feature extraction as one step.

    It takes a single-tool step's keys; ``on``, ``retries``, ``retry_backoff``,
    ``timeout``, ``cache`` and ``allow_pickle`` left out come from the step. ``name``
    (default: the tool's name after its last dot) must be unique within the step.

    Example:
        >>> StepTool(tool="flowfed.standardize", inputs={"table": "raw"}).short_name
        'standardize'
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, pattern=_NAME_PATTERN)
    tool: str = Field(min_length=1)
    #: How its tasks are labelled in the monitors ("Image normalization"); default: the
    #: first phrase of the tool's description.
    label: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] | dict[str, str] | None = None
    shareable: list[str] = Field(default_factory=list)
    sweep: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)
    on: Placement | None = None
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_backoff: float | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    cache: bool | None = None
    allow_pickle: bool | None = None

    @property
    def short_name(self) -> str:
        """Its name within the step: ``name``, else the tool's name after its last dot."""
        if self.name:
            return self.name
        return self.tool.split("@", 1)[0].rsplit(".", 1)[-1]


class Step(BaseModel):
    """One stage of a flow: a tool, its params, what it consumes and what it produces.

    ``inputs`` maps the tool's parameter names to artifact names; ``outputs`` names the
    artifacts the step produces, either as a list (matched to the tool's outputs in
    order) or as a mapping ``tool_output: artifact_name``. No step names its
    predecessors: edges come from artifacts.

    A step may instead hold several tools (``tools:``, a list of :class:`StepTool`),
    run as one user-facing step; each is planned as a step of its own.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME_PATTERN)
    #: The tool; empty only when ``tools`` holds several (a step needs one or the other).
    tool: str = ""
    #: What the step is for (seed 000's ``type: process``); shown by the monitors.
    type: StepType | None = None
    #: How its tasks are labelled in the monitors ("Local model training"); default: the
    #: first phrase of the tool's description.
    label: str | None = Field(default=None, min_length=1, max_length=120)
    #: The tools of a step that holds several, in order (see :class:`StepTool`).
    tools: list[StepTool] | None = Field(default=None, min_length=1)
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] | dict[str, str] | None = None
    retries: int = Field(default=0, ge=0, le=100)
    retry_backoff: float = Field(default=0.5, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    cache: bool = True
    allow_pickle: bool = False
    next: Next | None = None
    #: Where the step runs (see :data:`Placement`).
    on: Placement = "central"
    #: ``task`` (one call per placement) or ``federated`` (rounds of local training on
    #: each dataset's node and central aggregation; ``tool`` is the local trainer).
    kind: Literal["task", "federated"] = "task"
    #: The :class:`Federated` settings; kept raw here because they may hold
    #: ``${config.x}`` references: the planner validates them after interpolation.
    federated: dict[str, Any] | None = None
    #: Outputs (tool output or artifact names) whose bytes may leave a data node.
    shareable: list[str] = Field(default_factory=list)
    #: Subvariants: ``{learning_rate: [0.01, 0.1]}`` runs the step once per combination of
    #: these config values (each a subvariant, tracked and compared separately); steps that
    #: consume its outputs run once per subvariant too.
    sweep: dict[str, Any] = Field(default_factory=dict)
    #: Tool inputs fed from the model registry: ``{model: "breast-cancer@3"}`` (a name
    #: alone: its latest version); resolved when the run starts.
    models: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_tool_or_several(self) -> Step:
        if self.tools is None:
            if not self.tool:
                raise ValueError(
                    "missing required key 'tool' (or 'tools', the list of tools the step runs)"
                )
            return self
        if self.tool:
            raise ValueError("a step has 'tool' or 'tools', not both")
        # Checked by value, not by presence: a stored flow's dump holds every key with its
        # default (``params: {}``, ``kind: task``), and must validate again as it was.
        for key in (*PER_TOOL_KEYS, "next", "kind", "federated"):
            if getattr(self, key) not in (None, {}, [], "task"):
                where = (
                    "a step that holds several tools cannot route with 'next'"
                    if key == "next"
                    else "a federated step holds one tool (its trainer): make it a step of its own"
                    if key in ("kind", "federated")
                    else f"'{key}' belongs to each tool under 'tools', not to the step"
                )
                raise ValueError(where)
        seen: set[str] = set()
        for t in self.tools:
            if t.short_name in seen:
                raise ValueError(
                    f"two tools of this step are named '{t.short_name}'; give them distinct 'name's"
                )
            seen.add(t.short_name)
        return self

    @model_validator(mode="after")
    def _federated_block(self) -> Step:
        if self.kind == "federated" and self.federated is None:
            raise ValueError("a step of kind 'federated' needs a 'federated:' block (rounds, ...)")
        if self.kind != "federated" and self.federated is not None:
            raise ValueError("'federated:' settings need 'kind: federated'")
        return self


class Flow(BaseModel):
    """A named, versioned workflow definition.

    ``start`` is set only by the seed-003 JSON format: it makes ``start_task`` the single
    entry point, as that format's sequential semantics require; conditions may route back
    to it (a retry or poll loop), each time running it again.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: str = "1"
    type: str = "pipeline"
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    imports: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    #: How many times a loop through ``next`` conditions may run (see ``iterations``).
    max_iterations: int = Field(default=100, ge=1)
    #: What ``max_iterations`` counts: ``step`` (the default) caps the runs of each step;
    #: ``run`` caps every task run of the flow together, as seed 003's sequential loop
    #: does (its format sets it).
    iterations: Literal["step", "run"] = "step"
    start: str | None = None
    #: Seed 003's top-level ``input_data``: the shared context every seed-003 task
    #: receives starts as ``{"input_data": ...}``.
    input_data: dict[str, Any] | None = None
    failure_policy: Literal["unrouted", "any"] = "unrouted"
    #: Where tool calls run when the command line does not say: ``threads``, ``processes``,
    #: ``dask://...`` or ``ray://...`` (see docs/executors.md).
    executor: str | None = None
    #: The node agents ``flowfed run`` starts on this machine for placed steps, when no
    #: server is given: a YAML file (relative to the flow file) or the mapping itself,
    #: ``{node: {dataset: path}}`` (see docs/nodes.md, "Local nodes").
    nodes: str | dict[str, dict[str, str]] | None = None
    #: An artifact (a dict) whose value becomes the run summary's ``metrics``.
    report: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        # `version: 1` in YAML is an int; versions are labels, not numbers.
        return str(v) if isinstance(v, int | float) else v

    @model_validator(mode="after")
    def _unique_step_names(self) -> Flow:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named '{step.name}'; step names must be unique")
            seen.add(step.name)
        return self

    def step(self, name: str) -> Step:
        """The step called ``name`` (KeyError if none)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)
