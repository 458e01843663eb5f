"""What every ``flowfed`` command shares: consoles, one-line errors, the catalog or server.

Each command module (``cli/runs.py``, ``cli/models.py``, ``cli/nodes.py``, ...) imports
from here and never from ``cli/main.py``, so the command modules form no import circle
and each loads only when its command is used. Nothing heavy is imported at module level:
Rich, SQLAlchemy and httpx load inside the functions that need them.

A command that reads or changes the catalog asks :func:`remote` first: with a server
(``--server`` / ``$FLOWFED_SERVER``) it calls the REST API through :func:`api`, otherwise
it opens the local catalog with :func:`local_db`. A command that has no server form calls
:func:`local_only`, which refuses a given server with exit code 2.

Example:
    >>> # server = remote(ctx)
    >>> # rows = api(server, "GET", "/runs", params={"limit": 5})["items"] if server \\
    >>> #     else local_db().list_runs(limit=5)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from flowfed.wording import plural

if TYPE_CHECKING:
    from rich.console import Console

    from flowfed.db import Database


#: When this process began running flowfed code (a run's ``startup_s`` counts from it).
STARTED = time.time()


class _LazyConsole:
    """A Rich console made on first use: ``flowfed --help`` never imports Rich's console."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def console(self) -> Console:
        """The Rich console itself (for code that needs a real ``Console``)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console(), name)


#: stdout and stderr of every command (Rich consoles, made when first printed to).
out: Any = _LazyConsole(stderr=False)
err: Any = _LazyConsole(stderr=True)

ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Python file or module holding tools (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default: $FLOWFED_DATABASE_URL or .flowfed/flowfed.db).",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (plain text, never markup) and exit ``code``."""
    from rich.text import Text

    # The message is plain text: names like model.update[hospital-a:breast] are not markup.
    err.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


def ts(t: float | None, ms: bool = False) -> str:
    """A timestamp as local time, to the second (or millisecond); ``—`` for none."""
    import datetime as dt

    if not t:
        return "—"
    fmt = "%Y-%m-%d %H:%M:%S.%f" if ms else "%Y-%m-%d %H:%M:%S"
    s = dt.datetime.fromtimestamp(t).strftime(fmt)
    return s[:-3] if ms else s


# --- the local catalog ------------------------------------------------------------------------


def local_db() -> Database:
    """The local catalog (``.flowfed/`` or ``$FLOWFED_DATABASE_URL``), upgraded if embedded."""
    from flowfed.api import default_database_url
    from flowfed.db import Database

    db = Database(default_database_url())
    try:
        db.ensure_schema(auto_upgrade=True)
    except Exception as exc:  # an unreachable database or a bad URL is a user problem
        db.close()
        from flowfed.db.problems import describe_db_error

        fail(f"cannot open database {db!r}: {describe_db_error(db.engine.url, exc)}")
    return db


def server_db(database_url: str | None) -> Database:
    """The database a server uses, which must already be at the current schema."""
    from flowfed.api import default_database_url
    from flowfed.db import Database, SchemaOutOfDate

    db = Database(database_url or default_database_url())
    try:
        db.ensure_schema(auto_upgrade=False)
    except SchemaOutOfDate as exc:
        db.close()
        fail(f"{exc} (on {db!r})")
    except Exception as exc:  # unreachable server, bad credentials, missing driver
        db.close()
        from flowfed.db.problems import describe_db_error

        fail(f"cannot open database {db!r}: {describe_db_error(db.engine.url, exc)}")
    return db


