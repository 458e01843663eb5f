"""A real federated run, made and watched in the browser.

Three real node agents (``flowfed node start`` subprocesses, as in
tests/federated/test_server_nodes.py) hold the breast cancer example's hospital CSVs and
connect to the module's real ``flowfed server``. In headless Chromium a user signs in,
makes a flow from the "Federated classification" template with 4 rounds, starts it and
watches the run monitor: each hospital's latest round task with its loss, the earlier
rounds folded into a count, the Federated Training step completed; then the nodes page
lists the three hospitals online. Nothing is injected: every line comes from the run.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from flowfed.node.agent import node_command
from tests.federated import conftest as federated
from tests.polling import wait_for
from tests.server.conftest import Server
from tests.ui.conftest import shot
from tests.ui.test_pages_data import js_num

# The three hospitals' CSVs (make_data.py): the federated tests' session fixture, reused.
hospitals = federated.hospitals

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
ROUNDS = 4
STEP = "Federated Training"
TRAINER = "flowfed.logistic_regression"
# A run on a busy machine (the suite on two workers) may take a while to start and end.
RUN_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def hospital_nodes(
    ui_server: Server, hospitals: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three node agents, one per hospital, each with its ``breast`` CSV; online."""
    root = tmp_path_factory.mktemp("nodes")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for node in HOSPITALS:
            creds = root / f"{node}.json"
            ui_server.ff(
                "nodes", "add", node, "--out", str(creds), "--database-url", ui_server.db_url
            )
            cmd = node_command(
                node, ui_server.url, creds, {"breast": hospitals / node / "breast.csv"},
                work_dir=root / f"work-{node}",
            )  # fmt: skip
            with open(root / f"{node}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
                )
        api = ui_server.client()

        def all_online() -> bool:
            nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()["items"]}
            return all(nodes.get(n, {}).get("online") for n in HOSPITALS)

        wait_for("the three hospitals' node agents to come online", all_online)
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def signed_out_page(browser: Browser, ui_server: Server) -> Iterator[Page]:
    """A fresh tab on the dashboard's sign-in page (the test signs in itself)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))
    page.goto(ui_server.url + "/")
    yield page
    context.close()
    # A JavaScript exception is a bug even if the page happened to look right.
    assert not errors, f"uncaught errors in the page: {errors}"


def value_of(page: Page, term: str) -> Locator:
    """The value beside ``term`` in the page's facts list (``dl.kv``)."""
    return page.locator("dl.kv dt", has_text=term).locator("xpath=following-sibling::dd[1]")


def round_line(task: dict[str, Any]) -> str:
    """The run monitor's line for a finished task of the federated step."""
    parts = [task["node"]]
    if task["round"] is not None:
        parts.append(f"Round {task['round']}/{ROUNDS}")
    if (task["metrics"] or {}).get("loss") is not None:
        parts.append(f"loss {js_num(task['metrics']['loss'])}")
    return " · ".join(parts)


