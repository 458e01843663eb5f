"""The planner: Flow → TaskGraph, pure, with every build-time error reported together.

Edges come from artifacts: a step that consumes ``clean`` depends on the step that
produces ``clean``. Conditions add routing: a step that some ``next`` names runs only
when routed to. The planner does no I/O and starts no threads: tools must already be
imported into the registry it is given.

Example:
    >>> from flowfed.tools import Registry, build_spec
    >>> reg = Registry()
    >>> def load() -> list: return [1, 2]
    >>> def total(xs: list) -> int: return sum(xs)
    >>> _ = reg.add(build_spec(load, name="load", version="1", type="database-adapter"))
    >>> _ = reg.add(build_spec(total, name="total", version="1", type="evaluation"))
    >>> flow = Flow(name="f", steps=[
    ...     Step(name="b", tool="total", inputs={"xs": "numbers"}, outputs=["sum"]),
    ...     Step(name="a", tool="load", outputs=["numbers"])])
    >>> graph = plan(flow, reg)
    >>> list(graph.tasks), graph.tasks["b"].deps
    (['a', 'b'], ('a',))
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from flowfed.plan.expressions import Expression, ExpressionError
from flowfed.plan.placement import (
    FederatedPlan,
    Where,
    instance,
    is_placed,
    match,
    needs_datasets,
    parse_datasets,
    participants,
    placements,
    task_id,
)
from flowfed.plan.typecheck import describe, fits, fits_list_of
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import LoadedFlow, SourceMap
from flowfed.spec.models import END, Federated, Flow, Step
from flowfed.tools.core import TOOL_TYPE_RULES, Registry, ToolSpec, ToolType


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


_REF = re.compile(r"\$\{\s*config\.([A-Za-z0-9_.\-]+)\s*\}")


#: An input naming an artifact of the catalog (made by an earlier run) instead of a step's
#: output: ``NAME:VERSION`` or a 32-hex artifact id.
CATALOG_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*:[0-9]+|[0-9a-f]{32}")


def catalog_inputs(flow: Flow | LoadedFlow) -> list[str]:
    """The catalog references among ``flow``'s step inputs, for the caller to resolve
    (against its database) before :func:`plan`, which does no I/O.

    Example:
        >>> catalog_inputs(Flow(name="f", steps=[Step(name="s", tool="t",
        ...     inputs={"table": "scaled:2", "other": "raw"})]))
        ['scaled:2']
    """
    from flowfed.spec.composite import flatten

    model = flow.flow if isinstance(flow, LoadedFlow) else flow
    steps = flatten(model).flow.steps  # a step of several tools: each tool's inputs
    refs = (a for s in steps for a in s.inputs.values() if CATALOG_REF.fullmatch(a))
    return list(dict.fromkeys(refs))


def plan(
    flow: Flow | LoadedFlow,
    registry: Registry,
    params: dict[str, Any] | None = None,
    catalog: dict[str, dict[str, Any]] | None = None,
) -> TaskGraph:
    """Compile a flow into a :class:`TaskGraph` or raise :class:`FlowError` with all problems.

    ``catalog`` holds the artifacts the flow's catalog inputs (:func:`catalog_inputs`)
    resolved to, by reference; one missing from it is a build-time error.

    Pure: no I/O, no threads, no process-wide switches. A caller planning very large flows
    may pause the cyclic collector around it (:func:`flowfed.collector.paused`, as
    :func:`flowfed.api.prepare` does).
    """
    from flowfed.plan.labels import label_tasks
    from flowfed.spec.composite import flatten

    written = flow.flow if isinstance(flow, LoadedFlow) else flow
    flat = flatten(written, flow.source if isinstance(flow, LoadedFlow) else None)
    if flat.flow is not written:
        old = flow if isinstance(flow, LoadedFlow) else None
        flow = LoadedFlow(
            flat.flow,
            flat.source,
            old.path if old else None,
            problems=list(old.problems) if old else [],
            warnings=list(old.warnings) if old else [],
        )
    try:
        graph = _plan(flow, registry, params, catalog or {})
    except FlowError as exc:
        raise FlowError([*flat.diagnostics, *exc.diagnostics]) from None
    if flat.diagnostics:
        raise FlowError(flat.diagnostics)
    return label_tasks(graph, written, flat.parts)


def _plan(
    flow: Flow | LoadedFlow,
    registry: Registry,
    params: dict[str, Any] | None,
    catalog: dict[str, dict[str, Any]],
) -> TaskGraph:
    """The compiler proper, over a flow whose steps each hold one tool."""
    diags: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    if isinstance(flow, LoadedFlow):
        source, model = flow.source, flow.flow
        # Problems the loader found but could build past: reported with the planner's own.
        diags += flow.problems
        warnings += flow.warnings
    else:
        source, model = SourceMap(), flow
    steps_index = {s.name: i for i, s in enumerate(model.steps)}

    def at(step: Step, *path: str | int) -> tuple[str | int, ...]:
        return ("steps", steps_index[step.name], *path)

    config = dict(model.config)
    for key, value in (params or {}).items():
        if key not in config:
            known = ", ".join(sorted(config)) or "none"
            diags.append(
                Diagnostic(
                    f"unknown parameter '{key}'; the flow's config has: {known}",
                    file=source.file,
                    field=f"config.{key}",
                )
            )
        config[key] = value

    nodes: dict[str, TaskNode] = {}
    sweeps: dict[str, list[dict[str, Any]]] = {}
    external: dict[str, tuple[str, str]] = {}
    fed_settings: dict[str, Federated | None] = {}
    producers: dict[str, str] = {}
    producer_paths: dict[str, tuple[str | int, ...]] = {}
    specs: dict[str, ToolSpec] = {}
    #: artifact → the tool output that makes it, and that output's annotation
    made_as: dict[str, tuple[str, Any]] = {}
    for step in model.steps:
        spec = registry.find(step.tool)
        if spec is None:
            close = difflib.get_close_matches(step.tool, registry.names(), n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else ("registered tools: " + (", ".join(registry.names()) or "none"))
            )
            diags.append(
                source.diag(
                    f"unknown tool '{step.tool}'",
                    at(step, "tool"),
                    step=step.name,
                    field="tool",
                    hint=hint,
                )
            )
            continue
        resolved, ref_diags = _interpolate(step.params, config, source, at(step, "params"), step)
        diags.extend(ref_diags)
        if step.federated is not None:
            fed_raw, fed_diags = _interpolate(
                step.federated, config, source, at(step, "federated"), step
            )
            diags.extend(fed_diags)
            fed_settings[step.name] = _validate_federated(
                fed_raw, source, step, at(step, "federated"), diags
            )
        cfg = _validate_config(spec, resolved, source, step, at(step, "params"), diags)
        _check_inputs(spec, step, source, at(step, "inputs"), diags)
        outputs = _output_names(spec, step, source, at(step, "outputs"), diags)
        _check_type_rule(spec, step, outputs, source, at(step, "tool"), diags)
        specs[step.name] = spec
        annotations = {o.name: o.annotation for o in spec.outputs}
        for tool_out, artifact in outputs.items():
            made_as.setdefault(artifact, (tool_out, annotations.get(tool_out, Any)))
        for artifact in outputs.values():
            if artifact in producers:
                diags.append(
                    source.diag(
                        f"artifact '{artifact}' is produced by two steps: "
                        f"'{producers[artifact]}' and '{step.name}'",
                        at(step, "outputs"),
                        step=step.name,
                        field="outputs",
                        hint="each artifact name has exactly one producer; rename one output",
                    )
                )
            else:
                producers[artifact] = step.name
                producer_paths[artifact] = at(step, "outputs")
        model_inputs = _model_inputs(spec, step, config, source, at, diags, external)
        if step.sweep and cfg is not None:
            sweeps[step.name] = _sweep_combos(spec, step, resolved, config, source, at, diags)
        if cfg is None:
            continue
        nodes[step.name] = TaskNode(
            id=step.name,
            step=step.name,
            tool=spec,
            config=cfg,
            inputs={**step.inputs, **model_inputs},
            outputs=outputs,
            deps=(),
            retries=step.retries,
            retry_backoff=step.retry_backoff,
            timeout=step.timeout,
            cache=step.cache,
            allow_pickle=step.allow_pickle or spec.allow_pickle,
        )

    # Every consumed artifact needs a producer, or is in the catalog.
    used_catalog: dict[str, dict[str, Any]] = {}
    for step in model.steps:
        for param, artifact in step.inputs.items():
            if artifact not in producers and CATALOG_REF.fullmatch(artifact):
                if artifact in catalog:
                    used_catalog[artifact] = catalog[artifact]
                    continue
                diags.append(
                    source.diag(
                        f"input '{artifact}' names no artifact of the catalog",
                        at(step, "inputs", param),
                        step=step.name,
                        field=f"inputs.{param}",
                        hint="NAME:VERSION or an artifact id of an earlier run; "
                        "see `flowfed artifacts list`",
                    )
                )
                continue
            if artifact not in producers:
                close = difflib.get_close_matches(artifact, list(producers), n=1)
                diags.append(
                    source.diag(
                        f"input '{artifact}' is not produced by any step",
                        at(step, "inputs", param),
                        step=step.name,
                        field=f"inputs.{param}",
                        hint=f"did you mean '{close[0]}'?"
                        if close
                        else "add a step that lists it in its outputs",
                    )
                )

    _check_edge_types(model, specs, producers, made_as, source, at, diags)

    deps: dict[str, tuple[str, ...]] = {}
    for step in model.steps:
        seen: dict[str, None] = {}
        for artifact in step.inputs.values():
            prod = producers.get(artifact)
            if prod is not None and prod != step.name:
                seen[prod] = None
            elif prod == step.name:
                diags.append(
                    source.diag(
                        f"step consumes its own output '{artifact}'",
                        at(step, "inputs"),
                        step=step.name,
                        field="inputs",
                    )
                )
        deps[step.name] = tuple(seen)

    order, cycle = _toposort([s.name for s in model.steps], deps)
    if cycle:
        first = model.step(cycle[0])
        diags.append(
            source.diag(
                "artifact cycle: " + " → ".join(cycle),
                at(first, "inputs"),
                step=first.name,
                field="inputs",
                hint="a step cannot (indirectly) consume what it produces; loops belong in "
                "'next' conditions",
            )
        )

    routed: set[str] = set()
    for step in model.steps:
        route = _compile_route(step, steps_index, source, at(step, "next"), diags)
        if step.name in nodes:
            nodes[step.name].route = route
        if step.next:
            routed.update(step.next.targets())
    if model.start is not None:
        if model.start not in steps_index:
            diags.append(
                source.diag(
                    f"start_task '{model.start}' is not a task", ("start",), field="start_task"
                )
            )
        routed.update(n for n in steps_index if n != model.start)

    if not cycle:
        _check_reachability(model, deps, routed, source, steps_index, diags)

    placed = is_placed(model)
    warns: list[Diagnostic] = []  # build-time warnings: the flow runs, the user is told
    datasets: list[Where] | None = None
    for step in model.steps:
        if step.sweep and (step.next is not None or step.name in routed):
            diags.append(
                source.diag(
                    "a swept step cannot route or be routed to with 'next'",
                    at(step, "sweep"),
                    step=step.name,
                    field="sweep",
                )
            )
    if placed:
        if needs_datasets(model):
            datasets = parse_datasets(config, source, diags)
        _check_placed_steps(model, nodes, fed_settings, routed, datasets, source, at, diags, warns)

    if diags:
        raise FlowError(diags)
    if (placed or sweeps) and not cycle:
        graph = _expand(model, nodes, fed_settings, sweeps, order, config, datasets, source, at)
        graph.external = external
        graph.catalog = used_catalog
        graph.warnings = warnings + warns
        return graph

    downstream: dict[str, list[str]] = {n: [] for n in order}
    for name in order:
        for d in deps[name]:
            downstream[d].append(name)
    # Ancestors keep a re-run step from starting while one of its producers is still
    # looping; without any routing there are no loops, and the sets would cost O(n²)
    # memory on a long chain.
    loops = bool(routed)
    ancestors: dict[str, frozenset[str]] = {}
    ordered: dict[str, TaskNode] = {}
    for name in order:
        node = nodes[name]
        node.deps = deps[name]
        node.routed = name in routed
        if loops:
            acc: set[str] = set(node.deps)
            for d in node.deps:
                acc |= ancestors[d]
            ancestors[name] = frozenset(acc)
            node.ancestors = ancestors[name]
        ordered[name] = node
    return TaskGraph(
        flow=model,
        tasks=ordered,
        producers=producers,
        downstream={k: tuple(v) for k, v in downstream.items()},
        config=config,
        file=source.file,
        warnings=warnings,
        external=external,
        catalog=used_catalog,
    )


def _check_edge_types(
    model: Flow,
    specs: dict[str, ToolSpec],
    producers: dict[str, str],
    made_as: dict[str, tuple[str, Any]],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
) -> None:
    """Each artifact edge: the producer's output annotation against the consumer's
    parameter annotation (rules in :mod:`flowfed.plan.typecheck`)."""
    by_name = {s.name: s for s in model.steps}
    for step in model.steps:
        spec = specs.get(step.name)
        if spec is None or spec.seed_task:
            continue
        for param, artifact in step.inputs.items():
            inp = spec.inputs.get(param)
            prod = producers.get(artifact)
            if inp is None or prod is None or prod == step.name:
                continue  # reported elsewhere
            tool_out, produced = made_as.get(artifact, ("", Any))
            expected = inp.annotation
            producer = by_name[prod]
            # Placed tasks feeding a central task: it receives the list of every instance.
            fan_in = producer.on != "central" and producer.kind == "task"
            fan_in = fan_in and step.on == "central" and step.kind == "task"
            if fan_in and not {artifact, tool_out} & set(producer.shareable):
                continue  # it may not leave the nodes at all: reported as such
            what = describe(produced)
            if fan_in:
                ok = fits_list_of(produced, expected)
                what = f"a list of {what} (one per placement)"
            else:
                ok = fits(produced, expected)
            if ok:
                continue
            diags.append(
                source.diag(
                    f"input '{param}' of tool '{spec.name}' is {describe(expected)}, but "
                    f"artifact '{artifact}' from step '{prod}' is {what} "
                    f"(tool '{specs[prod].name}')",
                    at(step, "inputs", param),
                    step=step.name,
                    field=f"inputs.{param}",
                    hint="wire an artifact of the type the tool takes, or change one of the "
                    "annotations",
                )
            )


def _check_placed_steps(
    model: Flow,
    nodes: dict[str, TaskNode],
    fed_settings: dict[str, Federated | None],
    routed: set[str],
    datasets: list[Where] | None,
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
    warns: list[Diagnostic],
) -> None:
    """Rules only placed and federated steps have."""
    for step in model.steps:
        central = step.on == "central" and step.kind == "task"
        if not central and (step.next is not None or step.name in routed):
            diags.append(
                source.diag(
                    "a placed or federated step cannot route or be routed to with 'next'",
                    at(step, "next") if step.next else at(step, "on"),
                    step=step.name,
                    field="next" if step.next else "on",
                    hint="conditions run on the central engine; route around the placed steps",
                )
            )
        node = nodes.get(step.name)
        if node is None:
            continue
        outs = node.outputs
        for name in step.shareable:
            if name not in outs and name not in outs.values():
                diags.append(
                    source.diag(
                        f"'{name}' in shareable is not an output of this step "
                        f"(outputs: {', '.join(outs.values()) or 'none'})",
                        at(step, "shareable"),
                        step=step.name,
                        field="shareable",
                    )
                )
        if step.kind != "federated":
            continue
        fed = fed_settings.get(step.name)
        if fed is None:
            continue
        spec = node.tool
        models = [o.name for o in spec.outputs if o.is_model]
        if not models:
            diags.append(
                source.diag(
                    f"the trainer of a federated step must produce a model; tool "
                    f"'{spec.name}' declares none",
                    at(step, "tool"),
                    step=step.name,
                    field="tool",
                )
            )
        elif models[0] not in outs:
            diags.append(
                source.diag(
                    f"name the trained model: map output '{models[0]}' under 'outputs'",
                    at(step, "outputs"),
                    step=step.name,
                    field="outputs",
                )
            )
        count = len(participants(step, datasets))
        if datasets is not None or not isinstance(step.on, str):
            if fed.min_nodes is not None and fed.min_nodes > count:
                diags.append(
                    source.diag(
                        f"min_nodes is {fed.min_nodes} but the step trains on {count} node(s)",
                        at(step, "federated", "min_nodes"),
                        step=step.name,
                        field="federated.min_nodes",
                    )
                )
            if fed.secure_aggregation and count < 2:
                diags.append(
                    source.diag(
                        "secure aggregation needs at least 2 participants: the sum of one "
                        "update is that update",
                        at(step, "federated", "secure_aggregation"),
                        step=step.name,
                        field="federated.secure_aggregation",
                    )
                )
        known = datasets is not None or not isinstance(step.on, str)
        _federated_rules(step, fed, spec, count if known else None, source, at, diags, warns)


def _federated_rules(
    step: Step,
    fed: Federated,
    spec: ToolSpec,
    count: int | None,
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
    warns: list[Diagnostic],
) -> None:
    """The strategy rules of flowfed.plan.strategy_rules.check, as located diagnostics."""
    from flowfed.plan.strategy_rules import check

    for p in check(fed, spec, count):
        raw = step.federated or {}
        path = at(step, "federated", p.field if p.field in raw else "strategy")
        d = source.diag(p.message, path, step=step.name, field=f"federated.{p.field}", hint=p.hint)
        (diags if p.level == "error" else warns).append(d)


def _expand(
    model: Flow,
    nodes: dict[str, TaskNode],
    fed_settings: dict[str, Federated | None],
    sweeps: dict[str, list[dict[str, Any]]],
    order: list[str],
    config: dict[str, Any],
    datasets: list[Where] | None,
    source: SourceMap,
    at: Any,
) -> TaskGraph:
    """Expand placed steps into one task per placement (see flowfed.plan.placement), and
    swept steps, with everything downstream of them, into one task per subvariant."""
    diags: list[Diagnostic] = []
    # artifact name → {subvariant label: {placement: instance name}}; central artifacts
    # under placement None, unswept ones under label "".
    made_v: dict[str, dict[str, dict[Where | None, str]]] = {}
    shareable_of: dict[str, bool] = {}  # artifact name → may its bytes leave the node
    tasks: dict[str, TaskNode] = {}
    producers: dict[str, str] = {}

    def bad_input(step: Step, param: str, message: str, hint: str | None = None) -> None:
        path = at(step, "inputs", param)
        diags.append(source.diag(message, path, step=step.name, field=f"inputs.{param}", hint=hint))

    for name in order:
        proto = nodes[name]
        step = model.step(name)
        shareable = frozenset(
            out
            for out, art in proto.outputs.items()
            if out in step.shareable or art in step.shareable
        )
        where_list = placements(step, datasets)
        fed_parts = participants(step, datasets) if step.kind == "federated" else []
        variants = _step_variants(step, sweeps, made_v, source, at, diags)
        for label, combo in variants:
            config_v = proto.config
            if combo:
                config_v = proto.tool.config_model.model_validate(
                    {**proto.config.model_dump(), **combo}
                )
            for where in where_list:
                inputs: dict[str, str | list[str]] = {}
                local_inputs: list[str] = []
                for param, key in proto.inputs.items():
                    if isinstance(key, str) and key.startswith(REGISTRY_PREFIX):
                        inputs[param] = key  # a registry model: central, sent to every node

                for param, artifact in step.inputs.items():
                    if artifact not in made_v and CATALOG_REF.fullmatch(artifact):
                        inputs[param] = artifact  # from the catalog: central, sent to all
                        continue
                    inst = _pick(made_v.get(artifact, {}), label)
                    if None in inst:  # a central artifact: everyone receives it
                        inputs[param] = inst[None]
                        continue
                    if fed_parts:
                        names: list[str] = []
                        for part in fed_parts:
                            got, why = match(inst, part)
                            if got is None:
                                message = f"input '{artifact}' for participant {part[0]}: {why}"
                                bad_input(step, param, message)
                            else:
                                names.append(got)
                        inputs[param] = names
                        local_inputs.append(param)
                    elif where is None:
                        if not shareable_of.get(artifact, False):
                            bad_input(
                                step,
                                param,
                                f"this central step consumes '{artifact}', which stays on the "
                                "data nodes: its producing step does not list it under "
                                "'shareable'",
                                hint="declare it shareable if its bytes may leave the nodes "
                                "(aggregates, metrics, model updates), never raw rows",
                            )
                        inputs[param] = list(inst.values())
                    else:
                        got, why = match(inst, where)
                        if got is None:
                            bad_input(step, param, f"input '{artifact}' at {where[0]}: {why}")
                            continue
                        inputs[param] = got
                tid = task_id(_vname(name, label), where)
                outputs = {
                    out: instance(_vname(art, label), where) for out, art in proto.outputs.items()
                }
                fed_plan = None
                settings = fed_settings.get(name)
                if settings is not None:
                    fed_plan = _federated_plan(proto, settings, fed_parts, local_inputs)
                node = TaskNode(
                    id=tid,
                    step=name,
                    tool=proto.tool,
                    config=config_v,
                    inputs=inputs,
                    outputs=outputs,
                    deps=(),
                    retries=proto.retries,
                    retry_backoff=proto.retry_backoff,
                    timeout=proto.timeout,
                    cache=proto.cache and where is None and fed_plan is None,
                    allow_pickle=proto.allow_pickle,
                    node=where[0] if where else "local",
                    dataset=where[1] if where else None,
                    shareable=shareable,
                    federated=fed_plan,
                    variant=combo or None,
                )
                tasks[tid] = node
                for out, art in proto.outputs.items():
                    made_v.setdefault(art, {}).setdefault(label, {})[where] = outputs[out]
                    producers[outputs[out]] = tid
                    shareable_of[art] = where is None or out in shareable
    if diags:
        raise FlowError(diags)
    downstream: dict[str, list[str]] = {t: [] for t in tasks}
    for tid, node in tasks.items():
        seen: dict[str, None] = {}
        for art in node.input_names():
            if art in producers:  # registry models have no producer in the plan
                seen[producers[art]] = None
        node.deps = tuple(seen)
        for d in node.deps:
            downstream[d].append(tid)
    return TaskGraph(
        flow=model,
        tasks=tasks,
        producers=producers,
        downstream={k: tuple(v) for k, v in downstream.items()},
        config=config,
        file=source.file,
    )


REGISTRY_PREFIX = "registry:"


def _vname(base: str, label: str) -> str:
    """A step or artifact name within subvariant ``label`` (``train[lr=0.1]``)."""
    return f"{base}[{label}]" if label else base


def _pick(by_label: dict[str, dict[Where | None, str]], label: str) -> dict[Where | None, str]:
    """An artifact's instances for subvariant ``label``; unswept ones serve every label."""
    return by_label.get(label) or by_label.get("", {})


