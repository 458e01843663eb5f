"""OAuth2 client credentials (RFC 6749 §4.4) for nodes and tools.

An admin registers a client (``flowfed auth client create``): a ``role`` (``node`` or
``tool``), the scopes it may ask for (``node:<name>`` for a node, ``task:<id>`` for a
tool) and a secret that is shown once; only the secret's SHA-256 is stored. The client
trades its id and secret at ``POST /api/v1/oauth/token`` for a short-lived access token,
a JWT that carries the client's role, its id (``sub``) and the granted ``scope``.

Signing: HS256 (HMAC-SHA256, via PyJWT). Access tokens are only ever verified by the
flowfed servers that issue them, all of which share one database, so a symmetric key is
enough: nobody outside needs to verify a token without also being able to mint one
(the case an asymmetric Ed25519 key would serve). HMAC also keeps the key a plain
random byte string (a file, an environment variable or a database row, no key format to
parse) and verification, done on every request, cheap. The key comes from
``--signing-key-file``, else ``$FLOWFED_SIGNING_KEY``, else a random key that the first
server to start stores in the ``signing_keys`` table, so every server process on one
database accepts the tokens any of them issued.

A valid signature is not all: every request also checks that the client still exists and
is not revoked, so revoking a client cuts off its outstanding tokens at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.server.auth import hash_secret

CLIENT_PREFIX = "ffc_"
CLIENT_ROLES = ("node", "tool")
SIGNING_KEY_ENV = "FLOWFED_SIGNING_KEY"
#: Shortest accepted signing key: HS256 wants at least the hash's 32 bytes.
MIN_KEY_BYTES = 32
ALGORITHM = "HS256"
ISSUER = "flowfed"
AUDIENCE = "flowfed-api"
#: RFC 9068's media type for JWT access tokens, in the ``typ`` header.
TOKEN_TYPE = "at+jwt"
#: The ``signing_keys`` row holding the generated key.
_KEY_ROW = "access-tokens-hs256"

_CLIENT_ID = re.compile(r"^(?:ffc_)?(?P<id>[0-9a-f]{32})$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_TASK_SCOPE = re.compile(r"^task:[0-9a-f]{32}$")
_DUMMY_HASH = hashlib.sha256(b"flowfed-no-such-client").hexdigest()


class SigningKeyError(ValueError):
    """The configured signing key cannot be used (unreadable or too short)."""


@dataclass(frozen=True)
class CreatedClient:
    """A new client: ``secret`` is shown to the admin once and never stored."""

    id: str
    client_id: str
    name: str
    role: str
    scope: str
    secret: str
    created_at: float


@dataclass(frozen=True)
class Client:
    """A registered, live client (after its secret was checked)."""

    client_id: str
    name: str
    role: str
    scopes: tuple[str, ...]


def client_row_id(client_id: str) -> str | None:
    """The table id of ``ffc_<id>`` (or a bare id), None if it is not one."""
    mt = _CLIENT_ID.match(client_id.strip())
    return mt["id"] if mt else None


def check_scopes(role: str, name: str, scopes: list[str] | None) -> list[str]:
    """The scopes a client of ``role`` may hold (ValueError for a bad role or scope).

    A node defaults to ``node:<name>``; a tool must name its task(s) as ``task:<id>``.
    """
    if role not in CLIENT_ROLES:
        raise ValueError(f"role must be one of {', '.join(CLIENT_ROLES)}, got {role!r}")
    items = [s for raw in scopes or [] for s in raw.split()]
    if not items:
        if role == "tool":
            raise ValueError("a tool client needs --scope task:<task id>")
        items = [f"node:{name}"]
    prefix = f"{role if role == 'node' else 'task'}:"
    for s in items:
        if not _SCOPE_TOKEN.match(s):
            raise ValueError(f"scope {s!r} has characters a scope cannot hold")
        if not s.startswith(prefix) or len(s) == len(prefix):
            raise ValueError(f"a {role} client's scopes read '{prefix}<...>', got {s!r}")
        if role == "tool" and not _TASK_SCOPE.match(s):
            raise ValueError(f"a task scope names a full task id (32 hex digits), got {s!r}")
    return list(dict.fromkeys(items))


def create_client(
    db: Database, name: str, role: str, scopes: list[str] | None = None
) -> CreatedClient:
    """Register a client and return its id and secret (ValueError for bad arguments)."""
    if not name.strip():
        raise ValueError("a client needs a non-empty name")
    scope = " ".join(check_scopes(role, name, scopes))
    row_id = uuid.uuid4().hex
    secret = secrets.token_urlsafe(32)
    now = time.time()
    with db.engine.begin() as conn:
        conn.execute(
            m.oauth_clients.insert().values(
                id=row_id,
                name=name,
                role=role,
                scope=scope,
                secret_hash=hash_secret(secret),
                created_at=now,
                revoked_at=None,
                last_used_at=None,
            )
        )
    return CreatedClient(row_id, CLIENT_PREFIX + row_id, name, role, scope, secret, now)


def list_clients(db: Database) -> list[dict[str, Any]]:
    """Every client's metadata (never a secret or its hash), newest first."""
    c = m.oauth_clients
    cols = [col for col in c.c if col.name != "secret_hash"]
    with db.engine.connect() as conn:
        rows = conn.execute(select(*cols).order_by(c.c.created_at.desc()))
        return [{**dict(r._mapping), "client_id": CLIENT_PREFIX + r.id} for r in rows]


