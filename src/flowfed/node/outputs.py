"""A node's side of a finished task: materialize its outputs, keep them, share some.

The node agent and the simulated nodes of ``--simulate`` end a task the same way: every
output the step keeps is materialized (content hash, kind, metadata), kept in the node's
own store, and described to the engine; only outputs the step declares shareable carry
their bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowfed.artifacts import Materialized, NotMaterializable, materialize
from flowfed.runtime.remote import RemoteOutput, RemoteTask
from flowfed.tools.core import ToolSpec


class OutputProblem(ValueError):
    """The tool's result cannot be turned into the task's outputs (an ``OutputError``)."""


def task_outputs(
    spec: ToolSpec, value: Any, task: RemoteTask, keep: Callable[[Materialized, Any], object]
) -> dict[str, RemoteOutput]:
    """The outputs of ``task`` from its tool's return ``value``; ``keep`` stores each one.

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
        keep(mat, values[name])
        outputs[name] = RemoteOutput(
            hash=mat.hash,
            size=mat.size,
            kind=mat.kind,
            type_name=mat.type_name,
            meta=dict(mat.meta),
            pickled=mat.pickled,
            data=mat.data if name in task.shareable else None,
        )
    return outputs
