"""Read a flow from a YAML or JSON file (or text), remembering where every value was.

Lines are kept in a :class:`SourceMap` from value paths (``("steps", 2, "params", "lr")``)
to line numbers, so that schema errors here and planner errors later can both say
``flow.yaml:14``. The seed-003 JSON format (``{"flow": {"start_task": ..., "tasks": ...,
"conditions": ...}}``) is recognised and converted to the same :class:`Flow` model.

Example:
    >>> loaded = parse_flow_text('name: demo\\nsteps:\\n  - name: a\\n    tool: t\\n', "f.yaml")
    >>> loaded.flow.steps[0].tool, loaded.source.line(("steps", 0, "tool"))
    ('t', 4)
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flowfed.collector import paused
from flowfed.spec import limits
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.models import END, Flow

PathKey = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Line numbers (1-based) of the values of a parsed document, by path."""

    file: str | None = None
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: PathKey) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def diag(
        self,
        message: str,
        path: PathKey = (),
        *,
        step: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> Diagnostic:
        """A diagnostic located at ``path`` in this document."""
        return Diagnostic(message, self.file, self.line(path), step, field, hint)


@dataclass
class LoadedFlow:
    """A parsed, schema-valid flow and where it came from."""

    flow: Flow
    source: SourceMap
    path: Path | None = None
    #: Problems found while reading that still let a flow be built (the seed-003 format
    #: drops a broken condition and goes on): :func:`flowfed.plan.plan` raises them with
    #: its own, so every problem of a flow is reported in one pass. A caller that does not
    #: plan must check :meth:`raise_problems` itself.
    problems: list[Diagnostic] = field(default_factory=list)
    #: Things worth saying that do not stop the flow (keys the seed-003 format ignores).
    warnings: list[Diagnostic] = field(default_factory=list)

    def raise_problems(self) -> None:
        """Raise :class:`FlowError` if reading found problems (see :attr:`problems`)."""
        if self.problems:
            raise FlowError(self.problems)

    @property
    def base_dir(self) -> Path:
        """Directory that relative ``imports`` resolve against."""
        return self.path.parent if self.path else Path.cwd()


def load_flow(path: str | Path) -> LoadedFlow:
    """Load and schema-validate a flow file (``.yaml``, ``.yml`` or ``.json``).

    Raises :class:`FlowError` with located diagnostics on any problem, among them
    :class:`~flowfed.spec.limits.InputLimitError` for a file over the limits of
    :mod:`flowfed.spec.limits` (size, nesting, values with aliases expanded).
    """
    p = Path(path)
    if not p.exists():
        raise FlowError([Diagnostic(f"flow file not found: {p}", file=str(p))])
    if p.is_dir():
        raise FlowError([Diagnostic(f"{p} is a directory, not a flow file", file=str(p))])
    try:
        size = p.stat().st_size
    except OSError:
        size = 0
    if size > limits.MAX_DOCUMENT_BYTES:
        # Refused before reading: a huge file would cost its size in memory first.
        raise limits.InputLimitError(
            "size",
            f"the document is {size:,} bytes, over the limit of {limits.MAX_DOCUMENT_BYTES:,}",
            str(p),
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Diagnostic(f"cannot read flow file: {exc}", file=str(p))]) from None
    loaded = parse_flow_text(text, str(p))
    loaded.path = p.resolve()
    return loaded


def parse_flow_text(text: str, filename: str = "<flow>", *, under: str | None = None) -> LoadedFlow:
    """Parse flow text (YAML or JSON, chosen by ``filename``'s suffix, else sniffed).

    ``under`` names a top-level key holding the flow (an API request such as
    ``{"definition": {...}, "params": ...}``): the flow is read from there, and line
    numbers still point into ``text``. A seed-003 document is recognised either way.
    """
    # Parsing keeps every node, mark and model alive until the flow is built: with the
    # collector on, a 10,000-step file took 1.9 s instead of 0.4 s (flowfed.collector).
    with paused():
        return _parse_flow_text(text, filename, under)


