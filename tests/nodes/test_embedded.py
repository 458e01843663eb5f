"""The embedded server: its hub works from other threads, before and after nodes connect."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from flowfed.runtime.remote import RemoteTaskError
from flowfed.server.embedded import EmbeddedServerError, start_embedded_server
from tests.nodes.conftest import Cluster, make_csv, task


def test_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="did not start"):
        start_embedded_server(f"sqlite:///{tmp_path / 'empty.db'}", str(tmp_path / "a"))


def test_hub_from_many_threads_and_stop(cluster: Cluster, tmp_path: Path) -> None:
    assert httpx.get(f"{cluster.srv.url}/health").status_code == 200
    cluster.start_node(
        "a", {"d": make_csv(tmp_path / "a.csv", "A")}, "inprocess", "--max-tasks", "2"
    )
    results: list[object] = []
    lock = threading.Lock()

    def engine_thread(i: int) -> None:
        t = task("a", "slow", config={"seconds": 0.2}, shareable=["output"])
        r = cluster.hub.run_task(t, lambda k, p: None, threading.Event())
        with lock:
            results.append(r.outputs["output"].data)

    threads = [threading.Thread(target=engine_thread, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert results == [b"7"] * 4

    # A task in flight when the server stops fails instead of hanging its engine thread.
    marker = tmp_path / "markers" / "started"
    box: dict[str, object] = {}

    def long_task() -> None:
        try:
            cluster.hub.run_task(
                task("a", "slow", config={"seconds": 600, "marker": marker.name}, timeout=None),
                lambda k, p: None,
                threading.Event(),
            )
        except RemoteTaskError as exc:
            box["error"] = exc

    th = threading.Thread(target=long_task)
    th.start()
    for _ in range(1200):
        if marker.exists():
            break
        th.join(0.05)
    assert marker.exists()
    cluster.srv.stop()
    th.join(60)
    assert not th.is_alive()
    assert "the server stopped" in str(box["error"])


def test_a_restarted_server_terminates_tasks_it_no_longer_knows(
    cluster: Cluster, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit

    node = cluster.start_node("a")
    marker = tmp_path / "markers" / "started"
    box: dict[str, object] = {}

    def long_task() -> None:
        try:
            cluster.hub.run_task(
                task("a", "slow", config={"seconds": 600, "marker": marker.name}, timeout=None),
                lambda k, p: None,
                threading.Event(),
            )
        except RemoteTaskError as exc:
            box["error"] = exc

    th = threading.Thread(target=long_task)
    th.start()
    for _ in range(1200):
        if marker.exists():
            break
        th.join(0.05)
    assert marker.exists()
    port = urlsplit(cluster.srv.url).port
    assert port is not None
    cluster.srv.stop()
    th.join(60)
    assert "the server stopped" in str(box["error"])
    # A new server on the same address and database: the node reconnects, reports the
    # task it still runs, and is told to drop it (nobody waits for it any more).
    cluster.srv = start_embedded_server(
        cluster.db_url, str(tmp_path / "central-artifacts"), port=port, heartbeat_s=0.5
    )
    cluster.wait_online("a", node)
    for _ in range(600):
        if "terminating task" in node.log():
            break
        th.join(0.1)
    assert "(unknown task)" in node.log()
    # ...and it is free for new work (max-tasks 1).
    r = cluster.hub.run_task(
        task("a", "slow", config={"seconds": 0.1}, shareable=["output"]),
        lambda k, p: None,
        threading.Event(),
    )
    assert r.outputs["output"].data == b"7"
