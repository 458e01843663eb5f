"""The FedAvg benchmark in one command: Flower's simulation against flowfed's two modes.

    .venv/bin/python benchmarks/fl/run.py [--write docs/benchmarks.md] [--only a,b,...]
        [--flow examples/breast_cancer/flow.yaml] [--flower-at-scale] [--timeout 1800]

Runs, one after the other, each as a subprocess whose whole process tree is sampled for
peak resident memory (benchmarks/fl/memory.py):

- ``flower``: ``benchmarks/fl/flower_fedavg.py`` (Flower's ``run_simulation`` on Ray, in
  its own venv ``.bench-venvs/flower``), 3 clients, with the flow's hyperparameters;
- ``simulate``: ``flowfed run FLOW --simulate --json`` (in-process nodes);
- ``node``: ``flowfed run FLOW --json`` (node agent processes over WebSockets);
- ``scale``: ``--simulate`` with ``--param nodes=10`` and ``--param nodes=100``
  (and Flower at 10 and 100 clients too with ``--flower-at-scale``).

flowfed's numbers come from its ``--json`` summary: ``summary.metrics.pooled.accuracy``
and ``.auc``, ``summary.rounds``, ``summary.seconds_per_round``, and ``summary.startup_s``
when present (else start-up is the wall time not spent in rounds). A mode whose command
fails is reported "not available" with the reason, and the others go on. Prints one JSON
object; ``--write FILE`` also replaces the table between ``<!-- fl:begin -->`` and
``<!-- fl:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from memory import PeakSampler  # noqa: E402

DEFAULT_FLOW = ROOT / "examples" / "breast_cancer" / "flow.yaml"
MODES = ("flower", "simulate", "node", "scale")
BEGIN, END = "<!-- fl:begin -->", "<!-- fl:end -->"

#: Hyperparameters when the flow file cannot tell (flowfed.logistic_regression's defaults
#: for the rate and L2; 30 rounds as the issue sets them).
DEFAULTS = {"rounds": 30, "local_epochs": 5, "learning_rate": 0.1, "l2": 0.0}


@dataclass
class Measurement:
    """One mode's result, or why it is not available."""

    mode: str
    nodes: int
    available: bool = False
    reason: str | None = None
    rounds: int | None = None
    startup_s: float | None = None
    seconds_per_round: float | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    accuracy: float | None = None
    auc: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measured_run(
    cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str, float, float]:
    """Run ``cmd``; (exit code, stdout, stderr, wall seconds, peak tree RSS in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        sampler = PeakSampler(proc.pid).start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -9
            err.write(f"\ntimed out after {timeout:.0f} s")
        wall = time.perf_counter() - t0
        peak = sampler.stop()
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read(), wall, peak / 2**20


def _reason(code: int, stderr: str, stdout: str = "") -> str:
    """The last readable line a failed command wrote (Rich's box drawing stripped)."""
    text = [ln.strip(" │╭╮╰╯─┃━\t") for ln in stderr.splitlines()]
    lines = [ln for ln in text if re.search(r"[A-Za-z]", ln)]
    if not lines:
        report = _last_json(stdout) or {}
        errors = report.get("errors") or []
        lines = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
    why = lines[-1] if lines else "no output"
    return f"exit {code}: {why}".replace("|", "/")[:200]


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    try:
        value = json.loads(stdout)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ----------------------------------------------------------------------------- the flow


def flow_hyperparameters(flow: Path) -> dict[str, Any]:
    """Rounds, local epochs, learning rate and L2 of the flow's federated step (best effort).

    Reads the first step with ``kind: federated`` (or a ``rounds`` setting), resolving
    ``${config.NAME}`` from the flow's ``config``; anything it cannot find keeps
    :data:`DEFAULTS`. The ``source`` key says which.
    """
    found = dict(DEFAULTS)
    found["source"] = "defaults"
    try:
        import yaml

        spec = yaml.safe_load(flow.read_text())
    except Exception:  # no PyYAML, no file, or not YAML: the defaults stand
        return found
    if not isinstance(spec, dict):
        return found
    config = spec.get("config") or {}

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            m = re.fullmatch(r"\$\{config\.([A-Za-z0-9_]+)\}", value.strip())
            if m:
                return config.get(m.group(1), value)
        return value

    for step in spec.get("steps") or []:
        if not isinstance(step, dict):
            continue
        fed = step.get("federated") if isinstance(step.get("federated"), dict) else {}
        if step.get("kind") != "federated" and not fed and "rounds" not in step:
            continue
        settings = {**step, **fed}
        params = {**(step.get("params") or {}), **(fed.get("params") or {})}
        for key in ("rounds", "local_epochs"):
            if key in settings:
                found[key] = int(resolve(settings[key]))
        if "local_epochs" not in settings and "epochs" in params:
            found["local_epochs"] = int(resolve(params["epochs"]))
        for key in ("learning_rate", "l2"):
            if key in params:
                found[key] = float(resolve(params[key]))
        found["source"] = f"{flow.name}, step '{step.get('name')}'"
        break
    return found


# ----------------------------------------------------------------------------- the modes


def run_flower(hp: dict[str, Any], nodes: int, timeout: float) -> Measurement:
    """Flower's simulation through flower_fedavg.py (creates its venv on first use)."""
    m = Measurement("Flower simulation", nodes)
    cmd = [
        sys.executable,
        str(HERE / "flower_fedavg.py"),
        "--rounds",
        str(hp["rounds"]),
        "--local-epochs",
        str(hp["local_epochs"]),
        "--learning-rate",
        str(hp["learning_rate"]),
        "--l2",
        str(hp["l2"]),
        "--nodes",
        str(nodes),
    ]
    code, out, err, wall, peak = measured_run(cmd, env=dict(os.environ), cwd=ROOT, timeout=timeout)
    data = _last_json(out) if code == 0 else None
    if data is None:
        m.reason = _reason(code, err)
        return m
    m.available = True
    m.rounds = data["rounds"]
    m.startup_s = data["startup_s"]
    m.seconds_per_round = data["seconds_per_round"]
    m.wall_s = wall
    m.peak_rss_mb = peak
    m.accuracy = data["metrics"]["pooled"]["accuracy"]
    m.auc = data["metrics"]["pooled"]["auc"]
    m.extra = {"framework": data["framework"], "peak_rss_mb_inner": data["peak_rss_mb"]}
    return m


def run_flowfed(
    label: str, flow: Path, extra: list[str], nodes: int, timeout: float
) -> Measurement:
    """``flowfed run FLOW --json [extra]`` in a fresh home; its summary's numbers."""
    m = Measurement(label, nodes)
    home = Path(tempfile.mkdtemp(prefix="flowfed-fl-bench-"))
    env = dict(os.environ, FLOWFED_HOME=str(home), PYTHONUNBUFFERED="1")
    for var in ("FLOWFED_DATABASE_URL", "FLOWFED_ARTIFACTS_URL", "FLOWFED_SERVER"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "flowfed", "run", str(flow), "--json", *extra]
    code, out, err, wall, peak = measured_run(cmd, env=env, cwd=ROOT, timeout=timeout)
    report = _last_json(out)
    summary = (report or {}).get("summary") if code == 0 else None
    if not isinstance(summary, dict):
        m.reason = _reason(code, err, out) if code != 0 else "the --json report has no 'summary'"
        return m
    try:
        pooled = summary["metrics"]["pooled"]
        m.accuracy = float(pooled["accuracy"])
        m.auc = float(pooled["auc"])
        m.rounds = int(summary["rounds"])
        m.seconds_per_round = float(summary["seconds_per_round"])
    except (KeyError, TypeError, ValueError) as exc:
        m.reason = f"the --json summary lacks {exc}"
        return m
    m.available = True
    m.wall_s = wall
    m.peak_rss_mb = peak
    startup = summary.get("startup_s")
    m.startup_s = (
        float(startup)
        if isinstance(startup, int | float)
        else max(0.0, wall - m.rounds * m.seconds_per_round)
    )
    m.extra = {"startup_from": "summary" if isinstance(startup, int | float) else "wall - rounds"}
    return m


# ----------------------------------------------------------------------------- the table


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or ours <= 0:
        return "—"
    return f"{theirs / ours:.1f}x"


def table(results: list[Measurement], hp: dict[str, Any]) -> str:
    """The markdown block written between the fl markers."""
    flower = {m.nodes: m for m in results if m.mode.startswith("Flower") and m.available}
    lines = [
        f"FedAvg logistic regression on the breast cancer split of "
        f"`examples/breast_cancer/make_data.py`: {hp['rounds']} rounds, {hp['local_epochs']} "
        f"local epochs of full-batch gradient descent, learning rate {hp['learning_rate']}, "
        f"L2 {hp['l2']} (from {hp['source']}). Peak memory is the whole process tree's RSS. "
        "The ratios say how many times Flower's figure is flowfed's, against Flower at the "
        "same number of nodes (higher is better for flowfed).",
        "",
        "Targets (issue 5): `--simulate` at least 10x faster per round than Flower with the "
        "same accuracy, start-up under 1 s and peak memory under 300 MB; node mode no slower "
        "per round than Flower's simulation. Flower's start-up runs to the end of its first "
        "round less one steady round (Ray starts its actors during round 1); its seconds per "
        "round are rounds 2..N.",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        "`.venv/bin/python benchmarks/fl/run.py --write docs/benchmarks.md`.",
        "",
        "| mode | nodes | start-up s | s / round | peak MB | accuracy | ROC AUC "
        "| s / round vs Flower | start-up vs Flower | memory vs Flower |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        if not m.available:
            lines.append(
                f"| {m.mode} | {m.nodes} | not available: {m.reason} | | | | | | | |".replace(
                    "\n", " "
                )
            )
            continue
        f = flower.get(m.nodes)
        is_flower = m.mode.startswith("Flower")
        lines.append(
            f"| {m.mode} | {m.nodes} | {_num(m.startup_s, '.2f')} "
            f"| {_num(m.seconds_per_round, '.4f')} | {_num(m.peak_rss_mb, '.0f')} "
            f"| {_num(m.accuracy, '.4f')} | {_num(m.auc, '.4f')} "
            + (
                "| 1.0x | 1.0x | 1.0x |"
                if is_flower
                else (
                    f"| {_ratio(m.seconds_per_round, f.seconds_per_round if f else None)} "
                    f"| {_ratio(m.startup_s, f.startup_s if f else None)} "
                    f"| {_ratio(m.peak_rss_mb, f.peak_rss_mb if f else None)} |"
                )
            )
        )
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    """Replace the text between the fl markers in ``path`` (appending them if absent)."""
    text = path.read_text() if path.exists() else ""
    body = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n## Federated learning: flowfed and Flower\n\n" + body + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flow", type=Path, default=DEFAULT_FLOW)
    parser.add_argument("--only", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--write", type=Path, help="markdown file to update (fl markers)")
    parser.add_argument("--flower-at-scale", action="store_true", help="Flower at 10, 100 too")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per command, seconds")
    args = parser.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    flow = args.flow.resolve()
    hp = flow_hyperparameters(flow)
    results: list[Measurement] = []

    def record(m: Measurement) -> None:
        results.append(m)
        state = "ok" if m.available else f"not available ({m.reason})"
        print(f"{m.mode} ({m.nodes} nodes): {state}", file=sys.stderr, flush=True)

    if "flower" in only:
        record(run_flower(hp, 3, args.timeout))
    if "simulate" in only:
        record(run_flowfed("flowfed --simulate", flow, ["--simulate"], 3, args.timeout))
    if "node" in only:
        record(run_flowfed("flowfed node mode", flow, [], 3, args.timeout))
    if "scale" in only:
        for n in (10, 100):
            if args.flower_at_scale:
                record(run_flower(hp, n, args.timeout))
            record(
                run_flowfed(
                    "flowfed --simulate",
                    flow,
                    ["--simulate", "--param", f"nodes={n}"],
                    n,
                    args.timeout,
                )
            )
    block = table(results, hp)
    if args.write:
        write_block(args.write, block)
    print(json.dumps({"hyperparameters": hp, "results": [asdict(m) for m in results]}, indent=1))


if __name__ == "__main__":
    main()