def test_a_federated_run_from_the_template_is_watched_round_by_round(
    signed_out_page: Page, ui_server: Server, hospital_nodes: list[subprocess.Popen[bytes]]
) -> None:
    page = signed_out_page
    # Sign in with a token, as a user does.
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(ui_server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()

    # The template's generated form: 4 rounds instead of its 30.
    page.get_by_role("link", name="Use template: Federated classification").click()
    expect(page.get_by_label("Rounds")).to_have_value("30")
    page.get_by_label("Flow name").fill("BC in the browser")
    page.get_by_label("Rounds").fill(str(ROUNDS))
    page.get_by_role("button", name="Create flow").click()
    expect(page.get_by_role("heading", name="BC in the browser")).to_be_visible()
    config = page.locator("dl.kv")
    expect(
        config.locator("dt", has_text="rounds").locator("xpath=following-sibling::dd[1]")
    ).to_have_text(str(ROUNDS))

    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"#/runs/[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    training = page.locator(f"li.step[data-step='{STEP}']")
    expect(training).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("success", timeout=RUN_TIMEOUT_MS)
    expect(training.locator(".step-head .badge")).to_have_text(re.compile("completed"))

    # What the page must show is what the server recorded.
    run = ui_server.client().get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "success", run.get("error")
    fed = [t for t in run["tasks"] if t["step"] == STEP]
    trained = [t for t in fed if t["tool"] == TRAINER and t["round"] is not None]
    assert {(t["node"], t["round"]) for t in trained} == {
        (n, r) for n in HOSPITALS for r in range(1, ROUNDS + 1)
    }
    assert all(t["plan_key"] == f"{STEP}/round {t['round']}/{t['node']}:breast" for t in trained)
    assert all(t["dataset"] == "breast" for t in trained)
    (own,) = [t for t in fed if t["round"] is None]
    aggregates = [t for t in fed if t["tool"] == "flowfed.fl_aggregate"]
    assert len(fed) == 1 + len(trained) + len(aggregates) == 1 + 4 * ROUNDS

    # Collapsed: the step's own task, a count of the earlier rounds, then each hospital's
    # latest round with its loss (and the aggregator's latest round).
    n_tasks = len(fed)
    expect(training.locator(".counts")).to_have_text(f"{n_tasks} tasks: {n_tasks} finished")
    expect(training.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(training.locator("li.task")).to_have_count(1 + len(HOSPITALS) + 1)
    expect(training.locator("li.earlier")).to_have_text(f"… {n_tasks - 5} tasks of earlier rounds")
    expect(training.locator(f"li.task[data-task='{own['id']}'] .info")).to_have_text(
        f"local · loss {js_num(own['metrics']['loss'])}"
    )
    for node in HOSPITALS:
        (last,) = [t for t in trained if t["node"] == node and t["round"] == ROUNDS]
        line = training.locator(f"li.task[data-participant='{STEP}/{node}:breast']")
        expect(line.locator(".info")).to_have_text(re.compile(rf"^{node} · Round 4/4 · loss \d"))
        expect(line.locator(".info")).to_have_text(round_line(last))
        expect(line.locator(".badge")).to_have_text(re.compile("finished"))
    expect(training.locator(f"li.task[data-participant='{STEP}/aggregate'] .info")).to_have_text(
        f"local · Round {ROUNDS}/{ROUNDS}"
    )
    shot(page, "federated-run-monitor")

    # Expanded: every round of every hospital, each with the loss it reported.
    training.get_by_role("button", name=f"Show all {n_tasks} tasks").click()
    expect(training.locator("li.task")).to_have_count(n_tasks)
    expect(training.locator("li.earlier")).to_have_count(0)
    for t in trained + aggregates:
        expect(training.locator(f"li.task[data-task='{t['id']}'] .info")).to_have_text(
            round_line(t)
        )
    shot(page, "federated-run-monitor-all-rounds")
    training.get_by_role("button", name="Show the latest round only").click()
    expect(training.locator("li.task")).to_have_count(5)

    # A round task's own page names its node, round and dataset.
    training.locator(f"li.task[data-participant='{STEP}/hospital-b:breast'] a").click()
    expect(page.get_by_role("heading", name=re.compile(f"^{STEP}: {TRAINER}"))).to_be_visible()
    facts = page.locator("dl.kv")
    for term, value in (("Node", "hospital-b"), ("Round", str(ROUNDS)), ("Dataset", "breast")):
        expect(
            facts.locator("dt", has_text=term).locator("xpath=following-sibling::dd[1]")
        ).to_have_text(value)

    # The nodes page: the three hospitals that trained, online.
    page.get_by_role("link", name="Nodes", exact=True).click()
    expect(page.locator("#nodes-summary")).to_have_text("3 nodes: 3 online, 0 offline.")
    for node in HOSPITALS:
        card = page.locator(f"section.node[data-node='{node}']")
        expect(card.locator(".node-state")).to_have_text(re.compile(r"^\W*online$"))
        expect(card.locator("table.datasets tbody tr td").first).to_have_text("breast")
    shot(page, "federated-nodes")
