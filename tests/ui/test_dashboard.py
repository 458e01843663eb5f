"""The dashboard in headless Chromium against a real server running real flows."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.server.conftest import Server
from tests.ui.conftest import shot

TICKER_FLOW = """name: Ticker Flow
steps:
  - name: Tick
    tool: ticker
    params: {count: COUNT, every: 0.1}
    outputs: [ticks]
"""


def test_index_is_served_without_a_token_and_sign_in_checks_the_token(
    browser, ui_server: Server
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(ui_server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "signin")
    page.get_by_label("API token").fill("ffu_nope.wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    page.get_by_label("API token").fill(ui_server.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('flowfed.token')") == ui_server.token
    context.close()


def test_template_to_finished_run_with_logs_and_lineage(page: Page) -> None:
    # Flows page: the three templates, no "create task" anywhere.
    expect(page.get_by_role("heading", name="Templates")).to_be_visible()
    for title in (
        "Local preprocessing and training pipeline",
        "Federated classification",
        "Federated evaluation of a registered model",
    ):
        expect(page.get_by_role("heading", name=title)).to_be_visible()
    assert "create task" not in page.content().lower()
    shot(page, "flows")

    # The form is generated from the parameter schema (tool config schemas).
    page.get_by_role("link", name="Use template: Local preprocessing").click()
    expect(page.get_by_label("Training epochs")).to_have_value("200")
    expect(page.get_by_label(re.compile("^Data set"))).to_have_value("breast_cancer")
    expect(page.locator("svg.graph")).to_contain_text("Train")
    page.get_by_label("Flow name").fill("UI Pipeline")
    page.get_by_label("Training epochs").fill("0")
    page.get_by_role("button", name="Create flow").click()
    expect(page.get_by_role("alert")).to_contain_text("epochs must be at least 1")
    expect(page.get_by_label("Training epochs")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Training epochs").fill("300")
    shot(page, "template-form")
    page.get_by_role("button", name="Create flow").click()

    # Flow detail: the steps graph drawn from artifact edges, versions, runs.
    expect(page.get_by_role("heading", name=re.compile("UI Pipeline"))).to_be_visible()
    graph = page.locator("svg.graph")
    expect(graph.locator(".node")).to_have_count(6)
    expect(graph.locator(".edge-label", has_text="train_raw")).to_have_count(1)
    shot(page, "flow-detail")
    page.get_by_role("button", name="Start run").click()

    # Run monitor: every step ends completed with a full progress bar, tasks finished.
    expect(page.locator("#run-status")).to_contain_text("success", timeout=60_000)
    steps = page.locator("li.step")
    expect(steps).to_have_count(6)
    for i in range(6):
        expect(steps.nth(i).locator(".step-head .badge")).to_have_text(re.compile("completed"))
        expect(steps.nth(i).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    train = page.locator("li.task[data-tool='flowfed.logistic_regression']")
    expect(train.locator(".info")).to_have_text(re.compile(r"^local · loss \d"))
    expect(train.locator(".badge")).to_have_text(re.compile("finished"))
    shot(page, "run-monitor")

    # Task detail: transitions, logs, a metric chart.
    page.locator("li.task[data-tool='flowfed.sklearn_dataset']").get_by_role("link").click()
    expect(page.locator("#logs")).to_contain_text("loaded scikit-learn")
    transitions = page.locator("#transitions li")
    expect(transitions).to_have_count(4)  # pending → initialized → started → running → finished
    expect(transitions.last).to_contain_text("running")
    expect(transitions.last).to_contain_text("finished")
    shot(page, "task-detail")
    page.go_back()
    page.locator("li.task[data-tool='flowfed.logistic_regression']").get_by_role("link").click()
    # The loss per epoch is a curve (uPlot), one point per epoch the tool reported.
    loss = page.locator("#metrics figure.curve[data-metric='loss']")
    expect(loss.locator(".uplot canvas")).to_be_visible()
    expect(loss).to_contain_text("loss")
    assert int(loss.get_attribute("data-points") or 0) > 1
    assert "NaN" not in loss.inner_text()

    # Artifact lineage: the model goes back through the scaled and split tables to raw.
    page.get_by_role("link", name=re.compile(r"^model v1")).click()
    lineage = page.locator("#lineage svg")
    for name in ("model v1", "train v1", "train_raw v1", "raw v1"):
        expect(lineage).to_contain_text(name)
    shot(page, "artifact-lineage")
    page.get_by_role("link", name="Artifacts", exact=True).click()
    page.get_by_label("Name").fill("scores")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#list tbody tr")).to_have_count(1)
    shot(page, "artifacts")


def test_yaml_error_is_shown_at_its_line(page: Page) -> None:
    page.get_by_role("link", name="New flow from YAML").click()
    source = "name: Broken\nsteps:\n  - name: load\n    tool: no_such_tool\n    outputs: [x]\n"
    page.get_by_label("Flow YAML").fill(source)
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown tool 'no_such_tool'")
    # The gutter marks line 4, and the message sits on that line of the editor.
    expect(page.locator(".gutter .err")).to_have_attribute("data-line", "4")
    mark = page.locator(".mark")
    expect(mark).to_contain_text("line 4: unknown tool")
    assert mark.get_attribute("data-line") == "4"
    shot(page, "yaml-error")
    # Fixing the line clears the mark; the flow then validates.
    page.get_by_label("Flow YAML").fill(source.replace("no_such_tool", "ticker"))
    expect(page.locator(".gutter .err")).to_have_count(0)
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("status").filter(has_text="Valid")).to_be_visible()


def create_ticker_flow(page: Page, count: int) -> None:
    page.get_by_role("link", name="New flow from YAML").click()
    page.get_by_label("Flow YAML").fill(TICKER_FLOW.replace("COUNT", str(count)))
    page.get_by_role("button", name="Save as new version").click()
    expect(page.get_by_role("heading", name=re.compile("Ticker Flow"))).to_be_visible()


def test_live_logs_survive_a_dropped_connection_without_gaps_or_repeats(page: Page) -> None:
    create_ticker_flow(page, 40)
    page.get_by_role("button", name="Start run").click()
    task = page.locator("li.task", has_text="ticker")
    expect(task.locator(".badge")).to_have_text(re.compile("running"))
    task.get_by_role("link").click()
    logs = page.locator("#logs")
    expect(logs).to_contain_text("tick 3")
    page.evaluate("window.__flowfedStream.drop()")
    expect(page.locator("#conn")).to_have_text("● live")
    expect(page.locator("#task-state")).to_contain_text("finished", timeout=60_000)
    lines = [line for line in logs.inner_text().splitlines() if "tick" in line]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(i) for i in range(1, 41)]
    shot(page, "task-logs-live")


def test_run_monitor_updates_live_and_cancel_then_retry(page: Page) -> None:
    create_ticker_flow(page, 600)
    page.get_by_role("button", name="Start run").click()
    task = page.locator("li.task", has_text="ticker")
    # The state changes under our eyes: pending/started → running → cancelled.
    expect(task.locator(".badge")).to_have_text(re.compile("running"))
    expect(page.get_by_role("button", name="Retry run")).to_be_disabled()
    page.evaluate("window.__flowfedStream.drop()")  # a network drop mid-run
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=30_000)
    expect(task.locator(".badge")).to_have_text(re.compile("cancelled"))
    expect(page.locator("li.task")).to_have_count(1)  # the resumed stream added no duplicate
    # A cancelled step's bar is striped, not a full blue bar.
    expect(page.locator("li.step .progress").first).to_have_class(re.compile("p-cancelled"))
    shot(page, "run-cancelled")
    first = page.url
    page.get_by_role("button", name="Retry run").click()
    expect(page).not_to_have_url(first)
    expect(page.locator("#run-status")).to_contain_text("running")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=30_000)


def tab_to(page: Page, text: str, *, back: bool = False, limit: int = 40) -> None:
    """Press Tab (or Shift+Tab) until the focused element reads ``text``."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        label = page.evaluate(
            "document.activeElement.getAttribute('aria-label') "
            "|| document.activeElement.textContent.trim()"
        )
        if label == text:
            return
        seen.append(label)
    raise AssertionError(f"Tab never reached {text!r}; focus went through {seen}")


