"""Admin-only listings of user API tokens and OAuth2 clients (never their secrets)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from flowfed.server import oauth
from flowfed.server.auth import list_tokens, require_admin
from flowfed.server.deps import AUTH_ERRORS, db_of

router = APIRouter(
    prefix="/api/v1/auth",
    tags=["auth"],
    dependencies=[Depends(require_admin)],
    responses=AUTH_ERRORS,
)


class TokenInfo(BaseModel):
    """A user API token's metadata."""

    id: str
    name: str
    role: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class ClientInfo(BaseModel):
    """An OAuth2 client's metadata."""

    client_id: str
    name: str
    role: str
    scope: str
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None


@router.get("/tokens", response_model=list[TokenInfo])
async def tokens(request: Request) -> list[dict[str, Any]]:
    """Every user API token, newest first (admin only)."""
    return await asyncio.to_thread(list_tokens, db_of(request))


@router.get("/clients", response_model=list[ClientInfo])
async def clients(request: Request) -> list[dict[str, Any]]:
    """Every OAuth2 client, newest first (admin only)."""
    return await asyncio.to_thread(oauth.list_clients, db_of(request))
