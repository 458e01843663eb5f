"""Where ``flowfed run FLOW --simulate`` spends its start-up and its rounds (cProfile, all threads).

    .venv/bin/python benchmarks/fl/profile_run.py [--top 15] [--flow FLOW] [-- RUN ARGS...]

Runs ``flowfed run FLOW --simulate --json [RUN ARGS]`` in this process (a fresh
``FLOWFED_HOME``) under cProfile, split in two phases:

- **start-up**: the main thread from this script's first line to the engine's ``run``
  (interpreter start-up before that line is reported apart, from /proc);
- **rounds**: the thread that drives the federated step, inside ``FederatedDriver.drive``,
  plus every thread started while it runs (the round pool, tool threads).

cProfile by itself sees only the thread that enabled it; here a ``threading.setprofile``
hook gives each new thread its own profiler and the stats are merged per phase. Threads
started before the rounds (the database writer, artifact persisters) are left out of both
phases. Times under a profiler are inflated: read the
lists as shares of each phase, not as wall times. Prints, per phase, the top ``--top``
entries by cumulative time (all, module imports, flowfed's own) and for the rounds by own
time too.
"""

from __future__ import annotations

import cProfile
import time

_T_SCRIPT = time.time()
_startup = cProfile.Profile()
_startup.enable()

import argparse  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent

_lock = threading.Lock()
#: thread ident -> (phase, thread name, profiler) for every thread started under the hook.
_threads: dict[int, tuple[str, str, cProfile.Profile]] = {}
_phase = {"now": "before"}
_rounds_main: list[cProfile.Profile] = []
_marks: dict[str, float] = {}


def _thread_hook(*_: Any) -> None:
    # The first profile event of a new thread: give it a profiler of its own, filed under
    # the phase it started in.
    prof = cProfile.Profile()
    with _lock:
        t = threading.current_thread()
        _threads[t.ident or 0] = (_phase["now"], t.name, prof)
    prof.enable()


def _patch() -> None:
    """Mark the phases on the engine's ``run`` and the federated driver's ``drive``."""
    from flowfed.engine import federated, local

    run = local.LocalEngine.run
    drive = federated.FederatedDriver.drive

    def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        _startup.disable()
        _marks["engine_run"] = time.time()
        _phase["now"] = "run"
        return run(self, *args, **kwargs)

    def profiled_drive(self: Any) -> None:
        mine = _threads.get(threading.get_ident())
        if mine is not None:
            mine[2].disable()
        prof = cProfile.Profile()
        _phase["now"] = "rounds"
        _marks["rounds_start"] = time.time()
        prof.enable()
        try:
            drive(self)
        finally:
            prof.disable()
            _marks["rounds_end"] = time.time()
            _phase["now"] = "run"
            _rounds_main.append(prof)
            if mine is not None:
                mine[2].enable()

    local.LocalEngine.run = timed_run  # type: ignore[method-assign]
    federated.FederatedDriver.drive = profiled_drive  # type: ignore[method-assign]


def _top(stats: pstats.Stats, top: int, only: str | None = None) -> str:
    """The ``top`` entries by cumulative time (those whose name matches ``only``, a regex)."""
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(*([only] if only else []), top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(ln.replace(str(ROOT) + "/", "") for ln in lines[start:] if ln.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--flow", type=Path, default=ROOT / "examples/breast_cancer/flow.yaml")
    parser.add_argument(
        "--dump", type=Path, help="also write the two phases' stats to DUMP.startup, DUMP.rounds"
    )
    parser.add_argument("run_args", nargs="*", help="more `flowfed run` arguments (after --)")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="flowfed-fl-profile-")
    os.environ["FLOWFED_HOME"] = home
    for var in ("FLOWFED_DATABASE_URL", "FLOWFED_ARTIFACTS_URL", "FLOWFED_SERVER"):
        os.environ.pop(var, None)
    threading.setprofile(_thread_hook)
    from flowfed.cli import main as cli

    _patch()
    sys.argv = ["flowfed", "run", str(args.flow), "--simulate", "--json", *args.run_args]
    out = io.StringIO()
    real_stdout, sys.stdout = sys.stdout, out
    code: Any = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.stdout = real_stdout
        threading.setprofile(None)  # type: ignore[arg-type]
    if code not in (0, None):
        raise SystemExit(f"flowfed run exited {code}:\n{out.getvalue()[-2000:]}")
    if not _rounds_main:
        raise SystemExit("the flow ran no federated step: nothing to profile in rounds")

    import json

    summary = json.loads(out.getvalue().strip().splitlines()[-1]).get("summary") or {}
    rounds = int(summary.get("rounds") or 0)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory import process_start

    t0 = process_start()
    print(
        f"process start -> this script's first line: {_T_SCRIPT - t0:.3f} s (interpreter)\n"
        f"process start -> flowfed.cli.main imported (_STARTED): {cli.STARTED - t0:.3f} s\n"
        f"process start -> engine run: {_marks['engine_run'] - t0:.3f} s under the profiler "
        f"(summary startup_s {summary.get('startup_s')}, counted from _STARTED)\n"
        f"rounds: {rounds} in {_marks['rounds_end'] - _marks['rounds_start']:.3f} s under the "
        f"profiler (summary seconds_per_round {summary.get('seconds_per_round')})\n"
    )
    startup = pstats.Stats(_startup)
    print(f"## start-up: top {args.top} by cumulative time (main thread)\n")
    print(_top(startup, args.top))
    print(f"\n## start-up: the {args.top} costliest module imports (cumulative)\n")
    print(_top(startup, args.top, r"\(<module>\)"))
    print(f"\n## start-up: top {args.top} of flowfed's own functions\n")
    print(_top(startup, args.top, "flowfed/"))
    rounds_stats = pstats.Stats(_rounds_main[0])
    names: dict[str, int] = {}
    for phase, name, prof in list(_threads.values()):
        prof.disable()
        if phase == "rounds":
            rounds_stats.add(prof)
            key = name.rstrip("0123456789_-")
            names[key] = names.get(key, 0) + 1
    started = ", ".join(f"{k} x{n}" for k, n in sorted(names.items()))
    print(
        f"\n## rounds: top {args.top} by cumulative time (the driver thread"
        + (f" and the threads started during the rounds: {started})" if started else ")")
        + "\n"
    )
    print(_top(rounds_stats, args.top))
    if args.dump:
        startup.dump_stats(f"{args.dump}.startup")
        rounds_stats.dump_stats(f"{args.dump}.rounds")
    print(f"\n## rounds: top {args.top} of flowfed's own functions\n")
    print(_top(rounds_stats, args.top, "flowfed/"))
    print(f"\n## rounds: top {args.top} by own (total) time\n")
    buf = io.StringIO()
    rounds_stats.stream = buf  # type: ignore[attr-defined]
    rounds_stats.sort_stats("tottime").print_stats(args.top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    print("\n".join(ln.replace(str(ROOT) + "/", "") for ln in lines[start:] if ln.strip()))


if __name__ == "__main__":
    main()