def test_keyboard_reaches_the_main_actions_and_empty_pages(page: Page) -> None:
    # After each navigation focus is on the page's content; Tab reaches its actions,
    # Shift+Tab the navigation, and Enter follows a focused link or presses a button.
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    tab_to(page, "Use template: Local preprocessing and training pipeline")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Create flow")).to_be_visible()
    tab_to(page, "Create flow")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Start run")).to_be_visible()
    tab_to(page, "Start run")
    tab_to(page, "Edit YAML")
    for name in ("Nodes", "Models", "Triggers"):
        tab_to(page, name, back=True)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        if name == "Models":
            # Runs of this module may already have trained a model (the registry lists
            # it); otherwise the page shows its empty state. Either way the page rendered.
            expect(page.locator(".empty, #cmp tbody tr").first).to_be_visible()
        else:
            expect(page.locator(".empty")).to_contain_text(f"No {name.lower()} yet")
        shot(page, name.lower())
    tab_to(page, "Runs", back=True)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    tab_to(page, "Skip to content", back=True)
    shot(page, "runs")


def test_tablet_width_keeps_the_tree_readable(
    page: Page, ui_server: Server, finished_run: str
) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    page.goto(f"{ui_server.url}/#/runs/{finished_run}")
    expect(page.locator("li.step").first).to_be_visible()
    # Nothing forces horizontal scrolling of the page at tablet width.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "run-monitor-tablet")


