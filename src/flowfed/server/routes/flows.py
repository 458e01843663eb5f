"""Stored flows: create (validated) versions, list, show, validate."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from flowfed.server import flows as svc
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, CONFLICT, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError, diagnostics_items
from flowfed.server.schemas import (
    INT32_MAX,
    FlowCreated,
    FlowDetail,
    FlowSubmission,
    FlowSummary,
    PlannedTask,
    ValidationOk,
)
from flowfed.wording import plural

router = APIRouter(
    prefix="/api/v1/flows",
    tags=["flows"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)


async def parse_submission(request: Request, body: FlowSubmission) -> svc.Parsed:
    """Parse and plan a submission (FlowError → 422 with every diagnostic)."""
    raw = await request.body()

    def work() -> svc.Parsed:
        if body.source is not None:
            loaded = svc.parse_text(body.source, body.format)
            text, fmt = (
                body.source,
                body.format or ("json" if body.source.lstrip().startswith("{") else "yaml"),
            )
        else:
            assert body.flow is not None
            loaded, text = svc.parse_object(raw, "flow", body.flow)
            fmt = "json"
        graph, warnings = svc.check(loaded, db=db_of(request))
        return svc.Parsed(loaded, graph, text, fmt, warnings)

    return await asyncio.to_thread(work)


@router.post(
    "",
    status_code=201,
    response_model=FlowCreated,
    response_model_exclude_none=True,
    responses=BAD_REQUEST,
)
async def create_flow(request: Request, body: FlowSubmission) -> FlowCreated:
    """Validate a flow (parse + plan against the server's tools) and store a new version.

    The version is 1 + the highest stored version of the flow's name.
    """
    parsed = await parse_submission(request, body)
    row = await asyncio.to_thread(svc.store, db_of(request), parsed)
    return FlowCreated(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        created_at=row["created_at"],
        warnings=diagnostics_items(parsed.warnings),
    )


@router.post(
    "/validate",
    response_model=ValidationOk,
    response_model_exclude_none=True,
    responses=BAD_REQUEST,
)
async def validate_flow(request: Request, body: FlowSubmission) -> ValidationOk:
    """Check a flow without storing it: its plan, or a 422 problem listing every error."""
    parsed = await parse_submission(request, body)
    g = parsed.graph
    return ValidationOk(
        flow=g.flow.name,
        tasks=[
            PlannedTask(
                step=t.step,
                tool=t.tool.ref,
                after=list(t.deps),
                routed=t.routed,
                task=t.id,
                label=t.label,
            )
            for t in g.tasks.values()
        ],
        warnings=diagnostics_items(parsed.warnings),
    )


@router.get("", response_model=list[FlowSummary])
def list_flows(request: Request) -> list[dict[str, Any]]:
    """The latest version of every stored flow."""
    return [svc.summary(r) for r in svc.latest_rows(db_of(request))]


def _detail(row: dict[str, Any] | None, name: str, version: int | None = None) -> dict[str, Any]:
    if row is None:
        what = f"flow '{name}'" + (f" version {version}" if version is not None else "")
        raise ProblemError(404, f"no stored {what}", kind="not-found")
    return {**svc.summary(row), "spec": row["spec"], "source": row.get("source")}


@router.get("/{name}", response_model=FlowDetail, responses=NOT_FOUND)
def get_flow(request: Request, name: str) -> dict[str, Any]:
    """The latest version of a stored flow, with its definition and source text."""
    return _detail(svc.get(db_of(request), name), name)


@router.get("/{name}/versions", response_model=list[FlowSummary], responses=NOT_FOUND)
def list_versions(request: Request, name: str) -> list[dict[str, Any]]:
    """Every stored version of a flow, oldest first."""
    rows = svc.versions(db_of(request), name)
    if not rows:
        raise ProblemError(404, f"no stored flow '{name}'", kind="not-found")
    return [svc.summary(r) for r in rows]


@router.get("/{name}/versions/{version}", response_model=FlowDetail, responses=NOT_FOUND)
def get_version(
    request: Request, name: str, version: int = Path(ge=1, le=INT32_MAX)
) -> dict[str, Any]:
    """One stored version of a flow."""
    return _detail(svc.get(db_of(request), name, version), name, version)


def _delete_versions(db: Any, name: str, version: int | None) -> int:
    """Delete ``name`` (every version, or one); how many rows went. 409 if triggers use it."""
    from sqlalchemy import delete, select

    from flowfed.db import models as m

    f, t = m.flows, m.triggers
    with db.engine.begin() as conn:
        users = [r[0] for r in conn.execute(select(t.c.name).where(t.c.flow_name == name))]
        if users and (version is None or _is_only_version(conn, name, version)):
            raise ProblemError(
                409,
                f"flow '{name}' is started by {plural(len(users), 'trigger')} "
                f"({', '.join(sorted(users))}): remove "
                f"{'it' if len(users) == 1 else 'them'} first (flowfed triggers remove NAME)",
                kind="in-use",
            )
        q = delete(f).where(f.c.name == name)
        if version is not None:
            q = q.where(f.c.version == version)
        return int(conn.execute(q).rowcount or 0)


def _is_only_version(conn: Any, name: str, version: int) -> bool:
    from sqlalchemy import func, select

    from flowfed.db import models as m

    f = m.flows
    others = conn.execute(
        select(func.count()).where(f.c.name == name, f.c.version != version)
    ).scalar_one()
    return int(others) == 0


@router.delete("/{name}", status_code=204, responses={**NOT_FOUND, **CONFLICT})
def delete_flow(request: Request, name: str) -> None:
    """Delete every stored version of a flow (runs of it keep their own copy of the flow).

    ``409`` while a trigger starts it: remove the trigger first.
    """
    if _delete_versions(db_of(request), name, None) == 0:
        raise ProblemError(404, f"no stored flow '{name}'", kind="not-found")


@router.delete("/{name}/versions/{version}", status_code=204, responses={**NOT_FOUND, **CONFLICT})
def delete_version(request: Request, name: str, version: int = Path(ge=1, le=INT32_MAX)) -> None:
    """Delete one stored version of a flow (``409`` if it is the last one a trigger uses)."""
    if _delete_versions(db_of(request), name, version) == 0:
        raise ProblemError(404, f"no stored flow '{name}' version {version}", kind="not-found")
