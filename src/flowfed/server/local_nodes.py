"""Local nodes: the node agents ``flowfed run`` starts on this machine for placed steps.

A *layout* says which nodes hold which datasets. It is a YAML file (or the flow's inline
``nodes:`` mapping)::

    prepare: [python, make_data.py]       # optional: run (in the layout's folder) when
                                          # a dataset file is missing
    nodes:
      hospital-a: {breast: data/hospital-a/train.csv, breast-test: data/hospital-a/test.csv}
      hospital-b: {breast: data/hospital-b/train.csv, breast-test: data/hospital-b/test.csv}

Relative paths resolve against the layout file's folder. :class:`LocalNodes` starts an
embedded server on the run's own database, registers each node (fresh credentials every
time), spawns one real ``flowfed node start`` process per node and waits until all are
online: the run then goes through the very path a hospital deployment uses, over
loopback WebSockets. ``--simulate`` uses the same layout with in-process nodes instead.

Example:
    >>> layout = parse_layout({"hospital-a": {"breast": "/data/a.csv"}}, Path("/"))
    >>> layout.nodes["hospital-a"]["breast"].name
    'a.csv'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class LayoutError(ValueError):
    """A layout that cannot be used; the message names the file and the entry."""


@dataclass
class Layout:
    """Nodes and their datasets (absolute paths), and how to make missing data."""

    nodes: dict[str, dict[str, Path]]
    base: Path
    prepare: list[str] | None = None
    source: str = "<inline>"

    def missing(self) -> list[Path]:
        """Dataset files that do not exist (yet)."""
        return [p for ds in self.nodes.values() for p in ds.values() if not p.exists()]


def parse_layout(data: Any, base: Path, source: str = "<inline>") -> Layout:
    """A layout from its data: ``{nodes: {...}, prepare: [...]}`` or just the nodes map."""
    if isinstance(data, dict) and "nodes" in data:
        prepare = data.get("prepare")
        nodes = data["nodes"]
        extra = set(data) - {"nodes", "prepare"}
        if extra:
            raise LayoutError(f"{source}: unknown key(s) {sorted(extra)} (expected nodes, prepare)")
    else:
        prepare, nodes = None, data
    if not isinstance(nodes, dict) or not nodes:
        raise LayoutError(f"{source}: 'nodes' must map node names to {{dataset: path}}")
    out: dict[str, dict[str, Path]] = {}
    for name, datasets in nodes.items():
        if not isinstance(datasets, dict):
            raise LayoutError(f"{source}: node '{name}' must map dataset names to file paths")
        out[str(name)] = {}
        for ds, path in datasets.items():
            if not isinstance(path, str) or not path:
                raise LayoutError(f"{source}: nodes.{name}.{ds} must be a file path")
            p = Path(path)
            out[str(name)][str(ds)] = p if p.is_absolute() else (base / p).resolve()
    if prepare is not None and (
        not isinstance(prepare, list) or not all(isinstance(x, str) for x in prepare)
    ):
        raise LayoutError(f"{source}: 'prepare' must be a command as a list of strings")
    return Layout(out, base, prepare, source)


def load_layout(spec: str | dict[str, Any], base: Path) -> Layout:
    """A layout from a file path (relative to ``base``) or an inline mapping."""
    if isinstance(spec, dict):
        return parse_layout(spec, base)
    path = Path(spec)
    path = path if path.is_absolute() else base / path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LayoutError(f"cannot read the nodes layout {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LayoutError(f"{path}: invalid YAML: {exc}") from None
    return parse_layout(data, path.parent, str(path))


def ensure_data(layout: Layout) -> None:
    """Run the layout's ``prepare`` command when a dataset file is missing."""
    missing = layout.missing()
    if not missing:
        return
    if not layout.prepare:
        raise LayoutError(f"{layout.source}: dataset file {missing[0]} does not exist")
    cmd = [sys.executable if c == "python" else c for c in layout.prepare]
    proc = subprocess.run(cmd, cwd=layout.base, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LayoutError(
            f"{layout.source}: 'prepare' ({' '.join(layout.prepare)}) exited "
            f"{proc.returncode}: " + " | ".join(tail)
        )
    still = layout.missing()
    if still:
        raise LayoutError(f"{layout.source}: 'prepare' ran but {still[0]} still does not exist")


@dataclass
class LocalNodes:
    """An embedded server plus one node agent process per layout node.

    Use as a context manager; :attr:`dispatcher` is the server's node hub.
    """

    layout: Layout
    database_url: str
    artifacts_url: str
    work_dir: Path
    #: How the agents run tools: ``sandbox`` (bubblewrap) by default. ``inprocess`` and
    #: ``subprocess`` were chosen explicitly by the user, so the agents get ``--insecure``.
    runner: str = "sandbox"
    imports: list[str] = field(default_factory=list)
    online_timeout: float = 60.0
    server: Any = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def dispatcher(self) -> Any:
        """The node hub the engine sends placed tasks to."""
        return self.server.hub

    def __enter__(self) -> LocalNodes:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server, register the nodes, spawn their agents, wait until online."""
        from flowfed.db import Database
        from flowfed.node.agent import spawn_node
        from flowfed.node.runners import INSECURE_RUNNERS
        from flowfed.server.embedded import start_embedded_server
        from flowfed.server.node_store import add_node, remove_node

        self.server = start_embedded_server(self.database_url, self.artifacts_url)
        db: Database = self.server.app.state.db
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name, datasets in self.layout.nodes.items():
            # Local demo nodes belong to this run: fresh credentials every time.
            remove_node(db, name)
            created = add_node(db, name)
            folder = self.work_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            creds = folder / "credentials.json"
            creds.write_text(
                json.dumps({"name": name, "token": created.token, "server": self.server.url})
            )
            os.chmod(creds, 0o600)
            self.procs[name] = spawn_node(
                name,
                self.server.url,
                creds,
                {k: str(v) for k, v in datasets.items()},
                log_file=folder / "node.log",
                runner=self.runner,
                work_dir=str(folder / "work"),
                imports=self.imports,
                insecure=self.runner in INSECURE_RUNNERS,
            )
        deadline = time.monotonic() + self.online_timeout
        while True:
            online = {n for n, info in self.server.hub.nodes().items() if info.online}
            waiting = [n for n in self.layout.nodes if n not in online]
            if not waiting:
                return
            for name in waiting:
                code = self.procs[name].poll()
                if code is not None:
                    raise LayoutError(
                        f"node '{name}' exited with code {code} before connecting: "
                        + self._log_tail(name)
                    )
            if time.monotonic() > deadline:
                raise LayoutError(
                    f"{'node' if len(waiting) == 1 else 'nodes'} {', '.join(waiting)} did not "
                    "connect within "
                    f"{self.online_timeout:g}s: " + self._log_tail(waiting[0])
                )
            time.sleep(0.05)

    def _log_tail(self, name: str) -> str:
        log = self.work_dir / name / "node.log"
        try:
            lines = log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return "(no log)"
        return " | ".join(lines) or "(empty log)"

    def stop(self) -> None:
        """Stop the agents, then the server."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.server is not None:
            self.server.stop()
            self.server = None
