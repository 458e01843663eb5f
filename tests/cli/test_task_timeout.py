"""A platform-wide default task timeout: a hung tool without a step `timeout:` is stopped."""

from __future__ import annotations

from tests.cli.conftest import Project, by_step

TOOLS = """
import time
from flowfed import tool, Context

@tool(version="1", type="database-adapter")
def numbers() -> list:
    return [1, 2, 3]

@tool(version="1", type="evaluation")
def hang(xs: list) -> dict:
    time.sleep(3600)  # never checks for cancel: only a timeout can end it
    return {}
"""

FLOW = """
name: hung
imports: [tools.py]
{config}
steps:
  - {{name: load, tool: numbers, outputs: [xs]}}
  - {{name: wait, tool: hang, inputs: {{xs: xs}}, outputs: [out]{timeout}}}
"""


def _make(project: Project, config: str = "", timeout: str = "") -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", FLOW.format(config=config, timeout=timeout))


def test_a_hung_tool_without_a_step_timeout_is_stopped_by_the_run_default(
    project: Project,
) -> None:
    _make(project)
    report = project.run_json("flow.yaml", "--task-timeout", "1", check=1)
    wait = by_step(report)["wait"]
    assert wait["status"] == "failed"
    err = wait["tasks"][0]["error"]
    assert err["type"] == "TimeoutError"
    assert "timed out after 1s" in err["message"]
    assert "default task timeout" in err["message"]
    assert "--task-timeout" in err["message"]
    assert report["error"] == "step(s) failed: wait"


def test_the_flow_config_sets_the_default_task_timeout(project: Project) -> None:
    _make(project, config="config: {task_timeout: 1}")
    # The flow's own default comes before the command line's.
    report = project.run_json("flow.yaml", "--task-timeout", "600", check=1)
    err = by_step(report)["wait"]["tasks"][0]["error"]
    assert "timed out after 1s" in err["message"]


def test_a_step_timeout_comes_before_the_default(project: Project) -> None:
    _make(project, timeout=", timeout: 0.5")
    report = project.run_json("flow.yaml", "--task-timeout", "600", check=1)
    err = by_step(report)["wait"]["tasks"][0]["error"]
    assert "timed out after 0.5s" in err["message"]
    assert "default task timeout" not in err["message"]


def test_a_bad_task_timeout_in_the_flow_is_a_clear_error(project: Project) -> None:
    _make(project, config="config: {task_timeout: soon}")
    res = project.ff("run", "flow.yaml", check=2)
    assert "config.task_timeout must be a positive number of seconds, got 'soon'" in (
        res.out + res.err
    )
    assert "flow.yaml:3" in res.out + res.err
    assert "Traceback" not in res.err
