"""`flowfed validate`: every build-time problem reported at once, with file:line, step, field."""

from __future__ import annotations

from tests.cli.conftest import Project

TOOLS = """
from flowfed import tool, Model

class M(Model):
    def save(self, path): open(path, "w").write("m")
    @classmethod
    def load(cls, path): return cls()

@tool(version="1", type="database-adapter")
def load(*, n: int = 3) -> list:
    return list(range(n))

@tool(version="1", type="evaluation")
def judge(xs: list) -> M:
    return M()

@tool(version="1", type="analysis")
def fit(xs: list) -> list:
    return xs

@tool(version="1", type="data-transformation")
def t(xs: list) -> list:
    return xs
"""

BAD = """
name: bad
imports: [tools.py]
steps:
  - name: a
    tool: load
    params:
      n: "x"
      m: 2
    outputs: [xs]
  - name: b
    tool: lod
  - name: c
    tool: judge
    inputs: {xs: nothing}
  - name: d
    tool: t
    inputs: {xs: e_out}
    outputs: [d_out]
  - name: e
    tool: t
    inputs: {xs: d_out}
    outputs: [e_out]
  - name: f
    tool: t
    inputs: {xs: xs}
    outputs: [xs2]
    next: {success: nowhere}
  - name: g
    tool: t
    inputs: {xs: xs}
    outputs: [xs2]
  - name: h
    tool: fit
    inputs: {xs: xs}
    outputs: [fitted]
  - name: i
    tool: load
    params: {n: "${config.missing}"}
    outputs: [i_out]
"""


