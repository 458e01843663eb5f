"""Expansion: placed steps into one task per placement, swept steps into one task per subvariant.

A flow whose steps all run centrally and sweep nothing plans one task per step. When a
step is placed on data nodes (``on: each-dataset``, ``on: {nodes: [...]}``) or sweeps
config values (``sweep:``), :func:`expand` rewrites the plan: one task per placement
(rules in :mod:`flowfed.plan.placement`), and per subvariant of a sweep, carried to
everything downstream that reads a swept artifact. A ``kind: federated`` step stays one
central task carrying its :class:`~flowfed.plan.placement.FederatedPlan`; its rounds are
expanded at run time by :mod:`flowfed.plan.federated`.

Example:
    >>> _label({"learning_rate": 0.1, "epochs": 5})
    'learning_rate=0.1,epochs=5'
    >>> _vname("train", "learning_rate=0.1")
    'train[learning_rate=0.1]'
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flowfed.plan.external import CATALOG_REF, REGISTRY_PREFIX
from flowfed.plan.params import interpolate
from flowfed.plan.placement import (
    FederatedPlan,
    Where,
    instance,
    match,
    participants,
    placements,
    task_id,
)
from flowfed.plan.taskgraph import TaskGraph, TaskNode
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import SourceMap
from flowfed.spec.models import Federated, Flow, Step
from flowfed.tools.core import ToolSpec


def expand(
    model: Flow,
    nodes: dict[str, TaskNode],
    fed_settings: dict[str, Federated | None],
    sweeps: dict[str, list[dict[str, Any]]],
    order: list[str],
    config: dict[str, Any],
    datasets: list[Where] | None,
    source: SourceMap,
    at: Any,
) -> TaskGraph:
    """Expand placed steps into one task per placement (see flowfed.plan.placement), and
    swept steps, with everything downstream of them, into one task per subvariant."""
    diags: list[Diagnostic] = []
    # artifact name → {subvariant label: {placement: instance name}}; central artifacts
    # under placement None, unswept ones under label "".
    made_v: dict[str, dict[str, dict[Where | None, str]]] = {}
    shareable_of: dict[str, bool] = {}  # artifact name → may its bytes leave the node
    tasks: dict[str, TaskNode] = {}
    producers: dict[str, str] = {}

    def bad_input(step: Step, param: str, message: str, hint: str | None = None) -> None:
        path = at(step, "inputs", param)
        diags.append(source.diag(message, path, step=step.name, field=f"inputs.{param}", hint=hint))

    for name in order:
        proto = nodes[name]
        step = model.step(name)
        shareable = frozenset(
            out
            for out, art in proto.outputs.items()
            if out in step.shareable or art in step.shareable
        )
        where_list = placements(step, datasets)
        fed_parts = participants(step, datasets) if step.kind == "federated" else []
        variants = _step_variants(step, sweeps, made_v, source, at, diags)
        for label, combo in variants:
            config_v = proto.config
            if combo:
                config_v = proto.tool.config_model.model_validate(
                    {**proto.config.model_dump(), **combo}
                )
            for where in where_list:
                inputs: dict[str, str | list[str]] = {}
                local_inputs: list[str] = []
                for param, key in proto.inputs.items():
                    if isinstance(key, str) and key.startswith(REGISTRY_PREFIX):
                        inputs[param] = key  # a registry model: central, sent to every node

                for param, artifact in step.inputs.items():
                    if artifact not in made_v and CATALOG_REF.fullmatch(artifact):
                        inputs[param] = artifact  # from the catalog: central, sent to all
                        continue
                    inst = _pick(made_v.get(artifact, {}), label)
                    if None in inst:  # a central artifact: everyone receives it
                        inputs[param] = inst[None]
                        continue
                    if fed_parts:
                        names: list[str] = []
                        for part in fed_parts:
                            got, why = match(inst, part)
                            if got is None:
                                message = f"input '{artifact}' for participant {part[0]}: {why}"
                                bad_input(step, param, message)
                            else:
                                names.append(got)
                        inputs[param] = names
                        local_inputs.append(param)
                    elif where is None:
                        if not shareable_of.get(artifact, False):
                            bad_input(
                                step,
                                param,
                                f"this central step consumes '{artifact}', which stays on the "
                                "data nodes: its producing step does not list it under "
                                "'shareable'",
                                hint="declare it shareable if its bytes may leave the nodes "
                                "(aggregates, metrics, model updates), never raw rows",
                            )
                        inputs[param] = list(inst.values())
                    else:
                        got, why = match(inst, where)
                        if got is None:
                            bad_input(step, param, f"input '{artifact}' at {where[0]}: {why}")
                            continue
                        inputs[param] = got
                tid = task_id(_vname(name, label), where)
                outputs = {
                    out: instance(_vname(art, label), where) for out, art in proto.outputs.items()
                }
                fed_plan = None
                settings = fed_settings.get(name)
                if settings is not None:
                    fed_plan = _federated_plan(proto, settings, fed_parts, local_inputs)
                node = TaskNode(
                    id=tid,
                    step=name,
                    tool=proto.tool,
                    config=config_v,
                    inputs=inputs,
                    outputs=outputs,
                    deps=(),
                    retries=proto.retries,
                    retry_backoff=proto.retry_backoff,
                    timeout=proto.timeout,
                    cache=proto.cache and where is None and fed_plan is None,
                    allow_pickle=proto.allow_pickle,
                    node=where[0] if where else "local",
                    dataset=where[1] if where else None,
                    shareable=shareable,
                    federated=fed_plan,
                    variant=combo or None,
                )
                tasks[tid] = node
                for out, art in proto.outputs.items():
                    made_v.setdefault(art, {}).setdefault(label, {})[where] = outputs[out]
                    producers[outputs[out]] = tid
                    shareable_of[art] = where is None or out in shareable
    if diags:
        raise FlowError(diags)
    downstream: dict[str, list[str]] = {t: [] for t in tasks}
    for tid, node in tasks.items():
        seen: dict[str, None] = {}
        for art in node.input_names():
            if art in producers:  # registry models have no producer in the plan
                seen[producers[art]] = None
        node.deps = tuple(seen)
        for d in node.deps:
            downstream[d].append(tid)
    return TaskGraph(
        flow=model,
        tasks=tasks,
        producers=producers,
        downstream={k: tuple(v) for k, v in downstream.items()},
        config=config,
        file=source.file,
    )


def _vname(base: str, label: str) -> str:
    """A step or artifact name within subvariant ``label`` (``train[lr=0.1]``)."""
    return f"{base}[{label}]" if label else base


def _pick(by_label: dict[str, dict[Where | None, str]], label: str) -> dict[Where | None, str]:
    """An artifact's instances for subvariant ``label``; unswept ones serve every label."""
    return by_label.get(label) or by_label.get("", {})


