"""Kedro: a Pipeline of nodes over a DataCatalog, run by a runner."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner, ThreadRunner


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    if workload in ("w1", "w3"):
        nodes = [node(m.n0, None, "n0", name="n0")]
        nodes += [
            node(getattr(m, f"n{i}"), f"n{i - 1}", f"n{i}", name=f"n{i}") for i in range(1, n)
        ]
        final = f"n{n - 1}"
    else:
        nodes = [node(m.src, None, "src", name="src")]
        nodes += [node(getattr(m, f"a{i}"), "src", f"a{i}", name=f"a{i}") for i in range(n)]
        nodes.append(node(m.total, [f"a{i}" for i in range(n)], "total", name="total"))
        final = "total"
    # ThreadRunner runs independent nodes concurrently (the 10 ms sleeps); else sequential.
    runner = ThreadRunner() if workload == "w2s" else SequentialRunner()
    out = runner.run(Pipeline(nodes), DataCatalog())
    value = out[final]
    return value.load() if hasattr(value, "load") else value


if __name__ == "__main__":
    main(run, version("kedro"))
