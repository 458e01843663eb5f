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

from flowfed.api import prepare, run_flow
from flowfed.spec import Diagnostic, Flow, FlowError, Next, Step, load_flow
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
    "ToolType",
    "__version__",
    "get_registry",
    "load_flow",
    "prepare",
    "register_task",
    "run_flow",
    "tool",
]
