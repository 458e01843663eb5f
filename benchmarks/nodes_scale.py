"""How the node hub's costs grow from 10 to 200 connected node agents.

One command:

    .venv/bin/python benchmarks/nodes_scale.py [--nodes 10,50,100,200] [--write docs/benchmarks.md]

Each size runs in a fresh subprocess (so its RSS is its own) that starts a real server in
process (``start_embedded_server``: uvicorn thread, the node hub) on a fresh PostgreSQL
database (``--db sqlite`` for a SQLite file), creates N node credentials with ``add_node``
and connects N real :class:`flowfed.node.agent.NodeAgent` over loopback WebSockets. The
agents live in a few agent processes (``--per-process`` agents each, all in one asyncio
loop per process: ``NodeAgent.serve``), so 200 nodes fit a 2-core machine. Measured:

* **register**: from telling every agent process to connect until the hub lists all N
  online (token check, register and resume frames, the database row, the welcome);
* **heartbeat lateness** at the hub over a quiet window (``--window`` s): for each pair of
  consecutive heartbeats of a node, the gap between their arrivals minus the interval the
  hub asked for (``--heartbeat``). The hub drops a node silent for 3 intervals, so a gap
  far below that is "on time". The same figure under load (the sustained placement
  below) is reported too, and beside both the server loop's own lag (how late a 20 ms
  sleep in the hub's event loop wakes), which tells the hub's delay from the agents';
* **placement**: N tasks, one per node (a trivial tool returning the node's own name,
  ``inprocess`` runner), sent with ``NodeHub.run_task`` from a pool of N threads the way
  the engine sends them; the wall time of the whole batch (median of ``--rounds`` after a
  warm-up round), per task, and each task's own median latency; then batch after batch
  for ``--load`` seconds (tasks per second). Every result is checked to come from the
  node it was placed on;
* **RSS** of the server process with N nodes connected, and its growth over the same
  process before any node connected.

Growth = (cost at the largest N / cost at the smallest N) / (largest N / smallest N):
1.0 is linear, below 1 is better than linear. For the lateness (a per-heartbeat latency,
not a total) the same ratio is printed: flat would be 1/20 (0.05).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flowfed import Context, tool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_ADMIN_URL = os.environ.get(
    "FLOWFED_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TOOL = "nodescale_whoami"
BEGIN, END = "<!-- nodes-scale:begin -->", "<!-- nodes-scale:end -->"


@tool(name=TOOL, version="1", type="database-adapter")
def whoami(ctx: Context) -> str:
    """The trivial tool every agent runs: it returns the name of the node it ran on."""
    return str(ctx.node)


# --- an agent process: many NodeAgents in one asyncio loop ------------------------------


def agents_main(spec_path: Path) -> int:
    """Build the agents of ``spec_path``, say ``ready``, wait for ``go``, serve until killed."""
    import asyncio

    from flowfed.node.agent import NodeAgent, NodeConfig

    spec = json.loads(spec_path.read_text())
    root = Path(spec["root"])
    agents = [
        NodeAgent(
            NodeConfig(
                name=a["name"],
                server=spec["server"],
                token=a["token"],
                runner="inprocess",
                work_dir=root / f"work-{a['name']}",
            )
        )
        for a in spec["agents"]
    ]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    async def serve_all() -> None:
        await asyncio.gather(*(a.serve() for a in agents))

    asyncio.run(serve_all())
    return 0


# --- one size: the server, N agents, the measurements -----------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class LoopLag:
    """How late the server's event loop wakes from a 20 ms sleep: the hub's own delay."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.recording = False

    async def probe(self) -> None:
        import asyncio

        while True:
            t = time.monotonic()
            await asyncio.sleep(0.02)
            if self.recording:
                self.lags.append(time.monotonic() - t - 0.02)

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags


