"""User API tokens: creation, listing, revocation and bearer authentication.

A token handed to a user reads ``ffu_<id>.<secret>``: ``id`` (uuid4 hex) finds the row,
the secret (``secrets.token_urlsafe(32)``) proves possession. Only the SHA-256 of the
secret is stored, and it is compared in constant time, so neither a database dump nor
response timing gives a usable token away. Every way a token can be wrong (missing,
malformed, unknown, wrong secret, expired, revoked) gets the same 401: a client learns
nothing about which tokens exist.

Bearer authentication also accepts the OAuth2 access tokens of nodes and tools
(:mod:`flowfed.server.oauth`). Roles:

- ``admin``: everything, including the token and client listings under ``/api/v1/auth``;
- ``user``: every resource endpoint;
- ``node`` (scope ``node:<name>``): only the tasks whose ``node`` is ``<name>``;
- ``tool`` (scope ``task:<id>``): only that task.

A node or tool token gets the same 403 (:class:`Forbidden`) for every request outside
its scope, whether the resource exists or not. Routers depend on
:func:`require_principal` (admin and user), :func:`require_admin`, or, for the task
routes, :func:`require_task_access`.

The WebSocket routes reuse :func:`authenticate_token` and :func:`websocket_refusal`.
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
from flowfed.server.hashing import hash_secret
from flowfed.server.problems import ProblemError
from flowfed.wording import with_article

TOKEN_PREFIX = "ffu_"
#: Roles of user API tokens (``flowfed auth token create``).
ROLES = ("admin", "user")
Role = Literal["admin", "user"]
#: Roles of OAuth2 clients, whose tokens reach only what their scope names.
SCOPED_ROLES = ("node", "tool")
ALL_ROLES = (*ROLES, *SCOPED_ROLES)

_TOKEN = re.compile(r"^ffu_(?P<id>[0-9a-f]{32})\.(?P<secret>[A-Za-z0-9_\-]{16,128})$")

#: ``last_used_at`` is refreshed at most this often per token: a write per request would
#: make every read contend with the run writers for the database lock.
LAST_USED_RESOLUTION_S = 60.0

# Compared against when the id is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"flowfed-no-such-token").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's id (a client id for a node or tool), name, role.

    ``scopes`` are an access token's granted scopes (``node:<name>``, ``task:<id>``);
    user API tokens have none.
    """

    token_id: str
    name: str
    role: str
    scopes: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        """Whether the token has the ``admin`` role."""
        return self.role == "admin"

    @property
    def is_scoped(self) -> bool:
        """Whether this is a node or tool, limited to what its scopes name."""
        return self.role not in ROLES

    def may_read_task(self, task_id: str, task_node: str | None) -> bool:
        """Whether the principal may read task ``task_id`` (on ``task_node``; None: no task)."""
        if not self.is_scoped:
            return True
        if task_node is None:
            return False
        if self.role == "tool":
            return f"task:{task_id}" in self.scopes
        return f"node:{task_node}" in self.scopes


@dataclass(frozen=True)
class CreatedToken:
    """A new token: ``token`` is shown to the user once and never stored."""

    id: str
    name: str
    role: str
    token: str
    created_at: float
    expires_at: float | None


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
                secret_hash=hash_secret(secret),
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
    if not hmac.compare_digest(expected, hash_secret(mt["secret"])) or row is None:
        return None
    now = time.time() if now is None else now
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_S:
        with db.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == mt["id"]).values(last_used_at=now))
    return Principal(mt["id"], row.name, row.role)


def verify_bearer(db: Database, token: str, signing_key: bytes | None = None) -> Principal | None:
    """The principal of a user API token or an OAuth2 access token, or None.

    ``signing_key`` verifies access tokens; without it the key is found as the server
    finds it (``$FLOWFED_SIGNING_KEY``, else the catalog's key file or the database's).
    """
    from flowfed.server import oauth

    token = token.strip()
    if token.startswith(TOKEN_PREFIX):
        return verify_token(db, token)
    if token.count(".") != 2:
        return None
    if signing_key is None:
        try:
            signing_key = oauth.find_signing_key(db)
        except oauth.SigningKeyError:
            return None
        if signing_key is None:
            return None  # no server has issued a token on this database yet
    found = oauth.verify_access_token(db, signing_key, token)
    if found is None:
        return None
    client_id, name, role, scope = found
    return Principal(client_id, name, role, tuple(scope.split()))


