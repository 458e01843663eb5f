"""Triggers: create, list, show, enable/disable, delete, and each trigger's fire history."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, CONFLICT, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError
from flowfed.server.triggers import service as svc
from flowfed.server.triggers.model import TriggerSpec, clock_from_env

router = APIRouter(
    prefix="/api/v1/triggers",
    tags=["triggers"],
    dependencies=[Depends(require_principal)],
    responses={**AUTH_ERRORS, **BAD_REQUEST},
)


class TriggerFire(BaseModel):
    """One firing: the run it started, or why it started none."""

    id: str
    fire_key: str = Field(description="tick:<UTC time> for schedules, <source>:<id> for events")
    status: str = Field(description="claimed | started | skipped | queued | failed")
    run_id: str | None = None
    reason: str | None = None
    event: dict[str, Any]
    params: dict[str, Any] | None = None
    catchup: bool
    scheduled_for: float | None = None
    created_at: float
    updated_at: float
    run_status: str | None = Field(
        default=None,
        description="The started run's status now: running | success | failed | cancelled",
    )
    outcome: str | None = Field(
        default=None, description="What came of the fire: the run's status, or the fire's own"
    )


class TriggerOut(BaseModel):
    """A trigger with when it fires next and what it last did."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str = Field(description="cron | interval | event | condition")
    flow: str
    version: int | None = None
    enabled: bool
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    next_fire_at: float | None = None
    last_fired_at: float | None = None
    last_run_id: str | None = None
    last_fire: TriggerFire | None = None


class TriggerPatch(BaseModel):
    """What ``PATCH`` may change."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


def _problem(exc: svc.TriggerError) -> ProblemError:
    kind = {404: "not-found", 409: "conflict"}.get(exc.status, "invalid-trigger")
    return ProblemError(exc.status, str(exc), kind=kind)


def _describe(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return svc.describe(db_of(request), row, clock_from_env().now())


@router.get("", response_model=list[TriggerOut])
async def list_triggers(request: Request) -> list[dict[str, Any]]:
    """Every trigger, by name, with its next fire time and last fire."""

    def work() -> list[dict[str, Any]]:
        return [_describe(request, r) for r in svc.list_all(db_of(request))]

    return await asyncio.to_thread(work)


@router.post("", status_code=201, response_model=TriggerOut, responses=CONFLICT)
async def create_trigger(request: Request, body: TriggerSpec) -> dict[str, Any]:
    """Store a trigger (docs/triggers.md has the format); 409 if the name is taken, 422
    if its flow (or the flow version it names) is not stored.

    Without a ``version``, the latest version is looked up when the trigger fires; a flow
    removed since is recorded as a failed fire in the history.
    """

    def work() -> dict[str, Any]:
        svc.check_flow(db_of(request), body)
        row = svc.create(db_of(request), body, clock_from_env().now())
        return _describe(request, row)

    try:
        return await asyncio.to_thread(work)
    except svc.TriggerError as exc:
        raise _problem(exc) from None


@router.get("/{ref}", response_model=TriggerOut, responses=NOT_FOUND)
async def get_trigger(request: Request, ref: str) -> dict[str, Any]:
    """A trigger by name or id."""
    try:
        return await asyncio.to_thread(lambda: _describe(request, svc.require(db_of(request), ref)))
    except svc.TriggerError as exc:
        raise _problem(exc) from None


@router.patch("/{ref}", response_model=TriggerOut, responses=NOT_FOUND)
async def patch_trigger(request: Request, ref: str, body: TriggerPatch) -> dict[str, Any]:
    """Enable or disable a trigger (enabling never fires what was due while disabled)."""

    def work() -> dict[str, Any]:
        row = svc.set_enabled(db_of(request), ref, body.enabled, clock_from_env().now())
        return _describe(request, row)

    try:
        return await asyncio.to_thread(work)
    except svc.TriggerError as exc:
        raise _problem(exc) from None


@router.delete("/{ref}", status_code=204, responses=NOT_FOUND)
async def delete_trigger(request: Request, ref: str) -> Response:
    """Delete a trigger and its history (runs it started stay)."""
    try:
        await asyncio.to_thread(svc.remove, db_of(request), ref)
    except svc.TriggerError as exc:
        raise _problem(exc) from None
    return Response(status_code=204)


@router.get("/{ref}/history", response_model=list[TriggerFire], responses=NOT_FOUND)
async def trigger_history(
    request: Request,
    ref: str,
    limit: int = Query(50, ge=1, le=1000, description="How many fires, newest first."),
) -> list[dict[str, Any]]:
    """A trigger's fires, newest first: what each started, or why it started nothing."""
    try:
        return await asyncio.to_thread(svc.history, db_of(request), ref, limit)
    except svc.TriggerError as exc:
        raise _problem(exc) from None
