"""Lazy artifact handles: what a consumer task receives instead of the value itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowfed.artifacts.blobs import ByteSource
from flowfed.artifacts.materializers import load as load_value

_MISSING: Any = object()


class ArtifactHandle:
    """A reference to a stored artifact whose value is read on first :meth:`load`.

    In-process consumers pass the producer's value as ``value=`` and never touch the store.
    ``reads`` counts store reads (0 until the first :meth:`load` of a handle without value).
    """

    __slots__ = (
        "_value",
        "hash",
        "id",
        "kind",
        "meta",
        "name",
        "reads",
        "size",
        "store",
        "type_name",
        "uri",
        "version",
    )

    def __init__(
        self,
        store: ByteSource,
        *,
        id: str,
        name: str,
        hash: str,
        size: int,
        kind: str,
        type_name: str,
        uri: str,
        version: int | None = None,
        meta: dict[str, Any] | None = None,
        value: Any = _MISSING,
    ) -> None:
        self.store = store
        self.id = id
        self.name = name
        self.version = version
        self.hash = hash
        self.size = size
        self.kind = kind
        self.type_name = type_name
        self.uri = uri
        self.meta = meta or {}
        self.reads = 0
        self._value = value

    @classmethod
    def from_row(
        cls, store: ByteSource, row: dict[str, Any], *, value: Any = _MISSING
    ) -> ArtifactHandle:
        """A handle for an artifact dict as returned by :class:`flowfed.db.Database`."""
        return cls(
            store,
            id=row["id"],
            name=row["name"],
            version=row.get("version"),
            hash=row["hash"],
            size=row["size"],
            kind=row["kind"],
            type_name=row["type_name"],
            uri=row["uri"],
            meta=row.get("meta"),
            value=value,
        )

    @property
    def loaded(self) -> bool:
        """Whether the value is in memory."""
        return self._value is not _MISSING

    def load(self) -> Any:
        """The artifact's value: read and deserialized on the first call, then cached."""
        if self._value is _MISSING:
            data = self.store.get(self.hash, verify=True)
            self.reads += 1
            self._value = load_value(self.kind, data, self.meta)
        return self._value

    @property
    def path(self) -> Path | None:
        """The object's local file (None for non-local stores)."""
        return self.store.local_path(self.hash)

    def __repr__(self) -> str:
        v = "" if self.version is None else f":{self.version}"
        return f"<ArtifactHandle {self.name}{v} {self.kind} {self.hash[:12]}>"
