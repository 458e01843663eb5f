"""Nodes register their datasets and run tasks; node-local bytes stay on the node."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from flowfed.artifacts import ArtifactStore
from flowfed.db import Database
from flowfed.node.journal import NodeJournal
from flowfed.runtime.remote import RemoteInput
from flowfed.server.auth import create_token
from tests.nodes.conftest import Cluster, make_csv, run, task


def _admin(cluster: Cluster) -> str:
    db = Database(cluster.db_url)
    try:
        return create_token(db, "tests", "admin").token
    finally:
        db.close()


def _all_cells(db_url: str) -> str:
    """Every cell of every table of the server database, as one text."""
    engine = sa.create_engine(db_url)
    parts: list[str] = []
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    parts.append(repr(tuple(row)))
    finally:
        engine.dispose()
    return "\n".join(parts)


def _store_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_datasets_registered_and_rows_stay_on_the_node(
    cluster_factory: Callable[[str], Cluster],
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    db_url = (
        f"sqlite:///{tmp_path / 'server.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("db_url_pg")
    )
    cluster = cluster_factory(db_url)
    csv_a = make_csv(tmp_path / "a.csv", "ZQXSECRETA", rows=5)
    csv_b = make_csv(tmp_path / "b.csv", "ZQXSECRETB", rows=7)
    cluster.start_node("hospital-a", {"breast": csv_a})
    cluster.start_node("hospital-b", {"breast": csv_b})
    # A third site holds Parquet.
    import pandas as pd

    parquet_c = tmp_path / "c.parquet"
    pd.read_csv(make_csv(tmp_path / "c.csv", "ZQXSECRETC", rows=6)).to_parquet(parquet_c)
    (tmp_path / "c.csv").unlink()
    cluster.start_node("hospital-c", {"breast": parquet_c})

    token = _admin(cluster)
    with httpx.Client(base_url=cluster.srv.url, headers={"Authorization": f"Bearer {token}"}) as c:
        items = c.get("/api/v1/nodes").json()["items"]
        assert [n["name"] for n in items] == ["hospital-a", "hospital-b", "hospital-c"]
        assert items[2]["datasets"][0]["format"] == "parquet"
        assert items[2]["datasets"][0]["rows"] == 6
        a = c.get("/api/v1/nodes/hospital-a").json()
        assert c.get("/api/v1/nodes/nobody").status_code == 404
        assert httpx.get(f"{cluster.srv.url}/api/v1/nodes").status_code == 401
    assert a["online"] is True and a["running"] == 0 and a["last_seen"] > 0
    assert a["datasets"] == [
        {
            "name": "breast",
            "format": "csv",
            "rows": 5,
            "columns": [
                {"name": "age", "dtype": "int64"},
                {"name": "size", "dtype": "float64"},
                {"name": "label", "dtype": "str"},
            ],
            "hash": hashlib.sha256(csv_a.read_bytes()).hexdigest(),
        }
    ]

    # Load each node's dataset (not shareable), then summarize it by hash (shareable).
    results = {}
    for name, rows in (("hospital-a", 5), ("hospital-b", 7), ("hospital-c", 6)):
        load = task(name, "flowfed.node_dataset", dataset="breast", outputs={"output": "raw"})
        loaded, seen = run(cluster, load)
        raw = loaded.outputs["output"]
        assert raw.data is None and raw.kind == "pandas" and raw.size > 0
        # The log line stays on the node; the server sees that there was one.
        assert any(k == "log" and "kept on node" in p["message"] for k, p in seen)
        assert not any(k == "log" and f"{rows} rows" in p["message"] for k, p in seen)
        kept = NodeJournal(tmp_path / f"work-{name}").logs(load.task_id)
        assert any(f"{rows} rows" in line["message"] for line in kept)
        states = [p["state"] for k, p in seen if k == "state"]
        assert states == ["initialized", "started", "running"]
        ref = RemoteInput(
            name="raw", hash=raw.hash, size=raw.size, kind=raw.kind, meta=raw.meta, location="node"
        )
        summary, seen = run(
            cluster,
            task(name, "summarize", inputs={"table": ref}, shareable=["output"]),
        )
        out = summary.outputs["output"]
        assert out.data is not None
        assert json.loads(out.data) == {
            "rows": rows,
            "node": name,
            "columns": ["age", "size", "label"],
        }
        assert ("metric", {"name": "rows", "value": float(rows), "step": None}) in seen
        results[name] = raw

    # The node-local table is in its own store, nowhere on the server.
    store_a = ArtifactStore(str(tmp_path / "work-hospital-a" / "artifacts"))
    assert store_a.exists(results["hospital-a"].hash)
    cells = _all_cells(db_url)
    assert "ZQXSECRET" not in cells
    assert hashlib.sha256(csv_a.read_bytes()).hexdigest() in cells  # registered hash is there
    central = tmp_path / "central-artifacts"
    assert b"ZQXSECRET" not in (_store_bytes(central) if central.exists() else b"")


def test_each_task_gets_its_own_copy_of_a_node_table(cluster: Cluster, tmp_path: Path) -> None:
    # The agent keeps node-store tables decoded between tasks (a federated round reads the
    # same one every round); a tool that changes its input in place must not change what
    # the next task on that node reads.
    # five rows: an aggregate over fewer would not leave the node (disclosure.min_rows)
    cluster.start_node("hospital-a", {"breast": make_csv(tmp_path / "a.csv", "A", rows=5)})
    loaded, _ = run(
        cluster,
        task("hospital-a", "flowfed.node_dataset", dataset="breast", outputs={"output": "raw"}),
    )
    raw = loaded.outputs["output"]
    ref = RemoteInput(
        name="raw", hash=raw.hash, size=raw.size, kind=raw.kind, meta=raw.meta, location="node"
    )
    for _ in range(3):
        result, _ = run(
            cluster, task("hospital-a", "scribble", inputs={"table": ref}, shareable=["output"])
        )
        assert json.loads(result.outputs["output"].data) == {
            "age_sum": 40 + 41 + 42 + 43 + 44,
            "columns": ["age", "size", "label"],
        }


def test_a_task_on_another_nodes_store_cannot_load_it(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("hospital-a", {"breast": make_csv(tmp_path / "a.csv", "A")})
    cluster.start_node("hospital-b", {"breast": make_csv(tmp_path / "b.csv", "B")})
    loaded, _ = run(cluster, task("hospital-a", "flowfed.node_dataset", dataset="breast"))
    raw = loaded.outputs["output"]
    ref = RemoteInput(name="raw", hash=raw.hash, size=raw.size, kind=raw.kind, location="node")
    from flowfed.runtime.remote import RemoteTaskError

    with pytest.raises(RemoteTaskError, match="is not in node 'hospital-b''s store"):
        run(cluster, task("hospital-b", "summarize", inputs={"table": ref}))


def test_node_dataset_needs_a_dataset(cluster: Cluster, tmp_path: Path) -> None:
    from flowfed.runtime.remote import RemoteTaskError

    cluster.start_node("hospital-a", {"breast": make_csv(tmp_path / "a.csv", "A")})
    with pytest.raises(RemoteTaskError, match=r"^ValueError in step") as raised:
        run(cluster, task("hospital-a", "flowfed.node_dataset"))
    # What the tool said stays on the node, for its operator.
    got = NodeJournal(tmp_path / "work-hospital-a").get_error(
        raised.value.report["context"]["error_id"]
    )
    assert got is not None and "must run on a data node (on: each-dataset)" in got["message"]
    with pytest.raises(RemoteTaskError, match="node 'hospital-a' has no dataset 'lung'"):
        run(cluster, task("hospital-a", "flowfed.node_dataset", dataset="lung"))


def test_central_input_and_config_validation(cluster: Cluster, tmp_path: Path) -> None:
    import pandas as pd

    from flowfed.artifacts import materialize
    from flowfed.runtime.remote import RemoteTaskError

    cluster.start_node("hospital-a", {"breast": make_csv(tmp_path / "a.csv", "A")})
    m = materialize(pd.DataFrame({"x": [1, 2, 3]}))
    ref = RemoteInput(
        name="t",
        hash=m.hash,
        size=m.size,
        kind=m.kind,
        meta=m.meta,
        location="central",
        data=m.data,
    )
    res, _ = run(
        cluster, task("hospital-a", "summarize", inputs={"table": ref}, shareable=["output"])
    )
    assert json.loads(res.outputs["output"].data or b"")["rows"] == 3
    with pytest.raises(RemoteTaskError, match="invalid config for tool 'slow': seconds"):
        run(cluster, task("hospital-a", "slow", config={"seconds": "soon"}))
    with pytest.raises(RemoteTaskError, match="has no tool 'nope'"):
        run(cluster, task("hospital-a", "nope"))
