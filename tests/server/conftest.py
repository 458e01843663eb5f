"""Fixtures that start a real ``flowfed server`` subprocess and drive it over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

TOOLS = """
import time
from pathlib import Path
from flowfed import Context, register_task, tool


@tool(version="1", type="database-adapter")
def numbers(ctx: Context, *, n: int = 5) -> list:
    ctx.log(f"making {n} numbers")
    ctx.log("done")
    return list(range(n))


@tool(version="1", type="preprocessing")
def scale(xs: list, ctx: Context, *, factor: float = 2.0) -> list:
    ctx.metric("count", len(xs))
    return [x * factor for x in xs]


@tool(version="1", type="evaluation")
def total(xs: list, ctx: Context) -> dict:
    ctx.metric("total", sum(xs))
    ctx.metric("total", sum(xs) + 1, step=2)
    return {"total": sum(xs)}


@tool(version="1", type="preprocessing")
def flaky(xs: list, *, marker: str) -> list:
    # Fails while the marker file exists: "fixing" the tool is deleting the file.
    if Path(marker).exists():
        raise RuntimeError("flaky is broken")
    return xs


@tool(version="1", type="database-adapter")
def slow(ctx: Context, *, seconds: float = 60.0):  # type: ignore[no-untyped-def]
    # No return annotation (unchecked between steps): tests wire its output into any
    # step only to make that step wait for it; it is always cancelled before it returns.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
        ctx.check_cancelled()
    return 1


@register_task("task1")
async def fetch(context):
    return {"status": "success", "data": {"records": [1, 2, 3]}, "error": None}


@register_task("task2")
async def process(context):
    previous = context["task1_result"]["data"]["records"]
    return {"status": "success", "data": {"processed": [r * 10 for r in previous]}, "error": None}


@register_task
async def task3(context):
    processed = context["task2_result"]["data"]["processed"]
    return {"status": "success", "data": {"stored": len(processed)}, "error": None}


@register_task("task2_broken")
async def broken(context):
    return {"status": "failure", "data": None, "error": "disk full"}
"""


def seed_flow(task2_tool: str = "task2") -> dict[str, Any]:
    """Seed 003's sample flow; ``task2_tool`` picks the tool behind task2."""
    task2: dict[str, Any] = {"name": "task2", "description": "Process data"}
    if task2_tool != "task2":
        task2["tool"] = task2_tool
    return {
        "flow": {
            "id": "flow123",
            "name": "Data processing flow",
            "start_task": "task1",
            "tasks": [
                {"name": "task1", "description": "Fetch data"},
                task2,
                {"name": "task3", "description": "Store data"},
            ],
            "conditions": [
                {
                    "name": "condition_task1_result",
                    "source_task": "task1",
                    "outcome": "success",
                    "target_task_success": "task2",
                    "target_task_failure": "end",
                },
                {
                    "name": "condition_task2_result",
                    "source_task": "task2",
                    "outcome": "success",
                    "target_task_success": "task3",
                    "target_task_failure": "end",
                },
            ],
        }
    }


@dataclass
class Server:
    """A running ``flowfed server`` subprocess and what it takes to talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    env: dict[str, str]
    db_url: str
    token: str = ""
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None, auth: bool = True) -> httpx.Client:
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {token or self.token}"
        c = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    def ff(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return flowfed(self.root, self.env, *args, check=check)

    def new_token(self, *extra: str) -> dict[str, Any]:
        res = self.ff("auth", "token", "create", "--json", "--database-url", self.db_url, *extra)
        return dict(json.loads(res.stdout))

    def wait_run(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        c = self.client()
        deadline = time.monotonic() + timeout
        while True:
            r = c.get(f"/api/v1/runs/{run_id}")
            assert r.status_code == 200, r.text
            run = dict(r.json())
            if run["status"] != "running":
                return run
            assert time.monotonic() < deadline, f"run {run_id} still running"
            time.sleep(0.05)


def flowfed(
    root: Path, env: dict[str, str], *args: str, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in ``root``."""
    res = subprocess.run(
        [sys.executable, "-m", "flowfed", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check is not None:
        assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def project_env(root: Path, db_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["FLOWFED_HOME"] = str(root / ".flowfed")
    env["FLOWFED_DATABASE_URL"] = db_url
    env["FLOWFED_ARTIFACTS_URL"] = str(root / "artifacts")
    env.pop("FLOWFED_SERVER", None)
    env.pop("FLOWFED_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(
    root: Path, db_url: str, *args: str, upgrade: bool = True, tools: str = TOOLS
) -> Server:
    """``flowfed db upgrade``, a token, then ``flowfed server --port 0`` until it answers
    (with ``tools``, the source of a tools file, imported)."""
    root.mkdir(parents=True, exist_ok=True)
    tools_dir = root / "tooldir"
    tools_dir.mkdir(exist_ok=True)
    (tools_dir / "server_tools.py").write_text(textwrap.dedent(tools))
    env = project_env(root, db_url)
    if upgrade:
        flowfed(root, env, "db", "upgrade")
    out, err = open(root / "server.out", "wb"), open(root / "server.err", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowfed",
            "server",
            "--port",
            "0",
            "--database-url",
            db_url,
            "--import",
            str(tools_dir / "server_tools.py"),
            *args,
        ],
        cwd=root,
        env=env,
        stdout=out,
        stderr=err,
    )
    server = Server(proc, "", root, env, db_url)
    deadline = time.monotonic() + 60
    while not server.url:
        text = (root / "server.out").read_text()
        if "listening on " in text:
            server.url = text.split("listening on ", 1)[1].split()[0]
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise AssertionError(f"server did not start:\n{(root / 'server.err').read_text()}")
        time.sleep(0.05)
    while True:  # listening is not serving yet: wait for the lifespan to finish
        try:
            if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (root / "server.err").read_text()
        time.sleep(0.05)
    server.token = server.new_token("--name", "tests", "--role", "admin")["token"]
    return server


def stop(server: Server) -> None:
    for c in server.clients:
        c.close()
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers for this test (stopped at its end)."""
    started: list[Server] = []

    def make(db_url: str | None = None, *args: str, name: str = "srv") -> Server:
        root = tmp_path / name
        url = db_url or f"sqlite:///{root / 'flowfed.db'}"
        s = start_server(root, url, *args)
        started.append(s)
        return s

    yield make
    for s in started:
        stop(s)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite-backed server shared by a module's tests."""
    root = tmp_path_factory.mktemp("server")
    s = start_server(root, f"sqlite:///{root / 'flowfed.db'}")
    yield s
    stop(s)


@pytest.fixture
def api(server: Server) -> httpx.Client:
    """An authenticated client of the shared server."""
    return server.client()
