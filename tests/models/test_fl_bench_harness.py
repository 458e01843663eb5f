"""benchmarks/fl/run.py: a mode whose command fails is reported, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "fl" / "run.py"


def harness() -> ModuleType:
    return load_script(RUN, "fl_bench_run")


def test_failing_flowfed_modes_are_not_available_and_the_table_says_why(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- fl:begin -->\nold\n<!-- fl:end -->\n\nafter\n")
    res = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--only",
            "simulate,node",
            "--flow",
            str(tmp_path / "missing.yaml"),
            "--write",
            str(doc),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)["results"]
    assert [(r["mode"], r["available"]) for r in results] == [
        ("flowfed --simulate", False),
        ("flowfed node mode", False),
    ]
    assert all(r["reason"].startswith("exit 2: ") and len(r["reason"]) > 8 for r in results)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- fl:begin -->\n") and text.endswith("after\n")
    assert "old" not in text
    assert text.count("not available: exit 2") == 2


def test_hyperparameters_come_from_the_flows_federated_step(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: fl\nconfig: {rounds: 12, lr: 0.3}\nsteps:\n"
        "  - {name: prep, tool: x}\n"
        "  - name: train\n    kind: federated\n    rounds: ${config.rounds}\n"
        "    local_epochs: 2\n    params: {learning_rate: '${config.lr}', l2: 0.01}\n"
    )
    hp = harness().flow_hyperparameters(flow)
    assert hp == {
        "rounds": 12,
        "local_epochs": 2,
        "learning_rate": 0.3,
        "l2": 0.01,
        "source": "flow.yaml, step 'train'",
    }
    assert harness().flow_hyperparameters(tmp_path / "none.yaml")["source"] == "defaults"
