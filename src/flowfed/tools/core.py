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
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import inspect
import typing
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints, is_typeddict

from pydantic import BaseModel, ConfigDict, create_model

F = TypeVar("F", bound=Callable[..., Any])


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


#: The first bytes of a model artifact; a header line ``module:QualName`` follows, then
#: what the model's ``save`` wrote. The engine and the tool-side runtime both read it.
MODEL_MAGIC = b"FFMODEL1\n"


def model_header(value: object) -> bytes:
    """The header of ``value``'s model artifact: magic, then its class path and a newline."""
    cls = type(value)
    return MODEL_MAGIC + f"{cls.__module__}:{cls.__qualname__}".encode() + b"\n"


def split_model_bytes(data: bytes) -> tuple[Any, bytes]:
    """``(class, body)`` of a model artifact's bytes (ValueError without the header)."""
    import importlib

    if not data.startswith(MODEL_MAGIC):
        raise ValueError("not a flowfed model artifact (bad header)")
    end = data.index(b"\n", len(MODEL_MAGIC))
    module, _, qualname = data[len(MODEL_MAGIC) : end].decode().partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj, data[end + 1 :]


def model_to_bytes(value: object) -> bytes | None:
    """What ``value.save`` would write, from its optional ``to_bytes()``; None without one.

    Models are handed from task to task many times per federated round. A model that can
    serialize in memory spares each hand-off a file written, read back and removed.
    """
    fn = getattr(value, "to_bytes", None)
    if callable(fn) and callable(getattr(type(value), "from_bytes", None)):
        data = fn()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"{type(value).__qualname__}.to_bytes() must return bytes, "
                f"not {type(data).__name__}"
            )
        return bytes(data)
    return None


def model_bytes(value: object, path: Path) -> bytes:
    """The bytes of model ``value``: its ``to_bytes()``, else what ``value.save(path)``
    writes (read back, then removed).

    Raises TypeError when ``to_bytes()`` returns something else than bytes, ValueError when
    ``save`` does not write a single file at ``path``.

    Example:
        >>> import tempfile
        >>> class M:
        ...     def save(self, path):
        ...         open(path, "wb").write(b"w")
        >>> model_bytes(M(), Path(tempfile.mkdtemp()) / "m.model")
        b'w'
    """
    body = model_to_bytes(value)
    if body is not None:
        return body
    try:
        value.save(path)  # type: ignore[attr-defined]
        if not path.is_file():
            cls = type(value)
            raise ValueError(
                f"{cls.__module__}:{cls.__qualname__}.save(path) must write a single file at path"
            )
        return path.read_bytes()
    finally:
        if path.is_dir():  # a save that wrote a folder: refused above, not left behind
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def model_from_bytes(cls: Any, data: bytes) -> Any:
    """``cls.from_bytes(data)`` when the class has both halves of the bytes form, else
    :data:`NotImplemented` (the caller then goes through a file and ``cls.load``)."""
    fn = getattr(cls, "from_bytes", None)
    if callable(fn) and callable(getattr(cls, "to_bytes", None)):
        return fn(data)
    return NotImplemented


class Model:
    """Base class for trained models: persisted only through ``save`` / ``load``.

    An ``analysis`` tool must return at least one ``Model``. Subclasses write their
    weights to one file and read them back, so a model artifact is reproducible and
    portable across versions of the code that did not change the format.

    A subclass may also define ``to_bytes()`` and the classmethod ``from_bytes(data)``,
    returning and reading exactly what ``save`` writes. flowfed then keeps the model in
    memory when it stores or hands it on (no file written and read back per hand-off); a
    model with only ``save``/``load`` works the same, through a scratch file.

    Example:
        >>> import json, tempfile, os
        >>> class Threshold(Model):
        ...     def __init__(self, t: float) -> None:
        ...         self.t = t
        ...     def save(self, path):
        ...         Path(path).write_text(json.dumps({"t": self.t}))
        ...     @classmethod
        ...     def load(cls, path):
        ...         return cls(json.loads(Path(path).read_text())["t"])
        >>> d = tempfile.mkdtemp(); Threshold(0.3).save(os.path.join(d, "m"))
        >>> Threshold.load(os.path.join(d, "m")).t
        0.3
    """

    __flowfed_model__: ClassVar[bool] = True

    def save(self, path: str | Path) -> None:
        """Write the model (weights included) to the file ``path``."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read a model written by :meth:`save`."""
        raise NotImplementedError


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


EventSink = Callable[[str, dict[str, Any]], None]
"""Where a context's telemetry goes (the engine, a process pipe, a WebSocket)."""


class TaskCancelled(Exception):
    """Raised inside a tool by :meth:`Context.check_cancelled` once its task is cancelled."""