def _step_variants(
    step: Step,
    sweeps: dict[str, list[dict[str, Any]]],
    made_v: dict[str, dict[str, dict[Where | None, str]]],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
) -> list[tuple[str, dict[str, Any]]]:
    """The subvariants a step runs as: its own sweep, or those of the artifacts it reads."""
    inherited: set[frozenset[str]] = set()
    for artifact in step.inputs.values():
        labels = frozenset(k for k in made_v.get(artifact, {}) if k)
        if labels:
            inherited.add(labels)
    own = sweeps.get(step.name)
    if own is not None:
        if inherited:
            diags.append(
                source.diag(
                    "a swept step cannot consume the outputs of another swept step",
                    at(step, "sweep"),
                    step=step.name,
                    field="sweep",
                )
            )
        return [(_label(c), c) for c in own]
    if len(inherited) > 1:
        diags.append(
            source.diag(
                "this step consumes artifacts of two different sweeps; combine them in one "
                "step's sweep",
                at(step, "inputs"),
                step=step.name,
                field="inputs",
            )
        )
        return [("", {})]
    if inherited:
        return [(label, {}) for label in sorted(next(iter(inherited)))]
    return [("", {})]


def _label(combo: dict[str, Any]) -> str:
    """``learning_rate=0.1,epochs=5``: a subvariant's name, in the sweep's key order."""
    return ",".join(f"{k}={v}" for k, v in combo.items())


