"""``flowfed node start`` (run a node agent) and ``flowfed nodes add|list|remove`` (admin).

Example:
    >>> # flowfed nodes add hospital-a --out node.json --server http://127.0.0.1:8000
    >>> # flowfed node start --name hospital-a --server http://127.0.0.1:8000 \\
    >>> #     --credentials node.json --dataset breast=/data/breast.csv
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

node_app = typer.Typer(help="Run a node agent next to a site's data.", no_args_is_help=True)
nodes_app = typer.Typer(
    help="Manage data nodes: credentials (add, remove) and their state (list).",
    no_args_is_help=True,
)


@node_app.command("start")
def node_start(
    name: Annotated[str, typer.Option("--name", help="This node's name, e.g. hospital-a.")],
    credentials: Annotated[
        Path, typer.Option("--credentials", help="The JSON file `flowfed nodes add --out` wrote.")
    ],
    server: Annotated[
        str | None,
        typer.Option("--server", help="Server URL (default: the credentials file's 'server')."),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="NAME=PATH of a CSV or Parquet file (repeatable)."),
    ] = None,
    runner: Annotated[
        str, typer.Option("--runner", help="inprocess, subprocess or sandbox.")
    ] = "inprocess",
    max_tasks: Annotated[int, typer.Option("--max-tasks", help="Tasks run at once.")] = 1,
    cache_mb: Annotated[
        int,
        typer.Option(
            "--cache-mb",
            help="Node tables and arrays kept decoded between tasks, in MB of their stored "
            "size (0: off).",
        ),
    ] = 256,
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="Where the node keeps its own artifact store.")
    ] = Path(".flowfed-node"),
    imports: Annotated[
        list[str] | None,
        typer.Option("--import", "-i", help="Python file or module holding tools (repeatable)."),
    ] = None,
) -> None:
    """Start a node agent: register the datasets, then run the tasks the server places here."""
    from flowfed.cli.main import _fail
    from flowfed.node.agent import NodeAgent, NodeConfig, NodeSetupError, load_credentials
    from flowfed.tools.loading import import_tools

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        creds = load_credentials(credentials)
        if creds["name"] != name:
            raise NodeSetupError(
                f"{credentials} holds the credentials of node '{creds['name']}', not '{name}'"
            )
        url = server or creds.get("server")
        if not url:
            raise NodeSetupError(f"no --server given and {credentials} names none")
        from flowfed.node.agent import parse_dataset_option

        datasets: dict[str, Path] = {}
        for text in dataset or []:
            ds_name, path = parse_dataset_option(text)
            if ds_name in datasets:
                raise NodeSetupError(f"--dataset {ds_name} is given twice")
            datasets[ds_name] = path
        problems = import_tools(list(imports or []), Path.cwd())
        if problems:
            raise NodeSetupError("cannot import tools: " + "; ".join(str(p) for p in problems))
        agent = NodeAgent(
            NodeConfig(
                name=name,
                server=url,
                token=creds["token"],
                datasets=datasets,
                runner=runner,
                max_tasks=max_tasks,
                cache_mb=cache_mb,
                work_dir=work_dir,
                imports=list(imports or []),
            )
        )
    except NodeSetupError as exc:
        _fail(str(exc))
    if runner == "sandbox":
        import shutil

        if shutil.which("bwrap") is None:
            _fail("--runner sandbox needs bubblewrap (bwrap): apt-get install bubblewrap")
    raise typer.Exit(agent.run())


@nodes_app.command("add")
def nodes_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The node's name, e.g. hospital-a.")],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the credentials JSON here (mode 600) too."),
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Server URL to put in the credentials.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The server's database (default as `flowfed server`)."),
    ] = None,
) -> None:
    """Register a node and print its credentials (shown this once; only a hash is stored)."""
    from flowfed.cli.main import _fail, _on_server_db, err
    from flowfed.server.nodes import add_node

    created = _on_server_db(database_url, add_node, name)
    creds: dict[str, Any] = {"name": created.name, "token": created.token}
    if server:
        creds["server"] = server
    text = json.dumps(creds, indent=2)
    if out_file is not None:
        try:
            fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as exc:
            _fail(f"cannot write {out_file}: {exc.strerror or exc}")
        err.print(f"credentials of node '{name}' written to {out_file}")
    err.print("store them now: the token cannot be shown again")
    print(text)


@nodes_app.command("list")
def nodes_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Nodes online/offline, their datasets and running tasks (from --server)."""
    from flowfed.cli.main import _fail, out

    obj = ctx.obj or {}
    server, token = obj.get("server"), obj.get("token")
    if not server:
        _fail("flowfed nodes list asks a server: give --server URL (and --token)")
    import httpx

    try:
        resp = httpx.get(
            f"{server.rstrip('/')}/api/v1/nodes",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {server}: {exc}")
    if resp.status_code >= 400:
        from flowfed.cli.remote import _problem

        _fail(_problem(resp))
    items = resp.json()["items"]
    if as_json:
        print(json.dumps(items))
        return
    from rich.table import Table

    table = Table("node", "status", "last seen", "running", "datasets")
    for n in items:
        seen = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(n["last_seen"]))
            if n["last_seen"]
            else "never"
        )
        ds = ", ".join(f"{d['name']} ({d['rows']} rows, {d['hash'][:12]})" for d in n["datasets"])
        table.add_row(
            n["name"], "online" if n["online"] else "offline", seen, str(n["running"]), ds or "—"
        )
    out.print(table)


@nodes_app.command("remove")
def nodes_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The node to remove.")],
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The server's database (default as `flowfed server`)."),
    ] = None,
) -> None:
    """Remove a node: its token stops working for new connections."""
    from flowfed.cli.main import _fail, _on_server_db, out
    from flowfed.server.nodes import remove_node

    if not _on_server_db(database_url, remove_node, name):
        _fail(f"no node named '{name}' (see `flowfed nodes list`)")
    out.print(f"node '{name}' removed")