class Beats:
    """Heartbeat arrivals at the hub (the hub's ``on_heartbeat``), per node."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, tuple[int, float]] = {}
        self.gaps: list[float] = []
        self.recording = False

    def __call__(self, node: str, seq: int) -> None:
        now = time.monotonic()
        with self.lock:
            prev = self.last.get(node)
            self.last[node] = (seq, now)
            if self.recording and prev is not None and seq == prev[0] + 1:
                self.gaps.append(now - prev[1])

    def take(self) -> list[float]:
        with self.lock:
            gaps, self.gaps = self.gaps, []
        return gaps


def make_db(kind: str, root: Path) -> tuple[str, Any]:
    """A fresh database URL (at the current schema) and a function that drops it."""
    from flowfed.db import Database

    if kind == "sqlite":
        url = f"sqlite:///{root / 'server.db'}"

        def drop() -> None:
            pass

    else:
        import psycopg

        name = f"flowfed_bench_nodes_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

        def drop() -> None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    db = Database(url)
    db.ensure_schema(auto_upgrade=True)
    db.close()
    return url, drop


def measure(n: int, ns: argparse.Namespace) -> dict[str, Any]:
    """Every figure for ``n`` nodes (this process hosts the server)."""
    from flowfed.db import Database
    from flowfed.runtime.remote import RemoteTask
    from flowfed.server.embedded import start_embedded_server
    from flowfed.server.nodes import add_node

    root = Path(tempfile.mkdtemp(prefix=f"flowfed-bench-nodes{n}-"))
    db_url, drop_db = make_db(ns.db, root)
    srv = start_embedded_server(db_url, str(root / "artifacts"), heartbeat_s=ns.heartbeat)
    hub = srv.hub
    beats = Beats()
    hub.on_heartbeat = beats
    lag = LoopLag()
    import asyncio

    while hub.loop is None:  # the lifespan attaches the loop just before serving
        time.sleep(0.01)
    probe = asyncio.run_coroutine_threadsafe(lag.probe(), hub.loop)
    procs: list[subprocess.Popen[str]] = []
    logs = []
    try:
        db = Database(db_url)
        names = [f"node-{i:03d}" for i in range(n)]
        creds = [{"name": name, "token": add_node(db, name).token} for name in names]
        db.close()
        rss_before = _rss_mb()
        for k in range(0, n, ns.per_process):
            spec = root / f"agents-{k}.json"
            spec.write_text(
                json.dumps(
                    {"server": srv.url, "root": str(root), "agents": creds[k : k + ns.per_process]}
                )
            )
            log_path = root / f"agents-{k}.log"
            logs.append(log_path)
            with open(log_path, "w") as log_file:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--agents", str(spec)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log_file,
                        text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                    )
                )
        for p, log_path in zip(procs, logs, strict=True):
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"an agent process failed to start:\n{log_path.read_text()}")

        # -- register: all agent processes told at once, the clock runs until all online
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + 300
        while sum(1 for i in hub.nodes().values() if i.online) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only some of {n} nodes came online in 300 s")
            if any(p.poll() is not None for p in procs):
                died = "\n".join(x.read_text() for x in logs)
                raise SystemExit(f"an agent process died:\n{died}")
            time.sleep(0.005)
        register_s = time.perf_counter() - t0
        rss_connected = _rss_mb()

        # -- heartbeats over a quiet window (first beats after connecting are left out)
        time.sleep(ns.heartbeat * 1.5)
        beats.take()
        beats.recording = lag.recording = True
        time.sleep(ns.window)
        quiet = [g - ns.heartbeat for g in beats.take()]
        quiet_lag = lag.take()
        online_after = sum(1 for i in hub.nodes().values() if i.online)

        # -- placement: one task per node, all at once, from N engine threads
        def place(name: str, round_no: int) -> float:
            task = RemoteTask(
                run_id=f"bench-{round_no}", task_id=uuid.uuid4().hex, node=name, dataset=None,
                tool=TOOL, tool_version="1", config={}, inputs={}, outputs={"output": "who"},
                shareable=["output"], timeout=300, step="who",
            )  # fmt: skip
            s = time.perf_counter()
            result = hub.run_task(task, lambda k, p: None, threading.Event())
            elapsed = time.perf_counter() - s
            data = result.outputs["output"].data
            if data is None or json.loads(data) != name:
                raise AssertionError(f"task placed on {name} came back with {data!r}")
            return elapsed

        totals: list[float] = []
        latencies: list[float] = []
        with ThreadPoolExecutor(max_workers=n) as pool:
            for r in range(ns.rounds + 1):
                s = time.perf_counter()
                lat = list(pool.map(lambda name, r=r: place(name, r), names))
                total = time.perf_counter() - s
                if r:  # round 0 warms each agent's task thread and the tool's first call
                    totals.append(total)
                    latencies += lat
            # Sustained load: round after round for --load seconds, heartbeats timed meanwhile.
            beats.take()
            lag.take()
            placed = 0
            s = time.perf_counter()
            while time.perf_counter() - s < ns.load:
                placed += len(list(pool.map(lambda name: place(name, -1), names)))
            load_s = time.perf_counter() - s
        loaded = [g - ns.heartbeat for g in beats.take()]
        loaded_lag = lag.take()
        rss_end = _rss_mb()
        place_s = statistics.median(totals)
        return {
            "nodes": n,
            "agent_processes": len(procs),
            "register_s": register_s,
            "hb_n": len(quiet),
            "hb_p50_ms": _pct(quiet, 0.5) * 1000,
            "hb_p99_ms": _pct(quiet, 0.99) * 1000,
            "hb_max_ms": max(quiet) * 1000 if quiet else float("nan"),
            "hb_load_p99_ms": _pct(loaded, 0.99) * 1000,
            "hb_load_max_ms": max(loaded) * 1000 if loaded else float("nan"),
            "load_tasks_per_s": placed / load_s,
            "load_ms_per_task": load_s / placed * 1000,
            "lag_quiet_p99_ms": _pct(quiet_lag, 0.99) * 1000,
            "lag_load_p99_ms": _pct(loaded_lag, 0.99) * 1000,
            "hb_load_n": len(loaded),
            "online_after_window": online_after,
            "place_s": place_s,
            "place_per_task_ms": place_s / n * 1000,
            "task_latency_p50_ms": _pct(latencies, 0.5) * 1000,
            "rss_before_mb": rss_before,
            "rss_connected_mb": rss_connected,
            "rss_mb": rss_end,
            "rss_growth_mb": rss_end - rss_before,
        }
    finally:
        probe.cancel()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        srv.stop()
        drop_db()


# --- the report -------------------------------------------------------------------------


def growth(rows: list[dict[str, Any]], key: str) -> float:
    """(cost at the largest N / cost at the smallest N) / (largest N / smallest N)."""
    a, b = rows[0], rows[-1]
    if not a[key] or a[key] != a[key]:
        return float("nan")
    return (b[key] / a[key]) / (b["nodes"] / a["nodes"])


def report(rows: list[dict[str, Any]], ns: argparse.Namespace, measured: str) -> str:
    db = "PostgreSQL" if ns.db == "postgres" else "SQLite"
    lo, hi = rows[0]["nodes"], rows[-1]["nodes"]
    lines = [
        "## Nodes at scale",
        "",
        f"Measured {measured} with `python benchmarks/nodes_scale.py --nodes "
        f"{','.join(str(r['nodes']) for r in rows)} --write docs/benchmarks.md` on this "
        f"{os.cpu_count()}-core machine. Each size is a fresh process hosting a real server "
        f"(`start_embedded_server`, {db}) and N real node agents (`NodeAgent`) on loopback "
        f"WebSockets, {ns.per_process} agents per agent process sharing one asyncio loop. "
        f"Heartbeat interval {ns.heartbeat:g} s (a node is dropped after "
        f"{3 * ns.heartbeat:g} s of silence); lateness = gap between a node's consecutive "
        f"heartbeats at the hub minus the interval, over a {ns.window:g} s quiet window. "
        f"Placement = N tasks, one per node (a tool returning the node's name, `inprocess`), "
        f"sent at once with `NodeHub.run_task` from N threads; median of {ns.rounds} rounds "
        f"after a warm-up round; sustained = batch after batch for {ns.load:g} s (heartbeat "
        "lateness under load is measured then). Every result is checked to come from its "
        "own node. Server loop lag = how late a 20 ms sleep in the hub's event loop wakes "
        "(the hub's own delay; the rest of a heartbeat's lateness is the agent processes'). "
        "RSS is the server process's (agents are other processes); RSS growth = over the "
        "same process before any node connected.",
        "",
        "| nodes | register all | hb lateness p50 / p99 / max (quiet) "
        "| hb lateness p99 / max (under load) | server loop lag p99 (quiet / load) "
        "| place N tasks | per task | task latency p50 | sustained | server RSS | RSS growth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nodes']} | {r['register_s'] * 1000:.0f} ms "
            f"| {r['hb_p50_ms']:.1f} / {r['hb_p99_ms']:.1f} / {r['hb_max_ms']:.1f} ms "
            f"| {r['hb_load_p99_ms']:.1f} / {r['hb_load_max_ms']:.1f} ms "
            f"| {r['lag_quiet_p99_ms']:.1f} / {r['lag_load_p99_ms']:.1f} ms "
            f"| {r['place_s'] * 1000:.0f} ms | {r['place_per_task_ms']:.2f} ms "
            f"| {r['task_latency_p50_ms']:.0f} ms | {r['load_tasks_per_s']:.0f} tasks/s "
            f"| {r['rss_mb']:.0f} MB | {r['rss_growth_mb']:.1f} MB |"
        )
    lines += [
        "",
        f"Growth from {lo} to {hi} nodes ({hi / lo:g}x): for a total, (cost at {hi} / cost "
        f"at {lo}) / {hi / lo:g}, so 1.0 is linear and below 1 better than linear:",
        "",
        f"- register all nodes: {growth(rows, 'register_s'):.2f}",
        f"- place one task on every node (batch wall time): {growth(rows, 'place_s'):.2f}",
        f"- place N tasks at the sustained rate: {growth(rows, 'load_ms_per_task') * hi / lo:.2f}",
        f"- server RSS growth from the connected nodes: {growth(rows, 'rss_growth_mb'):.2f}",
        "",
        "For a latency (not a total) the plain factor, beside the nodes' own x"
        f"{hi / lo:g}: heartbeat lateness p99 x{growth(rows, 'hb_p99_ms') * hi / lo:.1f} "
        f"quiet and x{growth(rows, 'hb_load_p99_ms') * hi / lo:.1f} under load; server loop "
        f"lag p99 x{growth(rows, 'lag_quiet_p99_ms') * hi / lo:.1f} quiet and "
        f"x{growth(rows, 'lag_load_p99_ms') * hi / lo:.1f} under load.",
        "",
        "Nodes still online after the heartbeat window: "
        + ", ".join(f"{r['online_after_window']}/{r['nodes']}" for r in rows)
        + f". Machine: {platform.platform()}, Python {platform.python_version()}.",
        "",
        "```bash",
        ".venv/bin/python benchmarks/nodes_scale.py --write docs/benchmarks.md   # this section",
        ".venv/bin/python benchmarks/nodes_scale.py --nodes 10,200 --db sqlite   # print only",
        "```",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the section between the markers in ``path`` (append it the first time)."""
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="10,50,100,200", help="comma-separated sizes")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat interval (s)")
    parser.add_argument("--window", type=float, default=30.0, help="heartbeat window (s)")
    parser.add_argument("--rounds", type=int, default=10, help="placement rounds (after warm-up)")
    parser.add_argument("--load", type=float, default=10.0, help="sustained placement (s)")
    parser.add_argument("--per-process", type=int, default=50, help="agents per agent process")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--write", type=Path, help="update this file's 'Nodes at scale'")
    parser.add_argument("--agents", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.agents is not None:
        return agents_main(ns.agents)
    if ns.size is not None:
        print(json.dumps(measure(ns.size, ns)), flush=True)
        return 0

    rows = []
    for n in sorted(int(x) for x in ns.nodes.split(",") if x.strip()):
        args = [
            sys.executable, __file__, "--size", str(n), "--heartbeat", str(ns.heartbeat),
            "--window", str(ns.window), "--rounds", str(ns.rounds), "--load", str(ns.load),
            "--per-process", str(ns.per_process), "--db", ns.db,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        out = subprocess.run(args, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"the run with {n} nodes failed (exit {out.returncode})")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{n} nodes: register {row['register_s']:.3f}s, hb p99 {row['hb_p99_ms']:.1f}ms "
            f"max {row['hb_max_ms']:.1f}ms, place {row['place_s']:.3f}s, RSS {row['rss_mb']:.0f}MB",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    text = report(rows, ns, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(text)
    if ns.write is not None:
        write_section(ns.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
