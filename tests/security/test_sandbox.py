"""Issue 18, isolation by default: what a tool on a sandboxed node agent can reach.

Every test runs real ``flowfed node start`` processes (the default runner, bubblewrap)
against a real embedded server, and real tools that try to get out. A tool reports what it
managed to read; the tests assert it read nothing. Resource limits come from
``SandboxLimits``' defaults (2048 MB, 64 processes and threads).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowfed.artifacts import ArtifactStore
from flowfed.node.agent import node_command
from flowfed.node.runners import python_roots
from flowfed.runtime.remote import RemoteTaskError
from tests.nodes.conftest import Cluster, Node, cluster_factory, make_csv, run, task  # noqa: F401

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

# Tools that try to escape. Paths they must not reach are baked into the file by the test
# (a path in a task's config would be refused by the node's policy before the tool runs).
TOOLS = """
import os
import socket
import subprocess
import time
from pathlib import Path

from flowfed import Context, tool

SECRETS = {secrets!r}


def _try(path: str) -> str | None:
    p = Path(path)
    try:
        if p.is_dir():
            return "listed: " + ",".join(sorted(os.listdir(p)))
        return "read: " + p.read_text(errors="replace")[:200]
    except Exception:
        return None


@tool(version="1", type="database-adapter")
def snoop(ctx: Context) -> dict:
    got = {{path: _try(path) for path in SECRETS}}
    try:
        with socket.create_connection(("127.0.0.1", {port}), timeout=3):
            got["network"] = "connected"
    except OSError as exc:
        got["network"] = None
    own = Path((ctx.dataset or {{}}).get("path", "/nonexistent"))
    got["own dataset"] = own.read_text()[:40]
    got["uid"] = os.getuid()
    got["id -u"] = subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
    return got


@tool(version="1", type="database-adapter")
def fork_bomb() -> int:
    children = 0
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    return children


@tool(version="1", type="database-adapter")
def hog_memory() -> int:
    block = bytearray(4 << 30)  # 4 GiB
    return len(block)