def test_a_step_with_1000_tasks_renders_once_per_frame_and_collapses(
    page: Page, ui_server: Server, finished_run: str
) -> None:
    # 1,000 tasks of one step arrive through the page's event stream, five events each,
    # in the shapes the server sends; the page folds them into one render per frame.
    page.goto(f"{ui_server.url}/#/runs/{finished_run}")
    expect(page.locator("#conn")).to_have_text(re.compile("ended|live"))
    renders = page.evaluate((Path(__file__).parent / "flood_1000_tasks.js").read_text())
    assert renders <= 3  # one frame, one render of the step (plus none for the others)
    big = page.locator("li.step[data-step='Big']")
    expect(big.locator(".counts")).to_have_text("1000 tasks: 500 running, 500 finished")
    expect(big.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "50")
    expect(big.locator("li.task")).to_have_count(50)
    # Collapsed, the active tasks come first.
    expect(big.locator("li.task .badge")).to_have_text([re.compile("running")] * 50)
    expect(big.locator("li.task .info").first).to_have_text("node-0 · Round 3 · loss 0.5")
    shot(page, "run-monitor-1000-tasks")
    big.get_by_role("button", name="Show all 1000 tasks").click()
    expect(big.locator("li.task")).to_have_count(1000)


def _start_flaky_run(ui_server: Server, name: str, marker: Path, *, retries: int) -> str:
    """Start a run whose step Check (tool ``flaky``) fails while ``marker`` exists."""
    marker.write_text("")
    source = (
        f"name: {name}\nsteps:\n"
        "  - {name: Load, tool: numbers, params: {n: 3}, outputs: [xs]}\n"
        "  - name: Check\n    tool: flaky\n    inputs: {xs: xs}\n"
        f"    params: {{marker: '{marker}'}}\n    retries: {retries}\n    retry_backoff: 0\n"
        "    outputs: [checked]\n"
    )
    response = ui_server.client().post("/api/v1/runs", json={"source": source})
    return str(response.json()["run_id"])


