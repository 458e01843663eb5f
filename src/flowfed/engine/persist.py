"""Artifact persistence off the hot path: bytes to the store, then rows to the catalog.

A finished task hands its materialized outputs here and moves on. Background threads
write the bytes to the artifact store and only then queue the task's catalog rows to
the database writer, so a catalog row never points at bytes that are not stored, and a
task's hot path never waits on file-system syscalls (which, next to the database's own
writes, cost far more than the tool itself for small outputs). In-process consumers use
the value in memory; the run waits for these threads before it reports.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any

from flowfed.artifacts import ArtifactStore, ByteSource, Materialized
from flowfed.db import Writer

#: Parallel file writes: object creation is syscall-bound and releases the GIL, and a
#: file system serves a few at once far faster than one after the other.
WRITERS = 2


class Persister:
    """Writes each task's artifact bytes, then queues its catalog rows."""

    def __init__(self, store: ArtifactStore, writer: Writer) -> None:
        self.store = store
        self.writer = writer
        self.errors: list[str] = []
        self._pool = cf.ThreadPoolExecutor(WRITERS, thread_name_prefix="flowfed-persist")

    def submit(self, step: str, objects: list[Materialized], finish: dict[str, Any]) -> None:
        """Store ``objects``, then record ``finish`` (``Writer.finish_task`` keyword args)."""
        if not objects:
            self.writer.finish_task(**finish)
            return
        self._pool.submit(self._persist, step, objects, finish)

    def close(self) -> None:
        """Wait until everything submitted is stored and queued to the writer."""
        self._pool.shutdown(wait=True)

    def _persist(self, step: str, objects: list[Materialized], finish: dict[str, Any]) -> None:
        try:
            for m in objects:
                self.store.put(m)
        except Exception as exc:  # disk full, permissions, a vanished bucket
            # The catalog must not name bytes that were never stored: the task's rows are
            # dropped and the run reports why.
            self.errors.append(
                f"could not store the outputs of step '{step}' in {self.store.url}: {exc}"
            )
            return
        self.writer.finish_task(**finish)


class KeptBytes:
    """A byte source serving a run's kept bytes (``kept``, under ``lock``) before
    ``inner``: placed consumers read artifacts of this run before the catalog and the
    store, written behind the hot path, have them."""

    def __init__(self, kept: dict[str, bytes], lock: threading.Lock, inner: ByteSource) -> None:
        self.kept, self.lock, self.inner = kept, lock, inner

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        with self.lock:
            data = self.kept.get(hash)
        return data if data is not None else self.inner.get(hash, verify=verify)

    def local_path(self, hash: str) -> Any:
        return self.inner.local_path(hash)
