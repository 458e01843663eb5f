"""WS /api/v1/tasks/{id}/runtime: a production tool's channel, opened by a task-scoped token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    HelloMessage,
    RuntimeInfo,
    StatusMessage,
    dump_message,
    parse_message,
)
from tests.polling import wait_for
from tests.server.conftest import Server
from tests.tooldev.conftest import (
    MAX_FRAME,
    Proc,
    env_of,
    new_tool_token,
    server_log,
)

SLOW = (
    "name: slow flow\nsteps:\n  - {name: wait, tool: slow, params: {seconds: 120}, outputs: [x]}\n"
)
TOOL = """
from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def probe(ctx: Context, *, seconds: float = 1.0) -> int:
    return 1
"""


def start_slow_run(server: Server) -> tuple[str, str]:
    """A run whose only task is running (for up to two minutes): (run id, task id)."""
    with server.client() as api:
        rid = api.post("/api/v1/runs", json={"source": SLOW}).json()["run_id"]

        def running() -> str | None:
            tasks = api.get(f"/api/v1/runs/{rid}").json()["steps"][0]["tasks"]
            return tasks[0]["id"] if tasks and tasks[0]["state"] == "running" else None

        return rid, str(wait_for("the slow task to run", running, timeout=30))


@pytest.fixture
def live_task(server: Server) -> Iterator[tuple[str, str]]:
    rid, tid = start_slow_run(server)
    yield rid, tid
    with server.client() as api:
        api.post(f"/api/v1/runs/{rid}/cancel")
    server.wait_run(rid, timeout=60)


def ws_url(server: Server, task_id: str) -> str:
    return server.url.replace("http", "ws", 1) + f"/api/v1/tasks/{task_id}/runtime"


def open_channel(server: Server, task_id: str, token: str | None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(ws_url(server, task_id), additional_headers=headers, max_size=None)


def hello() -> str:
    return dump_message(
        HelloMessage(
            entrypoint="probe.py:probe",
            tool=None,
            runtime=RuntimeInfo(python="3", platform="test", pid=1),
        )
    )


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            ws.recv(timeout=30)
    rcvd = info.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    return rcvd.code, rcvd.reason


def test_the_tool_side_engine_connects_with_its_task_token_and_the_task_end_closes_it(
    server: Server, live_task: tuple[str, str]
) -> None:
    rid, tid = live_task
    token = new_tool_token(server, tid)
    (server.root / "probe.py").write_text(TOOL)
    env = env_of(server)
    env["FLOWFED_TOOL_TOKEN"] = token
    tool = Proc(
        ["-m", "flowfed.runtime", "--endpoint", ws_url(server, tid), "--tool", "probe.py:probe"],
        server.root,
        env,
        "probe",
    )
    try:
        with server.client() as api:

            def initialized() -> dict[str, Any] | None:
                r = api.get(f"/api/v1/tasks/{tid}/runtime")
                return (
                    r.json()
                    if r.status_code == 200 and r.json()["state"] == "initialized"
                    else None
                )

            info = wait_for("the tool to be initialized", initialized, timeout=30)
            assert info["hello"]["tool"]["name"] == "probe"
            assert info["hello"]["entrypoint"] == "probe.py:probe"
            assert info["client_id"].startswith("ffc_")
            # The task ends: its tool's channel is closed, the tool ends in Error.
            assert api.post(f"/api/v1/runs/{rid}/cancel").status_code == 202
        assert tool.proc.wait(60) == 1
        assert "closed the channel" in tool.err
        log = server_log(server)
        assert f"task {tid}" in log and "ended (cancelled)" in log
        # ...and the token no longer opens one.
        with open_channel(server, tid, token) as ws:
            code, reason = closed_with(ws)
        assert code == 4403 and "has ended" in reason
    finally:
        tool.stop()


def test_the_server_welcomes_the_tool_with_its_task_identity(
    server: Server, live_task: tuple[str, str]
) -> None:
    rid, tid = live_task
    with open_channel(server, tid, new_tool_token(server, tid)) as ws:
        ws.send(hello())
        welcome = parse_message(ws.recv(timeout=30))
        config = parse_message(ws.recv(timeout=30))
        assert welcome.type == "welcome"
        assert (welcome.task_id, welcome.run_id, welcome.step) == (tid, rid, "wait")
        assert config.type == "config" and config.values == {"seconds": 120}
        ws.send(dump_message(StatusMessage(src=None, dst=State.PENDING)))
        beat = parse_message(ws.recv(timeout=30))  # the server keeps the channel alive
        assert beat.type == "heartbeat"


def test_a_token_for_another_task_is_refused_and_logged(
    server: Server, live_task: tuple[str, str]
) -> None:
    _, tid = live_task
    other = "f" * 32
    with open_channel(server, tid, new_tool_token(server, other)) as ws:
        code, reason = closed_with(ws)
    assert code == 4403
    assert f"not task:{tid}" in reason
    assert f"tool runtime refused: task {tid}" in server_log(server)


@pytest.mark.parametrize("who", ["nobody", "garbage", "user"])
def test_only_tool_tokens_open_a_task_channel(
    server: Server, live_task: tuple[str, str], who: str
) -> None:
    _, tid = live_task
    token = {"nobody": None, "garbage": "a.b.c", "user": server.token}[who]
    with open_channel(server, tid, token) as ws:
        code, reason = closed_with(ws)
    if who == "user":
        assert (code, reason) == (4403, "an admin token cannot open a tool runtime channel")
    else:
        assert (code, reason) == (4401, "missing or invalid bearer token")


def test_an_unknown_message_type_is_refused_and_logged_with_the_task(
    server: Server, live_task: tuple[str, str]
) -> None:
    _, tid = live_task
    with open_channel(server, tid, new_tool_token(server, tid)) as ws:
        ws.send(hello())
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "launch_missiles", "v": "1"}))
        code, reason = closed_with(ws)
    assert code == 1008 and "unknown message type 'launch_missiles'" in reason
    log = server_log(server)
    assert f"tool runtime refused: task {tid}" in log
    assert "unknown message type 'launch_missiles'" in log


def test_an_oversized_frame_is_refused_and_logged_with_the_task(
    server: Server, live_task: tuple[str, str]
) -> None:
    _, tid = live_task
    with open_channel(server, tid, new_tool_token(server, tid)) as ws:
        ws.send(hello())
        ws.recv(timeout=30)
        big = json.dumps({"type": "log", "v": "1", "message": "x" * (MAX_FRAME + 1)})
        ws.send(big)
        code, reason = closed_with(ws)
    assert code == 1009
    assert f"frame of {len(big)} bytes is over the limit of {MAX_FRAME}" in reason
    assert f"task {tid}" in server_log(server)


def test_a_second_runtime_for_the_same_task_is_refused(
    server: Server, live_task: tuple[str, str]
) -> None:
    _, tid = live_task
    token = new_tool_token(server, tid)
    with open_channel(server, tid, token) as first:
        first.send(hello())
        first.recv(timeout=30)
        with open_channel(server, tid, token) as second:
            code, _ = closed_with(second)
        assert code == 4409


def test_runtime_info_needs_a_live_runtime(server: Server) -> None:
    with server.client() as api:
        r = api.get(f"/api/v1/tasks/{'0' * 32}/runtime")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{server.url}/api/v1/tasks/{'0' * 32}/runtime").status_code == 401
