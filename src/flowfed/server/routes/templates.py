"""Flow templates: list them, show one with its parameter schema, instantiate one."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from flowfed.server import flows as svc
from flowfed.server import templates as tpl
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError, diagnostics_items
from flowfed.server.schemas import FlowCreated

router = APIRouter(
    prefix="/api/v1/templates",
    tags=["templates"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)


def _find(template_id: str) -> tpl.Template:
    found = tpl.load_templates().get(template_id)
    if found is None:
        raise ProblemError(404, f"no template '{template_id}'", kind="not-found")
    return found


def _summary(t: tpl.Template) -> dict[str, Any]:
    steps = [s.get("name") for s in t.flow.get("steps") or [] if isinstance(s, dict)]
    return {
        "id": t.id,
        "title": t.title,
        "description": t.description,
        "flow_name": t.flow.get("name"),
        "type": t.flow.get("type"),
        "steps": steps,
    }


@router.get("")
def list_templates() -> dict[str, Any]:
    """Every bundled template: id, title, description, flow name and step names."""
    return {"items": [_summary(t) for t in tpl.load_templates().values()]}


@router.get("/{template_id}", responses=NOT_FOUND)
def show_template(template_id: str) -> dict[str, Any]:
    """One template with its parameter JSON Schema and the flow it fills in."""
    t = _find(template_id)
    return {**_summary(t), "schema": tpl.parameter_schema(t), "flow": t.flow}


@router.post(
    "/{template_id}/flows",
    status_code=201,
    response_model=FlowCreated,
    response_model_exclude_none=True,
    responses={**NOT_FOUND, **BAD_REQUEST},
)
async def instantiate_template(
    request: Request, template_id: str, values: dict[str, Any] = Body(default_factory=dict)
) -> FlowCreated:
    """Fill the template with ``values`` and store the flow as a new version of its name.

    Values that do not fit the schema are a 422 ``invalid-parameters``; a flow that does
    not plan against the server's tools (e.g. a tool it did not import) a 422
    ``invalid-flow`` with every diagnostic, as for ``POST /api/v1/flows``.
    """
    t = _find(template_id)
    text = tpl.instantiate(t, values)

    def work() -> tuple[svc.Parsed, dict[str, Any]]:
        loaded = svc.parse_text(text, "yaml")
        graph, warnings = svc.check(loaded)
        parsed = svc.Parsed(loaded, graph, text, "yaml", warnings)
        return parsed, svc.store(db_of(request), parsed)

    parsed, row = await asyncio.to_thread(work)
    return FlowCreated(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        created_at=row["created_at"],
        warnings=diagnostics_items(parsed.warnings),
    )
