"""Registered tools (those the server imported at start-up)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, NOT_FOUND
from flowfed.server.problems import ProblemError
from flowfed.server.schemas import Tool
from flowfed.tools.core import get_registry

router = APIRouter(
    prefix="/api/v1/tools",
    tags=["tools"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)


@router.get("", response_model=list[Tool])
def list_tools() -> list[dict[str, Any]]:
    """Every registered tool, by name."""
    return [t.describe() for t in get_registry()]


@router.get("/{name}", response_model=Tool, responses=NOT_FOUND)
def show_tool(name: str) -> dict[str, Any]:
    """A tool (``name`` or ``name@version``): type, inputs, outputs, config JSON Schema."""
    spec = get_registry().find(name)
    if spec is None:
        raise ProblemError(404, f"no tool named '{name}'", kind="not-found")
    return spec.describe()
