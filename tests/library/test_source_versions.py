"""Adapters reading files re-run when the file changes, and only then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(root: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowfed",
            "run",
            "flow.yaml",
            "--json",
            "--import",
            "flowfed.tools.library",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_csv_adapter_reruns_when_its_file_changes(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "FLOWFED_HOME": str(tmp_path / ".flowfed")}
    env.pop("FLOWFED_DATABASE_URL", None)
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "flow.yaml").write_text(
        "name: csv flow\nsteps:\n"
        "  - {name: load, tool: flowfed.csv, params: {path: data.csv}, outputs: [table]}\n"
    )
    first = run(tmp_path, env)
    assert first["steps"][0]["tasks"][0]["status"] == "finished"
    again = run(tmp_path, env)
    assert again["steps"][0]["tasks"][0]["status"] == "cached"
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,5\n")
    changed = run(tmp_path, env)
    assert changed["steps"][0]["tasks"][0]["status"] == "finished"
    versions = sorted(a["version"] for a in changed["artifacts"] if a["name"] == "table")
    assert versions == [2]
