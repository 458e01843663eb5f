"""Per-task overhead of each tool runner, against the in-process (threads) engine.

One command:

    .venv/bin/python benchmarks/runners.py [--repeat N] [--write docs/benchmarks.md]

Workloads are W1 (a chain of trivial tasks) and W2 (one source -> N parallel trivial tasks
-> one sum) of ``benchmarks/overhead.py``, built by its functions. Runners:

- ``threads``: the in-process engine (the baseline), 200 tasks;
- ``subprocess``: one ``python -m flowfed.runtime`` per task over the runtime protocol;
- ``sandbox``: the same under bubblewrap (when ``bwrap`` is installed);
- ``container``: docker/podman (only when an engine answers ``info`` and the runtime
  image exists).

The isolated runners start an interpreter per task, so they run fewer tasks (``--tasks``,
default 20); the figures are per task. Every measurement is a fresh subprocess with a fresh
``FLOWFED_HOME``, persistence on, like overhead.py. Writes its table between
``<!-- runners:begin -->`` and ``<!-- runners:end -->`` of the ``--write`` file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import overhead  # noqa: E402  (the workload builders live there)

BEGIN, END = "<!-- runners:begin -->", "<!-- runners:end -->"
#: The isolated runners' task count when --tasks is not given.
ISOLATED_TASKS = 20
BASELINE_TASKS = 200


def worker(kind: str, n: int, runner: str, workdir: Path) -> dict[str, Any]:
    """One measured run (in a fresh process): wall time and the plain-Python baseline."""
    import time

    from flowfed import api

    home = Path(os.environ["FLOWFED_HOME"])
    m = overhead._import_from(workdir, "bench_tools", overhead.flowfed_tools_source(n))
    import flowfed.engine.local  # noqa: F401  (import cost is not the runner's)

    t0 = time.perf_counter()
    prepared = api.prepare(overhead.build_flow(kind, n))
    engine = api.make_engine(
        database_url=f"sqlite:///{home / 'flowfed.db'}",
        artifacts_url=str(home / "artifacts"),
        use_cache=False,
        executor=runner,
    )
    try:
        result = engine.run(prepared.graph)
    finally:
        engine.db.close()
    wall = time.perf_counter() - t0
    d = result.to_dict()
    tasks = [t for s in d["steps"] for t in s["tasks"]]
    if kind == "w1":
        plain = overhead._median_time(lambda: overhead.plain_chain(m, n), 5)
    else:
        plain = overhead._median_time(lambda: overhead.plain_fan(m, n, m.add), 5)
    return {
        "status": result.status,
        "wall": wall,
        "plain": plain,
        "tasks": len(tasks),
        "workers": engine.max_workers,
    }


def run_once(kind: str, n: int, runner: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flowfed-bench-runner-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
        cmd += ["--tasks", str(n), "--runner", runner, "--workdir", str(work)]
        done = subprocess.run(
            cmd, cwd=work, env=overhead._env(home), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{runner} {kind} failed:\n{done.stderr[-3000:]}")
        res: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if res["status"] != "success":
            raise RuntimeError(f"{runner} {kind}: run {res['status']}")
        return res


def measure(kind: str, n: int, runner: str, repeat: int) -> dict[str, Any]:
    runs = [run_once(kind, n, runner) for _ in range(repeat)]
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "plain": statistics.median(r["plain"] for r in runs),
        "tasks": runs[0]["tasks"],
        "workers": runs[0]["workers"],
        "runs": repeat,
    }


def container_ready() -> str | None:
    """Why the container runner cannot be measured here, or None if it can."""
    engine = os.environ.get("FLOWFED_CONTAINER_ENGINE") or next(
        (n for n in ("docker", "podman") if shutil.which(n)), None
    )
    if engine is None:
        return "neither docker nor podman is installed"
    if subprocess.run([engine, "info"], capture_output=True, check=False).returncode != 0:
        return f"{engine} is installed but no engine answers `{engine} info`"
    image = os.environ.get("FLOWFED_CONTAINER_IMAGE", "flowfed-runtime:latest")
    if subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode:
        return f"the image {image} is not built (docker/runtime.Dockerfile)"
    return None


def per_task_ms(r: dict[str, Any]) -> float:
    return float((r["wall"] - r["plain"]) / r["tasks"] * 1000)


def table(res: dict[str, dict[str, dict[str, Any]]], skipped: dict[str, str]) -> str:
    lines = [
        "| runner | workload | tasks | wall (s) | per-task overhead (ms) | ratio to in-process |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for runner, by_kind in res.items():
        for kind, r in by_kind.items():
            base = per_task_ms(res["threads"][kind])
            ratio = per_task_ms(r) / base if base > 0 else float("nan")
            label = "W1 chain" if kind == "w1" else "W2 fan-out + sum"
            lines.append(
                f"| {runner} | {label} | {r['tasks']} | {r['wall']:.3f} | "
                f"{per_task_ms(r):.2f} | {ratio:.1f} |"
            )
    for runner, why in skipped.items():
        lines.append(f"| {runner} | not measured: {why} | | | | |")
    return "\n".join(lines)


def render(body: str, args: argparse.Namespace, load: tuple[float, float]) -> str:
    mach = overhead.machine()
    return f"""{BEGIN}
