"""What the process that starts a tool hands it through environment variables.

A node agent or runner passes a task's dataset, round and client-state file in
``$FLOWFED_TASK_CONTEXT``, and its own pid in ``$FLOWFED_PARENT_PID`` so the tool dies with
it. Reading that hand-over is kept apart from the engine: it is the one place the
runtime's behaviour depends on its environment rather than on the channel.

Example:
    >>> import os
    >>> os.environ["FLOWFED_TASK_CONTEXT"] = '{"round": 3, "client_state": "/w/state.npz"}'
    >>> task_context(), client_state_file()
    ({'round': 3}, PosixPath('/w/state.npz'))
    >>> del os.environ["FLOWFED_TASK_CONTEXT"]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def task_context() -> dict[str, Any]:
    """``dataset`` and ``round`` for the Context from ``$FLOWFED_TASK_CONTEXT`` (a node sets it)."""
    raw = os.environ.get("FLOWFED_TASK_CONTEXT")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("dataset", "round") if k in data}


def client_state_file() -> Path | None:
    """The file holding this task's client state, when its node gave it one."""
    raw = os.environ.get("FLOWFED_TASK_CONTEXT")
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    path = data.get("client_state") if isinstance(data, dict) else None
    return Path(path) if isinstance(path, str) and path else None


#: ``prctl`` option: the signal this process gets when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """End with the process that started us (``$FLOWFED_PARENT_PID``), even on its kill -9.

    A node agent or engine killed outright runs no clean-up: without this, the tool
    process it started would run on as an orphan. Linux only (``PR_SET_PDEATHSIG``); a
    no-op elsewhere or when the variable is not set.
    """
    raw = os.environ.get("FLOWFED_PARENT_PID", "")
    if not raw.isdigit():
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux, or no libc
        return
    if os.getppid() != int(raw):
        os._exit(1)  # the parent died before the signal was armed
