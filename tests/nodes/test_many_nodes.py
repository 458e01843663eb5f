"""Twenty real node agents on one server: every task runs on the node it was placed on.

The agents are real :class:`NodeAgent` objects on loopback WebSockets, all sharing one
asyncio loop in a background thread (``NodeAgent.serve``), as the node-scale benchmark
hosts them. No timings are asserted; ``benchmarks/nodes_scale.py`` measures them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flowfed import Context, tool
from flowfed.node.agent import NodeAgent, NodeConfig
from flowfed.node.datasets import file_sha256
from flowfed.runtime.remote import RemoteTask, RemoteTaskError
from tests.nodes.conftest import Cluster, make_csv

N = 20


@tool(name="many_nodes_probe", version="1", type="database-adapter")
def many_nodes_probe(ctx: Context, *, tag: str = "") -> dict:
    """Who ran this task, on which dataset: what the test checks against the placement."""
    ds = ctx.dataset or {}
    return {"node": ctx.node, "dataset": ds.get("name"), "hash": ds.get("hash"), "tag": tag}


#: Set by the test to let every blocked ``many_nodes_wait`` task finish (the agents run
#: in this process, so the tool sees it).
RELEASE = threading.Event()


@tool(name="many_nodes_wait", version="1", type="database-adapter")
def many_nodes_wait(ctx: Context) -> str:
    """Block until the test releases it (or the task is cancelled); then name the node."""
    while not RELEASE.wait(0.02):
        ctx.check_cancelled()
    return str(ctx.node)


class AgentHost:
    """Many NodeAgents in one asyncio loop on a background thread."""

    def __init__(self, agents: list[NodeAgent]) -> None:
        self.agents = agents
        self.codes: list[int] = []
        self.thread = threading.Thread(target=self._run, name="many-agents", daemon=True)

    def _run(self) -> None:
        async def serve_all() -> list[int]:
            return list(await asyncio.gather(*(a.serve() for a in self.agents)))

        self.codes = asyncio.run(serve_all())

    def stop(self) -> None:
        for a in self.agents:
            a.stop()
        self.thread.join(30)


@pytest.fixture
def many(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, Path]]]:
    csvs = {f"site-{i:02d}": make_csv(tmp_path / f"site-{i:02d}.csv", f"S{i}_") for i in range(N)}
    agents = [
        NodeAgent(
            NodeConfig(
                name=name,
                server=cluster.srv.url,
                token=cluster.token(name),
                datasets={f"data-{name}": path},
                work_dir=tmp_path / f"work-{name}",
                runner="inprocess",  # hundreds of agents in one process: threads, not sandboxes
                # Half offer permessage-deflate (off by default): both work on one hub.
                compression=i % 2 == 0,
            )
        )
        for i, (name, path) in enumerate(csvs.items())
    ]
    heard: dict[str, list[int]] = {}
    lock = threading.Lock()

    def on_heartbeat(node: str, seq: int) -> None:
        with lock:
            heard.setdefault(node, []).append(seq)

    cluster.hub.on_heartbeat = on_heartbeat
    host = AgentHost(agents)
    host.thread.start()
    try:
        for name in csvs:
            cluster.wait_online(name)
        # Every node heartbeats to the hub (its own sequence, counting up).
        deadline = time.monotonic() + 60
        while True:
            with lock:
                ok = all(len(heard.get(name, [])) >= 2 for name in csvs)
            if ok:
                break
            assert time.monotonic() < deadline, f"heartbeats heard: {heard}"
            time.sleep(0.05)
        with lock:
            for name in csvs:
                seqs = heard[name]
                assert seqs == sorted(seqs), f"{name} heartbeats out of order: {seqs}"
        yield cluster, csvs
    finally:
        cluster.hub.on_heartbeat = None
        host.stop()
    assert host.codes == [0] * N


def test_twenty_agents_each_run_their_own_task(
    many: tuple[Cluster, dict[str, Path]],
) -> None:
    cluster, csvs = many
    nodes = cluster.hub.nodes()
    assert sorted(n for n, info in nodes.items() if info.online) == sorted(csvs)
    for name in csvs:
        assert list(nodes[name].datasets) == [f"data-{name}"]

    def place(name: str, tag: str) -> dict[str, object]:
        task = RemoteTask(
            run_id="many", task_id=uuid.uuid4().hex, node=name, dataset=f"data-{name}",
            tool="many_nodes_probe", tool_version="1", config={"tag": tag}, inputs={},
            outputs={"output": "probe"}, shareable=["output"], timeout=120, step="probe",
        )  # fmt: skip
        result = cluster.hub.run_task(task, lambda k, p: None, threading.Event())
        data = result.outputs["output"].data
        assert data is not None
        return dict(json.loads(data))

    # Two rounds of one task per node, all in flight at once from engine-like threads.
    with ThreadPoolExecutor(max_workers=N) as pool:
        for rnd in range(2):
            names = list(csvs)
            got = list(pool.map(lambda n, r=rnd: place(n, f"{n}/{r}"), names))
            for name, out in zip(names, got, strict=True):
                assert out == {
                    "node": name,
                    "dataset": f"data-{name}",
                    "hash": file_sha256(csvs[name]),
                    "tag": f"{name}/{rnd}",
                }

    # Nothing left running, nobody refused, every node still online.
    nodes = cluster.hub.nodes()
    assert all(nodes[name].online and nodes[name].running == 0 for name in csvs)
    assert cluster.hub.refusals == []


def test_twenty_tasks_in_flight_at_once(many: tuple[Cluster, dict[str, Path]]) -> None:
    """Every node runs one blocked task; one is cancelled, the others are unaffected."""
    cluster, csvs = many
    names = list(csvs)
    victim = names[7]
    cancels = {name: threading.Event() for name in names}
    RELEASE.clear()

    def place(name: str) -> object:
        task = RemoteTask(
            run_id="many", task_id=uuid.uuid4().hex, node=name, dataset=None,
            tool="many_nodes_wait", tool_version="1", config={}, inputs={},
            outputs={"output": "who"}, shareable=["output"], timeout=120, step="wait",
        )  # fmt: skip
        try:
            result = cluster.hub.run_task(task, lambda k, p: None, cancels[name])
        except RemoteTaskError as exc:
            return exc.report["type"]
        data = result.outputs["output"].data
        assert data is not None
        return json.loads(data)

    with ThreadPoolExecutor(max_workers=N) as pool:
        futures = {name: pool.submit(place, name) for name in names}
        try:
            # The hub counts exactly one running task on every node.
            deadline = time.monotonic() + 60
            while True:
                nodes = cluster.hub.nodes()
                running = {name: nodes[name].running for name in names}
                if all(v == 1 for v in running.values()):
                    break
                assert time.monotonic() < deadline, f"running per node: {running}"
                time.sleep(0.05)
            cancels[victim].set()
            assert futures[victim].result(60) == "Cancelled"
            assert not any(f.done() for n, f in futures.items() if n != victim)
        finally:
            RELEASE.set()
        got = {name: f.result(60) for name, f in futures.items()}
    assert got == {name: ("Cancelled" if name == victim else name) for name in names}
    deadline = time.monotonic() + 60
    while any(info.running for info in cluster.hub.nodes().values()):
        assert time.monotonic() < deadline, "tasks still counted as running"
        time.sleep(0.05)
