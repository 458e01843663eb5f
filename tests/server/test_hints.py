"""Hints where users stumble (issue 20.5): the server names the import it lacks, and a
second tools file that imports the first is not a duplicate."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.server.conftest import Server, flowfed, project_env, start_server, stop

REPO = Path(__file__).resolve().parents[2]
MAIN_JOB = REPO / "examples" / "breast_cancer" / "flow.yaml"


def test_a_server_without_the_library_answers_one_message_naming_the_import(
    tmp_path: Path,
) -> None:
    server: Server = start_server(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv.db'}")
    try:
        with server.client() as c:
            r = c.post("/api/v1/flows/validate", json={"source": MAIN_JOB.read_text()})
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        # One message for every step whose tool the server lacks, not one per step.
        unknown = [e for e in errors if "unknown tool" in e["message"]]
        assert len(unknown) == 1, errors
        (e,) = unknown
        assert "start the server with --import flowfed.tools.library" in e["message"]
        # The flow's own tools file (ignored by the server) is named too.
        assert "--import reference.py" in e["message"]
        assert "'flowfed.node_dataset'" in e["message"]
        assert "built-in tools" in e["message"]
        assert e["line"] is not None
        # Nor the follow-on "input 'raw' is not produced by any step" of those steps.
        assert not [e for e in errors if "is not produced" in e["message"]], errors

        # The CLI against that server shows the same single hint.
        res = flowfed(
            server.root,
            {**server.env, "FLOWFED_SERVER": server.url, "FLOWFED_TOKEN": server.token},
            "run",
            str(MAIN_JOB),
            check=None,
        )
        text = res.stdout + res.stderr
        assert res.returncode != 0
        assert text.count("--import flowfed.tools.library") == 1, text
        assert "unknown tool 'flowfed.node_dataset'" not in text, text
    finally:
        stop(server)


def test_a_typo_keeps_its_own_did_you_mean(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv.db'}")
    try:
        flow = {
            "name": "typo",
            "imports": ["tools.py"],
            "steps": [{"name": "load", "tool": "numbrs", "outputs": ["xs"]}],
        }
        with server.client() as c:
            r = c.post("/api/v1/flows/validate", json={"flow": flow})
        assert r.status_code == 422, r.text
        (e,) = r.json()["errors"]
        assert e["message"] == "unknown tool 'numbrs'"
        assert e["hint"] == "did you mean 'numbers'?"
    finally:
        stop(server)


HELPERS = """
from flowfed import tool

@tool(version="1", type="preprocessing")
def shared_clean(xs: list) -> list:
    return [x for x in xs if x is not None]
"""

SECOND = """
from flowfed import tool
from helpers import shared_clean  # a tool of the first file, reused here

@tool(version="1", type="evaluation")
def count(xs: list) -> int:
    return len(shared_clean(xs))
"""


def test_a_second_tools_file_importing_the_first_is_not_a_duplicate(tmp_path: Path) -> None:
    """Both files given to the server (and in either order) load without DuplicateTool."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (tools / "second.py").write_text(textwrap.dedent(SECOND))
    for order in (["helpers.py", "second.py"], ["second.py", "helpers.py"]):
        root = tmp_path / "-".join(order)
        root.mkdir()
        env = project_env(root, f"sqlite:///{root / 'f.db'}")
        flowfed(root, env, "db", "upgrade")
        flow = root / "flow.yaml"
        flow.write_text(
            textwrap.dedent(
                f"""
                name: reuse
                imports: [{tools / order[0]}, {tools / order[1]}]
                steps:
                  - {{name: clean, tool: shared_clean, outputs: [clean]}}
                """
            )
        )
        res = flowfed(root, env, "validate", str(flow), check=None)
        assert "DuplicateTool" not in res.stdout + res.stderr
        assert "already registered" not in res.stdout + res.stderr
        # The server loads the same pair at start-up.
        args = [a for name in order for a in ("--import", str(tools / name))]
        s = start_server(root / "srv", f"sqlite:///{root / 'srv.db'}", *args)
        try:
            with s.client() as c:
                names = {t["name"] for t in c.get("/api/v1/tools").json()}
            assert {"shared_clean", "count"} <= names
        finally:
            stop(s)


def test_two_different_functions_under_one_name_are_still_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    body = (
        "from flowfed import tool\n\n"
        '@tool(name="clash", version="1")\n'
        "def f{n}(x: int) -> int:\n"
        "    return x + {n}\n"
    )
    a.write_text(body.format(n=1))
    b.write_text(body.format(n=2))
    root = tmp_path / "srv"
    root.mkdir()
    env = project_env(root, f"sqlite:///{root / 'f.db'}")
    flowfed(root, env, "db", "upgrade")
    res = flowfed(
        root, env, "server", "--port", "0", "--import", str(a), "--import", str(b), check=2
    )
    assert "tool 'clash' is already registered" in res.stdout + res.stderr
