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

This module is the compiler's driver: :func:`plan` flattens composite steps, then walks
the flow's steps once, asking :mod:`~flowfed.plan.params` (settings),
:mod:`~flowfed.plan.checks` (each step against its tool), :mod:`~flowfed.plan.external`
(catalog and registry inputs) and :mod:`~flowfed.plan.order` (order, routes,
reachability), and hands placed and swept flows to :mod:`~flowfed.plan.expand`. The
types it returns live in :mod:`flowfed.plan.taskgraph` and are re-exported here, where
callers have always imported them.
"""

from __future__ import annotations

import difflib
from typing import Any

from flowfed.plan.checks import (
    check_edge_types,
    check_inputs,
    check_placed_steps,
    check_type_rule,
    output_names,
)
from flowfed.plan.expand import expand, sweep_combos
from flowfed.plan.external import CATALOG_REF, REGISTRY_PREFIX, catalog_inputs, model_inputs
from flowfed.plan.order import check_reachability, compile_route, toposort
from flowfed.plan.params import interpolate, validate_config, validate_federated
from flowfed.plan.placement import Where, is_placed, needs_datasets, parse_datasets
from flowfed.plan.taskgraph import Route, TaskGraph, TaskNode
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import LoadedFlow, SourceMap
from flowfed.spec.models import Federated, Flow, Step
from flowfed.tools.core import Registry, ToolSpec

__all__ = [
    "CATALOG_REF",
    "REGISTRY_PREFIX",
    "Route",
    "TaskGraph",
    "TaskNode",
    "catalog_inputs",
    "plan",
]


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
        resolved, ref_diags = interpolate(step.params, config, source, at(step, "params"), step)
        diags.extend(ref_diags)
        if step.federated is not None:
            fed_raw, fed_diags = interpolate(
                step.federated, config, source, at(step, "federated"), step
            )
            diags.extend(fed_diags)
            fed_settings[step.name] = validate_federated(
                fed_raw, source, step, at(step, "federated"), diags
            )
        cfg = validate_config(spec, resolved, source, step, at(step, "params"), diags)
        fed_v = fed_settings.get(step.name)
        # A federated step's validation input goes to its evaluation tool, not the trainer.
        skip = {fed_v.validation} if fed_v is not None and fed_v.validation else set()
        check_inputs(spec, step, source, at(step, "inputs"), diags, skip)
        outputs = output_names(spec, step, source, at(step, "outputs"), diags)
        check_type_rule(spec, step, outputs, source, at(step, "tool"), diags)
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
        registry_inputs = model_inputs(spec, step, config, source, at, diags, external)
        if step.sweep and cfg is not None:
            sweeps[step.name] = sweep_combos(spec, step, resolved, config, source, at, diags)
        if cfg is None:
            continue
        nodes[step.name] = TaskNode(
            id=step.name,
            step=step.name,
            tool=spec,
            config=cfg,
            inputs={**step.inputs, **registry_inputs},
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

    check_edge_types(model, specs, producers, made_as, source, at, diags)

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

    order, cycle = toposort([s.name for s in model.steps], deps)
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
        route = compile_route(step, steps_index, source, at(step, "next"), diags)
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
        check_reachability(model, deps, routed, source, steps_index, diags)

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
        check_placed_steps(model, nodes, fed_settings, routed, datasets, source, at, diags, warns)

    if diags:
        raise FlowError(diags)
    if (placed or sweeps) and not cycle:
        graph = expand(model, nodes, fed_settings, sweeps, order, config, datasets, source, at)
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
