"""flowfed beside its peers, on the same work, on this machine, in one run.

    python benchmarks/peers/run.py [--repeat 3] [--tasks 200] [--only prefect,kedro]
                                   [--marginal-tasks 1000] [--write docs/benchmarks.md]

Creates one virtual environment per peer under ``.bench-venvs/`` (git-ignored) with pip
from PyPI, on first use; a peer that cannot be installed gets a row saying so with the
last line of pip's error. Then it runs each peer's script (``<peer>_bench.py``, small
and written the way that peer's docs write a pipeline) in a subprocess of that venv, and
flowfed's the same way, for W1 (chain), W2 (fan-out + sum), W2-sleep (10 ms tasks),
W3 (whole-process start-up with a one-task pipeline) and W4 (cached re-run of W1, for
peers that cache). Every run gets a fresh work dir and a fresh home for the peer's state
(PREFECT_HOME, DAGSTER_HOME, FLOWFED_HOME, HOME). Reported: median wall time, per-task
overhead over plain calls, peak RSS of the process (``wait4``), and each time as a ratio
to flowfed's from the same run. W1 and W2 also run at ``--marginal-tasks`` (default 1000,
0 turns it off) for every peer, median of ``--marginal-repeat`` runs (default: ``--repeat``,
at most 2, as those runs are long for the slow peers): (wall there - wall at ``--tasks``) /
the extra tasks is the marginal cost per task, the slope once fixed start-up costs cancel.

A peer may also run in a second configuration (``prefect-server``, ``dagster-recorded``,
``hamilton-cached``): its own script in its own venv with ``BENCH_VARIANT`` set, on W1 and
W2. Peers marked ``records`` store every result durably, as flowfed does; "faster than
every peer" is judged against all configurations and against those alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENVS = REPO / ".bench-venvs"
WORKLOADS = ["w1", "w2", "w2s", "w3", "w4"]
LABELS = {
    "w1": "W1 chain",
    "w2": "W2 fan-out + sum",
    "w2s": "W2-sleep (10 ms tasks)",
    "w3": "W3 start-up (1 task, whole process)",
    "w4": "W4 cached re-run of W1",
}
MARGINAL = ["w1", "w2"]  # the workloads also run at --marginal-tasks
RUN_TIMEOUT_S = 600


@dataclass
class Peer:
    name: str
    label: str
    pip: list[str]
    probe: str  # a module the venv must import
    w4: bool = True  # has a cache W4 can hit
    note: str = ""
    # A second configuration of a peer: it runs ``<base>_bench.py`` in ``<base>``'s venv
    # with ``BENCH_VARIANT=<variant>`` in its environment, on ``only`` workloads.
    base: str = ""
    variant: str = ""
    only: tuple[str, ...] = ()
    # Records every task's result durably (files or a database) and the run, as flowfed
    # does: the configurations that do the same work as flowfed.
    records: bool = False
    python: str = ""
    install_error: str = ""
    version: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    marginal: dict[str, dict[str, Any]] = field(default_factory=dict)  # at --marginal-tasks


PEERS = [
    Peer(
        "prefect",
        "Prefect 3",
        ["prefect>=3,<4"],
        "prefect",
        note="@flow/@task, ThreadPoolTaskRunner, persist_result=True (every result written "
        "to its local storage; its temporary API server records the runs in SQLite under "
        "PREFECT_HOME, from events, after the fact), its default cache policy; "
        "cache_policy=TASK_SOURCE+INPUTS for W4",
        records=True,
    ),
    Peer(
        "prefect-server",
        "Prefect 3, with its server",
        ["prefect>=3,<4"],
        "prefect",
        base="prefect",
        variant="server",
        only=("w1", "w2"),
        records=True,
        note="the same flows against `prefect server start`, a process of its own started "
        "before the clock, as Prefect is deployed for its UI and run history "
        "(PREFECT_API_URL points at it)",
    ),
    Peer(
        "dagster",
        "Dagster",
        ["dagster"],
        "dagster",
        w4=False,
        note="@op/@job, execute_in_process (in-process executor) as its docs write a test: an "
        "ephemeral instance and the in-memory IO manager, so nothing is recorded; ops have "
        "no result cache",
    ),
    Peer(
        "dagster-recorded",
        "Dagster, run recorded",
        ["dagster"],
        "dagster",
        w4=False,
        base="dagster",
        variant="recorded",
        only=("w1", "w2"),
        records=True,
        note="the same job and in-process executor, on the persistent instance of "
        "DAGSTER_HOME (run and event log in SQLite, what its UI reads) with fs_io_manager "
        "(every output pickled to a file; Dagster's default IO manager outside "
        "execute_in_process)",
    ),
    Peer(
        "hamilton",
        "Apache Hamilton",
        ["sf-hamilton"],
        "hamilton.driver",
        note="driver.Builder().with_modules(m); with_cache() for W4; sequential executor; "
        "results in memory",
    ),
    Peer(
        "hamilton-cached",
        "Apache Hamilton, results recorded",
        ["sf-hamilton"],
        "hamilton.driver",
        base="hamilton",
        variant="recorded",
        only=("w1", "w2"),
        records=True,
        note="with_cache() on a new cache directory: the first run stores every node's "
        "result and its metadata (data version, code version) in SQLite, as flowfed's "
        "first run does",
    ),
    Peer(
        "kedro",
        "Kedro",
        ["kedro"],
        "kedro.runner",
        w4=False,
        note="Pipeline of nodes, SequentialRunner (ThreadRunner for W2-sleep); no cache",
    ),
    Peer(
        "flowdapt",
        "Flowdapt",
        ["flowdapt"],
        "flowdapt.compute.resources.workflow.execute",
        w4=False,
        note="execute_workflow on its LocalExecutor (threads); no task cache",
    ),
    Peer(
        "flowyml",
        "FlowyML",
        ["flowyml"],
        "flowyml",
        note="@step + Pipeline.run(); cache='input_hash' for W4",
    ),
]


def base_python() -> str:
    # A venv's python makes venvs of its base interpreter; either works for `-m venv`.
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(peer: Peer) -> None:
    venv = VENVS / (peer.base or peer.name)
    py = venv / "bin" / "python"
    ok = (
        py.exists()
        and subprocess.run(
            [str(py), "-c", f"import {peer.probe}"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not ok:
        print(f"[peers] installing {peer.label} into {venv} ...", file=sys.stderr, flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        pip = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peer.pip],
            capture_output=True,
            text=True,
            check=False,
        )
        if pip.returncode != 0:
            lines = [x for x in (pip.stderr or pip.stdout).strip().splitlines() if x.strip()]
            peer.install_error = lines[-1] if lines else f"pip exited {pip.returncode}"
            return
        probe = subprocess.run(
            [str(py), "-c", f"import {peer.probe}"], capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            lines = probe.stderr.strip().splitlines()
            peer.install_error = f"installed, but `import {peer.probe}` fails: {lines[-1]}"
            return
    peer.python = str(py)


def spawn(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str, str, int]:
    """Run ``cmd``; (wall s, exit code, stdout, stderr tail, peak RSS KB of the child)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        # A session of its own: whatever the peer leaves behind (FlowyML starts a UI
        # server) is stopped with it below.
        p = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True, start_new_session=True
        )
        deadline = t0 + RUN_TIMEOUT_S
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return wall, p.returncode, out.read(), err.read()[-3000:], ru.ru_maxrss


