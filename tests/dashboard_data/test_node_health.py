"""Node health and honest progress (issue 22, parts 3 and 6) on a real ``flowfed server``
with three real node agents: the breast cancer example, one agent killed mid-training.

While the dead node is within its liveness grace, its next task waits for it: the REST
task JSON says ``waiting_on`` and the run's events carry the CLI's "waiting for
hospital-c (offline since HH:MM:SS)"; the federated step, which cannot move, is reported
``stalled``. After the run, the ``--server`` tree pins the dropped node's error above the
folded rounds, keeps the round total, and every step's state is final.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowfed.cli.remote import watch
from flowfed.node.agent import node_command
from tests.federated.conftest import hospitals  # noqa: F401 (the hospitals' CSVs)
from tests.server.conftest import Server, start_server, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
#: Long enough that the dead node's next task visibly waits for it.
LIVENESS_S = 12.0
ROUNDS = 6


@dataclass
class Cluster:
    srv: Server
    agents: dict[str, subprocess.Popen[bytes]]


@pytest.fixture
def cluster(
    hospitals: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    monkeypatch.setenv("FLOWFED_STALL_AFTER", "3")  # read by the server it starts
    srv = start_server(
        tmp_path / "srv",
        f"sqlite:///{tmp_path / 'srv' / 'flowfed.db'}",
        "--import", "flowfed.tools.library",
        "--import", str(EXAMPLE / "reference.py"),
        "--node-liveness", str(LIVENESS_S),
    )  # fmt: skip
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for x in "abc":
            node = f"hospital-{x}"
            creds = tmp_path / f"{node}.json"
            srv.ff("nodes", "add", node, "--out", str(creds), "--database-url", srv.db_url)
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


def _federated(run: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["name"] == "Federated Training")


def test_a_killed_node_is_waited_for_then_pinned_and_the_run_ends_final(
    cluster: Cluster,
) -> None:
    api = cluster.srv.client()
    source = (EXAMPLE / "flow.yaml").read_text()
    r = api.post("/api/v1/runs", json={"source": source, "params": {"rounds": ROUNDS}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]

    # Round progress is rounds done over rounds, never ahead of the aggregated rounds.
    deadline = time.monotonic() + 240
    while True:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        step = _federated(run)
        aggregated = {
            t["round"] for t in step["tasks"]
            if (t["plan_key"] or "").endswith("/aggregate") and t["state"] == "finished"
        }  # fmt: skip
        if step["progress"] is not None:
            assert step["progress"]["unit"] == "rounds"
            assert step["progress"]["total"] == ROUNDS
            assert step["progress"]["done"] == len(aggregated)
        if len(aggregated) >= 2:
            break
        assert run["status"] == "running", run.get("error")
        assert time.monotonic() < deadline, "training never reached round 2"
        time.sleep(0.05)

    os.kill(cluster.agents["hospital-c"].pid, signal.SIGKILL)
    cluster.agents["hospital-c"].wait(10)

    waiting: dict[str, Any] | None = None
    stalled = False
    while waiting is None or not stalled:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        for t in run["tasks"]:
            if t["waiting_on"] is not None:
                waiting = t["waiting_on"]
        stalled = stalled or _federated(run)["stalled"]
        if run["status"] != "running":
            break
        time.sleep(0.1)
    assert waiting is not None, "no task said it waited for the dead node"
    assert waiting["node"] == "hospital-c"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", waiting["offline_since"]), waiting
    assert stalled, "the federated step never showed stalled while it waited"

    final = cluster.srv.wait_run(run_id, timeout=300)
    assert final["status"] == "failed"  # hospital-c's validation cannot run
    for s in final["steps"]:
        assert s["status"] in ("completed", "failed", "skipped", "cancelled"), s["name"]
        assert s["stalled"] is False
    fed = _federated(final)
    assert fed["status"] == "completed"
    assert fed["progress"] == {"done": ROUNDS, "total": ROUNDS, "unit": "rounds"}
    assert all(t["waiting_on"] is None for t in final["tasks"])

    # The events carried the CLI's words for the wait.
    events: list[dict[str, Any]] = []
    watch(cluster.srv.url, cluster.srv.token, run_id, on_event=events.append)
    said = [e["payload"].get("message") for e in events if e["kind"] == "waiting"]
    said = [m for m in said if m]
    assert said and all(m.startswith("waiting for hospital-c") for m in said), said
    assert any(re.fullmatch(r"waiting for hospital-c \(offline since \d\d:\d\d:\d\d\)", m)
               for m in said), said  # fmt: skip

    # The --server tree: round total, the dropped node pinned above the folded rounds.
    env = {**cluster.srv.env, "COLUMNS": "250"}
    tree = subprocess.run(
        [sys.executable, "-m", "flowfed", "--server", cluster.srv.url, "--token", cluster.srv.token,
         "runs", "watch", run_id],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    text = tree.stdout
    assert re.search(r"✗ hospital-c dropped in round \d+: ", text), text
    assert f"/{ROUNDS}" in text, text
    pinned = text.index("dropped in round")
    folded = text.find("tasks of earlier rounds")
    assert folded == -1 or pinned < folded, text
    assert "[failed" in text  # the validation step, final in the tree too
