"""A real ``flowfed server`` with three real node agents: the federated templates run.

The user's path of issues 4 to 6: nodes register with credentials from ``flowfed nodes add``,
a flow made from the "Federated classification" template places its steps on them, the
run trains across the three, and the "Federated evaluation" template then scores the
registered global model (``models: {model: global_model@1}``) where the data lives.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowfed.node.agent import node_command
from tests.server.conftest import Server, start_server, stop


@pytest.fixture
def cluster(hospitals: Path, tmp_path: Path, pg_database: str) -> Iterator[Server]:
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    srv = start_server(tmp_path / "srv", pg_database, "--import", "flowfed.tools.library")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("a", "b", "c"):
            node = f"hospital-{name}"
            creds = tmp_path / f"{node}.json"
            srv.ff("nodes", "add", node, "--out", str(creds), "--database-url", pg_database)
            cmd = node_command(
                node, srv.url, creds, {"breast": hospitals / node / "breast.csv"},
                work_dir=tmp_path / f"work-{node}",
            )  # fmt: skip
            log = open(tmp_path / f"{node}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        api = srv.client()
        import time

        deadline = time.monotonic() + 60
        while True:
            got = api.get("/api/v1/nodes").json()
            assert "items" in got, got
            nodes = {n["name"]: n for n in got["items"]}
            if all(nodes.get(f"hospital-{x}", {}).get("online") for x in "abc"):
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.1)
        yield srv
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        stop(srv)


def test_templates_train_and_evaluate_on_real_nodes(cluster: Server) -> None:
    api = cluster.client()
    r = api.post(
        "/api/v1/templates/federated-classification/flows",
        json={"name": "BC federated", "rounds": 3},
    )
    assert r.status_code == 201, r.text
    run = api.post("/api/v1/runs", json={"flow": "BC federated"}).json()
    done = cluster.wait_run(run["run_id"], timeout=300)
    assert done["status"] == "success", json.dumps(done)[:3000]
    tasks = done["tasks"]
    placed = {t["node"] for t in tasks if t["step"] == "Load Data"}
    assert placed == {"hospital-a", "hospital-b", "hospital-c"}
    rounds = {t["round"] for t in tasks if t["step"] == "Federated Training" and t["round"]}
    assert rounds == {1, 2, 3}

    r = api.post(
        "/api/v1/templates/federated-evaluation/flows",
        json={
            "name": "BC evaluation",
            "model": "global_model@3",
            "datasets": ["hospital-a:breast", "hospital-b:breast", "hospital-c:breast"],
        },
    )
    assert r.status_code == 201, r.text
    run = api.post("/api/v1/runs", json={"flow": "BC evaluation"}).json()
    done = cluster.wait_run(run["run_id"], timeout=300)
    assert done["status"] == "success", json.dumps(done)[:3000]
    evaluated = {t["node"] for t in done["tasks"] if t["step"] == "Evaluate"}
    assert evaluated == {"hospital-a", "hospital-b", "hospital-c"}
    report = api.get("/api/v1/artifacts/report")
    assert report.status_code == 200, report.text
    # The evaluated model is the registered one: its lineage reaches the training run.
    lineage = api.get(f"/api/v1/artifacts/{report.json()['id']}/lineage")
    assert "global_model" in lineage.text


def test_a_missing_registry_model_fails_the_run_with_its_place(cluster: Server) -> None:
    api = cluster.client()
    r = api.post(
        "/api/v1/templates/federated-evaluation/flows",
        json={"name": "BC evaluation missing", "model": "no-such-model@2"},
    )
    assert r.status_code == 201, r.text
    run = api.post("/api/v1/runs", json={"flow": "BC evaluation missing"}).json()
    done = cluster.wait_run(run["run_id"], timeout=120)
    assert done["status"] == "failed"
    assert "models.model" in done["error"] and "no-such-model" in done["error"]
