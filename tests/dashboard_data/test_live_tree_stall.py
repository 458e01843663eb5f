"""The live tree on a real terminal (a pseudo-terminal): a step that makes no progress
for ``$FLOWFED_STALL_AFTER`` seconds says "stalled", and a running task shows its
resource use as it goes (issue 22, parts 1 and 3)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from tests.cli.conftest import Project

TOOLS = """
import time
from flowfed import Context, tool


@tool(version="1", type="preprocessing")
def hang(ctx: Context, *, seconds: float = 6.0) -> int:
    ctx.progress(1, 10, unit="files")
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # working, but reporting nothing more
        sum(range(10_000))
    return 1
"""

FLOW = """
name: hangs
steps:
  - name: Hang
    tool: hang
    outputs: [out]
"""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_a_step_without_progress_says_stalled_on_the_terminal(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", FLOW)
    env = {**project.env, "FLOWFED_STALL_AFTER": "1.5", "COLUMNS": "200", "TERM": "xterm"}
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfed", "run", "flow.yaml", "-i", "tools.py", "--no-cache"],
        cwd=project.root, env=env, stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None or select.select([main], [], [], 0)[0]:
            assert time.monotonic() < deadline, seen[-3000:]
            if select.select([main], [], [], 0.2)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed its end
                    break
                if not chunk:
                    break
                seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        os.close(main)
    text = _ANSI.sub("", seen.decode("utf-8", "replace"))
    assert proc.returncode == 0, text[-3000:]
    assert re.search(r"Step: Hang \[running[^\]]*\] stalled", text), text[-3000:]
    assert re.search(r"Hang \(central\) running .*cpu \d+\.\d s · \d+ MB · 1/10 files", text), text[
        -3000:
    ]
    # Once it ends, the final frame is neither running nor stalled.
    final = text[text.rfind("Step: Hang") :]
    assert final.startswith("Step: Hang [completed"), final[:300]