def test_valid_flow_exits_zero_and_lists_the_inferred_edges(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: ok
        imports: [tools.py]
        steps:
          - {name: second, tool: t, inputs: {xs: xs}, outputs: [ys]}
          - {name: first, tool: load, outputs: [xs]}
    """,
    )
    res = project.ff("validate", "flow.yaml", check=0)
    assert "second: t@1 ← first" in res.out
    data = project.ff("validate", "flow.yaml", "--json", check=0).json()
    assert [s["name"] for s in data["steps"]] == ["first", "second"]


def test_every_problem_is_reported_together_with_its_location(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", BAD)
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2
    err = res.err
    expected = [
        "flow.yaml:7: step 'a', field 'params.n': Input should be a valid integer",
        "flow.yaml:8: step 'a', field 'params.m': 'm' is not a config field of tool 'load'",
        "flow.yaml:11: step 'b', field 'tool': unknown tool 'lod' (did you mean 'load'?)",
        "step 'c', field 'tool': tool 'judge' is of type 'evaluation' but produces a model",
        "flow.yaml:14: step 'c', field 'inputs.xs': input 'nothing' is not produced by any step",
        "artifact cycle: ",
        "step 'g', field 'outputs': artifact 'xs2' is produced by two steps: 'f' and 'g'",
        "flow.yaml:27: step 'f', field 'next.success': routes to unknown step 'nowhere'",
        "step 'h', field 'tool': tool 'fit' is of type 'analysis' but produces no model",
    ]
    for fragment in expected:
        assert fragment in err, f"missing {fragment!r} in:\n{err}"
    cycle_line = next(line for line in err.splitlines() if "artifact cycle" in line)
    assert "d → e → d" in cycle_line or "e → d → e" in cycle_line
    assert "Traceback" not in err
    data = project.ff("validate", "flow.yaml", "--json").json()
    assert data["valid"] is False and len(data["errors"]) >= len(expected)
    assert all({"message", "file"} <= set(e) for e in data["errors"])


def test_unreachable_steps_are_errors(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: unreachable
        imports: [tools.py]
        steps:
          - {name: a, tool: load, outputs: [xs]}
          - {name: b, tool: t, inputs: {xs: xs}, outputs: [ys], next: {success: c}}
          - {name: c, tool: t, inputs: {xs: ys}, outputs: [zs], next: {success: b}}
    """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2
    assert "step 'b': step is unreachable: no reachable step routes to it" in res.err


def test_reachability_does_not_depend_on_the_order_steps_are_written_in(
    project: Project,
) -> None:
    project.write("tools.py", TOOLS)
    # Written last step first: `c` is routed to by `b`, written after it, and `d` consumes
    # what `c` makes.
    project.write(
        "flow.yaml",
        """
        name: backwards
        imports: [tools.py]
        steps:
          - {name: d, tool: t, inputs: {xs: ys}, outputs: [zs]}
          - {name: c, tool: t, inputs: {xs: xs}, outputs: [ys]}
          - {name: b, tool: t, inputs: {xs: xs}, outputs: [ws], next: {success: c}}
          - {name: a, tool: load, outputs: [xs]}
    """,
    )
    assert project.ff("validate", "flow.yaml").code == 0
    report = project.run_json("flow.yaml")
    assert report["status"] == "success"
    assert {s["name"] for s in report["steps"] if s["tasks"]} == {"a", "b", "c", "d"}
    # The same shape with `b` and `c` routing only to each other: neither can start, and
    # `d`, which consumes from `c`, can never run either.
    project.write(
        "flow.yaml",
        """
        name: backwards
        imports: [tools.py]
        steps:
          - {name: d, tool: t, inputs: {xs: ys}, outputs: [zs]}
          - {name: c, tool: t, inputs: {xs: xs}, outputs: [ys], next: {success: b}}
          - {name: b, tool: t, inputs: {xs: xs}, outputs: [ws], next: {success: c}}
          - {name: a, tool: load, outputs: [xs]}
    """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2
    assert "step 'd': step is unreachable: a step it consumes from can never run" in res.err
    assert "step 'c': step is unreachable: no reachable step routes to it" in res.err
    assert "step 'b': step is unreachable: no reachable step routes to it" in res.err


def test_malformed_yaml_names_the_line(project: Project) -> None:
    project.write("flow.yaml", "name: x\nsteps:\n  - name: a\n    tool: [unclosed\n")
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2 and "flow.yaml:" in res.err and "invalid YAML" in res.err


def test_yaml_values_the_safe_loader_refuses_are_located(project: Project) -> None:
    project.write(
        "flow.yaml",
        "name: x\n"
        "config:\n"
        "  run: !!python/object/apply:os.system [echo owned]\n"
        "  day: 2024-13-45\n"
        "  ? [a, b]\n"
        "  : 1\n"
        "steps:\n"
        "  - {name: a, tool: t}\n",
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2 and "Traceback" not in res.err
    assert "flow.yaml:3: invalid YAML value: could not determine a constructor" in res.err
    assert "flow.yaml:4: invalid YAML value: month must be in 1..12" in res.err
    assert "flow.yaml:5: invalid YAML key: a key must be a plain value" in res.err


def test_unknown_keys_and_wrong_types_are_located(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: x
        imports: [tools.py]
        steps:
          - name: a
            tool: load
            retries: many
            colour: blue
    """,
    )
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2
    assert "flow.yaml:6: step 'a', field 'retries'" in res.err
    assert "flow.yaml:7: step 'a', field 'colour': unknown key 'colour'" in res.err


def test_missing_file_and_broken_tools_module_are_clear(project: Project) -> None:
    res = project.ff("validate", "nope.yaml")
    assert res.code == 2 and "flow file not found" in res.err
    project.write("tools.py", "def broken(:\n    pass\n")
    project.write("flow.yaml", "name: x\nimports: [tools.py]\nsteps:\n  - {name: a, tool: t}\n")
    res = project.ff("validate", "flow.yaml")
    assert res.code == 2
    assert "flow.yaml:2" in res.err and "syntax error in" in res.err and "tools.py:1" in res.err


def test_invalid_json_flow_names_the_line(project: Project) -> None:
    project.write("flow.json", '{"name": "x",\n "steps": [}\n')
    res = project.ff("validate", "flow.json")
    assert res.code == 2 and "flow.json:2: invalid JSON" in res.err


def test_unknown_param_override_is_rejected(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", "name: x\nimports: [tools.py]\nsteps:\n  - {name: a, tool: load}\n")
    res = project.ff("run", "flow.yaml", "--param", "rounds=3")
    assert res.code == 2 and "unknown parameter 'rounds'" in res.err
    res = project.ff("run", "flow.yaml", "--param", "oops")
    assert res.code == 2 and "KEY=VALUE" in res.err


def test_tools_commands_show_the_config_schema(project: Project) -> None:
    project.write("tools.py", TOOLS)
    listing = project.ff("tools", "list", "--import", "tools.py", "--json", check=0).json()
    assert {"load", "judge", "fit", "t"} <= {t["name"] for t in listing}
    shown = project.ff("tools", "show", "load", "--import", "tools.py", "--json", check=0).json()
    assert shown["type"] == "database-adapter"
    assert shown["config_schema"]["properties"]["n"] == {
        "default": 3,
        "title": "N",
        "type": "integer",
    }
    text = project.ff("tools", "show", "load", "--import", "tools.py", check=0).out
    assert '"properties"' in text
    res = project.ff("tools", "show", "nope", "--import", "tools.py")
    assert res.code == 2 and "unknown tool 'nope'" in res.err