def _sweep_combos(
    spec: ToolSpec,
    step: Step,
    params: dict[str, Any],
    config: dict[str, Any],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
) -> list[dict[str, Any]]:
    """Every combination of a step's ``sweep:`` values, each checked against the config."""
    import itertools

    resolved, ref_diags = _interpolate(step.sweep, config, source, at(step, "sweep"), step)
    diags.extend(ref_diags)

    def bad(key: str, message: str) -> None:
        path = at(step, "sweep", key)
        diags.append(source.diag(message, path, step=step.name, field=f"sweep.{key}"))

    keys: list[str] = []
    values: list[list[Any]] = []
    for key, vals in resolved.items():
        if key not in spec.config_model.model_fields:
            allowed = ", ".join(spec.config_model.model_fields) or "none"
            bad(key, f"'{key}' is not a config field of tool '{spec.name}' (fields: {allowed})")
        elif not isinstance(vals, list) or not vals:
            bad(key, f"sweep.{key} must be a non-empty list of values, got {vals!r}")
        else:
            keys.append(key)
            values.append(vals)
    combos = [dict(zip(keys, vs, strict=True)) for vs in itertools.product(*values)]
    for combo in combos:
        try:
            spec.config_model.model_validate({**params, **combo})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else next(iter(combo), "")
            bad(key, f"sweep value {combo.get(key)!r} for '{key}': {err['msg']}")
            return []
    return combos


