"""Prefect 3: @flow calling @task functions; fan-out with .submit on the thread pool runner.

Its temporary API server records flow and task runs in SQLite under PREFECT_HOME (from
events, asynchronously), and ``persist_result=True`` writes every result to its local
storage.

``BENCH_VARIANT=server`` runs the same flows against ``prefect server start``, a process of
its own started before the clock (as Prefect is deployed, for its UI and run history).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main


def start_server() -> None:
    """Start ``prefect server start`` on a free port and point PREFECT_API_URL at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefect = Path(sys.executable).parent / "prefect"
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # Its log goes to a file (a pipe nobody reads would fill and stall the server), open
    # for the server's whole life, so no context manager.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                lines = log.read().strip().splitlines()
                last = lines[-1] if lines else f"exit {proc.returncode}"
                raise SystemExit(f"prefect server exited: {last}") from None
            if time.monotonic() > deadline:
                raise SystemExit("prefect server did not answer within 300 s") from None
            time.sleep(0.5)
    # Prefect reads its settings when it is imported: set before the import below.
    os.environ["PREFECT_API_URL"] = url


if os.environ.get("BENCH_VARIANT") == "server":
    start_server()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    # Every result persisted to Prefect's local storage, as flowfed stores every artifact;
    # W4 keys its cache on the task's source and inputs only (the default adds the run id,
    # so a second run would never hit).
    def t(fn: Any) -> Any:
        if workload == "w4":
            return task(fn, cache_policy=TASK_SOURCE + INPUTS, persist_result=True)
        return task(fn, persist_result=True)

    if workload in ("w1", "w3", "w4"):
        steps = [t(getattr(m, f"n{i}")) for i in range(n)]

        @flow(name=f"bench-{workload}")
        def chain() -> int:
            v = steps[0]()
            for s in steps[1:]:
                v = s(v)
            return v

        return chain()
    src, total = t(m.src), t(m.total)
    parts = [t(getattr(m, f"a{i}")) for i in range(n)]

    @flow(name=f"bench-{workload}")
    def fan() -> int:
        s = src()
        futures = [p.submit(s) for p in parts]
        return total(*[f.result() for f in futures])

    return fan()


def warm(n: int, workdir: Path) -> None:
    # The first flow in a process starts Prefect's temporary API server (and migrates its
    # database): once per process, not per pipeline, so outside the clock. W3 includes it.
    @flow(name="warm-up")
    def nothing() -> None:
        pass

    nothing()


if __name__ == "__main__":
    main(run, version("prefect"), warm)