async def authenticate_token(
    app_state_or_db: Any, token: str, *, scoped: bool = False
) -> Principal | None:
    """Check a bearer token from a coroutine (the database work runs in a thread).

    ``app_state_or_db`` is the app's ``state`` (anything with a ``db`` attribute, and the
    server's ``signing_key``) or a :class:`~flowfed.db.Database`. Returns None for any
    token that must be refused. Node and tool principals (OAuth2 access tokens) are
    returned only with ``scoped=True``: by default a caller gets admin and user
    principals only, so code written before scoped roles existed cannot let them in.
    """
    if isinstance(app_state_or_db, Database):
        db, key = app_state_or_db, None
    else:
        db, key = app_state_or_db.db, getattr(app_state_or_db, "signing_key", None)
    principal = await asyncio.to_thread(verify_bearer, db, token, key)
    if principal is not None and principal.is_scoped and not scoped:
        return None
    return principal


@dataclass(frozen=True)
class WebSocketRefusal:
    """Why a WebSocket is closed: ``code`` and ``reason`` for ``websocket.close``."""

    code: int
    reason: str


def websocket_refusal(principal: Principal | None) -> WebSocketRefusal | None:
    """None if ``principal`` may watch run events, else the close code and reason.

    4401 for no valid credentials, 4403 for node and tool tokens (they see their tasks
    over REST only). Use with ``authenticate_token(state, token, scoped=True)``.
    """
    if principal is None:
        return WebSocketRefusal(4401, "missing or invalid bearer token")
    if principal.is_scoped:
        return WebSocketRefusal(
            4403, f"{with_article(principal.role)} token cannot watch run events"
        )
    return None


_bearer = HTTPBearer(
    auto_error=False,
    description="A user API token (`flowfed auth token create`): `Authorization: Bearer "
    "ffu_...`, or an OAuth2 access token from `POST /api/v1/oauth/token` (nodes and tools).",
)


class Forbidden(ProblemError):
    """A 403 whose problem document is the same wherever it is raised.

    Its handler (installed by ``create_app``) leaves out ``instance``, so a node asking
    for a task it may not see gets byte-for-byte the answer it gets for a task that does
    not exist.
    """

    def __init__(self, detail: str = "this token's role and scope do not allow this request"):
        super().__init__(403, detail, kind="forbidden")


def unauthorized() -> ProblemError:
    """The one 401 every refused credential gets."""
    return ProblemError(
        401,
        "a valid bearer token is required (Authorization: Bearer <token>)",
        kind="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticated(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The request's principal of any role, or a 401 problem."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized()
    principal = await authenticate_token(request.app.state, credentials.credentials, scoped=True)
    if principal is None:
        raise unauthorized()
    request.state.principal = principal
    return principal


async def require_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """FastAPI dependency: an admin or user principal; 401 without one, 403 for nodes/tools."""
    principal = await authenticated(request, credentials)
    if principal.is_scoped:
        raise Forbidden()
    return principal


async def require_admin(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """FastAPI dependency: an admin principal (401 without credentials, 403 otherwise)."""
    principal = await authenticated(request, credentials)
    if principal.is_scoped:
        raise Forbidden()  # the one answer nodes and tools get outside their scope
    if not principal.is_admin:
        raise Forbidden("this endpoint needs the admin role")
    return principal


def task_node(db: Database, task_id: str) -> str | None:
    """The ``node`` of the task with exactly this id, None if there is no such task."""
    t = m.tasks
    with db.engine.connect() as conn:
        node: str | None = conn.execute(select(t.c.node).where(t.c.id == task_id)).scalar()
    return node


async def require_task_access(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """FastAPI dependency of the task routes: admins and users read every task; a node
    or tool reads the tasks its scope names (the path's exact ``task_id``), else 403.
    """
    principal = await authenticated(request, credentials)
    if principal.is_scoped:
        task_id = str(request.path_params.get("task_id", ""))
        node = await asyncio.to_thread(task_node, request.app.state.db, task_id)
        if not principal.may_read_task(task_id, node):
            raise Forbidden()
    return principal
