"""Issue 18, site sovereignty: red-team tests of a node agent under its DEFAULT policy.

Each test is an attacker with an ordinary flow who plants marker bytes in a hospital's
dataset (every row of a CSV carries them), places a task on a real ``flowfed node start``
subprocess and looks for the marker at the central side: the server's SQLite catalog (with
its WAL), the central artifact store, what the hub hands back to the engine (results,
telemetry, error reports) and what the REST API answers. Where the node must refuse, the
refusal names the node and the policy rule.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowfed.artifacts import materialize
from flowfed.db import Database
from flowfed.node.journal import NodeJournal
from flowfed.runtime.remote import RemoteInput, RemoteResult, RemoteTask, RemoteTaskError
from flowfed.server.auth import create_token
from tests.nodes.conftest import Cluster, Node, cluster_factory, make_csv, run, task  # noqa: F401
from tests.security.central import find_marker

# The attacker's tools: ordinary flow code, each trying one way out with row data.
ATTACK_TOOLS = """
import numpy as np
import pandas as pd

from flowfed import Context, tool


def _table(ctx: Context) -> pd.DataFrame:
    return pd.read_csv(ctx.dataset["path"])


@tool(version="1", type="database-adapter")
def rt_log_row(ctx: Context) -> int:
    table = _table(ctx)
    ctx.log(f"first row: {table.iloc[0].to_dict()}")
    return len(table)


@tool(version="1", type="database-adapter")
def rt_metric_named_by_row(ctx: Context) -> int:
    table = _table(ctx)
    ctx.metric(str(table["label"].iloc[0]), 1.0)
    ctx.metric("rows", float(len(table)))
    return len(table)


@tool(version="1", type="database-adapter")
def rt_nan_metric(ctx: Context) -> int:
    table = _table(ctx)
    ctx.metric("loss", float("nan"))
    ctx.metric("rows", float(len(table)))
    return len(table)


@tool(version="1", type="database-adapter")
def rt_raise_row(ctx: Context) -> int:
    table = _table(ctx)
    raise ValueError(f"bad row {table['label'].iloc[0]}")


@tool(version="1", type="database-adapter")
def rt_read_parts(ctx: Context, *, parts: list[str]) -> int:
    # The path is built in code, so no config value names it: only the sandbox stands.
    text = open("/" + "/".join(parts)).read()
    ctx.metric(text.split('"token": "')[-1].split('"')[0], 1.0)
    return len(text)


@tool(version="1", type="database-adapter")
def rt_count(ctx: Context) -> dict:
    return {"n": len(_table(ctx))}


@tool(version="1", type="database-adapter")
def rt_row_list(ctx: Context) -> list:
    return _table(ctx)["label"].tolist()


@tool(version="1", type="database-adapter")
def rt_counts(ctx: Context) -> dict:
    _table(ctx)
    return {"a": 7, "b": 1}


@tool(version="1", type="database-adapter")
def rt_row_array(ctx: Context) -> np.ndarray:
    t = _table(ctx)
    return np.column_stack([t["age"], t["size"], t["age"] * t["size"]]).astype(float)


@tool(version="1", type="database-adapter")
def rt_big_model(ctx: Context) -> np.ndarray:
    t = _table(ctx)
    return t["age"].to_numpy(dtype=float)[:20] / 100.0


@tool(version="1", type="database-adapter")
def rt_small_model(ctx: Context) -> np.ndarray:
    t = _table(ctx)
    return np.array([t["age"].mean(), t["size"].mean(), 0.5])
