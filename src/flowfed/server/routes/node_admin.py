"""Registering and removing data nodes over the API (admin only).

``POST /api/v1/nodes`` creates a node's credentials and answers its token once;
``DELETE /api/v1/nodes/{name}`` revokes it (a connected agent is refused at its next
check). They are what ``flowfed --server URL nodes add|remove`` call; without a server
the same commands write the database directly.

Example:
    >>> # curl -X POST -H "$H" $S/api/v1/nodes -d '{"name": "hospital-a"}'
    >>> # {"name": "hospital-a", "token": "ffn_...", "created_at": 1764000000.0}
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from flowfed.server.auth import require_admin
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, CONFLICT, NOT_FOUND, db_of
from flowfed.server.nodes import add_node, remove_node
from flowfed.server.problems import ProblemError

router = APIRouter(
    prefix="/api/v1/nodes",
    tags=["nodes"],
    dependencies=[Depends(require_admin)],
    responses=AUTH_ERRORS,
)


class NodeCreate(BaseModel):
    """A node to register."""

    model_config = ConfigDict(extra="forbid")

    # The rule add_node checks, here too: a bad name is the documented 422 of validation.
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$",
        description="1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        examples=["hospital-a"],
    )


class NodeCredentials(BaseModel):
    """A new node's credentials: the token is answered this once, only its hash is kept."""

    name: str
    token: str
    created_at: float


@router.post(
    "", status_code=201, response_model=NodeCredentials, responses={**BAD_REQUEST, **CONFLICT}
)
async def create_node(request: Request, body: NodeCreate) -> dict[str, Any]:
    """Register a node and answer its token (409 if the name is taken, 422 if invalid)."""
    try:
        created = await asyncio.to_thread(add_node, db_of(request), body.name)
    except ValueError as exc:  # the name is valid (checked above): it is taken
        raise ProblemError(409, str(exc), kind="conflict") from None
    return {"name": created.name, "token": created.token, "created_at": created.created_at}


@router.delete("/{name}", status_code=204, responses=NOT_FOUND)
async def delete_node(request: Request, name: str) -> None:
    """Remove a node: its token stops working for new connections (404 if unknown)."""
    if not await asyncio.to_thread(remove_node, db_of(request), name):
        raise ProblemError(404, f"no node named '{name}'", kind="not-found")
