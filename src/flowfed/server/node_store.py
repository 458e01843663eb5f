"""Node credentials and rows: registering, removing and authenticating data nodes.

Node credentials: ``ffn_<secret>``, issued by :func:`add_node` (``flowfed nodes add``);
only the SHA-256 of the secret is stored (``nodes.token_hash``), as for API tokens.

Example:
    >>> # created = add_node(db, "hospital-a"); node_for_token(db, created.token)
    >>> # 'hospital-a'
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.server.hashing import hash_secret

NODE_TOKEN_PREFIX = "ffn_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True)
class CreatedNode:
    """A new node's credentials; ``token`` is shown once and never stored."""

    name: str
    token: str
    created_at: float


def add_node(db: Database, name: str) -> CreatedNode:
    """Register node ``name`` and return its token (ValueError: bad or taken name).

    Example:
        >>> # created = add_node(db, "hospital-a"); created.token.startswith("ffn_")
    """
    if not _NAME.match(name):
        raise ValueError(
            f"node name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    secret = secrets.token_urlsafe(32)
    now = time.time()
    with db.transaction() as conn:
        if conn.execute(select(m.nodes.c.name).where(m.nodes.c.name == name)).first():
            raise ValueError(f"a node named '{name}' exists already (remove it first)")
        conn.execute(
            insert(m.nodes).values(
                name=name,
                token_hash=hash_secret(secret),
                created_at=now,
                last_seen=None,
                datasets=[],
                status="offline",
            )
        )
    return CreatedNode(name, NODE_TOKEN_PREFIX + secret, now)


def remove_node(db: Database, name: str) -> bool:
    """Delete node ``name`` (its token stops working); False if there is no such node."""
    with db.transaction() as conn:
        return bool(conn.execute(delete(m.nodes).where(m.nodes.c.name == name)).rowcount)


def node_for_token(db: Database, token: str) -> str | None:
    """The name of the node whose token this is, or None."""
    token = token.strip()
    if not token.startswith(NODE_TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_secret(token[len(NODE_TOKEN_PREFIX) :])
    with db.engine.connect() as conn:
        row = conn.execute(
            select(m.nodes.c.name, m.nodes.c.token_hash).where(m.nodes.c.token_hash == digest)
        ).first()
    if row is None or not secrets.compare_digest(row.token_hash, digest):
        return None
    return str(row.name)


def stored_nodes(db: Database) -> list[dict[str, Any]]:
    """Every node row (never the token hash), by name."""
    t = m.nodes
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(t.c.name, t.c.created_at, t.c.last_seen, t.c.datasets, t.c.status).order_by(
                t.c.name
            )
        )
        return [dict(r._mapping) for r in rows]


def record_registration(
    db: Database, name: str, datasets: dict[str, dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Record node ``name`` online with ``datasets``; the dataset changes it brought.

    A dataset whose content hash differs from what the node registered before (or a new
    one) adds a row to ``node_dataset_changes`` and a platform event, in the same
    transaction, so a trigger sees exactly these changes.
    """
    from flowfed.db.platform_events import node_dataset_changed

    changes: list[dict[str, Any]] = []
    with db.transaction() as c:
        row = c.execute(select(m.nodes.c.datasets).where(m.nodes.c.name == name)).first()
        before = {d["name"]: d for d in (row.datasets if row is not None else []) or []}
        for ds, info in datasets.items():
            old_hash = before.get(ds, {}).get("hash")
            if old_hash != info["hash"]:
                changes.append(
                    {"node": name, "dataset": ds, "old_hash": old_hash,
                     "new_hash": info["hash"], "ts": now}
                )  # fmt: skip
        if changes:
            c.execute(insert(m.node_dataset_changes), changes)
            for ch in changes:
                node_dataset_changed(c, ch["node"], ch["dataset"], ch["old_hash"], ch["new_hash"])
        c.execute(
            update(m.nodes)
            .where(m.nodes.c.name == name)
            .values(datasets=list(datasets.values()), status="online", last_seen=now)
        )
    return changes
