"""The planner: a pure compiler from a Flow to a TaskGraph."""

from flowfed.plan.expressions import Expression, ExpressionError
from flowfed.plan.graph import Route, TaskGraph, TaskNode, parse_param_overrides, plan

__all__ = [
    "Expression",
    "ExpressionError",
    "Route",
    "TaskGraph",
    "TaskNode",
    "parse_param_overrides",
    "plan",
]