def _model_inputs(
    spec: ToolSpec,
    step: Step,
    config: dict[str, Any],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
    external: dict[str, tuple[str, str]],
) -> dict[str, str]:
    """A step's ``models:`` as input names, registering each reference in ``external``."""
    out: dict[str, str] = {}
    if not step.models:
        return out
    resolved, ref_diags = _interpolate(step.models, config, source, at(step, "models"), step)
    diags.extend(ref_diags)

    def bad(param: str, message: str) -> None:
        path = at(step, "models", param)
        diags.append(source.diag(message, path, step=step.name, field=f"models.{param}"))

    for param, ref in resolved.items():
        where = f"models.{param}"
        if param not in spec.inputs:
            accepted = ", ".join(spec.inputs) or "none"
            bad(param, f"tool '{spec.name}' has no input '{param}' (inputs: {accepted})")
            continue
        if param in step.inputs:
            bad(param, f"input '{param}' is given both under 'inputs' and 'models'")
            continue
        if not isinstance(ref, str) or not ref.strip():
            bad(param, "a model reference is NAME or NAME@VERSION")
            continue
        key = REGISTRY_PREFIX + ref.strip()
        out[param] = key
        line = source.line(at(step, "models", param))
        external[key] = (ref.strip(), f"{source.file}:{line}: step '{step.name}', {where}")
    return out


