"""Build-time checks of each step against its tool: inputs, outputs, types, placement.

The planner compiles a flow step by step; these are the questions it asks of each step
and each artifact edge, apart from building the tasks: does the tool have the inputs the
step maps, which artifacts do its outputs become, does the tool keep the rules of its
type (an analysis tool produces a model...), does each edge carry the type the consumer
takes, and do placed and federated steps keep their own rules. Each check appends
located diagnostics to the caller's list rather than raising, so a flow's problems are
reported together.

Example:
    >>> from flowfed.tools import build_spec
    >>> def load() -> list: return [1]
    >>> spec = build_spec(load, name="load", version="1", type="database-adapter")
    >>> diags = []
    >>> output_names(spec, Step(name="a", tool="load", outputs=["rows"]), SourceMap(),
    ...     ("steps", 0, "outputs"), diags), diags
    ({'output': 'rows'}, [])
"""

from __future__ import annotations

from typing import Any

from flowfed.plan.placement import Where, participants
from flowfed.plan.taskgraph import TaskNode
from flowfed.plan.typecheck import describe, fits, fits_list_of
from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.loader import SourceMap
from flowfed.spec.models import Federated, Flow, Step
from flowfed.tools.core import TOOL_TYPE_RULES, ToolSpec, ToolType


def check_inputs(
    spec: ToolSpec,
    step: Step,
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """The step maps only inputs the tool has, and every input the tool requires.

    ``skip`` names step inputs meant for another tool (a federated step's validation
    input goes to its evaluation tool). Seed tasks take any inputs.
    """
    if spec.seed_task:
        return
    for param in step.inputs:
        if param not in spec.inputs and param not in skip:
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


def output_names(
    spec: ToolSpec,
    step: Step,
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> dict[str, str]:
    """The step's outputs as tool output → artifact name; problems go to ``diags``.

    Without ``outputs:`` every tool output keeps its own name. A list binds by name when
    all its names are tool outputs, otherwise by position; a mapping binds explicitly.
    """
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


def check_type_rule(
    spec: ToolSpec,
    step: Step,
    outputs: dict[str, str],
    source: SourceMap,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> None:
    """The tool keeps the rule of its type (``TOOL_TYPE_RULES``), e.g. an analysis tool
    produces a model and the step keeps it; a breach is a diagnostic at ``path``."""
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


def _article(word: str) -> str:
    """``a`` or ``an`` before ``word``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_edge_types(
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
            ok = fits_list_of(produced, expected) if fan_in else fits(produced, expected)
            if ok:
                continue
            # Described only for the message: most edges fit, and a description costs
            # more than the check.
            what = describe(produced)
            if fan_in:
                what = f"a list of {what} (one per placement)"
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


def check_placed_steps(
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

    for p in check(fed, spec, count, step_inputs=dict(step.inputs)):
        raw = step.federated or {}
        path = at(step, "federated", p.field if p.field in raw else "strategy")
        d = source.diag(p.message, path, step=step.name, field=f"federated.{p.field}", hint=p.hint)
        (diags if p.level == "error" else warns).append(d)
