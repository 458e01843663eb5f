"""Flow templates: a flow with parameters and the form that fills them.

A template file (``src/flowfed/templates/*.yaml``) holds ``id``, ``title``,
``description``, optional per-parameter ``parameters`` (labels, bounds, choices) and the
``flow`` itself. The parameters are the flow's ``name`` and its ``config`` keys; each
key's JSON Schema is derived from the config schema of the tool whose param references
it (``params: {epochs: "${config.epochs}"}`` gives ``epochs`` the tool's integer type),
else from the default value's type, then refined by ``parameters``.

Example:
    >>> t = load_templates()["local-pipeline"]
    >>> parameter_schema(t)["properties"]["epochs"]["type"]
    'integer'
    >>> "epochs: 10" in instantiate(t, {"epochs": 10})
    True
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowfed.server.problems import ProblemError
from flowfed.tools.core import get_registry
from flowfed.wording import plural, with_article

#: Where the bundled templates live (shipped as package data).
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

_REF = re.compile(r"^\$\{config\.([A-Za-z_][A-Za-z0-9_]*)\}$")
# Schema keywords a template's `parameters` may set on a field.
_OVERRIDES = (
    "title",
    "description",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "enum",
    "minItems",
    "minLength",
)


@dataclass
class Template:
    """One template file: metadata, parameter overrides and the raw flow mapping."""

    id: str
    title: str
    description: str
    flow: dict[str, Any]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    file: str = ""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so a step's ``on:`` key stays the string "on"."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class TemplateFileError(ValueError):
    """A bundled template file is malformed (a packaging bug, reported with its file)."""


def load_templates(directory: Path = TEMPLATE_DIR) -> dict[str, Template]:
    """Every template in ``directory`` by id, in file-name order."""
    found: list[tuple[int, str, Template]] = []
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader subclass
        if not isinstance(data, dict) or not isinstance(data.get("flow"), dict):
            raise TemplateFileError(f"{path}: a template needs `id`, `title` and a `flow` mapping")
        tid = str(data.get("id") or path.stem)
        template = Template(
            id=tid,
            title=str(data.get("title") or data["flow"].get("name") or tid),
            description=str(data.get("description") or ""),
            flow=data["flow"],
            parameters=dict(data.get("parameters") or {}),
            file=path.name,
        )
        # `order` puts the headline templates first; the file name breaks ties.
        found.append((int(data.get("order", 1000)), path.name, template))
    return {t.id: t for _, _, t in sorted(found, key=lambda x: (x[0], x[1]))}


def _references(flow: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    """config key -> [(where, step, param)] for every ``${config.KEY}`` in the steps."""
    refs: dict[str, list[tuple[str, str, str]]] = {}
    steps = [s for s in flow.get("steps") or [] if isinstance(s, dict)]
    # The tools of a step that holds several (``tools:``) have their own params.
    steps += [t for s in steps for t in s.get("tools") or [] if isinstance(t, dict)]
    for step in steps:
        for where in ("params", "federated", "models"):
            block = step.get(where)
            if not isinstance(block, dict):
                continue
            for param, value in block.items():
                m = _REF.match(value) if isinstance(value, str) else None
                if m:
                    refs.setdefault(m.group(1), []).append((where, str(step.get("tool")), param))
    return refs


def _from_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, list):
        item = _from_value(value[0]) if value else {"type": "string"}
        return {"type": "array", "items": item}
    return {"type": "string"}


def _simplify(prop: dict[str, Any]) -> dict[str, Any]:
    """A tool's ``anyOf: [X, null]`` becomes X: a form field is filled or left at default."""
    options = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in prop.items() if k != "anyOf"}
        return {**rest, **options[0]}
    return dict(prop)


def parameter_schema(template: Template) -> dict[str, Any]:
    """The JSON Schema (an object) of the template's parameters, defaults included."""
    flow = template.flow
    registry = get_registry()
    refs = _references(flow)
    props: dict[str, Any] = {
        "name": {
            "type": "string",
            "title": "Flow name",
            "description": "The stored flow's name (a new version if it exists).",
            "minLength": 1,
            "default": flow.get("name", template.title),
        }
    }
    for key, default in (flow.get("config") or {}).items():
        prop: dict[str, Any] = {}
        for where, tool_name, param in refs.get(key, []):
            spec = registry.find(tool_name) if where == "params" else None
            if spec is not None:
                tool_prop = spec.config_schema().get("properties", {}).get(param)
                if tool_prop:
                    prop = _simplify(tool_prop)
                    prop.pop("default", None)
                    prop["x-tool"] = f"{tool_name}.{param}"
                    break
            if where == "federated" and param in ("rounds", "min_nodes"):
                prop = {"type": "integer", "minimum": 1}
        if not prop.get("type") and "enum" not in prop:
            prop = {**_from_value(default), **prop}
        prop["title"] = key.replace("_", " ").capitalize()
        for k, v in (template.parameters.get(key) or {}).items():
            if k in _OVERRIDES:
                prop[k] = v
        prop["default"] = default
        props[key] = prop
    return {
        "type": "object",
        "title": template.title,
        "properties": props,
        "required": ["name"],
        "additionalProperties": False,
    }


def _check(value: Any, prop: dict[str, Any], field_name: str) -> str | None:
    """Why ``value`` does not fit ``prop``, or None."""
    kind = prop.get("type")
    ok = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
    }
    if kind in ok and not ok[kind](value):
        return f"{field_name} must be {with_article(kind)}, got {value!r}"
    if "enum" in prop and value not in prop["enum"]:
        return f"{field_name} must be one of {', '.join(map(str, prop['enum']))}; got {value!r}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in prop and value < prop["minimum"]:
            return f"{field_name} must be at least {prop['minimum']}, got {value}"
        if "maximum" in prop and value > prop["maximum"]:
            return f"{field_name} must be at most {prop['maximum']}, got {value}"
        if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
            return f"{field_name} must be greater than {prop['exclusiveMinimum']}, got {value}"
    if isinstance(value, str) and len(value) < prop.get("minLength", 0):
        return f"{field_name} must not be empty"
    if isinstance(value, list):
        if len(value) < prop.get("minItems", 0):
            return f"{field_name} needs at least {plural(prop['minItems'], 'item')}"
        items = prop.get("items") or {}
        for i, item in enumerate(value):
            why = _check(item, items, f"{field_name}[{i}]")
            if why:
                return why
    return None


def instantiate(template: Template, values: dict[str, Any]) -> str:
    """The YAML text of the template's flow with ``values`` filled in.

    Raises ProblemError 422 (``invalid-parameters``, one item per bad field) for unknown
    fields and values that do not fit the parameter schema.
    """
    schema = parameter_schema(template)
    props = schema["properties"]
    errors = []
    for key, value in values.items():
        if key not in props:
            errors.append({"message": f"unknown parameter '{key}'", "field": key})
            continue
        why = _check(value, props[key], key)
        if why:
            errors.append({"message": why, "field": key})
    if errors:
        raise ProblemError(
            422,
            f"the values do not fit template '{template.id}': {errors[0]['message']}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            kind="invalid-parameters",
            title="Invalid template parameters",
            errors=errors,
        )
    flow = copy.deepcopy(template.flow)
    if "name" in values:
        flow["name"] = values["name"]
    config = dict(flow.get("config") or {})
    config.update({k: v for k, v in values.items() if k != "name"})
    flow["config"] = config
    header = f"# Created from the template '{template.id}' ({template.title}).\n"
    return header + yaml.safe_dump(flow, sort_keys=False, allow_unicode=True, width=100)
