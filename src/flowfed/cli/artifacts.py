"""``flowfed artifacts list|show`` and ``flowfed lineage``: the catalog, local or on a server.

Without a server they read the local catalog; with ``--server`` they call the server's
``/api/v1/artifacts`` routes (and never create a local ``.flowfed/``).

Example:
    >>> # flowfed artifacts show scores:2
    >>> # flowfed --server http://127.0.0.1:8000 lineage model --json
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from flowfed.cli.common import JsonOpt, api, fail, local_db, out, quote, remote

artifacts_app = typer.Typer(help="Inspect artifacts.", no_args_is_help=True)
lineage_app = typer.Typer()


@artifacts_app.command("list")
def artifacts_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only this artifact name.")] = None,
    run_ref: Annotated[str | None, typer.Option("--run", help="Only this run's.")] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", "-q", help="Names starting with this: scores finds scores[...]."),
    ] = None,
    step: Annotated[str | None, typer.Option("--step", help="Only this step's.")] = None,
    include_rounds: Annotated[
        bool,
        typer.Option(
            "--include-rounds",
            help="Also federated rounds' node updates and earlier global models.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List artifacts in the catalog."""
    server = remote(ctx)
    if server is not None:
        params = {
            "name": name,
            "run": run_ref,
            "q": search,
            "step": step,
            "include_rounds": str(include_rounds).lower(),
            "limit": 1000,
        }
        params = {k: v for k, v in params.items() if v is not None}
        rows = api(server, "GET", "/artifacts", params=params)
    else:
        db = local_db()
        run_id = None
        if run_ref:
            r = db.get_run(run_ref)
            if r is None:
                fail(f"no run matches '{run_ref}' (see `flowfed runs list`)")
            run_id = r["id"]
        rows = db.list_artifacts(
            name=name, run_id=run_id, prefix=search, step=step, include_rounds=include_rounds
        )
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table("id", "name", "version", "kind", "size", "hash", "step")
    for a in rows:
        table.add_row(
            a["id"][:12],
            escape(a["name"]),  # scores[hospital-a:breast] is a name, not markup
            str(a["version"]),
            a["kind"],
            str(a["size"]),
            a["hash"][:12],
            a.get("step") or "",
        )
    out.print(table)


@artifacts_app.command("show")
def artifacts_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ART", help="id, id prefix, name or name:version")],
    as_json: JsonOpt = False,
) -> None:
    """Show an artifact's metadata, producer and parents."""
    server = remote(ctx)
    a = api(server, "GET", f"/artifacts/{quote(ref)}") if server else local_db().get_artifact(ref)
    if a is None:
        fail(f"no artifact matches '{ref}' (see `flowfed artifacts list`)")
    if as_json:
        print(json.dumps(a, default=str))
        return
    for key in (
        "id",
        "name",
        "version",
        "hash",
        "size",
        "kind",
        "type_name",
        "uri",
        "run_id",
        "step",
        "node",
        "pickled",
    ):
        out.print(f"{key:>10}: {a.get(key)}", markup=False)
    p = a.get("producer") or {}
    out.print(
        f"{'producer':>10}: {p.get('tool')}@{p.get('tool_version')} "
        f"(step {p.get('step')}, task {str(p.get('task_id'))[:12]})",
        markup=False,
    )
    out.print(f"{'parents':>10}: {', '.join(x[:12] for x in a.get('parents', [])) or '—'}")


@lineage_app.command()
def lineage(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ART", help="id, id prefix, name or name:version")],
    as_json: JsonOpt = False,
) -> None:
    """Show where an artifact came from: a recursive tree back to its sources."""
    server = remote(ctx)
    tree = (
        api(server, "GET", f"/artifacts/{quote(ref)}/lineage")
        if server
        else local_db().lineage(ref)
    )
    if tree is None:
        fail(f"no artifact matches '{ref}' (see `flowfed artifacts list`)")
    if as_json:
        print(json.dumps(tree, default=str))
        return
    from rich.markup import escape
    from rich.tree import Tree

    def label(n: dict[str, Any]) -> str:
        p = n.get("producer") or {}
        extra = " (cycle)" if n.get("cycle") else ""
        extra += " [dim](shown above)[/dim]" if n.get("shown") else ""
        if n.get("missing"):
            return f"{n['id'][:12]} [red](no longer in the catalog)[/red]"
        where = f" on {n['node']}" if n.get("node") not in (None, "local") else ""
        # Names like model.update[hospital-a:breast] are text, not markup.
        return (
            f"[bold]{escape(n['name'])}:{n['version']}[/bold] [dim]{n['kind']} "
            f"{n['hash'][:10]}{escape(where)} ← {escape(str(p.get('step')))} "
            f"({p.get('tool')}@{p.get('tool_version')}) "
            f"run {str(n.get('run_id'))[:8]}[/dim]{extra}"
        )

    def grow(branch: Tree, n: dict[str, Any]) -> None:
        for parent in n.get("parents", []):
            grow(branch.add(label(parent)), parent)

    root = Tree(label(tree))
    grow(root, tree)
    out.print(root)
