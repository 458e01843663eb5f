"""Fixtures for end-to-end tests that drive the real ``flowfed`` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str
    pid: int = 0

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Project:
    """A folder with a flow and its tools, and a private flowfed home."""

    root: Path
    env: dict[str, str]

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def ff(self, *args: str, timeout: float = 120, check: int | None = None) -> Result:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowfed", *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"flowfed {' '.join(args)} timed out\n{out}\n{err}") from None
        res = Result(proc.returncode, out, err, proc.pid)
        if check is not None:
            assert res.code == check, f"exit {res.code}\nstdout:\n{res.out}\nstderr:\n{res.err}"
        return res

    def run_json(self, *args: str, check: int = 0) -> dict[str, Any]:
        res = self.ff("run", *args, "--json", check=check)
        return res.json()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    env = dict(os.environ)
    env["FLOWFED_HOME"] = str(tmp_path / ".flowfed")
    env.pop("FLOWFED_DATABASE_URL", None)
    env.pop("FLOWFED_ARTIFACTS_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return Project(tmp_path, env)


@pytest.fixture
def pg_project(project: Project, db_url: str) -> Project:
    """The same project on each database the suite covers (SQLite and PostgreSQL)."""
    project.env["FLOWFED_DATABASE_URL"] = db_url
    return project


def by_step(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


Writer = Callable[[str, str], Path]
