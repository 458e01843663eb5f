"""The planner: a pure compiler from a Flow to a TaskGraph."""

from flowfed.plan.expressions import Expression, ExpressionError
from flowfed.plan.graph import Route, TaskGraph, TaskNode, plan

__all__ = [
    "Expression",
    "ExpressionError",
    "Route",
    "TaskGraph",
    "TaskNode",
    "plan",
]
