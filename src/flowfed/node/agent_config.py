"""How a node agent is configured and started: its options, credentials and command line.

:class:`NodeConfig` is everything ``flowfed node start`` was given; :func:`load_credentials`
reads the file ``flowfed nodes add --out`` writes, :func:`server_ws_url` turns the server's
address into the node endpoint, and :func:`node_command` / :func:`spawn_node` start an
agent as its own process (tests, the embedded server's local nodes, benchmarks).

A room of its own because none of it runs a task or holds a connection: it is the
agent's outside, which the CLI and the server's launcher use without the agent itself.

Example:
    >>> server_ws_url("https://flowfed.example.org/")
    'wss://flowfed.example.org/api/v1/nodes/connect'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowfed.node.datasets import NodeSetupError
from flowfed.node.policy import DEFAULT_POLICY, NodePolicy
from flowfed.node.protocol import WS_PATH
from flowfed.node.sandbox import SandboxLimits


def server_ws_url(server: str) -> str:
    """The node endpoint for a server base URL (http, https, ws or wss)."""
    base = server.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    if not base.startswith(("ws://", "wss://")):
        raise NodeSetupError(f"--server must be an http(s):// or ws(s):// URL, got {server!r}")
    if base.endswith(WS_PATH):
        return base
    return base + WS_PATH


def load_credentials(path: Path) -> dict[str, str]:
    """The credentials file written by ``flowfed nodes add --out``: name, token[, server]."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeSetupError(f"cannot read credentials {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise NodeSetupError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise NodeSetupError(f"{path}: expected a JSON object with 'name' and 'token'")
    if not isinstance(data.get("name"), str):
        raise NodeSetupError(f"{path}: expected a JSON object with 'name' and 'token'")
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def parse_dataset_option(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (NodeSetupError otherwise)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise NodeSetupError(f"--dataset must read NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip()).expanduser()


@dataclass
class NodeConfig:
    """Everything ``flowfed node start`` was given."""

    name: str
    server: str
    token: str
    datasets: dict[str, Path] = field(default_factory=dict)
    #: ``sandbox`` (bubblewrap, warm workers) unless the operator chose otherwise.
    runner: str = "sandbox"
    max_tasks: int = 1
    work_dir: Path = Path(".flowfed-node")
    imports: list[str] = field(default_factory=list)
    max_backoff_s: float = 5.0
    #: Offer permessage-deflate on the WebSocket. Off by default: nearly every frame is a
    #: small heartbeat, telemetry or ack, which deflate makes ~0.1 ms of CPU dearer on
    #: both ends (a quarter of the server loop's time with 200 nodes busy) and which
    #: keeps zlib state per connection; output bytes are base64 of mostly binary data.
    #: Turn it on for compressible shareable outputs over a slow link.
    compression: bool = False
    #: Budget, in MB of their stored size, for node-store tables and arrays kept decoded
    #: between tasks (see :class:`~flowfed.node.task_inputs.DecodedCache`); 0 turns the cache off.
    cache_mb: int = 256
    #: The node's own policy (``--policy FILE``); the strict default when none is given.
    policy: NodePolicy = DEFAULT_POLICY
    #: Memory, process and CPU-time limits of a sandboxed task (``runner="sandbox"``).
    limits: SandboxLimits = field(default_factory=SandboxLimits)


def node_command(
    name: str,
    server: str,
    credentials: str | Path,
    datasets: dict[str, str | Path] | None = None,
    *,
    runner: str = "sandbox",
    max_tasks: int = 1,
    work_dir: str | Path | None = None,
    imports: list[str] | None = None,
    insecure: bool = False,
) -> list[str]:
    """The ``python -m flowfed node start ...`` command line for a node agent process.

    ``runner`` is ``sandbox`` by default; ``inprocess`` and ``subprocess`` isolate
    nothing and need ``insecure=True`` (``--insecure``), which the caller passes only
    when a person chose them explicitly.

    Example:
        >>> node_command("a", "http://127.0.0.1:8000", "a.json", {"d": "d.csv"})[3:7]
        ['node', 'start', '--name', 'a']
        >>> node_command("a", "u", "a.json", runner="inprocess", insecure=True)[-1]
        '--insecure'
    """
    import sys

    cmd = [
        sys.executable, "-m", "flowfed", "node", "start",
        "--name", name, "--server", server, "--credentials", str(credentials),
        "--runner", runner, "--max-tasks", str(max_tasks),
    ]  # fmt: skip
    if work_dir is not None:
        cmd += ["--work-dir", str(work_dir)]
    for ds, path in (datasets or {}).items():
        cmd += ["--dataset", f"{ds}={path}"]
    for entry in imports or []:
        cmd += ["--import", entry]
    if insecure:
        cmd.append("--insecure")
    return cmd


def spawn_node(
    name: str,
    server: str,
    credentials: str | Path,
    datasets: dict[str, str | Path] | None = None,
    *,
    log_file: str | Path | None = None,
    cwd: str | Path | None = None,
    **options: Any,
) -> Any:
    """Start a node agent as a subprocess (``subprocess.Popen``); its output goes to ``log_file``.

    ``options`` are :func:`node_command`'s (runner, max_tasks, work_dir, imports,
    insecure). The caller terminates it (``proc.terminate()``) when done.

    Example:
        >>> # proc = spawn_node("hospital-a", srv.url, "a.json", {"breast": "a.csv"})
    """
    import subprocess

    cmd = node_command(name, server, credentials, datasets, **options)
    if log_file is None:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL)
    with open(log_file, "ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
