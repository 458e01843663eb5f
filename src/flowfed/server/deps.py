"""Shared pieces of the routes: the app state's parts and the documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from flowfed.db import Database
from flowfed.server.problems import PROBLEM_JSON, Problem
from flowfed.server.runs import RunManager


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}


#: Error responses every authenticated route can give (for the OpenAPI document).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing, invalid, expired or revoked bearer token"),
    403: _problem("The token's role or scope does not allow this request"),
    422: _problem("Invalid request (each error names its location)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("No such resource")}
BAD_REQUEST: dict[int | str, dict[str, Any]] = {400: _problem("Malformed request or reference")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _problem("Not possible in the current state")}
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: _problem("Not allowed for this resource")}


def db_of(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


def runs_of(request: Request) -> RunManager:
    """The app's run manager."""
    manager: RunManager = request.app.state.runs
    return manager
