"""Issue 22's browser views, on real federated runs over three real node agents.

The module's real ``flowfed server`` and three ``flowfed node start`` agents (one per
hospital, each with its breast cancer CSV) run the example flow (seed 000's four steps)
twice: once to the end (3 rounds), once with hospital-c's agent killed with SIGKILL at
round 2 of 40 and restarted once it was dropped. Headless Debian Chromium watches both;
every screenshot goes to ``test-output/screenshots/``. What the page shows is checked
against what the server recorded (REST) and, for durations and plurals, against
hand-worked rules. The last test kills hospital-c before a third run starts, to see its
tasks wait for it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from flowfed.node.agent import node_command
from tests.federated import conftest as federated
from tests.polling import wait_for
from tests.server.conftest import Server, start_server, stop
from tests.ui.conftest import shot
from tests.ui.test_pages_data import js_num

hospitals = federated.hospitals

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer"
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
STEP = "Federated Training"
NORMAL_ROUNDS = 3
KILLED_ROUNDS = 40
RUN_TIMEOUT_S = 300
LIVENESS_S = 8
STALL_S = 3


@dataclass
class Cluster:
    srv: Server
    agents: dict[str, subprocess.Popen[bytes]]
    commands: dict[str, list[str]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start_agent(self, node: str) -> None:
        """(Re)start ``node``'s agent: same credentials, CSV and work directory."""
        with open(self.logs[node], "ab") as log:
            self.agents[node] = subprocess.Popen(
                self.commands[node], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )

    def online(self, node: str) -> bool:
        nodes = {n["name"]: n for n in self.srv.client().get("/api/v1/nodes").json()["items"]}
        return bool(nodes.get(node, {}).get("online"))

    def start(self, rounds: int) -> str:
        source = (EXAMPLE / "flow.yaml").read_text()
        r = self.srv.client().post(
            "/api/v1/runs", json={"source": source, "params": {"rounds": rounds}}
        )
        assert r.status_code == 202, r.text
        return str(r.json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.srv.client().get(f"/api/v1/runs/{run_id}").json())


def _start(root: Path) -> Server:
    return start_server(
        root / "srv",
        f"sqlite:///{root / 'flowfed.db'}",
        "--import",
        "flowfed.tools.library",
        "--import",
        str(EXAMPLE / "reference.py"),
        # Long enough that a task sent to a node that just died is seen waiting for it.
        "--node-liveness",
        str(LIVENESS_S),
    )


@pytest.fixture(scope="module")
def cluster(hospitals: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("views")
    # A step is "stalled" after STALL_S without progress (the server's threshold), so a
    # round held up by a dead node shows it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWFED_STALL_AFTER", str(STALL_S))
        srv = _start(root)
    c = Cluster(srv, {})
    try:
        for node in HOSPITALS:
            creds = root / f"{node}.json"
            srv.ff("nodes", "add", node, "--out", str(creds), "--database-url", srv.db_url)
            c.commands[node] = node_command(
                node, srv.url, creds, {"breast": hospitals / node / "breast.csv"},
                work_dir=root / f"work-{node}",
            )  # fmt: skip
            c.logs[node] = root / f"{node}.log"
            c.start_agent(node)
        wait_for(
            "the three hospitals' node agents to come online",
            lambda: all(c.online(n) for n in HOSPITALS),
        )
        yield c
    finally:
        for p in c.agents.values():
            if p.poll() is None:
                p.terminate()
        for p in c.agents.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        stop(srv)


def open_page(browser: Browser, srv: Server, **context: Any) -> tuple[Page, list[Any]]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = ctx.new_page()
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))
    page.goto(srv.url + "/")
    page.evaluate("t => sessionStorage.setItem('flowfed.token', t)", srv.token)
    return page, errors


@pytest.fixture
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    p, errors = open_page(browser, cluster.srv)
    yield p
    p.context.close()
    # A JavaScript exception is a bug even if the page happened to look right.
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def normal_run(cluster: Cluster) -> str:
    """A 3-round run of the example flow that ends normally (success)."""
    run_id = cluster.start(NORMAL_ROUNDS)
    run = cluster.srv.wait_run(run_id, timeout=RUN_TIMEOUT_S)
    assert run["status"] == "success", json.dumps(run)[:3000]
    return run_id