def _parse_flow_text(text: str, filename: str, under: str | None) -> LoadedFlow:
    # Before anything is built: an alias bomb, a deep nest or a huge flat list is refused
    # here, after one flat pass over the parser's events (see flowfed.spec.limits).
    limits.check_yaml(text, filename)
    is_json = filename.endswith(".json") or text.lstrip().startswith("{")
    if is_json:
        if limits.json_depth_exceeds(text):
            # JSON that YAML could not scan (e.g. tabs) was not depth-checked yet.
            raise limits.InputLimitError(
                "depth", f"nesting deeper than {limits.MAX_DEPTH} levels", filename
            )
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlowError(
                [Diagnostic(f"invalid JSON: {exc.msg} (column {exc.colno})", filename, exc.lineno)]
            ) from None
    data, lines = _compose(text, filename)
    source = SourceMap(filename, lines)
    if not isinstance(data, dict):
        raise FlowError(
            [source.diag("a flow file must be a mapping with 'name' and 'steps' at the top")]
        )
    if under is not None and not _is_seed003(data):
        inner = data.get(under)
        if not isinstance(inner, dict):
            raise FlowError(
                [source.diag(f"'{under}' must be a flow object", (under,), field=under)]
            )
        lines = {k[1:]: v for k, v in source.lines.items() if k[:1] == (under,)}
        data, source = inner, SourceMap(filename, lines)
        if _is_seed003({"flow": inner}):
            # A bare seed-003 flow object: give it back the wrapper its format has.
            data = {"flow": inner}
            source = SourceMap(filename, {("flow", *k): v for k, v in lines.items()})
    if not _is_seed003(data):
        return LoadedFlow(validate_flow_data(data, source), source)
    data, source, problems, warnings = _from_seed003(data, source)
    try:
        flow = validate_flow_data(data, source)
    except FlowError as exc:
        raise FlowError(problems + exc.diagnostics) from None
    return LoadedFlow(flow, source, problems=problems, warnings=warnings)


def validate_flow_data(data: dict[str, Any], source: SourceMap) -> Flow:
    """Validate a parsed mapping against the :class:`Flow` model, with located errors."""
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowError(_diagnostics_from_validation(exc, data, source)) from None


