"""Ctrl-C during `flowfed run`: running tasks end Cancelled, the run is recorded cancelled."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.cli.conftest import Project

TOOLS = """
import time
from pathlib import Path
from flowfed import tool, Context

@tool(version="1", type="database-adapter")
def slow(ctx: Context, *, marker: str) -> int:
    Path(marker).write_text("running")
    for _ in range(600):
        time.sleep(0.05)
        ctx.check_cancelled()
    return 1

@tool(version="1", type="data-transformation")
def after(x: int) -> int:
    return x
"""


def test_ctrl_c_cancels_running_tasks_and_records_the_run(project: Project) -> None:
    marker = project.root / "started"
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        f"""
        name: long
        imports: [tools.py]
        steps:
          - {{name: wait, tool: slow, params: {{marker: {marker}}}, outputs: [x]}}
          - {{name: next, tool: after, inputs: {{x: x}}, outputs: [y]}}
    """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfed", "run", "flow.yaml", "--json"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Like a command typed at a terminal: Ctrl-C is handled even when this test runs in
        # a background job, whose children otherwise start with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the tool never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    import json

    report = json.loads(out)
    assert report["status"] == "cancelled"
    states = {s["name"]: s["tasks"][0]["status"] for s in report["steps"]}
    assert states == {"wait": "cancelled", "next": "cancelled"}
    assert report["artifacts"] == []

    run = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    assert run["status"] == "cancelled"
    wait = next(t for t in run["tasks"] if t["step"] == "wait")
    assert [t["dst"] for t in wait["transitions"]][-1] == "cancelled"
    assert project.ff("artifacts", "list", "--json", check=0).json() == []
