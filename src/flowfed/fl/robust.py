"""Strategies that need each node's update: Krum, Multi-Krum, a norm-clipped mean, q-FedAvg.

They read every update on its own, so none of them runs over a securely aggregated or
differentially private sum: the planner refuses those combinations with the reason.

>>> import numpy as np
>>> from flowfed.fl.types import Update
>>> ups = [Update(n, [np.array([v])]) for n, v in [("a", 1.0), ("b", 1.2), ("c", 50.0)]]
>>> Krum(num_malicious=1).aggregate(ups)
[array([1.])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from flowfed.fl.strategies import STRATEGIES, Strategy, fedavg
from flowfed.fl.types import (
    AggregationError,
    Update,
    Weights,
    check_updates,
    float_dtype,
    shapes_of,
)

__all__ = ["ClippedMean", "Krum", "MultiKrum", "QFedAvg", "krum_scores"]


def _flat(weights: Weights) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(w, dtype=np.float64)) for w in weights])


def krum_scores(updates: Sequence[Update], num_malicious: int) -> np.ndarray:
    """Krum's score of each update (Blanchard et al. 2017): the sum of its squared
    distances to its ``n - f - 2`` nearest other updates (at least 1, as in Flower).

    >>> import numpy as np
    >>> ups = [Update(n, [np.array([v])]) for n, v in [("a", 0.0), ("b", 1.0), ("c", 5.0)]]
    >>> krum_scores(ups, 1).tolist()
    [1.0, 1.0, 16.0]
    """
    flat = np.stack([_flat(u.weights) for u in updates])
    sq = np.sum(flat * flat, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    n = len(updates)
    closest = max(1, n - num_malicious - 2)
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(dist[i], i)
        scores[i] = np.sort(others)[:closest].sum()
    return scores


class MultiKrum(Strategy):
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018): the example-weighted
    mean of the ``num_to_keep`` updates with the lowest Krum scores.

    ``num_malicious`` (f) is how many poisoned nodes to tolerate; Krum's guarantee needs
    ``n > 2f + 2``, below which the neighbourhood shrinks to one (Flower's choice) and it
    still discards a lone outlier. ``num_to_keep=None`` keeps ``n - f``.

    >>> import numpy as np
    >>> vals = [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 1e6)]
    >>> MultiKrum(num_malicious=1).aggregate([Update(n, [np.array([v])]) for n, v in vals])
    [array([2.])]
    """

    name: ClassVar[str] = "multikrum"

    def __init__(self, num_malicious: int = 1, num_to_keep: int | None = None) -> None:
        if isinstance(num_malicious, bool) or not isinstance(num_malicious, int):
            raise AggregationError(f"{self.name}: num_malicious must be an integer")
        if num_malicious < 0:
            raise AggregationError(f"{self.name}: num_malicious must be >= 0")
        if num_to_keep is not None and (not isinstance(num_to_keep, int) or num_to_keep < 1):
            raise AggregationError(f"{self.name}: num_to_keep must be a positive integer")
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def check(self, participants: int) -> list[str]:
        if participants - self.num_malicious < 1:
            return [
                f"{self.name}: num_malicious {self.num_malicious} leaves no honest node among "
                f"{participants}"
            ]
        return []

    def _keep(self, n: int) -> int:
        keep = self.num_to_keep if self.num_to_keep is not None else n - self.num_malicious
        return max(1, min(n, keep))

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        check_updates(updates)
        scores = krum_scores(updates, self.num_malicious)
        # stable: ties go to the earlier node, so results do not depend on sort internals
        order = np.argsort(scores, kind="stable")[: self._keep(len(updates))]
        return fedavg([updates[i] for i in sorted(order.tolist())])


class Krum(MultiKrum):
    """Krum (Blanchard et al. 2017): the single update with the lowest Krum score.

    >>> import numpy as np
    >>> vals = [("a", 1.0), ("b", 1.5), ("c", 1e6)]
    >>> Krum(num_malicious=1).aggregate([Update(n, [np.array([v])]) for n, v in vals])
    [array([1.])]
    """

    name: ClassVar[str] = "krum"

    def __init__(self, num_malicious: int = 1) -> None:
        super().__init__(num_malicious=num_malicious, num_to_keep=1)


