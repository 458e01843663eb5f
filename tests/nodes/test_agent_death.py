"""A node agent killed outright (SIGKILL) leaves no tool process behind, and the task it
was running fails within the liveness deadline with "node 'X' offline since T"; a task
queued for it later fails at once (issue 20.4)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from flowfed.runtime.remote import RemoteTaskError
from tests.nodes.conftest import Cluster, make_csv, run, task


def _children() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = int(fields[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _children()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("runner", ["subprocess", "sandbox"])
def test_a_killed_agent_leaves_no_tool_process_and_its_tasks_fail_fast(
    runner: str, cluster: Cluster, tmp_path: Path
) -> None:
    if runner == "sandbox" and shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed (make test installs it)")
    data = make_csv(tmp_path / "d.csv", "M")
    node = cluster.start_node("doomed", {"d": data}, runner)
    outcome: dict[str, BaseException | object] = {}

    def call() -> None:
        try:
            outcome["result"] = run(
                cluster, task("doomed", "hang", dataset="d", config={"seconds": 600.0})
            )
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    # Wait for the tool's process: a python running flowfed's runtime under the agent.
    deadline = time.monotonic() + 60
    while True:
        tools = {
            p
            for p in _descendants(node.proc.pid)
            if b"flowfed.runtime" in Path(f"/proc/{p}/cmdline").read_bytes()
        }
        if tools:
            break
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)
    everything = _descendants(node.proc.pid)
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)

    deadline = time.monotonic() + 30
    while [p for p in everything if _alive(p)]:
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in everything if _alive(p)}
        assert time.monotonic() < deadline, f"orphans of the killed agent: {left}"
        time.sleep(0.1)

    worker.join(60)
    assert not worker.is_alive(), "the task waited on for the dead node"
    error = outcome.get("error")
    assert isinstance(error, RemoteTaskError), outcome
    message = error.report["message"]
    assert message.startswith("node 'doomed' offline since "), message
    assert "went offline while running the task" in message

    # A task placed on it afterwards fails at once (the node is known to be offline).
    with pytest.raises(RemoteTaskError) as info:
        run(cluster, task("doomed", "dataset_info", dataset="d", timeout=None))
    assert info.value.report["message"].startswith("node 'doomed' offline since ")
    assert cluster.hub.offline_since("doomed") is not None
    assert "doomed" in cluster.hub.offline_nodes()

    # It comes back: no longer offline, and it runs tasks again.
    cluster.start_node("doomed", {"d": data}, runner)
    assert cluster.hub.offline_since("doomed") is None
    result, _ = run(cluster, task("doomed", "dataset_info", dataset="d"))
    assert result.outputs
