"""A node token reaches only its own node and tasks; bad frames are refused and logged."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from flowfed.node.protocol import (
    WS_PATH,
    RegisterMessage,
    ResultMessage,
    ResumeMessage,
    dump_node_message,
    parse_node_message,
)
from flowfed.runtime.remote import RemoteTaskError
from tests.nodes.conftest import Cluster, make_csv, run, task


def _raw(cluster: Cluster, token: str) -> ClientConnection:
    return connect(
        cluster.srv.ws_url + WS_PATH,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    )


def _register(ws: ClientConnection, name: str) -> None:
    ws.send(dump_node_message(RegisterMessage(node=name)))
    ws.send(dump_node_message(ResumeMessage()))
    assert parse_node_message(ws.recv(10)).type == "welcome"


def test_wrong_token_is_refused_and_logged(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flowfed.server.nodes")
    with pytest.raises(InvalidStatus):
        _raw(cluster, "ffn_not-a-real-token")
    with pytest.raises(InvalidStatus):
        _raw(cluster, "")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "site", "token": "ffn_forged"}))
    res = subprocess.run(
        [sys.executable, "-m", "flowfed", "node", "start", "--name", "site",
         "--server", cluster.srv.url, "--credentials", str(bad), "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr
    assert "refused the credentials of node 'site' (HTTP 403)" in res.stderr
    refused = [r for r in cluster.hub.refusals if r["reason"] == "invalid node token"]
    assert len(refused) == 3
    assert refused[0]["who"].startswith("token ffn_not-")
    assert "invalid node token" in caplog.text and "token ffn_forg" in caplog.text


def test_a_node_token_registers_only_its_own_node(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flowfed.server.nodes")
    cluster.credentials("hospital-b")
    with _raw(cluster, cluster.token("hospital-a")) as ws:
        ws.send(dump_node_message(RegisterMessage(node="hospital-b")))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    assert "node 'hospital-a'" in caplog.text
    assert "cannot register as node 'hospital-b'" in caplog.text
    assert not cluster.hub.nodes()["hospital-b"].online


def test_node_a_cannot_receive_or_answer_node_b_tasks(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flowfed.server.nodes")
    cluster.credentials("hospital-b")
    a = cluster.start_node("hospital-a", {"breast": make_csv(tmp_path / "a.csv", "A")})
    box: dict[str, object] = {}
    t = task("hospital-b", "slow", config={"seconds": 0.1}, timeout=4, task_id="b" * 32)

    def engine_thread() -> None:
        try:
            run(cluster, t)
        except RemoteTaskError as exc:
            box["error"] = exc

    worker = threading.Thread(target=engine_thread)
    worker.start()
    # A forged answer for B's task on a connection of A's is refused (and B's task goes on).
    with _raw(cluster, cluster.token("hospital-a")) as ws:
        _register(ws, "hospital-a")
        ws.send(dump_node_message(ResultMessage(task_id=t.task_id, outputs={})))
        ws.send(dump_node_message(ResumeMessage()))  # a node never sends resume mid-session
        worker.join(30)
    assert not worker.is_alive()
    assert "node 'hospital-b' offline since" in str(box["error"])
    assert f"sent result for task {t.task_id}, which is placed on node 'hospital-b'" in caplog.text
    assert "a node may not send 'resume'" in caplog.text
    # The real agent of A never saw B's task.
    assert t.task_id not in a.log()
    assert not (tmp_path / "work-hospital-a" / "artifacts").exists()


def test_oversized_and_unknown_frames_are_refused(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flowfed.server.nodes")
    cluster.hub.max_frame = 4096
    with _raw(cluster, cluster.token("site")) as ws:
        _register(ws, "site")
        ws.send(json.dumps({"type": "heartbeat", "v": "1", "seq": 1, "pad": "x" * 10_000}))
        ws.send(json.dumps({"type": "launch", "v": "1"}))
        ws.send("not json at all")
        ws.send(json.dumps({"type": "heartbeat", "v": "2", "seq": 1}))
        ws.send(json.dumps({"type": "heartbeat", "v": "1", "seq": 2}))
        echo = parse_node_message(ws.recv(10))  # the connection survives refused frames
        assert echo.type == "heartbeat" and echo.seq == 2
    reasons = [r["reason"] for r in cluster.hub.refusals if r["who"] == "node 'site'"]
    assert any("over the limit of 4096" in r for r in reasons)
    assert any("unknown message type 'launch'" in r for r in reasons)
    assert any("not JSON" in r for r in reasons)
    assert any("protocol version '2' is not supported" in r for r in reasons)
    assert "refused node message from node 'site'" in caplog.text


def test_sandbox_denies_network_and_writes_outside_its_workdir(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = urlsplit(cluster.srv.url).port
    # The node policy refuses a path in a config (rule data.paths) before any tool runs;
    # this policy lets these paths through, so the sandbox is what must stop the write.
    inside_plain = tmp_path / "plain-escape.txt"
    escape = tmp_path / "boxed-escape.txt"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"data:\n  paths: [{inside_plain}, {escape}]\n")
    cluster.start_node("plain", None, "subprocess", "--policy", str(policy))
    boxed = cluster.start_node("boxed", None, "sandbox", "--policy", str(policy))

    # The same tool reaches the server's port from a subprocess runner...
    ok, _ = run(
        cluster,
        task("plain", "connect", config={"host": "127.0.0.1", "port": port}, shareable=["output"]),
    )
    assert ok.outputs["output"].data == b'"connected"'
    # ...and cannot from the sandbox (no network at all; only the control channel).
    # (the message stays on the node; the type says what happened)
    with pytest.raises(RemoteTaskError, match=r"^(ConnectionRefusedError|OSError) in step"):
        run(cluster, task("boxed", "connect", config={"host": "127.0.0.1", "port": port}))

    ok, _ = run(cluster, task("plain", "write_file", config={"path": str(inside_plain)}))
    assert inside_plain.read_text() == "escaped"
    with pytest.raises(RemoteTaskError) as refused:
        run(cluster, task("boxed", "write_file", config={"path": str(escape)}))
    assert refused.value.report["type"] in ("OSError", "FileNotFoundError", "PermissionError")
    assert not escape.exists()
    assert boxed.proc.poll() is None


def test_sandbox_tool_reads_its_node_dataset(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    csv = make_csv(tmp_path / "data" / "d.csv", "S", rows=6)
    cluster.start_node("boxed", {"d": csv}, "sandbox")
    # The table is read inside the sandbox and stays on the node (a table never leaves).
    res, _ = run(cluster, task("boxed", "flowfed.node_dataset", dataset="d"))
    out = res.outputs["output"]
    assert out.kind == "pandas" and out.data is None
    info, _ = run(cluster, task("boxed", "dataset_info", dataset="d", shareable=["output"]))
    assert json.loads(info.outputs["output"].data or b"") == {"name": "d", "rows": 6, "round": None}