def _federated_plan(
    proto: TaskNode, settings: Federated, parts: list[Where], local_inputs: list[str]
) -> FederatedPlan:
    spec = proto.tool
    model_out = next(o.name for o in spec.outputs if o.is_model)
    model_type = next(o.annotation for o in spec.outputs if o.is_model)
    model_input = None
    for name, inp in spec.inputs.items():
        if name in local_inputs:
            continue
        if name == "global_model" or _same_type(inp.annotation, model_type):
            model_input = name
            break
    fields = proto.config.__class__.model_fields
    epochs_field = next((f for f in ("epochs", "local_epochs") if f in fields), None)
    return FederatedPlan(
        settings=settings,
        participants=parts,
        local_inputs=local_inputs,
        model_input=model_input,
        model_output=model_out,
        epochs_field=epochs_field,
    )


def _same_type(annotation: Any, model_type: Any) -> bool:
    import typing

    if annotation is model_type:
        return True
    return model_type in typing.get_args(annotation)


def _interpolate(
    value: Any, config: dict[str, Any], source: SourceMap, path: tuple[str | int, ...], step: Step
) -> tuple[Any, list[Diagnostic]]:
    diags: list[Diagnostic] = []

    def resolve(key: str, p: tuple[str | int, ...]) -> Any:
        cur: Any = config
        for part in key.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                known = ", ".join(sorted(config)) or "none"
                field = ".".join(str(x) for x in p[3:]) or "params"
                diags.append(
                    source.diag(
                        f"${{config.{key}}} is not defined (config has: {known})",
                        p,
                        step=step.name,
                        field=f"params.{field}",
                    )
                )
                return None
        return cur

    def walk(v: Any, p: tuple[str | int, ...]) -> Any:
        if isinstance(v, str):
            whole = _REF.fullmatch(v.strip())
            if whole:  # a whole-value reference keeps the config value's type
                return resolve(whole.group(1), p)
            return _REF.sub(lambda m: str(resolve(m.group(1), p)), v)
        if isinstance(v, dict):
            return {k: walk(x, (*p, k)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, (*p, i)) for i, x in enumerate(v)]
        return v

    return walk(value, path), diags