@tool(version="1", type="database-adapter")
def numerics() -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 5)), columns=list("abcde"))
    y = (x["a"] + x["b"] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    return {{"accuracy": float(model.score(x, y))}}


@tool(version="1", type="database-adapter")
def leave_traces(ctx: Context) -> dict:
    seen = {{
        "area": Path("trace.txt").exists(),
        "tmpdir": (Path(os.environ["TMPDIR"]) / "trace.txt").exists(),
        "tmp": Path("/tmp/trace.txt").exists(),
    }}
    Path("trace.txt").write_text("left by a task")
    (Path(os.environ["TMPDIR"]) / "trace.txt").write_text("left by a task")
    Path("/tmp/trace.txt").write_text("left by a task")
    return {{
        "worker": os.readlink("/proc/self/ns/pid") + f" parent {{os.getppid()}}",
        "pid": os.getpid(),
        "seen": seen,
    }}
"""

POLICY = """
share:
  errors: true
  logs: true
"""


def _cluster(
    cluster_factory: Callable[[str], Cluster],  # noqa: F811
    tmp_path: Path,
    secrets: list[str],
) -> Cluster:
    c = cluster_factory(f"sqlite:///{tmp_path / 'server.db'}")
    port = int(c.srv.url.rsplit(":", 1)[1].split("/")[0])
    c.tools.write_text(textwrap.dedent(TOOLS.format(secrets=secrets, port=port)))
    return c


def _start(c: Cluster, name: str, datasets: dict[str, Path]) -> Node:
    policy = c.root / "policy.yaml"
    policy.write_text(POLICY)
    return c.start_node(name, datasets, "sandbox", "--policy", str(policy))


def _output(c: Cluster, name: str, result: Any) -> Any:
    """A task's output read from the node's own store (it does not leave the node)."""
    store = ArtifactStore(str(c.root / f"work-{name}" / "artifacts"))
    return json.loads(store.get(result.outputs["output"].hash))


def _task(name: str, tool: str, dataset: str | None = "mine", run_id: str = "run1") -> Any:
    t = task(name, tool, dataset=dataset)
    t.run_id = run_id
    return t


def test_the_tool_sees_its_dataset_and_nothing_else_of_the_node(
    cluster_factory: Callable[[str], Cluster],  # noqa: F811
    tmp_path: Path,
) -> None:
    mine = make_csv(tmp_path / "mine.csv", "MINE")
    other = make_csv(tmp_path / "other.csv", "OTHER")
    creds = tmp_path / "node-a.json"
    work = tmp_path / "work-node-a"
    secrets = [
        str(creds),  # the node's credentials (the fixture writes them there)
        str(other),  # another dataset of the same node
        str(work / "artifacts"),  # the node's store
        str(work / "audit.jsonl"),
        str(tmp_path / "server.db"),  # the server's database on the same host
        "/etc/shadow",
        "/root",
        "/home",
        str(Path.home()),
        "/work",
    ]
    c = _cluster(cluster_factory, tmp_path, secrets)
    node = _start(c, "node-a", {"mine": mine, "other": other})
    secrets.append(str(node.root))  # the agent's working directory
    # The agent's own folder is known only now: the tools file gets it too. The sandbox
    # binds the file and its worker (started by the first task) imports the new text.
    c.tools.write_text(
        c.tools.read_text().replace("SECRETS = [", f"SECRETS = [{str(node.root)!r}, ", 1)
    )
    result, _ = run(c, _task("node-a", "snoop"))
    got = _output(c, "node-a", result)
    # A folder on the way to the Python installation (/root/.pyenv/…) shows the names of
    # those folders, and nothing else.
    install = {part for root in python_roots() for part in root.parts}

    def leak(seen: str | None) -> bool:
        if seen is None:
            return False
        return not (seen.startswith("listed: ") and set(seen[8:].split(",")) <= install)

    leaked = {path: got.get(path) for path in secrets if leak(got.get(path))}
    assert leaked == {}
    assert got["network"] is None
    assert got["own dataset"].startswith("age,size,label\n40,1.5,MINE0")
    assert got["uid"] == 65534
    assert got["id -u"] == "65534"


def test_fork_bomb_and_4gib_fail_with_a_clear_error_and_numerics_still_work(
    cluster_factory: Callable[[str], Cluster],  # noqa: F811
    tmp_path: Path,
) -> None:
    mine = make_csv(tmp_path / "mine.csv", "MINE")
    c = _cluster(cluster_factory, tmp_path, [])
    _start(c, "node-a", {"mine": mine})

    with pytest.raises(RemoteTaskError) as bomb:
        run(c, _task("node-a", "fork_bomb"))
    assert bomb.value.report["type"] == "BlockingIOError"
    assert "limits a task to 64 processes and threads" in bomb.value.report["message"]

    with pytest.raises(RemoteTaskError) as hog:
        run(c, _task("node-a", "hog_memory"))
    assert hog.value.report["type"] == "MemoryError"
    assert "2048 MB of memory" in hog.value.report["message"]

    # The same worker, after both: numpy, pandas and scikit-learn run inside the limits.
    result, _ = run(c, _task("node-a", "numerics"))
    assert _output(c, "node-a", result)["accuracy"] > 0.9


def test_warm_worker_is_reused_within_a_run_and_dataset_and_nothing_carries_over(
    cluster_factory: Callable[[str], Cluster],  # noqa: F811
    tmp_path: Path,
) -> None:
    mine = make_csv(tmp_path / "mine.csv", "MINE")
    other = make_csv(tmp_path / "other.csv", "OTHER")
    c = _cluster(cluster_factory, tmp_path, [])
    _start(c, "node-a", {"mine": mine, "other": other})

    def traces(dataset: str, run_id: str) -> dict[str, Any]:
        result, _ = run(c, _task("node-a", "leave_traces", dataset, run_id))
        return dict(_output(c, "node-a", result))

    first = traces("mine", "run1")
    second = traces("mine", "run1")
    # One warm sandbox served both tasks of the run, each in a fresh process …
    assert second["worker"] == first["worker"]
    assert second["pid"] != first["pid"]
    # … and what the first one wrote (its area, its TMPDIR, /tmp) was gone for the second.
    assert second["seen"] == {"area": False, "tmpdir": False, "tmp": False}
    # Another run, or another dataset, gets a sandbox of its own.
    assert traces("mine", "run2")["worker"] != first["worker"]
    assert traces("other", "run1")["worker"] != first["worker"]


def test_node_start_refuses_without_bubblewrap_unless_insecure(
    cluster_factory: Callable[[str], Cluster],  # noqa: F811
    tmp_path: Path,
) -> None:
    c = _cluster(cluster_factory, tmp_path, [])
    mine = make_csv(tmp_path / "mine.csv", "MINE")
    nobwrap = tmp_path / "bin"
    nobwrap.mkdir()
    env = {**os.environ, "PATH": str(nobwrap), "PYTHONUNBUFFERED": "1"}
    base = node_command("node-a", c.srv.url, c.credentials("node-a"), {"mine": mine})

    proc = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "apt-get install bubblewrap" in proc.stderr
    assert c.hub.nodes().get("node-a") is None or not c.hub.nodes()["node-a"].online

    # Without isolation only when asked for explicitly.
    creds = c.credentials("node-a")
    cmd = node_command("node-a", c.srv.url, creds, {"mine": mine}, runner="inprocess")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--insecure" in proc.stderr

    log = tmp_path / "insecure.log"
    cmd = node_command(
        "node-a", c.srv.url, c.credentials("node-a"), {"mine": mine},
        runner="inprocess", insecure=True, work_dir=tmp_path / "work-insecure",
    )  # fmt: skip
    with open(log, "wb") as out:
        started = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=tmp_path)
    c.nodes.append(Node("node-a", started, tmp_path, log))
    c.wait_online("node-a", c.nodes[-1])
    assert "INSECURE" in log.read_text()
