"""A registry people can use (issue 22, part 9), through the CLI and the REST API.

A federated run of the breast cancer example (3 hospitals, 3 rounds, simulated nodes)
makes 3 node updates and one global model per round: 12 model artifacts. The registry
shows one version, the run's final global model; the rest stay artifacts, listed only
when asked for. Artifact search matches names by prefix and filters by run and step.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Project
from tests.server.conftest import Server, start_server, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"


@pytest.fixture
def federated(project: Project) -> tuple[Project, dict[str, Any]]:
    for f in EXAMPLE.iterdir():
        if f.is_file():
            shutil.copy(f, project.root / f.name)
    report = project.run_json("flow.yaml", "--simulate", "-p", "rounds=3", "--no-cache")
    assert report["status"] == "success", str(report)[:2000]
    return project, report


@pytest.fixture
def central(federated: tuple[Project, dict[str, Any]], tmp_path: Path) -> Iterator[Server]:
    project, _ = federated
    home = Path(project.env["FLOWFED_HOME"])
    srv = start_server(tmp_path / "srv", f"sqlite:///{home / 'flowfed.db'}")
    yield srv
    stop(srv)


def test_the_registry_holds_the_final_global_model_only(
    federated: tuple[Project, dict[str, Any]],
) -> None:
    project, report = federated
    models = project.ff("models", "list", "--json", check=0).json()["items"]
    assert len(models) == 1, [(m["name"], m["version"], m["round"]) for m in models]
    (final,) = models
    # The run's model is the last round's aggregate, i.e. what the run reported.
    assert final["artifact_id"] == report["summary"]["model"]["id"]
    assert final["round"] == 3 and final["step"] == "Federated Training"

    everything = project.ff("models", "list", "--include-rounds", "--json", check=0).json()
    names = sorted(m["name"] for m in everything["items"])
    assert names.count("model") == 3  # a global model per round
    assert sum(n.startswith("model.update[") for n in names) == 9  # 3 nodes x 3 rounds
    shown = project.ff("models", "show", "model", "--json", check=0).json()
    versions = shown.get("versions", shown)
    assert [v["version"] for v in versions] == [final["version"]], versions


def test_artifacts_hide_round_updates_unless_asked(
    federated: tuple[Project, dict[str, Any]],
) -> None:
    project, report = federated
    default = project.ff("artifacts", "list", "--json", check=0).json()
    rounds = project.ff("artifacts", "list", "--include-rounds", "--json", check=0).json()
    assert not any(a["name"].startswith("model.update[") for a in default)
    assert sum(a["name"].startswith("model.update[") for a in rounds) == 9
    assert [a["id"] for a in default if a["name"] == "model"] == [report["summary"]["model"]["id"]]
    # Hidden by default: the 9 node updates, and rounds 1-2's global models and their
    # resume checkpoints (issue 21); the last round's model and checkpoint stay listed.
    shown = {a["id"] for a in default}
    hidden = sorted((a["name"], a["version"]) for a in rounds if a["id"] not in shown)
    assert hidden == sorted(
        [(f"model.update[hospital-{h}:breast]", r) for h in "abc" for r in (1, 2, 3)]
        + [(name, r) for name in ("model", "model.checkpoint") for r in (1, 2)]
    )


def test_artifact_search_by_prefix_run_and_step(
    federated: tuple[Project, dict[str, Any]],
) -> None:
    project, report = federated
    found = project.ff("artifacts", "list", "-q", "scores", "--json", check=0).json()
    names = sorted(a["name"] for a in found)
    assert names == [f"scores[hospital-{x}:breast]" for x in "abc"], names
    project.env["COLUMNS"] = "200"  # the table's name column at full width
    text = project.ff("artifacts", "list", "--search", "scores", check=0).out
    assert "scores[hospital-a:breast]" in text, text
    step = project.ff(
        "artifacts", "list", "--step", "Model Packaging", "--run", report["run_id"][:8],
        "--json", check=0,
    ).json()  # fmt: skip
    assert {a["step"] for a in step} == {"Model Packaging"} and step
    # A prefix with LIKE's wildcards matches them literally.
    assert project.ff("artifacts", "list", "-q", "scor%", "--json", check=0).json() == []


def test_rest_models_and_artifacts(
    federated: tuple[Project, dict[str, Any]], central: Server
) -> None:
    _, report = federated
    api = central.client()
    models = api.get("/api/v1/models").json()["items"]
    assert [m["artifact_id"] for m in models] == [report["summary"]["model"]["id"]]
    with_rounds = api.get("/api/v1/models", params={"include_rounds": "true"}).json()["items"]
    assert len(with_rounds) == 12
    assert [v["round"] for v in api.get("/api/v1/models/model").json()["versions"]] == [3]

    arts = api.get("/api/v1/artifacts", params={"q": "scores"}).json()
    assert sorted(a["name"] for a in arts) == [f"scores[hospital-{x}:breast]" for x in "abc"]
    by_step = api.get(
        "/api/v1/artifacts", params={"run_id": report["run_id"], "step": "Model Validation"}
    ).json()
    assert by_step and {a["step"] for a in by_step} == {"Model Validation"}
    assert {a["run_id"] for a in by_step} == {report["run_id"]}
    all_rounds = api.get("/api/v1/artifacts", params={"include_rounds": "true"}).json()
    assert sum(a["name"].startswith("model.update[") for a in all_rounds) == 9
    assert not any(
        a["name"].startswith("model.update[") for a in api.get("/api/v1/artifacts").json()
    )