def _diagnostics_from_validation(
    exc: ValidationError, data: dict[str, Any], source: SourceMap
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    raw_steps = data.get("steps")
    steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
    for err in exc.errors():
        loc = tuple(err["loc"])
        step_name = None
        field_path: str | None = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            idx = loc[1]
            if idx < len(steps) and isinstance(steps[idx], dict):
                step_name = str(steps[idx].get("name") or f"#{idx + 1}")
            field_path = ".".join(str(x) for x in loc[2:]) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'"
        elif err["type"] == "missing":
            msg = f"missing required key '{loc[-1]}'"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif "input" in err:
            msg = f"{msg} (got {_short(err['input'])})"
        out.append(source.diag(msg, loc, step=step_name, field=field_path or None))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- YAML composition with line tracking --------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides a user's mistake)."""


#: libyaml's parser when PyYAML was built with it: the same nodes and line marks as the
#: pure-Python parser, about ten times faster (a 10,000-step flow file took 4.4 s to load
#: through the pure-Python one). Scalars are still resolved and constructed in Python by
#: the safe constructor, so values are the same.
_PARSER: type = getattr(yaml, "CSafeLoader", None) or _Loader


def _compose(text: str, filename: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        node = yaml.compose(text, Loader=_PARSER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise FlowError([Diagnostic(f"invalid YAML: {problem}", filename, line)]) from None
    if node is None:
        raise FlowError([Diagnostic("the flow file is empty", filename)])
    lines: dict[PathKey, int] = {(): node.start_mark.line + 1}
    problems: list[Diagnostic] = []
    # One constructor for the whole document (one per node cost a loader's set-up each).
    data = _build(node, (), lines, problems, filename, _Loader(""))
    if problems:
        raise FlowError(problems)
    return data, lines


def read_documents(text: str, filename: str) -> list[tuple[Any, SourceMap]]:
    """Parse YAML or JSON text exactly as flow files are read, one entry per document.

    The same rules as flows: input limits first, YAML 1.1 booleans as keys stay text (a
    bare ``on:`` key is ``"on"``, not ``True``), duplicate keys and unsafe tags are
    errors, and every value's line is kept. A YAML file may hold several documents
    separated by ``---``. Raises :class:`FlowError` with every located problem.

    Example:
        >>> [(d, s.line(("on",))) for d, s in read_documents("a: 1\\n---\\non: x\\n", "t.yaml")]
        [({'a': 1}, 1), ({'on': 'x'}, 3)]
    """
    with paused():
        limits.check_yaml(text, filename)
        if filename.endswith(".json"):
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise FlowError(
                    [
                        Diagnostic(
                            f"invalid JSON: {exc.msg} (column {exc.colno})", filename, exc.lineno
                        )
                    ]
                ) from None
        try:
            nodes = list(yaml.compose_all(text, Loader=_PARSER))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise FlowError([Diagnostic(f"invalid YAML: {problem}", filename, line)]) from None
        out: list[tuple[Any, SourceMap]] = []
        problems: list[Diagnostic] = []
        construct = _Loader("")
        for node in nodes:
            if node is None:
                continue
            lines: dict[PathKey, int] = {}
            data = _build(node, (), lines, problems, filename, construct)
            out.append((data, SourceMap(filename, lines)))
        if problems:
            raise FlowError(problems)
        if not out:
            raise FlowError([Diagnostic("the file is empty", filename)])
        return out


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def _build(
    node: yaml.Node,
    path: PathKey,
    lines: dict[PathKey, int],
    problems: list[Diagnostic],
    fn: str,
    construct: _Loader,
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
        # A collection is built here, not by the constructor: refuse the tags it would
        # (`!!python/object/apply:os.system [...]`) instead of reading them as plain data.
        problems.append(
            Diagnostic(
                f"invalid YAML value: could not determine a constructor for the tag {node.tag!r}",
                fn,
                node.start_mark.line + 1,
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                # `? [a, b]\n: 1`: YAML allows it, a dict cannot hold it.
                problems.append(
                    Diagnostic(
                        "invalid YAML key: a key must be a plain value, not a list or mapping",
                        fn,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            if key_node.tag == "tag:yaml.org,2002:bool":
                # YAML 1.1 reads a bare `on:` key as True; flow files never mean a boolean
                # key, and `on:` is the placement field (as GitHub Actions found too).
                key = key_node.value
            else:  # construct through the safe constructor
                key = _scalar(key_node, problems, fn, construct)
            if key in out:
                problems.append(
                    Diagnostic(f"duplicate key '{key}'", fn, key_node.start_mark.line + 1)
                )
            child = (*path, key)
            out[key] = _build(value_node, child, lines, problems, fn, construct)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), lines, problems, fn, construct)
            for i, item in enumerate(node.value)
        ]
    return _scalar(node, problems, fn, construct)


def _scalar(node: yaml.Node, problems: list[Diagnostic], fn: str, construct: _Loader) -> Any:
    """A scalar's value; a tag the safe constructor refuses (``!!python/object``) or a
    value it cannot build (``2024-13-45``) is a located problem, not a traceback."""
    try:
        return construct.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(Diagnostic(f"invalid YAML value: {problem}", fn, node.start_mark.line + 1))
        return None


# --- the seed-003 JSON format -----------------------------------------------------------------


def _is_seed003(data: dict[str, Any]) -> bool:
    inner = data.get("flow")
    return isinstance(inner, dict) and ("start_task" in inner or "tasks" in inner)


#: What each level of a seed-003 document may say. Clients send more (a ``description`` on
#: each condition, their own bookkeeping fields): unknown keys are warnings there, never
#: errors, unlike flowfed's own YAML where an unknown key is most likely a typo.
_SEED_FLOW_KEYS = (
    "id",
    "name",
    "description",
    "start_task",
    "tasks",
    "conditions",
    "config",
    "max_iterations",
)
_SEED_TASK_KEYS = ("name", "tool", "description", "params")
_SEED_CONDITION_KEYS = (
    "name",
    "description",
    "source_task",
    "outcome",
    "target_task_success",
    "target_task_failure",
)
_SEED_TOP_KEYS = ("flow", "input_data")


def _from_seed003(
    data: dict[str, Any], source: SourceMap
) -> tuple[dict[str, Any], SourceMap, list[Diagnostic], list[Diagnostic]]:
    """Convert seed 003's format, keeping its semantics exactly.

    A condition with ``outcome: success`` sends a successful task to
    ``target_task_success`` and a failed one to ``target_task_failure``; with
    ``outcome: failure`` the match is on failure, so the targets swap. A task with no
    condition ends the flow. Only ``start_task`` starts, and a condition may route back
    to it (a retry or poll loop); ``max_iterations`` bounds the task runs of the whole
    execution, as the seed's loop does. The flow fails if any task failed
    (``failure_policy: any``), and tasks pass data through the shared context, which
    starts as ``{"input_data": ...}`` when the document has a top-level ``input_data``.

    Returns the flow mapping, its source map, the problems (each located; the flow is
    still built without the parts at fault, so that planning can report its own problems
    in the same pass) and the warnings (keys this format does not use).
    """
    flow = data["flow"]
    diags: list[Diagnostic] = []
    warnings: list[Diagnostic] = []

    def unknown(keys: Any, allowed: tuple[str, ...], path: PathKey, what: str) -> None:
        for key in keys:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            warnings.append(
                source.diag(
                    f"ignored key '{key}': seed-003 {what} do not use it",
                    (*path, key),
                    field=str(key),
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
            )

    unknown(flow, _SEED_FLOW_KEYS, ("flow",), "flows")
    unknown(data, _SEED_TOP_KEYS, (), "documents")
    input_data = data.get("input_data")
    if input_data is not None and not isinstance(input_data, dict):
        diags.append(
            source.diag(
                f"'input_data' must be an object (got {_short(input_data)})",
                ("input_data",),
                field="input_data",
            )
        )
        input_data = None
    tasks = flow.get("tasks") or []
    conditions = flow.get("conditions") or []
    if not isinstance(tasks, list):
        diags.append(source.diag("'tasks' must be a list", ("flow", "tasks"), field="tasks"))
        tasks = []
    if not isinstance(conditions, list):
        diags.append(
            source.diag("'conditions' must be a list", ("flow", "conditions"), field="conditions")
        )
        conditions = []
    if "start_task" not in flow:
        diags.append(
            source.diag("missing required key 'start_task'", ("flow",), field="start_task")
        )
    lines: dict[PathKey, int] = {(): source.line(("flow",)) or 1}
    by_source: dict[str, tuple[int, dict[str, Any]]] = {}
    for ci, cond in enumerate(conditions):
        path = ("flow", "conditions", ci)
        if not isinstance(cond, dict):
            diags.append(source.diag("a condition must be an object", path))
            continue
        unknown(cond, _SEED_CONDITION_KEYS, path, "conditions")
        usable = True
        for key in ("source_task", "outcome", "target_task_success", "target_task_failure"):
            if key not in cond:
                diags.append(source.diag(f"missing required key '{key}'", path, field=key))
                usable = False
        if cond.get("outcome") not in (None, "success", "failure"):
            diags.append(
                source.diag(
                    f"outcome must be 'success' or 'failure' (got {cond.get('outcome')!r})",
                    (*path, "outcome"),
                    field="outcome",
                )
            )
            usable = False
        for key in ("target_task_success", "target_task_failure"):
            if key in cond and not isinstance(cond[key], str):
                diags.append(
                    source.diag(
                        f"'{key}' must be a task name or 'end' (got {_short(cond[key])})",
                        (*path, key),
                        field=key,
                    )
                )
                usable = False
        src = str(cond.get("source_task"))
        if src in by_source:
            diags.append(
                source.diag(f"task '{src}' has two conditions; it may have at most one", path)
            )
            continue
        if usable:
            by_source[src] = (ci, cond)
    steps: list[dict[str, Any]] = []
    for ti, task in enumerate(tasks):
        path = ("flow", "tasks", ti)
        if not isinstance(task, dict) or "name" not in task:
            diags.append(source.diag("a task must be an object with a 'name'", path))
            continue
        unknown(task, _SEED_TASK_KEYS, path, "tasks")
        name = str(task["name"])
        step: dict[str, Any] = {"name": name, "tool": str(task.get("tool", name))}
        if task.get("description"):
            step["description"] = task["description"]
        if isinstance(task.get("params"), dict):
            step["params"] = task["params"]
        si = len(steps)
        lines[("steps", si)] = source.line(path) or 1
        lines[("steps", si, "tool")] = source.line((*path, "tool")) or lines[("steps", si)]
        if name in by_source:
            ci, cond = by_source[name]
            ok, ko = cond.get("target_task_success"), cond.get("target_task_failure")
            if cond.get("outcome") == "failure":
                ok, ko = ko, ok
            step["next"] = {"success": ok or END, "failure": ko or END}
            cpath = ("flow", "conditions", ci)
            lines[("steps", si, "next")] = source.line(cpath) or 1
            # A condition's targets are its own lines; the planner names them next.*.
            ok_key, ko_key = "target_task_success", "target_task_failure"
            if cond.get("outcome") == "failure":
                ok_key, ko_key = ko_key, ok_key
            for key, raw in (("success", ok_key), ("failure", ko_key)):
                lines[("steps", si, "next", key)] = source.line((*cpath, raw)) or 1
        steps.append(step)
    known = {s["name"] for s in steps}
    for src, (ci, _) in by_source.items():
        if src not in known:
            diags.append(
                source.diag(
                    f"condition names source_task '{src}', which is not a task",
                    ("flow", "conditions", ci, "source_task"),
                    field="source_task",
                )
            )
    out: dict[str, Any] = {
        "name": str(flow.get("name") or flow.get("id") or "flow"),
        "description": flow.get("description"),
        "config": flow.get("config") or {},
        "steps": steps,
        "start": flow.get("start_task"),
        "failure_policy": "any",
        "iterations": "run",
    }
    for key in ("max_iterations", "config", "description"):
        if key in flow:
            lines[(key,)] = source.line(("flow", key)) or 1
    if "start_task" in flow:
        lines[("start",)] = source.line(("flow", "start_task")) or 1
    if "max_iterations" in flow:
        out["max_iterations"] = flow["max_iterations"]
    if input_data is not None:
        out["input_data"] = input_data
        lines[("input_data",)] = source.line(("input_data",)) or 1
    if flow.get("id") is not None:
        out["version"] = "1"
    return out, SourceMap(source.file, lines), diags, warnings
