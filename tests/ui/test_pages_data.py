"""The nodes, models and triggers pages with real data; keyboard-only use; tablet width.

Real node agents (``flowfed node start`` subprocesses) connect to the module's real
``flowfed server``; real runs train the models; triggers are made over REST and fired by
the server's own trigger service. Every page visited is saved as a screenshot.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from flowfed.node.agent import spawn_node
from flowfed.node.datasets import file_sha256
from tests.polling import wait_for
from tests.server.conftest import Server
from tests.ui.conftest import shot

#: Two ticker steps with long names: the tree must still fit a tablet.
TWO_STEP_FLOW = """name: Tablet Flow
config: {rounds: 30}
steps:
  - name: Data Preprocessing at every participating hospital
    tool: ticker
    params: {count: 3, every: 0.01}
    outputs: [prepared]
  - name: Federated Training of the breast cancer classifier
    tool: ticker
    params: {count: COUNT, every: 0.05}
    outputs: [trained]
"""


def js_num(value: float) -> str:
    """A number as the dashboard prints it: three significant digits, no trailing zeros."""
    text = repr(float(f"{value:.3g}"))
    return text[:-2] if text.endswith(".0") else text


def inject_task(page: Page, task_id: str, **payload: Any) -> None:
    """Feed one task's transitions and metrics to the run page's event stream.

    The events have the exact shape the server sends (``kind``, ``task_id``, ``payload``
    with step, tool, node, round). Used where no real flow can make such a task yet: no
    planner in this repository assigns a federated round to a task.
    """
    page.evaluate(
        """([taskId, p]) => {
          const s = window.__flowfedStream;
          const base = {run_id: s.runId, task_id: taskId, ts: Date.now() / 1000};
          const info = {step: p.step, tool: p.tool, node: p.node, round: p.round, attempt: 1};
          let id = s.lastId;
          for (const [src, dst] of [["pending", "started"], ["started", "running"]])
            s.receive({...base, id: ++id, kind: "transition", payload: {...info, src, dst}});
          for (const v of p.losses)
            s.receive({...base, id: ++id, kind: "metric",
                       payload: {...info, name: "loss", value: v}});
        }""",
        [task_id, payload],
    )


# ---------------------------------------------------------------- nodes


def write_site_csv(path: Path, rows: int) -> Path:
    """A small hospital table: two features and a 0/1 target."""
    lines = ["age,size,target"] + [f"{40 + i},{1.5 + i / 2},{i % 2}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def node_procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Node agent processes started by a test, terminated at its end."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_nodes_page_shows_real_nodes_with_datasets_then_one_goes_offline(
    page: Page,
    ui_server: Server,
    tmp_path: Path,
    node_procs: dict[str, subprocess.Popen[bytes]],
) -> None:
    sites = {"hospital-a": 5, "hospital-b": 7}
    csvs: dict[str, Path] = {}
    for name, rows in sites.items():
        res = ui_server.ff(
            "nodes", "add", name, "--server", ui_server.url, "--database-url", ui_server.db_url
        )
        creds = tmp_path / f"{name}.json"
        creds.write_text(res.stdout)
        csvs[name] = write_site_csv(tmp_path / f"{name}.csv", rows)
        node_procs[name] = spawn_node(
            name,
            ui_server.url,
            creds,
            {"breast": csvs[name]},
            log_file=tmp_path / f"{name}.log",
            work_dir=tmp_path / f"work-{name}",
            imports=["flowfed.tools.library"],
        )

    page.get_by_role("link", name="Nodes", exact=True).click()
    expect(page.get_by_role("heading", name="Nodes", exact=True)).to_be_visible()
    # The page re-reads the list while it is open: the agents appear online without a
    # reload, whenever they finish connecting.
    expect(page.locator("#nodes-summary")).to_have_text(
        "2 nodes: 2 online, 0 offline.", timeout=60_000
    )
    for name, rows in sites.items():
        card = page.locator(f"section.node[data-node='{name}']")
        # The state is a word (with an icon), not a colour alone.
        expect(card.locator(".node-state")).to_have_text(re.compile(r"^\W*online$"))
        expect(card).to_have_attribute("aria-label", f"Node {name}, online")
        expect(card).to_contain_text("Online, last heard")
        expect(card).to_contain_text("0 running · 1 dataset")
        cells = card.locator("table.datasets tbody tr td")
        expect(cells).to_have_text(
            [
                "breast",
                "csv",
                str(rows),
                "age int64, size float64, target int64",
                file_sha256(csvs[name])[:12],
            ]
        )
    shot(page, "nodes-online")

    # One site shuts down: the page shows it offline (in words) while the other stays on.
    node_procs["hospital-b"].terminate()
    node_procs["hospital-b"].wait(30)
    expect(page.locator("#nodes-summary")).to_have_text(
        "2 nodes: 1 online, 1 offline.", timeout=60_000
    )
    b = page.locator("section.node[data-node='hospital-b']")
    expect(b.locator(".node-state")).to_have_text(re.compile(r"^\W*offline$"))
    expect(b).to_have_attribute("aria-label", "Node hospital-b, offline")
    expect(b).to_contain_text("Offline, last seen")
    # What it holds is still listed: the server remembers the datasets it registered.
    expect(b.locator("table.datasets tbody tr td").first).to_have_text("breast")
    a = page.locator("section.node[data-node='hospital-a']")
    expect(a.locator(".node-state")).to_have_text(re.compile(r"^\W*online$"))
    # Colour only reinforces the words: the two states differ in text as well.
    assert a.locator(".badge").get_attribute("data-state") == "online"
    assert b.locator(".badge").get_attribute("data-state") == "offline"
    shot(page, "nodes-one-offline")

    # The template form lists what the nodes hold, offline ones marked.
    page.goto(f"{ui_server.url}/#/templates/federated-classification")
    expect(page.get_by_text("Datasets on the nodes:")).to_contain_text(
        "hospital-a:breast, hospital-b:breast (offline)"
    )


# ---------------------------------------------------------------- models


def test_models_page_lists_two_trained_versions_and_compares_them(
    page: Page, ui_server: Server
) -> None:
    api = ui_server.client()
    made = api.post(
        "/api/v1/templates/local-pipeline/flows", json={"name": "Model Versions", "epochs": 40}
    )
    assert made.status_code == 201, made.text
    for rate in (0.5, 0.01):  # two settings, two versions of the model "model"
        r = api.post(
            "/api/v1/runs", json={"flow": "Model Versions", "params": {"learning_rate": rate}}
        )
        assert r.status_code == 202, r.text
        assert ui_server.wait_run(r.json()["run_id"], timeout=180)["status"] == "success"
    entries = api.get("/api/v1/models", params={"name": "model"}).json()["items"]
    assert [e["version"] for e in entries] == [2, 1]
    loss = {e["version"]: e["metrics"]["loss"] for e in entries}
    assert loss[1] != loss[2]

    page.get_by_role("link", name="Models", exact=True).click()
    table = page.locator("#models")
    expect(table.locator("thead th")).to_have_text(
        ["Compare", "Model", "Version", "Subvariant", "Step", "Metrics", "Run", "Trained"]
    )
    expect(table.locator("tbody tr")).to_have_count(2)
    for e in entries:
        row = table.locator(f"tr[data-model='model@{e['version']}']")
        expect(row.locator("td").nth(2)).to_have_text(f"v{e['version']}")
        # The step sweeps nothing: one subvariant, shown as a dash rather than "{}".
        expect(row.locator(".variant")).to_have_text("—")
        expect(row.locator(".metrics")).to_contain_text(f"loss: {js_num(e['metrics']['loss'])}")
        expect(row.get_by_role("link", name=e["run_id"][:8])).to_be_visible()

    # Comparing needs two models; one is refused in words.
    page.get_by_label("Compare model v1").check()
    page.get_by_role("button", name="Compare selected").click()
    expect(page.get_by_role("alert")).to_have_text("Select two or more models to compare.")
    page.get_by_label("Compare model v2").check()
    page.get_by_role("button", name="Compare selected").click()

    cmp = page.locator("#cmp-table")
    expect(cmp.locator("thead th")).to_have_text(["Model", "model@2", "model@1"])
    expect(cmp.locator("tr", has_text="subvariant").locator("td")).to_have_text(["—", "—"])
    expect(
        cmp.locator("tr", has=page.locator("th", has_text=re.compile("^loss$"))).locator("td")
    ).to_have_text([js_num(loss[2]), js_num(loss[1])])
    chart = page.locator("figure.bars[data-metric='loss'] svg")
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute(
        "aria-label", f"loss by model: model@2 {js_num(loss[2])}, model@1 {js_num(loss[1])}"
    )
    # The longer bar is the larger loss.
    widths = [
        float(w)
        for w in chart.locator("rect").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")
    ]
    assert (widths[0] > widths[1]) == (loss[2] > loss[1])
    # Every numeric metric of the comparison gets a chart.
    compared = api.get("/api/v1/models/compare", params={"ids": "model@2,model@1"}).json()
    numeric = [
        k
        for k, vals in compared["metrics"].items()
        if any(isinstance(v, float | int) for v in vals)
    ]
    expect(page.locator("figure.bars")).to_have_count(len(numeric))
    shot(page, "models-compare")


# ---------------------------------------------------------------- triggers

SOURCE_FLOW = """name: Trigger Source
steps:
  - {name: Tick, tool: ticker, params: {count: 2, every: 0.01}, outputs: [ticks]}