def _validate_federated(
    raw: Any,
    source: SourceMap,
    step: Step,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> Federated | None:
    try:
        return Federated.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = "federated." + ".".join(str(x) for x in loc) if loc else "federated"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(Federated.model_fields)
                msg = f"'{loc[-1]}' is not a federated setting (settings: {allowed})"
            elif err["type"] == "missing":
                msg = f"the federated setting '{loc[-1]}' is required"
            else:
                msg = f"{msg} (got {err.get('input')!r})"
            diags.append(source.diag(msg, (*path, *loc), step=step.name, field=field))
        return None


def _validate_config(
    spec: ToolSpec,
    params: dict[str, Any],
    source: SourceMap,
    step: Step,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> BaseModel | None:
    try:
        return spec.config_model.model_validate(params)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = "params." + ".".join(str(x) for x in loc) if loc else "params"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(spec.config_model.model_fields) or "none"
                msg = f"'{loc[-1]}' is not a config field of tool '{spec.name}' (fields: {allowed})"
            elif err["type"] == "missing":
                msg = f"required config field '{loc[-1]}' of tool '{spec.name}' is missing"
            else:
                msg = f"{msg} (got {err.get('input')!r})"
            diags.append(source.diag(msg, (*path, *loc), step=step.name, field=field))
        return None


def _check_inputs(
    spec: ToolSpec,
    step: Step,
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> None:
    if spec.seed_task:
        return
    for param in step.inputs:
        if param not in spec.inputs:
            accepted = ", ".join(spec.inputs) or "none"
            diags.append(
                source.diag(
                    f"tool '{spec.name}' has no input '{param}' (inputs: {accepted})",
                    (*path, param),
                    step=step.name,
                    field=f"inputs.{param}",
                )
            )
    for name, inp in spec.inputs.items():
        if inp.required and name not in step.inputs and name not in step.models:
            diags.append(
                source.diag(
                    f"tool '{spec.name}' needs input '{name}'; "
                    "map it to an artifact under 'inputs'",
                    path,
                    step=step.name,
                    field="inputs",
                )
            )


def _output_names(
    spec: ToolSpec,
    step: Step,
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> dict[str, str]:
    names = spec.output_names
    if step.outputs is None:
        if spec.seed_task:
            return {"result": f"{step.name}_result"}
        return {n: n for n in names}
    if isinstance(step.outputs, list):
        if len(step.outputs) > len(names):
            diags.append(
                source.diag(
                    f"step names {len(step.outputs)} outputs but tool '{spec.name}' declares "
                    f"{len(names)}: {names}",
                    path,
                    step=step.name,
                    field="outputs",
                )
            )
            return {}
        # A list whose names all match tool outputs binds by name; otherwise by position.
        if all(n in names for n in step.outputs):
            return {n: n for n in step.outputs}
        return dict(zip(names, step.outputs, strict=False))
    out: dict[str, str] = {}
    for tool_out, artifact in step.outputs.items():
        if tool_out not in names:
            diags.append(
                source.diag(
                    f"tool '{spec.name}' has no output '{tool_out}' (outputs: {', '.join(names)})",
                    (*path, tool_out),
                    step=step.name,
                    field=f"outputs.{tool_out}",
                )
            )
        else:
            out[tool_out] = artifact
    return out


def _check_type_rule(
    spec: ToolSpec,
    step: Step,
    outputs: dict[str, str],
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> None:
    models = [o.name for o in spec.outputs if o.is_model]
    problem = None
    t = spec.type
    if t is ToolType.DATABASE_ADAPTER and (
        (spec.inputs and any(i.required for i in spec.inputs.values())) or step.inputs
    ):
        problem = "takes inputs"
    elif (
        t
        in (
            ToolType.PREPROCESSING,
            ToolType.DATA_TRANSFORMATION,
            ToolType.SELF_LEARNED,
            ToolType.EVALUATION,
        )
        and models
    ):
        problem = f"produces a model ({', '.join(models)})"
    elif t is ToolType.ANALYSIS and not models:
        problem = "produces no model (declare an output whose type subclasses flowfed.Model)"
    elif t is ToolType.ANALYSIS and not any(o in outputs for o in models):
        problem = "does not keep its model output"
    if problem:
        diags.append(
            source.diag(
                f"tool '{spec.name}' is of type '{t}' but {problem}; "
                f"{_article(t)} {t} tool {TOOL_TYPE_RULES[t]}",
                path,
                step=step.name,
                field="tool",
            )
        )


def _compile_route(
    step: Step,
    index: dict[str, int],
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> Route | None:
    nxt = step.next
    if nxt is None:
        return None
    for key in ("success", "failure", "otherwise"):
        target = getattr(nxt, key)
        if target and target != END and target not in index:
            close = difflib.get_close_matches(target, list(index), n=1)
            diags.append(
                source.diag(
                    f"routes to unknown step '{target}'",
                    (*path, key),
                    step=step.name,
                    field=f"next.{key}",
                    hint=f"did you mean '{close[0]}'?"
                    if close
                    else "name a step of this flow or 'end'",
                )
            )
    expr = None
    if nxt.when is not None:
        try:
            expr = Expression.parse(nxt.when)
        except ExpressionError as exc:
            diags.append(source.diag(str(exc), (*path, "when"), step=step.name, field="next.when"))
    elif nxt.otherwise is not None:
        diags.append(
            source.diag(
                "'otherwise' needs a 'when' expression",
                (*path, "otherwise"),
                step=step.name,
                field="next.otherwise",
            )
        )
    return Route(nxt.success, nxt.failure, expr, nxt.otherwise)


def _toposort(names: list[str], deps: dict[str, tuple[str, ...]]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm in flow order; on a cycle, return one cycle path instead."""
    indeg = {n: len(deps.get(n, ())) for n in names}
    down: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for d in deps.get(n, ()):
            down.setdefault(d, []).append(n)
    ready = [n for n in names if indeg[n] == 0]
    ready.reverse()
    order: list[str] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for m in reversed(down.get(n, [])):
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) == len(names):
        return order, []
    # Walk back along dependencies from a node left over until one repeats.
    left = {n for n in names if n not in set(order)}
    start = next(n for n in names if n in left)
    path: list[str] = []
    pos: dict[str, int] = {}
    cur = start
    while cur not in pos:
        pos[cur] = len(path)
        path.append(cur)
        cur = next(d for d in deps[cur] if d in left)
    cycle = path[pos[cur] :]
    cycle.reverse()  # producer → consumer order reads naturally
    return order, [*cycle, cycle[0]]


def _check_reachability(
    model: Flow,
    deps: dict[str, tuple[str, ...]],
    routed: set[str],
    source: SourceMap,
    index: dict[str, int],
    diags: list[Diagnostic],
) -> None:
    """A step is reachable if it can ever run: an unrouted step whose producers can run,
    or a routed step that some reachable step routes to (and whose producers can run).

    A worklist, linear in steps + edges whatever order the steps are written in (a
    fixpoint over the step list took a pass per step on a chain written last step first:
    6.4 s for 4,000 steps).
    """
    waiting = {step.name: set(deps[step.name]) for step in model.steps}
    consumers: dict[str, list[str]] = {}
    for name, producers in waiting.items():
        for d in producers:
            consumers.setdefault(d, []).append(name)
    entered = {s.name: s.name not in routed or s.name == model.start for s in model.steps}
    by_name = {s.name: s for s in model.steps}
    todo = [name for name, producers in waiting.items() if not producers and entered[name]]
    reachable: set[str] = set(todo)
    while todo:
        done = by_name[todo.pop()]
        woken = list(consumers.get(done.name, ()))
        for c in woken:
            waiting[c].discard(done.name)
        if done.next:
            for t in done.next.targets():
                if t in entered and not entered[t]:
                    entered[t] = True
                    woken.append(t)
        for c in woken:
            if c not in reachable and not waiting[c] and entered[c]:
                reachable.add(c)
                todo.append(c)
    for step in model.steps:
        if step.name not in reachable:
            why = (
                "no reachable step routes to it"
                if step.name in routed
                else "a step it consumes from can never run"
            )
            diags.append(
                source.diag(
                    f"step is unreachable: {why}", ("steps", index[step.name]), step=step.name
                )
            )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
