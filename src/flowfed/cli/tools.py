"""``flowfed tools list|show``: the tools registered here (with ``--import``), or a server's.

Example:
    >>> # flowfed tools list --import tools.py
    >>> # flowfed --server http://127.0.0.1:8000 tools show flowfed.csv --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flowfed.cli.common import ImportOpt, JsonOpt, api, fail, out, quote, remote

tools_app = typer.Typer(help="Inspect registered tools.", no_args_is_help=True)


def _tools(ctx: typer.Context, imports: list[str] | None) -> list[dict[str, Any]] | None:
    """The server's tools (as it describes them), or ``None`` to use the local registry."""
    server = remote(ctx)
    if server is None:
        return None
    if imports:
        fail(
            f"--import only applies locally: the server {server.url} has the tools it was "
            "started with (flowfed server --import)"
        )
    return list(api(server, "GET", "/tools"))


def _load_tools(imports: list[str] | None) -> Any:
    from flowfed.cli.common import flow_error
    from flowfed.spec.diagnostics import FlowError
    from flowfed.tools import get_registry, import_tools

    problems = import_tools(imports or [], Path.cwd())
    if problems:
        flow_error(FlowError(problems), False)
    return get_registry()


@tools_app.command("list")
def tools_list(ctx: typer.Context, imports: ImportOpt = None, as_json: JsonOpt = False) -> None:
    """List registered tools (load yours with --import; a server's with --server)."""
    described = _tools(ctx, imports)
    if described is None:
        described = [t.describe() for t in _load_tools(imports)]
    if as_json:
        print(json.dumps(described, default=str))
        return
    from rich.table import Table

    table = Table("tool", "version", "type", "inputs", "outputs")
    for t in described:
        table.add_row(
            t["name"],
            t["version"],
            str(t["type"]),
            ", ".join(i["name"] for i in t["inputs"]) or "—",
            ", ".join(o["name"] for o in t["outputs"]) or "—",
        )
    out.print(table)
    if not described:
        out.print("no tools registered; load a tools file with --import tools.py")


@tools_app.command("show")
def tools_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="TOOL")],
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a tool: type, inputs, outputs and its config JSON Schema."""
    server = remote(ctx)
    if server is not None:
        _tools(ctx, imports)  # refuses --import with --server
        d = api(server, "GET", f"/tools/{quote(name)}")
    else:
        reg = _load_tools(imports)
        spec = reg.find(name)
        if spec is None:
            fail(f"unknown tool '{name}'; registered: {', '.join(reg.names()) or 'none'}")
        d = spec.describe()
    if as_json:
        print(json.dumps(d, default=str))
        return
    out.print(f"[bold]{d['name']}[/bold]@{d['version']} · {d['type']}")
    if d["description"]:
        out.print(d["description"], markup=False)
    for i in d["inputs"]:
        out.print(f"  input  {i['name']}: {i['type']}", markup=False)
    for o in d["outputs"]:
        out.print(
            f"  output {o['name']}: {o['type']}{' (model)' if o['model'] else ''}", markup=False
        )
    out.print("config schema:")
    out.print_json(json.dumps(d["config_schema"]))
