"""A real ``flowfed server`` (with the built-in tools) and headless Debian Chromium.

One server and one browser per module keep the suite fast; each test gets a fresh page
that is already signed in unless it signs in itself. Screenshots of every page go to
``test-output/screenshots/`` (git-ignored) so a reviewer can look at what was tested.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.server.conftest import Server, start_server, stop

CHROMIUM = "/usr/bin/chromium"
# The machine may be busy (CI runs the suite on two workers): waiting longer for what the
# page must eventually show costs nothing when it shows at once.
expect.set_options(timeout=15_000)
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"

# Tools for the live tests: a ticker that logs while it runs, a step that waits to be
# cancelled. Both check for cancellation so a run ends promptly.
UI_TOOLS = """
import time
from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def ticker(ctx: Context, *, count: int = 30, every: float = 0.1) -> int:
    for i in range(1, count + 1):
        ctx.log(f"tick {i}")
        ctx.metric("loss", 1.0 / i, step=i)
        ctx.progress(i / count)
        end = time.monotonic() + every
        while time.monotonic() < end:
            time.sleep(0.01)
            ctx.check_cancelled()
    return count
"""


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui")
    tools = root / "ui_tools.py"
    tools.write_text(textwrap.dedent(UI_TOOLS))
    s = start_server(
        root / "srv",
        f"sqlite:///{root / 'flowfed.db'}",
        "--import",
        "flowfed.tools.library",
        "--import",
        str(tools),
    )
    yield s
    stop(s)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, ui_server: Server) -> Iterator[Page]:
    """A fresh tab on the dashboard, signed in with the server's admin token."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    errors: list[Any] = []
    p.on("pageerror", lambda exc: errors.append(exc))
    p.goto(ui_server.url + "/")
    p.evaluate("t => sessionStorage.setItem('flowfed.token', t)", ui_server.token)
    p.goto(ui_server.url + "/#/flows")
    yield p
    context.close()
    # A JavaScript exception is a bug even if the page happened to look right.
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as test-output/screenshots/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def finished_run(ui_server: Server) -> str:
    """The id of a short run that already ended (a ticker of three ticks)."""
    api = ui_server.client()
    source = (
        "name: Short Ticker\nsteps:\n  - name: Tick\n    tool: ticker\n"
        "    params: {count: 3, every: 0.01}\n    outputs: [ticks]\n"
    )
    r = api.post("/api/v1/runs", json={"source": source, "format": "yaml"})
    assert r.status_code == 202, r.text
    run_id = str(r.json()["run_id"])
    assert ui_server.wait_run(run_id)["status"] == "success"
    return run_id
