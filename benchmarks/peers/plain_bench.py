"""The baseline: the same functions called directly (W2-sleep sequentially)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from common import main


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    if workload in ("w1", "w3", "w4"):
        v = m.n0()
        for i in range(1, n):
            v = getattr(m, f"n{i}")(v)
        return v
    s = m.src()
    return m.total(*[getattr(m, f"a{i}")(s) for i in range(n)])


if __name__ == "__main__":
    main(run, platform.python_version())
