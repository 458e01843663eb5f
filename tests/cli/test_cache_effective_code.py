"""The cache follows a tool's effective code: an edit anywhere in the user's code the tool
reaches re-runs it; an edit of comments, docstrings or formatting does not.

Each case runs the real CLI twice with a file edit between, and the truth is a
``--no-cache`` run of the edited code: a cached result must have the same content hash
(0 stale hits), and only the step whose code changed may re-run (0 needless re-runs).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import Project

SHAPES = '''
"""Helpers in a module of the user's own, beside the tools file."""


def spread(i):
    return 2 * i + 1


class Scaler:
    factor = 2

    def apply(self, x):
        return x * self.factor
'''

TOOLS = """
from flowfed import tool

import shapes
from shapes import Scaler

OFFSET = 1


def add_one(x):
    return x + 1


def inner(x):
    return x * 2


def outer(x):
    return inner(x) + 0


transform = lambda v: v * 10  # noqa: E731


def with_default(x, k=3):
    return x * k


@tool(version="1", type="database-adapter")
def t_same_file() -> list:
    return [add_one(i) for i in range(5)]


@tool(version="1", type="database-adapter")
def t_other_module() -> list:
    return [shapes.spread(i) for i in range(5)]


@tool(version="1", type="database-adapter")
def t_constant() -> list:
    return [i + OFFSET for i in range(5)]


@tool(version="1", type="database-adapter")
def t_method() -> list:
    return [Scaler().apply(i) for i in range(5)]


@tool(version="1", type="database-adapter")
def t_default() -> list:
    return [with_default(i) for i in range(5)]


@tool(version="1", type="database-adapter")
def t_nested() -> list:
    return [outer(i) for i in range(5)]


@tool(version="1", type="database-adapter")
def t_lambda() -> list:
    return [transform(i) for i in range(5)]
"""

CASES = {
    "t_same_file": ("tools.py", "return x + 1", "return x + 2"),
    "t_other_module": ("shapes.py", "return 2 * i + 1", "return 200 * i + 1"),
    "t_constant": ("tools.py", "OFFSET = 1", "OFFSET = 7"),
    "t_method": ("shapes.py", "return x * self.factor", "return x * self.factor - 1"),
    "t_default": ("tools.py", "def with_default(x, k=3):", "def with_default(x, k=4):"),
    "t_nested": ("tools.py", "return x * 2", "return x * 5"),
    "t_lambda": ("tools.py", "lambda v: v * 10", "lambda v: v * 11"),
}

FLOW = "name: effective\nimports: [tools.py]\nsteps:\n" + "".join(
    f"  - {{name: {t}, tool: {t}, outputs: [{t}_out]}}\n" for t in CASES
)


def cosmetic(text: str) -> str:
    """The same code with comments, docstrings and formatting changed."""
    out = []
    for line in text.splitlines():
        if line.startswith("def ") or line.startswith("    def "):
            indent = " " * (len(line) - len(line.lstrip()) + 4)
            out += [line, f'{indent}"""A docstring added later."""', f"{indent}# and a comment"]
        elif line.strip().startswith("return "):
            out.append(line.replace("return ", "return  (") + ")  # reformatted")
        else:
            out.append(line)
    return "\n\n".join(["# a header comment", "\n".join(out)]) + "\n"


def run(project: Project, *extra: str) -> dict[str, Any]:
    report = project.run_json("flow.yaml", *extra)
    assert report["status"] == "success", report
    return report


def states(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["tasks"][-1]["status"] for s in report["steps"]}


def hashes(report: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["hash"] for a in report["artifacts"]}


@pytest.fixture
def effective(project: Project) -> Project:
    # Every run imports the edited files afresh (no bytecode from an earlier second).
    project.env["PYTHONDONTWRITEBYTECODE"] = "1"
    project.write("shapes.py", SHAPES)
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", FLOW)
    first = run(project)
    assert set(states(first).values()) == {"finished"}
    return project


def test_comment_docstring_and_format_edits_keep_every_cached_result(
    effective: Project,
) -> None:
    for name in ("tools.py", "shapes.py"):
        path = effective.root / name
        path.write_text(cosmetic(path.read_text()))
    again = run(effective)
    assert states(again) == dict.fromkeys(CASES, "cached")  # 0 needless re-runs


@pytest.mark.parametrize("step", list(CASES))
def test_a_logic_edit_reruns_exactly_the_step_that_reaches_it(
    effective: Project, step: str
) -> None:
    before = hashes(run(effective))
    file, old, new = CASES[step]
    path = effective.root / file
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    after = run(effective)
    expected = dict.fromkeys(CASES, "cached")
    expected[step] = "finished"
    assert states(after) == expected  # only the step whose code changed re-ran
    truth = hashes(run(effective, "--no-cache"))
    assert hashes(after) == truth  # 0 stale hits: every output is what the code computes
    assert truth[f"{step}_out"] != before[f"{step}_out"]


def test_the_issue_example_no_longer_reuses_the_old_output(effective: Project) -> None:
    path = effective.root / "shapes.py"
    path.write_text(path.read_text().replace("return 2 * i + 1", "return 200 * i + 1"))
    run(effective)
    shown = effective.ff("artifacts", "show", "t_other_module_out", "--json", check=0).json()
    assert shown["version"] == 2  # a new version: the old [1, 3, 5, 7, 9] was not reused


def code_hash_of(project: Project, artifact: str) -> str:
    tree = project.ff("lineage", artifact, "--json", check=0).json()
    producer = tree["producer"]
    assert producer["tool_version"] == "1"
    return str(producer["code_hash"])


def test_lineage_records_the_code_hash_beside_the_tool_version(effective: Project) -> None:
    first = code_hash_of(effective, "t_nested_out")
    assert len(first) == 64 and first != code_hash_of(effective, "t_lambda_out")
    path = effective.root / "tools.py"
    path.write_text(path.read_text().replace("return x * 2", "return x * 3"))
    run(effective)
    assert code_hash_of(effective, "t_nested_out:2") != first
    assert code_hash_of(effective, "t_nested_out:1") == first