def fed_tasks(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in run["tasks"] if t["step"] == STEP]


def cell_class(page: Page, node: str, rnd: int) -> str:
    row = page.locator(f"table.round-grid tr[data-participant$='/{node}:breast']")
    return str(row.locator(f"td[data-round='{rnd}']").get_attribute("class"))


def test_the_federated_panel_runs_live_and_a_killed_hospital_stands_out(
    browser: Browser, cluster: Cluster, normal_run: str
) -> None:
    # Parts 3, 4 and 6: one run watched from its start; hospital-c's agent dies at round 2.
    # (`normal_run` first: it needs all three hospitals.)
    run_id = cluster.start(KILLED_ROUNDS)
    page, errors = open_page(browser, cluster.srv)
    task_page, task_errors = open_page(browser, cluster.srv)
    page.goto(f"{cluster.srv.url}/#/runs/{run_id}")
    panel = page.locator(f"section.fed-panel[data-step='{STEP}']")
    loss = panel.locator("figure.curve[data-metric='loss']")

    # Kill hospital-c's agent as soon as round 2 is under way (as tests/federated's
    # liveness test does: polling fast, so the run is still early in its rounds).
    def reached(n: int) -> bool:
        rounds = [t["round"] for t in fed_tasks(cluster.run(run_id)) if t["round"]]
        return bool(rounds) and max(rounds) >= n

    wait_for("training to reach round 2", lambda: reached(2), timeout=RUN_TIMEOUT_S)
    os.kill(cluster.agents["hospital-c"].pid, signal.SIGKILL)
    cluster.agents["hospital-c"].wait(10)
    # The round waits for hospital-c's task until the liveness deadline: nothing moves, and
    # the step says it is stalled.
    training = page.locator(f"li.step[data-step='{STEP}']")
    expect(training.locator(".step-head .stalled")).to_have_text(
        "‖ stalled", timeout=LIVENESS_S * 4000
    )
    shot(page, "fed-stalled")

    # Live: the loss chart has a line per hospital and the global model, and gains
    # rounds while the run goes on.
    expect(loss).to_have_attribute(
        "data-series", "hospital-a,hospital-b,hospital-c,global model", timeout=60_000
    )
    expect(page.locator("#run-status")).to_contain_text("running")
    xmax = int(loss.get_attribute("data-xmax") or 0)
    expect(loss).not_to_have_attribute("data-xmax", str(xmax), timeout=60_000)
    assert int(loss.get_attribute("data-xmax") or 0) > xmax
    # Hovering a round shows each line's value there (uPlot's legend follows the cursor):
    # across the chart, the cursor meets rounds where hospital-a has a value.
    loss.scroll_into_view_if_needed()
    box = loss.locator(".u-over").bounding_box()
    assert box is not None
    first = loss.locator(".u-legend .u-series").nth(1).locator(".u-value")
    seen = []
    for frac in (0.01, 0.25, 0.5, 0.75, 0.99):
        page.mouse.move(box["x"] + box["width"] * frac, box["y"] + box["height"] / 2)
        seen.append(first.inner_text())
    assert any(re.match(r"^\d", v) for v in seen), seen
    shot(page, "fed-panel-live")

    # The federated step's own task page while training runs: charts with real axes.
    run = cluster.run(run_id)
    (own,) = [t for t in fed_tasks(run) if t["round"] is None]
    task_page.goto(f"{cluster.srv.url}/#/tasks/{own['id']}")
    live_loss = task_page.locator("#metrics figure.curve[data-metric='loss']")
    expect(live_loss.locator(".uplot")).to_be_visible(timeout=60_000)
    assert "NaN" not in task_page.locator("#metrics").inner_text()
    assert int(live_loss.get_attribute("data-points") or 0) >= 1
    shot(task_page, "task-live-charts")

    # hospital-c drops out of a round ("offline since ..."); then its agent comes back.
    def dropped() -> list[dict[str, Any]]:
        run = cluster.run(run_id)
        return [t for t in fed_tasks(run) if t["node"] == "hospital-c" and t["state"] == "error"]

    wait_for("hospital-c to be dropped from a round", dropped, timeout=RUN_TIMEOUT_S)
    cluster.start_agent("hospital-c")
    wait_for("hospital-c to come back", lambda: cluster.online("hospital-c"))
    expect(page.locator("#run-status")).not_to_contain_text("running", timeout=RUN_TIMEOUT_S * 1000)
    run = cluster.run(run_id)
    fed = fed_tasks(run)

    # The hospital-by-round grid: rounds that ran without hospital-c are marked missing;
    # its dropped round is an error; a and b finished every round.
    c_rounds = {t["round"] for t in fed if t["node"] == "hospital-c" and t["round"]}
    without = [r for r in range(1, KILLED_ROUNDS + 1) if r not in c_rounds]
    assert without, sorted(c_rounds)
    for r in without:
        assert "missing" in cell_class(page, "hospital-c", r), r
    for t in dropped():
        assert "s-error" in cell_class(page, "hospital-c", t["round"]), t["round"]
    for node in ("hospital-a", "hospital-b"):
        for r in range(1, KILLED_ROUNDS + 1):
            assert "s-finished" in cell_class(page, node, r), (node, r)

    # An error from an earlier round is pinned above the folded rounds, saying who and when.
    training = page.locator(f"li.step[data-step='{STEP}']")
    latest_c = max(c_rounds)
    pinned = [t for t in dropped() if t["round"] != latest_c]
    assert pinned, "hospital-c came back, so its dropped round is an earlier one"
    for t in pinned:
        expect(training.locator(f"li.pinned[data-task='{t['id']}']")).to_have_text(
            f"✗ hospital-c dropped in round {t['round']}: {t['error']['message']}"
        )

    # Every badge is final without a reload: each says what the server recorded.
    for step in run["steps"]:
        li = page.locator(f"li.step[data-step='{step['name']}']")
        expect(li.locator(".step-head .badge").first).to_have_text(re.compile(step["status"]))
    assert not page.locator(".step-head .badge", has_text="running").count()
    expect(page.locator(".stalled")).to_have_count(0)
    # Honest progress: rounds done over rounds.
    expect(training.get_by_role("progressbar")).to_have_attribute(
        "aria-valuetext", f"{KILLED_ROUNDS}/{KILLED_ROUNDS} rounds"
    )
    shot(page, "fed-run-killed-node")
    page.context.close()
    task_page.context.close()
    assert not errors and not task_errors, (errors, task_errors)


