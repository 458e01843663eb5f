"""How a node agent runs a tool: in a bubblewrap sandbox (the default), a subprocess, a thread.

``sandbox`` (the default of ``flowfed node start``) runs every task in a **warm worker**:
one bubblewrap sandbox per (run, dataset), kept between tasks and ended when idle
(:class:`WorkerPool`). Inside it, :mod:`flowfed.runtime.worker` forks a fresh child per
task, which runs one ordinary tool-side lifecycle over its own control channel, a Unix
socket. The sandbox shows the tool only:

* the Python installation read-only (``sys.prefix``, ``sys.base_prefix``, the folders on
  the agent's ``sys.path``), ``/usr`` and the ``/lib*``, ``/bin`` links, and from ``/etc``
  only what the dynamic loader needs plus a one-line ``passwd``/``group`` for its user;
* the ``--import`` tool files (a file, or its package folder), read-only;
* the one dataset file the task works on, read-only (not its folder);
* the task's own area (inputs, outputs, ``tmp``), read-write, emptied before every task;
* a private ``/tmp``, ``/dev`` and ``/proc``; no network (its own empty namespace).

It runs as uid/gid 65534 and, when the agent is root, as the host's uid 65534 too (a user
namespace the agent maps itself): the kernel exempts the host's root from RLIMIT_NPROC.
:class:`SandboxLimits` bound each process's memory (RLIMIT_AS), the worker's processes
and threads (RLIMIT_NPROC), and each task's CPU time (RLIMIT_CPU).

``subprocess`` (``python -m flowfed.runtime`` per task, no isolation) and ``inprocess``
(a thread of the agent) are for development and need ``--insecure``.

This module is the runners' front door: the runner names, and every name the agent and
the CLI use, from where each lives: the sandbox's layout and limits in
:mod:`flowfed.node.sandbox`, one warm sandbox in :mod:`flowfed.node.sandbox_worker`, the
pool of them in :mod:`flowfed.node.worker_pool`, and the ``subprocess`` runner in
:mod:`flowfed.node.subprocess_runner` (``inprocess`` is the agent's own thread).

Example:
    >>> RUNNERS
    ('inprocess', 'subprocess', 'sandbox')
    >>> SandboxLimits()
    SandboxLimits(memory_mb=2048, processes=64, cpu_seconds=3600)
"""

from __future__ import annotations

import logging

from flowfed.executors.isolated import SandboxUnavailable
from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
from flowfed.node.sandbox import (
    ETC_FILES,
    INSTALL_HINT,
    SANDBOX_ENV,
    SANDBOX_UID,
    SOCKETS,
    SandboxLimits,
    bwrap_path,
    limit_hint,
    python_roots,
    require_bwrap,
    sandbox_argv,
    tool_paths,
)
from flowfed.node.sandbox_worker import PRELOAD, SandboxWorker
from flowfed.node.subprocess_runner import TaskShim, run_isolated
from flowfed.node.worker_pool import (
    IDLE_S,
    WorkerPool,
    inspect_source,
    pool_for,
    run_sandboxed,
    shutdown_pools,
)

log = logging.getLogger("flowfed.node")

RUNNERS = ("inprocess", "subprocess", "sandbox")
#: The runners that isolate nothing: ``flowfed node start`` wants ``--insecure`` for them.
INSECURE_RUNNERS = frozenset({"inprocess", "subprocess"})

__all__ = [
    "ETC_FILES",
    "IDLE_S",
    "INSECURE_RUNNERS",
    "INSTALL_HINT",
    "PRELOAD",
    "RUNNERS",
    "SANDBOX_ENV",
    "SANDBOX_UID",
    "SOCKETS",
    "ProcessTaskError",
    "ProcessTimeout",
    "SandboxLimits",
    "SandboxUnavailable",
    "SandboxWorker",
    "TaskShim",
    "WorkerPool",
    "bwrap_path",
    "inspect_source",
    "limit_hint",
    "pool_for",
    "python_roots",
    "require_bwrap",
    "run_isolated",
    "run_sandboxed",
    "sandbox_argv",
    "shutdown_pools",
    "tool_paths",
]