class Context:
    """What a running tool sees of the platform: logs, metrics, progress, identity.

    Tools report through the context instead of printing, so telemetry reaches the
    monitor, the database and the APIs without touching global stdout.

    Example:
        >>> events = []
        >>> ctx = Context(lambda kind, payload: events.append((kind, payload)), step="train")
        >>> ctx.log("epoch done"); ctx.metric("loss", 0.25, step=1); ctx.progress(1, 4)
        >>> [k for k, _ in events]
        ['log', 'metric', 'progress']
    """

    __slots__ = (
        "_cancelled",
        "_sink",
        "attempt",
        "dataset",
        "iteration",
        "node",
        "round",
        "run_id",
        "step",
        "task_id",
    )

    def __init__(
        self,
        sink: EventSink | None = None,
        *,
        run_id: str = "",
        task_id: str = "",
        step: str = "",
        node: str = "local",
        attempt: int = 1,
        iteration: int = 1,
        dataset: dict[str, Any] | None = None,
        round: int | None = None,
    ) -> None:
        self._sink = sink
        self._cancelled = False
        self.run_id = run_id
        self.task_id = task_id
        self.step = step
        self.node = node
        self.attempt = attempt
        self.iteration = iteration
        # The node dataset this task works on (``on: each-dataset``): name, path, format,
        # schema, as the node registered it. None for central tasks.
        self.dataset = dataset
        self.round = round

    def log(self, message: str, level: str = "info") -> None:
        """Record a log line for this task."""
        if self._sink is not None:
            self._sink("log", {"level": level, "message": str(message)})

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a numeric metric (the monitor shows the latest value of each)."""
        if self._sink is not None:
            self._sink("metric", {"name": name, "value": float(value), "step": step})

    def progress(
        self,
        done: float,
        total: float | None = None,
        message: str | None = None,
        *,
        unit: str | None = None,
    ) -> None:
        """Report progress: ``progress(0.4)``, ``progress(40, 100)`` or, with counts the
        monitors show ("5,000/5,000 images"), ``progress(5000, 5000, unit="images")``.

        ``done`` and ``total`` are counts (``total`` None: not known yet); ``unit`` names
        what is counted. A node passes on only numbers and, unless its policy shares
        logs, only a unit from :data:`flowfed.runtime.usage.UNITS`.
        """
        frac = float(done) / float(total) if total else (0.0 if unit else float(done))
        if self._sink is not None:
            payload: dict[str, Any] = {"fraction": max(0.0, min(1.0, frac)), "message": message}
            if total is not None or unit is not None:
                payload.update(done=done, total=total, unit=unit)
            self._sink("progress", payload)

    def report_resources(self, figures: dict[str, float]) -> None:
        """For runners, not tools: the attempt's resource figures so far (``wall_s``,
        ``cpu_s``, ``peak_rss_mb``; see :mod:`flowfed.runtime.usage`)."""
        if self._sink is not None:
            self._sink("resources", figures)

    @property
    def cancelled(self) -> bool:
        """True once the task has been cancelled or timed out."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task was cancelled (call it in long loops)."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id or self.step} was cancelled")

    def cancel(self) -> None:
        """Mark the task cancelled; further telemetry is dropped."""
        self._cancelled = True
        self._sink = None


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


class DuplicateTool(ValueError):
    """Two different functions registered under one name and version."""


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty or annotation is None:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _is_model_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and bool(getattr(annotation, "__flowfed_model__", False))


def _is_lazy(annotation: Any) -> bool:
    if getattr(annotation, "__flowfed_lazy__", False) is True:
        return True
    # Optional[Lazy] / Lazy | None: still a handle (None when the input is not wired).
    return any(getattr(a, "__flowfed_lazy__", False) is True for a in typing.get_args(annotation))


class Registry:
    """Tools by name. ``flowfed.tools.get_registry()`` is the process-wide default."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def add(self, spec: ToolSpec) -> ToolSpec:
        """Register ``spec``; re-registering the same function (a module re-import) replaces."""
        old = self._tools.get(spec.name)
        if old is not None and not _same_function(old.fn, spec.fn):
            raise DuplicateTool(
                f"tool '{spec.name}' is already registered by "
                f"{_fn_identity(old.fn)}; {_fn_identity(spec.fn)} cannot reuse the name"
            )
        self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec:
        """The tool called ``name`` (``name@version`` is accepted and checked)."""
        base, _, version = name.partition("@")
        spec = self._tools[base]
        if version and version != spec.version:
            raise KeyError(name)
        return spec

    def find(self, name: str) -> ToolSpec | None:
        """Like :meth:`get`, but None when missing."""
        try:
            return self.get(name)
        except KeyError:
            return None

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> typing.Iterator[ToolSpec]:
        return iter([self._tools[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._tools)


def _fn_identity(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _source_of(fn: Callable[..., Any]) -> tuple[str, int, str] | None:
    """Where ``fn`` is defined: (resolved file, first line, qualified name), if known."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None
    try:
        file = str(Path(code.co_filename).resolve())
    except OSError:
        file = code.co_filename
    return file, code.co_firstlineno, getattr(fn, "__qualname__", "?")


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether ``a`` and ``b`` are one tool: the same object, or the same definition.

    A second tools file that imports a tool (or a helper module holding one) from the
    first gets the function object already registered, or, when the first file was loaded
    by path and the second imports it by module name, the same source executed under
    another module name. Neither is a second tool with the name.
    """
    if a is b or _fn_identity(a) == _fn_identity(b):
        return True
    where = _source_of(a)
    return where is not None and where == _source_of(b)


_DEFAULT = Registry()

# A registry that replaces the default in one thread (or task) only, see `registering_into`.
_OVERRIDE: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "flowfed_registry", default=None
)


def get_registry() -> Registry:
    """The registry that ``@tool`` and ``@register_task`` fill: the process-wide one, or
    the one :func:`registering_into` set for the calling thread."""
    override = _OVERRIDE.get()
    return _DEFAULT if override is None else override


@contextlib.contextmanager
def registering_into(registry: Registry) -> Iterator[Registry]:
    """Send this thread's ``@tool`` registrations to ``registry`` for the block.

    Other threads keep registering into the process-wide registry: a cluster worker loads
    one flow's tools file on one thread while others run tools (which may import modules
    that register tools of their own).

    Example:
        >>> private = Registry()
        >>> with registering_into(private):
        ...     @tool(version="1")
        ...     def only_here() -> int:
        ...         return 1
        >>> private.find("only_here") is not None, get_registry().find("only_here")
        (True, None)
    """
    token = _OVERRIDE.set(registry)
    try:
        yield registry
    finally:
        _OVERRIDE.reset(token)


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