def peer_env(name: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWFED_", "PREFECT_"))}
    env.pop("DAGSTER_HOME", None)
    home = work / "home"
    for d in ("prefect", "dagster", "flowfed", "user"):
        (home / d).mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        DAGSTER_HOME=str(home / "dagster"),
        FLOWFED_HOME=str(home / "flowfed"),
        PYTHONDONTWRITEBYTECODE="1",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DAGSTER_DISABLE_TELEMETRY="1",
        # Prefect starts a temporary API server per process; on a busy 2-core machine it
        # needs longer than the default to come up.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
    )
    if name != "flowfed":
        env["HOME"] = str(home / "user")  # the peer's dot-folders stay in the work dir
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    return env


def run_one(
    name: str, python: str, workload: str, tasks: int, variant: tuple[str, str] = ("", "")
) -> dict[str, Any]:
    """One timed run; ``variant`` is (base script, BENCH_VARIANT) for a peer's variant."""
    base, kind = variant
    script = HERE / f"{base or name}_bench.py"
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        env = peer_env(name, work)
        if kind:
            env["BENCH_VARIANT"] = kind
        cmd = [python, str(script), workload, "--tasks", str(tasks), "--workdir", str(work)]
        if workload == "w4":  # the first run fills the cache; the second is measured
            wall, rc, out, err, _ = spawn(cmd, env, work)
            if rc != 0:
                return {"error": _last(err, rc, wall)}
        wall, rc, out, err, rss = spawn(cmd, env, work)
        if rc != 0:
            return {"error": _last(err, rc, wall)}
        res = json.loads(out.strip().splitlines()[-1])
        return {
            "seconds": res["seconds"],
            "wall": wall,
            "rss_mb": rss / 1024,
            "version": res["version"],
        }


