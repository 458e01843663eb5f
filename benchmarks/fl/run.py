"""The FedAvg benchmark in one command: Flower's simulation against flowfed's two modes.

    .venv/bin/python benchmarks/fl/run.py [--write docs/benchmarks.md] [--only a,b,...]
        [--flow examples/breast_cancer/flow.yaml] [--scale-nodes 10,100] [--scale-rounds 10]
        [--iid] [--flower-at-scale] [--timeout 1800]

Runs, one after the other, each as a subprocess whose whole process tree is sampled for
peak resident memory (benchmarks/fl/memory.py):

- ``flower``: ``benchmarks/fl/flower_fedavg.py`` (Flower's ``run_simulation`` on Ray, in
  its own venv ``.bench-venvs/flower``), 3 clients, with the flow's hyperparameters;
- ``simulate``: ``flowfed run FLOW --simulate --json`` (3 in-process nodes);
- ``node``: ``flowfed run FLOW --json`` (3 node agent processes over WebSockets);
- ``scale``: ``--simulate`` at 10 and 100 nodes for 10 rounds, on the hospitals
  ``examples/breast_cancer/make_data.py --hospitals N`` writes (``--nodes DIR/nodes.yaml
  -p datasets=*:breast -p rounds=R``); Flower at the same sizes too with
  ``--flower-at-scale``.

Every flowfed run gets its own ``FLOWFED_HOME``. flowfed's numbers come from its ``--json``
summary: ``summary.rounds``, ``summary.seconds_per_round``, ``summary.startup_s`` (process
start to engine start), ``summary.mode`` and ``summary.metrics.pooled.{accuracy,roc_auc}``
(``summary.metrics.centralized`` is kept too). A mode whose command fails is reported "not
available" with the reason, and the others go on. Prints one JSON object; ``--write FILE``
also replaces the table between ``<!-- fl:begin -->`` and ``<!-- fl:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    centralized_accuracy: float | None = None
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


def run_flower(
    hp: dict[str, Any], nodes: int, timeout: float, *, rounds: int | None = None, iid: bool = False
) -> Measurement:
    """Flower's simulation through flower_fedavg.py (creates its venv on first use)."""
    m = Measurement("Flower simulation", nodes)
    cmd = [
        sys.executable,
        str(HERE / "flower_fedavg.py"),
        "--rounds",
        str(rounds or hp["rounds"]),
        "--local-epochs",
        str(hp["local_epochs"]),
        "--learning-rate",
        str(hp["learning_rate"]),
        "--l2",
        str(hp["l2"]),
        "--nodes",
        str(nodes),
        *(["--iid"] if iid else []),
    ]
    code, out, err, wall, peak = measured_run(cmd, env=dict(os.environ), cwd=ROOT, timeout=timeout)
    data = _last_json(out) if code == 0 else None
    if data is None:
        m.reason = _reason(code, err)
        return m
    try:
        pooled = data["metrics"]["pooled"]
        m.accuracy = float(pooled["accuracy"])
        m.auc = float(pooled["roc_auc"])
        m.rounds = int(data["rounds"])
        m.startup_s = float(data["startup_s"])
        m.seconds_per_round = float(data["seconds_per_round"])
    except (KeyError, TypeError, ValueError) as exc:
        m.reason = f"flower_fedavg.py's JSON lacks {exc}"
        return m
    m.available = True
    m.wall_s = wall
    # The tree sampled here includes the small wrapper process that starts the Flower venv's
    # interpreter; the inner figure (that interpreter, Ray's daemons and workers) is kept too.
    m.peak_rss_mb = peak
    m.extra = {
        "framework": data.get("framework"),
        "peak_rss_mb_inner": data.get("peak_rss_mb"),
        "first_round_s": data.get("first_round_s"),
        "to_first_round_s": data.get("to_first_round_s"),
        "failures": data.get("failures"),
    }
    return m


