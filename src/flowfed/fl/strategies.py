"""Aggregation strategies: how a round's node updates become the next global model.

Each plain strategy is a small pure function of the updates (and, for trimmed mean, one
setting). The adaptive server optimizers of Reddi et al. 2021, "Adaptive Federated
Optimization" (FedAdam, FedYogi), carry moment estimates from round to round, so they are
small classes whose state lives in plain attributes (``m``, ``v``) — nothing hidden.

>>> import numpy as np
>>> ups = [Update("a", [np.array([1.0, 2.0])], 1), Update("b", [np.array([4.0, 8.0])], 2)]
>>> fedavg(ups)[0].tolist()
[3.0, 6.0]
>>> median(ups)[0].tolist()
[2.5, 5.0]

All of them are also reachable by name, for flow configs:

>>> make_strategy("trimmed_mean", beta=0.1).aggregate(ups)[0].tolist()
[2.5, 5.0]
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from flowfed.fl.types import (
    AggregationError,
    Update,
    Weights,
    check_updates,
    check_weights,
    float_dtype,
    shapes_of,
)

__all__ = [
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Median",
    "Strategy",
    "TrimmedMean",
    "fedavg",
    "fedprox_term",
    "make_strategy",
    "median",
    "strategy_class",
    "strategy_names",
    "trimmed_mean",
]


# --------------------------------------------------------------------------- the strategy API


class Strategy:
    """The base of every strategy, built-in or written by a user in a tools file.

    A strategy turns one round's updates into the next global model. Subclass it, give it
    a ``name`` and override :meth:`aggregate_fit` (or just :meth:`aggregate`); the flow
    then names it (``strategy: my_strategy``) once its tools file is in ``imports``, and
    its ``strategy_config`` are the constructor's keyword arguments. The hooks follow
    Flower's ``Strategy``:

    * :meth:`configure_fit` — trainer config for each participant of a round;
    * :meth:`aggregate_fit` — the updates (and the current global model) → new weights;
    * :meth:`aggregate_metrics` — the trainers' metrics → the round's metrics.

    ``needs`` says what :meth:`aggregate_fit` reads: ``"mean"`` when the result depends
    on the updates only through their example-weighted mean (it then also runs over a
    securely aggregated or differentially private mean, which the server receives as a
    single update), ``"updates"`` when it needs each node's update (refused with secure
    aggregation and DP at build time). ``proximal`` asks trainers for a ``mu`` field
    (FedProx).

    >>> class Halfway(Strategy):  # with name = "halfway", flows could name it
    ...     needs = "mean"
    ...     def aggregate_fit(self, server_round, updates, global_weights):
    ...         avg = fedavg(updates)
    ...         return [(a + g) / 2 for a, g in zip(avg, global_weights)]
    >>> import numpy as np
    >>> Halfway().aggregate_fit(1, [Update("a", [np.array([4.0])])], [np.array([0.0])])
    [array([2.])]
    """

    name: ClassVar[str] = ""
    needs: ClassVar[str] = "updates"
    proximal: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        registry = globals().get("STRATEGIES")
        if not isinstance(name, str) or not name or registry is None:
            return  # no name, or a built-in: those are defined while this module loads
        if name in BUILTIN_STRATEGIES:
            if cls.__module__ == "flowfed.fl.robust":
                return  # a built-in of flowfed.fl.robust, which enters its own
            raise AggregationError(f"strategy name {name!r} is a built-in strategy's")
        if cls.needs not in ("mean", "updates"):
            raise AggregationError(f"strategy {name!r}: needs must be 'mean' or 'updates'")
        registry[name] = cls  # a tools file imported again replaces its own class

    def check(self, participants: int) -> list[str]:
        """Build-time warnings for a step with ``participants`` nodes (default: none)."""
        return []

    def configure_fit(self, server_round: int, participants: list[str]) -> dict[str, dict]:
        """Trainer config changes for this round, ``{participant: {field: value}}``.

        ``participants`` are ``node`` or ``node:dataset`` names; one not in the result
        trains with the step's config. The default changes nothing.
        """
        return {}

    def aggregate_fit(
        self, server_round: int, updates: Sequence[Update], global_weights: Weights
    ) -> Weights:
        """The new global weights; the default calls :meth:`aggregate`."""
        return self.aggregate(updates, global_weights=global_weights)

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        """Combine updates (override this or :meth:`aggregate_fit`)."""
        raise NotImplementedError(f"strategy {self.name!r} implements no aggregate_fit")

    def aggregate_metrics(
        self, server_round: int, results: Sequence[tuple[str, int, dict[str, float]]]
    ) -> dict[str, float]:
        """The round's metrics from ``(participant, examples, metrics)`` of each update.

        The default is each numeric metric's mean weighted by example counts.
        """
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for _, n, metrics in results:
            for key, value in metrics.items():
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                if numeric and key != "examples":
                    sums[key] = sums.get(key, 0.0) + float(value) * n
                    weights[key] = weights.get(key, 0.0) + n
        return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


# --------------------------------------------------------------------------- pure functions


def fedavg(updates: Sequence[Update]) -> Weights:
    """FedAvg (McMahan et al. 2017): the mean of the weights, weighted by example counts.

    ``w = Σ_k n_k w_k / Σ_k n_k``

    >>> import numpy as np
    >>> fedavg([Update("a", [np.array([0.0])], 1), Update("b", [np.array([3.0])], 2)])
    [array([2.])]
    """
    check_updates(updates)
    counts = np.array([u.num_examples for u in updates], dtype=np.float64)
    share = counts / counts.sum()
    out: Weights = []
    for i, dtype in enumerate(float_dtype(updates[0].weights)):
        stacked = np.stack([np.asarray(u.weights[i], dtype=np.float64) for u in updates])
        # tensordot over the node axis: Σ_k share_k · w_k, for any tensor shape.
        out.append(np.tensordot(share, stacked, axes=1).astype(dtype))
    return out


def median(updates: Sequence[Update]) -> Weights:
    """Coordinate-wise median (Yin et al. 2018): each value is the median over nodes.

    Unweighted on purpose: weighting by self-reported example counts would let one
    attacker claim a huge count and take over the median. With an even number of nodes
    the median is the mean of the two middle values.

    >>> import numpy as np
    >>> ups = [Update(n, [np.array([v])]) for n, v in [("a", 1.0), ("b", 5.0), ("c", 1e6)]]
    >>> median(ups)
    [array([5.])]
    """
    check_updates(updates)
    out: Weights = []
    for i, dtype in enumerate(float_dtype(updates[0].weights)):
        stacked = np.stack([np.asarray(u.weights[i], dtype=np.float64) for u in updates])
        out.append(np.median(stacked, axis=0).astype(dtype))
    return out


def trimmed_mean(updates: Sequence[Update], beta: float = 0.1) -> Weights:
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    For each coordinate, sort the n node values, drop the ``k = floor(beta * n)`` smallest
    and ``k`` largest, and average the rest. ``beta`` must be in ``[0, 0.5)``; ``beta=0``
    is the plain (unweighted) mean. Like :func:`median` it ignores example counts, so a
    node cannot buy influence by over-reporting them.

    >>> import numpy as np
    >>> vals = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 1e6)]
    >>> trimmed_mean([Update(n, [np.array([v])]) for n, v in vals], beta=0.25)
    [array([2.5])]
    """
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta < 0.5:
        raise AggregationError(f"trimmed_mean: beta must be in [0, 0.5), got {beta!r}")
    check_updates(updates)
    n = len(updates)
    k = int(np.floor(beta * n))
    out: Weights = []
    for i, dtype in enumerate(float_dtype(updates[0].weights)):
        stacked = np.stack([np.asarray(u.weights[i], dtype=np.float64) for u in updates])
        ordered = np.sort(stacked, axis=0)
        out.append(ordered[k : n - k].mean(axis=0).astype(dtype))
    return out


