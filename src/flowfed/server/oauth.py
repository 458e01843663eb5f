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
server to start generates: next to a SQLite catalog in a 0600 file of its own (never in
the catalog, which backups copy and which holds no secret anyone could use), on
PostgreSQL in the ``signing_keys`` table, so every server process on one database accepts
the tokens any of them issued.

A valid signature is not all: every request also checks that the client still exists and
is not revoked, so revoking a client cuts off its outstanding tokens at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
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
from flowfed.server.hashing import hash_secret
from flowfed.wording import with_article

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
#: The ``signing_keys`` row holding the generated key (PostgreSQL; in-memory SQLite).
_KEY_ROW = "access-tokens-hs256"
#: Next to a SQLite catalog ``flowfed.db``, its generated key: ``flowfed.db.signing-key``.
KEY_FILE_SUFFIX = ".signing-key"

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
            raise ValueError(
                f"{with_article(role)} client's scopes read '{prefix}<...>', got {s!r}"
            )
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


def catalog_key_file(db: Database) -> Path | None:
    """Where the generated key of a SQLite catalog lives: ``<catalog>.signing-key``.

    None for PostgreSQL and in-memory databases, whose generated key stays in the
    ``signing_keys`` table (see :func:`load_signing_key`).

    Example:
        >>> catalog_key_file(Database("sqlite:///home/flowfed.db"))
        PosixPath('home/flowfed.db.signing-key')
    """
    path = db.sqlite_path()
    return None if path is None else path.with_name(path.name + KEY_FILE_SUFFIX)


def load_signing_key(db: Database, key_file: str | None = None) -> bytes:
    """The access-token signing key, generated on first use if none is configured.

    In order: the contents of ``key_file`` (``--signing-key-file``), else
    ``$FLOWFED_SIGNING_KEY``, else a generated random key, kept

    - for a SQLite catalog, in a file of its own next to it
      (:func:`catalog_key_file`, mode 0600), never in the catalog: a copy of the catalog
      (a backup, a file another local user could read) then gives no way to mint access
      tokens. A key an older flowfed stored in the catalog moves to that file (so the
      tokens it signed stay valid) and is erased from the catalog and its WAL;
    - for PostgreSQL, in the ``signing_keys`` table, which every server process on the
      database reads (only database roles that can read the catalog see it). The first
      server to start generates it; a concurrent first start loses the insert race and
      reads the winner's key.

    Raises :class:`SigningKeyError` for a configured key that is unreadable or too short.
    """
    key = _configured_key(key_file)
    if key is not None:
        return key
    path = catalog_key_file(db)
    if path is not None:
        return _catalog_key(db, path)
    key = _stored_key(db)
    if key is not None:
        return key
    k = m.signing_keys
    try:
        with db.engine.begin() as conn:
            conn.execute(k.insert().values(id=_KEY_ROW, secret=_new_key(), created_at=time.time()))
    except IntegrityError:
        pass  # another server stored its key first: use that one
    key = _stored_key(db)
    if key is None:
        raise SigningKeyError("could not store a signing key in the database")
    return key


def find_signing_key(db: Database, key_file: str | None = None) -> bytes | None:
    """Like :func:`load_signing_key`, but None instead of generating (or moving) a key."""
    key = _configured_key(key_file)
    if key is not None:
        return key
    path = catalog_key_file(db)
    if path is not None:
        found = _read_catalog_key(path)
        if found is not None:
            return found
    # A SQLite catalog whose key an older flowfed stored in it, and no server moved yet.
    return _stored_key(db)


def _configured_key(key_file: str | None) -> bytes | None:
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
    return None


def _new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode(stored: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(stored.strip())
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"the signing key in {where} is corrupt") from None
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(f"the signing key in {where} is corrupt (too short)")
    return key


def _stored_key(db: Database) -> bytes | None:
    k = m.signing_keys
    with db.engine.connect() as conn:
        stored = conn.execute(select(k.c.secret).where(k.c.id == _KEY_ROW)).scalar()
    return None if stored is None else _decode(stored, "the database")


def _read_catalog_key(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read the signing key file {str(path)!r}: {exc}") from None
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & 0o077:  # e.g. restored from a backup with other modes
            path.chmod(0o600)
    return _decode(text, repr(str(path)))


def _catalog_key(db: Database, path: Path) -> bytes:
    """The key in ``path``, made (from the catalog's old key, or fresh) if it is missing."""
    key = _read_catalog_key(path)
    k = m.signing_keys
    with db.engine.connect() as conn:
        old = conn.execute(select(k.c.secret).where(k.c.id == _KEY_ROW)).scalar()
    if key is None:
        # Written 0600 under a private name, then linked into place: a concurrent first
        # start never reads half a key, and the loser of the race reads the winner's.
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write((old.strip() if old is not None else _new_key()) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        except OSError as exc:
            raise SigningKeyError(
                f"cannot write the signing key file {str(path)!r}: {exc.strerror or exc}; "
                f"give a key with --signing-key-file or ${SIGNING_KEY_ENV}"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        key = _read_catalog_key(path)
        if key is None:
            raise SigningKeyError(f"the signing key file {str(path)!r} vanished")
    if old is not None:
        _erase_stored_key(db)
    return key


def _erase_stored_key(db: Database) -> None:
    """Delete the catalog's old key row so that no byte of it stays in the files.

    ``secure_delete`` overwrites the deleted row with zeros (else it lingers in a free
    page), and the checkpoint copies that page into the catalog and truncates the WAL,
    which still held the frames of the original insert.
    """
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("DELETE FROM signing_keys WHERE id = ?", (_KEY_ROW,))
        cur.execute("PRAGMA secure_delete=OFF")
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cur.close()
        raw.commit()
    finally:
        raw.close()


def _long_enough(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"the signing key from {where} is {len(key)} bytes; it needs at least "
            f"{MIN_KEY_BYTES} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return key
