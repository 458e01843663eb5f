"""The shapes every federated-learning function in :mod:`flowfed.fl` agrees on.

A model is a list of numpy arrays (one per layer/tensor, in a fixed order), and a node's
contribution to a round is an :class:`Update`: its trained weights, how many examples it
trained on (the FedAvg weight) and any metrics it wants to report.

>>> import numpy as np
>>> u = Update("hospital-a", [np.zeros(2)], num_examples=10)
>>> u.node, u.num_examples
('hospital-a', 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Weights = list[np.ndarray]
"""A model: one numpy array per tensor, always in the same order."""


class AggregationError(ValueError):
    """Updates that cannot be combined: mismatched shapes, bad counts, unknown settings."""


@dataclass(frozen=True)
class Update:
    """One node's result for one round.

    ``weights`` are the node's full trained weights (not a delta); strategies that need a
    delta (FedAdam, FedYogi, DP clipping) subtract the global weights themselves, so every
    strategy can consume the same updates.
    """

    node: str
    weights: Weights
    num_examples: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    #: SCAFFOLD: the node's control-variate change ``Δc_i`` (shaped like ``weights``).
    control_delta: Weights | None = None


def shapes_of(weights: Sequence[np.ndarray]) -> list[tuple[int, ...]]:
    """The shape of each tensor of a model.

    >>> shapes_of([np.zeros((2, 3)), np.zeros(4)])
    [(2, 3), (4,)]
    """
    return [tuple(np.shape(w)) for w in weights]


def check_weights(
    weights: Sequence[np.ndarray], reference: Sequence[tuple[int, ...]], who: str
) -> None:
    """Raise :class:`AggregationError` naming ``who`` unless ``weights`` match ``reference``.

    Checks tensor count, each tensor's shape and that every value is finite (a NaN would
    silently poison any mean, so it is refused here with the culprit's name).
    """
    if len(weights) != len(reference):
        raise AggregationError(f"{who} sent {len(weights)} tensors, expected {len(reference)}")
    for index, (w, shape) in enumerate(zip(weights, reference, strict=True)):
        if tuple(np.shape(w)) != tuple(shape):
            raise AggregationError(
                f"{who}: tensor {index} has shape {tuple(np.shape(w))}, expected {tuple(shape)}"
            )
        if not np.all(np.isfinite(w)):
            raise AggregationError(f"{who}: tensor {index} contains NaN or infinity")


def check_updates(
    updates: Sequence[Update], reference: Sequence[tuple[int, ...]] | None = None
) -> list[tuple[int, ...]]:
    """Validate a round's updates and return their common shapes.

    The first update sets the shapes unless ``reference`` (usually the global model's)
    is given. Errors name the offending node.

    >>> check_updates([Update("a", [np.zeros(2)]), Update("b", [np.ones(2)])])
    [(2,)]
    >>> check_updates([Update("a", [np.zeros(2)]), Update("b", [np.ones(3)])])
    Traceback (most recent call last):
    ...
    flowfed.fl.types.AggregationError: node 'b': tensor 0 has shape (3,), expected (2,)
    """
    if not updates:
        raise AggregationError("no updates to aggregate")
    expected = list(reference) if reference is not None else shapes_of(updates[0].weights)
    seen: set[str] = set()
    for update in updates:
        who = f"node {update.node!r}"
        if update.node in seen:
            raise AggregationError(f"{who} sent more than one update")
        seen.add(update.node)
        # bool is an int subclass; True examples is a bug, not a count.
        if isinstance(update.num_examples, bool) or not isinstance(
            update.num_examples, int | np.integer
        ):
            raise AggregationError(f"{who}: num_examples must be an integer")
        if update.num_examples <= 0:
            raise AggregationError(
                f"{who}: num_examples must be positive, got {update.num_examples}"
            )
        check_weights(update.weights, expected, who)
    return expected


def float_dtype(weights: Sequence[np.ndarray]) -> list[np.dtype]:
    """The dtype each aggregated tensor should have: the input's if floating, else float64.

    Aggregation is computed in float64 (so a mean of float32 models does not lose digits)
    and cast back, so a float32 model stays float32 for the trainer.
    """
    out: list[np.dtype] = []
    for w in weights:
        dt = np.asarray(w).dtype
        out.append(dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64))
    return out
