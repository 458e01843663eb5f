"""What a registered tool is: its role (:class:`ToolType`), inputs, outputs and config.

:class:`ToolSpec` is what the planner checks and the engine calls; ``@tool`` builds one
from a function's signature (:func:`flowfed.tools.core.build_spec`). The data and its
errors live here, apart from the decorator, so the planner and the catalog read a tool's
shape without the machinery that declares it.

Example:
    >>> from pydantic import BaseModel
    >>> class NoConfig(BaseModel):
    ...     pass
    >>> spec = ToolSpec("mean", "1", ToolType.ANALYSIS, fn=len, inputs={},
    ...                 outputs=[OutputSpec("value", float, False)], config_model=NoConfig)
    >>> spec.ref, spec.split_outputs(2.5)
    ('mean@1', {'value': 2.5})
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel


class ToolType(StrEnum):
    """The six scientific roles of seed 001; the planner enforces each one's rule."""

    DATABASE_ADAPTER = "database-adapter"
    PREPROCESSING = "preprocessing"
    DATA_TRANSFORMATION = "data-transformation"
    ANALYSIS = "analysis"
    SELF_LEARNED = "self-learned"
    EVALUATION = "evaluation"


TOOL_TYPE_RULES: dict[ToolType, str] = {
    ToolType.DATABASE_ADAPTER: "has no inputs: it loads data from outside and defines provenance",
    ToolType.PREPROCESSING: "prepares data deterministically and produces no model",
    ToolType.DATA_TRANSFORMATION: "reshapes, splits or aggregates data and produces no model",
    ToolType.ANALYSIS: "is trainable: it must output a model (a flowfed.Model with save/load)",
    ToolType.SELF_LEARNED: "derives results from data and params and forms no persistent model",
    ToolType.EVALUATION: "computes metrics only and never produces data or models",
}


class Lazy:
    """Annotate an input as ``Lazy`` to receive a handle instead of the loaded value.

    The handle (``name``, ``version``, ``hash``, ``size``, ``path``, ``load()``) reads the
    artifact's bytes only when ``load()`` is called, so a tool can skip or stream a
    large input.
    """

    __flowfed_lazy__: ClassVar[bool] = True
    name: str
    hash: str
    size: int

    def load(self) -> Any:
        """Read and deserialize the artifact (once)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A tool input: an artifact bound to a positional parameter."""

    name: str
    annotation: Any
    required: bool
    lazy: bool


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """A named tool output and whether it is a model."""

    name: str
    annotation: Any
    is_model: bool


@dataclass(eq=False)
class ToolSpec:
    """A registered tool: what the planner checks and the engine calls."""

    name: str
    version: str
    type: ToolType
    fn: Callable[..., Any]
    inputs: dict[str, InputSpec]
    outputs: list[OutputSpec]
    config_model: builtins.type[BaseModel]  # `type` is also a field name here
    ctx_param: str | None = None
    is_async: bool = False
    seed_task: bool = False
    description: str = ""
    output_kind: str = "single"  # single | namedtuple | dict | none
    allow_pickle: bool = False
    # For tools that read the outside world (database adapters): the version of what they
    # read, from their config (e.g. a file's hash). It joins the cache key, so a changed
    # source re-runs the tool; None means "cannot tell", which turns caching off.
    source_version: Callable[[dict[str, Any]], str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        """Output names in declaration order."""
        return [o.name for o in self.outputs]

    @property
    def ref(self) -> str:
        """``name@version``, the identity shown in catalogs and logs."""
        return f"{self.name}@{self.version}"

    @property
    def source_file(self) -> str | None:
        """File the tool's function is defined in (for messages)."""
        try:
            return inspect.getsourcefile(self.fn)
        except TypeError:
            return None

    def config_schema(self) -> dict[str, Any]:
        """The config's JSON Schema (what ``flowfed tools show`` prints)."""
        return self.config_model.model_json_schema()

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the tool."""
        return {
            "name": self.name,
            "version": self.version,
            "type": str(self.type),
            "description": self.description,
            "module": getattr(self.fn, "__module__", None),
            "inputs": [
                {"name": i.name, "type": _type_name(i.annotation), "required": i.required}
                for i in self.inputs.values()
            ],
            "outputs": [
                {"name": o.name, "type": _type_name(o.annotation), "model": o.is_model}
                for o in self.outputs
            ],
            "config_schema": self.config_schema(),
            "async": self.is_async,
            "seed_task": self.seed_task,
        }

    def split_outputs(self, result: Any) -> dict[str, Any]:
        """Map a tool's return value to its named outputs (ToolOutputError if it doesn't fit)."""
        names = self.output_names
        if self.output_kind == "none":
            return {}
        if self.output_kind == "single":
            return {names[0]: result}
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            extra = [k for k in result if k not in names]
            if missing or extra:
                raise ToolOutputError(
                    f"tool '{self.name}' returned outputs {sorted(map(str, result))}, "
                    f"but declares {names}"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unexpected {extra}" if extra else "")
                )
            return {n: result[n] for n in names}
        if isinstance(result, tuple) and len(result) == len(names):
            return dict(zip(names, result, strict=True))
        raise ToolOutputError(
            f"tool '{self.name}' must return {len(names)} outputs {names} "
            f"(a {self.output_kind} or a dict), got {type(result).__name__}"
        )


class ToolDefinitionError(TypeError):
    """A function that cannot be a tool as written (raised at decoration time)."""


class ToolOutputError(ValueError):
    """A tool returned something that does not match its declared outputs."""


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty or annotation is None:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
