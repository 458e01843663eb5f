"""A step's settings resolved and validated: ``${config.X}``, tool config, federated settings.

The values a step writes under ``params:``, ``federated:``, ``sweep:`` and ``models:`` may
name the flow's config (``${config.learning_rate}``); :func:`interpolate` resolves them,
then :func:`validate_config` and :func:`validate_federated` check the result against the
tool's config model and :class:`~flowfed.spec.models.Federated`. Each turns pydantic's
errors into located :class:`~flowfed.spec.diagnostics.Diagnostic` s, appended to the
caller's list, so the planner reports every problem of a flow together.

Example:
    >>> from flowfed.spec.models import Step
    >>> step = Step(name="train", tool="t")
    >>> interpolate({"lr": "${config.lr}", "tag": "run-${config.lr}"}, {"lr": 0.1},
    ...     SourceMap(), ("steps", 0, "params"), step)
    ({'lr': 0.1, 'tag': 'run-0.1'}, [])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.loader import SourceMap
from flowfed.spec.models import Federated, Step
from flowfed.tools.core import ToolSpec

_REF = re.compile(r"\$\{\s*config\.([A-Za-z0-9_.\-]+)\s*\}")


def interpolate(
    value: Any, config: dict[str, Any], source: SourceMap, path: tuple[str | int, ...], step: Step
) -> tuple[Any, list[Diagnostic]]:
    """Resolve the ``${config.KEY}`` references in ``value`` (nested dicts and lists too).

    A whole-value reference keeps the config value's type (``"${config.lr}"`` → ``0.1``);
    one inside a longer string is formatted into it. An undefined key resolves to None and
    yields a diagnostic located at ``path`` (within ``step``). Returns the resolved value
    and those diagnostics.
    """
    diags: list[Diagnostic] = []

    def resolve(key: str, p: tuple[str | int, ...]) -> Any:
        cur: Any = config
        for part in key.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                known = ", ".join(sorted(config)) or "none"
                field = ".".join(str(x) for x in p[3:]) or "params"
                diags.append(
                    source.diag(
                        f"${{config.{key}}} is not defined (config has: {known})",
                        p,
                        step=step.name,
                        field=f"params.{field}",
                    )
                )
                return None
        return cur

    def walk(v: Any, p: tuple[str | int, ...]) -> Any:
        if isinstance(v, str):
            whole = _REF.fullmatch(v.strip())
            if whole:  # a whole-value reference keeps the config value's type
                return resolve(whole.group(1), p)
            return _REF.sub(lambda m: str(resolve(m.group(1), p)), v)
        if isinstance(v, dict):
            return {k: walk(x, (*p, k)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, (*p, i)) for i, x in enumerate(v)]
        return v

    return walk(value, path), diags


def validate_federated(
    raw: Any,
    source: SourceMap,
    step: Step,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> Federated | None:
    """A step's ``federated:`` settings (already interpolated) as :class:`Federated`, or None.

    On a validation error, appends one diagnostic per problem (unknown setting, missing
    setting, bad value) located under ``path`` to ``diags``, and returns None.
    """
    try:
        return Federated.model_validate(raw)
    except ValidationError as exc:
        allowed = ", ".join(Federated.model_fields)
        _report(
            exc,
            "federated",
            lambda name: f"'{name}' is not a federated setting (settings: {allowed})",
            lambda name: f"the federated setting '{name}' is required",
            source,
            step,
            path,
            diags,
        )
        return None


def validate_config(
    spec: ToolSpec,
    params: dict[str, Any],
    source: SourceMap,
    step: Step,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> BaseModel | None:
    """A step's ``params:`` (already interpolated) validated by the tool's config model.

    On a validation error, appends one diagnostic per problem (unknown field, missing
    field, bad value) located under ``path`` to ``diags``, and returns None.
    """
    try:
        return spec.config_model.model_validate(params)
    except ValidationError as exc:
        allowed = ", ".join(spec.config_model.model_fields) or "none"
        tool = spec.name
        _report(
            exc,
            "params",
            lambda name: f"'{name}' is not a config field of tool '{tool}' (fields: {allowed})",
            lambda name: f"required config field '{name}' of tool '{tool}' is missing",
            source,
            step,
            path,
            diags,
        )
        return None


def _report(
    exc: ValidationError,
    prefix: str,
    unknown: Callable[[str], str],
    missing: Callable[[str], str],
    source: SourceMap,
    step: Step,
    path: tuple[str | int, ...],
    diags: list[Diagnostic],
) -> None:
    """One diagnostic per problem of ``exc``, located under ``path`` and named
    ``prefix.<field>``; ``unknown`` and ``missing`` word those two kinds by field name."""
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = prefix + "." + ".".join(str(x) for x in loc) if loc else prefix
        if err["type"] == "extra_forbidden":
            msg = unknown(str(loc[-1]))
        elif err["type"] == "missing":
            msg = missing(str(loc[-1]))
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        diags.append(source.diag(msg, (*path, *loc), step=step.name, field=field))
