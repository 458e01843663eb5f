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


def check(
    settings: Any,
    trainer: ToolSpec,
    participants: int | None,
    *,
    step_inputs: dict[str, str] | None = None,
) -> list[Problem]:
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
    hook = "scaffold_c" in trainer.config_model.model_fields
    if getattr(strategy, "control_variates", False) and not hook:
        out.append(
            Problem(
                "error",
                "strategy",
                f"strategy '{settings.strategy}' corrects local training with control "
                f"variates, but trainer '{trainer.name}' has no 'scaffold_c' config "
                "field (the control variate hook) to receive the server's c",
                "use flowfed.logistic_regression or flowfed.mlp, or add scaffold_c to "
                "your trainer with flowfed.tools.library.scaffold (docs/federated.md, "
                "SCAFFOLD)",
            )
        )
    if participants is not None:
        for message in strategy.check(participants):
            out.append(Problem("warning", "strategy_config", message, None))
    out.extend(
        Problem(level, field, message, hint)
        for level, field, message, hint in evaluation_problems(settings, step_inputs)
    )
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


def evaluation_problems(
    settings: Any, step_inputs: dict[str, str] | None
) -> list[tuple[str, str, str, str | None]]:
    """Build-time problems of the evaluation settings: ``(level, field, message, hint)``.

    ``step_inputs`` is the step's ``inputs`` mapping (None: unknown, not checked).
    """
    from flowfed.tools import get_registry

    out: list[tuple[str, str, str, str | None]] = []
    registry = get_registry()
    if settings.validation is not None:
        if step_inputs is not None and settings.validation not in step_inputs:
            known = ", ".join(step_inputs) or "none"
            out.append(
                (
                    "error",
                    "validation",
                    f"validation '{settings.validation}' is not an input of the step "
                    f"(inputs: {known})",
                    "add the per-dataset validation artifact under inputs, e.g. "
                    "inputs: {train: train, test: test} with validation: test",
                )
            )
        tool = find_tool(registry, settings.evaluate_tool)
        if tool is None:
            out.append(
                (
                    "error",
                    "evaluate_tool",
                    f"unknown evaluation tool '{settings.evaluate_tool}'",
                    "a node tool (model, table) -> {rows, val_loss, val_accuracy}; "
                    "the default is flowfed.fl_evaluate",
                )
            )
        elif len([i for i in tool.inputs.values() if i.required]) > 2 or len(tool.inputs) < 2:
            out.append(
                (
                    "error",
                    "evaluate_tool",
                    f"evaluation tool '{tool.name}' must take two inputs (the model, then "
                    f"the validation table); it takes: {', '.join(tool.inputs) or 'none'}",
                    None,
                )
            )
    elif settings.evaluate_fn is None and settings.evaluate_every != 1:
        out.append(
            (
                "warning",
                "evaluate_every",
                "evaluate_every has no effect without validation or evaluate_fn",
                None,
            )
        )
    if settings.evaluate_fn is not None:
        tool = find_tool(registry, settings.evaluate_fn)
        if tool is None:
            out.append(
                (
                    "error",
                    "evaluate_fn",
                    f"unknown evaluation function '{settings.evaluate_fn}'",
                    "a tool in a file listed under imports, taking the global model and "
                    "returning {metric: number}",
                )
            )
        elif len(tool.inputs) < 1 or sum(i.required for i in tool.inputs.values()) > 1:
            out.append(
                (
                    "error",
                    "evaluate_fn",
                    f"evaluate_fn '{tool.name}' must take the global model as its one "
                    f"required input; it takes: {', '.join(tool.inputs) or 'none'}",
                    None,
                )
            )
    return out


def find_tool(registry: Any, name: str) -> Any:
    """The tool ``name`` in ``registry``, loading flowfed's built-ins for a ``flowfed.*`` name."""
    spec = registry.find(name)
    if spec is None and name.startswith("flowfed."):
        import flowfed.tools.library  # noqa: F401  (the built-ins register on import)

        spec = registry.find(name)
    return spec