def fedprox_term(weights: Weights, global_weights: Weights, mu: float) -> Weights:
    """The gradient of FedProx's proximal term (Li et al. 2020), for a local trainer.

    FedProx adds ``(mu / 2) · ||w - w_global||²`` to each node's local loss so that local
    training cannot drift far from the round's global model on heterogeneous data; its
    gradient ``mu · (w - w_global)`` is what a trainer adds to the loss gradient:

    >>> import numpy as np
    >>> fedprox_term([np.array([1.0, 3.0])], [np.array([0.0, 1.0])], mu=0.5)
    [array([0.5, 1. ])]
    """
    if mu < 0:
        raise AggregationError(f"fedprox: mu must be >= 0, got {mu!r}")
    check_weights(weights, shapes_of(global_weights), "local weights")
    return [
        mu * (np.asarray(w, dtype=np.float64) - np.asarray(g, dtype=np.float64))
        for w, g in zip(weights, global_weights, strict=True)
    ]


# --------------------------------------------------------------------------- server optimizers


class _AdaptiveServerOptimizer(Strategy, ABC):
    """Shared body of FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2).

    Each round, with ``x`` the global model and ``Δ = fedavg(updates) - x`` the
    pseudo-gradient (the examples-weighted average of the nodes' changes):

    ``m ← β1·m + (1-β1)·Δ``; ``v ← (second-moment rule)``; ``x ← x + η·m / (√v + τ)``

    As in the paper there is no bias correction, ``m`` starts at 0 and ``v`` at ``τ²``
    (the paper asks for ``v_{-1} ≥ τ²``), so the first steps are not blown up by a tiny
    denominator. ``tau`` sets the degree of adaptivity: large ``tau`` behaves like
    server SGD with momentum.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[str] = "mean"

    def __init__(
        self, eta: float = 0.1, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if eta <= 0:
            raise AggregationError(f"{self.name}: eta must be > 0, got {eta!r}")
        if not 0.0 <= beta1 < 1.0 or not 0.0 <= beta2 < 1.0:
            raise AggregationError(f"{self.name}: beta1 and beta2 must be in [0, 1)")
        if tau <= 0:
            raise AggregationError(f"{self.name}: tau must be > 0, got {tau!r}")
        self.eta = float(eta)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)
        # The optimizer state, one array per tensor; None until the first step.
        self.m: Weights | None = None
        self.v: Weights | None = None

    def reset(self) -> None:
        """Forget the moment estimates (e.g. when a new model starts training)."""
        self.m = None
        self.v = None

    @abstractmethod
    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        """The new second-moment estimate: the one line where Adam and Yogi differ."""

    def step(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        """Apply one server step and return the new global weights."""
        shapes = shapes_of(global_weights)
        check_weights(global_weights, shapes, "global weights")
        check_updates(updates, reference=shapes)
        if self.m is not None and shapes_of(self.m) != shapes:
            raise AggregationError(
                f"{self.name}: model shapes changed since the last step; call reset() first"
            )
        average = fedavg(updates)
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        delta = [np.asarray(a, dtype=np.float64) - xi for a, xi in zip(average, x, strict=True)]
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in delta]
            self.v = [np.full_like(d, self.tau**2) for d in delta]
        new_m: Weights = []
        new_v: Weights = []
        out: Weights = []
        dtypes = float_dtype(global_weights)
        for xi, d, m, v, dtype in zip(x, delta, self.m, self.v, dtypes, strict=True):
            m = self.beta1 * m + (1.0 - self.beta1) * d
            v = self._second_moment(v, d * d)
            new_m.append(m)
            new_v.append(v)
            out.append((xi + self.eta * m / (np.sqrt(v) + self.tau)).astype(dtype))
        self.m, self.v = new_m, new_v
        return out

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        """The :class:`Strategy` interface: one :meth:`step` (needs ``global_weights``)."""
        if global_weights is None:
            raise AggregationError(f"{self.name} needs the current global weights")
        return self.step(global_weights, updates)


class FedAdam(_AdaptiveServerOptimizer):
    """Adam on the server: ``v ← β2·v + (1-β2)·Δ²``.

    >>> import numpy as np
    >>> opt = FedAdam(eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    >>> new = opt.step([np.array([0.0])], [Update("a", [np.array([1.0])])])
    >>> round(float(new[0][0]), 4)  # 0.1·0.1 / (√(0.99e-6 + 0.01) + 1e-3)
    0.099
    """

    name = "fedadam"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


class FedYogi(_AdaptiveServerOptimizer):
    """Yogi on the server: ``v ← v - (1-β2)·Δ²·sign(v - Δ²)``.

    Unlike Adam, ``v`` moves by an amount set by ``Δ²`` alone, so a run of small updates
    lowers it slowly instead of forgetting a large past gradient geometrically.

    >>> import numpy as np
    >>> opt = FedYogi(eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    >>> new = opt.step([np.array([0.0])], [Update("a", [np.array([1.0])])])
    >>> round(float(new[0][0]), 4)  # v = 1e-6 + 0.01·1 since v < Δ²
    0.099
    """

    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.beta2) * delta_sq * np.sign(v - delta_sq)


class FedAdagrad(_AdaptiveServerOptimizer):
    """Adagrad on the server (Reddi et al. 2021): ``v ← v + Δ²``, ``beta1`` 0 by default.

    >>> import numpy as np
    >>> opt = FedAdagrad(eta=0.1, tau=1e-3)
    >>> new = opt.step([np.array([0.0])], [Update("a", [np.array([1.0])])])
    >>> round(float(new[0][0]), 4)  # m = 1, v = 1e-6 + 1: 0.1·1 / (√1.000001 + 0.001)
    0.0999
    """

    name = "fedadagrad"

    def __init__(
        self, eta: float = 0.1, beta1: float = 0.0, beta2: float = 0.0, tau: float = 1e-3
    ) -> None:
        super().__init__(eta=eta, beta1=beta1, beta2=beta2, tau=tau)

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v + delta_sq


class FedAvgM(Strategy):
    """FedAvg with server momentum (Hsu et al. 2019), as Flower's ``FedAvgM``.

    With ``g = x - fedavg(updates)`` (the pseudo-gradient, pointing away from the
    nodes): ``v ← momentum·v + g`` (``v = g`` in the first step), ``x ← x - lr·v``.
    ``server_learning_rate=1, server_momentum=0`` is plain FedAvg.

    >>> import numpy as np
    >>> opt = FedAvgM(server_learning_rate=1.0, server_momentum=0.5)
    >>> x = opt.step([np.array([0.0])], [Update("a", [np.array([1.0])])])  # v = -1
    >>> opt.step(x, [Update("a", [np.array([1.0])])])  # g = 0, v = -0.5: 1 + 0.5
    [array([1.5])]
    """

    name: ClassVar[str] = "fedavgm"
    needs: ClassVar[str] = "mean"

    def __init__(self, server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> None:
        if not server_learning_rate > 0:
            raise AggregationError(
                f"fedavgm: server_learning_rate must be > 0, got {server_learning_rate!r}"
            )
        if not 0.0 <= server_momentum < 1.0:
            raise AggregationError(
                f"fedavgm: server_momentum must be in [0, 1), got {server_momentum!r}"
            )
        self.server_learning_rate = float(server_learning_rate)
        self.server_momentum = float(server_momentum)
        self.momentum: Weights | None = None

    def reset(self) -> None:
        """Forget the momentum."""
        self.momentum = None

    def step(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        """One server step; returns the new global weights."""
        shapes = shapes_of(global_weights)
        check_updates(updates, reference=shapes)
        if self.momentum is not None and shapes_of(self.momentum) != shapes:
            raise AggregationError("fedavgm: model shapes changed since the last step")
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        grad = [xi - a for xi, a in zip(x, fedavg(updates), strict=True)]
        if self.server_momentum > 0:
            if self.momentum is None:
                self.momentum = grad
            else:
                self.momentum = [
                    self.server_momentum * m + g for m, g in zip(self.momentum, grad, strict=True)
                ]
            grad = self.momentum
        dtypes = float_dtype(global_weights)
        return [
            (xi - self.server_learning_rate * g).astype(dt)
            for xi, g, dt in zip(x, grad, dtypes, strict=True)
        ]

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        if global_weights is None:
            raise AggregationError("fedavgm needs the current global weights")
        return self.step(global_weights, updates)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class FedAvg(Strategy):
    """:func:`fedavg` behind the :class:`Strategy` interface."""

    name: ClassVar[str] = "fedavg"
    needs: ClassVar[str] = "mean"

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        return fedavg(updates)


@dataclass(frozen=True)
class FedProx(Strategy):
    """FedProx: aggregates exactly like FedAvg; ``mu`` is for the nodes' trainers.

    The planner sets every trainer's ``mu`` config field to this ``mu`` (a trainer
    without one is refused at build time); the built-in trainers add
    :func:`fedprox_term` to their gradients.
    """

    mu: float = 0.01
    name: ClassVar[str] = "fedprox"
    needs: ClassVar[str] = "mean"
    proximal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise AggregationError(f"fedprox: mu must be >= 0, got {self.mu!r}")

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        return fedavg(updates)

    def proximal_term(self, weights: Weights, global_weights: Weights) -> Weights:
        """:func:`fedprox_term` with this strategy's ``mu``."""
        return fedprox_term(weights, global_weights, self.mu)


@dataclass(frozen=True)
class Median(Strategy):
    """:func:`median` behind the :class:`Strategy` interface."""

    name: ClassVar[str] = "median"

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        return median(updates)


@dataclass(frozen=True)
class TrimmedMean(Strategy):
    """:func:`trimmed_mean` behind the :class:`Strategy` interface."""

    beta: float = 0.1
    name: ClassVar[str] = "trimmed_mean"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise AggregationError(f"trimmed_mean: beta must be in [0, 0.5), got {self.beta!r}")

    def check(self, participants: int) -> list[str]:
        """A ``beta`` that trims nothing at this many nodes is a plain mean: say so."""
        if participants >= 3 and int(np.floor(self.beta * participants)) == 0:
            least = 1.0 / participants
            return [
                f"trimmed_mean with beta {self.beta} trims nothing at {participants} nodes "
                f"(floor({self.beta}·{participants}) = 0): it is the plain mean; the "
                f"smallest beta that trims one node from each end is {least:.4g}"
            ]
        return []

    def aggregate(
        self, updates: Sequence[Update], global_weights: Weights | None = None
    ) -> Weights:
        return trimmed_mean(updates, self.beta)


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedavgm": FedAvgM,
    "median": Median,
    "trimmed_mean": TrimmedMean,
    # krum, multikrum, clipped_mean and qfedavg: entered by flowfed.fl.robust, which
    # flowfed.fl imports (a package's __init__ runs before any of its modules).
}
"""Every strategy by the name a flow config uses: the built-ins, and the classes user
code defines by subclassing :class:`Strategy` with a ``name`` (entered on definition)."""

