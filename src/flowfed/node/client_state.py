"""Where a node keeps its clients' state between federated rounds (never sent anywhere).

The engine tells a node only a *scope* for a federated training task
(``RemoteTask.client_state``: ``run:<run id>``, or ``flow:<flow name>`` when the step
keeps state across runs); the node adds the step, its own name and the dataset, and
keeps the state under that key in its own storage: files under the node's work folder
(a node agent) or a dict in memory (a simulated node). The tool reads and writes it as
``ctx.client_state``; what the tool leaves there is stored only when the task succeeds,
so a failed round does not half-update a node's state.

Example:
    >>> import numpy as np
    >>> from flowfed.tools.client_state import ClientState
    >>> store = ClientStateStore(None)
    >>> key = state_key("run:r1", "train", "hospital-a", "breast")
    >>> s = store.load(key); s["c"] = np.ones(2); store.save(key, s)
    >>> store.load(key)["c"]
    array([1., 1.])
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from flowfed.tools.client_state import ClientState


def state_key(scope: str, step: str, node: str, dataset: str | None) -> str:
    """The key of one client's state: scope, step, node and dataset."""
    return "\x1f".join((scope, step, node, dataset or ""))


class ClientStateStore:
    """A node's client states: files under ``root`` (``None``: in memory)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / (hashlib.sha256(key.encode()).hexdigest() + ".npz")

    def load(self, key: str) -> ClientState:
        """The state under ``key`` (empty when there is none yet)."""
        if self.root is None:
            with self._lock:
                data = self._memory.get(key)
        else:
            try:
                data = self._path(key).read_bytes()
            except FileNotFoundError:
                data = None
        return ClientState() if data is None else ClientState.from_bytes(data)

    def save(self, key: str, state: ClientState) -> None:
        """Keep ``state`` under ``key`` (atomically: a crash leaves the old one)."""
        data = state.to_bytes()
        if self.root is None:
            with self._lock:
                self._memory[key] = data
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        if self.root is None:
            return len(self._memory)
        return len(list(self.root.glob("*.npz"))) if self.root.exists() else 0


#: The file a node writes a task's client state into, in the task's own folder, for the
#: runners that call the tool in another process; the tool writes ``<it>.out`` back.
STATE_FILE = ".flowfed-client-state.npz"


def hand_over(
    ctx: Any, folder: Path, task_context: dict[str, Any], uid: int | None = None
) -> Path | None:
    """Write ``ctx``'s client state into ``folder`` for a tool in another process.

    Sets ``task_context["client_state"]`` to the file (the tool-side runtime reads it);
    ``uid`` owns the file when the tool runs as another user (the sandbox). None when
    the task has no client state.
    """
    state = getattr(ctx, "_client_state", None)
    if state is None:
        return None
    path = folder / STATE_FILE
    path.write_bytes(state.to_bytes())
    if uid is not None:
        os.chown(path, uid, uid)
    task_context["client_state"] = str(path)
    return path


def take_back(ctx: Any, path: Path | None) -> None:
    """After the call: the state the tool wrote back becomes ``ctx``'s (to be saved)."""
    if path is None:
        return
    out = path.with_name(path.name + ".out")
    if out.exists():
        state = ClientState.from_bytes(out.read_bytes())
        state.changed = True
        ctx._client_state = state
