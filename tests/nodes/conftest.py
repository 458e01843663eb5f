"""A real server (embedded uvicorn thread) and real ``flowfed node start`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowfed.db import Database
from flowfed.node.agent import node_command
from flowfed.runtime.remote import RemoteInput, RemoteResult, RemoteTask
from flowfed.server.embedded import EmbeddedServer, start_embedded_server
from flowfed.server.nodes import add_node

HEARTBEAT_S = 0.5

TOOLS = """
import os
import socket
import time
from pathlib import Path

import pandas as pd

from flowfed import Context, tool


@tool(version="1", type="evaluation")
def summarize(table: pd.DataFrame, ctx: Context) -> dict:
    ctx.metric("rows", len(table))
    ctx.log(f"summarizing {len(table)} rows on {ctx.node}")
    return {"rows": len(table), "node": ctx.node, "columns": list(table.columns)}


@tool(version="1", type="preprocessing")
def double(table: pd.DataFrame) -> pd.DataFrame:
    return table * 2


@tool(version="1", type="database-adapter")
def boom() -> int:
    raise RuntimeError("boom from the tool")


@tool(version="1", type="database-adapter")
def exit3() -> int:
    os._exit(3)


@tool(version="1", type="database-adapter")
def hang(ctx: Context, *, seconds: float = 600.0) -> int:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return 1


@tool(version="1", type="database-adapter")
def slow(ctx: Context, *, seconds: float = 5.0, marker: str = "") -> int:
    # A marker is a file NAME in the test's marker folder: a path in a config would be
    # refused by the node's policy (rule data.paths) before the tool ever ran.
    if marker:
        (Path(os.environ["FLOWFED_TEST_MARKERS"]) / marker).write_text("started")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        ctx.check_cancelled()
    return 7


@tool(version="1", type="database-adapter")
def garbage() -> object:
    return object()


@tool(version="1", type="database-adapter")
def connect(*, host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=5):
        pass
    return "connected"


@tool(version="1", type="database-adapter")
def write_file(*, path: str) -> str:
    Path(path).write_text("escaped")
    return "written"


@tool(version="1", type="evaluation")
def scribble(table: pd.DataFrame) -> dict:
    # Reports what it was given, then changes its input in place, as careless tools do.
    seen = {"age_sum": int(table["age"].sum()), "columns": list(table.columns)}
    table["age"] = 0
    table["scribbled"] = True
    return seen


@tool(version="1", type="database-adapter")
def dataset_info(ctx: Context) -> dict:
    ds = ctx.dataset or {}
    return {"name": ds.get("name"), "rows": ds.get("rows"), "round": ctx.round}
"""


def make_csv(path: Path, marker: str, rows: int = 5) -> Path:
    """A CSV whose every row carries ``marker`` in a text column (to look for leaks)."""
    lines = ["age,size,label"]
    for i in range(rows):
        lines.append(f"{40 + i},{1.5 + i},{marker}{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Node:
    """A ``flowfed node start`` subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    root: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    """The embedded server, its database and the node agents started for a test."""

    srv: EmbeddedServer
    db_url: str
    root: Path
    tools: Path
    nodes: list[Node] = field(default_factory=list)
    creds: dict[str, Path] = field(default_factory=dict)

    @property
    def hub(self) -> Any:
        return self.srv.hub

    def credentials(self, name: str) -> Path:
        if name not in self.creds:
            db = Database(self.db_url)
            try:
                created = add_node(db, name)
            finally:
                db.close()
            path = self.root / f"{name}.json"
            path.write_text(json.dumps({"name": name, "token": created.token}))
            self.creds[name] = path
        return self.creds[name]

    def token(self, name: str) -> str:
        return str(json.loads(self.credentials(name).read_text())["token"])

    def start_node(
        self,
        name: str,
        datasets: dict[str, Path] | None = None,
        runner: str = "inprocess",
        *extra: str,
        wait: bool = True,
        creds: Path | None = None,
    ) -> Node:
        root = self.root / f"node-{name}-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        args = node_command(
            name,
            self.srv.url,
            creds or self.credentials(name),
            dict(datasets or {}),
            runner=runner,
            work_dir=self.root / f"work-{name}",
            imports=[str(self.tools)],
            # The tests chose a runner without isolation explicitly.
            insecure=runner in ("inprocess", "subprocess"),
        )
        args += list(extra)
        log_path = root / "node.log"
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        (self.root / "markers").mkdir(exist_ok=True)
        env["FLOWFED_TEST_MARKERS"] = str(self.root / "markers")
        with open(log_path, "wb") as f:
            proc = subprocess.Popen(args, cwd=root, env=env, stdout=f, stderr=f)
        node = Node(name, proc, root, log_path)
        self.nodes.append(node)
        if wait:
            self.wait_online(name, node)
        return node

    def wait_online(self, name: str, node: Node | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (name in self.hub.nodes() and self.hub.nodes()[name].online):
            if node is not None and node.proc.poll() is not None:
                raise AssertionError(f"node {name} exited:\n{node.log()}")
            assert time.monotonic() < deadline, f"node {name} not online:\n" + (
                node.log() if node else ""
            )
            time.sleep(0.05)

    def wait_offline(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.hub.nodes().get(name) is not None and self.hub.nodes()[name].online:
            assert time.monotonic() < deadline, f"node {name} still online"
            time.sleep(0.05)


def task(
    node: str,
    tool: str,
    *,
    dataset: str | None = None,
    config: dict[str, Any] | None = None,
    inputs: dict[str, RemoteInput | list[RemoteInput]] | None = None,
    outputs: dict[str, str] | None = None,
    shareable: list[str] | None = None,
    timeout: float | None = 60,
    task_id: str | None = None,
) -> RemoteTask:
    """A RemoteTask as the engine would build it."""
    return RemoteTask(
        run_id="run1",
        task_id=task_id or uuid.uuid4().hex,
        node=node,
        dataset=dataset,
        tool=tool,
        tool_version="1",
        config=config or {},
        inputs=inputs or {},
        outputs=outputs if outputs is not None else {"output": "out"},
        shareable=shareable or [],
        timeout=timeout,
        step="step",
    )


def run(
    cluster: Cluster, t: RemoteTask, cancel: threading.Event | None = None
) -> tuple[RemoteResult, list[tuple[str, dict[str, Any]]]]:
    """hub.run_task from a worker thread, as the engine calls it; result and telemetry."""
    seen: list[tuple[str, dict[str, Any]]] = []
    result = cluster.hub.run_task(t, lambda k, p: seen.append((k, p)), cancel or threading.Event())
    return result, seen


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    made: list[Cluster] = []

    def make(db_url: str) -> Cluster:
        db = Database(db_url)
        db.ensure_schema(auto_upgrade=True)
        db.close()
        tools = tmp_path / "node_tools.py"
        tools.write_text(textwrap.dedent(TOOLS))
        srv = start_embedded_server(
            db_url, str(tmp_path / "central-artifacts"), heartbeat_s=HEARTBEAT_S
        )
        c = Cluster(srv, db_url, tmp_path, tools)
        made.append(c)
        return c

    yield make
    for c in made:
        for n in c.nodes:
            if n.proc.poll() is None:
                n.proc.terminate()
                try:
                    n.proc.wait(10)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
        c.srv.stop()


@pytest.fixture
def cluster(cluster_factory: Callable[[str], Cluster], tmp_path: Path) -> Cluster:
    """On SQLite (the data-locality test also runs on PostgreSQL)."""
    return cluster_factory(f"sqlite:///{tmp_path / 'server.db'}")


@pytest.fixture
def db_url_pg(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    return pg_database