BUILTIN_STRATEGIES = frozenset({*STRATEGIES, "krum", "multikrum", "clipped_mean", "qfedavg"})
"""The names of the built-in strategies (a user strategy cannot take one)."""


def strategy_names() -> list[str]:
    """Every strategy a flow may name: the built-ins and those defined by user code."""
    return sorted(STRATEGIES)


def strategy_class(name: str) -> Callable[..., Strategy] | None:
    """The factory of strategy ``name`` (built-in or user-defined), or None."""
    return STRATEGIES.get(name)


def make_strategy(name: str, **settings: Any) -> Strategy:
    """Build a strategy by name; unknown names and settings are refused with the options.

    >>> make_strategy("fedprox", mu=0.1).mu
    0.1
    >>> make_strategy("fedavg", mu=0.1)
    Traceback (most recent call last):
    ...
    flowfed.fl.types.AggregationError: strategy 'fedavg' takes no setting 'mu' (it takes none)
    """
    factory = strategy_class(name)
    if factory is None:
        known = ", ".join(strategy_names())
        raise AggregationError(f"unknown strategy {name!r}; known strategies: {known}")
    accepted = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "none"
        plural = "s" if len(unknown) > 1 else ""
        names = ", ".join(repr(u) for u in unknown)
        raise AggregationError(
            f"strategy {name!r} takes no setting{plural} {names} (it takes {takes})"
        )
    try:
        return factory(**settings)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise AggregationError(f"strategy {name!r}: {exc}") from exc