def test_results_timeline_and_durations_of_a_finished_run(
    page: Page, cluster: Cluster, normal_run: str
) -> None:
    # Parts 5 and 8 on the run that ended normally.
    run = cluster.run(normal_run)
    page.goto(f"{cluster.srv.url}/#/runs/{normal_run}")
    expect(page.locator("#run-status")).to_contain_text("success")

    # Results by hospital: each hospital's last round and the global model.
    table = page.locator(f"table.results[data-step='{STEP}']")
    expect(table).to_be_visible()
    fed = fed_tasks(run)
    for node in HOSPITALS:
        (last,) = [t for t in fed if t["node"] == node and t["round"] == NORMAL_ROUNDS]
        row = table.locator(f"tr[data-who='{node}']")
        expect(row.locator("td[data-metric='loss']")).to_have_text(js_num(last["metrics"]["loss"]))
    expect(table.locator("tr[data-who='global model']")).to_have_count(1)
    # Model Validation: a row per hospital with the accuracy its task reported.
    vt = page.locator("table.results[data-step='Model Validation']")
    for t in run["tasks"]:
        if t["step"] == "Model Validation" and t["node"] in HOSPITALS:
            cell = vt.locator(f"tr[data-who='{t['node']}:breast'] td[data-metric='accuracy']")
            expect(cell).to_have_text(js_num(t["metrics"]["accuracy"]))
    # The report (a dict) as JSON: what the server stores under it.
    arts = cluster.srv.client().get(f"/api/v1/artifacts?run={normal_run}&name=report").json()
    (report,) = [a for a in arts if a["name"] == "report"]
    content = cluster.srv.client().get(f"/api/v1/artifacts/{report['id']}/content").json()
    preview = page.locator("#report pre.json")
    expect(preview).to_be_visible()
    assert json.loads(preview.inner_text()) == content

    # The timeline: a row per node, a bar per started task.
    started = [t for t in run["tasks"] if t["started_at"] is not None]
    expect(page.locator(".gantt .bar")).to_have_count(len(started))
    for node in {t["node"] for t in started}:
        expect(page.locator(f".gantt-row[data-node='{node}']")).to_have_count(1)
    # Step durations: the Federated Training step from its first start to its last end.
    starts = [t["started_at"] for t in fed if t["started_at"]]
    ends = [t["ended_at"] for t in fed if t["ended_at"]]
    expect(page.locator(f"li.step[data-step='{STEP}'] .step-dur")).to_have_text(
        human(max(ends) - min(starts))
    )
    shot(page, "run-results-timeline")

    # Resources per task: on its line in the tree and on its page, as REST has them.
    (last_a,) = [t for t in fed if t["node"] == "hospital-a" and t["round"] == NORMAL_ROUNDS]
    res = last_a["resources"]
    assert res and res["cpu_s"] >= 0 and res["peak_rss_mb"] > 0, last_a
    training = page.locator(f"li.step[data-step='{STEP}']")
    line = training.locator(f"li.task[data-task='{last_a['id']}'] .res")
    expected = f"cpu {human(res['cpu_s'])} · {round(res['peak_rss_mb'])} MB"
    counts = res.get("progress")
    if counts:  # the tool's own count ("5/5 epochs"), thousands with commas
        total = f"/{round(counts['total']):,}" if counts.get("total") is not None else ""
        unit = f" {counts['unit']}" if counts.get("unit") else ""
        expected += f" · {round(counts['done']):,}{total}{unit}"
    expect(line).to_have_text(expected)
    page.goto(f"{cluster.srv.url}/#/tasks/{last_a['id']}")
    facts = page.locator("#resource-facts")
    expect(facts).to_contain_text(f"Peak memory{round(res['peak_rss_mb'])} MB")
    expect(facts).to_contain_text(f"CPU time{human(res['cpu_s'])}")
    expect(facts).to_contain_text(f"Wall time{human(res['wall_s'])}")
    shot(page, "task-resources")
    page.goto(f"{cluster.srv.url}/#/runs/{normal_run}")
    expect(page.locator("#run-status")).to_contain_text("success")

    # The runs list has a duration column: end minus start.
    page.goto(f"{cluster.srv.url}/#/runs")
    expect(page.locator(f"tr[data-run='{normal_run}'] td.duration")).to_have_text(
        human(run["ended_at"] - run["created_at"])
    )
    shot(page, "runs-durations")

    # An evaluation task: scalars as tiles, the confusion matrix as a 2-by-2 grid, no charts.
    (ev,) = [
        t for t in run["tasks"]
        if t["step"] == "Model Validation" and t["node"] == "hospital-a"
        and t["tool"] == "flowfed.evaluate_classifier"
    ]  # fmt: skip
    page.goto(f"{cluster.srv.url}/#/tasks/{ev['id']}")
    expect(page.locator(".tile[data-metric='accuracy'] .tile-value")).to_have_text(
        js_num(ev["metrics"]["accuracy"])
    )
    expect(page.locator("#metrics figure.curve")).to_have_count(0)
    grid = page.locator("table.confusion")
    for k in ("tp", "fp", "fn", "tn"):
        expect(grid.locator(f"td[data-cell='{k}'] strong")).to_have_text(str(int(ev["metrics"][k])))
    # Rows are the actual class, columns the prediction.
    expect(grid.locator("tbody tr").first.locator("td").first).to_have_attribute("data-cell", "tp")
    expect(grid.locator("tbody tr").last.locator("td").last).to_have_attribute("data-cell", "tn")
    shot(page, "task-results")


