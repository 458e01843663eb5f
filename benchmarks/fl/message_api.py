"""flowfed ``--simulate`` beside Flower's Message API at 3, 10 and 50 clients.

    .venv/bin/python benchmarks/fl/message_api.py [--sizes 3,10,50] [--write docs/benchmarks.md]

For each size N: the hospitals of ``examples/breast_cancer/make_data.py --hospitals N``
(seed 41, the example's), then

- Flower: ``benchmarks/fl/flower_message.py --nodes N`` (its own venv);
- flowfed: ``flowfed run examples/breast_cancer/flow.yaml --simulate --json --nodes
  DIR/nodes.yaml -p datasets=*:breast -p rounds=R``, its own ``FLOWFED_HOME``;

with the flow's hyperparameters (5 local epochs, learning rate 0.5, FedAvg) and R = 30 at
3 clients, 10 above. Both peak memories are the whole process tree's RSS
(``benchmarks/fl/memory.py``). Accuracy is the final model's on the pooled test rows;
"max |Δw|" is the largest difference between the two final global models' weights.
Prints one JSON object; ``--write FILE`` replaces the table between
``<!-- fl-message:begin -->`` and ``<!-- fl-message:end -->``.
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

FLOW = ROOT / "examples" / "breast_cancer" / "flow.yaml"
BEGIN, END = "<!-- fl-message:begin -->", "<!-- fl-message:end -->"


def _measured(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    sampler = PeakSampler(proc.pid).start()
    out, _ = proc.communicate()
    peak = sampler.stop() / 2**20
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed with exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak


def flowfed(n: int, rounds: int, data: Path) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="flowfed-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    env["FLOWFED_HOME"] = str(home)
    cmd = [str(ROOT / ".venv" / "bin" / "flowfed"), "run", str(FLOW), "--simulate", "--json",
           "--nodes", str(data / "nodes.yaml"), "-p", "datasets=*:breast", "-p",
           f"rounds={rounds}"]  # fmt: skip
    t = time.perf_counter()
    result, peak = _measured(cmd, env)
    wall = time.perf_counter() - t
    s = result["summary"]
    from flowfed.api import load_artifact

    model = load_artifact(s["model"]["id"], database_url=f"sqlite:///{home / 'flowfed.db'}",
                          artifacts_url=str(home / "artifacts"))  # fmt: skip
    weights = [float(v) for w in model.get_weights() for v in list(w.ravel())]
    return {"seconds_per_round": s["seconds_per_round"], "peak_rss_mb": peak, "wall_s": wall,
            "accuracy": s["metrics"]["pooled"]["accuracy"], "weights": weights}  # fmt: skip


def flower(n: int, rounds: int) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "flower_message.py"), "--nodes", str(n), "--rounds",
           str(rounds), "--learning-rate", "0.5", "--local-epochs", "5"]  # fmt: skip
    t = time.perf_counter()
    result, peak = _measured(cmd, dict(os.environ))
    result["wall_s"] = time.perf_counter() - t
    result["peak_rss_mb"] = max(peak, result["peak_rss_mb"])
    result["accuracy"] = result["metrics"]["pooled"]["accuracy"]
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | rounds | Flower s/round | flowfed s/round | speed-up | Flower peak MB | "
        "flowfed peak MB | Flower accuracy | flowfed accuracy | max abs weight diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl, ff = r["flower"], r["flowfed"]
        diff = max(abs(a - b) for a, b in zip(fl["weights"], ff["weights"], strict=True))
        speedup = fl["seconds_per_round"] / ff["seconds_per_round"]
        lines.append(
            f"| {r['nodes']} | {r['rounds']} | {fl['seconds_per_round']:.4f} | "
            f"{ff['seconds_per_round']:.4f} | {speedup:.1f}x | "
            f"{fl['peak_rss_mb']:.0f} | {ff['peak_rss_mb']:.0f} | {fl['accuracy']:.4f} | "
            f"{ff['accuracy']:.4f} | {diff:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="3,10,50")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples" / "breast_cancer"))
    import make_data  # type: ignore[import-not-found]

    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        rounds = 30 if n <= 3 else 10
        data = Path(tempfile.mkdtemp(prefix=f"bench-{n}-"))
        make_data.make_data(data, hospitals=n)
        rows.append({"nodes": n, "rounds": rounds, "flower": flower(n, rounds),
                     "flowfed": flowfed(n, rounds, data)})  # fmt: skip
        print(table(rows[-1:]), file=sys.stderr)
    text = table(rows)
    print(json.dumps({"rows": rows, "table": text}))
    if args.write:
        doc = args.write.read_text()
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc,
                         flags=re.S)  # fmt: skip
        else:
            doc += "\n" + block + "\n"
        args.write.write_text(doc)


if __name__ == "__main__":
    main()
