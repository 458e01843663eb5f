"""Steps that hold several tools (``tools:``), step and flow types, and tasks in words.

Seed 000's "Data Preprocessing" runs image normalization and then feature extraction as one
step. Driven through the real ``flowfed validate`` / ``flowfed run`` / ``flowfed runs show``
commands: every build-time check still applies to each tool, at the tool's own line, and
the run reports the tasks under the step as written, each labelled in words.
"""

from __future__ import annotations

from tests.cli.conftest import Project, by_step

TOOLS = """
from flowfed import Model, tool


class M(Model):
    def save(self, path): open(path, "w").write("m")
    @classmethod
    def load(cls, path): return cls()


@tool(version="1", type="database-adapter")
def load(*, n: int = 4) -> list:
    '''Read the numbers: 1 to n.'''
    return list(range(1, n + 1))


@tool(version="1", type="preprocessing")
def double(xs: list) -> list:
    '''Double every number.'''
    return [2 * x for x in xs]


@tool(version="1", type="data-transformation")
def total(xs: list, *, offset: int = 0) -> dict:
    return {"total": sum(xs) + offset}


@tool(version="1", type="evaluation")
def judge(xs: list) -> M:
    return M()
"""

GOOD = """
name: several tools
type: training
imports: [tools.py]
report: sum
steps:
  - name: Data Preprocessing
    type: process
    tools:
      - tool: load
        label: Number loading
        params: {n: 4}
        outputs: [xs]
      - tool: double
        inputs: {xs: xs}
        outputs: [doubled]
  - name: Summary
    type: output
    tool: total
    label: Sum of doubled numbers
    inputs: {xs: doubled}
    params: {offset: 1}
    outputs: [sum]
"""


def test_a_step_of_several_tools_runs_as_one_step_with_its_tasks_in_words(
    project: Project,
) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", GOOD)
    res = project.ff("validate", "flow.yaml", check=0)
    assert "Step: Data Preprocessing (process)" in res.out
    assert "Data Preprocessing/double: double@1 ← Data Preprocessing/load" in res.out
    planned = project.ff("validate", "flow.yaml", "--json", check=0).json()
    assert [(s["name"], s["task"], s["label"], s.get("type")) for s in planned["steps"]] == [
        ("Data Preprocessing", "Data Preprocessing/load", "Number loading (central)", "process"),
        (
            "Data Preprocessing",
            "Data Preprocessing/double",
            "Double every number (central)",  # the first phrase of the tool's docstring
            "process",
        ),
        ("Summary", "Summary", "Sum of doubled numbers (central)", "output"),
    ]

    report = project.run_json("flow.yaml")
    assert report["status"] == "success", report
    steps = by_step(report)
    assert list(steps) == ["Data Preprocessing", "Summary"]
    assert steps["Data Preprocessing"]["type"] == "process"
    assert steps["Data Preprocessing"]["status"] == "completed"
    assert [t["label"] for t in steps["Data Preprocessing"]["tasks"]] == [
        "Number loading (central)",
        "Double every number (central)",
    ]
    # 2·(1+2+3+4) + 1, worked by hand: the second tool read the first one's output.
    assert report["summary"]["metrics"] == {"total": 21}
    shown = project.ff("artifacts", "show", "doubled:1", "--json", check=0).json()
    assert shown["producer"]["step"] == "Data Preprocessing"

    # The terminal's record of the run names each task in words too.
    text = " ".join(project.ff("runs", "show", report["run_id"], check=0).out.split())
    assert "Data Preprocessing: double@1 on local — finished" in text
    assert "Double every number (central)" in text


