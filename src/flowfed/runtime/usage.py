"""What one task attempt costs: wall time, CPU time (user + system) and peak memory (RSS).

Every runner measures the attempt where the tool runs and reports the figures through the
task's :class:`~flowfed.tools.core.Context` (``ctx.report_resources``), about once a second
while it runs and once at the end:

=================  ===============================================================
runner             what is measured
=================  ===============================================================
threads, Dask      CPU of the tool's own thread (its CPU-time clock, read from
                   outside through ``time.pthread_getcpuclockid``); memory is the
                   *process's* peak RSS while the task ran (threads share it)
processes          the forked child: its CPU (and its children's), its own peak RSS
subprocess,        the tool process (``python -m flowfed.runtime``) measures itself
sandbox, node      the same way and sends a ``resources`` frame
agents, Ray
=================  ===============================================================

Peak memory in a process of its own is the kernel's high-water mark (``VmHWM``), reset at
the start of the attempt (``/proc/self/clear_refs``) so a reused worker reports this task's
peak; where that cannot be reset (threads), it is the largest RSS seen by the samples.

Standard library only: this module runs inside the tool sandbox.

Example:
    >>> seen = []
    >>> with measured(seen.append, "thread") as usage:
    ...     _ = sum(range(10_000))
    >>> sorted(seen[-1])
    ['cpu_s', 'peak_rss_mb', 'wall_s']
    >>> seen[-1]["peak_rss_mb"] > 1
    True
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

__all__ = ["INTERVAL_S", "UNITS", "Usage", "clean_counts", "clean_figures", "measured"]

#: Seconds between two samples of a running task (cheap: a few small /proc reads).
INTERVAL_S = float(os.environ.get("FLOWFED_USAGE_INTERVAL", "1.0"))

_MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

Scope = Literal["thread", "process"]
Report = Callable[[dict[str, float]], None]


def _rss_mb() -> float:
    """This process's resident set now (MB)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / _MB
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: How old a shared RSS reading may be for a thread-scope attempt (seconds).
_RSS_FRESH_S = 0.01
_rss_seen: tuple[float, float] = (-1.0, 0.0)  # (perf_counter at reading, MB)


def _process_rss_mb() -> float:
    """The process's RSS, read at most every :data:`_RSS_FRESH_S` seconds.

    Threads share one process, so every attempt on a thread would read the same number:
    a /proc read (~20 us) for each of thousands of short tasks was a fifth of a recorded
    task's whole cost. A reading 10 ms old is as true for a thread's attempt as a new one.
    """
    global _rss_seen
    now = time.perf_counter()
    at, mb = _rss_seen
    if now - at > _RSS_FRESH_S:
        mb = _rss_mb()
        _rss_seen = (now, mb)
    return mb


def _hwm_mb() -> float | None:
    """This process's peak resident set since start or the last reset (MB)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _thread_cpu_clock() -> int | None:
    """The calling thread's CPU-time clock, which other threads can read (POSIX)."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):  # not on this platform
        return None