class ClippedMean(Strategy):
    """Norm-clipped mean (Sun et al. 2019, "Can you really backdoor federated learning?").

    Each node's change ``Δ_k = w_k - x`` is scaled to L2 norm at most ``clip_norm`` (the
    whole model as one vector), then the changes are averaged unweighted and added to
    ``x``. Unweighted because a node must not buy influence with a large example count.
    ``clip_norm=None`` clips to the median norm of the round's changes, which adapts to
    the model's scale and bounds any one node's pull by what a typical node moves.

    >>> import numpy as np
    >>> ups = [Update("a", [np.array([1.0])]), Update("b", [np.array([3.0])]),
    ...        Update("c", [np.array([-100.0])])]
    >>> ClippedMean().aggregate(ups, global_weights=[np.array([0.0])])  # ±3 each: (1+3-3)/3
    [array([0.33333333])]
    """

    name: ClassVar[str] = "clipped_mean"

    def __init__(self, clip_norm: float | None = None) -> None:
        if clip_norm is not None and not clip_norm > 0:
            raise AggregationError(f"clipped_mean: clip_norm must be > 0, got {clip_norm!r}")
        self.clip_norm = clip_norm

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        if global_weights is None:
            raise AggregationError("clipped_mean needs the current global weights")
        check_updates(updates, reference=shapes_of(global_weights))
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        deltas = [[np.asarray(w, dtype=np.float64) - b for w, b in zip(u.weights, x, strict=True)]
                  for u in updates]  # fmt: skip
        norms = np.array([np.linalg.norm(_flat(d)) for d in deltas])
        bound = self.clip_norm if self.clip_norm is not None else float(np.median(norms))
        total = [np.zeros_like(b) for b in x]
        for d, norm in zip(deltas, norms, strict=True):
            factor = 1.0 if norm <= bound or norm == 0 else bound / norm
            for t, part in zip(total, d, strict=True):
                t += factor * part
        dtypes = float_dtype(global_weights)
        return [
            (b + t / len(updates)).astype(dt) for b, t, dt in zip(x, total, dtypes, strict=True)
        ]


class QFedAvg(Strategy):
    """q-FedAvg (Li, Sanjabi, Beirami, Smith 2020, "Fair Resource Allocation in Federated
    Learning"), following Flower's ``QFedAvg`` formulas.

    Each node's gradient estimate is ``Δw_k = (x - w_k) / lr`` (``lr`` the nodes' learning
    rate, ``learning_rate`` here) and ``F_k`` its loss at the round's global model (the
    update's metric ``initial_loss``; the built-in trainers report it)::

        Δ_k = F_k^q · Δw_k
        h_k = q · F_k^(q-1) · ||Δw_k||² + F_k^q / lr
        x  ← x - Σ_k Δ_k / Σ_k h_k

    ``q = 0`` with ``lr`` the local step is FedSGD-like averaging; larger ``q`` weights
    nodes with higher loss more (fairer accuracy across nodes).

    >>> import numpy as np
    >>> ups = [Update("a", [np.array([1.0])], metrics={"initial_loss": 1.0})]
    >>> QFedAvg(q=0.0, learning_rate=1.0).aggregate(ups, global_weights=[np.array([0.0])])
    [array([1.])]
    """

    name: ClassVar[str] = "qfedavg"

    def __init__(self, q: float = 0.2, learning_rate: float = 0.1) -> None:
        if q < 0:
            raise AggregationError(f"qfedavg: q must be >= 0, got {q!r}")
        if not learning_rate > 0:
            raise AggregationError(f"qfedavg: learning_rate must be > 0, got {learning_rate!r}")
        self.q = float(q)
        self.learning_rate = float(learning_rate)

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        if global_weights is None:
            raise AggregationError("qfedavg needs the current global weights")
        check_updates(updates, reference=shapes_of(global_weights))
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        num = [np.zeros_like(b) for b in x]
        den = 0.0
        for u in updates:
            loss = u.metrics.get("initial_loss")
            if not isinstance(loss, int | float) or not np.isfinite(loss) or loss < 0:
                raise AggregationError(
                    f"qfedavg: node {u.node!r} reported no initial_loss (its loss at the "
                    "round's global model); its trainer must put it in training['initial_loss']"
                )
            f = float(loss) + 1e-10
            grads = [(b - np.asarray(w, dtype=np.float64)) / self.learning_rate
                     for b, w in zip(x, u.weights, strict=True)]  # fmt: skip
            sq = float(sum(np.sum(g * g) for g in grads))
            for acc, g in zip(num, grads, strict=True):
                acc += f**self.q * g
            den += self.q * f ** (self.q - 1.0) * sq + f**self.q / self.learning_rate
        dtypes = float_dtype(global_weights)
        return [(b - n / den).astype(dt) for b, n, dt in zip(x, num, dtypes, strict=True)]


# The built-in strategies of this module, by the names flows use (flowfed.fl.strategies
# holds the registry; importing flowfed.fl imports this module).
STRATEGIES.update({c.name: c for c in (Krum, MultiKrum, ClippedMean, QFedAvg)})
