"""The dashboard: static ES modules and CSS, served by ``flowfed server`` at ``/``.

There is no build step and no Node.js: ``static/`` is what the browser loads, shipped as
package data. The dashboard talks to the REST and WebSocket API only, like any client.

Example:
    >>> from fastapi import FastAPI
    >>> mount(FastAPI())  # GET / serves static/index.html
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

#: The committed front end (index.html, app.css, js/*.js).
STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount(app: FastAPI) -> None:
    """Serve the dashboard: ``/`` is the page, ``/ui/...`` its modules and styles."""
    index = STATIC_DIR / "index.html"

    def page() -> FileResponse:
        # no-cache: a new package version must not run against stale modules.
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