def _step_variants(
    step: Step,
    sweeps: dict[str, list[dict[str, Any]]],
    made_v: dict[str, dict[str, dict[Where | None, str]]],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
) -> list[tuple[str, dict[str, Any]]]:
    """The subvariants a step runs as: its own sweep, or those of the artifacts it reads."""
    inherited: set[frozenset[str]] = set()
    for artifact in step.inputs.values():
        labels = frozenset(k for k in made_v.get(artifact, {}) if k)
        if labels:
            inherited.add(labels)
    own = sweeps.get(step.name)
    if own is not None:
        if inherited:
            diags.append(
                source.diag(
                    "a swept step cannot consume the outputs of another swept step",
                    at(step, "sweep"),
                    step=step.name,
                    field="sweep",
                )
            )
        return [(_label(c), c) for c in own]
    if len(inherited) > 1:
        diags.append(
            source.diag(
                "this step consumes artifacts of two different sweeps; combine them in one "
                "step's sweep",
                at(step, "inputs"),
                step=step.name,
                field="inputs",
            )
        )
        return [("", {})]
    if inherited:
        return [(label, {}) for label in sorted(next(iter(inherited)))]
    return [("", {})]


def _label(combo: dict[str, Any]) -> str:
    """``learning_rate=0.1,epochs=5``: a subvariant's name, in the sweep's key order."""
    return ",".join(f"{k}={v}" for k, v in combo.items())


def sweep_combos(
    spec: ToolSpec,
    step: Step,
    params: dict[str, Any],
    config: dict[str, Any],
    source: SourceMap,
    at: Any,
    diags: list[Diagnostic],
) -> list[dict[str, Any]]:
    """Every combination of a step's ``sweep:`` values, each checked against the config."""
    import itertools

    resolved, ref_diags = interpolate(step.sweep, config, source, at(step, "sweep"), step)
    diags.extend(ref_diags)

    def bad(key: str, message: str) -> None:
        path = at(step, "sweep", key)
        diags.append(source.diag(message, path, step=step.name, field=f"sweep.{key}"))

    keys: list[str] = []
    values: list[list[Any]] = []
    for key, vals in resolved.items():
        if key not in spec.config_model.model_fields:
            allowed = ", ".join(spec.config_model.model_fields) or "none"
            bad(key, f"'{key}' is not a config field of tool '{spec.name}' (fields: {allowed})")
        elif not isinstance(vals, list) or not vals:
            bad(key, f"sweep.{key} must be a non-empty list of values, got {vals!r}")
        else:
            keys.append(key)
            values.append(vals)
    combos = [dict(zip(keys, vs, strict=True)) for vs in itertools.product(*values)]
    for combo in combos:
        try:
            spec.config_model.model_validate({**params, **combo})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else next(iter(combo), "")
            bad(key, f"sweep value {combo.get(key)!r} for '{key}': {err['msg']}")
            return []
    return combos


def _federated_plan(
    proto: TaskNode, settings: Federated, parts: list[Where], local_inputs: list[str]
) -> FederatedPlan:
    """How the engine runs a federated step's rounds: participants, and which trainer
    input takes the global model, which output is the model, which field holds epochs."""
    spec = proto.tool
    model_out = next(o.name for o in spec.outputs if o.is_model)
    model_type = next(o.annotation for o in spec.outputs if o.is_model)
    model_input = None
    for name, inp in spec.inputs.items():
        if name in local_inputs:
            continue
        if name == "global_model" or _same_type(inp.annotation, model_type):
            model_input = name
            break
    fields = proto.config.__class__.model_fields
    epochs_field = next((f for f in ("epochs", "local_epochs") if f in fields), None)
    return FederatedPlan(
        settings=settings,
        participants=parts,
        local_inputs=local_inputs,
        model_input=model_input,
        model_output=model_out,
        epochs_field=epochs_field,
    )


def _same_type(annotation: Any, model_type: Any) -> bool:
    """Whether an input annotated ``annotation`` takes a ``model_type`` (itself or in a union)."""
    import typing

    if annotation is model_type:
        return True
    return model_type in typing.get_args(annotation)
