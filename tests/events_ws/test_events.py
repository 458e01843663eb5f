"""Live run events over WebSocket: history then live, resume without gap or duplicate,
auth, and several server processes sharing a broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.events_ws.conftest import Server, broker_url, start_servers

FLOW_PARAMS = {"n": 8, "pause": 0.15}


def start_run(server: Server, **params: float) -> str:
    text = (server.root / "flow.yaml").read_text()
    with server.client() as c:
        resp = c.post("/api/v1/runs", json={"source": text, "params": params or FLOW_PARAMS})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def ws_url(server: Server, run_id: str, after: int = 0) -> str:
    return server.url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events?after={after}"


def read_events(
    server: Server, run_id: str, after: int = 0, limit: int | None = None
) -> list[dict]:
    got: list[dict] = []
    headers = {"Authorization": f"Bearer {server.token}"}
    with connect(ws_url(server, run_id, after), additional_headers=headers, open_timeout=10) as ws:
        for raw in ws:
            got.append(json.loads(raw))
            if limit is not None and len(got) >= limit:
                break
    return got


def wait_running(server: Server, run_id: str) -> None:
    deadline = time.monotonic() + 30
    with server.client() as c:
        while time.monotonic() < deadline:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            states = [t["state"] for t in run.get("tasks", [])]
            if "running" in states:
                return
            time.sleep(0.05)
    raise AssertionError("the run never reached a running task")


def check_complete(events: list[dict]) -> None:
    ids = [e["id"] for e in events]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert events[0]["kind"] == "run" and events[0]["payload"]["status"] == "running"
    assert events[-1]["kind"] == "run" and events[-1]["payload"]["status"] == "success"
    kinds = {e["kind"] for e in events}
    assert {"transition", "log", "metric", "progress"} <= kinds
    train = [e for e in events if e["payload"].get("step") == "Train"]
    assert [e["payload"]["dst"] for e in train if e["kind"] == "transition"] == [
        "initialized",
        "started",
        "running",
        "finished",
    ]
    assert [e["payload"]["message"] for e in train if e["kind"] == "log"] == [
        f"tick {i}" for i in range(1, FLOW_PARAMS["n"] + 1)
    ]


def test_a_late_watcher_gets_the_history_then_the_live_stream(server: Server) -> None:
    run_id = start_run(server)
    wait_running(server, run_id)
    events = read_events(server, run_id)
    check_complete(events)
    # Some of those were live: the run was still going when the watcher connected.
    assert any(e["kind"] == "log" for e in events)


def test_reconnecting_with_the_last_id_resumes_without_gap_or_duplicate(server: Server) -> None:
    run_id = start_run(server)
    wait_running(server, run_id)
    first = read_events(server, run_id, limit=5)
    rest = read_events(server, run_id, after=first[-1]["id"])
    check_complete(first + rest)


def test_a_finished_run_replays_its_whole_history(server: Server) -> None:
    run_id = start_run(server, n=2, pause=0.0)
    with server.client() as c:
        for _ in range(200):
            if c.get(f"/api/v1/runs/{run_id}").json()["status"] != "running":
                break
            time.sleep(0.05)
    events = read_events(server, run_id)
    assert events[-1]["payload"]["status"] == "success"
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))


def test_the_cli_submits_to_the_server_and_follows_the_run(server: Server) -> None:
    res = server.ff("run", "flow.yaml", "--param", "n=3", "--param", "pause=0.05", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "success" and report["events"] == report["last_event_id"]
    watched = server.ff("runs", "watch", report["run_id"], "--json")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["last_event_id"] == report["last_event_id"]
    human = server.ff("runs", "watch", report["run_id"])
    assert "Step: Train" in human.stdout and "success" in human.stdout


def test_a_browser_can_authenticate_with_a_first_message(server: Server) -> None:
    run_id = start_run(server, n=2, pause=0.0)
    with connect(ws_url(server, run_id)) as ws:
        ws.send(json.dumps({"type": "auth", "token": server.token}))
        events = [json.loads(m) for m in ws]
    assert events[0]["id"] == 1 and events[-1]["payload"]["status"] == "success"


def test_a_silent_watcher_without_credentials_is_closed_after_a_timeout(server: Server) -> None:
    run_id = start_run(server, n=1, pause=0.0)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as info, connect(ws_url(server, run_id)) as ws:
        ws.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4408
    assert "no credentials" in info.value.rcvd.reason
    assert time.monotonic() - started < 30


def test_watchers_without_a_valid_token_or_for_unknown_runs_are_refused(server: Server) -> None:
    run_id = start_run(server, n=1, pause=0.0)
    for headers, code in (({"Authorization": "Bearer nope"}, 4401),):
        with (
            pytest.raises(ConnectionClosed) as info,
            connect(ws_url(server, run_id), additional_headers=headers) as ws,
        ):
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == code
    with pytest.raises(ConnectionClosed) as info:
        headers = {"Authorization": f"Bearer {server.token}"}
        with connect(ws_url(server, "0" * 32), additional_headers=headers) as ws:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404
    res = server.ff("runs", "watch", "0" * 32)
    assert res.returncode == 2 and "has no run" in res.stderr


def test_a_watcher_sending_garbage_is_closed_and_the_server_keeps_serving(server: Server) -> None:
    run_id = start_run(server, n=20, pause=0.1)
    headers = {"Authorization": f"Bearer {server.token}"}
    with connect(ws_url(server, run_id), additional_headers=headers) as ws:
        ws.send("this is not json")
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(10_000):
                ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1003
    with server.client() as c:
        assert c.get("/health").status_code == 200
        c.post(f"/api/v1/runs/{run_id}/cancel")


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_a_run_started_on_one_server_streams_to_a_watcher_on_another(
    kind: str, tmp_path: Path, pg_database: str
) -> None:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    gen = start_servers(tmp_path / kind, pg_database, broker_url(kind), count=2)
    a, b = next(gen)
    try:
        run_id = start_run(a)
        wait_running(b, run_id)
        events = read_events(b, run_id)
        check_complete(events)
    finally:
        next(gen, None)
