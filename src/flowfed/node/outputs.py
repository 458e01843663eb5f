"""A node's side of a task: what it runs with, and its outputs once it finished.

The node agent and the simulated nodes of ``--simulate`` start and end a task the same
way. They find the tool and validate its config (:func:`task_tool`), find the dataset it
works on (:func:`task_dataset`) and give the tool its context (:func:`task_context`).
At the end every output the step keeps is materialized (content hash, kind, metadata),
kept in the node's own store, and described to the engine; only outputs the step
declares shareable carry their bytes (:func:`task_outputs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from flowfed.artifacts import Materialized, NotMaterializable, materialize
from flowfed.runtime.remote import RemoteOutput, RemoteTask
from flowfed.tools.core import Context, EventSink, ToolSpec, get_registry


class TaskProblem(ValueError):
    """A task cannot start on this node; ``etype`` says why (shown to the user)."""

    def __init__(self, message: str, etype: str) -> None:
        super().__init__(message)
        self.etype = etype


def task_tool(task: RemoteTask, node: str, hint: str = "") -> tuple[ToolSpec, BaseModel]:
    """The tool ``task`` names and its validated config.

    Raises :class:`TaskProblem` (``UnknownTool``, ``ConfigError``); ``hint`` ends the
    message for a tool the node does not have.
    """
    spec = get_registry().find(task.tool)
    if spec is None:
        raise TaskProblem(f"node '{node}' has no tool '{task.tool}'{hint}", "UnknownTool")
    try:
        return spec, spec.config_model.model_validate(task.config)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise TaskProblem(
            f"invalid config for tool '{task.tool}': {where}: {err['msg']}", "ConfigError"
        ) from None


def task_dataset(
    task: RemoteTask, node: str, datasets: Mapping[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The node dataset ``task`` works on (None for none); :class:`TaskProblem` if the node
    has no dataset of that name."""
    if task.dataset is None:
        return None
    dataset = datasets.get(task.dataset)
    if dataset is None:
        raise TaskProblem(
            f"node '{node}' has no dataset '{task.dataset}' "
            f"(it has: {', '.join(sorted(datasets)) or 'none'})",
            "UnknownDataset",
        )
    return dataset


def task_context(
    task: RemoteTask, sink: EventSink, node: str, dataset: dict[str, Any] | None
) -> Context:
    """The context the tool of ``task`` sees on ``node``."""
    return Context(
        sink,
        run_id=task.run_id,
        task_id=task.task_id,
        step=task.step,
        node=node,
        attempt=task.attempt,
        dataset=dict(dataset) if dataset else None,
        round=task.round,
    )


class OutputProblem(ValueError):
    """The tool's result cannot be turned into the task's outputs (an ``OutputError``)."""


def task_outputs(
    spec: ToolSpec,
    value: Any,
    task: RemoteTask,
    keep: Callable[[Materialized, Any], object],
    release: Callable[[str, Materialized, Any], Any] | None = None,
    *,
    keep_shareable: bool = True,
) -> dict[str, RemoteOutput]:
    """The outputs of ``task`` from its tool's return ``value``; ``keep`` stores each one.

    Without ``release`` every output the step lists as shareable carries its bytes. With
    it (a node agent's policy), ``release(output, materialized, value)`` decides: it
    returns an object with ``released``, ``data`` and ``meta`` (a
    :class:`flowfed.node.egress.Release`), and only released bytes travel; an output
    that is not released carries only hash, size, kind and its safe metadata.

    ``keep_shareable=False`` skips ``keep`` for the shareable outputs (a simulated node,
    whose shareable outputs always travel and are read from their central copy).

    Raises :class:`OutputProblem` naming the output at fault.
    """
    try:
        values = spec.split_outputs(value)
    except ValueError as exc:
        raise OutputProblem(f"the tool sent garbage: {exc}") from None
    outputs: dict[str, RemoteOutput] = {}
    for name in task.outputs:
        if name not in values:
            raise OutputProblem(f"the tool has no output '{name}'")
        try:
            mat = materialize(values[name], allow_pickle=task.allow_pickle)
        except NotMaterializable as exc:
            raise OutputProblem(f"the tool sent garbage for output '{name}': {exc}") from None
        if keep_shareable or name not in task.shareable:
            keep(mat, values[name])
        data = mat.data if name in task.shareable else None
        meta = dict(mat.meta)
        hash, size = mat.hash, mat.size
        if release is not None:
            from flowfed.node.egress import safe_meta

            meta = safe_meta(meta)
            data = None
            if name in task.shareable:
                decision = release(name, mat, values[name])
                if decision.released:
                    data = decision.data
                    meta.update(decision.meta)
                    if data is not mat.data and data is not None:
                        # Cells were suppressed: what leaves is another object, named by
                        # its own hash (the node keeps the original under the first).
                        hash, size = hashlib.sha256(data).hexdigest(), len(data)
        outputs[name] = RemoteOutput(
            hash=hash,
            size=size,
            kind=mat.kind,
            type_name=mat.type_name,
            meta=meta,
            pickled=mat.pickled,
            data=data,
        )
    return outputs
