"""A task's inputs on a node: loaded, checked, cached decoded, and counted in rows.

An input with location ``node`` comes from the node's own artifact store by hash (an
earlier task's output); a ``central`` one comes inline and must match its hash. Tables
and arrays from the node's store stay decoded between tasks (:class:`DecodedCache`).
:class:`TaskInputs` also keeps, by content hash, how many of the node's rows each stored
object covers (``rows.json``): the egress checks (:mod:`flowfed.node.egress`) need it for
outputs built from earlier outputs.

A room of its own because it is what the agent hands a tool, apart from running it
(:mod:`flowfed.node.tool_call`) and from what leaves afterwards.

Example:
    >>> import numpy as np
    >>> cache = DecodedCache(budget=100)
    >>> cache.put("h", np.zeros(3), 24)
    >>> cache.get("h").tolist(), cache.size
    ([0.0, 0.0, 0.0], 24)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from flowfed.artifacts import ArtifactStore, load
from flowfed.node.egress import rows_of
from flowfed.node.task_failure import TaskFailure
from flowfed.runtime.remote import RemoteInput, RemoteTask


class DecodedCache:
    """Tables and arrays from the node's store, decoded once and copied per task.

    A federated step reads the same training table from the node's store in every round;
    decoding its Parquet took longer than the round's training. Entries are keyed by
    content hash, so one can never be stale. Each task gets a deep copy, so a tool that
    changes its input in place cannot change what the next task reads. The budget counts
    serialized bytes, least recently used first out; anything larger is not kept.
    """

    KINDS = frozenset({"pandas", "numpy"})

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._lock = threading.Lock()
        self._items: dict[str, tuple[Any, int]] = {}  # insertion order = LRU order

    def get(self, hash: str) -> Any | None:
        """A copy of the value stored under ``hash`` (``None`` if not kept)."""
        with self._lock:
            item = self._items.pop(hash, None)
            if item is None:
                return None
            self._items[hash] = item
        return item[0].copy()

    def put(self, hash: str, value: Any, size: int) -> None:
        """Keep a copy of ``value`` (``size`` serialized bytes) unless over the budget."""
        if self.budget <= 0 or size > self.budget:
            return
        with self._lock:
            if hash in self._items:
                return
            while self._items and self.size + size > self.budget:
                _, freed = self._items.pop(next(iter(self._items)))
                self.size -= freed
            self._items[hash] = (value.copy(), size)
            self.size += size


class TaskInputs:
    """Loads task inputs from ``store`` (through ``decoded``) and tracks rows per hash.

    ``rows_path`` is the node's ``rows.json``, read at start and rewritten as outputs are
    stored.
    """

    def __init__(
        self, store: ArtifactStore, decoded: DecodedCache, node: str, rows_path: Path
    ) -> None:
        self.store = store
        self.decoded = decoded
        self.node = node
        self._lock = threading.Lock()
        self._rows_path = rows_path
        self._rows: dict[str, int] = read_rows(rows_path)

    def load(self, task: RemoteTask, name: str, value: RemoteInput | list[RemoteInput]) -> Any:
        """Input ``name`` of ``task`` as the tool gets it (:class:`TaskFailure` if it cannot)."""
        if isinstance(value, list):
            return [self.load(task, name, v) for v in value]
        if value.pickled and not task.allow_pickle:
            raise TaskFailure(
                f"input '{name}' is pickled but the task does not allow pickle",
                "InputError",
                public=True,
            )
        cached = value.location == "node" and value.kind in DecodedCache.KINDS
        if cached:
            got = self.decoded.get(value.hash)
            if got is not None:
                return got
        if value.location == "node":
            try:
                data = self.store.get(value.hash, verify=True)
            except (FileNotFoundError, OSError) as exc:
                raise TaskFailure(
                    f"input '{name}' ({value.hash[:12]}) is not in node "
                    f"'{self.node}''s store: {exc}",
                    "InputError",
                    public=True,
                ) from None
        else:
            if value.data is None:
                raise TaskFailure(
                    f"central input '{name}' came without its bytes", "InputError", public=True
                )
            data = value.data
            if hashlib.sha256(data).hexdigest() != value.hash:
                raise TaskFailure(
                    f"input '{name}' does not match its hash {value.hash[:12]}",
                    "InputError",
                    public=True,
                )
        try:
            got = load(value.kind, data, value.meta)
        except Exception as exc:
            raise TaskFailure(
                f"cannot load input '{name}' ({value.kind}): {exc}", "InputError", public=True
            ) from None
        if cached:
            self.decoded.put(value.hash, got, len(data))
        return got

    def rows_in(
        self, task: RemoteTask, args: dict[str, Any], dataset: dict[str, Any] | None
    ) -> int | None:
        """How many of the node's rows the task's inputs cover (the largest of them)."""
        found: list[int] = []
        if dataset is not None and not any(
            v.location == "node" for vs in task.inputs.values() for v in as_list(vs)
        ):
            found.append(int(dataset["rows"]))
        for name, value in task.inputs.items():
            for one, got in zip(as_list(value), as_list(args.get(name)), strict=False):
                if one.location != "node":
                    continue
                rows = self._rows.get(one.hash)
                if rows is None:
                    rows = rows_of(got)
                if rows is not None:
                    found.append(rows)
        return max(found) if found else None

    def remember_rows(self, outputs: dict[str, Any], rows: int | None) -> None:
        """Record that each of ``outputs`` (by hash) covers ``rows`` of the node's rows."""
        if rows is None:
            return
        with self._lock:
            for o in outputs.values():
                self._rows[o.hash] = rows
            write_rows(self._rows_path, self._rows)


def width(args: dict[str, Any], dataset: dict[str, Any] | None) -> int:
    """The most columns among the task's tables (and its dataset)."""
    widths = [len(dataset.get("columns") or [])] if dataset else []
    for value in args.values():
        for one in as_list(value):
            columns = getattr(one, "columns", None)
            if columns is not None:
                widths.append(len(columns))
    return max(widths, default=0)


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else ``[value]`` (an input may be one or many)."""
    return value if isinstance(value, list) else [value]


def read_rows(path: Path) -> dict[str, int]:
    """The rows-per-hash record in ``path`` (empty if missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


def write_rows(path: Path, rows: dict[str, int]) -> None:
    """Replace ``path`` (mode 0600) with ``rows``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(rows, f)
    os.replace(tmp, path)
