"""Prefect 3: @flow calling @task functions; fan-out with .submit on the thread pool runner.

Its temporary API server records every flow and task run in SQLite under PREFECT_HOME, and
``persist_result=True`` writes every result to its local storage: the same work as flowfed.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE


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
