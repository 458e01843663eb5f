"""Evaluation during federated training, planned (pure: no I/O, no threads).

A federated step with ``validation`` (a per-dataset step input) evaluates the round's
global model on a ``fraction_evaluate`` of its participants after every
``evaluate_every``-th round (and after the last); with ``evaluate_fn`` a central tool
evaluates it too. This module says *when* a round evaluates, *who* evaluates, builds
the node and central evaluation tasks, and checks the settings at build time. The
engine's :mod:`flowfed.engine.fl_eval` runs them.

Example:
    >>> from types import SimpleNamespace as S
    >>> s = S(rounds=10, evaluate_every=4, validation="test", evaluate_fn=None)
    >>> [r for r in range(1, 11) if evaluates(s, r)]
    [4, 8, 10]
    >>> eval_count(S(fraction_evaluate=0.5), 5)
    3
"""

from __future__ import annotations

import math
from typing import Any

from flowfed.plan.graph import TaskNode
from flowfed.plan.placement import Where

#: The metric names federated evaluation stores (per node on each evaluation task,
#: aggregated on the step's task), with the round as their step.
VAL_METRICS = ("val_loss", "val_accuracy")


def evaluates(settings: Any, r: int) -> bool:
    """Whether round ``r`` evaluates: every ``evaluate_every``-th round and the last."""
    if settings.validation is None and settings.evaluate_fn is None:
        return False
    return r % settings.evaluate_every == 0 or r == settings.rounds


def eval_count(settings: Any, participants: int) -> int:
    """How many participants evaluate: ``ceil(fraction_evaluate · n)``, at least one."""
    return max(1, min(participants, math.ceil(settings.fraction_evaluate * participants)))


def eval_task(step_task: TaskNode, tool: Any, where: Where, r: int, *, secure: bool) -> TaskNode:
    """Round ``r``'s evaluation task on ``where``: the global model on its validation rows.

    Its ``evaluation`` output ({rows, val_loss, val_accuracy}) is shareable, as the
    node's policy decides, except under secure aggregation: there it stays on the node
    and only a masked form of it leaves (:func:`eval_mask_task`).
    """
    fed = step_task.federated
    assert fed is not None
    node, dataset = where
    who = f"{node}:{dataset}" if dataset else node
    art = step_task.outputs[fed.model_output]
    return TaskNode(
        id=f"{step_task.id}/round {r}/evaluate/{who}",
        step=step_task.step,
        tool=tool,
        config=tool.config_model.model_validate({}),
        inputs={},
        outputs={o: f"{art}.{o}[{who}]" for o in tool.output_names},
        deps=(),
        timeout=step_task.timeout,
        cache=False,
        node=node,
        round=r,
        dataset=dataset,
        shareable=frozenset() if secure else frozenset(tool.output_names),
        variant=step_task.variant,
    )


def central_eval_task(step_task: TaskNode, tool: Any, r: int) -> TaskNode:
    """Round ``r``'s central evaluation (``evaluate_fn``) of the global model."""
    fed = step_task.federated
    assert fed is not None
    art = step_task.outputs[fed.model_output]
    fields = tool.config_model.model_fields
    config = {"round": r} if "round" in fields else {}
    return TaskNode(
        id=f"{step_task.id}/round {r}/central evaluation",
        step=step_task.step,
        tool=tool,
        config=tool.config_model.model_validate(config),
        inputs={},
        outputs={o: f"{art}.central_evaluation" for o in tool.output_names},
        deps=(),
        cache=False,
        round=r,
        variant=step_task.variant,
    )
