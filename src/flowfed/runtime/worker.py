"""A warm tool worker (``python -m flowfed.runtime.worker``): one sandbox, many calls.

Starting a sandboxed interpreter and importing pandas costs about a second per task; a
federated step on a node runs dozens of small tasks. A node agent therefore keeps a warm
worker per (run, dataset) (see :mod:`flowfed.node.runners`) and this is what runs inside
its sandbox. The worker itself never runs a tool: it applies the sandbox's resource
limits to itself, imports the heavy modules once, then waits for calls on stdin. For each
call it **forks a child** that runs exactly one ordinary tool-side lifecycle
(:class:`flowfed.runtime.toolside.ToolEngine`: its own connection, token and
``Pending → … → Finished | Error | Cancelled``, the one state machine of
:mod:`flowfed.runtime.lifecycle`), and when the child has ended it kills every process
the call left behind and empties the sandbox's private ``/tmp`` before it reports.

Because each call is a fresh child, nothing a tool does in memory (a monkeypatch, a
global, a thread) survives into the next call, its CPU-time limit starts from zero, and
the import cost is paid once per worker rather than per task.

The control stream is line-delimited JSON, private to the node agent (the worker's stdin
and stdout; stdout is moved away from fd 1 first, so nothing a module prints can forge a
report):

* worker → agent ``{"ready": true, "pid": N, "preloaded": [...]}`` once, after the imports;
* agent → worker ``{"call": N, "tool": "module_or_file:fn", "socket": PATH, "token": T,
  "area": DIR, "context": {...}}``: run one call. ``socket`` is the call's own control
  channel (a Unix socket), ``token`` its one-time bearer token (never on a command line),
  ``area`` the call's fresh read-write folder (inputs, outputs, ``tmp``, ``stderr.log``);
* worker → agent ``{"call": N, "exit": CODE}`` once the call's processes are gone and the
  worker is ready for the next call. End of stdin ends the worker.

Example:
    >>> build_parser().parse_args(["--memory-mb", "512"]).memory_mb
    512
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import io
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_PR_SET_DUMPABLE = 4


def _set_dumpable(flag: bool) -> None:
    """Non-dumpable: a process of the same uid (a tool) can neither ptrace this one nor
    read its ``/proc/PID/fd`` (where the control stream with the next call's token is)."""
    with contextlib.suppress(Exception):  # not Linux, or no libc: the limits still apply
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, int(flag), 0, 0, 0)


def apply_limits(memory_mb: int, processes: int, cpu_seconds: int) -> None:
    """Set RLIMIT_AS, RLIMIT_NPROC and RLIMIT_CPU (soft = hard, so a tool cannot raise them).

    RLIMIT_NPROC counts the processes and threads of this uid in this user namespace
    (each worker has its own namespace), and the kernel enforces it only for a uid that is
    not the host's root: the node runs the worker as an unprivileged uid for that reason.
    """
    for which, value in (
        (resource.RLIMIT_AS, memory_mb * 2**20),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_CPU, cpu_seconds),
    ):
        if value > 0:
            resource.setrlimit(which, (value, value))


def _sweep() -> None:
    """Kill every process of the sandbox but this one (and the namespace's init).

    ``kill(-1)`` reaches every process this uid may signal in the worker's own pid
    namespace: whatever a call left running (a daemon, a fork bomb) dies before the next
    call starts, so no call can watch the next one's inputs appear.
    """
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        except PermissionError:
            break
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        time.sleep(0.001)


def _empty(folder: str, device: int | None = None) -> None:
    """Remove what a call left in a scratch folder (the sandbox's private ``/tmp``).

    Only entries on the folder's own file system go: the read-only files and folders
    bound under ``/tmp`` (a dataset, the call's area) are other mounts and stay.
    """
    try:
        if device is None:
            device = os.stat(folder).st_dev
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if st.st_dev != device:
                continue
            if entry.is_dir(follow_symlinks=False):
                _empty(entry.path, device)
                os.rmdir(entry.path)  # fails, harmlessly, around a mount point
            else:
                os.unlink(entry.path)


def _preload(modules: Sequence[str]) -> list[str]:
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library: the call imports it itself
            print(f"flowfed worker: could not preload {name}: {exc}", file=sys.stderr)
            continue
        done.append(name)
    return done


