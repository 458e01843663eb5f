"""Resource use per task (issue 22, part 1): every runner measures wall time, CPU time
and peak memory of each task attempt; tools report progress counts; the figures reach
the catalog, ``flowfed run --json``, ``flowfed runs show`` and the REST API.

The tool measures itself with ``resource.getrusage`` (its thread's CPU, its process's
lifetime peak RSS): flowfed's figures, read from /proc by the runner, must agree with
that independent measurement within generous bounds. No timing is asserted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Project
from tests.dashboard_data.conftest import BURN_FLOW, BURN_TOOLS

EXECUTORS = [
    "threads",
    "processes",
    "subprocess",
    "sandbox",
    # Dask workers as threads of the `flowfed run` process, Ray workers as processes.
    "dask://local?workers=1&processes=0",
    "ray://local?cpus=1",
]


def _setup(project: Project) -> None:
    project.write("tools.py", BURN_TOOLS)
    project.write("flow.yaml", BURN_FLOW)


def _own(task: dict[str, Any]) -> dict[str, float]:
    """What the tool measured of itself (its metrics)."""
    return dict(task["metrics"])


def _check_figures(res: dict[str, Any], own: dict[str, float]) -> None:
    assert res["wall_s"] > 0, res
    # CPU: the same thread's (or process's) time, read two ways.
    assert res["cpu_s"] > 0.05, res
    assert 0.5 * own["own_cpu"] - 0.1 <= res["cpu_s"] <= 1.5 * own["own_cpu"] + 0.5, (res, own)
    # Memory: at least what the tool allocated and touched, at most its process's peak.
    assert res["peak_rss_mb"] >= 0.9 * own["allocated_mb"], (res, own)
    assert res["peak_rss_mb"] <= own["maxrss_mb"] + 8, (res, own)
    assert res["progress"] == {"done": 5000, "total": 5000, "unit": "images"}, res


@pytest.mark.parametrize("executor", EXECUTORS)
def test_each_executor_measures_cpu_memory_and_progress(project: Project, executor: str) -> None:
    _setup(project)
    report = project.run_json("flow.yaml", "-i", "tools.py", "--executor", executor, "--no-cache")
    assert report["status"] == "success", json.dumps(report)[:2000]
    (task,) = report["steps"][0]["tasks"]
    own = _own(task)
    _check_figures(task["resources"], own)

    # The catalog keeps them: `runs show --json` (the REST task shape) and its text.
    shown = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    (row,) = shown["tasks"]
    _check_figures(row["resources"], own)
    text = project.ff("runs", "show", report["run_id"], check=0).out
    assert "5,000/5,000 images" in text, text
    assert f"cpu {row['resources']['cpu_s']:.1f} s" in " ".join(text.split()), text


def test_the_run_tree_shows_resources_and_step_durations(project: Project) -> None:
    _setup(project)
    project.env["COLUMNS"] = "200"
    res = project.ff("run", "flow.yaml", "-i", "tools.py", "--no-cache", check=0)
    line = next(x for x in res.out.splitlines() if "Burn (central) finished" in x)
    assert re.search(r" · cpu \d+\.\d s · \d+ MB · 5,000/5,000 images", line), line
    head = next(x for x in res.out.splitlines() if "Step: Burn" in x)
    assert re.search(r"\[completed · \d+\.\d\ds\]", head), head


def test_node_agents_measure_the_sandboxed_tool(project: Project, tmp_path: Path) -> None:
    _setup(project)
    project.write("a.csv", "x,y\n1,2\n3,4\n")
    project.write("nodes.yaml", "nodes:\n  hospital-a:\n    d: a.csv\n")
    project.write(
        "nflow.yaml",
        """
        name: burn-on-nodes
        nodes: nodes.yaml
        imports: [tools.py]
        config:
          datasets: [hospital-a:d]
        steps:
          - name: Burn
            tool: burn
            on: each-dataset
            outputs: [out]
        """,
    )
    report = project.run_json("nflow.yaml", "--no-cache")
    assert report["status"] == "success", json.dumps(report)[:2000]
    (task,) = report["steps"][0]["tasks"]
    assert task["node"] == "hospital-a"
    res = task["resources"]
    # The output stays on the node: compare with what a sandboxed process can be.
    assert res["cpu_s"] > 0.05 and res["wall_s"] > 0, res
    assert 0.9 * 60 <= res["peak_rss_mb"] < 4096, res
    assert res["progress"] == {"done": 5000, "total": 5000, "unit": "images"}, res
    shown = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    assert shown["tasks"][0]["resources"] == res


def test_progress_as_a_bare_fraction_keeps_working(project: Project) -> None:
    project.write(
        "tools.py",
        """
        from flowfed import Context, tool

        @tool(version="1", type="preprocessing")
        def halves(ctx: Context) -> int:
            ctx.progress(0.5)
            ctx.progress(2, 4, "half way")
            return 1
        """,
    )
    project.write(
        "flow.yaml",
        """
        name: fractions
        steps:
          - name: Halves
            tool: halves
            outputs: [out]
        """,
    )
    report = project.run_json("flow.yaml", "-i", "tools.py", "--no-cache")
    assert report["status"] == "success", report
    res = report["steps"][0]["tasks"][0]["resources"]
    # progress(2, 4) is a count without a unit; progress(0.5) alone is no count.
    assert res["progress"] == {"done": 2, "total": 4, "unit": None}, res


def test_a_retried_task_keeps_each_attempts_figures(project: Project, tmp_path: Path) -> None:
    project.write(
        "tools.py",
        f"""
        from pathlib import Path
        from flowfed import Context, tool

        @tool(version="1", type="preprocessing")
        def flaky(ctx: Context) -> int:
            mark = Path({str(tmp_path / "failed-once")!r})
            ctx.progress(1, 2, unit="files")
            if not mark.exists():
                mark.write_text("x")
                raise RuntimeError("transient")
            ctx.progress(2, 2, unit="files")
            return 1
        """,
    )
    project.write(
        "flow.yaml",
        """
        name: retried
        steps:
          - name: Flaky
            tool: flaky
            retries: 1
            outputs: [out]
        """,
    )
    report = project.run_json("flow.yaml", "-i", "tools.py", "--no-cache")
    assert report["status"] == "success", report
    shown = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    (task,) = shown["tasks"]
    assert task["attempt"] == 2
    assert task["resources"]["progress"] == {"done": 2, "total": 2, "unit": "files"}
    (first,) = task["attempt_resources"]
    assert first["attempt"] == 1
    assert first["progress"] == {"done": 1, "total": 2, "unit": "files"}
    assert first["wall_s"] > 0
    text = project.ff("runs", "show", report["run_id"], check=0).out
    assert "attempt 1: cpu" in text and "1/2 files" in text, text


def test_usage_figures_are_cleaned_before_they_are_recorded() -> None:
    from flowfed.runtime.usage import clean_counts, clean_figures

    assert clean_figures({"wall_s": float("nan"), "cpu_s": -1, "peak_rss_mb": True}) == {
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "peak_rss_mb": 0.0,
    }
    assert clean_counts({"done": "5", "total": 3, "unit": "x"}) is None
    long = clean_counts({"done": 1, "total": None, "unit": "u\x00\x1b" + "n" * 100})
    assert long is not None and long["unit"] == "u" + "n" * 31


def test_figures_and_the_registry_query_on_sqlite_and_postgresql(pg_project: Project) -> None:
    _setup(pg_project)
    report = pg_project.run_json("flow.yaml", "-i", "tools.py", "--no-cache")
    assert report["status"] == "success", report
    shown = pg_project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    (row,) = shown["tasks"]
    _check_figures(row["resources"], _own(row))
    # The registry's "final round only" filter runs on either database (no model here).
    assert pg_project.ff("models", "list", "--json", check=0).json() == {"items": []}
    arts = pg_project.ff("artifacts", "list", "-q", "ou", "--step", "Burn", "--json", check=0)
    assert [a["name"] for a in arts.json()] == ["out"]
