"""Development mode end to end: a real server, a real `flowfed tool dev` process, real
WebSockets, and `flowfed tool exec|config|sessions` as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.polling import wait_for
from tests.server.conftest import Server
from tests.tooldev.conftest import Proc, env_of, server_log

TOOLS = '''
from flowfed import Context, tool


@tool(version="1", type="analysis")
def train(xs: list, ctx: Context, *, lr: float = 0.1, epochs: int = 2, boom: bool = False) -> dict:
    """A toy trainer: its loss halves every epoch."""
    ctx.log(f"training on {len(xs)} rows with lr={lr}")
    loss = 1.0
    for epoch in range(epochs):
        loss *= 0.5
        ctx.metric("loss", loss, step=epoch)
        ctx.progress((epoch + 1) / epochs, message=f"epoch {epoch + 1}")
    if boom:
        raise RuntimeError("exploded on purpose")
    return {"weights": [x * lr for x in xs], "loss": loss, "version": "v1"}
'''


class Dev:
    """A running `flowfed tool dev` and the session it opened."""

    def __init__(self, server: Server, root: Path, *extra: str) -> None:
        self.server = server
        self.root = root
        self.proc = Proc(
            [
                "-m", "flowfed", "tool", "dev", "tools.py:train",
                "--server", server.url, "--token", server.token, *extra,
            ],
            root,
            env_of(server),
            "dev",
        )  # fmt: skip
        self.proc.wait_for("waiting for executions")
        self.id = self.proc.out.split("dev session ", 1)[1].split(":", 1)[0]

    def ff(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowfed", *args, "--server", self.server.url,
             "--token", self.server.token],
            cwd=self.root,
            env=env_of(self.server),
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.server.token}"}
        url = f"{self.server.url}/api/v1/dev-sessions/{self.id}{path}"
        return httpx.request(method, url, headers=headers, timeout=60, **kw)


@pytest.fixture
def start_dev(server: Server, tmp_path: Path) -> Iterator[Callable[..., Dev]]:
    started: list[Dev] = []
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "xs.json").write_text("[1, 2, 3]")

    def start(*extra: str) -> Dev:
        dev = Dev(server, tmp_path, *extra)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.proc.stop()


def test_the_session_is_listed_with_its_tool_idle_in_initialized(
    start_dev: Callable[..., Dev],
) -> None:
    dev = start_dev()
    res = dev.ff("tool", "sessions", "--json")
    assert res.returncode == 0, res.stderr
    mine = {s["id"]: s for s in json.loads(res.stdout)}[dev.id]
    assert mine["connected"] is True and mine["state"] == "initialized"
    assert mine["tool"]["name"] == "train" and mine["tool"]["type"] == "analysis"
    assert set(mine["tool"]["config_schema"]["properties"]) == {"lr", "epochs", "boom"}
    assert mine["runtime"]["pid"] == dev.proc.proc.pid  # no isolation: the dev process itself


def test_exec_follow_streams_the_live_output_and_the_execution_is_recorded(
    start_dev: Callable[..., Dev],
) -> None:
    dev = start_dev()
    res = dev.ff(
        "tool", "exec", dev.id, "--param", "epochs=3", "--input", "xs=@xs.json", "--follow"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "status initialized -> started" in out
    assert "log    training on 3 rows with lr=0.1" in out
    assert "metric loss = 0.125 (step 2)" in out
    assert "progress 100% epoch 3" in out
    assert "output output (json" in out, out
    assert '"loss": 0.125' in out
    assert out.rstrip().endswith(": finished")
    # The dev process printed the same execution as it happened.
    dev.proc.wait_for("--- execution 1 ---")
    dev.proc.wait_for("status running -> finished")
    assert "metric loss = 0.25 (step 1)" in dev.proc.out

    eid = out.rstrip().rsplit("execution ", 1)[1].split(":")[0]
    ex = dev.api("GET", f"/executions/{eid}").json()
    assert ex["state"] == "finished" and ex["params"] == {"epochs": 3}
    assert [m["value"] for m in ex["metrics"]] == [0.5, 0.25, 0.125]
    assert ex["logs"][0]["message"] == "training on 3 rows with lr=0.1"
    assert ex["outputs"]["output"]["value"] == {
        "weights": [0.1, 0.2, 0.30000000000000004], "loss": 0.125, "version": "v1"
    }  # fmt: skip
    assert [t["dst"] for t in ex["transitions"]] == ["started", "running", "finished"]


def test_the_tool_is_ready_again_after_each_execution(start_dev: Callable[..., Dev]) -> None:
    dev = start_dev()
    ids = []
    for n in (1, 2, 3):
        r = dev.api("POST", "/executions", json={"params": {"epochs": n}, "inputs": {"xs": [n]}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    # Queued while the tool was busy, each runs in turn.
    for eid, n in zip(ids, (1, 2, 3), strict=True):
        ex = wait_for(
            f"execution {eid}",
            lambda eid=eid: (e := dev.api("GET", f"/executions/{eid}").json())["ended_at"] and e,
            timeout=30,
        )
        assert ex["state"] == "finished"
        assert ex["outputs"]["output"]["value"]["loss"] == 0.5**n
    dev.proc.wait_for("--- execution 3 ---")


def test_a_bad_config_is_a_structured_error_and_a_good_one_is_used_next(
    start_dev: Callable[..., Dev],
) -> None:
    dev = start_dev()
    r = dev.api("POST", "/config", json={"values": {"lr": "fast", "epochs": -1.5}})
    assert r.status_code == 422
    problem = r.json()
    assert problem["type"] == "urn:flowfed:problem:invalid-config"
    assert "invalid config for tool 'train'" in problem["detail"]
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"config.lr", "config.epochs"}
    # The CLI shows the same, one field per line.
    res = dev.ff("tool", "config", dev.id, "--set", "lr=fast")
    assert res.returncode == 1
    assert "HTTP 422" in res.stderr and "config.lr:" in res.stderr
    # The tool kept its config and stays idle; a valid update is applied...
    res = dev.ff("tool", "config", dev.id, "--set", "lr=2", "--set", "epochs=1")
    assert res.returncode == 0, res.stderr
    assert "config revision 2" in res.stdout
    dev.proc.wait_for("config revision 2 applied")
    # ...and used by the next execution, and kept over the tool's reconnections.
    for _ in range(2):
        res = dev.ff("tool", "exec", dev.id, "--input", "xs=[5]", "--follow", "--json")
        assert res.returncode == 0, res.stderr
        ex = json.loads(res.stdout)
        assert ex["outputs"]["output"]["value"]["weights"] == [10.0]


def test_a_failing_execution_reports_its_traceback_and_the_session_goes_on(
    start_dev: Callable[..., Dev],
) -> None:
    dev = start_dev()
    res = dev.ff("tool", "exec", dev.id, "--param", "boom=true", "--input", "xs=[1]", "--follow")
    assert res.returncode == 1
    assert "error  RuntimeError: exploded on purpose" in res.stdout, res.stdout
    assert 'raise RuntimeError("exploded on purpose")' in res.stdout
    assert res.stdout.rstrip().endswith(": error")
    dev.proc.wait_for("error  RuntimeError: exploded on purpose")
    # A missing input is refused by the tool's Started-phase validation.
    res = dev.ff("tool", "exec", dev.id, "--follow")
    assert res.returncode == 1
    assert "inputs.xs: input missing" in res.stdout
    res = dev.ff("tool", "exec", dev.id, "--input", "xs=[1]", "--follow")
    assert res.returncode == 0, res.stdout


def test_reload_picks_up_edits_between_executions(
    start_dev: Callable[..., Dev], tmp_path: Path
) -> None:
    dev = start_dev("--reload")
    res = dev.ff("tool", "exec", dev.id, "--input", "xs=[1]", "--follow", "--json")
    assert json.loads(res.stdout)["outputs"]["output"]["value"]["version"] == "v1"
    (tmp_path / "tools.py").write_text(TOOLS.replace('"version": "v1"', '"version": "v2"'))
    # Edited while the tool sits idle: the next execution runs the new code.
    res = dev.ff("tool", "exec", dev.id, "--input", "xs=[1]", "--follow", "--json")
    assert json.loads(res.stdout)["outputs"]["output"]["value"]["version"] == "v2"
    assert "reloaded tools.py" in dev.proc.out


def test_sessions_are_private_to_the_token_that_opened_them(
    start_dev: Callable[..., Dev], server: Server
) -> None:
    dev = start_dev()
    other = server.new_token("--name", "someone-else", "--role", "user")["token"]
    headers = {"Authorization": f"Bearer {other}"}
    base = f"{server.url}/api/v1/dev-sessions"
    assert httpx.get(f"{base}/{dev.id}", headers=headers).status_code == 404
    assert httpx.post(f"{base}/{dev.id}/executions", json={}, headers=headers).status_code == 404
    assert dev.id not in [s["id"] for s in httpx.get(base, headers=headers).json()]
    assert httpx.get(base).status_code == 401
    ws = server.url.replace("http", "ws", 1) + f"/api/v1/dev-sessions/{dev.id}/runtime"
    for token, code in ((other, 4404), (None, 4401)):
        extra = {"Authorization": f"Bearer {token}"} if token else {}
        with connect(ws, additional_headers=extra) as conn, pytest.raises(ConnectionClosed) as info:
            conn.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == code
    assert f"tool runtime refused: dev session {dev.id}" in server_log(server)


def test_a_second_tool_on_a_connected_session_is_refused(
    start_dev: Callable[..., Dev], server: Server
) -> None:
    dev = start_dev()
    ws = server.url.replace("http", "ws", 1) + f"/api/v1/dev-sessions/{dev.id}/runtime"
    auth = {"Authorization": f"Bearer {server.token}"}
    with connect(ws, additional_headers=auth) as conn, pytest.raises(ConnectionClosed) as info:
        conn.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4409


def test_deleting_the_session_ends_the_dev_process(start_dev: Callable[..., Dev]) -> None:
    dev = start_dev()
    assert dev.api("DELETE", "").status_code == 204
    assert dev.proc.proc.wait(30) == 0
    assert "ended by the server" in dev.proc.out
    assert dev.api("GET", "").status_code == 404


def test_exec_errors_are_one_line(start_dev: Callable[..., Dev], tmp_path: Path) -> None:
    dev = start_dev()
    res = dev.ff("tool", "exec", "nosuchsession")
    assert res.returncode == 1 and "HTTP 404: no dev session 'nosuchsession'" in res.stderr
    res = dev.ff("tool", "exec", dev.id, "--input", "xs=@missing.json")
    assert res.returncode == 2 and "--input xs: cannot read missing.json" in res.stderr
    res = dev.ff("tool", "exec", dev.id, "--input", "xs=[1,")
    assert res.returncode == 2 and "--input xs: not JSON" in res.stderr
    assert "Traceback" not in res.stderr


def test_dev_with_a_bad_tool_or_server_fails_with_one_line(server: Server, tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(TOOLS)
    env = env_of(server)
    base = [sys.executable, "-m", "flowfed", "tool", "dev"]
    res = subprocess.run(
        [*base, "tools.py:nope", "--server", server.url, "--token", server.token],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2 and "has no function 'nope'" in res.stdout
    res = subprocess.run(
        [*base, "tools.py:train", "--server", server.url, "--token", "ffu_bad.bad"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1 and "HTTP 401" in res.stdout
    res = subprocess.run(
        [*base, "tools.py:train", "--server", server.url, "--token", server.token,
         "--config", "lr=fast"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert "error  ConfigError: invalid config for tool 'train'" in res.stdout
    assert "the tool could not start" in res.stdout


def test_the_dev_client_stays_light() -> None:
    code = "import sys, json, flowfed.runtime.devmode; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    forbidden = ("flowfed.server", "flowfed.db", "flowfed.engine", "sqlalchemy", "fastapi")
    assert sorted(m for m in loaded if m.startswith(forbidden)) == []
    assert "flowfed.runtime.devmode" in loaded


def test_ctrl_c_closes_the_session_and_executions_are_refused(
    start_dev: Callable[..., Dev],
) -> None:
    import signal

    dev = start_dev()
    dev.proc.proc.send_signal(signal.SIGINT)
    assert dev.proc.proc.wait(30) == 0
    assert "dev session closed" in dev.proc.out

    def offline() -> bool:
        return dev.api("GET", "").json()["connected"] is False

    wait_for("the session to go offline", offline, timeout=30)
    r = wait_for(
        "executions to be refused",
        lambda: (resp := dev.api("POST", "/executions", json={})).status_code == 409 and resp,
        timeout=30,
    )
    assert "is `flowfed tool dev` running?" in r.json()["detail"]