def _clock_seconds(clock: int | None) -> float | None:
    """A thread's CPU seconds through its clock, from any thread; None once it is gone."""
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Usage:
    """The running figures of one attempt, started when it is built.

    ``scope="thread"`` counts the CPU of the calling thread only (the engine's thread
    pool, a Dask worker thread); ``"process"`` counts the whole process and its waited-for
    children (a forked child or a tool process of its own).
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.own_peak = scope == "process" and _reset_peak()
        self._t0 = time.perf_counter()
        # The same clock as time.thread_time, so samples from outside and the final one
        # from inside agree; opening it costs a microsecond, a /proc read twenty.
        self._clock = _thread_cpu_clock() if scope == "thread" else None
        self._cpu0 = time.thread_time() if scope == "thread" else _process_cpu()
        self.peak = _process_rss_mb() if scope == "thread" else _rss_mb()
        self.cpu = 0.0

    def sample(self, *, in_thread: bool = False) -> dict[str, float]:
        """The figures so far; ``in_thread`` when called from the measured thread itself."""
        if self.scope == "process":
            cpu = _process_cpu() - self._cpu0
        elif in_thread:
            cpu = time.thread_time() - self._cpu0
        else:
            now = _clock_seconds(self._clock)
            cpu = self.cpu if now is None else now - self._cpu0
        # Never go backwards between samples.
        self.cpu = max(self.cpu, cpu)
        rss = _process_rss_mb() if self.scope == "thread" else _rss_mb()
        hwm = _hwm_mb() if self.own_peak else None
        self.peak = max(self.peak, rss, hwm or 0.0)
        return {
            "wall_s": round(time.perf_counter() - self._t0, 3),
            "cpu_s": round(self.cpu, 3),
            "peak_rss_mb": round(self.peak, 1),
        }


class _Ticker:
    """One daemon thread per process that samples every measured attempt in turn."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.jobs: dict[int, Callable[[], None]] = {}
        self.ids = itertools.count()
        self.thread = threading.Thread(target=self._loop, name="flowfed-usage", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(INTERVAL_S)
            with self.lock:
                jobs = list(self.jobs.values())
            for job in jobs:
                # A broken reporter must never stop the others' samples.
                with contextlib.suppress(Exception):
                    job()

    def add(self, job: Callable[[], None]) -> int:
        key = next(self.ids)
        with self.lock:
            self.jobs[key] = job
        return key

    def remove(self, key: int) -> None:
        with self.lock:
            self.jobs.pop(key, None)


_ticker: _Ticker | None = None
_ticker_lock = threading.Lock()


def _the_ticker() -> _Ticker:
    global _ticker
    with _ticker_lock:
        # A forked child inherits the object but not its thread: start its own.
        if _ticker is None or _ticker.pid != os.getpid():
            _ticker = _Ticker()
        return _ticker


@contextlib.contextmanager
def measured(report: Report, scope: Scope) -> Iterator[Usage]:
    """Measure the block as one attempt: ``report`` gets a sample about every
    :data:`INTERVAL_S` seconds while it runs and the final figures when it ends (also when
    it raises), always last."""
    usage = Usage(scope)
    lock = threading.Lock()
    done = False

    def tick() -> None:
        with lock:
            if not done:
                report(usage.sample())

    ticker = _the_ticker()
    key = ticker.add(tick)
    try:
        yield usage
    finally:
        ticker.remove(key)
        with lock:
            done = True
            final = usage.sample(in_thread=True)
        with contextlib.suppress(Exception):
            report(final)


#: Upper bounds of figures that may be recorded: a year of wall or CPU time, a petabyte.
_BOUNDS = {"wall_s": 3.2e7, "cpu_s": 3.2e7 * 1024, "peak_rss_mb": 1e9}


def clean_figures(payload: Any) -> dict[str, float] | None:
    """The resource figures of ``payload`` as plain bounded numbers, or None.

    Whatever crosses a trust boundary (a node, a tool process) goes through this: only the
    three known keys, only finite non-negative numbers, so nothing else can ride along.

    Example:
        >>> clean_figures({"wall_s": 1.5, "cpu_s": "1e3", "peak_rss_mb": 85, "x": "leak"})
        {'wall_s': 1.5, 'cpu_s': 0.0, 'peak_rss_mb': 85.0}
        >>> clean_figures("nope") is None
        True
    """
    if not isinstance(payload, dict):
        return None
    out: dict[str, float] = {}
    for key, bound in _BOUNDS.items():
        value = payload.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        v = float(value) if ok and value is not None else 0.0
        out[key] = min(bound, v) if math.isfinite(v) and v > 0 else 0.0
    return out


#: Units a node passes on without its policy sharing logs: a word from this list or none,
#: so a tool cannot spell anything out in the unit of its progress counts.
UNITS = frozenset(
    [
        "images",
        "slides",
        "wsi",
        "scans",
        "samples",
        "rows",
        "records",
        "items",
        "files",
        "batches",
        "epochs",
        "steps",
        "rounds",
        "iterations",
        "patients",
        "studies",
        "series",
        "bytes",
        "tokens",
        "documents",
        "features",
        "chunks",
    ]
)
_COUNT_MAX = 1e15


def _count(value: Any) -> int | float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0:
        return None
    v = min(v, _COUNT_MAX)
    return int(v) if v.is_integer() else round(v, 6)


def clean_counts(payload: Any, *, any_unit: bool = True) -> dict[str, Any] | None:
    """A progress report's counts ``{"done", "total", "unit"}`` as plain values, or None
    when it reports a bare fraction. ``any_unit=False`` (a node whose policy does not
    share logs) keeps the unit only when it is one of :data:`UNITS`.

    Example:
        >>> clean_counts({"done": 5000, "total": 5000, "unit": "images"}, any_unit=False)
        {'done': 5000, 'total': 5000, 'unit': 'images'}
        >>> clean_counts({"done": 3, "total": None, "unit": "SECRET-123"}, any_unit=False)
        {'done': 3, 'total': None, 'unit': None}
        >>> clean_counts({"fraction": 0.5}) is None
        True
    """
    if not isinstance(payload, dict):
        return None
    if payload.get("total") is None and payload.get("unit") is None:
        return None  # progress(0.4): a fraction, not a count
    done = _count(payload.get("done"))
    if done is None:
        return None
    total = _count(payload.get("total"))
    unit = payload.get("unit")
    if not isinstance(unit, str):
        unit = None
    elif any_unit:
        unit = "".join(c for c in unit if c.isprintable())[:32] or None
    elif unit.lower() not in UNITS:
        unit = None
    return {"done": done, "total": total, "unit": unit}


def stall_after_s() -> float:
    """Seconds without progress after which a running step is called stalled
    (``$FLOWFED_STALL_AFTER``, default 60): no task moved, reported progress or a metric."""
    raw = os.environ.get("FLOWFED_STALL_AFTER", "60")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"FLOWFED_STALL_AFTER must be a number of seconds, got {raw!r}") from None
    return value if value > 0 else 60.0
