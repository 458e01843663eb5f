"""The server side of one federated step: strategy, privacy noise, accountant, model facts.

The engine's driver makes one :class:`FederatedServer` per federated step and calls it
from the step's aggregation tasks, plain or secure. It keeps every server-side rule in
one place, framework-free and testable without an engine:

* the strategy runs on what the server may see: each update (plain rounds), or one
  aggregate (secure aggregation, differential privacy) for strategies whose result
  depends on the updates only through their mean (``Strategy.needs == "mean"``);
  :func:`combination_problems` is the build-time rule for the rest;
* privacy noise always comes from the OS's CSPRNG (:func:`~flowfed.fl.privacy.secure_rng`),
  never from the flow's ``seed``;
* the accountant matches the engine's sampling (``fraction_fit`` draws a fixed number
  of nodes without replacement);
* the global model's ``training`` block says what produced it.

>>> import numpy as np
>>> from types import SimpleNamespace as S
>>> settings = S(strategy="fedavg", strategy_config={}, privacy=None, rounds=3,
...              secure_aggregation=False, fraction_fit=1.0)
>>> server = FederatedServer(settings, participants=2, per_round=2)
>>> ups = [Update("a", [np.array([1.0])], 1), Update("b", [np.array([3.0])], 3)]
>>> server.aggregate(1, ups, [np.array([0.0])])
[array([2.5])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flowfed.fl.privacy import PrivacyAccountant, add_gaussian_noise, private_mean_update
from flowfed.fl.strategies import (
    FedAvg,
    FedProx,
    Strategy,
    make_strategy,
    strategy_class,
)
from flowfed.fl.types import AggregationError, Update, Weights

__all__ = ["FederatedServer", "combination_problems"]

_MEAN_STRATEGIES = "fedavg, fedprox, fedadam, fedyogi, fedadagrad, fedavgm"


def combination_problems(strategy: str, *, secure_aggregation: bool, privacy: bool) -> list[str]:
    """Why ``strategy`` cannot run with secure aggregation or DP (empty: it can).

    A strategy that reads each update (``needs == "updates"``: median, trimmed mean,
    Krum, ...) has nothing to read when the server only learns a masked sum, and the
    DP-FedAvg guarantee (the sum of clipped changes has sensitivity C) covers a noisy
    mean, not a median or a selection of updates.

    >>> combination_problems("fedadam", secure_aggregation=True, privacy=True)
    []
    >>> combination_problems("median", secure_aggregation=True, privacy=False)[0][:60]
    "strategy 'median' reads each node's update, but with secure_"
    """
    cls = strategy_class(strategy)
    if cls is None or getattr(cls, "needs", "updates") == "mean":
        return []
    out: list[str] = []
    if getattr(cls, "control_variates", False):
        if secure_aggregation:
            out.append(
                f"strategy '{strategy}' aggregates each node's control-variate change "
                "beside its model, and secure aggregation masks only the model: the "
                "combination is not supported; drop secure_aggregation or use fedavg"
            )
        if privacy:
            out.append(
                f"strategy '{strategy}' sends each node's control-variate change "
                "(c_i+ - c_i, a scaled copy of its model change) unclipped and without "
                "noise: client-level DP would not cover it; use fedavg with privacy"
            )
        return out
    if secure_aggregation:
        out.append(
            f"strategy '{strategy}' reads each node's update, but with secure_aggregation "
            "the server only ever learns their sum (a statistic over masked vectors is "
            f"meaningless); strategies that work on the sum: {_MEAN_STRATEGIES}"
        )
    if privacy:
        extra = (
            " (privacy already clips every change to clip_norm: use strategy fedavg)"
            if strategy == "clipped_mean"
            else ""
        )
        out.append(
            f"strategy '{strategy}' reads each node's update, but client-level DP bounds "
            "one node's effect on the *sum* of clipped changes (sensitivity C): it has no "
            f"guarantee for '{strategy}'; strategies that run on the private mean: "
            f"{_MEAN_STRATEGIES}{extra}"
        )
    return out


class FederatedServer:
    """One federated step's server state: the strategy, the accountant, the last ε.

    ``settings`` is the step's :class:`flowfed.spec.models.Federated`; ``participants``
    how many nodes the step trains on and ``per_round`` how many a round samples (without
    replacement, as the engine does).
    """

    def __init__(self, settings: Any, *, participants: int, per_round: int) -> None:
        self.settings = settings
        self.strategy: Strategy = make_strategy(settings.strategy, **settings.strategy_config)
        privacy = settings.privacy
        problems = combination_problems(
            settings.strategy,
            secure_aggregation=bool(settings.secure_aggregation),
            privacy=privacy is not None,
        )
        if problems:  # the planner refuses these; a safety net for direct callers
            raise AggregationError(problems[0])
        self.participants = participants
        self.per_round = per_round
        bind = getattr(self.strategy, "bind_population", None)
        if bind is not None:  # SCAFFOLD's c moves by |S|/N of the mean change
            bind(participants)
        self.warm_start = False
        self.epsilon: float | None = None
        self.accountant: PrivacyAccountant | None = None
        self.poisson = getattr(settings, "sampling", "fixed") == "poisson"
        rate = float(getattr(settings, "fraction_fit", 1.0))
        if privacy is not None and privacy.noise_multiplier > 0 and self.poisson:
            # sampling: poisson, each node with probability q: the Poisson analysis
            self.accountant = PrivacyAccountant(
                privacy.noise_multiplier, sample_rate=rate, delta=privacy.delta
            )
        elif privacy is not None and privacy.noise_multiplier > 0:
            if per_round >= participants:
                self.accountant = PrivacyAccountant(
                    privacy.noise_multiplier, sample_rate=1.0, delta=privacy.delta
                )
            else:
                self.accountant = PrivacyAccountant(
                    privacy.noise_multiplier,
                    delta=privacy.delta,
                    sampling="fixed",
                    population=participants,
                    sample_size=per_round,
                )

    # -- aggregation -------------------------------------------------------------------------

    def aggregate(self, server_round: int, updates: Sequence[Update], current: Weights) -> Weights:
        """A plain round: the server holds each update."""
        privacy = self.settings.privacy
        if privacy is None:
            return self.strategy.aggregate_fit(server_round, updates, current)
        mean = private_mean_update(
            current, updates, privacy.clip_norm, privacy.noise_multiplier
        )  # noise from the OS's CSPRNG
        mean = self._expected_denominator(current, mean, len(updates))
        self._account()
        return self._over_mean(server_round, mean, len(updates), current)

    def aggregate_secure_mean(
        self, server_round: int, mean: Weights, examples: int, current: Weights
    ) -> Weights:
        """A secure FedAvg round: the server learned only ``Σ n_k w_k / Σ n_k``."""
        return self._over_mean(server_round, mean, examples, current)

    def aggregate_secure_sum(
        self, server_round: int, total: Weights, count: int, current: Weights
    ) -> Weights:
        """A secure DP round: ``total`` is the unmasked sum of ``count`` clipped changes."""
        privacy = self.settings.privacy
        if privacy is None:
            raise AggregationError("a secure sum of clipped changes needs the privacy settings")
        noisy = add_gaussian_noise(total, privacy.noise_multiplier, privacy.clip_norm)
        self._account()
        base = [np.asarray(c, dtype=np.float64) for c in current]
        mean = [b + t / count for b, t in zip(base, noisy, strict=True)]
        mean = self._expected_denominator(current, mean, count)
        return self._over_mean(server_round, mean, count, current)

    def _expected_denominator(self, current: Weights, mean: Weights, count: int) -> Weights:
        """Under Poisson sampling, divide the noisy sum by ``q · n``, not the drawn count.

        The drawn count differs between neighbouring runs (it says whether a node took
        part); the expected one does not (the fixed-denominator estimator of DP-FedAvg).
        """
        if not self.poisson or self.settings.privacy is None:
            return mean
        expected = float(self.settings.fraction_fit) * self.participants
        if expected >= self.participants:
            return mean
        scale = count / expected
        return [
            np.asarray(c, dtype=np.float64) + (m - np.asarray(c, dtype=np.float64)) * scale
            for c, m in zip(current, mean, strict=True)
        ]

    def skip_round(self) -> None:
        """A Poisson round too small to run: the accountant still counts it."""
        self._account()

    def _over_mean(
        self, server_round: int, mean: Weights, examples: int, current: Weights
    ) -> Weights:
        """Run a ``needs == "mean"`` strategy on one aggregate, given as a single update.

        Exact: such a strategy reads the updates only through their mean. FedAvg and
        FedProx return the mean itself, so they are skipped (no float round trip).
        """
        if isinstance(self.strategy, FedAvg | FedProx):
            return mean
        one = [Update("aggregate", mean, max(1, int(examples)))]
        return self.strategy.aggregate_fit(server_round, one, current)

    def _account(self) -> None:
        if self.accountant is not None:
            self.epsilon = self.accountant.step()

    # -- metrics and model facts -------------------------------------------------------------

    def round_metrics(
        self, server_round: int, results: Sequence[tuple[str, int, dict[str, float]]]
    ) -> dict[str, float]:
        """The round's metrics through the strategy's ``aggregate_metrics`` hook."""
        return self.strategy.aggregate_metrics(server_round, results)

    def privacy_facts(self) -> dict[str, Any] | None:
        """``{epsilon, delta, clip_norm, noise_multiplier, accountant, sampling}`` or None."""
        privacy = self.settings.privacy
        if privacy is None:
            return None
        acc = self.accountant
        return {
            "epsilon": self.epsilon if acc is not None else float("inf"),
            "delta": privacy.delta,
            "clip_norm": privacy.clip_norm,
            "noise_multiplier": privacy.noise_multiplier,
            "accountant": acc.describe() if acc is not None else "none (no noise: ε is infinite)",
            "sampling": (
                "none"
                if acc is None
                else "fixed-size, without replacement"
                if acc.sampling == "fixed"
                else f"Poisson, rate {acc.sample_rate:g}"
                if acc.sample_rate < 1.0
                else "all"
            ),
        }

    def training_block(
        self,
        server_round: int,
        nodes: Sequence[str],
        metrics: dict[str, float] | None,
        rows: int | None,
        trainer: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The global model's ``training`` facts after ``server_round``.

        Replaces the block the model object carried from one node's training (its local
        loss, its own warm-start flag) with what describes the *global* model.
        """
        s = self.settings
        block: dict[str, Any] = {}
        for key in ("tool", "epochs", "learning_rate", "l2", "hidden", "activation"):
            if trainer and key in trainer:
                block[key] = trainer[key]
        block.update(
            {
                "federated": True,
                "strategy": s.strategy,
                "strategy_config": dict(s.strategy_config),
                "federated_round": server_round,
                "rounds": server_round,
                "rounds_planned": s.rounds,
                "participants": len(nodes),
                "participants_total": self.participants,
                "nodes": list(nodes),
                "warm_start": self.warm_start,
                "secure_aggregation": bool(s.secure_aggregation),
            }
        )
        if rows:
            block["rows"] = rows
        for key, value in (metrics or {}).items():
            block[key] = value
        if metrics and "loss" in metrics:
            block["final_loss"] = metrics["loss"]
        facts = self.privacy_facts()
        if facts is not None:
            block["privacy"] = facts
        return block

    def summary(self) -> dict[str, Any]:
        """What a run summary says about the step's privacy (empty without DP)."""
        facts = self.privacy_facts()
        if facts is None:
            return {}
        return {"privacy": facts}
