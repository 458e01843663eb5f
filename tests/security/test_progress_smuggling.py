"""Red team (issue 22, part 1): progress counts and resource figures are a new way off a
node. A tool that reads marker bytes from its hospital's rows tries to carry them out in
the progress ``unit`` and ``message`` of ``ctx.progress`` (and in counts it cannot turn
into text). Under the node's default policy none of it reaches the central side: not the
catalog (SQLite with its WAL), not the artifact store, not the REST API, not the CLI.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.cli.conftest import Project, project  # noqa: F401 (the project fixture)
from tests.security.central import find_marker

TOOLS = """
import pandas as pd
from flowfed import Context, tool


def _send(ctx: Context, rows: pd.DataFrame) -> int:
    secret = str(rows["label"].iloc[0])
    ctx.progress(1, 8, secret, unit=secret)
    ctx.progress(2, 8, message=f"row {secret}", unit="images " + secret)
    ctx.progress(3, None, unit=secret[:12])
    ctx.progress(8, 8, unit=secret)  # the last report is the one the catalog keeps
    return len(rows)


@tool(version="1", type="database-adapter")
def smuggle(ctx: Context) -> int:
    return _send(ctx, pd.read_csv(ctx.dataset["path"]))


@tool(version="1", type="database-adapter")
def smuggle_here(ctx: Context, *, path: str) -> int:
    return _send(ctx, pd.read_csv(path))
"""


def test_progress_units_and_messages_do_not_carry_row_bytes_off_a_node(
    project: Project,  # noqa: F811
) -> None:
    marker = "MARK-" + uuid.uuid4().hex[:16]  # short enough for a unit (32 characters)
    rows = "\n".join(f"{40 + i},{1.5 + i},{marker}{i}" for i in range(8))
    project.write("hospital-a.csv", "age,size,label\n" + rows + "\n")
    project.write("nodes.yaml", "nodes:\n  hospital-a:\n    breast: hospital-a.csv\n")
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: smuggling
        nodes: nodes.yaml
        imports: [tools.py]
        config:
          datasets: [hospital-a:breast]
        steps:
          - name: Smuggle
            tool: smuggle
            on: each-dataset
            outputs: [n]
        """,
    )
    report = project.run_json("flow.yaml", "--no-cache")
    assert report["status"] == "success", json.dumps(report)[:2000]
    (task,) = report["steps"][0]["tasks"]
    # The counts left as numbers; a unit that is not a known word was stripped.
    assert task["resources"]["progress"] == {"done": 8, "total": 8, "unit": None}

    shown = project.ff("runs", "show", report["run_id"], "--json", check=0)
    text = project.ff("runs", "show", report["run_id"], check=0)
    home = Path(project.env["FLOWFED_HOME"])
    central = [*sorted(home.glob("flowfed.db*")), home / "artifacts"]
    assert central[0].name == "flowfed.db", central
    for where, blob in (
        ("run --json", json.dumps(report)),
        ("runs show --json", shown.out),
        ("runs show", text.out),
    ):
        assert marker not in blob, f"the marker reached the central side through {where}"
    assert find_marker(marker.encode(), paths=central) == []

    # The same tool run centrally (no node in between) does get the marker into the
    # catalog: the search above would have found it.
    project.write(
        "central.yaml",
        f"""
        name: central
        steps:
          - name: Here
            tool: smuggle_here
            params: {{path: {project.root / "hospital-a.csv"}}}
            outputs: [n]
        """,
    )
    central_run = project.run_json("central.yaml", "-i", "tools.py", "--no-cache")
    assert central_run["status"] == "success", central_run
    assert find_marker(marker.encode(), paths=central) != []
