"""Seed 000's four steps in the browser: the breast cancer example, run over real nodes.

The example flow (``examples/breast_cancer/flow.yaml``, 3 rounds) is stored and started
through the REST API of a real ``flowfed server`` that three real node agents (one per
hospital) are connected to. The server's run record must file every task under one of the
four steps as written, each labelled in words; then headless Chromium opens the run and
the run tree shows Data Preprocessing → Federated Training → Model Validation → Model
Packaging with their types and the tasks under each by their labels.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.federated import conftest as federated
from tests.server.conftest import Server, start_server, stop
from tests.ui import test_federated_run as federated_run
from tests.ui.conftest import shot

# The three hospitals' CSVs and their node agents, as the federated run test has them.
hospitals = federated.hospitals
hospital_nodes = federated_run.hospital_nodes
HOSPITALS = federated_run.HOSPITALS
RUN_TIMEOUT_MS = federated_run.RUN_TIMEOUT_MS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
STEPS = [
    ("Data Preprocessing", "process"),
    ("Federated Training", "process"),
    ("Model Validation", "process"),
    ("Model Packaging", "output"),
]
ROUNDS = 3


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the built-ins and the example's centralized reference tool."""
    root = tmp_path_factory.mktemp("ui-steps")
    s = start_server(
        root / "srv",
        f"sqlite:///{root / 'flowfed.db'}",
        "--import",
        "flowfed.tools.library",
        "--import",
        str(EXAMPLE / "reference.py"),
    )
    yield s
    stop(s)


def test_the_example_shows_seed_000s_four_steps_with_tasks_in_words(
    page: Page, ui_server: Server, hospital_nodes: list[subprocess.Popen[bytes]]
) -> None:
    api = ui_server.client()
    stored = api.post("/api/v1/flows", json={"source": (EXAMPLE / "flow.yaml").read_text()})
    assert stored.status_code == 201, stored.text
    started = api.post(
        "/api/v1/runs", json={"flow": "Breast Cancer Detection", "params": {"rounds": ROUNDS}}
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    run = ui_server.wait_run(run_id, timeout=RUN_TIMEOUT_MS / 1000)
    assert run["status"] == "success", run.get("error")

    # REST: the four steps as written, their types, and every task labelled in words.
    assert [(s["name"], s.get("type")) for s in run["steps"]] == STEPS
    labels = {s["name"]: [t["label"] for t in s["tasks"]] for s in run["steps"]}
    assert sorted(labels["Data Preprocessing"]) == sorted(
        [
            f"{what} ({node})"
            for what in (
                "Data loading",
                "Train/test split",
                "Local statistics",
                "Feature normalization",
                "Test set normalization",
            )
            for node in HOSPITALS
        ]
        + ["Global statistics (central)"]
    )
    training = labels["Federated Training"]
    for node in HOSPITALS:
        assert training.count(f"Local model training ({node})") == ROUNDS
    assert training.count("Model aggregation (central)") == ROUNDS
    assert sorted(labels["Model Validation"]) == [
        "Centralized reference (central)",
        *[f"Local validation ({node})" for node in HOSPITALS],
        "Pooled metrics (central)",
    ]
    assert labels["Model Packaging"] == ["Model packaging (central)"]
    assert all(t["tool"] and t["label"] != t["tool"] for t in run["tasks"])

    # The browser: the run tree shows the four steps, in order, with the tasks under each.
    page.goto(f"{ui_server.url}/#/runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("success")
    expect(page.locator("h1 .flow-type")).to_have_text("training")
    steps = page.locator("li.step")
    expect(steps).to_have_count(4)
    for i, (name, kind) in enumerate(STEPS):
        head = steps.nth(i).locator(".step-head")
        expect(head.locator("h3")).to_have_text(f"Step: {name} {kind}")
        expect(head.locator(".badge")).to_have_text(re.compile("completed"))
    prep = page.locator("li.step[data-step='Data Preprocessing']")
    expect(prep.locator("li.task")).to_have_count(16)
    line = prep.locator("li.task", has_text="Feature normalization").filter(has_text="hospital-b")
    expect(line.locator("a")).to_have_text("Feature normalization")
    expect(line.locator(".info")).to_have_text(re.compile(r"^hospital-b\b"))
    expect(prep.locator("li.task a", has_text="Global statistics")).to_have_count(1)
    fed = page.locator("li.step[data-step='Federated Training']")
    for node in HOSPITALS:
        latest = fed.locator(f"li.task[data-participant='Federated Training/{node}:breast']")
        expect(latest.locator("a")).to_have_text("Local model training")
        expect(latest.locator(".info")).to_have_text(
            re.compile(rf"^{node} · Round {ROUNDS}/{ROUNDS}")
        )
    aggregate = fed.locator("li.task[data-participant='Federated Training/aggregate']")
    expect(aggregate.locator("a")).to_have_text("Model aggregation")
    validation = page.locator("li.step[data-step='Model Validation']")
    expect(validation.locator("li.task a", has_text="Pooled metrics")).to_have_count(1)
    expect(validation.locator("li.task a", has_text="Local validation")).to_have_count(3)
    packaging = page.locator("li.step[data-step='Model Packaging']")
    expect(packaging.locator("li.task a")).to_have_text("Model packaging")
    shot(page, "seed-000-four-steps")

    # A task's own page says what it is in words.
    line.locator("a").click()
    facts = page.locator("dl.kv")
    expect(
        facts.locator("dt", has_text="Task").locator("xpath=following-sibling::dd[1]")
    ).to_have_text("Feature normalization (hospital-b)")
