"""Nothing waits forever (issue 20.4): a real ``flowfed server`` with three real node
agents runs the main job; one agent is killed with SIGKILL mid-training.

With ``min_nodes: 2`` the training goes on with the two left (the dead node is left out of
later rounds' samples, no round waits for it) and the dead node's validation task fails at
once with "node 'hospital-c' offline since T". With ``min_nodes: 3`` the step stops with
an error naming the offline node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowfed.node.agent import node_command
from tests.server.conftest import Server, start_server, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
LIVENESS_S = 3.0


@dataclass
class Cluster:
    srv: Server
    agents: dict[str, subprocess.Popen[bytes]]


@pytest.fixture
def cluster(hospitals: Path, tmp_path: Path, pg_database: str) -> Iterator[Cluster]:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    srv = start_server(
        tmp_path / "srv",
        pg_database,
        "--import",
        "flowfed.tools.library",
        "--import",
        str(EXAMPLE / "reference.py"),
        "--node-liveness",
        str(LIVENESS_S),
    )
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("a", "b", "c"):
            node = f"hospital-{name}"
            creds = tmp_path / f"{node}.json"
            srv.ff("nodes", "add", node, "--out", str(creds), "--database-url", pg_database)
            cmd = node_command(
                node, srv.url, creds, {"breast": hospitals / node / "breast.csv"},
                work_dir=tmp_path / f"work-{node}", runner="subprocess", insecure=True,
            )  # fmt: skip
            log = open(tmp_path / f"{node}.log", "wb")  # noqa: SIM115
            agents[node] = subprocess.Popen(cmd, stdout=log, stderr=log)
        api = srv.client()
        deadline = time.monotonic() + 60
        while True:
            nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()["items"]}
            if all(nodes.get(f"hospital-{x}", {}).get("online") for x in "abc"):
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.1)
        yield Cluster(srv, agents)
    finally:
        for p in agents.values():
            if p.poll() is None:
                p.terminate()
        for p in agents.values():
            p.wait(20)
        stop(srv)


def _start_and_kill_c(cluster: Cluster, min_nodes: int) -> tuple[dict, int, float]:
    """Run the main job; kill hospital-c's agent once round 2 runs. (run, round, when)."""
    api = cluster.srv.client()
    source = (EXAMPLE / "flow.yaml").read_text().replace("min_nodes: 2", f"min_nodes: {min_nodes}")
    r = api.post("/api/v1/runs", json={"source": source, "params": {"rounds": 8}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    deadline = time.monotonic() + 240
    while True:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        rounds = [
            t["round"] for t in run["tasks"] if t["step"] == "Federated Training" and t["round"]
        ]
        if rounds and max(rounds) >= 2:
            break
        assert run["status"] == "running", json.dumps(run)[:3000]
        assert time.monotonic() < deadline, "training never reached round 2"
        time.sleep(0.05)
    killed_at = time.time()
    os.kill(cluster.agents["hospital-c"].pid, signal.SIGKILL)
    cluster.agents["hospital-c"].wait(10)
    # Bounded: a run that waited forever for the dead node fails here.
    return cluster.srv.wait_run(run_id, timeout=300), max(rounds), killed_at


def test_training_goes_on_without_a_killed_node_and_its_validation_fails_fast(
    cluster: Cluster,
) -> None:
    run, round_at_kill, _ = _start_and_kill_c(cluster, min_nodes=2)
    tasks = run["tasks"]
    training = [t for t in tasks if t["step"] == "Federated Training"]
    step = next(t for t in training if not t["round"])
    assert step["state"] == "finished", json.dumps(step)[:2000]
    rounds = {t["round"] for t in training if t["round"]}
    assert max(rounds) == 8  # every round ran
    c_rounds = {t["round"] for t in training if t["node"] == "hospital-c" and t["round"]}
    # Left out of the samples from (at the latest) the round after the one it died in.
    assert max(c_rounds) <= round_at_kill + 1, sorted(c_rounds)
    for r in range(round_at_kill + 2, 9):
        placed = {t["node"] for t in training if t["round"] == r and t["node"] != "local"}
        assert placed == {"hospital-a", "hospital-b"}, r
    # The round it died in went on without it, with the reason recorded.
    dropped = [t for t in training if t["node"] == "hospital-c" and t["state"] == "error"]
    for t in dropped:
        assert "node 'hospital-c' offline since" in t["error"]["message"], t["error"]
    # Its validation task did not hang: it failed at once, saying why.
    validation = {t["node"]: t for t in tasks if t["step"] == "Model Validation"}
    assert validation["hospital-a"]["state"] == "finished"
    assert validation["hospital-b"]["state"] == "finished"
    c = validation["hospital-c"]
    assert c["state"] == "error"
    assert c["error"]["message"].startswith("node 'hospital-c' offline since "), c["error"]
    assert run["status"] == "failed" and "Model Validation" in run["error"]
    # The server lists it offline.
    api = cluster.srv.client()
    nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()["items"]}
    assert nodes["hospital-c"]["online"] is False
    assert nodes["hospital-a"]["online"] is True


def test_a_federated_step_stops_when_fewer_than_min_nodes_remain(cluster: Cluster) -> None:
    run, _, _ = _start_and_kill_c(cluster, min_nodes=3)
    assert run["status"] == "failed"
    step = next(t for t in run["tasks"] if t["step"] == "Federated Training" and not t["round"])
    message = step["error"]["message"]
    assert "fewer than min_nodes=3" in message, message
    assert "node 'hospital-c' offline since" in message, message