def revoke_client(db: Database, client_id: str) -> bool:
    """Revoke a client (``ffc_<id>`` or the bare id); False if there is no such client."""
    row_id = client_row_id(client_id)
    if row_id is None:
        return False
    c = m.oauth_clients
    with db.engine.begin() as conn:
        row = conn.execute(select(c.c.revoked_at).where(c.c.id == row_id)).first()
        if row is None:
            return False
        if row[0] is None:
            conn.execute(update(c).where(c.c.id == row_id).values(revoked_at=time.time()))
    return True


def authenticate_client(db: Database, client_id: str, secret: str) -> Client | None:
    """The live client these credentials belong to, or None (constant-time comparison)."""
    row_id = client_row_id(client_id)
    c = m.oauth_clients
    row = None
    if row_id is not None:
        with db.engine.connect() as conn:
            row = conn.execute(
                select(c.c.name, c.c.role, c.c.scope, c.c.secret_hash, c.c.revoked_at).where(
                    c.c.id == row_id
                )
            ).first()
    expected = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, hash_secret(secret)) or row is None:
        return None
    if row.revoked_at is not None:
        return None
    with db.engine.begin() as conn:
        conn.execute(update(c).where(c.c.id == row_id).values(last_used_at=time.time()))
    return Client(CLIENT_PREFIX + str(row_id), row.name, row.role, tuple(row.scope.split()))


def issue_token(
    key: bytes, client: Client, scopes: tuple[str, ...], ttl: int, now: float | None = None
) -> tuple[str, int]:
    """A signed access token for ``client`` with ``scopes``, and its lifetime in seconds."""
    now = time.time() if now is None else now
    # Rounded up: a token is never valid for less than ``ttl`` seconds.
    exp = math.ceil(now + ttl)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": client.client_id,
        "client_id": client.client_id,
        "name": client.name,
        "role": client.role,
        "scope": " ".join(scopes),
        "iat": int(now),
        "exp": exp,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})
    return token, ttl


def decode_token(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of a valid, unexpired access token signed with ``key``, else None."""
    try:
        if jwt.get_unverified_header(token).get("typ") != TOKEN_TYPE:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("role") not in CLIENT_ROLES or not isinstance(claims.get("scope"), str):
        return None
    return claims


def verify_access_token(db: Database, key: bytes, token: str) -> tuple[str, str, str, str] | None:
    """``(client_id, name, role, scope)`` for a valid token of a live client, else None.

    None also when the token claims a scope its client is not registered for, however
    valid its signature.
    """
    claims = decode_token(key, token)
    if claims is None:
        return None
    row_id = client_row_id(str(claims["sub"]))
    if row_id is None:
        return None
    c = m.oauth_clients
    with db.engine.connect() as conn:
        row = conn.execute(
            select(c.c.name, c.c.role, c.c.scope, c.c.revoked_at).where(c.c.id == row_id)
        ).first()
    if row is None or row.revoked_at is not None or row.role != claims["role"]:
        return None
    # A valid signature proves who signed, not what the client may do: every scope the
    # token claims must be one its client is registered for, so a token minted with a
    # leaked key (or issued before the client's scopes were narrowed) gets no more.
    if not set(claims["scope"].split()) <= set(row.scope.split()):
        return None
    return CLIENT_PREFIX + row_id, row.name, row.role, claims["scope"]


def load_signing_key(db: Database, key_file: str | None = None) -> bytes:
    """The access-token signing key: the file, else ``$FLOWFED_SIGNING_KEY``, else the database's.

    The database key is generated by the first server that needs it; a concurrent first
    start by another process loses the insert race and reads the winner's key.
    """
    key = find_signing_key(db, key_file)
    if key is not None:
        return key
    fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    k = m.signing_keys
    try:
        with db.engine.begin() as conn:
            conn.execute(k.insert().values(id=_KEY_ROW, secret=fresh, created_at=time.time()))
    except IntegrityError:
        pass  # another server stored its key first: use that one
    key = find_signing_key(db, key_file)
    if key is None:
        raise SigningKeyError("could not store a signing key in the database")
    return key


def find_signing_key(db: Database, key_file: str | None = None) -> bytes | None:
    """Like :func:`load_signing_key`, but None instead of generating a database key."""
    if key_file:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise SigningKeyError(
                f"cannot read --signing-key-file {key_file!r}: {exc.strerror or exc}"
            ) from None
        return _long_enough(key, f"--signing-key-file {key_file!r}")
    env = os.environ.get(SIGNING_KEY_ENV)
    if env:
        return _long_enough(env.strip().encode(), f"${SIGNING_KEY_ENV}")
    k = m.signing_keys
    with db.engine.connect() as conn:
        stored = conn.execute(select(k.c.secret).where(k.c.id == _KEY_ROW)).scalar()
    if stored is None:
        return None
    try:
        return base64.urlsafe_b64decode(stored)
    except (binascii.Error, ValueError):
        raise SigningKeyError("the signing key stored in the database is corrupt") from None


def _long_enough(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"the signing key from {where} is {len(key)} bytes; it needs at least "
            f"{MIN_KEY_BYTES} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return key
