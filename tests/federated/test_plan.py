"""Planning placed and federated steps: expansion, fan-in, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowfed.api import prepare
from flowfed.spec.diagnostics import FlowError

HEAD = """
name: placed
imports: [flowfed.tools.library]
config:
  datasets: [hospital-a:breast, hospital-b:breast]
steps:
  - name: load
    tool: flowfed.node_dataset
    on: each-dataset
    outputs: [raw]
"""


def plan(tmp_path: Path, text: str, params: dict | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return prepare(path, params=params or {}).graph


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(FlowError) as info:
        plan(tmp_path, text)
    return [str(d) for d in info.value.diagnostics]


def test_each_dataset_expands_and_central_steps_fan_in(tmp_path: Path) -> None:
    g = plan(
        tmp_path,
        HEAD
        + """
  - {name: sums, tool: flowfed.column_sums, on: each-dataset, inputs: {table: raw},
     outputs: [sums], shareable: [sums]}
  - {name: stats, tool: flowfed.combine_sums, inputs: {sums: sums}, outputs: [stats]}
  - {name: scale, tool: flowfed.standardize, on: each-dataset,
     inputs: {table: raw, stats: stats}, outputs: [scaled]}
""",
    )
    assert list(g.tasks) == [
        "load[hospital-a:breast]", "load[hospital-b:breast]",
        "sums[hospital-a:breast]", "sums[hospital-b:breast]",
        "stats",
        "scale[hospital-a:breast]", "scale[hospital-b:breast]",
    ]  # fmt: skip
    stats = g.tasks["stats"]
    assert stats.inputs == {"sums": ["sums[hospital-a:breast]", "sums[hospital-b:breast]"]}
    assert stats.node == "local" and set(stats.deps) == {
        "sums[hospital-a:breast]", "sums[hospital-b:breast]"
    }  # fmt: skip
    scale_b = g.tasks["scale[hospital-b:breast]"]
    assert (scale_b.node, scale_b.dataset) == ("hospital-b", "breast")
    assert scale_b.inputs == {"table": "raw[hospital-b:breast]", "stats": "stats"}


def test_central_step_cannot_read_what_stays_on_nodes(tmp_path: Path) -> None:
    text = (
        HEAD + "  - {name: stats, tool: flowfed.combine_sums, inputs: {sums: raw}, outputs: [s]}\n"
    )
    [msg] = problems(tmp_path, text)
    assert "flow.yaml:11" in msg and "step 'stats'" in msg
    assert "stays on the data nodes" in msg and "shareable" in msg


def test_datasets_are_required_and_checked(tmp_path: Path) -> None:
    text = HEAD.replace("  datasets: [hospital-a:breast, hospital-b:breast]\n", "  other: 1\n")
    [msg] = problems(tmp_path, text)
    assert "config.datasets" in msg and "node:dataset" in msg
    text = HEAD.replace("hospital-b:breast", "hospital-b")
    [msg] = problems(tmp_path, text)
    assert "config.datasets[1]" in msg and "'hospital-b'" in msg


FED = (
    HEAD
    + """
  - name: train
    kind: federated
    tool: flowfed.logistic_regression
    inputs: {train: raw}
    federated: {rounds: "${config.rounds}", strategy: fedavg, min_nodes: 2}
    outputs: [model]
"""
)


def test_federated_step_is_one_task_with_aligned_participants(tmp_path: Path) -> None:
    text = FED.replace("config:\n", "config:\n  rounds: 7\n")
    g = plan(tmp_path, text)
    train = g.tasks["train"]
    assert train.federated is not None
    assert train.federated.settings.rounds == 7
    assert train.federated.participants == [("hospital-a", "breast"), ("hospital-b", "breast")]
    assert train.inputs == {"train": ["raw[hospital-a:breast]", "raw[hospital-b:breast]"]}
    assert train.federated.model_input == "global_model"
    g = plan(tmp_path, text, {"rounds": 2})
    assert g.tasks["train"].federated.settings.rounds == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("strategy: fedavg", "strategy: fedmagic"), "unknown strategy 'fedmagic'"),
        (("min_nodes: 2", "min_nodes: 5"), "min_nodes is 5 but the step trains on 2"),
        (("min_nodes: 2", "min_nodes: 2, wobble: 1"), "'wobble' is not a federated setting"),
        (('rounds: "${config.rounds}"', "rounds: 0"), "greater than or equal to 1"),
    ],
)
def test_federated_settings_errors_are_located(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = FED.replace("config:\n", "config:\n  rounds: 7\n").replace(*change)
    msgs = problems(tmp_path, text)
    assert any(expected in msg and "step 'train'" in msg and "flow.yaml:" in msg for msg in msgs), (
        msgs
    )


def test_placed_steps_cannot_be_routed(tmp_path: Path) -> None:
    text = (
        HEAD
        + """
  - name: check
    tool: flowfed.column_sums
    on: each-dataset
    inputs: {table: raw}
    outputs: [sums]
    next: {success: end}
"""
    )
    msgs = problems(tmp_path, text)
    assert any("cannot route" in msg and "step 'check'" in msg for msg in msgs), msgs


def test_planning_is_pure_no_catalog_no_collector_switch(tmp_path: Path) -> None:
    """The planner compiles a federated flow without loading the catalog, and leaves the
    process's garbage collector as it found it. (It may read flowfed.fl's strategy
    classes: a user's own strategy declares there what it needs, which the build-time
    strategy rules check.)"""
    import subprocess
    import sys

    (tmp_path / "flow.yaml").write_text(
        FED.replace("config:\n", "config:\n  rounds: 2\n").replace("fedavg", "median")
    )
    probe = (
        "import gc, sys\n"
        "from flowfed.spec.loader import load_flow\n"
        "import flowfed.tools.library\n"
        "from flowfed.tools.core import get_registry\n"
        "from flowfed.plan import plan\n"
        "gc.disable()\n"
        f"g = plan(load_flow({str(tmp_path / 'flow.yaml')!r}), get_registry())\n"
        "assert not gc.isenabled(), 'plan() switched the collector'\n"
        "gc.enable()\n"
        "assert g.tasks, 'nothing planned'\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('flowfed.db', 'sqlalchemy'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
