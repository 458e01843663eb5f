"""The dashboard ships in the package and is served without a token."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import httpx

from flowfed.ui import STATIC_DIR
from tests.server.conftest import Server

ROOT = Path(__file__).resolve().parents[2]


def test_every_static_file_and_template_is_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]
    ui = STATIC_DIR.parent
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            rel = path.relative_to(ui).as_posix()
            assert any(fnmatch.fnmatch(rel, p) for p in patterns["flowfed.ui"]), rel
    for path in (ui.parent / "templates").glob("*.yaml"):
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns["flowfed.templates"])


def test_the_page_and_its_modules_need_no_token(ui_server: Server) -> None:
    page = httpx.get(ui_server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/ui/js/app.js">' in page.text
    js = httpx.get(ui_server.url + "/ui/js/app.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert httpx.get(ui_server.url + "/ui/js/nope.js").status_code == 404
    # The API behind it still wants one.
    assert httpx.get(ui_server.url + "/api/v1/flows").status_code == 401
