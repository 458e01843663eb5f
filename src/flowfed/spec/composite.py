"""Steps that hold several tools, flattened into one planned step per tool.

Seed 000's "Data Preprocessing" runs image normalization and then feature extraction as
one user-facing step. A flow writes it as a step with ``tools:``; :func:`flatten` turns
each of those tools into a step of its own, named ``Step/tool``, so the planner checks it
like any step (its tool's type rules, config, inputs, artifact edges) and reports a
problem at the tool's own line. The planner then files the tasks back under the step
they came from (:class:`Part`).

Example:
    >>> from flowfed.spec.models import Flow, Step, StepTool
    >>> flow = Flow(name="f", steps=[Step(name="Prep", tools=[
    ...     StepTool(tool="load", outputs=["raw"]),
    ...     StepTool(tool="clean", inputs={"table": "raw"}, outputs=["clean"])])])
    >>> flat = flatten(flow)
    >>> [s.name for s in flat.flow.steps], flat.parts["Prep/clean"].step
    (['Prep/load', 'Prep/clean'], 'Prep')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.loader import PathKey, SourceMap
from flowfed.spec.models import END, Flow, Next, Step, StepTool

#: Between a step's name and its tool's in the planned step's name (``Prep/clean``). Step
#: names cannot hold it, so a planned name never collides with a written one.
SEP = "/"

#: Keys a tool of ``tools:`` takes from its step when it leaves them out.
_INHERITED = ("on", "retries", "retry_backoff", "timeout", "cache", "allow_pickle")


@dataclass(frozen=True, slots=True)
class Part:
    """Where a planned step came from: tool ``name`` of the written step ``step``."""

    step: str
    name: str


@dataclass
class Flattened:
    """A flow with one step per tool, where its steps came from, and routing problems."""

    flow: Flow
    source: SourceMap
    #: Planned step name (``Prep/clean``) → its :class:`Part`; empty for a flat flow.
    parts: dict[str, Part] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def has_tools(flow: Flow) -> bool:
    """Whether any step of ``flow`` holds several tools (``tools:``)."""
    return any(s.tools is not None for s in flow.steps)


def part_name(step: str, tool: str) -> str:
    """The planned step name of tool ``tool`` of step ``step`` (``Prep/clean``)."""
    return f"{step}{SEP}{tool}"


def part_names(step: dict[str, Any] | Step) -> list[str]:
    """The planned step names of a written step's tools (a flow's stored ``spec`` or the
    model); empty for a step of one tool."""
    if isinstance(step, Step):
        return [part_name(step.name, t.short_name) for t in step.tools or []]
    out: list[str] = []
    for t in step.get("tools") or []:
        if isinstance(t, dict):
            short = t.get("name") or str(t.get("tool", "")).split("@", 1)[0].rsplit(".", 1)[-1]
            out.append(part_name(str(step.get("name")), short))
    return out


def tools_waiting(parts: list[str], plan_keys: list[str]) -> int:
    """How many of a step's tools (:func:`part_names`) have no task among ``plan_keys``
    yet: while one has none, the step is not done, whatever its other tasks' states.

    Example:
        >>> tools_waiting(["Prep/load", "Prep/clean"], ["Prep/load[hospital-a:breast]"])
        1
    """
    return sum(1 for p in parts if not any(_is_of(k, p) for k in plan_keys))


def _is_of(plan_key: str, part: str) -> bool:
    return plan_key == part or plan_key.startswith((part + "[", part + SEP))


def flatten(flow: Flow, source: SourceMap | None = None) -> Flattened:
    """One step per tool; a flow without ``tools:`` comes back as it is."""
    source = source or SourceMap()
    if not has_tools(flow):
        return Flattened(flow, source)
    diags: list[Diagnostic] = []
    first: dict[str, str] = {}  # a step that holds tools → the planned name of its first
    for step in flow.steps:
        if step.tools:
            first[step.name] = part_name(step.name, step.tools[0].short_name)
    steps: list[Step] = []
    parts: dict[str, Part] = {}
    index: dict[int, tuple[int, int | None]] = {}  # flat index → (written step, tool)
    for i, step in enumerate(flow.steps):
        if step.tools is None:
            index[len(steps)] = (i, None)
            steps.append(_reroute(step, first, source, ("steps", i, "next"), diags))
            continue
        for j, t in enumerate(step.tools):
            name = part_name(step.name, t.short_name)
            parts[name] = Part(step.name, t.short_name)
            index[len(steps)] = (i, j)
            steps.append(_planned_step(step, t, name))
    flat = flow.model_copy(update={"steps": steps})
    return Flattened(flat, _remap(source, index), parts, diags)


def _planned_step(step: Step, t: StepTool, name: str) -> Step:
    data: dict[str, Any] = {
        k: getattr(t, k)
        for k in ("tool", "label", "params", "inputs", "outputs", "shareable", "sweep", "models")
    }
    data["description"] = t.description or step.description
    data["type"] = step.type
    for k in _INHERITED:
        own = getattr(t, k)
        data[k] = getattr(step, k) if own is None else own
    # Built without validation: the name holds SEP, which a written step name may not;
    # every value in it was validated as part of the written step.
    return Step.model_construct(name=name, **data)


def _reroute(
    step: Step, first: dict[str, str], source: SourceMap, path: PathKey, diags: list[Diagnostic]
) -> Step:
    """A step whose ``next`` names a step that holds several tools: an error (which one of
    its tools would start?), reported here; the route is pointed at its first tool so the
    planner does not report the name as unknown as well."""
    nxt = step.next
    if nxt is None or not any(t in first for t in nxt.targets()):
        return step
    update: dict[str, Any] = {}
    for key in ("success", "failure", "otherwise"):
        target = getattr(nxt, key)
        if target in first and target != END:
            diags.append(
                source.diag(
                    f"'{target}' holds several tools: 'next' can route only to a step of one tool",
                    (*path, key),
                    step=step.name,
                    field=f"next.{key}",
                    hint="route to a step of its own placed before it, or make the tools "
                    "separate steps",
                )
            )
            update[key] = first[target]
    return step.model_copy(update={"next": Next(**{**nxt.model_dump(), **update})})


def _remap(source: SourceMap, index: dict[int, tuple[int, int | None]]) -> SourceMap:
    """Line numbers by the flat flow's paths: a tool's own keys at their lines, the keys
    it takes from its step at the step's."""
    by_step: dict[int, list[int]] = {}
    for k, (i, _) in index.items():
        by_step.setdefault(i, []).append(k)
    lines: dict[PathKey, int] = {}
    tool_lines: dict[PathKey, int] = {}
    for path, line in source.lines.items():
        if len(path) < 2 or path[0] != "steps" or not isinstance(path[1], int):
            lines[path] = line
            continue
        i, rest = path[1], path[2:]
        for k in by_step.get(i, ()):
            j = index[k][1]
            if j is None:
                lines[("steps", k, *rest)] = line
            elif rest[:2] == ("tools", j):
                tool_lines[("steps", k, *rest[2:])] = line
            elif rest[:1] != ("tools",):
                lines[("steps", k, *rest)] = line
    lines.update(tool_lines)  # a tool's own line wins over its step's
    return SourceMap(source.file, lines)
