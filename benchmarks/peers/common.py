"""Shared by every peer script (standard library only: it runs inside each peer's venv).

A peer script is ``python <peer>_bench.py WORKLOAD --tasks N --workdir DIR`` and prints one
JSON line: ``{"seconds": ..., "result": ..., "version": ...}``. ``seconds`` covers building
and running the pipeline after imports (W3 is timed from outside, whole process).
Workloads: ``w1`` chain of N trivial tasks, ``w2`` a source, N parallel trivial tasks and
a sum of N inputs, ``w2s`` the same with 10 ms sleeps, ``w3`` a one-task pipeline, ``w4``
W1 with the peer's cache on (the suite runs it twice in one work dir and times the second).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLEEP_S = 0.01


def module_source(workload: str, n: int) -> str:
    """The workload's functions; dependencies are named by parameter (n3 reads n2)."""
    lines = ["import time", ""]
    if workload in ("w1", "w4"):
        lines += ["def n0() -> int:", "    return 1", ""]
        for i in range(1, n):
            lines += [f"def n{i}(n{i - 1}: int) -> int:", f"    return n{i - 1} + 1", ""]
    elif workload == "w3":
        lines += ["def n0() -> int:", "    return 1", ""]
    else:
        nap = f"    time.sleep({SLEEP_S})" if workload == "w2s" else ""
        lines += ["def src() -> int:", "    return 0", ""]
        for i in range(n):
            lines += [f"def a{i}(src: int) -> int:"] + ([nap] if nap else [])
            lines += [f"    return src + {i}", ""]
        params = ", ".join(f"a{i}: int" for i in range(n))
        lines += [
            f"def total({params}) -> int:",
            "    return " + " + ".join(f"a{i}" for i in range(n)),
            "",
        ]
    return "\n".join(lines)


def expected(workload: str, n: int) -> int:
    if workload in ("w1", "w4"):
        return n
    if workload == "w3":
        return 1
    return sum(range(n))


def load_module(workload: str, n: int, workdir: Path) -> Any:
    name = f"bench_{workload}_{n}"
    (workdir / f"{name}.py").write_text(module_source(workload, n))
    sys.path.insert(0, str(workdir))
    return importlib.import_module(name)


def main(
    run: Callable[[str, int, Any, Path], Any],
    version: str,
    warm: Callable[[int, Path], None] | None = None,
) -> None:
    """Parse the command line, time ``run`` and print the JSON line.

    ``warm(n, workdir)`` runs before the clock (not for W3, which the suite times whole):
    a peer's one-time start-up that is not per-pipeline work, such as Prefect's temporary
    server, or importing flowfed's tool module (every other peer's functions are imported
    by :func:`load_module` above, before the clock too).
    """
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["w1", "w2", "w2s", "w3", "w4"])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args()
    n = 1 if a.workload == "w3" else a.tasks
    m = load_module(a.workload, n, a.workdir)
    if warm is not None and a.workload != "w3":
        warm(n, a.workdir)
    t0 = time.perf_counter()
    result = run(a.workload, n, m, a.workdir)
    seconds = time.perf_counter() - t0
    if result != expected(a.workload, n):
        raise SystemExit(f"wrong result {result!r}, expected {expected(a.workload, n)}")
    print(json.dumps({"seconds": seconds, "result": result, "version": version}))