"""


def _inprocess_flags() -> tuple[str, ...]:
    """``--insecure`` where ``flowfed node start`` needs it for the in-process runner."""
    from flowfed.cli.nodes import node_start
    from flowfed.node.agent import node_command

    if "insecure" in inspect.signature(node_command).parameters:
        return ()  # tests/nodes/conftest.py's Cluster passes it for in-process runners
    return ("--insecure",) if "insecure" in inspect.signature(node_start).parameters else ()


def _marker() -> str:
    return "MARK-" + uuid.uuid4().hex


@dataclasses.dataclass
class Site:
    """A cluster with the attacker's tools, and what the attack brings back centrally."""

    cluster: Cluster
    tmp: Path
    tools: Path
    seen: list[Any] = dataclasses.field(default_factory=list)

    def start(self, name: str, datasets: dict[str, Path] | None, runner: str, *extra: str) -> Node:
        flags = _inprocess_flags() if runner == "inprocess" else ()
        return self.cluster.start_node(
            name, datasets, runner, "--import", str(self.tools), *flags, *extra
        )

    def work(self, name: str) -> Path:
        return self.cluster.root / f"work-{name}"

    def run(self, t: RemoteTask) -> tuple[RemoteResult, list[tuple[str, dict[str, Any]]]]:
        result, telemetry = run(self.cluster, t)
        self.seen += [result, telemetry]
        return result, telemetry

    def refused(self, t: RemoteTask) -> dict[str, Any]:
        """The error report of a task that must fail (and what telemetry came before)."""
        telemetry: list[tuple[str, dict[str, Any]]] = []
        with pytest.raises(RemoteTaskError) as info:
            self.cluster.hub.run_task(t, lambda k, p: telemetry.append((k, p)), threading.Event())
        self.seen += [info.value.report, str(info.value), telemetry]
        return info.value.report

    def audit(self, name: str) -> list[dict[str, Any]]:
        path = self.work(name) / "audit.jsonl"
        return [json.loads(line)["event"] for line in path.read_text().splitlines() if line]

    def assert_not_central(self, *markers: bytes) -> None:
        """No marker in the server's database files, the central artifact store, what the
        hub handed back in this test, the hub's node view, or the REST API's answers."""
        paths = [*sorted(self.tmp.glob("server.db*")), self.tmp / "central-artifacts"]
        assert paths[0].name == "server.db", paths
        db = Database(self.cluster.db_url)
        try:
            token = create_token(db, "redteam", "admin").token
        finally:
            db.close()
        api: list[str] = []
        with httpx.Client(
            base_url=self.cluster.srv.url, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for url in ("/api/v1/nodes", "/api/v1/runs", "/api/v1/artifacts"):
                r = c.get(url)
                api.append(f"{url} {r.status_code} {r.text}")
            for name in self.cluster.hub.nodes():
                r = c.get(f"/api/v1/nodes/{name}")
                api.append(f"{r.status_code} {r.text}")
        assert any(a.startswith("/api/v1/nodes 200") for a in api), api
        hub = repr(self.cluster.hub.nodes()) + repr(getattr(self.cluster.hub, "refusals", []))
        returned = repr(self.seen)
        for m in markers:
            assert find_marker(m, paths=paths) == [], f"{m!r} reached the central side"
            text = m.decode()
            assert text not in returned, f"{m!r} in what the hub returned: {returned[:2000]}"
            assert text not in hub, f"{m!r} in the hub's state"
            for answer in api:
                assert text not in answer, f"{m!r} in a REST answer: {answer[:500]}"


@pytest.fixture
def site(cluster_factory: Callable[[str], Cluster], tmp_path: Path) -> Site:  # noqa: F811
    cluster = cluster_factory(f"sqlite:///{tmp_path / 'server.db'}")
    tools = tmp_path / "attack_tools.py"
    tools.write_text(textwrap.dedent(ATTACK_TOOLS))
    return Site(cluster, tmp_path, tools)


def _data(tmp: Path, name: str, marker: str, rows: int) -> Path:
    folder = tmp / f"data-{name}"
    folder.mkdir(exist_ok=True)
    return make_csv(folder / f"{name}.csv", marker, rows=rows)


def _as(t: RemoteTask, **changes: Any) -> RemoteTask:
    return dataclasses.replace(t, **changes)


# -- 1. data access: a config path ------------------------------------------------------


def test_config_paths_outside_the_registered_datasets_are_refused_before_running(
    site: Site, tmp_path: Path
) -> None:
    marker = _marker()
    own = _data(tmp_path, "a", marker, rows=8)
    other_marker = _marker()
    other = _data(tmp_path, "b", other_marker, rows=8)  # another site's (unregistered) CSV
    site.start("hospital-a", {"breast": own}, "sandbox")
    creds = site.cluster.credentials("hospital-a")
    token = site.cluster.token("hospital-a")
    assert token.startswith("ffn_")

    for target in (creds, Path("/etc/passwd"), other, own):
        report = site.refused(
            task(
                "hospital-a",
                "flowfed.csv",
                config={"path": str(target)},
                shareable=["output"],
                timeout=60,
            )
        )
        assert report["type"] == "PolicyRefused", report
        assert "node 'hospital-a' refused the task (policy rule data.paths)" in report["message"]
        assert "path=" in report["message"] and str(target) in report["message"]
    # Refused before running: no admission, no output in the node's store.
    kinds = [e["kind"] for e in site.audit("hospital-a")]
    assert kinds.count("task.refused") == 4 and "task.admitted" not in kinds, kinds
    assert {e.get("rule") for e in site.audit("hospital-a") if e["kind"] == "task.refused"} == {
        "data.paths"
    }
    store = site.work("hospital-a") / "artifacts"
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
    passwd = Path("/etc/passwd").read_bytes().splitlines()[0]
    site.assert_not_central(marker.encode(), other_marker.encode(), token.encode(), passwd)


def test_the_sandbox_hides_the_credentials_from_a_path_built_in_code(
    site: Site, tmp_path: Path
) -> None:
    """No config value names a place (data.paths cannot see it): the sandbox must."""
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, "sandbox")
    creds = site.cluster.credentials("hospital-a").resolve()
    token = site.cluster.token("hospital-a")
    t = task("hospital-a", "rt_read_parts", dataset="breast", config={"parts": creds.parts[1:]})
    report = site.refused(t)
    assert report["type"] in ("FileNotFoundError", "PermissionError"), report
    site.assert_not_central(marker.encode(), token.encode())


