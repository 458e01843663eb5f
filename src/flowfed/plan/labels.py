"""Tasks in words: "Local model training (hospital-a)", not ``flowfed.logistic_regression``.

Seed 000's monitor names each task by what it does and where: "Image normalization
(Node A)", "Model aggregation (Central)". A task's label is its step's (or its tool's,
under ``tools:``) ``label:``, else the first phrase of its tool's description, followed
by where it runs. The rounds of a federated step, which the engine adds as they come,
read "Local model training (hospital-a)" and "Model aggregation (central)".

Example:
    >>> from flowfed.tools import build_spec
    >>> def zscore(table: list) -> list:
    ...     '''Z-score the feature columns: ``(x - mean) / std``.'''
    ...     return table
    >>> spec = build_spec(zscore, name="zscore", version="1", type="preprocessing")
    >>> describe_tool(spec)
    'Z-score the feature columns'
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowfed.plan.graph import TaskGraph, TaskNode
    from flowfed.spec.composite import Part
    from flowfed.spec.models import Flow
    from flowfed.tools.core import ToolSpec

#: The longest label drawn from a description; longer phrases are cut at a word.
MAX_LABEL = 60

_PHRASE_END = re.compile(r"(?::\s|;\s|\.\s|\.$|\n)")
_ROUND_TAIL = re.compile(r"/round \d+/(.+)$")


def describe_tool(spec: ToolSpec) -> str:
    """A tool in a few words: the first phrase of its description, else its name."""
    text = (spec.description or "").strip().replace("``", "").replace("`", "")
    phrase = _PHRASE_END.split(text, maxsplit=1)[0].strip() if text else ""
    if not phrase:
        short = spec.name.rsplit(".", 1)[-1].replace("_", " ").strip()
        return short[:1].upper() + short[1:] if short else spec.name
    if len(phrase) > MAX_LABEL:
        phrase = phrase[: MAX_LABEL - 1].rsplit(" ", 1)[0].rstrip(",;") + "…"
    return phrase


def task_label(node: TaskNode) -> str:
    """``node`` in words: its planned label, or for a round task of a federated step
    "Local model training (hospital-a)" / "Model aggregation (central)"."""
    if node.label:
        return node.label
    if node.round is not None:
        tail = _ROUND_TAIL.search(node.id)
        helper = tail is not None and "/" in tail.group(1)  # a secure round's keys, masks...
        if node.placed and not helper and any(o.is_model for o in node.tool.outputs):
            return f"Local model training ({node.node})"
        if not node.placed and tail is not None and tail.group(1) == "aggregate":
            return "Model aggregation (central)"
    return f"{describe_tool(node.tool)} ({_where(node, False)})"


def _where(node: TaskNode, with_dataset: bool) -> str:
    if not node.placed:
        return "central"
    return f"{node.node}:{node.dataset}" if with_dataset and node.dataset else node.node


def label_tasks(graph: TaskGraph, written: Flow, parts: dict[str, Part]) -> TaskGraph:
    """Label every planned task, and file the tasks of a step's ``tools:`` under that step.

    ``graph`` was planned from the flattened flow (one step per tool); it comes back with
    ``flow`` set to the flow as written, so its steps are the ones the user wrote.
    """
    flat = {s.name: s for s in graph.flow.steps}
    # A node holding two datasets that one step reads gets both named in its labels.
    datasets: dict[tuple[str, str], set[str | None]] = {}
    for node in graph.tasks.values():
        if node.placed:
            datasets.setdefault((node.step, node.node), set()).add(node.dataset)
    described: dict[int, str] = {}
    for node in graph.tasks.values():
        step = flat.get(node.step)
        base = step.label if step is not None else None
        if node.federated is not None:
            fed = node.federated
            node.label = (
                f"{base or 'Federated training'} on {len(fed.participants)} nodes "
                f"({fed.settings.strategy}, {fed.settings.rounds} rounds)"
            )
        else:
            if base is None:
                key = id(node.tool)
                if key not in described:
                    described[key] = describe_tool(node.tool)
                base = described[key]
            many = len(datasets.get((node.step, node.node), ())) > 1
            node.label = f"{base} ({_where(node, many)})"
        part = parts.get(node.step)
        if part is not None:
            node.step, node.part = part.step, part.name
    graph.flow = written
    return graph
