"""Resource use, progress counts, durations and node waits in the words the CLI prints.

The live tree (:mod:`flowfed.cli.monitor`), the ``--server`` tree and ``flowfed runs
show`` all say them the same way.

Example:
    >>> resources_text({"wall_s": 3.0, "cpu_s": 1.234, "peak_rss_mb": 85.4,
    ...                 "progress": {"done": 5000, "total": 5000, "unit": "images"}})
    'cpu 1.2 s · 85 MB · 5,000/5,000 images'
    >>> counts_text({"done": 3, "total": None, "unit": "files"})
    '3 files'
    >>> duration_text(75.2)
    '1m 15s'
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def _num(x: Any) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.1f}"
    return f"{int(x):,}"


def counts_text(p: dict[str, Any] | None) -> str:
    """``5,000/5,000 images``; empty for no counts."""
    if not p or p.get("done") is None:
        return ""
    text = _num(p["done"])
    if p.get("total") is not None:
        text += f"/{_num(p['total'])}"
    return f"{text} {p['unit']}" if p.get("unit") else text


def resources_text(res: dict[str, Any] | None) -> str:
    """``cpu 1.2 s · 85 MB · 5,000/5,000 images``; empty before anything was measured."""
    if not res:
        return ""
    parts = []
    if res.get("wall_s") or res.get("cpu_s") or res.get("peak_rss_mb"):
        parts.append(f"cpu {res.get('cpu_s') or 0:.1f} s")
        parts.append(f"{res.get('peak_rss_mb') or 0:.0f} MB")
    counts = counts_text(res.get("progress"))
    if counts:
        parts.append(counts)
    return " · ".join(parts)


def duration_text(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``1m 15s``, ``2h 03m``; ``—`` for none."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def clock(when: float | str) -> str:
    """A time of day, local, to the second: ``17:01:09`` (from epoch seconds or ISO 8601)."""
    if isinstance(when, str):
        stamp = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    else:
        stamp = when
    return time.strftime("%H:%M:%S", time.localtime(stamp))


def waiting_text(node: str, since: float | str | None) -> str:
    """``waiting for hospital-c (offline since 17:01:09)``."""
    return f"waiting for {node}" + (f" (offline since {clock(since)})" if since else "")