# -- 2. egress: a table -----------------------------------------------------------------


def test_a_shared_dataframe_is_refused_as_row_shaped_and_audited(
    site: Site, tmp_path: Path
) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=20)}, "inprocess")
    t = task("hospital-a", "flowfed.node_dataset", dataset="breast", shareable=["output"])
    report = site.refused(t)
    assert report["type"] == "EgressRefused", report
    message = report["message"]
    assert "node 'hospital-a' refused to release output 'output'" in message
    assert "(policy rule egress.row_shaped)" in message
    refused = [e for e in site.audit("hospital-a") if e["kind"] == "egress.refused"]
    assert len(refused) == 1, refused
    assert refused[0]["task_id"] == t.task_id and refused[0]["rule"] == "egress.row_shaped"
    assert refused[0]["output"] == "output" and refused[0]["output_kind"] == "pandas"
    site.assert_not_central(marker.encode())


# -- 3. logs, metrics and errors stay on the node ----------------------------------------


@pytest.mark.parametrize("runner", ["sandbox", "inprocess"])
def test_a_logged_row_stays_on_the_node(site: Site, tmp_path: Path, runner: str) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, runner)
    t = task("hospital-a", "rt_log_row", dataset="breast")
    _, telemetry = site.run(t)
    logs = [p["message"] for k, p in telemetry if k == "log"]
    assert logs, telemetry
    assert all(m.startswith("[info kept on node 'hospital-a'") for m in logs), logs
    assert f"flowfed node logs {t.task_id}" in logs[0]
    # The operator reads it on the node.
    out = subprocess.run(
        [sys.executable, "-m", "flowfed", "node", "logs", t.task_id,
         "--work-dir", str(site.work("hospital-a"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert marker in out.stdout
    site.assert_not_central(marker.encode())


def test_a_metric_named_from_a_row_does_not_leave(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, "inprocess")
    _, telemetry = site.run(task("hospital-a", "rt_metric_named_by_row", dataset="breast"))
    names = [p["name"] for k, p in telemetry if k == "metric"]
    assert "rows" in names, telemetry  # a plain metric still leaves
    assert not any(marker in str(n) for n in names), f"row-named metric left the node: {names}"
    site.assert_not_central(marker.encode())


def test_a_nan_metric_is_dropped(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, "inprocess")
    t = task("hospital-a", "rt_nan_metric", dataset="breast")
    _, telemetry = site.run(t)
    metrics = {p["name"]: p["value"] for k, p in telemetry if k == "metric"}
    assert metrics == {"rows": 8.0}, telemetry
    kept = (site.work("hospital-a") / "logs" / f"{t.task_id}.jsonl").read_text()
    assert "'loss' = nan dropped by the node's policy" in kept
    site.assert_not_central(marker.encode())


@pytest.mark.parametrize("runner", ["sandbox", "inprocess"])
def test_a_tool_error_with_a_row_keeps_its_message_on_the_node(
    site: Site, tmp_path: Path, runner: str
) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, runner)
    t = task("hospital-a", "rt_raise_row", dataset="breast")
    report = site.refused(t)
    assert report["type"] == "ValueError", report
    assert report["traceback"] is None
    assert marker not in report["message"]
    assert "node 'hospital-a'" in report["message"] and "stay on the node" in report["message"]
    error_id = report["context"]["error_id"]
    assert error_id and error_id in report["message"]
    # The operator reads the whole error on the node.
    out = subprocess.run(
        [sys.executable, "-m", "flowfed", "node", "errors", error_id,
         "--work-dir", str(site.work("hospital-a"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"bad row {marker}0" in out.stdout
    assert "Traceback" in out.stdout
    site.assert_not_central(marker.encode())


# -- 4. disclosure checks on JSON aggregates ---------------------------------------------


def test_an_aggregate_over_too_few_rows_is_refused(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=3)}, "inprocess")
    report = site.refused(task("hospital-a", "rt_count", dataset="breast", shareable=["output"]))
    assert report["type"] == "EgressRefused", report
    assert "(policy rule disclosure.min_rows)" in report["message"]
    assert "an aggregate over 3 rows, fewer than the minimum of 5" in report["message"]
    site.assert_not_central(marker.encode())


def test_a_list_with_one_entry_per_row_is_refused(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=20)}, "inprocess")
    t = task("hospital-a", "rt_row_list", dataset="breast", shareable=["output"])
    report = site.refused(t)
    assert report["type"] == "EgressRefused", report
    assert "(policy rule egress.row_shaped)" in report["message"]
    site.assert_not_central(marker.encode())


def test_small_count_cells_are_suppressed(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=8)}, "inprocess")
    res, _ = site.run(task("hospital-a", "rt_counts", dataset="breast", shareable=["output"]))
    out = res.outputs["output"]
    assert out.data is not None
    assert json.loads(out.data) == {"a": 7, "b": None}
    assert b"null" in out.data and b": 1" not in out.data
    (record,) = res.egress
    assert record["released"] and record["suppressed_cells"] == 1, record
    site.assert_not_central(marker.encode())


# -- 5. model size against the rows it was trained on ------------------------------------


def test_models_too_large_for_their_rows_are_refused(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=50)}, "inprocess")
    per_row = site.refused(
        task("hospital-a", "rt_row_array", dataset="breast", shareable=["output"])
    )
    assert per_row["type"] == "EgressRefused", per_row
    assert "(policy rule egress.row_shaped)" in per_row["message"]
    big = site.refused(task("hospital-a", "rt_big_model", dataset="breast", shareable=["output"]))
    assert big["type"] == "EgressRefused", big
    assert "(policy rule disclosure.max_params_per_row)" in big["message"]
    assert "20 parameters for 50 rows" in big["message"]
    res, _ = site.run(task("hospital-a", "rt_small_model", dataset="breast", shareable=["output"]))
    out = res.outputs["output"]
    assert out.kind == "numpy" and out.data is not None
    (record,) = res.egress
    assert record["released"] and record["category"] == "parameters", record
    site.assert_not_central(marker.encode())