def run_flowfed(
    label: str,
    flow: Path,
    extra: list[str],
    nodes: int,
    timeout: float,
    *,
    mode: str | None = None,
) -> Measurement:
    """``flowfed run FLOW --json [extra]`` in a fresh ``FLOWFED_HOME``; its summary's numbers.

    ``mode`` (``simulate`` or ``nodes``), when given, must be the summary's ``mode``: a
    run that silently fell back to the other mode would measure the wrong thing.
    """
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
        metrics = summary["metrics"]
        pooled = metrics["pooled"]
        m.accuracy = float(pooled["accuracy"])
        m.auc = float(pooled["roc_auc"])
        m.rounds = int(summary["rounds"])
        m.seconds_per_round = float(summary["seconds_per_round"])
        m.startup_s = float(summary["startup_s"])
        ran_as = str(summary["mode"])
    except (KeyError, TypeError, ValueError) as exc:
        m.reason = f"the --json summary lacks {exc}"
        return m
    if mode is not None and ran_as != mode:
        m.reason = f"ran in mode {ran_as!r}, not {mode!r}"
        return m
    central = metrics.get("centralized") or {}
    if isinstance(central.get("accuracy"), int | float):
        m.centralized_accuracy = float(central["accuracy"])
    m.available = True
    m.wall_s = wall
    m.peak_rss_mb = peak
    m.extra = {
        "mode": ran_as,
        "sites": len(metrics.get("sites") or {}),
        "centralized": central,
        "pooled_rows": pooled.get("rows"),
    }
    return m


def make_hospitals(n: int, *, iid: bool, timeout: float) -> tuple[Path | None, str | None]:
    """``make_data.py --hospitals n`` into a fresh folder: (its nodes.yaml, None) or (None, why)."""
    out = Path(tempfile.mkdtemp(prefix=f"flowfed-fl-bench-{n}-"))
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "breast_cancer" / "make_data.py"),
        "--out",
        str(out),
        "--hospitals",
        str(n),
        "--quiet",
        *(["--iid"] if iid else []),
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    layout = out / "nodes.yaml"
    if res.returncode != 0 or not layout.exists():
        return None, "make_data.py " + _reason(res.returncode, res.stderr, res.stdout)
    return layout, None


