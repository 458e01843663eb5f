"""Seed 003's flow-manager API, with its exact request and response shapes.

``POST /api/v1/flows/execute`` runs a ``{"flow": {id, name, start_task, tasks,
conditions, max_iterations}, "input_data": {...}}`` document to the end and answers
``{"execution_id", "status", "task_results", "error"}``; statuses are ``success`` and
``failure`` as the seed defines them, and ``error`` says why a failed execution stopped.
Conditions may route back to a task that already ran (a retry or poll loop).
Executions are ordinary runs: they are also visible under ``/api/v1/runs``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.server import queries
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError
from flowfed.server.routes.runs import NOT_STARTED, start_run
from flowfed.server.schemas import SeedExecuteRequest, SeedExecution
from flowfed.spec.loader import parse_flow_text

router = APIRouter(
    prefix="/api/v1/flows",
    tags=["seed-003"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)

_SUCCESS = {"finished", "cached"}
_FAILURE = {"error", "cancelled"}


def _is_seed_run(spec: dict[str, Any] | None) -> bool:
    # Only the seed-003 format sets `start` (its single entry point).
    return bool(spec) and spec.get("start") is not None  # type: ignore[union-attr]


def execution(db: Database, run: dict[str, Any], artifacts_url: str) -> dict[str, Any]:
    """A run in seed 003's shape: executed tasks in order, with their data and errors."""
    from flowfed.artifacts import ArtifactHandle, ArtifactStore, CatalogBlobs, is_inline

    produced = {
        a["task_id"]: a for a in db.run_artifacts(run["id"]) if a["name"] == f"{a['step']}_result"
    }
    results = []
    for t in sorted(run["tasks"], key=lambda t: (t["created_at"], t["id"])):
        if t["state"] not in _SUCCESS | _FAILURE:
            continue  # never reached (skipped) or still going
        data: Any = None
        art = produced.get(t["id"])
        if art is not None:
            if art["kind"] == "json":
                source: Any = (
                    CatalogBlobs(db) if is_inline(art["uri"]) else ArtifactStore(artifacts_url)
                )
                data = ArtifactHandle.from_row(source, art).load()
            else:
                # Not JSON-able as such: point at the artifact instead of its bytes.
                data = {"artifact": art["id"], "kind": art["kind"]}
        error = None
        if t["state"] in _FAILURE:
            report = t.get("error") or {}
            error = report.get("message") or t["state"]
            if data is None:
                data = report.get("data")  # what a failed task returned beside its error
        results.append(
            {
                "task_name": t["step"],
                "status": "success" if t["state"] in _SUCCESS else "failure",
                "data": data,
                "error": error,
            }
        )
    status = {"success": "success", "running": "running"}.get(run["status"], "failure")
    return {
        "execution_id": run["id"],
        "status": status,
        "task_results": results,
        # Why a failed execution stopped (a failed task, or max_iterations reached).
        "error": run.get("error") if status == "failure" else None,
    }


@router.post("/execute", response_model=SeedExecution, responses={**BAD_REQUEST, **NOT_STARTED})
async def execute_flow(request: Request, body: SeedExecuteRequest) -> dict[str, Any]:
    """Run a seed-003 flow synchronously, start task first, and return every task's result."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        import json

        text = json.dumps({"flow": body.flow}, indent=2)
    loaded = await asyncio.to_thread(parse_flow_text, text, "request.json", under="flow")
    run_id = await start_run(request, loaded, {}, wait=True)
    db = db_of(request)
    run = await asyncio.to_thread(db.get_run, run_id)
    assert run is not None
    return await asyncio.to_thread(execution, db, run, _store_url(request))


@router.get("/executions", response_model=list[SeedExecution])
def list_executions(
    request: Request, limit: int = Query(50, ge=1, le=500, description="Most executions.")
) -> list[dict[str, Any]]:
    """Executions of seed-003 flows, newest first."""
    db = db_of(request)
    r = m.runs
    ids: list[str] = []
    offset, batch = 0, 200
    while len(ids) < limit:
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(r.c.id, r.c.spec)
                .order_by(r.c.created_at.desc(), r.c.id.desc())
                .offset(offset)
                .limit(batch)
            ).all()
        if not rows:
            break
        ids += [row.id for row in rows if _is_seed_run(row.spec)]
        offset += batch
    out = []
    for rid in ids[:limit]:
        run = db.get_run(rid)
        if run is not None:
            out.append(execution(db, run, _store_url(request)))
    return out


@router.get(
    "/executions/{execution_id}",
    response_model=SeedExecution,
    responses={**BAD_REQUEST, **NOT_FOUND},
)
def get_execution(request: Request, execution_id: str) -> dict[str, Any]:
    """One execution of a seed-003 flow (its run id, or a unique prefix)."""
    db = db_of(request)
    rid = queries.resolve_run_id(db, execution_id)
    run = db.get_run(rid) if rid is not None else None
    if run is None or not _is_seed_run(run.get("spec")):
        raise ProblemError(404, f"no flow execution '{execution_id}'", kind="not-found")
    return execution(db, run, _store_url(request))


def _store_url(request: Request) -> str:
    url: str = request.app.state.settings.resolved_artifacts_url()
    return url