# -- 6. who may place tasks, and which tools ---------------------------------------------


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_principals_outside_the_allow_list_are_refused(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    policy = _policy(tmp_path, 'principals:\n  allow: ["user:alice"]\n')
    data = _data(tmp_path, "a", marker, rows=10)
    site.start("hospital-a", {"breast": data}, "inprocess", "--policy", str(policy))
    t = task("hospital-a", "rt_counts", dataset="breast", shareable=["output"])
    report = site.refused(_as(t, principal="user:mallory"))
    assert report["type"] == "PolicyRefused", report
    assert "node 'hospital-a' refused the task (policy rule principals.allow)" in report["message"]
    assert "user:mallory" in report["message"]
    res, _ = site.run(_as(t, task_id=uuid.uuid4().hex, principal="user:alice"))
    assert res.outputs["output"].data is not None
    site.assert_not_central(marker.encode())


def test_tools_outside_the_allow_list_are_refused(site: Site, tmp_path: Path) -> None:
    marker = _marker()
    policy = _policy(tmp_path, "tools:\n  allow:\n    - name: flowfed.column_sums\n")
    data = _data(tmp_path, "a", marker, rows=10)
    site.start("hospital-a", {"breast": data}, "inprocess", "--policy", str(policy))
    for tool in ("flowfed.node_dataset", "rt_count", "summarize"):
        report = site.refused(task("hospital-a", tool, dataset="breast", shareable=["output"]))
        assert report["type"] == "PolicyRefused", report
        assert "refused the task (policy rule tools.allow)" in report["message"], report
        assert f"tool '{tool}'" in report["message"]
    # The one allowed tool is admitted and runs (on a table sent from the centre).
    import pandas as pd

    mat = materialize(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    table = RemoteInput("table", mat.hash, len(mat.data), mat.kind, data=mat.data)
    res, _ = site.run(
        task("hospital-a", "flowfed.column_sums", inputs={"table": table}, config={"target": None})
    )
    assert "output" in res.outputs
    site.assert_not_central(marker.encode())


# -- 7. manual approval --------------------------------------------------------------------


def test_manual_approval_holds_the_task_until_the_operator_approves(
    site: Site, tmp_path: Path
) -> None:
    marker = _marker()
    policy = _policy(tmp_path, "tools:\n  approval: manual\n")
    data = _data(tmp_path, "a", marker, rows=10)
    site.start("hospital-a", {"breast": data}, "inprocess", "--policy", str(policy))
    t = task("hospital-a", "rt_counts", dataset="breast", shareable=["output"])
    telemetry: list[tuple[str, dict[str, Any]]] = []
    box: dict[str, Any] = {}

    def engine() -> None:
        try:
            box["result"] = site.cluster.hub.run_task(
                t, lambda k, p: telemetry.append((k, p)), threading.Event()
            )
        except RemoteTaskError as exc:
            box["error"] = exc.report

    worker = threading.Thread(target=engine)
    worker.start()
    journal = NodeJournal(site.work("hospital-a"))
    try:
        deadline = time.monotonic() + 30
        while not journal.pending():
            assert worker.is_alive(), box
            assert time.monotonic() < deadline, "the task never asked for approval"
            time.sleep(0.1)
        time.sleep(1.0)  # the task keeps waiting; its telemetry has reached the hub
        assert worker.is_alive() and not box, box
        waiting = repr(telemetry)
    finally:
        approve = subprocess.run(
            [sys.executable, "-m", "flowfed", "node", "approve", "--all",
             "--work-dir", str(site.work("hospital-a"))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        worker.join(60)
    assert approve.returncode == 0, approve.stderr
    assert "approved tool rt_counts" in approve.stdout
    assert not worker.is_alive()
    assert "error" not in box, box
    assert json.loads(box["result"].outputs["output"].data) == {"a": 7, "b": None}
    # The engine (and so the user's monitor) hears why the task waits.
    assert "waiting for approval at node 'hospital-a'" in waiting, waiting
    site.seen += [box, telemetry]
    site.assert_not_central(marker.encode())


# -- 8. the audit chain ----------------------------------------------------------------------


def test_the_audit_chain_verifies_and_one_changed_byte_breaks_it(
    site: Site, tmp_path: Path
) -> None:
    marker = _marker()
    site.start("hospital-a", {"breast": _data(tmp_path, "a", marker, rows=10)}, "inprocess")
    site.run(task("hospital-a", "rt_counts", dataset="breast", shareable=["output"]))
    site.refused(task("hospital-a", "flowfed.node_dataset", dataset="breast", shareable=["output"]))
    site.refused(task("hospital-a", "flowfed.csv", config={"path": "/etc/passwd"}))
    work = site.work("hospital-a")
    verify = [sys.executable, "-m", "flowfed", "node", "audit", "--verify", "--work-dir", str(work)]
    ok = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain intact" in ok.stdout
    audit = work / "audit.jsonl"
    raw = audit.read_bytes()
    kinds = [json.loads(line)["event"]["kind"] for line in raw.splitlines()]
    for kind in ("node.started", "task.admitted", "egress.released", "egress.refused"):
        assert kind in kinds, kinds
    assert "task.refused" in kinds and "task.finished" in kinds, kinds
    # One byte of one entry's event (still valid JSON): "released" -> "releasee".
    at = raw.index(b'"egress.released"') + len(b'"egress.release')
    audit.write_bytes(raw[:at] + b"e" + raw[at + 1 :])
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "audit chain BROKEN" in broken.stdout
    site.assert_not_central(marker.encode())
