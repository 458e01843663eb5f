"""Dashboard data tests drive the real ``flowfed`` command and server, like tests/cli."""

from __future__ import annotations

from tests.cli.conftest import pg_project, project  # noqa: F401 (the same fixtures)
from tests.server.conftest import make_server  # noqa: F401 (real server subprocesses)

#: A tool that allocates about ``mb`` MB and burns CPU for about ``seconds``, reporting
#: progress counts; it measures its own thread's CPU and its process's peak RSS with
#: ``resource.getrusage`` (not flowfed's /proc reading) and reports both as metrics.
BURN_TOOLS = """
import resource
import time

from flowfed import Context, tool


@tool(version="1", type="preprocessing")
def burn(ctx: Context, *, mb: int = 60, seconds: float = 1.0, unit: str = "images") -> dict:
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    c0 = resource.getrusage(who)
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        sum(range(20_000))
        done += 1
        if done % 20 == 0:
            ctx.progress(min(done, 5000), 5000, unit=unit)
    ctx.progress(5000, 5000, unit=unit)
    c1 = resource.getrusage(who)
    own_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ctx.metric("own_cpu", own_cpu)
    ctx.metric("maxrss_mb", maxrss_mb)
    ctx.metric("allocated_mb", len(block) / 2**20)
    return {"n": done}
"""

#: A report in the shape of ``flowfed.pool_metrics`` (hand-written figures).
REPORT_TOOLS = """


@tool(version="1", type="evaluation")
def site_table(ctx: Context) -> dict:
    return {
        "sites": {
            "hospital-a:breast": {"accuracy": 0.9737, "roc_auc": 0.9961, "rows": 38},
            "hospital-b:breast": {"accuracy": 0.9412, "roc_auc": 0.9850, "rows": 34},
        },
        "pooled": {"accuracy": 0.9583, "roc_auc": 0.9903, "rows": 72},
    }
"""

BURN_FLOW = """
name: burn
steps:
  - name: Burn
    type: process
    tool: burn
    outputs: [out]
"""
