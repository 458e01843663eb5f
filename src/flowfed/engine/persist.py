"""Artifact persistence off the hot path: bytes to the store, then rows to the catalog.

A finished task hands its materialized outputs here and moves on. One background thread
writes the bytes to the artifact store and only then queues the task's catalog rows to
the database writer, so a catalog row never points at bytes that are not stored, and a
task's hot path never waits on file-system syscalls (which, next to the database's own
writes, cost far more than the tool itself for small outputs). In-process consumers use
the value in memory; the run waits for this thread before it reports.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from flowfed.artifacts import ArtifactStore, Materialized
from flowfed.db import Writer

_STOP = object()


class Persister:
    """Writes artifacts' bytes, then their catalog rows, in submission order."""

    def __init__(self, store: ArtifactStore, writer: Writer) -> None:
        self.store = store
        self.writer = writer
        self.errors: list[str] = []
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="flowfed-persist", daemon=True)
        self._thread.start()

    def submit(self, step: str, objects: list[Materialized], finish: dict[str, Any]) -> None:
        """Store ``objects``, then record ``finish`` (``Writer.finish_task`` keyword args)."""
        self._q.put((step, objects, finish))

    def close(self) -> None:
        """Wait until everything submitted is stored and queued to the writer."""
        self._q.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            step, objects, finish = item
            try:
                for m in objects:
                    self.store.put(m)
            except Exception as exc:  # disk full, permissions, a vanished bucket
                # The catalog must not name bytes that were never stored: the task's rows are
                # dropped and the run reports why.
                self.errors.append(
                    f"could not store the outputs of step '{step}' in {self.store.url}: {exc}"
                )
                continue
            self.writer.finish_task(**finish)
