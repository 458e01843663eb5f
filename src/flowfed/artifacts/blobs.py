"""Small artifact objects kept in the catalog database instead of the artifact store.

A file per small output (an int, a dict of metrics) costs a task more than all its other
bookkeeping; objects of at most :data:`INLINE_MAX_BYTES` are committed with the artifact
rows that name them, in one transaction. Their URI is ``db:blobs/<hash>``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Only for the annotation: a node imports flowfed.artifacts and must never load the
    # catalog's database layer (SQLAlchemy and all).
    from flowfed.db import Database

#: Largest object kept in the catalog; anything bigger goes to the artifact store.
INLINE_MAX_BYTES = 16 * 1024

INLINE_PREFIX = "db:blobs/"


def inline_uri(hash: str) -> str:
    """The URI of an object kept in the catalog."""
    return INLINE_PREFIX + hash


def is_inline(uri: str | None) -> bool:
    """Whether ``uri`` names an object kept in the catalog."""
    return bool(uri) and str(uri).startswith(INLINE_PREFIX)


class ByteSource(Protocol):
    """Where an artifact handle reads bytes from (the store, or the catalog's blobs)."""

    def get(self, hash: str, *, verify: bool = False) -> bytes: ...

    def local_path(self, hash: str) -> Path | None: ...


class CatalogBlobs:
    """Reads small objects from the catalog database, like a read-only store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        """The object's bytes (FileNotFoundError if the catalog has none)."""
        data = self.db.read_blob(hash)
        if data is None:
            raise FileNotFoundError(f"artifact object {hash} is not in the catalog")
        if verify and hashlib.sha256(data).hexdigest() != hash:
            from flowfed.artifacts.store import ArtifactCorrupted

            raise ArtifactCorrupted(f"artifact object {hash} in the catalog is corrupted")
        return data

    def local_path(self, hash: str) -> Path | None:
        """Catalog objects have no file of their own."""
        return None
