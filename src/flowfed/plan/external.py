"""Inputs from outside the flow: artifacts of the catalog and models of the registry.

A step input is normally an artifact another step of the flow produces. Two kinds come
from elsewhere: an artifact an earlier run made (``scaled:2`` or a 32-hex artifact id,
resolved against the catalog by the caller *before* planning, since the planner does no
I/O), and a model of the model registry (``models: {global_model: NAME@VERSION}``),
which the planner records in :attr:`TaskGraph.external` for the engine to fetch.

Example:
    >>> bool(CATALOG_REF.fullmatch("scaled:2")), bool(CATALOG_REF.fullmatch("scaled"))
    (True, False)
"""

from __future__ import annotations

import re
from typing import Any

from flowfed.plan.params import interpolate
from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.loader import LoadedFlow, SourceMap
from flowfed.spec.models import Flow, Step
from flowfed.tools.core import ToolSpec

#: An input naming an artifact of the catalog (made by an earlier run) instead of a step's
#: output: ``NAME:VERSION`` or a 32-hex artifact id.
CATALOG_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*:[0-9]+|[0-9a-f]{32}")


def catalog_inputs(flow: Flow | LoadedFlow) -> list[str]:
    """The catalog references among ``flow``'s step inputs, for the caller to resolve
    (against its database) before :func:`~flowfed.plan.graph.plan`, which does no I/O.

    Example:
        >>> catalog_inputs(Flow(name="f", steps=[Step(name="s", tool="t",
        ...     inputs={"table": "scaled:2", "other": "raw"})]))
        ['scaled:2']
    """
    from flowfed.spec.composite import flatten

    model = flow.flow if isinstance(flow, LoadedFlow) else flow
    steps = flatten(model).flow.steps  # a step of several tools: each tool's inputs
    refs = (a for s in steps for a in s.inputs.values() if CATALOG_REF.fullmatch(a))
    return list(dict.fromkeys(refs))


#: The prefix of an input name that refers to a model of the registry
#: (``registry:NAME@VERSION``).
REGISTRY_PREFIX = "registry:"


def model_inputs(
    spec: ToolSpec,
    step: Step,
    config: dict[str, Any],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
    external: dict[str, tuple[str, str]],
) -> dict[str, str]:
    """A step's ``models:`` as input names, registering each reference in ``external``."""
    out: dict[str, str] = {}
    if not step.models:
        return out
    resolved, ref_diags = interpolate(step.models, config, source, at(step, "models"), step)
    diags.extend(ref_diags)

    def bad(param: str, message: str) -> None:
        path = at(step, "models", param)
        diags.append(source.diag(message, path, step=step.name, field=f"models.{param}"))

    for param, ref in resolved.items():
        where = f"models.{param}"
        if param not in spec.inputs:
            accepted = ", ".join(spec.inputs) or "none"
            bad(param, f"tool '{spec.name}' has no input '{param}' (inputs: {accepted})")
            continue
        if param in step.inputs:
            bad(param, f"input '{param}' is given both under 'inputs' and 'models'")
            continue
        if not isinstance(ref, str) or not ref.strip():
            bad(param, "a model reference is NAME or NAME@VERSION")
            continue
        key = REGISTRY_PREFIX + ref.strip()
        out[param] = key
        line = source.line(at(step, "models", param))
        external[key] = (ref.strip(), f"{source.file}:{line}: step '{step.name}', {where}")
    return out
