"""On a terminal, `flowfed run` draws seed 000's tree live while tools run."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time

from tests.cli.conftest import Project

TOOLS = """
import time
from flowfed import tool, Context

@tool(version="1", type="database-adapter")
def rounds(ctx: Context, *, n: int = 6) -> int:
    for r in range(1, n + 1):
        ctx.metric("loss", 1.0 / r, step=r)
        ctx.progress(r, n, f"Round {r}/{n}")
        time.sleep(0.25)
    return n
"""


def test_the_tree_shows_steps_tasks_progress_and_metrics_while_running(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        "name: Live Flow\nimports: [tools.py]\nsteps:\n"
        "  - {name: Federated Training, tool: rounds, outputs: [model]}\n",
    )
    leader, follower = pty.openpty()
    env = {**project.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfed", "run", "flow.yaml"],
        cwd=project.root,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    raw = b"".join(chunks).decode("utf-8", "replace")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert proc.returncode == 0, screen
    # Frames drawn while the task ran show its live state, round and loss.
    assert "Step: Federated Training [running" in screen
    assert "Round 3/6" in screen
    assert "loss" in screen
    assert "Live Flow — success" in screen
