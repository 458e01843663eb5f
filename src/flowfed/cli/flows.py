"""``flowfed flows list|show|push|delete``: the flow definitions stored on a server.

Stored flows are what triggers and templates start, by name (each push of a name adds a
version). They live on a server: every command needs ``--server``/``$FLOWFED_SERVER``.

Example:
    >>> # flowfed --server http://127.0.0.1:8000 flows push flow.yaml
    >>> # flowfed --server http://127.0.0.1:8000 flows show "Quickstart Diagnosis Flow"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flowfed.cli.common import JsonOpt, Remote, api, err, fail, out, quote, remote, ts
from flowfed.wording import plural

flows_app = typer.Typer(help="Stored flow definitions on a server.", no_args_is_help=True)

VersionOpt = Annotated[
    int | None, typer.Option("--version", min=1, help="One version (default: the latest).")
]


def _server(ctx: typer.Context) -> Remote:
    server = remote(ctx)
    if server is None:
        fail(
            "stored flows live on a server: pass --server URL (or set FLOWFED_SERVER); "
            "a flow file runs locally with `flowfed run FILE`"
        )
    return server


@flows_app.command("list")
def flows_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the stored flows: the latest version of each name."""
    rows = api(_server(ctx), "GET", "/flows")
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        out.print("no stored flows: add one with `flowfed flows push FILE`")
        return
    from rich.table import Table

    table = Table("flow", "version", "steps", "stored", "description")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["version"]),
            str(r["steps"]),
            ts(r["created_at"]),
            r["description"] or "",
        )
    out.print(table)


@flows_app.command("show")
def flows_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The flow's name.")],
    version: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a stored flow: its versions and the definition's text as it was pushed."""
    server = _server(ctx)
    path = f"/flows/{quote(name)}" + (f"/versions/{version}" if version else "")
    flow = api(server, "GET", path)
    versions = api(server, "GET", f"/flows/{quote(name)}/versions")
    if as_json:
        print(json.dumps({**flow, "versions": [v["version"] for v in versions]}))
        return
    out.print(
        f"[bold]{flow['name']}[/bold] version {flow['version']} of {len(versions)} · "
        f"{plural(flow['steps'], 'step')} · stored {ts(flow['created_at'])}",
        highlight=False,
    )
    if flow.get("description"):
        out.print(flow["description"], markup=False)
    out.print(flow.get("source") or json.dumps(flow["spec"], indent=2), markup=False)


@flows_app.command("push")
def flows_push(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Flow file (.yaml, .yml or .json).")],
    as_json: JsonOpt = False,
) -> None:
    """Store a flow file on the server as the next version of its name.

    The server checks it against its own tools first; nothing is stored if it is invalid.
    """
    server = _server(ctx)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    fmt = "json" if file.suffix.lower() == ".json" else "yaml"
    created: dict[str, Any] = api(server, "POST", "/flows", body={"source": text, "format": fmt})
    if as_json:
        print(json.dumps(created))
        return
    for w in created.get("warnings") or []:
        err.print(f"warning: {w.get('message')}", markup=False, soft_wrap=True)
    out.print(
        f"stored flow '{created['name']}' version {created['version']} on {server.url}",
        markup=False,
    )


@flows_app.command("delete")
def flows_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The flow's name.")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Only this version (default: all).")
    ] = None,
) -> None:
    """Delete a stored flow (every version, or one). Its past runs are kept.

    Refused while a trigger starts it: remove the trigger first.
    """
    server = _server(ctx)
    path = f"/flows/{quote(name)}" + (f"/versions/{version}" if version else "")
    api(server, "DELETE", path)
    what = f"version {version} of flow '{name}'" if version else f"flow '{name}'"
    out.print(f"deleted {what} on {server.url}", markup=False)