def on_server_db(database_url: str | None, action: Any, *args: Any) -> Any:
    """Run ``action(db, *args)`` on the server's database, closing it afterwards.

    A ValueError (a bad role, scope or name) becomes a one-line error and exit code 2.
    """
    db = server_db(database_url)
    try:
        return action(db, *args)
    except ValueError as exc:
        fail(str(exc))
    finally:
        db.close()


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """The server a command was pointed at (``--server``/``$FLOWFED_SERVER``, ``--token``)."""

    url: str
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header (none without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def remote(ctx: typer.Context) -> Remote | None:
    """The server given to the whole command line, or ``None`` to work locally."""
    obj = ctx.find_root().obj or {}
    url = obj.get("server")
    return Remote(str(url).rstrip("/"), obj.get("token")) if url else None


def local_only(ctx: typer.Context, command: str, instead: str) -> None:
    """Refuse ``--server`` for a command that has no server form (exit code 2).

    ``instead`` tells the user what to do rather (e.g. the option that names the database).
    """
    server = remote(ctx)
    if server is not None:
        fail(
            f"`flowfed {command}` has no server form, but --server {server.url} was given: "
            + instead
        )


def api(
    server: Remote,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    timeout: float = 60,
) -> Any:
    """Call ``/api/v1{path}`` on the server; its JSON answer (``None`` for 204).

    A refused request ends the command with the server's problem text; an unreachable
    server with its URL and the reason (exit code 2 for both).
    """
    import httpx

    try:
        resp = httpx.request(
            method,
            f"{server.url}/api/v1{path}",
            params={k: v for k, v in (params or {}).items() if v is not None},
            json=body,
            headers=server.headers,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {server.url}: {exc or type(exc).__name__}")
    if resp.status_code >= 400:
        text = problem_text(resp).replace("\n", "; ")
        if resp.status_code == 401:
            text += " (give a valid --token, or set FLOWFED_TOKEN)"
        fail(text)
    return None if resp.status_code == 204 else resp.json()


def problem_text(resp: Any) -> str:
    """A refused HTTP answer as text: ``HTTP 404: detail``, then each listed error."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"
    if not isinstance(body, dict):
        return f"HTTP {resp.status_code}: {str(body)[:300]}"
    detail = body.get("detail") or body.get("title") or resp.reason_phrase
    lines = [f"HTTP {resp.status_code}: {detail}"]
    for e in body.get("errors", []) or []:
        lines.append(f"  {e.get('message') or e}" if isinstance(e, dict) else f"  {e}")
    return "\n".join(lines)


def quote(segment: str) -> str:
    """``segment`` escaped for one URL path segment (names may hold spaces or slashes)."""
    from urllib.parse import quote as _quote

    return _quote(segment, safe="")


def flow_error(
    exc: Exception, as_json: bool, imported: list[str] | None = None, flow: Any = None
) -> NoReturn:
    """Print a FlowError's diagnostics (or ``{"valid": false, ...}``) and exit 2.

    ``imported`` (the flow's ``imports`` and ``--import``), when known, folds the "unknown
    tool" lines that an import would fix into one naming it.
    """
    from flowfed.spec.diagnostics import FlowError

    assert isinstance(exc, FlowError)
    diagnostics = exc.diagnostics
    if imported is not None:
        from flowfed.tools.hints import collapse_unknown_tools

        diagnostics = collapse_unknown_tools(diagnostics, imported=imported, flow=flow)
    if as_json:
        print(json.dumps({"valid": False, "errors": [d.to_dict() for d in diagnostics]}))
    else:
        err.print(f"[red]invalid flow[/red]: {plural(len(diagnostics), 'problem')}")
        for d in diagnostics:
            err.print(f"  {d}", soft_wrap=True, markup=False)
    raise typer.Exit(2)


def imported_by(loaded: Any, imports: list[str] | None) -> list[str]:
    """What a flow run from here imports: ``--import`` modules, then the flow's own."""
    return [*(imports or []), *(loaded.flow.imports if loaded is not None else [])]


def print_warnings(warnings: list[Any]) -> None:
    """Build-time warnings (the flow runs; the user should know), one line each on stderr."""
    from rich.markup import escape

    for w in warnings:
        err.print(f"[yellow]warning[/yellow]: {escape(str(w))}", soft_wrap=True)
