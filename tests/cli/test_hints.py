"""Where users stumble, the CLI says what is wrong and what to do, in one message.

Each test runs the real ``flowfed`` command and checks the hint a user reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.cli.conftest import Project
from tests.conftest import PG_ADMIN_URL

LIBRARY_FLOW = """
name: forgot the library
steps:
  - name: load
    tool: flowfed.sklearn_dataset
    params: {name: breast_cancer}
    outputs: [table]
  - name: clean
    tool: flowfed.impute
    inputs: {table: table}
    outputs: [clean]
  - name: fit
    tool: flowfed.logistic_regression
    inputs: {train: clean}
    outputs: [model]
"""

OWN_TOOLS_FLOW = """
name: forgot my tools
steps:
  - name: load
    tool: load_rows
    outputs: [rows]
  - name: count
    tool: count_rows
    inputs: {rows: rows}
"""


def test_a_flow_without_imports_of_builtin_tools_gets_one_message_naming_the_import(
    project: Project,
) -> None:
    project.write("flow.yaml", LIBRARY_FLOW)
    for command in ("validate", "run"):
        res = project.ff(command, "flow.yaml", check=2)
        assert "invalid flow: 1 problem\n" in res.err, res.err
        assert res.err.count("unknown tool") == 0
        assert "3 steps use flowfed's built-in tools (flowfed.sklearn_dataset, " in res.err
        assert "add `imports: [flowfed.tools.library]` to the flow" in res.err
        assert "--import flowfed.tools.library" in res.err
        assert "flow.yaml:4:" in res.err  # the first step naming one
    data = project.ff("validate", "flow.yaml", "--json", check=2).json()
    (only,) = data["errors"]
    assert only["field"] == "imports" and "flowfed.tools.library" in only["message"]
    # With the import the flow is valid: the hint named the right module.
    fixed = project.ff("validate", "flow.yaml", "--import", "flowfed.tools.library", check=0)
    assert "3 tasks" in fixed.out


def test_a_flow_that_imports_nothing_is_told_to_import_its_tools(project: Project) -> None:
    project.write("flow.yaml", OWN_TOOLS_FLOW)
    res = project.ff("validate", "flow.yaml", check=2)
    assert "2 steps name tools that are not registered (load_rows, count_rows)" in res.err
    assert "the flow imports no tools: add `imports: [tools.py]`" in res.err
    assert res.err.count("unknown tool") == 0


def test_a_misspelled_tool_keeps_its_own_line_and_suggestion(project: Project) -> None:
    project.write(
        "tools.py",
        """
        from flowfed import tool

        @tool(version="1", type="database-adapter")
        def load_rows() -> list:
            return [1, 2]
        """,
    )
    project.write(
        "flow.yaml", "imports: [tools.py]\n" + OWN_TOOLS_FLOW.replace("load_rows", "load_rowz")
    )
    res = project.ff("validate", "flow.yaml", check=2)
    assert "unknown tool 'load_rowz' (did you mean 'load_rows'?)" in res.err
    assert "unknown tool 'count_rows'" in res.err and "imports no tools" not in res.err


def test_db_upgrade_takes_database_url(project: Project) -> None:
    target = project.root / "elsewhere" / "catalog.db"
    target.parent.mkdir()
    res = project.ff("db", "upgrade", "--database-url", f"sqlite:///{target}", check=0)
    assert f"database at sqlite:///{target} is at revision" in res.out
    assert target.exists() and not (project.root / ".flowfed").exists()


def test_a_missing_postgresql_database_is_named_with_how_to_create_it(project: Project) -> None:
    name = f"flowfed_missing_{uuid.uuid4().hex[:8]}"
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    for args in (
        ["db", "upgrade", "--database-url", url],
        ["auth", "token", "list", "--database-url", url],
        ["server", "--port", "0", "--database-url", url],
    ):
        res = project.ff(*args, check=2)
        assert f'the PostgreSQL database "{name}" does not exist on 127.0.0.1' in res.err
        assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in res.err
        assert "empty database" not in res.err and "Traceback" not in res.err
    project.env["FLOWFED_DATABASE_URL"] = url
    res = project.ff("runs", "list", check=2)
    assert f'"{name}" does not exist' in res.err


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nats://127.0.0.1:1", "Connect call failed"),
        ("redis://127.0.0.1:1", "Connection refused"),
        ("nats://no-such-host.invalid:4222", "not known"),
    ],
)
def test_an_unreachable_broker_is_one_message_with_url_and_reason(
    project: Project, url: str, reason: str
) -> None:
    project.ff("db", "upgrade", check=0)
    res = project.ff("server", "--port", "0", "--broker-url", url, check=2, timeout=60)
    (line,) = res.err.strip().splitlines()
    kind = "NATS" if url.startswith("nats") else "Redis"
    assert line.startswith(f"error: cannot reach the {kind} broker at {url}: ")
    assert reason in line and "TimeoutError" not in line


def test_messages_count_and_article_right(project: Project) -> None:
    project.write(
        "tools.py",
        """
        from flowfed import tool

        @tool(version="1", type="database-adapter")
        def one() -> int:
            return 1
        """,
    )
    project.write("flow.yaml", "name: one\nimports: [tools.py]\nsteps:\n  - {name: a, tool: one}\n")
    assert "· 1 task\n" in project.ff("validate", "flow.yaml", check=0).out
    ran = project.ff("run", "flow.yaml", check=0).out
    assert "· 1 task (0 cached)" in ran and "1 artifact;" in ran
    code = (
        "from flowfed.wording import ordinal, plural, with_article as a\n"
        "print(ordinal(101), ordinal(111), ordinal(22), plural(1, 'task'), a('admin'), a('user'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["101st", "111th", "22nd", "1", "task", "an", "admin", "a", "user"]


def test_server_help_lists_sandbox_and_where_the_signing_key_is_kept(project: Project) -> None:
    project.env["COLUMNS"] = "400"  # one line per option: phrases are not cut by the frame
    text = " ".join(project.ff("server", "--help", check=0).out.split())
    for word in ("subprocess,", "sandbox", "container,"):
        assert word in text
    assert "a key kept in the database)" not in text
    assert "<catalog>.signing-key" in text and "0600" in text


def test_json_errors_keep_their_shape(project: Project) -> None:
    project.write("flow.yaml", LIBRARY_FLOW)
    data = json.loads(project.ff("validate", "flow.yaml", "--json", check=2).out)
    assert data["valid"] is False and isinstance(data["errors"], list)
