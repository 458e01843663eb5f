"""Every way a remote task can go wrong ends in a RemoteTaskError that says which."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from flowfed.node.journal import NodeJournal
from flowfed.runtime.remote import RemoteTaskError
from tests.nodes.conftest import Cluster, make_csv, run, task


def _error(cluster: Cluster, t: object) -> RemoteTaskError:
    with pytest.raises(RemoteTaskError) as info:
        run(cluster, t)  # type: ignore[arg-type]
    return info.value


def _on_node(cluster: Cluster, node: str, err: RemoteTaskError) -> str:
    """What the node itself recorded of ``err`` (the message the server may not see)."""
    error_id = err.report["context"]["error_id"]
    got = NodeJournal(cluster.root / f"work-{node}").get_error(error_id)
    assert got is not None, error_id
    return str(got["message"])


@pytest.mark.parametrize("runner", ["inprocess", "subprocess"])
def test_raise_hang_garbage_each_say_which(cluster: Cluster, tmp_path: Path, runner: str) -> None:
    cluster.start_node("site", {"d": make_csv(tmp_path / "d.csv", "x")}, runner)
    raised = _error(cluster, task("site", "boom"))
    # The node's default policy keeps what the tool said on the node: the server learns
    # the type, step, tool and node, and the id to look it up there.
    assert "RuntimeError in step 'step', tool 'boom'" in str(raised)
    assert "boom from the tool" not in repr(raised.report)
    assert raised.report["context"]["node"] == "site"
    assert raised.report["traceback"] is None and raised.report["context"]["error_id"]
    hung = _error(cluster, task("site", "hang", timeout=1.5))
    assert "the tool hung" in str(hung) and hung.report["type"] == "Timeout"
    junk = _error(cluster, task("site", "garbage"))
    said = _on_node(cluster, "site", junk)
    assert "the tool sent garbage" in said and "output 'output'" in said
    # The node still works after all of that.
    ok, _ = run(cluster, task("site", "slow", config={"seconds": 0.1}, shareable=["output"]))
    assert ok.outputs["output"].data == b"7"


def test_a_tool_that_exits_says_so(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("site", None, "subprocess")
    exited = _error(cluster, task("site", "exit3"))
    # The exit and its stderr tail are the node's to read; the server gets the type.
    assert exited.report["type"] == "ProcessExited"
    said = _on_node(cluster, "site", exited)
    assert "the tool's process exited" in said and "code 3" in said


def test_offline_node_waits_for_the_timeout_then_names_it(cluster: Cluster) -> None:
    cluster.credentials("hospital-z")
    err = _error(cluster, task("hospital-z", "slow", timeout=1.0))
    assert "node 'hospital-z' is offline" in str(err)
    assert err.report["type"] == "NodeOffline" and err.report["context"]["node"] == "hospital-z"


def test_a_task_waits_for_its_node_to_come_online(cluster: Cluster, tmp_path: Path) -> None:
    box: dict[str, object] = {}
    t = task("late", "slow", config={"seconds": 0.1}, shareable=["output"], timeout=120)

    def engine_thread() -> None:
        try:
            box["result"] = run(cluster, t)[0]
        except Exception as exc:  # reported below
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    time.sleep(1.0)  # the task is waiting for a node that is not there yet
    assert "result" not in box and "error" not in box
    cluster.start_node("late")
    worker.join(60)
    assert not worker.is_alive()
    assert "result" in box, f"the run failed: {box.get('error')!r}"
    assert box["result"].outputs["output"].data == b"7"  # type: ignore[attr-defined]


def test_kill_9_mid_task_fails_the_task(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.start_node("site")
    marker = tmp_path / "markers" / "started"
    box: dict[str, object] = {}

    def engine_thread() -> None:
        try:
            run(cluster, task("site", "slow", config={"seconds": 600, "marker": marker.name}))
        except RemoteTaskError as exc:
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(node.proc.pid, signal.SIGKILL)
    worker.join(60)  # bounded: grace of a few heartbeats, not the task's 60 s timeout
    assert not worker.is_alive()
    err = box["error"]
    assert isinstance(err, RemoteTaskError)
    assert "node 'site' offline since" in str(err)
    assert "went offline while running the task" in str(err)


def test_a_node_that_reconnects_resumes_its_task(cluster: Cluster, tmp_path: Path) -> None:
    """Drop the node's connection (not the process) mid-task: it reconnects and delivers."""
    cluster.start_node("site")
    marker = tmp_path / "markers" / "started"
    box: dict[str, object] = {}
    t = task("site", "slow", config={"seconds": 2.0, "marker": marker.name}, shareable=["output"])

    def engine_thread() -> None:
        try:
            box["result"] = run(cluster, t)[0]
        except Exception as exc:  # reported below
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cluster.hub.nodes()["site"].running == 1
    assert cluster.hub.drop_connection("site")
    worker.join(60)
    assert not worker.is_alive()
    assert "error" not in box, box.get("error")
    assert box["result"].outputs["output"].data == b"7"  # type: ignore[attr-defined]
    assert "connected to" in cluster.nodes[0].log()


def test_cancel_terminates_promptly(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("site")
    marker = tmp_path / "markers" / "started"
    cancel = threading.Event()
    box: dict[str, object] = {}

    def engine_thread() -> None:
        try:
            run(
                cluster,
                task("site", "slow", config={"seconds": 600, "marker": marker.name}),
                cancel,
            )
        except RemoteTaskError as exc:
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert box["error"].report["type"] == "Cancelled"  # type: ignore[attr-defined]
    # The node stopped the tool and is free for the next task (max-tasks 1).
    ok, _ = run(cluster, task("site", "slow", config={"seconds": 0.1}, shareable=["output"]))
    assert ok.outputs["output"].data == b"7"


def test_a_result_finished_while_disconnected_is_delivered(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The node finishes during a flapping connection: it keeps and re-sends the result."""
    cluster.start_node("site")
    marker = tmp_path / "markers" / "started"
    box: dict[str, object] = {}
    t = task("site", "slow", config={"seconds": 1.0, "marker": marker.name}, shareable=["output"])

    def engine_thread() -> None:
        try:
            box["result"] = run(cluster, t)[0]
        except Exception as exc:  # reported below
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Cut every connection the node opens for 2.5 s: the tool (1 s) ends in between.
    drops = 0
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        if cluster.hub.drop_connection("site"):
            drops += 1
        time.sleep(0.02)
    worker.join(60)
    assert not worker.is_alive()
    assert drops >= 2
    assert "error" not in box, box.get("error")
    assert box["result"].outputs["output"].data == b"7"  # type: ignore[attr-defined]
