"""benchmarks/peers/run.py: how the targets table judges flowfed beside each configuration."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "peers" / "run.py"


def harness() -> ModuleType:
    return load_script(RUN, "peers_bench_run")


def timed(w1: float, w2: float) -> dict[str, dict[str, Any]]:
    return {"w1": {"seconds": w1, "rss_mb": 50.0}, "w2": {"seconds": w2, "rss_mb": 50.0}}


def peers(run: ModuleType, results: dict[str, dict[str, dict[str, Any]]]) -> list[Any]:
    out = []
    for p in run.PEERS:
        if p.name in results:
            p.results, p.version = results[p.name], "1.0"
            out.append(p)
    return out


def target_rows(
    run: ModuleType,
    ps: list[Any],
    ff: dict[str, dict[str, Any]],
    marginal: dict[str, dict[str, Any]] | None = None,
    help_s: float | None = None,
) -> dict[str, str]:
    plain = {**timed(0.0, 0.0), "w3": {"seconds": 0.02}}
    m = None
    if marginal is not None:
        m = run.Marginal(1000, 1, ["w1", "w2"], marginal, timed(0.0, 0.0))
    table = run.targets_table(ps, ff, plain, 200, m, help_s)
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {r[0].removeprefix("| "): r[2].removesuffix(" |") for r in rows[1:]}


def test_per_task_targets_are_judged_all_in_and_at_the_margin() -> None:
    run = harness()
    # W1: 200 tasks in 16 ms (0.08 ms/task all in), 1,000 in 56 ms: marginal 0.05 ms.
    # W2: 202 tasks in 30 ms (0.149 ms/task), 1,002 in 110 ms: marginal 0.1 ms.
    rows = target_rows(run, [], timed(0.016, 0.030), timed(0.056, 0.110))
    assert rows["W1 chain: all in, ≤ 0.1 ms per recorded task at 200"] == "met"
    assert rows["W1 chain: marginal ≤ 0.05 ms per recorded task"] == "met"
    assert rows["W2 fan-out + sum: all in, ≤ 0.1 ms per recorded task at 200"] == "**not met**"
    assert rows["W2 fan-out + sum: marginal ≤ 0.05 ms per recorded task"] == "**not met**"


def test_start_up_must_be_under_the_bound_and_ahead_of_kedro() -> None:
    run = harness()
    ff = {**timed(0.01, 0.01), "w3": {"seconds": 0.18}, "w4": {"seconds": 0.06}}
    kedro = peers(run, {"kedro": {"w3": {"seconds": 0.15, "rss_mb": 50.0}}})
    rows = target_rows(run, kedro, ff, help_s=0.09)
    w3 = next(k for k in rows if k.startswith("W3"))
    assert "ahead of Kedro (0.150 s)" in w3 and rows[w3] == "**not met**"
    assert rows["`flowfed --help`: ≤ 0.1 s"] == "met"
    assert rows["W4 cached re-run of W1: ≤ 0.05 s for 200 tasks"] == "**not met**"
    alone = target_rows(run, [], ff, help_s=None)
    assert alone["W3 start-up (1 task, whole process): ≤ 0.2 s"] == "met"
    assert alone["`flowfed --help`: ≤ 0.1 s"] == "n/a"


def test_peers_that_record_are_shown_as_ratios_for_information() -> None:
    run = harness()
    ps = peers(run, {"hamilton": timed(0.01, 0.01), "dagster-recorded": timed(13.0, 19.0)})
    rows = target_rows(run, ps, timed(0.02, 0.04))
    key = "W1 chain: peers that record each result, time / flowfed's"
    table = run.targets_table(ps, timed(0.02, 0.04), timed(0.0, 0.0), 200, None)
    assert "Dagster, run recorded 650.0x" in table and "Apache Hamilton " not in table
    assert rows[key] == "for information"


def test_a_variant_runs_its_base_peers_script_in_its_base_venv() -> None:
    run = harness()
    by_name = {p.name: p for p in run.PEERS}
    for name in ("dagster-recorded", "hamilton-cached"):
        p = by_name[name]
        assert p.base in by_name and p.variant == "recorded" and p.records
        assert (RUN.parent / f"{p.base}_bench.py").read_text().count("BENCH_VARIANT") >= 1
    assert not by_name["hamilton"].records and not by_name["dagster"].records
