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


def target_rows(run: ModuleType, ps: list[Any]) -> dict[str, str]:
    ff = timed(0.07, 0.07)
    plain = timed(0.0, 0.0)
    table = run.targets_table(ps, ff, plain, 200, None)
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| W")]
    return {r[0].removeprefix("| "): r[2].removesuffix(" |") for r in rows}


def test_a_faster_in_memory_peer_fails_every_peer_but_not_the_same_work_target() -> None:
    run = harness()
    ps = peers(
        run,
        {
            "hamilton": timed(0.015, 0.02),  # in memory: faster than flowfed
            "hamilton-cached": timed(0.4, 0.4),  # recording its results: slower
            "dagster": timed(2.4, 2.8),
            "dagster-recorded": timed(13.0, 19.0),
        },
    )
    rows = target_rows(run, ps)
    assert rows["W1 chain: faster than every peer, in any configuration"] == "**no**"
    assert (
        rows["W1 chain: faster than every peer that records each result, as flowfed does"] == "yes"
    )
    assert rows["W1 chain: flowfed at least 100x faster per task than Dagster"] == "**no**"
    assert (
        rows["W1 chain: flowfed at least 100x faster per task than Dagster, run recorded"] == "yes"
    )


def test_a_faster_peer_that_records_its_results_fails_the_same_work_target() -> None:
    run = harness()
    ps = peers(run, {"hamilton-cached": timed(0.05, 0.4)})
    rows = target_rows(run, ps)
    same = "faster than every peer that records each result, as flowfed does"
    assert rows[f"W1 chain: {same}"] == "**no**"
    assert rows[f"W2 fan-out + sum: {same}"] == "yes"


def test_a_variant_runs_its_base_peers_script_in_its_base_venv() -> None:
    run = harness()
    by_name = {p.name: p for p in run.PEERS}
    for name in ("dagster-recorded", "hamilton-cached"):
        p = by_name[name]
        assert p.base in by_name and p.variant == "recorded" and p.records
        assert (RUN.parent / f"{p.base}_bench.py").read_text().count("BENCH_VARIANT") >= 1
    assert not by_name["hamilton"].records and not by_name["dagster"].records
