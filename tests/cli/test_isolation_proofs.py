"""Isolated runners, end to end through `flowfed run --executor ...`: a tool that dies,
hangs or tries to escape ends in Error, and the error says which."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowfed.executors.isolated import container_command, container_engine
from tests.cli.conftest import Project, by_step

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)
RUNNERS = ["subprocess", pytest.param("sandbox", marks=needs_bwrap)]

TOOLS = """
import os
import signal
import socket
from pathlib import Path

from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def dial(ctx: Context, *, port: int) -> str:
    ctx.log(f"dialling 127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"hello from the tool")
    return "connected"


@tool(version="1", type="database-adapter")
def scribble(ctx: Context, *, target: str) -> str:
    Path(target).write_text("escaped")
    return "written"


@tool(version="1", type="database-adapter")
def quit_early(ctx: Context) -> int:
    print("quit_early: giving up with code 5", flush=True)
    import sys
    sys.stderr.write("quit_early: about to exit\\n")
    sys.stderr.flush()
    os._exit(5)


@tool(version="1", type="database-adapter")
def freeze(ctx: Context) -> int:
    ctx.log("freezing")
    import sys
    sys.stderr.write("freeze: stopping myself\\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
    return 1


@tool(version="1", type="database-adapter")
def fine(ctx: Context) -> int:
    return 1
"""


def flow(tool: str, params: str = "{}") -> str:
    return f"""
name: proof
imports: [tools.py]
steps:
  - name: s
    tool: {tool}
    params: {params}
    outputs: [out]
"""


def run(project: Project, tool: str, runner: str, params: str = "{}", check: int = 1) -> dict:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", flow(tool, params))
    report = project.run_json("flow.yaml", "--executor", runner, check=check)
    return dict(report)


def task_of(report: dict) -> dict:
    return dict(by_step(report)["s"]["tasks"][-1])


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A real TCP server on the host's loopback, recording what reaches it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                got.append(conn.recv(100))

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    srv.close()


# --- the sandbox denies the network and writes outside its working directory ----------


def test_subprocess_tool_can_open_a_socket(
    project: Project, listener: tuple[int, list[bytes]]
) -> None:
    port, got = listener
    report = run(project, "dial", "subprocess", f"{{port: {port}}}", check=0)
    assert report["status"] == "success", report
    assert got == [b"hello from the tool"]


@needs_bwrap
def test_sandboxed_tool_cannot_open_a_socket(
    project: Project, listener: tuple[int, list[bytes]]
) -> None:
    port, got = listener
    report = run(project, "dial", "sandbox", f"{{port: {port}}}")
    assert report["status"] == "failed"
    task = task_of(report)
    assert task["status"] == "error"
    # A fresh network namespace: 127.0.0.1 is an interface that is down, not the host's.
    assert task["error"]["type"] in ("OSError", "ConnectionRefusedError"), task["error"]
    assert (
        "Network is unreachable" in task["error"]["message"]
        or "refused" in (task["error"]["message"])
    )
    assert "socket.create_connection" in task["error"]["traceback"]
    assert got == []


@needs_bwrap
@pytest.mark.parametrize("where", ["project", "home", "var_tmp"])
def test_sandboxed_tool_cannot_write_outside_its_workdir(project: Project, where: str) -> None:
    target = {
        "project": project.root / "escaped.txt",
        "home": Path.home() / f"flowfed-escaped-{os.getpid()}.txt",
        "var_tmp": Path("/var/tmp") / f"flowfed-escaped-{os.getpid()}.txt",
    }[where]
    report = run(project, "scribble", "sandbox", f"{{target: '{target}'}}")
    assert report["status"] == "failed"
    task = task_of(report)
    assert task["error"]["type"] == "OSError", task["error"]
    assert "Read-only file system" in task["error"]["message"]
    assert not target.exists()


# --- a tool that dies, exits or hangs ends in Error with its exit code and stderr -----


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_tool_that_dies_before_connecting_is_an_error_with_its_stderr(
    project: Project, runner: str
) -> None:
    # A broken interpreter set-up: site-packages code that kills the tool process (it
    # only acts where the runner put a tool token, so the CLI itself starts normally).
    boot = project.root / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('FLOWFED_TOOL_TOKEN'):\n"
        "    sys.stderr.write('sitecustomize: this interpreter is broken\\n')\n"
        "    sys.stderr.flush()\n"
        "    os._exit(7)\n"
    )
    project.env["PYTHONPATH"] = os.pathsep.join(
        [str(boot), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    report = run(project, "fine", runner)
    err = task_of(report)["error"]
    assert err["type"] == "ProcessExited"
    assert "exited before connecting (exit code 7)" in err["message"]
    assert "sitecustomize: this interpreter is broken" in err["message"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_tool_that_exits_non_zero_is_an_error_with_its_code_and_stderr(
    project: Project, runner: str
) -> None:
    report = run(project, "quit_early", runner)
    err = task_of(report)["error"]
    assert err["type"] == "ProcessExited"
    assert "exited while running without a result (exit code 5)" in err["message"]
    assert "quit_early: about to exit" in err["message"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_tool_that_stops_answering_heartbeats_is_killed_and_an_error(
    project: Project, runner: str
) -> None:
    project.env["FLOWFED_HEARTBEAT_S"] = "0.5"
    report = run(project, "freeze", runner)
    err = task_of(report)["error"]
    assert err["type"] == "HeartbeatTimeout"
    assert "stopped answering heartbeats" in err["message"]
    assert "(exit code -9)" in err["message"]
    assert "freeze: stopping myself" in err["message"]


# --- the container runner -------------------------------------------------------------


def test_container_command_has_the_sandbox_contract(tmp_path: Path) -> None:
    wd = tmp_path / "work"
    src = tmp_path / "src"
    cmd = container_command(
        "/usr/bin/podman",
        "registry.example/flowfed-runtime:1",
        wd,
        name="flowfed-abc",
        readable=[src, wd],
        cpus="0.5",
        memory="256m",
        env={"TMPDIR": f"{wd}/tmp"},
    )
    # Rootless podman keeps the caller's uid inside (the control socket is 0600).
    keep_id = ["--userns", "keep-id"] if os.getuid() != 0 else []
    assert cmd == [
        "/usr/bin/podman", "run", "--rm",
        "--pull", "never",
        "--name", "flowfed-abc",
        "--read-only",
        "--network", "none",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--pids-limit", "512",
        "--cpus", "0.5",
        "--memory", "256m",
        "--user", f"{os.getuid()}:{os.getgid()}",
        "--tmpfs", "/tmp:rw,nosuid,nodev",
        "--volume", f"{wd}:{wd}:rw",
        "--workdir", str(wd),
        *keep_id,
        "--volume", f"{src}:{src}:ro",
        "--env", "FLOWFED_TOOL_TOKEN",  # by name: the value never reaches the command line
        "--env", f"TMPDIR={wd}/tmp",
        "registry.example/flowfed-runtime:1",
    ]  # fmt: skip


def test_container_engine_is_overridable_and_must_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWFED_CONTAINER_ENGINE", "/bin/true")
    assert container_engine() == "/bin/true"
    monkeypatch.setenv("FLOWFED_CONTAINER_ENGINE", str(tmp_path / "no-such-engine"))
    with pytest.raises(RuntimeError, match="FLOWFED_CONTAINER_ENGINE names"):
        container_engine()


def _engine_answers() -> str | None:
    """The installed engine if it serves requests (a client binary without a daemon does not)."""
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path is None:
            continue
        done = subprocess.run([path, "info"], capture_output=True, timeout=60)
        if done.returncode == 0:
            return path
    return None


HAS_ENGINE_BINARY = any(shutil.which(n) for n in ("docker", "podman"))


@pytest.mark.skipif(not HAS_ENGINE_BINARY, reason="neither docker nor podman is installed")
def test_container_runner_runs_a_flow_without_network(
    project: Project, listener: tuple[int, list[bytes]]
) -> None:
    engine = _engine_answers()
    if engine is None:
        pytest.skip("docker/podman is installed but no engine answers `info` (no daemon here)")
    image = os.environ.get("FLOWFED_CONTAINER_IMAGE", "flowfed-runtime:latest")
    if subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode:
        repo = Path(__file__).resolve().parents[2]
        dockerfile = str(repo / "docker/runtime.Dockerfile")
        subprocess.run(
            [engine, "build", "-t", image, "-f", dockerfile, str(repo)],
            check=True,
            timeout=1800,
        )
    project.env["FLOWFED_CONTAINER_IMAGE"] = image
    assert run(project, "fine", "container", check=0)["status"] == "success"
    port, got = listener
    report = run(project, "dial", "container", f"{{port: {port}}}")
    assert task_of(report)["status"] == "error"
    assert got == []


@pytest.mark.skipif(not HAS_ENGINE_BINARY, reason="neither docker nor podman is installed")
def test_container_runner_without_an_engine_daemon_reports_the_engine_error(
    project: Project,
) -> None:
    if _engine_answers() is not None:
        pytest.skip("an engine answers here: the real-run test covers the runner")
    report = run(project, "fine", "container")
    err = task_of(report)["error"]
    assert err["type"] == "ProcessExited"
    assert "exited before connecting (exit code" in err["message"]
    # The tail of the engine client's stderr says why (docker: "Cannot connect to the
    # Docker daemon"; podman: "cannot connect to Podman").
    assert "connect" in err["message"].lower()


def test_container_runner_without_an_engine_is_a_clear_task_error(project: Project) -> None:
    project.env["FLOWFED_CONTAINER_ENGINE"] = str(project.root / "no-such-engine")
    report = run(project, "fine", "container")
    err = task_of(report)["error"]
    assert err["type"] == "ContainerUnavailable"
    assert "$FLOWFED_CONTAINER_ENGINE names" in err["message"]
    assert "which is not an executable" in err["message"]
