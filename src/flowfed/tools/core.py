"""Tools: typed functions with a role, a config schema, inputs and named outputs.

A tool is a plain function. Its positional parameters are its inputs (artifacts), its
keyword-only parameters are its config (validated by a pydantic model generated from
them, exported as JSON Schema), a parameter annotated :class:`Context` (or named ``ctx``)
receives the run context, and its return annotation declares its outputs: one output, or
several named ones through a ``NamedTuple`` or ``TypedDict``.

Example:
    >>> from typing import NamedTuple
    >>> class Split(NamedTuple):
    ...     train: list
    ...     test: list
    >>> @tool(name="split_rows", version="1.0", type="data-transformation")
    ... def split_rows(rows: list, ctx: Context, *, ratio: float = 0.8) -> Split:
    ...     cut = int(len(rows) * ratio)
    ...     return Split(rows[:cut], rows[cut:])
    >>> spec = get_registry().get("split_rows")
    >>> list(spec.inputs), spec.output_names, sorted(spec.config_schema()["properties"])
    (['rows'], ['train', 'test'], ['ratio'])

This module declares and calls tools (``@tool``, ``@register_task``, reading a function's
signature into a :class:`ToolSpec`, :func:`call_tool`). What it declares lives in rooms
of its own, and every name is importable from here as well:

=================================  ==============================================
:mod:`flowfed.tools.spec`          ``ToolType``, ``ToolSpec``, inputs, outputs, ``Lazy``
:mod:`flowfed.tools.context`       ``Context``, ``EventSink``, ``TaskCancelled``
:mod:`flowfed.tools.registry`      ``Registry``, ``get_registry``, ``registering_into``
:mod:`flowfed.tools.model`         ``Model`` and a model artifact's bytes
=================================  ==============================================
"""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints, is_typeddict

from pydantic import BaseModel, ConfigDict, create_model

from flowfed.tools.context import Context, EventSink, TaskCancelled
from flowfed.tools.model import (
    MODEL_MAGIC,
    Model,
    model_bytes,
    model_from_bytes,
    model_header,
    model_to_bytes,
    split_model_bytes,
)
from flowfed.tools.registry import DuplicateTool, Registry, get_registry, registering_into
from flowfed.tools.spec import (
    TOOL_TYPE_RULES,
    InputSpec,
    Lazy,
    OutputSpec,
    ToolDefinitionError,
    ToolOutputError,
    ToolSpec,
    ToolType,
)

# The names that lived here before the split: callers keep importing them from here.
__all__ = [
    "MODEL_MAGIC",
    "TOOL_TYPE_RULES",
    "Context",
    "DuplicateTool",
    "EventSink",
    "InputSpec",
    "Lazy",
    "Model",
    "OutputSpec",
    "Registry",
    "TaskCancelled",
    "ToolDefinitionError",
    "ToolOutputError",
    "ToolSpec",
    "ToolType",
    "build_spec",
    "call_tool",
    "config_field_names",
    "get_registry",
    "model_bytes",
    "model_from_bytes",
    "model_header",
    "model_to_bytes",
    "register_task",
    "registering_into",
    "split_model_bytes",
    "tool",
]

F = TypeVar("F", bound=Callable[..., Any])


def _is_model_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and bool(getattr(annotation, "__flowfed_model__", False))


def _is_lazy(annotation: Any) -> bool:
    if getattr(annotation, "__flowfed_lazy__", False) is True:
        return True
    # Optional[Lazy] / Lazy | None: still a handle (None when the input is not wired).
    return any(getattr(a, "__flowfed_lazy__", False) is True for a in typing.get_args(annotation))


def tool(
    fn: F | None = None,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    type: str | ToolType = ToolType.DATA_TRANSFORMATION,
    outputs: list[str] | None = None,
    description: str | None = None,
    allow_pickle: bool = False,
    source_version: Callable[[dict[str, Any]], str | None] | None = None,
    registry: Registry | None = None,
) -> Any:
    """Declare a function as a flowfed tool and register it.

    Args:
        name: registry name (defaults to the function's name).
        version: the tool's version; part of every cache key.
        type: one of the six tool types (``database-adapter``, ``preprocessing``,
            ``data-transformation``, ``analysis``, ``self-learned``, ``evaluation``).
        outputs: names for several outputs when the return annotation does not name them
            (the function then returns a tuple or dict).
        allow_pickle: let outputs of unsupported types be pickled (flagged in the catalog).
        source_version: for tools reading outside data, a function of the config giving
            the version of that data (e.g. a file's sha256); it joins the cache key, and
            returning None turns caching off for the task.

    Example:
        >>> @tool(version="1", type="preprocessing")
        ... def scale(values: list, *, factor: float = 2.0) -> list:
        ...     return [v * factor for v in values]
        >>> get_registry().get("scale").config_model(factor=3).factor
        3.0
    """

    def wrap(f: F) -> F:
        spec = build_spec(
            f,
            name=name or f.__name__,
            version=str(version),
            type=type,
            outputs=outputs,
            description=description,
            allow_pickle=allow_pickle,
        )
        spec.source_version = source_version
        (registry if registry is not None else get_registry()).add(spec)
        f.__flowfed_tool__ = spec  # type: ignore[attr-defined]
        return f

    return wrap(fn) if fn is not None else wrap


