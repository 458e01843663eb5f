"""Runs: start (stored or inline flows), list with cursor pagination, show, cancel, retry."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from flowfed.server import flows as svc
from flowfed.server import queries, run_facts
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, CONFLICT, NOT_FOUND, db_of, runs_of
from flowfed.server.problems import PROBLEM_JSON, Problem, ProblemError
from flowfed.server.runs import RunStartError, ServerDraining
from flowfed.server.schemas import RunAccepted, RunDetail, RunPage, RunRequest
from flowfed.spec.loader import LoadedFlow, SourceMap
from flowfed.spec.models import Flow

router = APIRouter(
    prefix="/api/v1/runs",
    tags=["runs"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)

#: A run that was planned but could not be recorded (the database did not take it).
NOT_STARTED: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "The run could not be recorded",
        "content": {PROBLEM_JSON: {}},
    }
}

RunStatus = Literal["running", "success", "failed", "cancelled"]


async def start_run(
    request: Request,
    loaded: LoadedFlow | None,
    params: dict[str, Any],
    *,
    use_cache: bool = True,
    flow_file: str | None = None,
    wait: bool = False,
    stored: dict[str, Any] | None = None,
    retry_of: str | None = None,
) -> str:
    """Plan ``loaded`` with ``params`` (FlowError → 422) and start it; the new run's id.

    ``stored`` (a stored flow's row, whose ``loaded`` is then unused) plans it once per
    version and params (:func:`flowfed.server.flows.check_stored`).
    """
    manager = runs_of(request)
    who = getattr(request.state, "principal", None)
    principal = f"user:{who.name}" if who is not None else None

    def work() -> str:
        if stored is not None:
            graph, _ = svc.check_stored(stored, params, db_of(request))
        else:
            assert loaded is not None
            graph, _ = svc.check(loaded, params, db_of(request))
        active = manager.start(
            graph,
            params=params,
            flow_file=flow_file,
            use_cache=use_cache,
            wait=wait,
            principal=principal,
            retry_of=retry_of,
        )
        return active.run_id

    try:
        if wait:  # the request waits for the run itself: it is no submission to give way to
            return await asyncio.to_thread(work)
        with manager.accepting():
            return await asyncio.to_thread(work)
    except ServerDraining as exc:
        raise ProblemError(
            503, str(exc), kind="server-draining", headers={"Retry-After": "1"}
        ) from None
    except RunStartError as exc:
        raise ProblemError(503, str(exc), kind="run-not-started") from None


def _not_found(ref: str) -> ProblemError:
    return ProblemError(404, f"no run matches '{ref}'", kind="not-found")


@router.post(
    "",
    status_code=202,
    response_model=RunAccepted,
    responses={**BAD_REQUEST, **NOT_FOUND, **NOT_STARTED},
)
async def create_run(request: Request, body: RunRequest) -> RunAccepted:
    """Start a run of a stored flow (``flow``, ``version``) or an inline one.

    Validation happens first (422 with every problem); the run then executes in the
    background: poll ``GET /runs/{id}`` or watch ``/api/v1/runs/{id}/events``.
    """
    # The whole submission counts as in flight, the stored flow's lookup included.
    with runs_of(request).accepting():
        return await _create_run(request, body)


async def _create_run(request: Request, body: RunRequest) -> RunAccepted:
    db = db_of(request)
    flow_file = None
    stored: dict[str, Any] | None = None
    loaded: LoadedFlow | None
    if body.flow is not None:
        row = await asyncio.to_thread(svc.get, db, body.flow, body.version)
        if row is None:
            what = f"'{body.flow}'" + (f" version {body.version}" if body.version else "")
            raise ProblemError(404, f"no stored flow {what}", kind="not-found")
        stored = row
        loaded = None
        flow_file = f"flowfed:flows/{row['name']}/versions/{row['version']}"
    elif body.definition is not None:
        loaded, _ = svc.parse_object(await request.body(), "definition", body.definition)
    else:
        assert body.source is not None
        loaded = svc.parse_text(body.source, body.format)
    run_id = await start_run(
        request, loaded, body.params, use_cache=body.cache, flow_file=flow_file, stored=stored
    )
    return RunAccepted(run_id=run_id, status="running")


@router.get("", response_model=RunPage, responses=BAD_REQUEST)
def list_runs(
    request: Request,
    limit: int = Query(50, ge=1, le=500, description="Page size."),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
    status: RunStatus | None = Query(None, description="Only runs with this status."),
    flow: str | None = Query(None, description="Only runs of this flow name."),
) -> dict[str, Any]:
    """Runs, newest first, a page at a time."""
    try:
        items, nxt = queries.list_runs(
            db_of(request), limit=limit, cursor=cursor, status=status, flow=flow
        )
    except queries.BadCursor as exc:
        raise ProblemError(400, str(exc), kind="bad-cursor") from None
    now = time.time()
    for item in items:
        item.update(run_facts.run_times(item, now))
    return {"items": items, "next_cursor": nxt}


@router.get("/{run_id}", response_model=RunDetail, responses={**NOT_FOUND, **BAD_REQUEST})
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    """A run (id or unique prefix) with its steps, their tasks and each task's transitions."""
    run = db_of(request).get_run(run_id)
    if run is None:
        raise _not_found(run_id)
    now = time.time()
    run.update(run_facts.run_times(run, now))
    offline = run_facts.offline_nodes(getattr(request.app.state, "hub", None))
    for t in run["tasks"]:
        run_facts.task_facts(t, offline, now)
    run["steps"] = queries.run_steps(run)
    written = {
        s.get("name"): s for s in (run.get("spec") or {}).get("steps") or [] if isinstance(s, dict)
    }
    activity = run_facts.last_activity(db_of(request), run["id"])
    for step in run["steps"]:
        run_facts.step_facts(step, written.get(step["name"]), run, activity, now)
    return run


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunAccepted,
    responses={**BAD_REQUEST, **NOT_FOUND, **CONFLICT},
)
def cancel_run(request: Request, run_id: str) -> RunAccepted:
    """Ask a running run to stop: nothing new starts, running tasks end cancelled."""
    db = db_of(request)
    rid = queries.resolve_run_id(db, run_id)
    if rid is None:
        raise _not_found(run_id)
    if not runs_of(request).cancel(rid):
        run = db.get_run(rid)
        status = run["status"] if run else "unknown"
        detail = f"run {rid} is not running (status: {status})"
        if status == "running":
            detail = (
                f"run {rid} is not executing in this server process; it cannot be cancelled here"
            )
        raise ProblemError(409, detail, kind="not-running")
    return RunAccepted(run_id=rid, status="cancelling")


@router.post(
    "/{run_id}/retry",
    status_code=202,
    response_model=RunAccepted,
    responses={**BAD_REQUEST, **NOT_FOUND, **CONFLICT, **NOT_STARTED},
)
async def retry_run(request: Request, run_id: str) -> RunAccepted:
    """Start a new run of a failed or cancelled run's flow with the same params.

    With caching, every task that finished before comes back cached, so the new run
    resumes from where the old one stopped.
    """
    run = await asyncio.to_thread(db_of(request).get_run, run_id)
    if run is None:
        raise _not_found(run_id)
    if run["status"] not in ("failed", "cancelled"):
        raise ProblemError(
            409,
            f"run {run['id']} is {run['status']}; only failed or cancelled runs can be retried",
            kind="not-retryable",
        )
    loaded = LoadedFlow(Flow.model_validate(run["spec"]), SourceMap())
    new_id = await start_run(
        request,
        loaded,
        dict(run.get("params") or {}),
        flow_file=run.get("flow_file"),
        retry_of=run["id"],
    )
    return RunAccepted(run_id=new_id, status="running", retry_of=run["id"])
