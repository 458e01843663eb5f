"""Flowdapt: a workflow of stages (depends_on), run by execute_workflow on its LocalExecutor."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from flowdapt.compute.resources.workflow.execute import execute_workflow


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    if workload in ("w1", "w3"):
        stages = [{"name": "n0", "target": m.n0}]
        stages += [
            {"name": f"n{i}", "target": getattr(m, f"n{i}"), "depends_on": [f"n{i - 1}"]}
            for i in range(1, n)
        ]
    else:
        stages = [{"name": "src", "target": m.src}]
        stages += [
            {"name": f"a{i}", "target": getattr(m, f"a{i}"), "depends_on": ["src"]}
            for i in range(n)
        ]
        stages.append(
            {"name": "total", "target": m.total, "depends_on": [f"a{i}" for i in range(n)]}
        )
    workflow = {"metadata": {"name": f"bench-{workload}"}, "spec": {"stages": stages}}
    return asyncio.run(execute_workflow(workflow, return_result=True))


if __name__ == "__main__":
    main(run, version("flowdapt"))
