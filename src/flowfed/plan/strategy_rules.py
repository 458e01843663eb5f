"""The build-time rules of a federated step's strategy settings (pure: no I/O).

The planner (:mod:`flowfed.plan.graph`) reports these with the step's location; they
read fl's strategy classes (which strategy exists, what it takes, what it can be combined
with) and never run one.

Example:
    >>> from types import SimpleNamespace
    >>> describe(SimpleNamespace(strategy="fedavg", rounds=30, min_nodes=2,
    ...     secure_aggregation=False, privacy=None))
    'fedavg, 30 rounds, min_nodes 2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowfed.tools.core import ToolSpec

__all__ = ["Problem", "check", "describe"]


def check(settings: Any, trainer: ToolSpec, participants: int | None) -> list[Problem]:
    """Build-time problems of a federated step's settings with its trainer.

    ``participants`` is how many nodes it trains on (None: not known at build time).
    Errors: an unknown strategy or setting, a strategy that cannot run under secure
    aggregation or DP (never silently swapped for another), FedProx with a trainer that
    has no ``mu``. Warnings: settings that do nothing (a trimmed mean that trims none).
    """
    from flowfed.fl.server import combination_problems
    from flowfed.fl.strategies import make_strategy, strategy_class, strategy_names
    from flowfed.fl.types import AggregationError

    out: list[Problem] = []
    if strategy_class(settings.strategy) is None:
        out.append(
            Problem(
                "error",
                "strategy",
                f"unknown strategy '{settings.strategy}' (known: {', '.join(strategy_names())})",
                "a strategy of your own: subclass flowfed.fl.Strategy with a name, in a "
                "file listed under imports",
            )
        )
        return out
    try:
        strategy = make_strategy(settings.strategy, **settings.strategy_config)
    except AggregationError as exc:
        out.append(Problem("error", "strategy_config", str(exc), None))
        return out
    for message in combination_problems(
        settings.strategy,
        secure_aggregation=bool(settings.secure_aggregation),
        privacy=settings.privacy is not None,
    ):
        field = "secure_aggregation" if "secure_aggregation" in message else "privacy"
        out.append(Problem("error", field, message, None))
    if getattr(strategy, "proximal", False):
        fields = trainer.config_model.model_fields
        if "mu" not in fields:
            out.append(
                Problem(
                    "error",
                    "strategy",
                    f"strategy '{settings.strategy}' adds a proximal term to the local "
                    f"objective, but trainer '{trainer.name}' has no 'mu' config field to "
                    "receive it",
                    "use a trainer with a proximal term (flowfed.logistic_regression, "
                    "flowfed.mlp, flowfed.torch_mlp, flowfed.torch_module) or strategy fedavg",
                )
            )
    if participants is not None:
        for message in strategy.check(participants):
            out.append(Problem("warning", "strategy_config", message, None))
    return out


@dataclass(frozen=True)
class Problem:
    """One build-time finding of :func:`check`: ``level`` is ``error`` or ``warning``,
    ``field`` the federated setting it is about."""

    level: str
    field: str
    message: str
    hint: str | None


def describe(settings: Any) -> str:
    """One line for logs: ``fedavg, 30 rounds, min_nodes 2``."""
    parts = [settings.strategy, f"{settings.rounds} rounds"]
    if settings.min_nodes:
        parts.append(f"min_nodes {settings.min_nodes}")
    if settings.secure_aggregation:
        parts.append("secure aggregation")
    if settings.privacy is not None:
        parts.append("client-level DP")
    return ", ".join(parts)
