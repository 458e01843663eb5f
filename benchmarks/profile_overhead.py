"""Profile where flowfed's per-task time goes on W1, W2 and W4 (in-process, every thread).

    .venv/bin/python benchmarks/profile_overhead.py [--top 15] [--workload w1 w2]

cProfile normally sees only the calling thread; here every thread started during the run
(scheduler, workers, the database writer, artifact persisters) gets its own profiler via
``threading.setprofile`` and the stats are merged. Only functions in flowfed's own source
are listed. Times under a profiler are inflated; read them as shares, not as wall times.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()


def _thread_hook(*_: Any) -> None:
    # Called on the first profile event of each new thread: swap in a real profiler.
    prof = cProfile.Profile()
    with _lock:
        _profiles.append((threading.current_thread().name, prof))
    prof.enable()


def profile(kind: str, n: int, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flowfed-prof-") as tmp:
        work = Path(tmp)
        if kind == "w4":  # the cached re-run: the first run fills the cache, unprofiled
            overhead.run_flowfed_once("w1", n, work / "home")
        _profiles.clear()
        main = cProfile.Profile()
        threading.setprofile(_thread_hook)
        main.enable()
        phases, result, _ = overhead.run_flowfed_once(kind, n, work / "home")
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        assert result.status == "success", result.error
        main_stats = pstats.Stats(main)
        stats = pstats.Stats(main)
        per_thread: dict[str, float] = {"MainThread (scheduler)": _total(main_stats)}
        for name, p in _profiles:
            p.disable()
            st = pstats.Stats(p)
            key = name.rstrip("0123456789_-") or name
            per_thread[key] = per_thread.get(key, 0.0) + _total(st)
            stats.add(p)
    import flowfed

    src = str(Path(flowfed.__file__).resolve().parent)
    print(f"\n## {kind.upper()} ({overhead.n_tasks(kind, n)} tasks)")
    print("phases under the profiler (s): " + ", ".join(f"{k}={v:.3f}" for k, v in phases.items()))
    print("profiled CPU-ish time per thread group (s, sum of self times):")
    for name, t in sorted(per_thread.items(), key=lambda kv: -kv[1]):
        print(f"  {t:8.4f}  {name}")

    def rows(st: pstats.Stats) -> list[tuple[Any, int, float, float]]:
        return [
            (func, nc, tt, ct)
            for func, (_cc, nc, tt, ct, _callers) in st.stats.items()  # type: ignore[attr-defined]
            if func[0].startswith(src)
        ]

    def show(title: str, st: pstats.Stats, key: int) -> None:
        print(f"\n{title}")
        print(f"{'calls':>8} {'tottime':>8} {'cumtime':>8}  function")
        for func, nc, tt, ct in sorted(rows(st), key=lambda r: -r[key])[:top]:
            where = f"{func[0][len(src) + 1 :]}:{func[1]}({func[2]})"
            print(f"{nc:>8} {tt:>8.4f} {ct:>8.4f}  {where}")

    show("top by cumulative time, scheduler (main) thread only", main_stats, 3)
    show("top by cumulative time, all threads summed", stats, 3)
    show("top by self time, all threads summed", stats, 2)


def _total(st: pstats.Stats) -> float:
    return float(st.total_tt)  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workload", nargs="+", default=["w1", "w2"], choices=["w1", "w2", "w4"])
    args = ap.parse_args()
    # One tools module per process: the registry refuses a second module's same names.
    overhead._import_from(
        Path(tempfile.mkdtemp(prefix="flowfed-prof-tools-")),
        "bench_tools",
        overhead.flowfed_tools_source(args.tasks),
    )
    import flowfed.api
    import flowfed.artifacts
    import flowfed.db
    import flowfed.engine.local  # noqa: F401

    for kind in args.workload:
        profile(kind, args.tasks, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
