"""User API tokens: creation, listing, revocation and bearer authentication.

A token handed to a user reads ``ffu_<id>.<secret>``: ``id`` (uuid4 hex) finds the row,
the secret (``secrets.token_urlsafe(32)``) proves possession. Only the SHA-256 of the
secret is stored, and it is compared in constant time, so neither a database dump nor
response timing gives a usable token away. Every way a token can be wrong (missing,
malformed, unknown, wrong secret, expired, revoked) gets the same 401: a client learns
nothing about which tokens exist.

The WebSocket routes reuse :func:`authenticate_token`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.server.problems import ProblemError

TOKEN_PREFIX = "ffu_"
ROLES = ("admin", "user")
Role = Literal["admin", "user"]

_TOKEN = re.compile(r"^ffu_(?P<id>[0-9a-f]{32})\.(?P<secret>[A-Za-z0-9_\-]{16,128})$")

#: ``last_used_at`` is refreshed at most this often per token: a write per request would
#: make every read contend with the run writers for the database lock.
LAST_USED_RESOLUTION_S = 60.0

# Compared against when the id is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"flowfed-no-such-token").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's id, name and role."""

    token_id: str
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Whether the token has the ``admin`` role."""
        return self.role == "admin"


@dataclass(frozen=True)
class CreatedToken:
    """A new token: ``token`` is shown to the user once and never stored."""

    id: str
    name: str
    role: str
    token: str
    created_at: float
    expires_at: float | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    db: Database, name: str, role: str = "user", expires_in_days: float | None = None
) -> CreatedToken:
    """Create and store a token (ValueError for a bad role, name or expiry)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name.strip():
        raise ValueError("a token needs a non-empty name")
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValueError(f"--expires-in-days must be positive, got {expires_in_days:g}")
    token_id = uuid.uuid4().hex
    secret = secrets.token_urlsafe(32)
    now = time.time()
    expires_at = now + expires_in_days * 86400 if expires_in_days is not None else None
    with db.engine.begin() as conn:
        conn.execute(
            m.api_tokens.insert().values(
                id=token_id,
                name=name,
                role=role,
                secret_hash=_hash(secret),
                created_at=now,
                expires_at=expires_at,
                revoked_at=None,
                last_used_at=None,
            )
        )
    return CreatedToken(token_id, name, role, f"{TOKEN_PREFIX}{token_id}.{secret}", now, expires_at)


def list_tokens(db: Database) -> list[dict[str, Any]]:
    """Every token's metadata (never a secret or its hash), newest first."""
    t = m.api_tokens
    cols = [c for c in t.c if c.name != "secret_hash"]
    with db.engine.connect() as conn:
        rows = conn.execute(select(*cols).order_by(t.c.created_at.desc()))
        return [dict(r._mapping) for r in rows]


def revoke_token(db: Database, token_id: str) -> bool:
    """Revoke a token by id (or the token string itself); False if no such token."""
    mt = _TOKEN.match(token_id)
    if mt is not None:
        token_id = mt["id"]
    t = m.api_tokens
    with db.engine.begin() as conn:
        row = conn.execute(select(t.c.revoked_at).where(t.c.id == token_id)).first()
        if row is None:
            return False
        if row[0] is None:
            conn.execute(update(t).where(t.c.id == token_id).values(revoked_at=time.time()))
    return True


def verify_token(db: Database, token: str, now: float | None = None) -> Principal | None:
    """The principal a token stands for, or None if it is not a valid, live token."""
    mt = _TOKEN.match(token.strip())
    if mt is None:
        return None
    t = m.api_tokens
    with db.engine.connect() as conn:
        row = conn.execute(
            select(
                t.c.name,
                t.c.role,
                t.c.secret_hash,
                t.c.expires_at,
                t.c.revoked_at,
                t.c.last_used_at,
            ).where(t.c.id == mt["id"])
        ).first()
    expected = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, _hash(mt["secret"])) or row is None:
        return None
    now = time.time() if now is None else now
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_S:
        with db.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == mt["id"]).values(last_used_at=now))
    return Principal(mt["id"], row.name, row.role)


async def authenticate_token(app_state_or_db: Any, token: str) -> Principal | None:
    """Check a bearer token from a coroutine (the database work runs in a thread).

    ``app_state_or_db`` is the app's ``state`` (anything with a ``db`` attribute) or a
    :class:`~flowfed.db.Database`. Returns None for any token that must be refused.
    """
    db = app_state_or_db if isinstance(app_state_or_db, Database) else app_state_or_db.db
    return await asyncio.to_thread(verify_token, db, token)


_bearer = HTTPBearer(
    auto_error=False,
    description="A user API token (`flowfed auth token create`): `Authorization: Bearer ffu_...`",
)


def unauthorized() -> ProblemError:
    """The one 401 every refused credential gets."""
    return ProblemError(
        401,
        "a valid bearer token is required (Authorization: Bearer <token>)",
        kind="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """FastAPI dependency: the request's principal, or a 401 problem."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized()
    principal = await authenticate_token(request.app.state, credentials.credentials)
    if principal is None:
        raise unauthorized()
    request.state.principal = principal
    return principal
