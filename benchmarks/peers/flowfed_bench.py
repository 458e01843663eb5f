"""flowfed: @tool functions, a Flow of steps wired by artifact names, run by the engine.

Persistence is on (SQLite and the artifact store under the work dir), as in every run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from common import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported before the clock starts, as every peer's package is (W3 times the whole process).
import flowfed.api
import flowfed.artifacts
import flowfed.db
import flowfed.engine.local  # noqa: F401


def _tools(n: int, workdir: Path) -> None:
    from overhead import _import_from, flowfed_tools_source

    # The workload's functions as flowfed tools, imported before the clock like every
    # peer's module (common.main imports it before timing ``run``).
    _import_from(workdir, "ff_tools", flowfed_tools_source(max(n, 1)))


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    from overhead import build_flow

    from flowfed import api

    if workload == "w3":  # W3 is timed whole, from outside: the import is part of it
        _tools(n, workdir)
    kind = {"w3": "w1", "w2s": "w2sleep"}.get(workload, workload)
    flow = build_flow(kind, n)
    home = Path(os.environ.get("FLOWFED_HOME", workdir / "home"))
    home.mkdir(parents=True, exist_ok=True)
    prepared = api.prepare(flow)
    engine = api.make_engine(
        database_url=f"sqlite:///{home / 'flowfed.db'}", artifacts_url=str(home / "artifacts")
    )
    try:
        result = engine.run(prepared.graph)
        if result.status != "success":  # the failed step's own error, for the table
            errors = [
                f"{step}: {t.error.get('message')}"
                for step, runs in result.view.tasks.items()
                for t in runs
                if t.error
            ]
            raise RuntimeError(f"run {result.status}: " + "; ".join(errors or [str(result.error)]))
        # The final value as the run returns it (Hamilton and Prefect return theirs too);
        # on W4 it is a cache hit, read from the catalog.
        final = f"v{n - 1}" if kind in ("w1", "w4") else "s"
        value = result.value(final)
    finally:
        engine.db.close()
    # The generated tools compute the same values: first=1 then +1 (chain), sum of k (fan).
    return value


if __name__ == "__main__":
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("flowfed")
    except PackageNotFoundError:
        v = "source"
    main(run, v, warm=_tools)
