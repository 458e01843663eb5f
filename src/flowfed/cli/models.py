"""``flowfed models``: the model registry from the terminal, local or on a server.

Without ``--server`` the commands read the local catalog (``.flowfed/`` or
``$FLOWFED_DATABASE_URL``), as ``flowfed runs list`` does; with it they call the server's
``/api/v1/models`` routes. Both give the same JSON with ``--json``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from flowfed.cli.common import JsonOpt, api, fail, local_db, out, quote, remote, ts

models_app = typer.Typer(
    help="The model registry: trained models, their versions, variants and metrics.",
    no_args_is_help=True,
)

#: Metrics shown in tables (all of them are in --json), in this order when present.
HEADLINE = ("accuracy", "roc_auc", "f1", "loss", "train_accuracy")


def _get(ctx: typer.Context, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET a registry route of the server; a refused request ends the command."""
    server = remote(ctx)
    assert server is not None
    return api(server, "GET", f"/models{path}", params=params)


def _local(action: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a registry query on the local catalog; its lookup errors become one line."""
    from flowfed.db.registry import BadModelRef, ModelNotFound

    db = local_db()
    try:
        return action(db, *args, **kwargs)
    except (ModelNotFound, BadModelRef) as exc:
        fail(str(exc))
    finally:
        db.close()


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "—"
    return str(value)


def _headline(entries: list[dict[str, Any]], most: int = 4) -> list[str]:
    """Metric columns for a table: the :data:`HEADLINE` ones present, qualified or not."""
    keys = sorted({k for e in entries for k in e["metrics"]})
    picked: list[str] = []
    for base in HEADLINE:
        picked += [k for k in keys if k == base or k.startswith(base + "@")]
    return picked[:most]


def _print_entries(entries: list[dict[str, Any]]) -> None:
    from rich.table import Column, Table

    names = _headline(entries)
    # The model column never wraps: it is what a user copies into the next command.
    table = Table(Column("model", no_wrap=True), "run", "step", "variant", *names)
    for e in entries:
        table.add_row(
            f"{e['name']}@{e['version']}",
            e["run_id"][:8],
            e["step"],
            _fmt(e.get("variant")),
            *(_fmt(e["metrics"].get(k)) for k in names),
        )
    out.print(table)


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only this model's versions.")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Only models this run trained (id or prefix).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 50,
    include_rounds: Annotated[
        bool,
        typer.Option(
            "--include-rounds",
            help="Also federated rounds' node updates and earlier global models.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List trained models, newest first, with their variant and headline metrics.

    A federated run registers one version, its final global model."""
    if remote(ctx):
        params = {"name": name, "run_id": run, "limit": limit}
        params["include_rounds"] = str(include_rounds).lower()
        items = _get(ctx, "", params)["items"]
    else:
        items = _local(_list_local, name, run, limit, include_rounds)
    if as_json:
        print(json.dumps({"items": items}, default=str))
        return
    if not items:
        out.print("no models yet: run a flow with a step whose tool returns a flowfed.Model")
        return
    _print_entries(items)


def _list_local(
    db: Any, name: str | None, run: str | None, limit: int, include_rounds: bool = False
) -> list[dict[str, Any]]:
    from flowfed.db.registry import list_models

    run_id = None
    if run is not None:
        found = db.get_run(run)
        if found is None:
            fail(f"no run matches '{run}' (see `flowfed runs list`)")
        run_id = found["id"]
    return list_models(db, name=name, run_id=run_id, limit=limit, include_rounds=include_rounds)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(metavar="NAME[@VERSION]", help="A model; without @VERSION: all versions."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show a model version (its variant, metrics and evaluations), or every version."""
    from flowfed.db.registry import BadModelRef, parse_model_ref

    try:
        name, version = parse_model_ref(ref)
    except BadModelRef as exc:
        fail(str(exc))
    server = remote(ctx)
    if version is None and ref.rsplit("@", 1)[-1].rsplit(":", 1)[-1] == "latest":
        # NAME@latest: the newest version's entry, not the list of versions.
        versions = _get(ctx, f"/{quote(name)}") if server else None
        if versions is not None:
            version = versions["versions"][-1]["version"]
        else:
            from flowfed.db.registry import get_model

            entry = _local(get_model, name)
            version = entry["version"]
    if version is None:
        if server:
            data = _get(ctx, f"/{quote(name)}")
        else:
            from flowfed.db.registry import model_versions

            data = {"name": name, "versions": _local(model_versions, name)}
        if as_json:
            print(json.dumps(data, default=str))
        else:
            _print_entries(data["versions"])
        return
    if server:
        entry = _get(ctx, f"/{quote(name)}/{version}")
    else:
        from flowfed.db.registry import get_model

        entry = _local(get_model, f"{name}@{version}")
    if as_json:
        print(json.dumps(entry, default=str))
        return
    _print_entry(entry)


def _print_entry(e: dict[str, Any]) -> None:
    out.print(f"[bold]{e['name']}@{e['version']}[/bold] · {e.get('model_class') or e['type_name']}")
    rows = [
        ("artifact", e["artifact_id"]),
        ("hash", e["hash"]),
        ("run", e["run_id"]),
        ("step", f"{e['step']} on {e['node']} ({e.get('tool')}@{e.get('tool_version')})"),
        ("task", e["task_id"]),
        ("variant", _fmt(e.get("variant"))),
        ("created", ts(e["created_at"])),
    ]
    for label, value in rows:
        out.print(f"  {label:<9} {value}", markup=False)
    out.print("  training metrics:")
    for k, v in e["training"]["metrics"].items():
        out.print(f"    {k:<16} {_fmt(v)}", markup=False)
    for ev in e["evaluations"]:
        out.print(f"  evaluated by {ev['step']} on {ev['node']} ({ev.get('tool')}):", markup=False)
        for k, v in ev["metrics"].items():
            out.print(f"    {k:<16} {_fmt(v)}", markup=False)
    out.print(f"  lineage: flowfed lineage {e['name']}:{e['version']}", markup=False)


@models_app.command("compare")
def models_compare(
    ctx: typer.Context,
    refs: Annotated[
        list[str],
        typer.Argument(metavar="MODEL...", help="Models: NAME@VERSION, NAME (latest) or id."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Compare models side by side: swept params, every metric, and their data sources."""
    if remote(ctx):
        data = _get(ctx, "/compare", {"ids": ",".join(refs)})
    else:
        from flowfed.db.registry import compare_models

        data = _local(compare_models, refs)
    if as_json:
        print(json.dumps(data, default=str))
        return
    from rich.table import Column, Table

    table = Table(Column("", no_wrap=True), *data["models"])
    for k, values in data["variants"].items():
        table.add_row(f"[cyan]{k}[/cyan]", *(_fmt(v) for v in values))
    for k, values in data["metrics"].items():
        best = _best(k, values)
        table.add_row(
            k,
            *((f"[bold]{_fmt(v)}[/bold]" if i == best else _fmt(v)) for i, v in enumerate(values)),
        )
    table.add_row(
        "sources",
        *(
            ", ".join(f"{r.get('name')}:{r.get('version')}" for r in rs)
            for rs in data["lineage_roots"]
        ),
    )
    out.print(table)
    if not data["same_sources"]:
        out.print("[yellow]note:[/yellow] these models were trained from different sources")


#: Metrics where lower is better (the compare table marks the best value of each row).
LOWER_IS_BETTER = ("loss", "log_loss", "brier", "ece", "fp", "fn")


def _best(name: str, values: list[Any]) -> int | None:
    nums = [(v, i) for i, v in enumerate(values) if isinstance(v, int | float)]
    if len(nums) < 2 or len({v for v, _ in nums}) == 1:
        return None
    base = name.split("@", 1)[0]
    pick = min if base in LOWER_IS_BETTER else max
    return pick(nums)[1]
