"""Dagster: @op functions wired in a @job, run with execute_in_process.

``BENCH_VARIANT=recorded`` runs the same job, still in process, on the persistent instance
of ``$DAGSTER_HOME`` (runs and event log in SQLite, what Dagster's UI reads) with
``fs_io_manager`` (every output pickled to a file: Dagster's default IO manager outside
``execute_in_process``). Without it, ``execute_in_process`` uses an ephemeral instance and
keeps outputs in memory, recording nothing.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from dagster import DagsterInstance, fs_io_manager, job, op


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    recorded = os.environ.get("BENCH_VARIANT") == "recorded"
    resources = {"io_manager": fs_io_manager} if recorded else None
    instance = DagsterInstance.get() if recorded else None
    if workload in ("w1", "w3"):
        ops = [op(name=f"n{i}")(getattr(m, f"n{i}")) for i in range(n)]

        @job(name=f"bench_{workload}", resource_defs=resources)
        def chain() -> None:
            v = ops[0]()
            for o in ops[1:]:
                v = o(v)

        res = chain.execute_in_process(instance=instance)
        return res.output_for_node(f"n{n - 1}")
    src, total = op(name="src")(m.src), op(name="total")(m.total)
    parts = [op(name=f"a{i}")(getattr(m, f"a{i}")) for i in range(n)]

    @job(name=f"bench_{workload}", resource_defs=resources)
    def fan() -> None:
        s = src()
        total(*[p(s) for p in parts])

    return fan.execute_in_process(instance=instance).output_for_node("total")


if __name__ == "__main__":
    main(run, version("dagster"))