def test_a_failed_run_shows_why_its_retries_and_retrying_resumes_it(
    page: Page, ui_server: Server, tmp_path: Path
) -> None:
    marker = tmp_path / "broken"
    run_id = _start_flaky_run(ui_server, "Flaky Flow", marker, retries=1)
    page.goto(f"{ui_server.url}/#/runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("failed", timeout=60_000)
    check = page.locator("li.step[data-step='Check']")
    expect(check.locator(".step-head .badge")).to_have_text(re.compile("failed"))
    expect(check.locator("li.task")).to_have_count(1)  # a retry is the same task again
    expect(check.locator("li.task")).to_contain_text("flaky is broken")
    expect(check.locator("li.task")).to_contain_text("(attempt 2)")
    expect(page.get_by_role("button", name="Cancel run")).to_be_disabled()
    # A failed step's bar is red and holds what finished (nothing), not a full blue bar.
    expect(check.locator(".progress")).to_have_class(re.compile("p-failed"))
    expect(check.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    shot(page, "run-failed")

    check.locator("li.task").get_by_role("link").click()
    expect(page.get_by_role("alert")).to_contain_text("RuntimeError: flaky is broken")
    history = page.locator("#attempts li")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("attempt 1")
    expect(history.first).to_contain_text("error")
    # The error is said once, in its card: the transitions and history do not repeat it.
    expect(page.locator("#transitions")).not_to_contain_text("flaky is broken")
    expect(page.locator("#attempts")).not_to_contain_text("flaky is broken")
    shot(page, "task-retries")

    # Fix the cause, retry: the finished step comes back cached, the failed one runs.
    marker.unlink()
    page.go_back()
    page.get_by_role("button", name="Retry run").click()
    expect(page).not_to_have_url(re.compile(run_id))
    expect(page.locator("#run-status")).to_contain_text("success", timeout=60_000)
    load = page.locator("li.step[data-step='Load'] li.task")
    expect(load.locator(".badge")).to_have_text(re.compile("cached"))
    # The retry links back to the run it retries (the run's `retry_of`).
    expect(page.locator("#retry-of")).to_have_attribute("href", f"#/runs/{run_id}")
    shot(page, "run-retry-of")


def test_an_ended_run_replaying_its_log_keeps_retry_enabled(
    page: Page, ui_server: Server, tmp_path: Path
) -> None:
    # The replayed log begins with the run's "running" event; applied over the "failed"
    # the page loaded, it used to disable "Retry run" until the replay caught up, and a
    # click in that moment did nothing.
    run_id = _start_flaky_run(ui_server, "Failed Flow", tmp_path / "broken", retries=0)
    assert ui_server.wait_run(run_id)["status"] == "failed"
    # Count every time the button goes from enabled to disabled, however briefly. Frames
    # are made to come after every event (the page applies a frame's events at once), as
    # on a slow link, where the replay spans many frames.
    page.evaluate(
        """() => {
          window.requestAnimationFrame = (cb) => setTimeout(cb, 0);
          window.__retryDisabled = 0;
          new MutationObserver((records) => {
            for (const r of records)
              if (r.target.id === "retry" && r.oldValue === null) window.__retryDisabled++;
          }).observe(document.body, {
            subtree: true, attributes: true, attributeFilter: ["disabled"], attributeOldValue: true,
          });
        }"""
    )
    page.evaluate("id => { location.hash = '#/runs/' + id; }", run_id)
    # The server ends an ended run's stream after the replay; the page applies what it
    # holds before it says "ended".
    expect(page.locator("#conn")).to_have_text("ended")
    check = page.locator("li.step[data-step='Check']")
    expect(check.locator("li.task")).to_contain_text("flaky is broken")
    expect(check.locator(".step-head .badge")).to_have_text(re.compile("failed"))
    expect(page.get_by_role("button", name="Retry run")).to_be_enabled()
    assert page.evaluate("window.__retryDisabled") == 0


def test_a_revoked_token_sends_the_user_back_to_sign_in(browser, ui_server: Server) -> None:
    made = ui_server.new_token("--name", "short-lived", "--role", "user")
    context = browser.new_context()
    page = context.new_page()
    page.goto(ui_server.url + "/")
    page.get_by_label("API token").fill(made["token"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    ui_server.ff("auth", "token", "revoke", made["id"], "--database-url", ui_server.db_url)
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('flowfed.token')") is None
    context.close()
