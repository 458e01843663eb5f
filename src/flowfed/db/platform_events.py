"""Platform events: a server-wide, append-only log any part of the server can write to.

Each row is ``(id, kind, payload JSON, ts)``. The trigger service polls the table (with a
persisted watermark per trigger), so an event recorded by one server process is seen by
triggers evaluated in any other, and survives restarts. Kinds in use:

- ``node.dataset_changed``: ``{"kind", "node", "dataset", "old_hash", "new_hash"}``, recorded
  by the node hub through :func:`node_dataset_changed` when a node reports a dataset whose
  content hash differs from the one it reported before.

Any other ``kind`` (``a.b`` style, up to 64 characters) may be recorded with :func:`record`
and matched by a trigger's ``on: {platform: {kind: ...}}``.

Example:
    >>> # record(db, "model.approved", {"model": "global_model", "version": 3})
    >>> # node_dataset_changed(db, "hospital-a", "patients", "ab12...", "cd34...")
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from flowfed.db import models as m

if TYPE_CHECKING:
    from flowfed.db.database import Database

#: The kind recorded when a node's dataset hash changes.
NODE_DATASET_CHANGED = "node.dataset_changed"


def record(
    target: Database | Connection,
    kind: str,
    payload: dict[str, Any],
    ts: float | None = None,
) -> None:
    """Append one event; ``target`` is a Database or a Connection inside your transaction.

    Passing your own connection records the event atomically with the change it reports.
    The stored payload always carries ``kind``.
    """
    if not kind or len(kind) > 64:
        raise ValueError(f"platform event kind must be 1 to 64 characters, got {kind!r}")
    row = {"kind": kind, "payload": {**payload, "kind": kind}, "ts": ts or time.time()}
    if isinstance(target, Connection):
        target.execute(m.platform_events.insert().values(**row))
        return
    with target.transaction() as conn:
        conn.execute(m.platform_events.insert().values(**row))


def node_dataset_changed(
    target: Database | Connection,
    node: str,
    dataset: str,
    old_hash: str | None,
    new_hash: str,
) -> None:
    """Record that ``node`` now reports ``dataset`` with ``new_hash`` (was ``old_hash``).

    ``old_hash`` is None for a dataset the node reports for the first time.
    """
    record(
        target,
        NODE_DATASET_CHANGED,
        {"node": node, "dataset": dataset, "old_hash": old_hash, "new_hash": new_hash},
    )