def _warm() -> None:
    """Do once, before any fork, what every call would otherwise do first in its child.

    Decoding the first Parquet table imports pandas' and pyarrow's lazy parts, and
    ``platform.platform()`` (in ``hello``) reads the interpreter's binary: in a child both
    are lost when it exits, so the worker pays for them here and every call starts warm.
    """
    import platform

    from flowfed.runtime import toolside
    from flowfed.runtime.protocol import LogMessage, dump_message, parse_message

    platform.platform()
    parse_message(dump_message(LogMessage(message="warm")))
    for value in _samples():
        with contextlib.suppress(Exception):  # an optional library missing: nothing to warm
            kind, raw, _ = toolside.materialize_value("warm", value)
            if kind == "pandas":
                import pyarrow.parquet as pq

                pq.read_table(io.BytesIO(raw)).to_pandas()
            elif kind == "npy":
                import numpy as np

                np.load(io.BytesIO(raw), allow_pickle=False)


def _samples() -> list[Any]:
    out: list[Any] = [{"warm": [1.0, 2]}]
    if "numpy" in sys.modules:
        import numpy as np

        out.append(np.arange(4.0))
    if "pandas" in sys.modules:
        import pandas as pd

        out.append(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [1, 2]}))
    return out


def _preload_tool(ref: str) -> None:
    """Import the tool's module in the worker, so every later call forks it ready."""
    from flowfed.runtime.toolside import load_tool, tool_schema

    with contextlib.suppress(Exception):  # the call's own load reports the problem
        tool_schema(load_tool(ref))


def _child(req: dict[str, Any], report_fd: int, timeout: float) -> int:
    """One call, in a fresh child: redirect its output, then one ToolEngine lifecycle."""
    os.close(report_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the control stream (the next calls' tokens) stays the worker's
    os.close(devnull)
    area = Path(req["area"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    log = os.open(area / "stderr.log", flags, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _set_dumpable(True)
    tmp = area / "tmp"
    tmp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    os.environ["HOME"] = str(area)
    os.environ["FLOWFED_TASK_CONTEXT"] = json.dumps(req.get("context") or {})
    import tempfile

    tempfile.tempdir = None  # computed again from $TMPDIR
    os.chdir(area)
    cpu = int(req.get("cpu_seconds") or 0)
    if cpu > 0:
        # A fork starts with no CPU time used: this call gets the whole budget.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    from flowfed.runtime.toolside import EngineOptions, ToolEngine

    opts = EngineOptions(
        endpoint="ws://localhost/",
        token=str(req["token"]),
        tool=str(req["tool"]),
        timeout=timeout,
        unix_socket=str(req["socket"]),
    )
    return ToolEngine(opts).run()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m flowfed.runtime.worker``."""
    p = argparse.ArgumentParser(
        prog="python -m flowfed.runtime.worker",
        description="A warm worker: runs tool calls sent on stdin, each in a fresh child.",
    )
    p.add_argument("--memory-mb", type=int, default=0, help="RLIMIT_AS per process (0: none)")
    p.add_argument("--processes", type=int, default=0, help="RLIMIT_NPROC (0: none)")
    p.add_argument("--cpu-seconds", type=int, default=0, help="RLIMIT_CPU per call (0: none)")
    p.add_argument("--timeout", type=float, default=60.0, help="each call's connect timeout")
    p.add_argument("--preload", action="append", default=[], help="module imported once")
    p.add_argument("--scratch", action="append", default=[], help="folder emptied per call")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Serve calls from stdin until it closes; the exit code (0, or 2 for a bad line)."""
    ns = build_parser().parse_args(argv)
    # The reports get a private descriptor; fd 1 becomes stderr, so a module that prints
    # on import cannot write a line the agent would read as a report.
    report_fd = os.dup(1)
    os.dup2(2, 1)
    report = os.fdopen(report_fd, "w", buffering=1)
    _set_dumpable(False)
    apply_limits(ns.memory_mb, ns.processes, ns.cpu_seconds)
    from flowfed.runtime import toolside  # noqa: F401  (imported once, forked warm)

    preloaded = _preload(ns.preload)
    _warm()
    report.write(json.dumps({"ready": True, "pid": os.getpid(), "preloaded": preloaded}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            call = req["call"]
        except (ValueError, KeyError, TypeError):
            print(f"flowfed worker: bad request line {line[:200]!r}", file=sys.stderr)
            return 2
        _preload_tool(str(req.get("tool", "")))
        # What exists now is shared copy-on-write with the child: keep the collector from
        # touching (and so copying) every page of it in each call.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child({**req, "cpu_seconds": ns.cpu_seconds}, report_fd, ns.timeout)
            except BaseException as exc:  # the child must never return into the loop
                with contextlib.suppress(Exception):
                    import traceback

                    print(f"flowfed worker: call {call}: {exc!r}", file=sys.stderr, flush=True)
                    traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        _sweep()
        for folder in ns.scratch:
            _empty(folder)
        report.write(json.dumps({"call": call, "exit": os.waitstatus_to_exitcode(status)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