def _last(err: str, rc: int, wall: float = 0.0) -> str:
    """The error line of a failed run (a final log line is not the error)."""
    if wall >= RUN_TIMEOUT_S:  # spawn killed it at the deadline
        return f"timed out after {RUN_TIMEOUT_S} s"
    lines = [x.strip() for x in err.strip().splitlines() if x.strip()]
    errors = [x for x in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b", x)]
    return ((errors or lines or [f"exit {rc}"])[-1])[:200]


def measure(
    name: str,
    python: str,
    workloads: list[str],
    tasks: int,
    repeat: int,
    skip: set[str],
    variant: tuple[str, str] = ("", ""),
) -> tuple[dict[str, dict[str, Any]], str]:
    results: dict[str, dict[str, Any]] = {}
    version = ""
    for w in workloads:
        if w in skip:
            results[w] = {"na": True}
            continue
        runs = []
        for _ in range(repeat):
            r = run_one(name, python, w, tasks, variant)
            if "error" in r:
                results[w] = r
                break
            runs.append(r)
        else:
            version = runs[0]["version"]
            key = "wall" if w == "w3" else "seconds"
            results[w] = {
                "seconds": statistics.median(x[key] for x in runs),
                "rss_mb": max(x["rss_mb"] for x in runs),
            }
        shown = results[w].get("seconds")
        print(
            f"[peers] {name:16} {w:4} x{1 if w == 'w3' else tasks:<5} "
            + (f"{shown:.3f}s" if shown is not None else results[w].get("error", "")),
            file=sys.stderr,
            flush=True,
        )
    return results, version


@dataclass
class Marginal:
    """The runs at ``--marginal-tasks`` (``tasks``), for the second table."""

    tasks: int = 0
    repeat: int = 0
    workloads: list[str] = field(default_factory=list)
    ff: dict[str, dict[str, Any]] = field(default_factory=dict)
    plain: dict[str, dict[str, Any]] = field(default_factory=dict)


def n_tasks(w: str, tasks: int) -> int:
    return 1 if w == "w3" else tasks + 2 if w in ("w2", "w2s") else tasks


def slope(small: dict[str, Any], large: dict[str, Any], w: str, tasks: int, more: int) -> Any:
    """Marginal seconds per task of workload ``w`` between runs at ``tasks`` and ``more``
    tasks (None when either run has no time)."""
    if "seconds" not in small or "seconds" not in large:
        return None
    return (large["seconds"] - small["seconds"]) / (n_tasks(w, more) - n_tasks(w, tasks))


def render(
    peers: list[Peer],
    ff: dict[str, dict[str, Any]],
    plain: dict[str, dict[str, Any]],
    tasks: int,
    repeat: int,
    ff_version: str,
    workloads: list[str],
    marginal: Marginal | None = None,
    help_s: float | None = None,
) -> str:
    m = marginal if marginal and marginal.tasks and marginal.workloads else None
    rows = [
        "| workload | tool | wall (s) | per-task overhead (ms) | peak RSS (MB) | time / flowfed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for w in workloads:
        base = plain.get(w, {}).get("seconds")
        ffs = ff.get(w, {}).get("seconds")

        def row(label: str, r: dict[str, Any], w: str = w, base: Any = base, ffs: Any = ffs) -> str:
            if r.get("na"):
                return f"| {LABELS[w]} | {label} | n/a (no cache) | | | |"
            if "error" in r:
                return f"| {LABELS[w]} | {label} | failed: `{r['error']}` | | | |"
            s = r["seconds"]
            per = (
                "—" if w == "w2s" or base is None else f"{(s - base) / n_tasks(w, tasks) * 1e3:.2f}"
            )
            ratio = f"{s / ffs:.1f}x" if ffs else "—"
            return f"| {LABELS[w]} | {label} | {s:.3f} | {per} | {r['rss_mb']:.0f} | {ratio} |"

        rows.append(row(f"**flowfed** {ff_version}", ff.get(w, {"error": "not run"})))
        for p in peers:
            if p.install_error or (p.only and w not in p.only):
                continue
            rows.append(row(f"{p.label} {p.version}", p.results.get(w, {"error": "not run"})))
        if w in plain:
            rows.append(row("plain Python calls", plain[w]))
    lines = [
        "### flowfed beside its peers",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {tasks} tasks, median of {repeat} runs, each "
        "in a fresh process with a fresh work dir and home. Reproduce: "
        "`python benchmarks/peers/run.py --write docs/benchmarks.md` (or `make bench`); "
        "it creates `.bench-venvs/<peer>` with pip on first use.",
        "Wall time covers building and running the pipeline after imports (W3: the whole "
        "process, imports included). "
        + (
            f"Per-task overhead = (wall - plain calls) / tasks at {tasks} tasks, all in: fixed "
            "start-up costs (creating the database, building the pipeline) are spread over "
            f"the tasks. Marginal cost per task = (wall at {m.tasks} - wall at {tasks}) / "
            f"{m.tasks - tasks} extra tasks, on W1 and W2: the fixed costs cancel out, it "
            "is the slope. *time / flowfed* and *marginal / flowfed* above 1 mean flowfed "
            "is faster. "
            if m
            else "Per-task overhead = (wall - plain calls) / tasks. *time / flowfed* above 1 "
            "means flowfed is faster. "
        )
        + "flowfed persists every transition and artifact (SQLite + artifact store); "
        "Hamilton, Kedro, Flowdapt and Dagster's `execute_in_process` keep results in "
        "memory. The rows *Dagster, run recorded* and *Apache Hamilton, results recorded* "
        "run the same pipelines with each tool's own way of recording them, the same work "
        "as flowfed's; *Prefect 3, with its server* runs them against `prefect server "
        "start` (see *How each peer runs*).",
        "\n".join(rows),
    ]
    if m:
        fewer = "" if m.repeat == repeat else f", not {repeat}, to bound the run time"
        lines += [
            f"Marginal cost per task: W1 and W2 at {tasks} and at {m.tasks} tasks (the "
            f"walls at {tasks} are the ones above; those at {m.tasks} are the median of "
            f"{m.repeat} runs{fewer}, each in a fresh process as above).",
            marginal_table(peers, ff, plain, tasks, ff_version, m),
        ]
    lines += [targets_table(peers, ff, plain, tasks, m, help_s)]
    lines += [
        "How each peer runs:",
        "\n".join(f"- **{p.label}**: {p.note}" for p in peers),
    ]
    failed = [p for p in peers if p.install_error and not p.base]  # variants share a venv
    if failed:
        lines.append(
            "Could not be installed here:\n\n"
            + "\n".join(
                f"- **{p.label}** (`pip install {' '.join(p.pip)}`): {p.install_error}"
                for p in failed
            )
        )
    return "\n\n".join(lines)


#: The engine issue's targets (issue 23), judged from one run's figures.
TARGET_MARGINAL_MS = 0.05  # W1, W2: per recorded task, at Hamilton's in-memory cost
TARGET_ALL_IN_MS = 0.1  # W1, W2: per task, all in, at --tasks
TARGET_W3_S = 0.2  # a one-task `flowfed run` process
TARGET_HELP_S = 0.1  # `flowfed --help`
TARGET_W4_S = 0.05  # the fully cached re-run of W1


def targets_table(
    peers: list[Peer],
    ff: dict[str, dict[str, Any]],
    plain: dict[str, dict[str, Any]],
    tasks: int,
    m: Marginal | None,
    help_s: float | None = None,
) -> str:
    """The engine issue's targets (absolute, on this machine) and the peers on the same
    work, judged from this run's figures only."""

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x * 1e3:.3f} ms"

    rows = ["| target | measured in this run | met |", "|---|---|---|"]
    for w in ("w1", "w2"):
        r, base = ff.get(w, {}), plain.get(w, {})
        all_in = (
            (r["seconds"] - base["seconds"]) / n_tasks(w, tasks)
            if "seconds" in r and "seconds" in base
            else None
        )
        rows.append(
            f"| {LABELS[w]}: all in, ≤ {TARGET_ALL_IN_MS} ms per recorded task at {tasks} "
            f"| {ms(all_in)} | {verdict(_within(all_in, TARGET_ALL_IN_MS))} |"
        )
        if m is not None:
            marg = slope(r, m.ff.get(w, {}), w, tasks, m.tasks)
            rows.append(
                f"| {LABELS[w]}: marginal ≤ {TARGET_MARGINAL_MS} ms per recorded task "
                f"| {ms(marg)} | {verdict(_within(marg, TARGET_MARGINAL_MS))} |"
            )
    w3 = ff.get("w3", {}).get("seconds")
    kedro = next((p for p in peers if p.name == "kedro" and not p.install_error), None)
    k3 = kedro.results.get("w3", {}).get("seconds") if kedro else None
    rows.append(
        f"| {LABELS['w3']}: ≤ {TARGET_W3_S} s"
        + (f", ahead of Kedro ({k3:.3f} s)" if k3 else "")
        + f" | {'n/a' if w3 is None else f'{w3:.3f} s'} "
        f"| {verdict(None if w3 is None else w3 <= TARGET_W3_S and (k3 is None or w3 < k3))} |"
    )
    rows.append(
        f"| `flowfed --help`: ≤ {TARGET_HELP_S} s "
        f"| {'n/a' if help_s is None else f'{help_s:.3f} s'} "
        f"| {verdict(None if help_s is None else help_s <= TARGET_HELP_S)} |"
    )
    w4 = ff.get("w4", {}).get("seconds")
    rows.append(
        f"| {LABELS['w4']}: ≤ {TARGET_W4_S} s for {tasks} tasks "
        f"| {'n/a' if w4 is None else f'{w4:.3f} s'} "
        f"| {verdict(None if w4 is None else w4 <= TARGET_W4_S)} |"
    )
    for w in ("w1", "w2"):
        mine = ff.get(w, {}).get("seconds")
        if mine is None:
            continue
        ratios = [
            f"{p.label} {p.results[w]['seconds'] / mine:.1f}x"
            for p in peers
            if not p.install_error and p.records and "seconds" in p.results.get(w, {})
        ]
        if ratios:
            rows.append(
                f"| {LABELS[w]}: peers that record each result, time / flowfed's "
                f"| {', '.join(ratios)} | for information |"
            )
    return "Targets of the engine issue, from the figures above:\n\n" + "\n".join(rows)


def _within(seconds: float | None, target_ms: float) -> bool | None:
    return None if seconds is None else seconds * 1e3 <= target_ms


def help_seconds(repeat: int) -> float:
    """Median wall seconds of ``python -m flowfed --help`` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-help-") as tmp:
        env = peer_env("flowfed", Path(tmp))
        cmd = [sys.executable, "-m", "flowfed", "--help"]
        walls = []
        for _ in range(max(repeat, 3)):
            wall, rc, _, err, _ = spawn(cmd, env, Path(tmp))
            if rc != 0:
                raise RuntimeError(f"flowfed --help failed: {_last(err, rc)}")
            walls.append(wall)
    print(f"[peers] flowfed --help {statistics.median(walls):.3f}s", file=sys.stderr, flush=True)
    return statistics.median(walls)


def marginal_table(
    peers: list[Peer],
    ff: dict[str, dict[str, Any]],
    plain: dict[str, dict[str, Any]],
    tasks: int,
    ff_version: str,
    m: Marginal,
) -> str:
    """Per workload and tool: wall at both sizes, the slope, and the slope over flowfed's."""
    rows = [
        f"| workload | tool | wall at {tasks} (s) | wall at {m.tasks} (s) "
        "| marginal per task (ms) | marginal / flowfed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    missing = {"error": "not run"}
    for w in m.workloads:
        ffm = slope(ff.get(w, missing), m.ff.get(w, missing), w, tasks, m.tasks)

        def row(
            label: str, small: dict[str, Any], large: dict[str, Any], w: str = w, ffm: Any = ffm
        ) -> str:
            if "error" in small:
                return f"| {LABELS[w]} | {label} | failed: `{small['error']}` | | n/a | |"
            if "error" in large:
                return (
                    f"| {LABELS[w]} | {label} | {small['seconds']:.3f} "
                    f"| n/a: `{large['error']}` | n/a | |"
                )
            d = slope(small, large, w, tasks, m.tasks)
            if ffm is None or ffm <= 0:
                ratio = "—"
            else:
                ratio = f"{d / ffm:.2f}x" if d < ffm else f"{d / ffm:.1f}x"
            return (
                f"| {LABELS[w]} | {label} | {small['seconds']:.3f} | {large['seconds']:.3f} "
                f"| {d * 1e3:.3f} | {ratio} |"
            )

        rows.append(row(f"**flowfed** {ff_version}", ff.get(w, missing), m.ff.get(w, missing)))
        for p in peers:
            if not p.install_error and (not p.only or w in p.only):
                rows.append(
                    row(
                        f"{p.label} {p.version}",
                        p.results.get(w, missing),
                        p.marginal.get(w, missing),
                    )
                )
        if w in plain:
            rows.append(row("plain Python calls", plain[w], m.plain.get(w, missing)))
    return "\n".join(rows)


def write_doc(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"<!-- peers:begin -->\n{body}\n<!-- peers:end -->"
    if "<!-- peers:begin -->" in text:
        text = re.sub(
            r"<!-- peers:begin -->.*?<!-- peers:end -->", lambda _: block, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def reap_strays(venv: Path) -> None:
    """Stop what a peer left running from its venv: FlowyML starts its UI server in a
    session of its own, which outlives the run's process group (and would run beside the
    next peer's measurements, and after the suite)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    prefix = str(venv) + os.sep
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if argv0.startswith(prefix):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                print(
                    f"[peers] stopped a process {venv.name} left running: pid {entry.name}",
                    file=sys.stderr,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--only", help="comma-separated peer names (default: all)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument(
        "--marginal-tasks",
        type=int,
        default=1000,
        help="also run W1 and W2 at this many tasks, for the marginal cost per task (0: off)",
    )
    ap.add_argument(
        "--marginal-repeat",
        type=int,
        help="runs per median at --marginal-tasks (default: --repeat, at most 2: those runs "
        "take ~150 s per repeat for the full peer set, FlowyML ~35 s a run)",
    )
    ap.add_argument("--write", type=Path)
    a = ap.parse_args()
    workloads = a.workloads.split(",")
    n2 = a.marginal_tasks
    if n2 and n2 <= a.tasks:
        ap.error("--marginal-tasks must be above --tasks (or 0 to turn it off)")
    big = [w for w in MARGINAL if w in workloads] if n2 else []
    repeat2 = a.marginal_repeat or min(a.repeat, 2)
    peers = [p for p in PEERS if not a.only or p.name in a.only.split(",")]
    VENVS.mkdir(exist_ok=True)
    failed: dict[str, str] = {}
    for p in peers:
        if (p.base or p.name) in failed:  # a variant of a peer that did not install
            p.install_error = failed[p.base or p.name]
            continue
        ensure_venv(p)
        if p.install_error:
            failed[p.base or p.name] = p.install_error

    def both(
        name: str, python: str, skip: set[str], variant: tuple[str, str] = ("", "")
    ) -> tuple[dict, dict, str]:
        """``--tasks`` on every workload, then ``--marginal-tasks`` on W1 and W2."""
        small, version = measure(name, python, workloads, a.tasks, a.repeat, skip, variant)
        large, version2 = measure(name, python, big, n2, repeat2, skip, variant)
        return small, large, version or version2

    ff, ff2, ff_version = both("flowfed", sys.executable, set())
    help_s = help_seconds(a.repeat)
    plain, plain2, _ = both("plain", sys.executable, set())
    for p in peers:
        if not p.install_error:
            skip = set() if p.w4 else {"w4"}
            if p.only:
                skip |= set(WORKLOADS) - set(p.only)
            p.results, p.marginal, p.version = both(p.name, p.python, skip, (p.base, p.variant))
            reap_strays(VENVS / (p.base or p.name))
    body = render(
        peers,
        ff,
        plain,
        a.tasks,
        a.repeat,
        ff_version,
        workloads,
        marginal=Marginal(n2, repeat2, big, ff2, plain2),
        help_s=help_s,
    )
    print(body)
    if a.write:
        write_doc(a.write, body)


if __name__ == "__main__":
    main()
