"""How fast the ``flowfed`` command starts: ``flowfed --help`` beside its floor.

Each command is run ``--repeat`` times in a fresh interpreter (interleaved, so a burst of
load on the machine hits every command alike, as hyperfine's ``--warmup`` and repeated
runs do), and the wall time and the CPU time (user + system, of the child) are kept; the
table shows medians and minimums. CPU time is the steadier figure on a shared machine.

The floor is what any Typer CLI pays: the interpreter (``python -c pass``) and
``import typer``. With ``--before DIR`` (a checkout's ``src``) the same commands run on
that code too, e.g. the CLI as it was before the lazy loading:

    git archive HEAD~5 src | tar -x -C /tmp/before
    python benchmarks/cli_startup.py --before /tmp/before/src

``-X importtime`` of ``flowfed --help`` is summarised (the biggest imports, cumulative).
With ``--write PATH`` the "CLI start-up" section of PATH (between
``<!-- cli-startup:begin -->`` and ``<!-- cli-startup:end -->``) is replaced.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BEGIN, END = "<!-- cli-startup:begin -->", "<!-- cli-startup:end -->"

PY = sys.executable


def commands(before: str | None) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, argv, extra environment) of every command timed."""
    cli = [PY, "-m", "flowfed"]
    rows: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [PY, "-c", "pass"], {}),
        ("python -c 'import typer'", [PY, "-c", "import typer"], {}),
        ("flowfed --help", [*cli, "--help"], {}),
        ("flowfed runs --help", [*cli, "runs", "--help"], {}),
    ]
    if before:
        env = {"PYTHONPATH": before}
        rows += [
            ("flowfed --help (before)", [*cli, "--help"], env),
            ("flowfed runs --help (before)", [*cli, "runs", "--help"], env),
        ]
    return rows


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and child CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(repeat: int, before: str | None) -> dict[str, dict[str, float]]:
    rows = commands(before)
    for _, argv, env in rows:  # warm-up: the page cache and .pyc files
        time_once(argv, env)
    walls: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in rows}
    for _ in range(repeat):
        for label, argv, env in rows:
            wall, cpu = time_once(argv, env)
            walls[label].append(wall)
            cpus[label].append(cpu)
    return {
        label: {
            "wall_median": statistics.median(walls[label]),
            "wall_min": min(walls[label]),
            "cpu_median": statistics.median(cpus[label]),
            "cpu_min": min(cpus[label]),
        }
        for label in walls
    }


def import_profile(top: int = 8) -> list[tuple[str, float]]:
    """The biggest cumulative imports of ``flowfed --help`` (``-X importtime``), in ms."""
    res = subprocess.run(
        [PY, "-X", "importtime", "-m", "flowfed", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level and first-level imports
            rows.append((m.group(4), int(m.group(2)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def loaded_modules() -> list[str]:
    """The top-level packages ``flowfed --help`` imports (besides the standard library)."""
    code = (
        "import sys; sys.argv=['flowfed','--help']\n"
        "from flowfed.cli.main import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "import sys as s; print(sorted({m.split('.')[0] for m in s.modules}), file=s.stderr)"
    )
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    names = eval(res.stderr.strip().splitlines()[-1])  # a printed list of names
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    return [n for n in names if n not in stdlib and not n.startswith("_")]


def section(results: dict[str, dict[str, float]], profile: list[tuple[str, float]],
            modules: list[str], repeat: int) -> str:  # fmt: skip
    floor = results["python -c 'import typer'"]
    helpr = results["flowfed --help"]
    load = os.getloadavg()[0]
    lines = [
        BEGIN,
        "## CLI start-up",
        "",
        "`flowfed --help` imports Typer and the CLI's root module only: every command",
        "lives in a module of its own that is imported when the command is used, Rich's",
        "console is made on first print, and the root's help is rendered plainly (Rich's",
        "help renderer alone costs more than the budget). Measured by",
        f"`benchmarks/cli_startup.py` ({repeat} interleaved runs of each command in a fresh",
        f"interpreter, after a warm-up), Python {platform.python_version()},",
        f"{os.cpu_count()} cores, load average {load:.1f} while it ran (a shared machine:",
        "CPU time is the steadier figure).",
        "",
        "| command | wall median | wall min | CPU median | CPU min |",
        "|---|---|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(
            f"| `{label}` | {r['wall_median'] * 1000:.0f} ms | {r['wall_min'] * 1000:.0f} ms "
            f"| {r['cpu_median'] * 1000:.0f} ms | {r['cpu_min'] * 1000:.0f} ms |"
        )
    lines += [
        "",
        f"`flowfed --help` costs {helpr['cpu_median'] / floor['cpu_median']:.2f} times the CPU "
        f"time of `import typer` alone "
        f"({helpr['wall_median'] / floor['wall_median']:.2f} times its wall time): "
        "the floor of a Typer CLI. Target: ≤ 0.1 s (issue 23).",
    ]
    before = results.get("flowfed --help (before)")
    if before:
        lines.append(
            f"Before the lazy loading it was {before['wall_median'] * 1000:.0f} ms wall, "
            f"{before['cpu_median'] * 1000:.0f} ms CPU "
            f"({before['cpu_median'] / helpr['cpu_median']:.1f} times the CPU time of now)."
        )
    lines += [
        "",
        "Third-party packages `flowfed --help` imports: "
        + ", ".join(f"`{m}`" for m in modules)
        + " (no SQLAlchemy, FastAPI, numpy, pydantic, httpx or Rich; a test checks it).",
        "",
        "Biggest imports of `flowfed --help` (`python -X importtime`, cumulative):",
        "",
        "| module | ms |",
        "|---|---|",
        *(f"| `{name}` | {ms:.1f} |" for name, ms in profile),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=30, help="runs of each command (default 30)")
    ap.add_argument("--before", metavar="SRC", help="also time the CLI of this source tree")
    ap.add_argument("--write", metavar="PATH", help="replace the CLI start-up section of PATH")
    args = ap.parse_args(argv)
    results = measure(args.repeat, args.before)
    text = section(results, import_profile(), loaded_modules(), args.repeat)
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
