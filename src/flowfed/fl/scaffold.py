"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning"): control variates that correct the client drift of non-IID data.

The server keeps a control variate ``c`` (zeros at first) and each node its own ``c_i``,
in the node's client state (``ctx.client_state``, never sent). Every round:

* the server sends ``c`` to each sampled trainer (its ``scaffold_c`` config field, set
  by :meth:`Scaffold.configure_fit`);
* node ``i`` starts from the global ``x`` and takes ``K`` local steps
  ``y ← y - η·(g(y) - c_i + c)``, then, with option II of the paper,
  ``c_i⁺ = c_i - c + (x - y_i)/(K·η)``; it sends its model ``y_i`` and
  ``Δc_i = c_i⁺ - c_i`` (the model's ``training['control_delta']``);
* the server: ``x ← x + η_g·mean_i(y_i - x)`` and ``c ← c + (|S|/N)·mean_i(Δc_i)``, with
  ``|S|`` the round's participants and ``N`` the step's. Both means are unweighted, as
  in the paper (example counts do not enter).

A trainer supports it through a ``scaffold_c`` config field
(:mod:`flowfed.tools.library.scaffold` does the client side); any other trainer is a
build-time error naming it. SCAFFOLD reads each node's ``Δc_i`` beside its update, so it
does not run with secure aggregation or client-level DP (build-time errors).

>>> import numpy as np
>>> s = Scaffold(); s.bind_population(4)
>>> ups = [Update("a", [np.array([1.0])], 10, control_delta=[np.array([2.0])]),
...        Update("b", [np.array([3.0])], 1, control_delta=[np.array([4.0])])]
>>> s.aggregate_fit(1, ups, [np.array([0.0])])      # x + mean(y - x)
[array([2.])]
>>> s.c                                              # 0 + (2/4)·mean(Δc)
[array([1.5])]
>>> s.configure_fit(2, ["a"])
{'a': {'scaffold_c': [[1.5]]}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from flowfed.fl.strategies import STRATEGIES, Strategy
from flowfed.fl.types import (
    AggregationError,
    Update,
    Weights,
    check_updates,
    check_weights,
    float_dtype,
    shapes_of,
)

__all__ = ["Scaffold"]


class Scaffold(Strategy):
    """SCAFFOLD's server: ``server_learning_rate`` is ``η_g`` (1.0 in the paper's runs)."""

    name: ClassVar[str] = "scaffold"
    needs: ClassVar[str] = "updates"
    #: Trainers must take the server's control variate (a ``scaffold_c`` config field).
    control_variates: ClassVar[bool] = True

    def __init__(self, server_learning_rate: float = 1.0) -> None:
        if not server_learning_rate > 0:
            raise AggregationError(
                f"scaffold: server_learning_rate must be > 0, got {server_learning_rate!r}"
            )
        self.server_learning_rate = float(server_learning_rate)
        self.c: Weights | None = None
        self.population: int | None = None

    def bind_population(self, participants: int) -> None:
        """``N``, the number of clients of the step (the server sets it)."""
        if participants < 1:
            raise AggregationError("scaffold needs at least one participant")
        self.population = participants

    def configure_fit(self, server_round: int, participants: list[str]) -> dict[str, dict]:
        """Every trainer gets ``c`` (``[]`` before the first aggregation: zeros)."""
        flat = [] if self.c is None else [np.ravel(t).tolist() for t in self.c]
        return {p: {"scaffold_c": flat} for p in participants}

    def aggregate_fit(
        self, server_round: int, updates: Sequence[Update], global_weights: Weights
    ) -> Weights:
        shapes = shapes_of(global_weights)
        check_updates(updates, reference=shapes)
        for u in updates:
            if u.control_delta is None:
                raise AggregationError(
                    f"node {u.node!r} sent no control-variate change (training"
                    "['control_delta']): its trainer does not run SCAFFOLD's client side"
                )
            check_weights(u.control_delta, shapes, f"node {u.node!r} control_delta")
        if self.c is not None and shapes_of(self.c) != shapes:
            raise AggregationError("scaffold: model shapes changed since the last round")
        n = self.population or len(updates)
        if len(updates) > n:
            raise AggregationError(f"scaffold: {len(updates)} updates from {n} participants")
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        m = len(updates)
        deltas: list[Weights] = [u.control_delta for u in updates if u.control_delta is not None]
        dy = [sum(np.asarray(u.weights[k], dtype=np.float64) - x[k] for u in updates) / m
              for k in range(len(x))]  # fmt: skip
        dc = [sum(np.asarray(d[k], dtype=np.float64) for d in deltas) / m for k in range(len(x))]
        c = self.c if self.c is not None else [np.zeros(s) for s in shapes]
        self.c = [ck + (m / n) * d for ck, d in zip(c, dc, strict=True)]
        return [
            (xk + self.server_learning_rate * d).astype(dt)
            for xk, d, dt in zip(x, dy, float_dtype(global_weights), strict=True)
        ]


STRATEGIES[Scaffold.name] = Scaffold
