"""``flowfed --help`` imports only Typer and the CLI's root; each command loads on use.

No timing here (that is benchmarks/cli_startup.py): these tests check what is imported,
in a fresh interpreter, which is what makes the command start fast.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flowfed.cli

HEAVY = ("sqlalchemy", "fastapi", "numpy", "pydantic", "httpx", "yaml", "pandas", "uvicorn")

PROBE = """
import json, sys
sys.argv = ["flowfed", *{args!r}]
from flowfed.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(*args: str) -> set[str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return set(json.loads(res.stderr.strip().splitlines()[-1]))


def test_help_imports_no_database_server_or_numpy() -> None:
    loaded = _modules_after("--help")
    for top in HEAVY:
        assert not any(m == top or m.startswith(top + ".") for m in loaded), top
    # Not even Rich's console, nor any command module.
    assert "rich.console" not in loaded
    commands = {m for m in loaded if m.startswith("flowfed.cli.")}
    assert commands == {"flowfed.cli.main", "flowfed.cli.common"}
    # The public API of the package stays lazy too.
    assert not any(m.startswith(("flowfed.api", "flowfed.engine", "flowfed.db")) for m in loaded)


def test_a_command_imports_only_its_own_module() -> None:
    loaded = _modules_after("runs", "--help")
    cli = {m for m in loaded if m.startswith("flowfed.cli.")}
    # Its own module, and the shared helpers (common; figures: durations and resources).
    assert cli == {
        "flowfed.cli.main",
        "flowfed.cli.common",
        "flowfed.cli.figures",
        "flowfed.cli.runs",
    }
    assert not any(m.startswith(("sqlalchemy", "fastapi", "numpy")) for m in loaded)


def test_help_lists_every_command_with_its_own_summary() -> None:
    from flowfed.cli.main import COMMANDS, load_command

    res = subprocess.run(
        [sys.executable, "-m", "flowfed", "--help"], capture_output=True, text=True, check=True
    )
    listed = [
        line.split()[0]
        for line in res.stdout.split("Commands:", 1)[1].splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]
    assert listed == list(COMMANDS)
    for name, (_, _, summary) in COMMANDS.items():
        cmd = load_command(name)
        # The summary --help prints without importing is the command's own first line.
        assert (cmd.help or "").strip().splitlines()[0] == summary, name


@pytest.mark.parametrize("name", ["db", "auth", "runs", "flows", "models", "nodes"])
def test_groups_stay_groups(name: str) -> None:
    from flowfed.cli.main import load_command

    assert hasattr(load_command(name), "commands")


def test_no_command_module_imports_the_root() -> None:
    """No import circle: cli/main imports the commands lazily, they never import it."""
    root = Path(flowfed.cli.__file__).parent
    for path in sorted(root.glob("*.py")):
        if path.name == "main.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "flowfed.cli.main", path.name
            elif isinstance(node, ast.Import):
                assert all(a.name != "flowfed.cli.main" for a in node.names), path.name


def test_a_local_run_imports_no_server_alembic_or_process_machinery(tmp_path: Path) -> None:
    # A one-task flow without nodes: what the run path loads (the W3 benchmark's process).
    (tmp_path / "tools.py").write_text(
        "from flowfed import tool\n\n"
        "@tool(version='1', type='preprocessing')\n"
        "def one() -> int:\n    return 1\n"
    )
    (tmp_path / "flow.yaml").write_text(
        "name: one\nimports: [tools.py]\nsteps:\n  - name: a\n    tool: one\n    outputs: [x]\n"
    )
    probe = PROBE.format(args=["run", str(tmp_path / "flow.yaml"), "--quiet"])
    res = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "FLOWFED_HOME": str(tmp_path / "home")},
    )
    assert "success" in res.stdout, res.stdout + res.stderr
    loaded = set(json.loads(res.stderr.strip().splitlines()[-1]))
    assert "flowfed.engine.local" in loaded  # the probe sees the run's own imports
    for unneeded in ("flowfed.server", "alembic", "multiprocessing", "fastapi", "distributed"):
        assert not any(m == unneeded or m.startswith(unneeded + ".") for m in loaded), unneeded