def repeated(measure: Callable[[], Measurement], times: int) -> Measurement:
    """``measure()`` run ``times`` times: the median of each figure over the runs that worked.

    The machine may be shared, so one run can be slowed by others; the median of a few
    is steadier. Accuracy and AUC are deterministic. Every run's seconds per round,
    start-up and peak memory stay in ``extra["runs"]``; a run that failed makes the whole
    measurement "not available" (a flaky mode is worth knowing about).
    """
    runs = [measure() for _ in range(times)]
    failed = [r for r in runs if not r.available]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    first = runs[0]
    out = Measurement(first.mode, first.nodes, available=True, rounds=first.rounds)
    for name in ("startup_s", "seconds_per_round", "wall_s", "peak_rss_mb", "accuracy", "auc"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        setattr(out, name, statistics.median(values) if values else None)
    out.centralized_accuracy = first.centralized_accuracy
    out.extra = dict(first.extra)
    out.extra["runs"] = [
        {
            "startup_s": r.startup_s,
            "seconds_per_round": r.seconds_per_round,
            "wall_s": r.wall_s,
            "peak_rss_mb": r.peak_rss_mb,
        }
        for r in runs
    ]
    return out


# ----------------------------------------------------------------------------- the table


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or ours <= 0:
        return "—"
    return f"{theirs / ours:.1f}x"


def verdicts(results: list[Measurement]) -> list[str]:
    """One line per target of issue 5 that these results can judge: the figures and met/missed."""
    by = {(m.mode, m.nodes): m for m in results if m.available}
    flower = by.get(("Flower simulation", 3))
    sim = by.get(("flowfed --simulate", 3))
    node = by.get(("flowfed node mode", 3))
    lines: list[str] = []

    def say(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else 'missed'}: {text}")

    if sim and flower and sim.seconds_per_round and flower.seconds_per_round:
        r = flower.seconds_per_round / sim.seconds_per_round
        say(r >= 10, f"`--simulate` per round {r:.1f}x faster than Flower (target at least 10x)")
    if sim and flower and sim.accuracy is not None and flower.accuracy is not None:
        d = abs(sim.accuracy - flower.accuracy)
        say(d < 1e-9, f"same accuracy as Flower ({sim.accuracy:.4f} vs {flower.accuracy:.4f})")
    if sim and sim.startup_s is not None:
        say(sim.startup_s < 1.0, f"`--simulate` start-up {sim.startup_s:.2f} s (target under 1 s)")
    if sim and sim.peak_rss_mb is not None:
        say(
            sim.peak_rss_mb < 300,
            f"`--simulate` peak memory {sim.peak_rss_mb:.0f} MB (target under 300 MB)",
        )
    if node and flower and node.seconds_per_round and flower.seconds_per_round:
        say(
            node.seconds_per_round <= flower.seconds_per_round,
            f"node mode {node.seconds_per_round:.4f} s per round against Flower's "
            f"{flower.seconds_per_round:.4f} s (target: no slower)",
        )
    return lines


def table(
    results: list[Measurement],
    hp: dict[str, Any],
    *,
    iid: bool = False,
    measured_at: float | None = None,
    repeat: int = 1,
) -> str:
    """The markdown block written between the fl markers (``measured_at``: unix time)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(measured_at))
    at_scale = any(m.mode.startswith("Flower") and m.nodes != 3 for m in results)
    flower = {m.nodes: m for m in results if m.mode.startswith("Flower") and m.available}
    split = "IID" if iid else "Dirichlet(0.5) label-skew"
    lines = [
        f"FedAvg logistic regression on the breast cancer hospitals of "
        f"`examples/breast_cancer/make_data.py` ({split} split, seed 0): {hp['local_epochs']} "
        f"local epochs of full-batch gradient descent per round, learning rate "
        f"{hp['learning_rate']}, L2 {hp['l2']} (from {hp['source']}), global standardization; "
        f"{hp['rounds']} rounds at 3 nodes, fewer at 10 and 100 (the rounds column). "
        "Accuracy and ROC AUC are the final model's on all hospitals' test rows pooled (114). "
        "Peak memory is the whole process tree's RSS, sampled every 50 ms (node mode: the "
        "CLI, its embedded server and the node agent processes; Flower: its interpreter, "
        "Ray's daemons and workers). The ratios say how many times Flower's figure is "
        "flowfed's, against Flower at the same number of nodes (higher is better for "
        "flowfed). flowfed's start-up is its summary's `startup_s` (process start to engine "
        "start, node agents started); Flower's runs to the end of its first round less one "
        "steady round (Ray starts its actors during round 1), and its seconds per round are "
        "rounds 2..N. Wall is the whole command, data loading, validation and packaging "
        "included.",
        "",
        "Targets (issue 5): `--simulate` at least 10x faster per round than Flower's "
        "simulation with the same accuracy, start-up under 1 s and peak memory under 300 MB; "
        "node mode (real processes over WebSockets) no slower per round than Flower's "
        "in-process simulation.",
        "",
        f"Measured {stamp} on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        + (
            f"the median of {repeat} runs of each row (every run's figures are in the JSON "
            "run.py prints)"
            if repeat > 1
            else "one run of each row"
        )
        + " on a machine other sessions share, so expect some spread. Reproduce with "
        "`make bench-fl` (3 runs of each row, Flower at every size), or this table's "
        "`.venv/bin/python benchmarks/fl/run.py"
        + (" --flower-at-scale" if at_scale else "")
        + f" --repeat {repeat} --write docs/benchmarks.md`.",
        "",
        "| mode | nodes | rounds | start-up s | s / round | wall s | peak MB | accuracy "
        "| ROC AUC | s / round vs Flower | start-up vs Flower | memory vs Flower |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        if not m.available:
            lines.append(
                f"| {m.mode} | {m.nodes} | not available: {m.reason} | | | | | | | | | |".replace(
                    "\n", " "
                )
            )
            continue
        f = flower.get(m.nodes)
        is_flower = m.mode.startswith("Flower")
        lines.append(
            f"| {m.mode} | {m.nodes} | {_num(m.rounds, 'd')} | {_num(m.startup_s, '.2f')} "
            f"| {_num(m.seconds_per_round, '.4f')} | {_num(m.wall_s, '.1f')} "
            f"| {_num(m.peak_rss_mb, '.0f')} "
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
    central = next((m.centralized_accuracy for m in results if m.centralized_accuracy), None)
    if central is not None:
        lines += [
            "",
            f"Centralized logistic regression on the same split (the flow's reference step): "
            f"accuracy {central:.4f}.",
        ]
    judged = verdicts(results)
    if judged:
        lines += ["", "Against the targets of issue 5 (the 3-node rows above):", "", *judged]
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


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"node counts must be >= 1: {text!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--only`` checked against :data:`MODES`)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--flow", type=Path, default=DEFAULT_FLOW)
    parser.add_argument("--only", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--write", type=Path, help="markdown file to update (fl markers)")
    parser.add_argument(
        "--scale-nodes", type=_sizes, default=[10, 100], help="node counts for 'scale'"
    )
    parser.add_argument("--scale-rounds", type=int, default=10, help="rounds for 'scale'")
    parser.add_argument("--iid", action="store_true", help="IID hospitals for 'scale'")
    parser.add_argument(
        "--flower-at-scale", action="store_true", help="Flower at the scale sizes too"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per mode; the table shows medians"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per command, seconds")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rebuild the table from the JSON a previous run printed",
    )
    args = parser.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(MODES)
    if unknown or not only:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.scale_rounds < 1:
        parser.error(f"--scale-rounds must be >= 1, got {args.scale_rounds}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    args.only = set(only)
    return args


def render(path: Path) -> tuple[list[Measurement], dict[str, Any], bool, float, int]:
    """Results, hyperparameters, IID flag, time and repeat count from a previous run's JSON."""
    try:
        data = json.loads(path.read_text())
        results = [Measurement(**r) for r in data["results"]]
        hp = dict(data["hyperparameters"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--render {path}: not the JSON run.py prints ({exc})") from None
    # Runs before "measured_at" was printed: the file was written when the run ended.
    at = float(data.get("measured_at") or path.stat().st_mtime)
    return results, hp, bool(data.get("iid")), at, int(data.get("repeat") or 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        results, hp, iid, at, k = render(args.render)
        block = table(results, hp, iid=iid, measured_at=at, repeat=k)
        if args.write:
            write_block(args.write, block)
        print(block)
        return
    only = args.only
    flow = args.flow.resolve()
    hp = flow_hyperparameters(flow)
    results: list[Measurement] = []

    def record(m: Measurement) -> None:
        results.append(m)
        state = "ok" if m.available else f"not available ({m.reason})"
        print(f"{m.mode} ({m.nodes} nodes): {state}", file=sys.stderr, flush=True)

    k, timeout = args.repeat, args.timeout
    if "flower" in only:
        record(repeated(lambda: run_flower(hp, 3, timeout), k))
    if "simulate" in only:
        sim = ["--simulate"]
        record(
            repeated(
                lambda: run_flowfed("flowfed --simulate", flow, sim, 3, timeout, mode="simulate"),
                k,
            )
        )
    if "node" in only:
        record(
            repeated(
                lambda: run_flowfed("flowfed node mode", flow, [], 3, timeout, mode="nodes"), k
            )
        )
    if "scale" in only:
        for n in args.scale_nodes:
            if args.flower_at_scale:
                record(
                    repeated(
                        lambda n=n: run_flower(
                            hp, n, timeout, rounds=args.scale_rounds, iid=args.iid
                        ),
                        k,
                    )
                )
            layout, why = make_hospitals(n, iid=args.iid, timeout=timeout)
            if layout is None:
                record(Measurement("flowfed --simulate", n, reason=why))
                continue
            extra = [
                "--simulate",
                "--nodes",
                str(layout),
                "--param",
                "datasets=*:breast",
                "--param",
                f"rounds={args.scale_rounds}",
            ]
            record(
                repeated(
                    lambda n=n, extra=extra: run_flowfed(
                        "flowfed --simulate", flow, extra, n, timeout, mode="simulate"
                    ),
                    k,
                )
            )
    at = time.time()
    block = table(results, hp, iid=args.iid, measured_at=at, repeat=k)
    if args.write:
        write_block(args.write, block)
    report = {
        "measured_at": at,
        "iid": args.iid,
        "repeat": k,
        "hyperparameters": hp,
        "results": [asdict(m) for m in results],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
