"""Placement: expand steps placed on data nodes into one task per dataset or node.

A flow whose steps all run centrally plans one task per step, named after the step. A
step with ``on: each-dataset`` becomes one task per entry of ``config.datasets``
(``node:dataset``), placed on that node; ``on: {nodes: [...]}`` one task per node. Each
placed task's outputs are artifact *instances* named ``artifact[node:dataset]``:

* a placed consumer takes the instance produced at its own placement (same node and
  dataset, else the one instance on its node);
* a central consumer takes the list of every instance, in dataset order (a fan-in), and
  only of outputs the producing step declares ``shareable``: everything else stays on
  its node;
* a placed consumer of a central artifact receives that one artifact (a broadcast).

A ``kind: federated`` step is one central task whose per-dataset inputs are fan-in lists
aligned with its participants; :mod:`flowfed.plan.federated` expands its rounds.

Example:
    >>> task_id("preprocess", ("hospital-a", "breast"))
    'preprocess[hospital-a:breast]'
    >>> task_id("package", None)
    'package'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.loader import SourceMap
from flowfed.spec.models import Federated, Flow, OnNodes, Step

#: ``(node, dataset)``; dataset is ``None`` for ``on: {nodes: [...]}``.
Where = tuple[str, str | None]


def task_id(step: str, where: Where | None) -> str:
    """The plan id of ``step``'s task at ``where`` (the step name for a central task)."""
    if where is None:
        return step
    node, dataset = where
    return f"{step}[{node}:{dataset}]" if dataset else f"{step}[{node}]"


def instance(artifact: str, where: Where | None) -> str:
    """The name of ``artifact`` as produced at ``where`` (the plain name when central)."""
    return task_id(artifact, where)


@dataclass
class FederatedPlan:
    """What the engine needs to run a federated step's rounds (see plan.federated)."""

    settings: Federated
    participants: list[Where]
    #: Trainer input params fed per participant (the task's fan-in lists, aligned).
    local_inputs: list[str]
    #: The trainer input that receives the round's global model (``None``: none).
    model_input: str | None
    #: The trainer output holding its trained model.
    model_output: str
    #: The trainer config field that ``local_epochs`` sets, if the trainer has one.
    epochs_field: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_datasets(
    config: dict[str, Any], source: SourceMap, diags: list[Diagnostic]
) -> list[Where]:
    """``config.datasets`` as ``(node, dataset)`` pairs, with an error per bad entry."""
    raw = config.get("datasets")
    if raw is None:
        diags.append(
            Diagnostic(
                "a step placed 'on: each-dataset' needs 'config.datasets', a list of "
                "node:dataset entries (e.g. hospital-a:breast)",
                source.file,
                source.line(("config",)),
                field="config.datasets",
            )
        )
        return []
    if isinstance(raw, str):
        raw = [s.strip() for s in raw.split(",") if s.strip()]
    if not isinstance(raw, list) or not raw:
        diags.append(
            Diagnostic(
                f"config.datasets must be a non-empty list of node:dataset entries, got {raw!r}",
                source.file,
                source.line(("config", "datasets")),
                field="config.datasets",
            )
        )
        return []
    out: list[Where] = []
    for i, entry in enumerate(raw):
        node, sep, ds = str(entry).partition(":")
        if not sep or not node.strip() or not ds.strip():
            diags.append(
                Diagnostic(
                    f"config.datasets[{i}] is {entry!r}; "
                    "write node:dataset (e.g. hospital-a:breast)",
                    source.file,
                    source.line(("config", "datasets", i)) or source.line(("config",)),
                    field=f"config.datasets[{i}]",
                )
            )
            continue
        where = (node.strip(), ds.strip())
        if where in out:
            diags.append(
                Diagnostic(
                    f"config.datasets lists {entry!r} twice",
                    source.file,
                    source.line(("config", "datasets", i)),
                    field=f"config.datasets[{i}]",
                )
            )
            continue
        out.append(where)
    return out


def placements(step: Step, datasets: list[Where] | None) -> list[Where | None]:
    """Where ``step``'s tasks run: ``[None]`` for one central task."""
    if step.kind == "federated":
        return [None]
    if isinstance(step.on, OnNodes):
        return [(n, None) for n in step.on.nodes]
    if step.on == "each-dataset":
        return list(datasets or [])
    return [None]


def participants(step: Step, datasets: list[Where] | None) -> list[Where]:
    """The nodes (and datasets) a federated step trains on."""
    if isinstance(step.on, OnNodes):
        return [(n, None) for n in step.on.nodes]
    return list(datasets or [])


def needs_datasets(flow: Flow) -> bool:
    """Whether some step is placed per dataset (so ``config.datasets`` is required)."""
    return any(
        s.on == "each-dataset" or (s.kind == "federated" and not isinstance(s.on, OnNodes))
        for s in flow.steps
    )


def is_placed(flow: Flow) -> bool:
    """Whether the flow has any step that does not run as one central task."""
    return any(s.kind == "federated" or s.on != "central" for s in flow.steps)


def match(instances: dict[Where | None, str], where: Where) -> tuple[str | None, str | None]:
    """The instance a task at ``where`` consumes: ``(name, None)`` or ``(None, why)``."""
    if where in instances:
        return instances[where], None
    same_node = [name for w, name in instances.items() if w is not None and w[0] == where[0]]
    if len(same_node) == 1:
        return same_node[0], None
    if not same_node:
        return None, f"no task on node '{where[0]}' produces it"
    return None, f"node '{where[0]}' has {len(same_node)} instances of it and none for this dataset"