def human(seconds: float) -> str:
    """The dashboard's duration format, worked by hand: 0.4 s, 12 s, 3 min 04 s."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    m = int(seconds // 60)
    return f"{m} min {round(seconds - m * 60):02d} s"


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_graphs_at_natural_size_pan_zoom_and_fold_round_artifacts(
    page: Page, cluster: Cluster, normal_run: str
) -> None:
    # Part 7. The report's lineage: every round's model folded into one box.
    arts = cluster.srv.client().get(f"/api/v1/artifacts?run={normal_run}&name=report").json()
    (report,) = [a for a in arts if a["name"] == "report"]
    page.goto(f"{cluster.srv.url}/#/artifacts/{report['id']}")
    svg = page.locator("#lineage svg.graph")
    expect(svg).to_be_visible()
    models = (
        cluster.srv.client()
        .get(f"/api/v1/artifacts?run={normal_run}&name=model&include_rounds=true")
        .json()
    )
    versions = sorted(a["version"] for a in models if a["name"] == "model")
    assert len(versions) >= 3, versions
    expect(svg.locator(".node", has_text=f"model v{versions[0]}…v{versions[-1]}")).to_have_count(1)
    # Natural size: 12 px labels, at least 11 px high on screen, none overlapping.
    heights = svg.locator(".node text").evaluate_all(
        "ts => ts.map(t => t.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 11, heights
    boxes = svg.locator(".node rect").evaluate_all(
        "rs => rs.map(r => { const b = r.getBoundingClientRect();"
        " return {x: b.x, y: b.y, width: b.width, height: b.height}; })"
    )
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not overlaps(a, b), (a, b)
    shot(page, "lineage-folded")

    # Wheel zooms, drag pans (the viewBox moves; scale 1 is natural size).
    assert svg.get_attribute("data-scale") == "1.000"
    svg.scroll_into_view_if_needed()
    box = svg.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    expect(svg).not_to_have_attribute("data-scale", "1.000")
    assert float(svg.get_attribute("data-scale") or 0) > 1
    before = svg.get_attribute("viewBox")
    page.mouse.move(box["x"] + 40, box["y"] + box["height"] - 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 240, box["y"] + box["height"] - 60, steps=5)
    page.mouse.up()
    assert svg.get_attribute("viewBox") != before
    page.get_by_role("button", name="Fit").click()

    # A flow's steps graph (the federated template's nine steps): natural size, every
    # label at least 11 px high, no box over another, no edge label over a box.
    page.goto(f"{cluster.srv.url}/#/templates/federated-classification")
    steps = page.locator("#steps-graph svg.graph")
    expect(steps.locator(".node")).to_have_count(9)
    heights = steps.locator("text").evaluate_all(
        "ts => ts.map(t => t.getBoundingClientRect().height)"
    )
    assert min(heights) >= 11, heights
    rects = steps.locator(".node rect").evaluate_all(
        "rs => rs.map(r => { const b = r.getBoundingClientRect();"
        " return {x: b.x, y: b.y, width: b.width, height: b.height}; })"
    )
    labels = steps.locator(".edge-label").evaluate_all(
        "ts => ts.map(t => { const b = t.getBoundingClientRect();"
        " return {x: b.x, y: b.y, width: b.width, height: b.height}; })"
    )
    for i, a in enumerate(rects):
        for b in rects[i + 1 :] + labels:
            assert not overlaps(a, b), (a, b)
    # Each box is as wide as its text: nothing is clipped.
    clipped = steps.locator(".node").evaluate_all(
        "ns => ns.filter(n => [...n.querySelectorAll('text')].some(t =>"
        " t.getBBox().x + t.getBBox().width > n.querySelector('rect').getBBox().x"
        " + n.querySelector('rect').getBBox().width)).length"
    )
    assert clipped == 0
    shot(page, "flow-graph-natural-size")


def test_polish_dark_mode_favicon_not_found_and_plurals(
    browser: Browser, cluster: Cluster, normal_run: str
) -> None:
    # Part 10: dark mode follows the system, a favicon, a not-found page with a way back.
    page, errors = open_page(browser, cluster.srv, color_scheme="dark")
    page.goto(f"{cluster.srv.url}/#/runs/{normal_run}")
    expect(page.locator("#run-status")).to_contain_text("success")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    rgb = [int(x) for x in re.findall(r"\d+", bg)[:3]]
    assert sum(rgb) / 3 < 60, bg
    shot(page, "run-dark-mode")
    icon = page.locator("link[rel='icon']").get_attribute("href")
    assert icon and page.request.get(cluster.srv.url + icon).status == 200
    page.goto(f"{cluster.srv.url}/#/no/such/page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    page.get_by_role("link", name="Back to flows").click()
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    shot(page, "flows-dark-mode")
    # Plurals: a step of one task says "1 task", never "1 tasks".
    page.goto(f"{cluster.srv.url}/#/runs/{normal_run}")
    packaging = page.locator("li.step[data-step='Model Packaging'] .counts")
    expect(packaging).to_have_text(re.compile(r"^1 task: 1 finished"))
    assert " 1 tasks" not in page.locator("#tree").inner_text()
    page.context.close()
    assert not errors, errors


def test_validation_curves_of_a_flow_that_evaluates_during_training(
    page: Page, cluster: Cluster
) -> None:
    # Part 3's validation metrics: examples/breast_cancer/evaluation.yaml evaluates the
    # global model on every hospital's test split after every 5th round and the last.
    # (Before the offline-node test: it needs all three hospitals.)
    source = (EXAMPLE / "evaluation.yaml").read_text()
    r = cluster.srv.client().post("/api/v1/runs", json={"source": source, "params": {"rounds": 6}})
    assert r.status_code == 202, r.text
    run_id = str(r.json()["run_id"])
    run = cluster.srv.wait_run(run_id, timeout=RUN_TIMEOUT_S)
    assert run["status"] == "success", json.dumps(run)[:3000]
    page.goto(f"{cluster.srv.url}/#/runs/{run_id}")
    panel = page.locator(f"section.fed-panel[data-step='{STEP}']")
    for metric in ("loss", "accuracy"):
        legend = panel.locator(f"figure.curve[data-metric='{metric}'] .u-legend")
        # The pooled validation figure is drawn beside the training curves, as its own line.
        expect(legend.locator(".u-series", has_text="global model (validation)")).to_have_count(1)
    shot(page, "fed-panel-validation")


def test_a_task_sent_to_an_offline_node_says_what_it_waits_for(
    page: Page, cluster: Cluster, normal_run: str
) -> None:
    # Part 4: hospital-c's agent is killed, then a run starts. Its tasks for hospital-c
    # wait (the liveness deadline, LIVENESS_S) and say so, then fail saying since when.
    agent = cluster.agents["hospital-c"]
    if agent.poll() is None:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
    run_id = cluster.start(2)
    page.goto(f"{cluster.srv.url}/#/runs/{run_id}")
    prep = page.locator("li.step[data-step='Data Preprocessing']")
    waiting = prep.locator(".waiting", has_text="waiting for hospital-c")
    expect(waiting.first).to_be_visible(timeout=LIVENESS_S * 4000)
    expect(waiting.first).to_have_text(
        re.compile(r"^waiting for hospital-c( \(offline since \d\d:\d\d:\d\d\))?$")
    )
    shot(page, "task-waiting-for-node")
    expect(page.locator("#run-status")).to_contain_text("failed", timeout=RUN_TIMEOUT_S * 1000)
    run = cluster.run(run_id)
    c_tasks = [t for t in run["tasks"] if t["node"] == "hospital-c" and t["state"] == "error"]
    assert c_tasks, "hospital-c's tasks fail once the server gives up on it"
    for t in c_tasks:
        line = page.locator(f"li.task[data-task='{t['id']}'] .info")
        expect(line).to_contain_text("offline since")
    expect(prep.locator(".waiting")).to_have_count(0)
    expect(prep.locator(".progress")).to_have_class(re.compile("p-failed"))
    shot(page, "task-offline-node-failed")
