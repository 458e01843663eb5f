"""The main job on sandboxed node agents against in-process ones; measured, not asserted.

    .venv/bin/python benchmarks/node_sandbox.py [--repeat N] [--write docs/benchmarks.md]

Runs ``flowfed run examples/breast_cancer/flow.yaml --json`` (three local node agents)
with ``--node-runner sandbox`` (the default: bubblewrap, warm workers) and with
``--node-runner inprocess``, interleaved, each in a fresh ``$FLOWFED_HOME``. It reports
the wall time of the command, the run's own duration and its ms per federated round (the
run's ``summary.seconds_per_round``), medians over the repeats, and the ratio sandbox /
in-process. ``--write`` replaces the ``<!-- node-sandbox:begin/end -->`` block of the
given Markdown file (or appends it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "examples" / "breast_cancer" / "flow.yaml"
BEGIN, END = "<!-- node-sandbox:begin -->", "<!-- node-sandbox:end -->"


def one(runner: str) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix=f"flowfed-bench-{runner}-"))
    env = {**os.environ, "FLOWFED_HOME": str(home)}
    cmd = [sys.executable, "-m", "flowfed", "run", str(FLOW), "--json", "--node-runner", runner]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{runner}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return {
        "wall_s": wall,
        "run_s": float(out["duration_s"]),
        "round_ms": 1000 * float(out["summary"]["seconds_per_round"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=Path, help="replace the node-sandbox block of this file")
    ns = ap.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("needs bubblewrap (apt-get install bubblewrap)")
    runs: dict[str, list[dict[str, float]]] = {"inprocess": [], "sandbox": []}
    one("sandbox")  # warm the page cache and the example's data once
    for _ in range(ns.repeat):
        for runner in runs:  # interleaved, so drift on a shared machine hits both
            runs[runner].append(one(runner))
    med = {
        r: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for r, rows in runs.items()
    }
    lines = [
        "### The main job on sandboxed node agents",
        "",
        f"`python benchmarks/node_sandbox.py --repeat {ns.repeat}` on {platform.machine()}, "
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        "`flowfed run examples/breast_cancer/flow.yaml --json` (three local node agents, "
        "30 rounds), medians, interleaved runs.",
        "",
        "| node runner | command wall (s) | run duration (s) | ms per round |",
        "|---|---:|---:|---:|",
    ]
    for runner, m in med.items():
        lines.append(
            f"| {runner} | {m['wall_s']:.2f} | {m['run_s']:.2f} | {m['round_ms']:.0f} |"
        )
    ratio = {k: med["sandbox"][k] / med["inprocess"][k] for k in med["sandbox"]}
    lines += [
        f"| **sandbox / inprocess** | **{ratio['wall_s']:.2f}x** | **{ratio['run_s']:.2f}x** "
        f"| **{ratio['round_ms']:.2f}x** |",
        "",
        "Before warm workers, the same job took ~111 s on sandboxed nodes (a new bubblewrap "
        "sandbox and interpreter per task).",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.write is not None:
        doc = ns.write.read_text() if ns.write.exists() else ""
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc and END in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
        ns.write.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