## Tool runners

Generated by `benchmarks/runners.py` (`.venv/bin/python benchmarks/runners.py --write
docs/benchmarks.md`) on {mach["date"]}, commit {mach["commit"]}, {mach["cpus"]} CPUs
({mach["cpu"]}; load average {load[0]:.1f} when it started, {load[1]:.1f} when it ended: the
machine is shared, so the isolated runners' figures, dominated by interpreter start-up, swell
with the load). The cost of running each tool call through a runner
(`flowfed run --executor ...`), on W1 and W2 of the table above. `threads` is the
in-process engine ({BASELINE_TASKS} tasks); the isolated runners start one
`python -m flowfed.runtime` per task and drive it over the runtime protocol, so they run
{args.tasks} tasks. **Per-task overhead** = (wall - the same functions called directly) /
tasks; **ratio to in-process** divides it by the `threads` figure of the same workload. Wall times
are medians of {args.repeat} runs, each a fresh process with a fresh `FLOWFED_HOME`, cache
off. W2's fan-out runs up to the engine's worker count of tool processes at once, on
{mach["cpus"]} CPUs.

{body}

Where it goes: an isolated task pays an interpreter start, the import of flowfed and the
tool module, a WebSocket handshake (TCP for `subprocess`, a Unix socket for `sandbox`) and
the protocol's round trips (hello, welcome + config, start, status frames, output);
`sandbox` adds bubblewrap's namespace and mount set-up. The subprocess is what the figure
mostly measures, so it is paid per task whatever the tool does: the isolated runners are
for tools whose own run time dwarfs a few hundred milliseconds.
{END}"""


def write(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--tasks", type=int, default=ISOLATED_TASKS, help="tasks per isolated run")
    ap.add_argument("--write", metavar="PATH", help="also write the table into this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--runner", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        out = worker(args.worker, args.tasks, args.runner, Path(args.workdir))
        print(json.dumps(out))
        return 0

    load_before = os.getloadavg()[0]
    runners = ["threads", "subprocess"]
    skipped: dict[str, str] = {}
    if shutil.which("bwrap"):
        runners.append("sandbox")
    else:
        skipped["sandbox"] = "bubblewrap is not installed"
    why = container_ready()
    if why is None:
        runners.append("container")
    else:
        skipped["container"] = why
    res: dict[str, dict[str, dict[str, Any]]] = {}
    for runner in runners:
        n = BASELINE_TASKS if runner == "threads" else args.tasks
        repeat = max(args.repeat, 5) if runner == "threads" else args.repeat
        res[runner] = {}
        for kind in ("w1", "w2"):
            print(f"[runners] {runner} {kind} n={n} x{repeat} ...", file=sys.stderr)
            res[runner][kind] = measure(kind, n, runner, repeat)
    body = table(res, skipped)
    print(body)
    if args.write:
        write(Path(args.write), render(body, args, (load_before, os.getloadavg()[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
