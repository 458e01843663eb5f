"""FlowyML: @step functions with named inputs/outputs added to a Pipeline."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import main
from flowyml import Pipeline, step


def run(workload: str, n: int, m: Any, workdir: Path) -> Any:
    cache = "input_hash" if workload == "w4" else False
    p = Pipeline(
        f"bench_{workload}",
        enable_cache=workload == "w4",
        cache_dir=str(workdir / "flowyml-cache"),
        enable_experiment_tracking=False,
    )
    if workload in ("w1", "w3", "w4"):
        p.add_step(step(m.n0, outputs=["n0"], name="n0", cache=cache))
        for i in range(1, n):
            fn = getattr(m, f"n{i}")
            p.add_step(step(fn, inputs=[f"n{i - 1}"], outputs=[f"n{i}"], name=f"n{i}", cache=cache))
        final = f"n{n - 1}"
    else:
        p.add_step(step(m.src, outputs=["src"], name="src", cache=cache))
        for i in range(n):
            fn = getattr(m, f"a{i}")
            p.add_step(step(fn, inputs=["src"], outputs=[f"a{i}"], name=f"a{i}", cache=cache))
        p.add_step(
            step(m.total, inputs=[f"a{i}" for i in range(n)], outputs=["total"], name="total")
        )
        final = "total"
    result = p.run()
    return result.outputs[final]


if __name__ == "__main__":
    main(run, version("flowyml"))
