"""Dagster: @op functions wired in a @job, run with execute_in_process."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from dagster import job, op


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    if workload in ("w1", "w3"):
        ops = [op(name=f"n{i}")(getattr(m, f"n{i}")) for i in range(n)]

        @job(name=f"bench_{workload}")
        def chain() -> None:
            v = ops[0]()
            for o in ops[1:]:
                v = o(v)

        res = chain.execute_in_process()
        return res.output_for_node(f"n{n - 1}")
    src, total = op(name="src")(m.src), op(name="total")(m.total)
    parts = [op(name=f"a{i}")(getattr(m, f"a{i}")) for i in range(n)]

    @job(name=f"bench_{workload}")
    def fan() -> None:
        s = src()
        total(*[p(s) for p in parts])

    return fan.execute_in_process().output_for_node("total")


if __name__ == "__main__":
    main(run, version("dagster"))
