"""Which tool a tool-side run drives: ``module_or_file:function`` to its :class:`ToolSpec`.

The runtime loads the tool named on its command line (a plain function gets a default
spec, so authors need not use the decorator), computes its config schema once per
process and validates configs against it. The engine, a warm worker preloading a tool,
``flowfed tool dev`` and a cluster worker all load tools this one way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from flowfed.runtime.failures import RunFailure
from flowfed.runtime.protocol import ErrorDetail
from flowfed.tools.core import ToolSpec, build_spec
from flowfed.tools.loading import ImportProblem, import_one


def load_tool(ref: str) -> ToolSpec:
    """Load ``module_or_file:function`` and its ToolSpec (a plain function gets a default one).

    Raises :class:`RunFailure` (phase ``load``) when the module or the function is missing.

    Example:
        >>> spec = load_tool("textwrap:dedent")
        >>> spec.name, list(spec.inputs)
        ('dedent', ['text'])
    """
    module_ref, sep, fn_name = ref.rpartition(":")
    if not sep or not module_ref or not fn_name:
        raise RunFailure(
            f"--tool must read module_or_file:function, got {ref!r}",
            phase="load",
            error_type="UsageError",
        )
    try:
        module = import_one(module_ref)
    except ImportProblem as exc:
        raise RunFailure(str(exc), phase="load", error_type="ImportProblem") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RunFailure(
            f"{module_ref} has no function {fn_name!r}", phase="load", error_type="ImportProblem"
        )
    spec = getattr(fn, "__flowfed_tool__", None)
    if isinstance(spec, ToolSpec):
        return spec
    # A plain function is a tool too: the runtime must not force the decorator on authors.
    try:
        return build_spec(fn, name=fn_name, version="0", type="data-transformation")
    except TypeError as exc:
        raise RunFailure(str(exc), phase="load", error_type=type(exc).__name__) from None


_SCHEMAS: dict[int, tuple[ToolSpec, dict[str, Any]]] = {}


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """``spec``'s config JSON Schema, computed once per process.

    A warm worker (:mod:`flowfed.runtime.worker`) computes it before it forks a call:
    pydantic's schema generation costs a few milliseconds in every fresh child otherwise.
    """
    got = _SCHEMAS.get(id(spec))
    if got is None or got[0] is not spec:
        got = _SCHEMAS[id(spec)] = (spec, spec.config_schema())
    return got[1]


def validate_config(spec: ToolSpec, values: dict[str, Any], *, phase: str) -> BaseModel:
    """``values`` validated by ``spec``'s config model.

    Raises :class:`RunFailure` (``phase``: ``config`` or ``hyperparameters``, type
    ``ConfigError``) with one detail per invalid field, named ``config.<field>``.

    Example:
        >>> validate_config(load_tool("textwrap:dedent"), {}, phase="config")
        DedentConfig()
    """
    try:
        return spec.config_model.model_validate(values)
    except ValidationError as exc:
        details = [
            ErrorDetail(field=".".join(["config", *(str(p) for p in e["loc"])]), message=e["msg"])
            for e in exc.errors()
        ]
        listing = "; ".join(f"{d.field}: {d.message}" for d in details)
        raise RunFailure(
            f"invalid {phase} for tool '{spec.name}': {listing}",
            phase=phase,
            error_type="ConfigError",
            details=details,
        ) from None
