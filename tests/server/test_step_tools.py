"""A step of several tools through the REST API of a real (SQLite) server: stored and read
back, run with its tasks filed under it and labelled in words, and not
"completed" while one of its tools has yet to start."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.server.conftest import Server

FLOW = """\
name: several tools
type: training
steps:
  - name: Data Preprocessing
    type: process
    tools:
      - name: load
        label: Number loading
        tool: numbers
        params: {n: 4}
        outputs: [raw]
      - tool: scale
        label: Scaling
        inputs: {xs: raw}
        params: {factor: 3}
        outputs: [scaled]
  - name: Summary
    type: output
    tool: total
    inputs: {xs: scaled}
    outputs: [score]
"""

# "Check" holds a quick tool and one that waits on the slow step: while the slow step runs,
# its one finished task must not make it "completed".
WAITING = """\
name: waiting tools
steps:
  - {name: Wait, tool: slow, params: {seconds: 60}, outputs: [w]}
  - name: Check
    tools:
      - {tool: numbers, outputs: [xs]}
      - {tool: scale, inputs: {xs: w}, outputs: [ys]}
"""


def test_a_step_of_several_tools_over_rest(server: Server, api: httpx.Client) -> None:
    planned = api.post("/api/v1/flows/validate", json={"source": FLOW}).json()
    assert [(t["step"], t["task"], t["label"]) for t in planned["tasks"]] == [
        ("Data Preprocessing", "Data Preprocessing/load", "Number loading (central)"),
        ("Data Preprocessing", "Data Preprocessing/scale", "Scaling (central)"),
        ("Summary", "Summary", "Total (central)"),
    ]
    r = api.post("/api/v1/flows", json={"source": FLOW})
    assert r.status_code == 201, r.text
    stored = api.get("/api/v1/flows/several tools").json()
    assert [t["name"] for t in stored["spec"]["steps"][0]["tools"]] == ["load", None]
    # The stored definition is read back (and planned again) to start a run.
    run_id = api.post("/api/v1/runs", json={"flow": "several tools"}).json()["run_id"]
    run = server.wait_run(run_id, timeout=60)
    assert run["status"] == "success", run.get("error")
    assert [(s["name"], s.get("type"), s["status"]) for s in run["steps"]] == [
        ("Data Preprocessing", "process", "completed"),
        ("Summary", "output", "completed"),
    ]
    prep = run["steps"][0]["tasks"]
    assert [(t["plan_key"], t["tool"], t["label"]) for t in prep] == [
        ("Data Preprocessing/load", "numbers", "Number loading (central)"),
        ("Data Preprocessing/scale", "scale", "Scaling (central)"),
    ]
    (summary,) = run["steps"][1]["tasks"]
    # A tool without a docstring or label is named from its name.
    assert summary["label"] == "Total (central)"
    # 3·(0+1+2+3), worked by hand: the second tool read the first one's output.
    assert summary["metrics"]["total"] == 19.0  # total reports sum + 1 at step 2
    one = api.get(f"/api/v1/tasks/{prep[1]['id']}").json()
    assert one["label"] == "Scaling (central)" and one["step"] == "Data Preprocessing"

    # A bad tool under `tools:` is a 422 naming the step, the tool and the line.
    bad = FLOW.replace("tool: scale", "tool: scal")
    r = api.post("/api/v1/flows", json={"source": bad})
    assert r.status_code == 422, r.text
    err = next(e for e in r.json()["errors"] if e.get("field") == "tool")
    assert err["step"] == "Data Preprocessing/scal" and err["line"] == 12
    assert err["message"].startswith("unknown tool 'scal'")


def test_a_step_is_not_done_while_one_of_its_tools_has_not_started(
    server: Server, api: httpx.Client
) -> None:
    r = api.post("/api/v1/runs", json={"source": WAITING})
    assert r.status_code == 202, r.text
    rid = r.json()["run_id"]
    deadline = time.monotonic() + 60
    while True:  # until the quick tool has finished while the slow step still runs
        run = api.get(f"/api/v1/runs/{rid}").json()
        check = run["steps"][1]["tasks"]
        if check and check[0]["state"] == "finished":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    assert run["status"] == "running"
    assert [s["status"] for s in run["steps"]] == ["running", "running"]
    assert api.post(f"/api/v1/runs/{rid}/cancel").status_code == 202
    run = server.wait_run(rid, timeout=30)
    assert run["status"] == "cancelled"
    assert run["steps"][0]["status"] == "cancelled"


def test_a_template_types_the_config_its_tools_refer_to(tmp_path: Path) -> None:
    """A template whose step holds several tools: a ``${config.KEY}`` in a tool's params
    gives KEY that tool's config type in the template's form."""
    import flowfed.tools.library  # noqa: F401  (the tools the template's params refer to)
    from flowfed.server.templates import load_templates, parameter_schema

    (tmp_path / "t.yaml").write_text(
        "id: tools\ntitle: Tools\ndescription: a step of several tools\n"
        "flow:\n  name: Tools\n  config: {split_seed: 3.0}\n  steps:\n"
        "    - name: Data Preprocessing\n      tools:\n"
        "        - {tool: flowfed.sklearn_dataset, params: {name: breast_cancer},"
        " outputs: [raw]}\n"
        "        - {tool: flowfed.train_test_split, inputs: {table: raw},"
        ' params: {seed: "${config.split_seed}"}}\n'
    )
    schema = parameter_schema(load_templates(tmp_path)["tools"])
    # The default 3.0 alone would make it a number; the tool's config says integer.
    assert schema["properties"]["split_seed"]["type"] == "integer"
