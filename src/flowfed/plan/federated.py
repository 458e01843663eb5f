"""The round-by-round expansion of a federated step (pure: no I/O, no threads).

The engine's :class:`~flowfed.engine.federated.FederatedDriver` asks, round by round,
for the tasks to run: one training task per sampled participant, placed on its node,
and one aggregation task on the central engine. Rounds are planned as they come
because what round ``r+1`` runs depends on round ``r``: who answered in time, whether
early stopping fired.

Example:
    >>> import numpy as np
    >>> sample([("a", None), ("b", None), ("c", None)], 2, np.random.default_rng(0))
    [('a', None), ('c', None)]
    >>> round_metric([({"loss": 1.0}, 1), ({"loss": 4.0}, 3)])
    {'loss': 3.25}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowfed.plan.graph import TaskNode
from flowfed.plan.placement import Where
from flowfed.tools.core import ToolSpec


def round_id(step: str, r: int, who: str) -> str:
    """The plan key of a round task: ``train/round 3/hospital-a``."""
    return f"{step}/round {r}/{who}"


def sample(participants: list[Where], k: int, rng: np.random.Generator) -> list[Where]:
    """``k`` participants for a round, in their configured order (all when ``k >= n``)."""
    if k >= len(participants):
        return list(participants)
    picked = sorted(rng.choice(len(participants), size=k, replace=False).tolist())
    return [participants[i] for i in picked]


def trainer_config(step_task: TaskNode, overrides: dict[str, Any] | None = None) -> Any:
    """The trainer config of a round: the step's, with ``local_epochs``, a proximal
    strategy's ``mu`` and the strategy's ``configure_fit`` changes for this node."""
    fed = step_task.federated
    assert fed is not None
    config = step_task.config
    update: dict[str, Any] = {}
    if fed.settings.local_epochs is not None and fed.epochs_field is not None:
        update[fed.epochs_field] = fed.settings.local_epochs
    mu = proximal_mu(fed.settings)
    if mu is not None:
        update["mu"] = mu
    update.update(overrides or {})
    if not update:
        return config
    # validated: a configure_fit hook's value goes through the trainer's own field types
    return config.__class__.model_validate({**config.model_dump(), **update})


def proximal_mu(settings: Any) -> float | None:
    """The ``mu`` a proximal strategy (FedProx) gives every trainer, else None."""
    if settings.strategy != "fedprox":
        return None
    return float(settings.strategy_config.get("mu", 0.01))


def train_task(
    step_task: TaskNode, where: Where, r: int, overrides: dict[str, Any] | None = None
) -> TaskNode:
    """Round ``r``'s local training task on ``where`` for the federated ``step_task``."""
    fed = step_task.federated
    assert fed is not None
    node, dataset = where
    config = trainer_config(step_task, overrides)
    artifact = step_task.outputs[fed.model_output]
    who = f"{node}:{dataset}" if dataset else node
    return TaskNode(
        id=round_id(step_task.id, r, who),
        step=step_task.step,
        tool=step_task.tool,
        config=config,
        inputs={},
        outputs={fed.model_output: f"{artifact}.update[{who}]"},
        deps=(),
        timeout=step_task.timeout,
        cache=False,
        allow_pickle=step_task.allow_pickle,
        node=node,
        round=r,
        dataset=dataset,
        # Model updates travel to the aggregator; with secure aggregation only their
        # masked form does (the secure round adds its own tasks).
        shareable=frozenset() if fed.settings.secure_aggregation else frozenset({fed.model_output}),
        variant=step_task.variant,
    )


def aggregate_task(
    step_task: TaskNode,
    aggregator: ToolSpec,
    r: int,
    *,
    nodes: list[str],
    has_global: bool,
    metrics: dict[str, float] | None = None,
) -> TaskNode:
    """Round ``r``'s central aggregation task, producing the round's global model."""
    fed = step_task.federated
    assert fed is not None
    config = aggregator.config_model.model_validate(
        {"round": r, "strategy_name": fed.settings.strategy, "nodes": nodes, "metrics": metrics}
    )
    inputs: dict[str, str | list[str]] = {"updates": []}
    if has_global:
        inputs["global_model"] = step_task.outputs[fed.model_output]
    return TaskNode(
        id=round_id(step_task.id, r, "aggregate"),
        step=step_task.step,
        tool=aggregator,
        config=config,
        inputs=inputs,
        outputs={"output": step_task.outputs[fed.model_output]},
        deps=(),
        cache=False,
        round=r,
        variant=step_task.variant,
    )


def round_metric(results: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Each metric's mean over a round's updates, weighted by their example counts."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for metrics, n in results:
        for name, value in metrics.items():
            if isinstance(value, int | float) and name != "examples":
                sums[name] = sums.get(name, 0.0) + float(value) * n
                weights[name] = weights.get(name, 0.0) + n
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
