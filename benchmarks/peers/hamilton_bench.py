"""Apache Hamilton: functions are nodes, parameters name their dependencies.

``BENCH_VARIANT=recorded`` turns Hamilton's cache on for every workload: on a new cache
directory the run stores every node's result and its metadata in SQLite (what W4 re-reads).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from hamilton import driver


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    b = driver.Builder().with_modules(m)
    if workload == "w4" or os.environ.get("BENCH_VARIANT") == "recorded":
        b = b.with_cache(path=str(workdir / "hamilton-cache"))
    dr = b.build()
    final = {"w1": f"n{n - 1}", "w4": f"n{n - 1}", "w3": "n0"}.get(workload, "total")
    return dr.execute([final])[final]


if __name__ == "__main__":
    main(run, version("sf-hamilton"))