"""
TARGET_FLOW = SOURCE_FLOW.replace("Trigger Source", "Trigger Target")


def test_triggers_page_shows_triggers_made_over_rest_and_their_history(
    page: Page, ui_server: Server
) -> None:
    api = ui_server.client()
    for source in (SOURCE_FLOW, TARGET_FLOW):
        assert api.post("/api/v1/flows", json={"source": source}).status_code == 201
    specs: list[dict[str, Any]] = [
        {
            "name": "after-source",
            "flow": "Trigger Target",
            "on": {"run": {"flow": "Trigger Source", "status": "success"}},
            "description": "Run the target whenever the source succeeds.",
        },
        {
            "name": "broken-target",
            # A flow that exists (an unknown one is refused when the trigger is made), with
            # a parameter it does not have: the fire fails, with that reason.
            "flow": "Trigger Target",
            "params": {"no_such_param": 1},
            "on": {"run": {"flow": "Trigger Source", "status": "success"}},
        },
        {
            "name": "nightly",
            "flow": "Trigger Target",
            "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
        },
    ]
    for spec in specs:
        r = api.post("/api/v1/triggers", json=spec)
        assert r.status_code == 201, r.text
    run = api.post("/api/v1/runs", json={"flow": "Trigger Source"}).json()
    assert ui_server.wait_run(run["run_id"])["status"] == "success"

    def fires(name: str) -> list[dict[str, Any]]:
        # Settled fires only: a fire is recorded "claimed" before its run starts (or fails to).
        fired = api.get(f"/api/v1/triggers/{name}/history").json()
        return [f for f in fired if f["status"] != "claimed"]

    # The server's trigger service fires on its next pass (every few seconds).
    started = wait_for("after-source to start a run", lambda: fires("after-source"))[0]
    assert started["status"] == "started", started
    failed = wait_for("broken-target to record its fire", lambda: fires("broken-target"))[0]
    assert failed["status"] == "failed"
    target_run = started["run_id"]
    ui_server.wait_run(target_run)

    page.get_by_role("link", name="Triggers", exact=True).click()
    rows = page.locator("#triggers tbody tr")
    expect(rows).to_have_count(3)
    after = page.locator("tr[data-trigger='after-source']")
    expect(after.locator("td")).to_contain_text(
        [
            "after-source",
            "Trigger Target",
            "event",
            "on run (flow=Trigger Source, status=success)",
            "yes",
            "—",
            # The last fire says what came of it: its run's outcome.
            f"success run {target_run[:8]}",
        ]
    )
    nightly = page.locator("tr[data-trigger='nightly']")
    expect(nightly.locator("td").nth(2)).to_have_text("cron")
    expect(nightly.locator("td").nth(3)).to_have_text("cron 0 2 * * * (Europe/Berlin)")
    expect(nightly.locator("td").nth(5)).not_to_have_text("—")  # it has a next fire time
    expect(nightly.locator("td").nth(6)).to_have_text("never")
    expect(page.locator("tr[data-trigger='broken-target'] td").nth(6)).to_have_text(
        re.compile("failed")
    )
    shot(page, "triggers-list")

    # A trigger's page: what it does and its history, each fire with its run or reason.
    after.get_by_role("link", name="after-source").click()
    expect(page.get_by_role("heading", name="after-source")).to_be_visible()
    expect(page.get_by_text("Run the target whenever the source succeeds.")).to_be_visible()
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_have_attribute("data-status", "started")
    expect(history.first.locator("td")).to_contain_text(
        [re.compile(r"\d"), "started", target_run[:8], "run.finished", f"run:{run['run_id']}"]
    )
    shot(page, "trigger-history")
    history.first.get_by_role("link", name=target_run[:8]).click()
    expect(page.get_by_role("heading", name=re.compile("Trigger Target"))).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("success")
    # The run says which trigger started it, and links to it.
    expect(page.locator("#started-by")).to_have_text("after-source")
    expect(page.locator("#started-by")).to_have_attribute("href", "#/triggers/after-source")
    shot(page, "run-started-by-trigger")

    page.goto(f"{ui_server.url}/#/triggers/broken-target")
    fire = page.locator("#history tbody tr")
    expect(fire).to_have_count(1)
    expect(fire.locator(".badge")).to_have_text(re.compile("failed"))
    expect(fire.locator("td").nth(3)).to_contain_text(failed["reason"])
    expect(fire.locator("td").nth(2)).to_have_text("—")
    shot(page, "trigger-history-failed")

    page.goto(f"{ui_server.url}/#/triggers/nightly")
    expect(page.locator("#history")).to_have_text("Not fired yet.")


# ---------------------------------------------------------------- run monitor task line


def test_task_line_shows_node_round_and_latest_loss(page: Page, ui_server: Server) -> None:
    api = ui_server.client()
    source = TWO_STEP_FLOW.replace("COUNT", "80")  # four seconds of ticks: time to watch
    run_id = api.post("/api/v1/runs", json={"source": source}).json()["run_id"]
    page.goto(f"{ui_server.url}/#/runs/{run_id}")
    training = page.locator(
        "li.step[data-step='Federated Training of the breast cancer classifier']"
    )
    task = training.locator("li.task").first
    # Live: the ticker reports loss 1/i each tick; the line follows the events stream.
    expect(task.locator(".badge")).to_have_text(re.compile("running"))
    expect(task.locator(".info")).to_have_text(re.compile(r"^local · loss 0\.\d+$"))
    expect(page.locator("#run-status")).to_contain_text("success", timeout=60_000)
    # The last value wins: 1/80. A local task has a node but no round.
    expect(task.locator(".info")).to_have_text(f"local · loss {js_num(1 / 80)}")
    tasks = api.get(f"/api/v1/runs/{run_id}").json()["tasks"]
    assert {(t["node"], t["round"]) for t in tasks} == {("local", None)}

    # A federated task carries its node and round (the flow's config has rounds: 30); no
    # planner here makes one yet, so its events are fed to the page as the server sends them.
    inject_task(
        page,
        "fed-a-17",
        step="Federated Training of the breast cancer classifier",
        tool="flowfed.logistic_regression",
        node="hospital-a",
        round=17,
        losses=[0.9, 0.5, 0.2134],
    )
    fed = training.locator("li.task[data-task='fed-a-17']")
    expect(fed.locator(".info")).to_have_text("hospital-a · Round 17/30 · loss 0.213")
    expect(fed.locator(".badge")).to_have_text(re.compile("running"))
    shot(page, "run-monitor-task-line")


# ---------------------------------------------------------------- keyboard and tablet


def focused(page: Page) -> dict[str, Any]:
    """The focused element: its label, whether focus is drawn (focus-visible), its href."""
    return dict(
        page.evaluate(
            """() => { const e = document.activeElement; return {
              label: e.getAttribute('aria-label') || e.textContent.trim(),
              visible: e.matches(':focus-visible'), href: e.getAttribute('href') || '' }; }"""
        )
    )


def test_keyboard_only_tabs_through_the_nav_and_opens_a_run_and_a_task(
    page: Page, ui_server: Server, finished_run: str
) -> None:
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    # After a navigation focus is on the content; Shift+Tab climbs back to the skip link,
    # the first stop of the page.
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if focused(page)["label"] == "Skip to content":
            break
    # From there Tab walks the brand, the main navigation in order, then Sign out; each
    # focused element shows it.
    order = [focused(page)["label"]]
    for _ in range(8):
        page.keyboard.press("Tab")
        now = focused(page)
        assert now["visible"], f"focus on {now['label']!r} is not drawn"
        order.append(now["label"])
    assert order == [
        "Skip to content",
        "flowfed",
        "Flows",
        "Runs",
        "Artifacts",
        "Nodes",
        "Models",
        "Triggers",
        "Sign out",
    ]
    # The skip link jumps to the content without leaving the page.
    for _ in range(8):
        page.keyboard.press("Shift+Tab")
    assert focused(page)["label"] == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    assert page.evaluate("location.hash") == "#/flows"

    # Back to the navigation, open Runs, then the run, then its task: keys only.
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if focused(page)["label"] == "Runs":
            break
    assert focused(page)["label"] == "Runs"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "main"  # focus moved to the content
    for _ in range(40):
        page.keyboard.press("Tab")
        if focused(page)["href"] == f"#/runs/{finished_run}":
            break
    assert focused(page)["href"] == f"#/runs/{finished_run}", "Tab never reached the run"
    assert focused(page)["visible"]
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#/runs/{finished_run}$"))
    expect(page.locator("#run-status")).to_contain_text("success")
    task = page.locator("li.task").first
    # Finished, or cached when an earlier test of the module ran the same ticker.
    expect(task.locator(".badge")).to_have_text(re.compile("finished|cached"))
    shot(page, "keyboard-run")
    task_href = task.get_by_role("link").get_attribute("href")
    for _ in range(40):
        page.keyboard.press("Tab")
        if focused(page)["href"] == task_href:
            break
    assert focused(page)["href"] == task_href, "Tab never reached the task"
    page.keyboard.press("Enter")
    expect(page.locator("#transitions li").last).to_contain_text(re.compile("finished|cached"))
    shot(page, "keyboard-task")


def test_tablet_run_monitor_tree_does_not_overflow_the_page(page: Page, ui_server: Server) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    api = ui_server.client()
    run_id = api.post("/api/v1/runs", json={"source": TWO_STEP_FLOW.replace("COUNT", "3")}).json()[
        "run_id"
    ]
    assert ui_server.wait_run(run_id)["status"] == "success"
    page.goto(f"{ui_server.url}/#/runs/{run_id}")
    expect(page.locator("li.step")).to_have_count(2)
    expect(page.locator("#conn")).to_have_text(re.compile("ended|live"))
    # A busy federated step: long node names, rounds and losses on every line.
    for i in range(12):
        inject_task(
            page,
            f"site-{i}",
            step="Federated Training of the breast cancer classifier",
            tool="flowfed.logistic_regression",
            node=f"university-hospital-{chr(97 + i)}",
            round=17,
            losses=[0.2 + i / 100],
        )
    expect(page.locator("li.task")).to_have_count(14)
    shot(page, "run-monitor-tablet-busy")
    overflow = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const out = [];
          const body = document.body.scrollWidth;
          if (body > width) out.push(`body ${body} > ${width}`);
          for (const el of document.querySelectorAll('#tree *')) {
            const r = el.getBoundingClientRect();
            if (r.right > width + 0.5) out.push(`${el.className || el.tagName} ends at ${r.right}`);
          }
          // Each task's info line is readable whole, not cut off with an ellipsis.
          for (const el of document.querySelectorAll('#tree .task .info'))
            if (el.scrollWidth > el.clientWidth) out.push(`cut: ${el.textContent}`);
          return out;
        }"""
    )
    assert overflow == [], f"the run monitor overflows at 768 px: {overflow}"
    info = page.locator("li.task[data-task='site-0'] .info")
    expect(info).to_have_text("university-hospital-a · Round 17/30 · loss 0.2")