def build_spec(
    f: Callable[..., Any],
    *,
    name: str,
    version: str,
    type: str | ToolType,
    outputs: list[str] | None = None,
    description: str | None = None,
    allow_pickle: bool = False,
) -> ToolSpec:
    """Derive a :class:`ToolSpec` from a function's signature (see :func:`tool`)."""
    try:
        ttype = ToolType(type)
    except ValueError:
        raise ToolDefinitionError(
            f"tool '{name}': unknown type {type!r}; use one of "
            + ", ".join(t.value for t in ToolType)
        ) from None
    try:
        hints = get_type_hints(f, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = dict(getattr(f, "__annotations__", {}))
    sig = inspect.signature(f)
    inputs: dict[str, InputSpec] = {}
    config_fields: dict[str, Any] = {}
    ctx_param: str | None = None
    for p in sig.parameters.values():
        ann = hints.get(p.name, p.annotation)
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"tool '{name}': *{p.name} / **{p.name} are not allowed; "
                "declare each input and config field by name"
            )
        if ann is Context or (p.name in ("ctx", "context") and ann in (p.empty, Any)):
            ctx_param = p.name
            continue
        if p.kind is p.KEYWORD_ONLY:
            field_ann = Any if ann is p.empty else ann
            config_fields[p.name] = (field_ann, ... if p.default is p.empty else p.default)
        else:
            inputs[p.name] = InputSpec(p.name, ann, p.default is p.empty, _is_lazy(ann))
    config_model = create_model(
        f"{_camel(name)}Config",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **config_fields,
    )
    ret = hints.get("return", sig.return_annotation)
    out_specs, kind = _outputs_from(ret, outputs, name)
    return ToolSpec(
        name=name,
        version=version,
        type=ttype,
        fn=f,
        inputs=inputs,
        outputs=out_specs,
        config_model=config_model,
        ctx_param=ctx_param,
        is_async=inspect.iscoroutinefunction(f),
        description=description or inspect.getdoc(f) or "",
        output_kind=kind,
        allow_pickle=allow_pickle,
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_") if part)


def _outputs_from(
    ret: Any, names: list[str] | None, tool_name: str
) -> tuple[list[OutputSpec], str]:
    if names:
        return [OutputSpec(n, Any, False) for n in names], ("single" if len(names) == 1 else "dict")
    if ret is None or ret is type(None):
        return [], "none"
    if ret is inspect.Signature.empty:
        return [OutputSpec("output", Any, False)], "single"
    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        anns = typing.get_type_hints(ret)
        return [
            OutputSpec(n, anns.get(n, Any), _is_model_type(anns.get(n))) for n in ret._fields
        ], ("namedtuple")
    if is_typeddict(ret):
        anns = typing.get_type_hints(ret)
        return [OutputSpec(n, a, _is_model_type(a)) for n, a in anns.items()], "dict"
    return [OutputSpec("output", ret, _is_model_type(ret))], "single"


def register_task(arg: Any = None, *, registry: Registry | None = None, version: str = "1") -> Any:
    """Register a seed-003 task: ``async def task(context: dict) -> {status, data, error}``.

    Works bare (``@register_task``) or with a name (``@register_task("fetch")``). The task
    receives the shared execution context (with every earlier task's result under
    ``"<task>_result"``) and its ``data`` becomes the artifact ``<task>_result``.

    Example:
        >>> @register_task("fetch_numbers")
        ... async def fetch(context):
        ...     return {"status": "success", "data": [1, 2, 3], "error": None}
        >>> get_registry().get("fetch_numbers").seed_task
        True
    """

    def wrap(f: F, task_name: str | None = None) -> F:
        if not inspect.iscoroutinefunction(f):
            raise ToolDefinitionError(
                f"task '{task_name or f.__name__}' must be an async function of a context dict"
            )
        spec = ToolSpec(
            name=task_name or f.__name__,
            version=version,
            type=ToolType.DATA_TRANSFORMATION,
            fn=f,
            inputs={},
            outputs=[OutputSpec("result", Any, False)],
            config_model=create_model(
                f"{_camel(task_name or f.__name__)}Config", __config__=ConfigDict(extra="allow")
            ),
            is_async=True,
            seed_task=True,
            description=inspect.getdoc(f) or "",
        )
        (registry if registry is not None else get_registry()).add(spec)
        f.__flowfed_tool__ = spec  # type: ignore[attr-defined]
        return f

    if callable(arg):
        return wrap(arg)
    return lambda f: wrap(f, arg)


_FIELD_NAMES: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def config_field_names(cls: type[BaseModel]) -> tuple[str, ...]:
    """The field names of a tool's config model, read once per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(cls.model_fields)
    return names


def call_tool(
    spec: ToolSpec, args: dict[str, Any], config: BaseModel | dict[str, Any], ctx: Context | None
) -> Any:
    """Call a tool's function with inputs, config and context (async tools run to completion)."""
    kwargs = dict(args)
    if spec.seed_task:
        import asyncio  # only async tools need it: keep it out of start-up

        coro = spec.fn(kwargs.get("context", {}))
        return asyncio.run(coro)
    if isinstance(config, BaseModel):
        # Config fields keep the validated values, including nested pydantic models.
        # The field names are read once per config class: pydantic builds a new mapping
        # on every ``model_fields`` access, a cost paid per task otherwise.
        for k in config_field_names(type(config)):
            kwargs[k] = getattr(config, k)
    else:
        kwargs.update(config)
    if spec.ctx_param:
        kwargs[spec.ctx_param] = ctx
    if spec.is_async:
        import asyncio

        return asyncio.run(spec.fn(**kwargs))
    return spec.fn(**kwargs)
