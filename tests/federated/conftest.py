"""Fixtures for federated runs: the breast cancer example's data and flow, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast_cancer"


@pytest.fixture(scope="session")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three hospitals' CSVs and their nodes layout (make_data.py, seed 0)."""
    out = tmp_path_factory.mktemp("hospitals")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(out), "--quiet"], check=True
    )
    return out


def write_flow(
    folder: Path,
    layout: Path,
    *,
    federated: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    imports: list[str] | None = None,
    trainer: str | None = None,
    trainer_params: dict[str, Any] | None = None,
    sweep: dict[str, Any] | None = None,
) -> Path:
    """A copy of the example flow with absolute paths and the given changes."""
    flow = yaml.safe_load((EXAMPLE / "flow.yaml").read_text())
    for step in flow["steps"]:  # PyYAML reads the key `on` as True (YAML 1.1)
        for part in [step, *step.get("tools", [])]:
            if True in part:
                part["on"] = part.pop(True)
    flow["imports"] = ["flowfed.tools.library", str(EXAMPLE / "reference.py"), *(imports or [])]
    flow["nodes"] = str(layout)
    flow["config"].update(config or {})
    step = next(s for s in flow["steps"] if s.get("kind") == "federated")
    step["federated"].update(federated or {})
    if trainer is not None:
        step["tool"] = trainer
    if trainer_params is not None:
        step["params"].update(trainer_params)
    if sweep is not None:
        step["sweep"] = sweep
    path = folder / "flow.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def run_cli(
    args: list[str], home: Path, *, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m flowfed ARGS`` with its own home; stdout/stderr as text."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    full.update({"FLOWFED_HOME": str(home), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "flowfed", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        cwd=home.parent,
    )


def run_json(args: list[str], home: Path, **kw: Any) -> dict[str, Any]:
    """Run with ``--json`` and return the parsed result (the stderr is in the message)."""
    proc = run_cli([*args, "--json"], home, **kw)
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        raise AssertionError(
            f"no JSON (exit {proc.returncode})\nstdout: {proc.stdout[-2000:]}\n"
            f"stderr: {proc.stderr[-4000:]}"
        ) from None


def tasks_of(result: dict[str, Any], step: str, label: str | None = None) -> list[dict[str, Any]]:
    """The tasks of one step in a ``--json`` result; with ``label``, only those whose
    label starts with it (one tool of a step that holds several: "Feature normalization")."""
    tasks = next(s["tasks"] for s in result["steps"] if s["name"] == step)
    if label is None:
        return tasks
    return [t for t in tasks if t["label"].startswith(label + " (")]


def errors(result: dict[str, Any]) -> list[str]:
    """Every task error message of a ``--json`` result."""
    return [t["error"]["message"] for s in result["steps"] for t in s["tasks"] if t.get("error")]
