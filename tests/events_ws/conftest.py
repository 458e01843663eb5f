"""A real `flowfed server` subprocess (or two) for the live-event tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.polling import free_port

TOOLS = """
import time
from flowfed import tool, Context

@tool(version="1", type="database-adapter")
def ticker(ctx: Context, *, n: int = 5, pause: float = 0.1) -> int:
    for i in range(1, n + 1):
        ctx.log(f"tick {i}")
        ctx.metric("loss", 1.0 / i, step=i)
        ctx.progress(i, n, f"Round {i}/{n}")
        time.sleep(pause)
    return n

@tool(version="1", type="data-transformation")
def double(x: int) -> int:
    return 2 * x
"""

FLOW = """
name: Live Events Flow
imports: [tools.py]
config: {n: 5, pause: 0.1}
steps:
  - {name: Train, tool: ticker, params: {n: "${config.n}", pause: "${config.pause}"}, outputs: [x]}
  - {name: Package, tool: double, inputs: {x: x}, outputs: [y]}
"""


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[str]
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def ff(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "FLOWFED_SERVER": self.url, "FLOWFED_TOKEN": self.token}
        return subprocess.run(
            [sys.executable, "-m", "flowfed", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _start(
    root: Path, env: dict[str, str], database_url: str, broker: str, *extra: str
) -> tuple[str, subprocess.Popen[str]]:
    """Start ``flowfed server`` (with ``extra`` options) and wait until it answers."""
    port = free_port()
    log = open(root / f"server-{port}.log", "w")  # noqa: SIM115 — closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowfed",
            "server",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--artifacts-url",
            str(root / "artifacts"),
            "--broker-url",
            broker,
            "--import",
            str(root / "tools.py"),
            *extra,
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError((root / f"server-{port}.log").read_text())
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                "server did not start:\n" + (root / f"server-{port}.log").read_text()
            )
        time.sleep(0.1)


def start_servers(
    root: Path, database_url: str, broker: str = "memory://", count: int = 1
) -> Iterator[list[Server]]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tools.py").write_text(textwrap.dedent(TOOLS))
    (root / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    env = {**os.environ, "FLOWFED_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWFED_SERVER", None)
    env.pop("FLOWFED_TOKEN", None)
    up = subprocess.run(
        [sys.executable, "-m", "flowfed", "db", "upgrade"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert up.returncode == 0, up.stderr
    made = subprocess.run(
        [sys.executable, "-m", "flowfed", "auth", "token", "create", "--name", "tests", "--json"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    servers: list[Server] = []
    try:
        for _ in range(count):
            url, proc = _start(root, env, database_url, broker)
            servers.append(Server(url, token, proc, root, env))
        yield servers
    finally:
        for s in servers:
            s.proc.terminate()
        for s in servers:
            try:
                s.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                s.proc.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    gen = start_servers(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv.db'}")
    yield next(gen)[0]
    next(gen, None)


def broker_url(kind: str) -> str:
    prefix = f"flowfedtest{uuid.uuid4().hex[:10]}"
    return {
        "redis": f"redis://127.0.0.1:6379/0?prefix={prefix}",
        "nats": f"nats://127.0.0.1:4222?prefix={prefix}",
    }[kind]