def test_each_tool_of_a_step_is_checked_at_its_own_line(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: bad tools
        imports: [tools.py]
        steps:
          - name: Prep
            type: deploy
            tools:
              - tool: load
                params: {n: "many"}
                outputs: [xs]
              - tool: dubble
                inputs: {xs: xs}
              - tool: judge
                inputs: {xs: nowhere}
                outputs: [verdict]
          - name: Both
            tool: total
            tools:
              - {tool: load}
          - name: Shared params
            params: {n: 2}
            tools:
              - {tool: load, name: one, outputs: [a]}
          - name: Twins
            tools:
              - {tool: load, outputs: [a]}
              - {tool: load, outputs: [b]}
        """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2, res.out
    expected = [
        # schema problems come first, all of them
        "flow.yaml:5: step 'Prep', field 'type': Input should be 'data', 'process', "
        "'training' or 'output'",
        "flow.yaml:15: step 'Both': a step has 'tool' or 'tools', not both",
        "flow.yaml:19: step 'Shared params': 'params' belongs to each tool under 'tools', "
        "not to the step",
        "flow.yaml:23: step 'Twins': two tools of this step are named 'load'; give them "
        "distinct 'name's",
    ]
    for fragment in expected:
        assert fragment in res.err, f"missing {fragment!r} in:\n{res.err}"
    assert "Traceback" not in res.err

    # With the schema right, the planner checks each tool like a step of its own.
    project.write(
        "flow.yaml",
        """
        name: bad tools
        imports: [tools.py]
        steps:
          - name: Prep
            type: process
            tools:
              - tool: load
                params: {n: "many"}
                outputs: [xs]
              - tool: dubble
                inputs: {xs: xs}
              - tool: judge
                inputs: {xs: nowhere}
                outputs: [verdict]
        """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2, res.out
    expected = [
        "flow.yaml:8: step 'Prep/load', field 'params.n': Input should be a valid integer",
        "flow.yaml:10: step 'Prep/dubble', field 'tool': unknown tool 'dubble' "
        "(did you mean 'double'?)",
        "flow.yaml:12: step 'Prep/judge', field 'tool': tool 'judge' is of type "
        "'evaluation' but produces a model",
        "flow.yaml:13: step 'Prep/judge', field 'inputs.xs': input 'nowhere' is not "
        "produced by any step",
    ]
    for fragment in expected:
        assert fragment in res.err, f"missing {fragment!r} in:\n{res.err}"
    data = project.ff("validate", "flow.yaml", "--json").json()
    assert data["valid"] is False and all(e["file"] == "flow.yaml" for e in data["errors"])


def test_next_cannot_route_into_a_step_of_several_tools(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: routed
        imports: [tools.py]
        steps:
          - name: start
            tool: load
            outputs: [xs]
            next: {success: Prep}
          - name: Prep
            tools:
              - {tool: double, inputs: {xs: xs}, outputs: [ys]}
              - {tool: total, inputs: {xs: ys}, outputs: [n]}
        """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2, res.out
    assert (
        "flow.yaml:7: step 'start', field 'next.success': 'Prep' holds several tools: 'next' "
        "can route only to a step of one tool"
    ) in res.err
    assert "unknown step" not in res.err


def test_the_example_reads_as_seed_000s_four_steps(project: Project) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "flow.yaml"
    data = project.ff("validate", str(example), "--json", check=0).json()
    steps: dict[str, list[str]] = {}
    for t in data["steps"]:
        steps.setdefault(t["name"], []).append(t["label"])
    assert list(steps) == [
        "Data Preprocessing",
        "Federated Training",
        "Model Validation",
        "Model Packaging",
    ]
    assert "Feature normalization (hospital-b)" in steps["Data Preprocessing"]
    assert "Global statistics (central)" in steps["Data Preprocessing"]
    assert steps["Federated Training"] == ["Federated training on 3 nodes (fedavg, 30 rounds)"]
    assert steps["Model Packaging"] == ["Model packaging (central)"]


LIVE_TOOLS = """
import time
from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def rounds(ctx: Context, *, n: int = 8) -> int:
    for r in range(1, n + 1):
        ctx.progress(r, n, f"Round {r}/{n}")
        time.sleep(0.25)
    return n


@tool(version="1", type="database-adapter")
def reference() -> int:
    '''A quick reference number.'''
    return 1


@tool(version="1", type="evaluation")
def check(n: int, ref: int) -> dict:
    '''Compare with the reference.'''
    return {"ok": n > ref}
"""


def test_the_live_tree_keeps_a_step_running_until_each_of_its_tools_has_run(
    project: Project,
) -> None:
    """The quick tool of "Model Validation" ends while training still runs: the step is
    running (not completed) in every frame drawn while training runs."""
    import os
    import pty
    import re
    import subprocess
    import sys
    import time

    project.write("tools.py", LIVE_TOOLS)
    project.write(
        "flow.yaml",
        """
        name: Tools Flow
        type: training
        imports: [tools.py]
        steps:
          - {name: Training, tool: rounds, outputs: [n]}
          - name: Model Validation
            type: process
            tools:
              - {tool: reference, label: Reference number, outputs: [ref]}
              - {tool: check, inputs: {n: n, ref: ref}, outputs: [verdict]}
        """,
    )
    leader, follower = pty.openpty()
    env = {**project.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfed", "run", "flow.yaml"],
        cwd=project.root,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert proc.returncode == 0, screen
    frames = re.split(r"(?=Tools Flow \(training\) — )", screen)
    during = [f for f in frames if "Step: Training [running" in f]
    early = [f for f in during if "✓ Reference number (central) finished" in f]
    assert early, screen  # the quick tool ended while training ran...
    for frame in early:  # ...and its step stayed running, its bar not full
        assert "Step: Model Validation (process) [running 50%]" in frame, frame
    final = frames[-1]
    # A finished step shows its duration beside the state: "[completed · 0.01s]".
    done = r"Step: Model Validation \(process\) \[completed( · [0-9.]+s)?\]"
    assert re.search(done, final), final
    assert "✓ Compare with the reference (central) finished" in final
