"""Peak memory of ``flowfed run --simulate`` at many clients (issue 21: 1,000).

    .venv/bin/python benchmarks/fl/memory_scale.py [--sizes 100,1000] [--rounds 10]
        [--src OTHER_CHECKOUT/src] [--write docs/benchmarks.md]

The breast cancer data has 114 test rows, so ``make_data.py`` refuses more than 114
hospitals; this writes synthetic ones instead: per client 40 rows of 30 standard-normal
features and a 0/1 target from a fixed linear model plus noise (seed 0), and a flow that
loads each client's table and trains a federated logistic regression on it (FedAvg, 5
local epochs, learning rate 0.5; every client every round). Each run is a subprocess
whose whole process tree's RSS is sampled (``memory.py``), with its own ``FLOWFED_HOME``.
``--src`` runs the same with another checkout's ``src`` first on ``PYTHONPATH`` (the
before/after table of docs/benchmarks.md). Prints one JSON object; ``--write FILE``
replaces the table between ``<!-- fl-memory:begin -->`` and ``<!-- fl-memory:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from memory import PeakSampler  # noqa: E402

BEGIN, END = "<!-- fl-memory:begin -->", "<!-- fl-memory:end -->"


def write_clients(n: int, out: Path, rows: int = 40, features: int = 30) -> Path:
    """``n`` synthetic clients, their nodes layout and the flow; returns the flow file."""
    import numpy as np
    import pandas as pd
    import yaml

    rng = np.random.default_rng(0)
    w = rng.normal(size=features)
    layout = {}
    for i in range(n):
        name = f"h{i:04d}"
        (out / name).mkdir(parents=True, exist_ok=True)
        x = rng.normal(size=(rows, features))
        y = (x @ w + rng.normal(size=rows) > 0).astype(int)
        table = pd.DataFrame(x.round(4), columns=[f"f{j}" for j in range(features)])
        table["target"] = y
        table.to_csv(out / name / "data.csv", index=False)
        layout[name] = {"data": f"{name}/data.csv"}
    (out / "nodes.yaml").write_text(yaml.safe_dump({"nodes": layout}))
    flow = {
        "name": "Memory Scale",
        "imports": ["flowfed.tools.library"],
        "nodes": "nodes.yaml",
        "config": {"datasets": [f"{k}:data" for k in layout], "rounds": 3},
        "steps": [
            {"name": "Load", "tool": "flowfed.node_dataset", "on": "each-dataset",
             "outputs": ["train"]},
            {"name": "Federated Training", "kind": "federated",
             "tool": "flowfed.logistic_regression", "inputs": {"train": "train"},
             "params": {"learning_rate": 0.5},
             "federated": {"rounds": "${config.rounds}", "local_epochs": 5},
             "outputs": ["model"]},
        ],
    }  # fmt: skip
    path = out / "flow.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def measure(flow: Path, rounds: int, src: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    env["FLOWFED_HOME"] = tempfile.mkdtemp(prefix="flowfed-mem-")
    env["PYTHONPATH"] = src or str(ROOT / "src")
    cmd = [sys.executable, "-m", "flowfed", "run", str(flow), "--simulate", "--json",
           "-p", f"rounds={rounds}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    sampler = PeakSampler(proc.pid).start()
    out, err = proc.communicate()
    peak = sampler.stop() / 2**20
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if result.get("status") != "success":
        raise RuntimeError(f"run failed (exit {proc.returncode}): {err[-2000:]}")
    return {
        "peak_mb": round(peak, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "seconds_per_round": result["summary"].get("seconds_per_round"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--src", action="append", default=[], help="another checkout's src")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="flowfed-clients-") as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            flow = write_clients(n, Path(tmp) / str(n))
            for src in [*args.src, None]:
                got = measure(flow, args.rounds, src)
                rows.append({"clients": n, "rounds": args.rounds,
                             "code": src or "this checkout", **got})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"rows": rows}))
    if args.write:
        table = ["| clients | rounds | code | peak MB | MB per client | s / round |",
                 "|---:|---:|---|---:|---:|---:|"]  # fmt: skip
        for r in rows:
            table.append(
                f"| {r['clients']} | {r['rounds']} | {r['code']} | {r['peak_mb']:.0f} | "
                f"{r['peak_mb'] / r['clients']:.2f} | {r['seconds_per_round']:.3f} |"
            )
        text = args.write.read_text()
        block = BEGIN + "\n" + "\n".join(table) + "\n" + END
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text,
                          flags=re.S)  # fmt: skip
        else:
            text += "\n" + block + "\n"
        args.write.write_text(text)


if __name__ == "__main__":
    main()
