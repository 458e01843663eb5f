"""flowfed: federated machine-learning workflows with typed tools, inferred DAGs,
a strict task lifecycle and content-hashed artifacts with lineage.

Example:
    >>> from flowfed import tool, Flow, Step
    >>> @tool(version="1", type="database-adapter")
    ... def numbers() -> list:
    ...     return [1, 2, 3]
    >>> Flow(name="tiny", steps=[Step(name="load", tool="numbers")]).steps[0].tool
    'numbers'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowfed.api import load_artifact, prepare, run_flow
    from flowfed.spec import Diagnostic, Flow, FlowError, Next, Step, StepTool, load_flow
    from flowfed.tools import (
        Context,
        Lazy,
        Model,
        ToolType,
        get_registry,
        register_task,
        tool,
    )

__version__ = "0.1.0"

__all__ = [
    "Context",
    "Diagnostic",
    "Flow",
    "FlowError",
    "Lazy",
    "Model",
    "Next",
    "Step",
    "StepTool",
    "ToolType",
    "__version__",
    "get_registry",
    "load_artifact",
    "load_flow",
    "prepare",
    "register_task",
    "run_flow",
    "tool",
]

# The public names are imported on first use (PEP 562) so that ``import flowfed`` (and with
# it every CLI command) does not pay for the planner, pydantic models and tools up front.
_LAZY = {
    "prepare": "flowfed.api",
    "load_artifact": "flowfed.api",
    "run_flow": "flowfed.api",
    "Diagnostic": "flowfed.spec",
    "Flow": "flowfed.spec",
    "FlowError": "flowfed.spec",
    "Next": "flowfed.spec",
    "Step": "flowfed.spec",
    "StepTool": "flowfed.spec",
    "load_flow": "flowfed.spec",
    "Context": "flowfed.tools",
    "Lazy": "flowfed.tools",
    "Model": "flowfed.tools",
    "ToolType": "flowfed.tools",
    "get_registry": "flowfed.tools",
    "register_task": "flowfed.tools",
    "tool": "flowfed.tools",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
