"""Peak resident memory of a process tree, sampled from /proc (Linux, stdlib only).

Flower's simulation runs Ray: a driver, a GCS server, a raylet and worker processes, all
descendants of the process that called it. flowfed's node mode runs node agent processes.
Both are measured the same way: the sum of the RSS of a root process and every
descendant, sampled every ``interval`` seconds; the peak of that sum is reported.
"""

from __future__ import annotations

import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the process ended between listdir and open
        # The command name (field 2) may hold spaces and parentheses: split after its ')'.
        fields = stat[stat.rindex(b")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all of its descendants right now."""
    kids = _children_map()
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        stack.extend(kids.get(pid, []))
    return total


class PeakSampler:
    """Samples :func:`tree_rss` of ``root`` in a thread until :meth:`stop`; ``peak`` bytes.

    Example:
        >>> s = PeakSampler(os.getpid()).start(); peak = s.stop(); peak > 0
        True
    """

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.root))
            if self._done.wait(self.interval):
                return

    def stop(self) -> int:
        """Stop sampling (after one last sample); the peak in bytes."""
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.root))
        return self.peak


def process_start(pid: int | str = "self") -> float:
    """When process ``pid`` started, in unix seconds (about 10 ms resolution).

    /proc gives the start in clock ticks since boot. The boot time is taken from the
    boot clock, not /proc/stat's ``btime``: that one is whole seconds, which would shift
    every start-up figure by up to a second.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after its ')'.
    ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    since_boot = ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
