"""The ``flowfed`` command line (Typer + Rich).

Exit codes: 0 success, 1 a run that failed or was cancelled, 2 an invalid flow or bad
arguments. Every error is one readable paragraph; tracebacks are kept for
``FLOWFED_DEBUG=1``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from flowfed.spec.loader import LoadedFlow

app = typer.Typer(
    name="flowfed",
    help="Run machine-learning flows of typed tools, with lineage and caching.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Inspect artifacts.", no_args_is_help=True)
tools_app = typer.Typer(help="Inspect registered tools.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(tools_app, name="tools")
app.add_typer(db_app, name="db")
auth_app = typer.Typer(
    help="Manage API tokens and OAuth2 clients for the server.", no_args_is_help=True
)
token_app = typer.Typer(help="Create, list and revoke user API tokens.", no_args_is_help=True)
client_app = typer.Typer(
    help="Register, list and revoke OAuth2 clients (nodes and tools).", no_args_is_help=True
)
auth_app.add_typer(token_app, name="token")
auth_app.add_typer(client_app, name="client")
app.add_typer(auth_app, name="auth")
# flowfed triggers ... (cli/triggers.py)
from flowfed.cli.triggers import app as _triggers_app  # noqa: E402

app.add_typer(_triggers_app, name="triggers")

from flowfed.cli.models import models_app  # noqa: E402  (its commands import from here lazily)

app.add_typer(models_app, name="models")
# `flowfed tool dev|exec|config|sessions`: development mode (flowfed.cli.tooldev).
from flowfed.cli.tooldev import tool_app  # noqa: E402

app.add_typer(tool_app, name="tool")

#: When this process began running flowfed code (the summary's ``startup_s`` counts from it).
_STARTED = time.time()

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.callback()
def _global_options(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="FLOWFED_SERVER",
            help="URL of a flowfed server: `run` submits there and streams the run live.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="FLOWFED_TOKEN", help="API token for --server."),
    ] = None,
) -> None:
    """Run machine-learning flows of typed tools, with lineage and caching."""
    ctx.obj = {"server": server, "token": token}


ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Python file or module holding tools (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    from rich.text import Text

    # The message is plain text: names like model.update[hospital-a:breast] are not markup.
    err.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


def _flow_error(exc: Exception, as_json: bool) -> NoReturn:
    from flowfed.spec.diagnostics import FlowError

    assert isinstance(exc, FlowError)
    if as_json:
        print(json.dumps({"valid": False, "errors": [d.to_dict() for d in exc.diagnostics]}))
    else:
        n = len(exc.diagnostics)
        err.print(f"[red]invalid flow[/red]: {n} problem{'s' if n != 1 else ''}")
        for d in exc.diagnostics:
            err.print(f"  {d}", soft_wrap=True, markup=False)
    raise typer.Exit(2)


def _db() -> Any:
    from flowfed.api import default_database_url
    from flowfed.db import Database

    db = Database(default_database_url())
    try:
        db.ensure_schema(auto_upgrade=True)
    except Exception as exc:  # an unreachable database or a bad URL is a user problem
        _fail(f"cannot open database {db.url}: {exc}")
    return db


@app.command()
def run(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Flow file (.yaml, .yml or .json).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Override a config value: KEY=VALUE.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task.")] = False,
    as_json: JsonOpt = False,
    imports: ImportOpt = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="threads (default), processes (forked child per call), subprocess "
            "(python -m flowfed.runtime per call), sandbox (subprocess under bubblewrap), "
            "container (docker/podman), "
            "dask://local, dask://HOST:PORT, ray://local or ray://HOST:PORT "
            "(docs/executors.md). Default: the flow's `executor:`, else threads.",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Pool size.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live tree.")] = False,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Run placed and federated steps on in-process nodes (research at scale) "
            "instead of local node agent processes.",
        ),
    ] = False,
    nodes_file: Annotated[
        Path | None,
        typer.Option(
            "--nodes",
            help="Nodes layout YAML ({nodes: {NAME: {DATASET: PATH}}}); default: the "
            "flow's `nodes:` (docs/nodes.md).",
        ),
    ] = None,
    node_runner: Annotated[
        str,
        typer.Option(
            "--node-runner",
            help="How local node agents run tools: sandbox (bubblewrap; the default), or "
            "inprocess / subprocess (no isolation).",
        ),
    ] = "sandbox",
) -> None:
    """Validate and run a flow, showing a live tree of its steps and tasks.

    Steps placed on data nodes run on local node agents (one process per node of the
    layout, through an embedded server) or, with --simulate, on in-process nodes.
    """
    from flowfed.api import make_engine, prepare
    from flowfed.plan.graph import parse_param_overrides
    from flowfed.spec.diagnostics import FlowError

    if executor is not None:
        from flowfed.api import _known_executor

        if not _known_executor(executor):
            _fail(
                "--executor must be threads, processes, subprocess, sandbox, container, "
                "dask://local, "
                f"dask://HOST:PORT, ray://local or ray://HOST:PORT; got {executor!r}"
            )
    server = (ctx.obj or {}).get("server")
    if server:
        try:
            params = parse_param_overrides(param or [])
        except FlowError as exc:
            _flow_error(exc, as_json)
        _run_remote(server, (ctx.obj or {}).get("token"), file, params, as_json, quiet)
    try:
        params = parse_param_overrides(param or [])
        from flowfed.spec import load_flow

        # Read once: the layout and the plan both need it (a 10,000-step file is ~0.6 s).
        loaded = load_flow(file)
        layout = _layout_for(loaded, file, nodes_file, simulate, params)
        prepared = prepare(loaded, params=params, imports=imports or [])
    except FlowError as exc:
        _flow_error(exc, as_json)
    _print_warnings(prepared.graph.warnings)
    placed = any(t.placed or t.federated is not None for t in prepared.graph.tasks.values())
    if placed and layout is None:
        _fail(
            f"{file}: this flow places steps on data nodes: give the nodes layout "
            "(--nodes FILE or the flow's `nodes:`), or run it on a server its nodes connect "
            "to (flowfed --server URL run ...)"
        )
    if node_runner not in ("inprocess", "subprocess", "sandbox"):
        _fail(f"--node-runner must be inprocess, subprocess or sandbox; got {node_runner!r}")
    if placed and layout is not None and not simulate and node_runner == "sandbox":
        from flowfed.node.runners import INSTALL_HINT, bwrap_path

        if bwrap_path() is None:
            _fail(
                "the local node agents run tools in a bubblewrap sandbox (--node-runner "
                f"sandbox, the default), and bwrap is not on PATH: install it with "
                f"`{INSTALL_HINT}`, or choose --node-runner inprocess (no isolation)"
            )
    executor = executor or prepared.loaded.flow.executor or "threads"
    engine = make_engine(use_cache=not no_cache, executor=executor, max_workers=workers)
    if engine.remote is not None:
        from flowfed.executors import ExecutorUnavailable

        try:  # connect (or start dask://local, ray://local) now: a bad address is one line
            engine.remote.start()
        except ExecutorUnavailable as exc:
            engine.db.close()
            _fail(str(exc))
    live = sys.stdout.isatty() and not as_json and not quiet
    try:
        with contextlib.ExitStack() as stack:
            if placed and layout is not None:
                engine.dispatcher = _start_nodes(
                    stack, layout, engine, simulate, node_runner, prepared, quiet or as_json
                )
            if live:
                from flowfed.cli.monitor import LiveMonitor

                with LiveMonitor(out, lambda: engine.view):
                    result = engine.run(
                        prepared.graph,
                        params=params,
                        flow_file=str(file),
                        principal=_local_principal(),
                    )
            else:
                result = engine.run(
                    prepared.graph, params=params, flow_file=str(file), principal=_local_principal()
                )
    finally:
        engine.db.close()
    if result.summary:
        result.summary["startup_s"] = round(result.view.started_at - _STARTED, 4)
        result.summary["mode"] = "simulate" if simulate else "nodes"
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        if not live and not quiet:
            from flowfed.cli.monitor import render

            out.print(render(result.view))
        _print_summary(result)
    # 130 is the shell's convention for "stopped by Ctrl-C".
    raise typer.Exit({"success": 0, "failed": 1, "cancelled": 130}[result.status])


def _layout_for(
    loaded: LoadedFlow,
    file: Path,
    nodes_file: Path | None,
    simulate: bool,
    params: dict[str, Any],
) -> Any:
    """The nodes layout of this run (``None`` if there is none), with its data prepared.

    ``loaded`` is the flow read from ``file``. A ``datasets`` entry ``*:NAME``
    (``--param 'datasets=*:breast'``) becomes every layout node that holds a dataset
    ``NAME``.
    """
    from flowfed.server.local_nodes import LayoutError, ensure_data, load_layout
    from flowfed.spec.diagnostics import Diagnostic, FlowError

    spec: str | dict[str, Any] | None = str(nodes_file) if nodes_file else loaded.flow.nodes
    if spec is None:
        if simulate:
            raise FlowError(
                [
                    Diagnostic(
                        "--simulate needs a nodes layout: --nodes FILE or the flow's `nodes:`",
                        str(file),
                        field="nodes",
                    )
                ]
            )
        return None
    try:
        layout = load_layout(spec, Path.cwd() if nodes_file else loaded.base_dir)
        ensure_data(layout)
    except LayoutError as exc:
        raise FlowError([Diagnostic(str(exc), str(file), field="nodes")]) from None
    datasets = params.get("datasets", loaded.flow.config.get("datasets"))
    if isinstance(datasets, str):
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    if isinstance(datasets, list) and any(str(d).startswith("*:") for d in datasets):
        expanded: list[str] = []
        for entry in datasets:
            entry = str(entry)
            if entry.startswith("*:"):
                name = entry[2:]
                expanded += [f"{n}:{name}" for n, ds in layout.nodes.items() if name in ds]
            else:
                expanded.append(entry)
        params["datasets"] = expanded
    return layout


def _start_nodes(
    stack: contextlib.ExitStack,
    layout: Any,
    engine: Any,
    simulate: bool,
    runner: str,
    prepared: Any,
    quiet: bool,
) -> Any:
    """The dispatcher for placed tasks: simulated nodes, or local agents (stopped by ``stack``)."""
    if simulate:
        from flowfed.engine.simulate import SimulatedNodes

        return SimulatedNodes(layout.nodes)
    from flowfed.api import home
    from flowfed.server.embedded import EmbeddedServerError
    from flowfed.server.local_nodes import LayoutError, LocalNodes

    # The nodes import what the flow imports (files by absolute path).
    base = prepared.loaded.base_dir
    imports = [
        str((base / e).resolve()) if e.endswith(".py") or "/" in e else e
        for e in prepared.loaded.flow.imports
    ]
    if not quiet:
        err.print(f"starting {len(layout.nodes)} local node agent(s): {', '.join(layout.nodes)}")
    nodes = LocalNodes(
        layout,
        engine.db.url,
        engine.store.url,
        home().resolve() / "nodes",
        runner=runner,
        imports=imports,
    )
    try:
        stack.enter_context(nodes)
    except (LayoutError, EmbeddedServerError) as exc:
        engine.db.close()
        _fail(str(exc))
    return nodes.dispatcher


def _run_remote(
    server: str, token: str | None, file: Path, params: dict[str, Any], as_json: bool, quiet: bool
) -> NoReturn:
    """Submit the flow to a server and follow it live to the end."""
    from flowfed.cli.remote import RemoteError, submit_run

    try:
        run_id = submit_run(server, token, file, params)
    except RemoteError as exc:
        _fail(str(exc))
    _watch_and_exit(server, token, run_id, as_json, quiet)


def _watch_and_exit(
    server: str, token: str | None, run_id: str, as_json: bool, quiet: bool
) -> NoReturn:
    from flowfed.cli.remote import EventTree, RemoteError, watch

    live = sys.stdout.isatty() and not as_json and not quiet
    tree = EventTree(run_id)
    try:
        if live:
            from flowfed.cli.monitor import LiveMonitor

            with LiveMonitor(out, lambda: tree.view):
                watch(server, token, run_id, tree=tree)
        else:
            watch(server, token, run_id, tree=tree)
    except RemoteError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print(f"stopped watching; run {run_id} goes on on the server")
        raise typer.Exit(130) from None
    status = tree.view.status
    if as_json:
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "status": status,
                    "error": tree.view.error,
                    "events": len(tree.seen),
                    "last_event_id": tree.last_id,
                }
            )
        )
    elif not live and not quiet:
        from flowfed.cli.monitor import render

        out.print(render(tree.view))
    if not as_json:
        colour = {"success": "green", "failed": "red", "cancelled": "magenta"}.get(status, "")
        out.print(f"[{colour}]{status}[/{colour}] run {run_id} on {server}")
    raise typer.Exit({"success": 0, "failed": 1, "cancelled": 130}.get(status, 1))


def _print_summary(result: Any) -> None:
    data = result.to_dict()
    tasks = [t for s in data["steps"] for t in s["tasks"]]
    cached = sum(1 for t in tasks if t["cached"])
    colour = {"success": "green", "failed": "red", "cancelled": "magenta"}[result.status]
    out.print(
        f"[{colour}]{result.status}[/{colour}] run {result.run_id} · {len(tasks)} tasks "
        f"({cached} cached) · {data['duration_s']:.2f}s"
    )
    for t in tasks:
        if t.get("error"):
            e = t["error"]
            # markup off: messages name artifacts like model.update[hospital-a:breast]
            out.print(
                f"  {e.get('context', {}).get('step', '?')}: {e['message']}",
                style="red",
                markup=False,
                soft_wrap=True,
            )
    _print_report(result.summary)
    if result.artifacts:
        # Point at an output of the flow's last productive step: the "result" a user wants.
        order = {name: i for i, name in enumerate(result.view.steps)}
        last = max(result.artifacts, key=lambda a: (order.get(a.get("step"), -1), a["name"]))
        out.print(
            f"  {len(result.artifacts)} artifacts; trace one with: "
            f"flowfed lineage {last['name']}:{last['version']}"
        )


def _print_warnings(warnings: list[Any]) -> None:
    """Build-time warnings (the flow runs; the user should know), one line each on stderr."""
    from rich.markup import escape

    for w in warnings:
        err.print(f"[yellow]warning[/yellow]: {escape(str(w))}", soft_wrap=True)


def _print_report(summary: dict[str, Any]) -> None:
    """Federated rounds and a per-site / pooled / centralized table, when the run has them."""
    if not summary:
        return
    if summary.get("rounds"):
        spr = summary.get("seconds_per_round")
        out.print(
            f"  federated: {summary['rounds']} rounds"
            + (f", {spr * 1000:.1f} ms per round" if spr else "")
            + (f" ({summary['mode']} mode)" if summary.get("mode") else "")
        )
    privacy = summary.get("privacy")
    if privacy:
        out.print(
            f"  differential privacy: ε = {privacy['epsilon']:.4g} at δ = {privacy['delta']:g} "
            f"({privacy['accountant']})"
        )
    for label, metrics in (summary.get("variants") or {}).items():
        out.print(f"  subvariant {label}:")
        _print_metrics(metrics)
    _print_metrics(summary.get("metrics"))
    model = summary.get("model")
    if model:
        out.print(f"  global model: artifact {model['id']} ({model['name']})")


def _print_metrics(metrics: Any) -> None:
    """Per-site, pooled and centralized accuracy and ROC AUC (a pool_metrics report)."""
    if not isinstance(metrics, dict) or "pooled" not in metrics:
        return

    def row(label: str, m: dict[str, Any]) -> str:
        auc = m.get("roc_auc")
        return (
            f"  {label:<24} {m.get('accuracy', float('nan')):>9.4f} "
            f"{'n/a' if auc is None else f'{auc:.4f}':>9} {m.get('rows', ''):>6}"
        )

    out.print(f"  {'':<24} {'accuracy':>9} {'ROC AUC':>9} {'rows':>6}")
    for site, m in (metrics.get("sites") or {}).items():
        out.print(row(site, m))
    out.print(row("pooled (federated)", metrics["pooled"]))
    if "centralized" in metrics:
        out.print(row("centralized reference", metrics["centralized"]))
        gap = metrics.get("gap", {}).get("accuracy")
        if gap is not None:
            out.print(f"  federated - centralized accuracy: {gap * 100:+.2f} points")


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Flow file to check.")],
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a flow without running it: exit 0 if valid, 2 with every problem otherwise."""
    from flowfed.api import prepare
    from flowfed.spec.diagnostics import FlowError

    try:
        prepared = prepare(file, imports=imports or [])
    except FlowError as exc:
        _flow_error(exc, as_json)
    g = prepared.graph
    if as_json:
        print(
            json.dumps(
                {
                    "valid": True,
                    "flow": g.flow.name,
                    "tasks": len(g.tasks),
                    "warnings": [str(w) for w in g.warnings],
                    "steps": [
                        {
                            "name": t.step,
                            "task": t.id,
                            "tool": t.tool.ref,
                            "node": t.node,
                            "after": list(t.deps),
                        }
                        for t in g.tasks.values()
                    ],
                }
            )
        )
        return
    _print_warnings(g.warnings)
    out.print(f"[green]valid[/green]: flow '{g.flow.name}' · {len(g.tasks)} tasks")
    for t in g.tasks.values():
        after = f" ← {', '.join(t.deps)}" if t.deps else ""
        routed = " (runs when routed to)" if t.routed else ""
        where = f" on {t.node}" if t.placed else ""
        rounds = (
            f" ({t.federated.settings.rounds} rounds on {len(t.federated.participants)} nodes)"
            if t.federated is not None
            else ""
        )
        out.print(f"  {t.id}: {t.tool.ref}{where}{rounds}{after}{routed}", markup=False)


# --- runs ----------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs."""
    rows = _db().list_runs(limit=limit)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table("run", "flow", "status", "started", "duration")
    for r in rows:
        dur = f"{r['ended_at'] - r['created_at']:.2f}s" if r.get("ended_at") else "—"
        table.add_row(r["id"][:12], r["flow_name"], r["status"], _ts(r["created_at"]), dur)
    out.print(table)


@runs_app.command("watch")
def runs_watch(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id on the server.")],
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live tree.")] = False,
) -> None:
    """Follow a run on a server live (needs --server / FLOWFED_SERVER)."""
    server = (ctx.obj or {}).get("server")
    if not server:
        _fail("`runs watch` follows a run on a server: pass --server URL or set FLOWFED_SERVER")
    _watch_and_exit(server, (ctx.obj or {}).get("token"), run_ref, as_json, quiet)


@runs_app.command("logs")
def runs_logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    step: Annotated[str | None, typer.Option("--step", help="Only this step's tasks.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the log lines the run's tools wrote (through ctx.log), in order."""
    db = _db()
    r = db.get_run(run_ref)
    if r is None:
        _fail(f"no run matches '{run_ref}' (see `flowfed runs list`)")
    tasks = [t for t in r["tasks"] if step is None or t["step"] == step]
    if step is not None and not tasks:
        steps = ", ".join(sorted({t["step"] for t in r["tasks"]})) or "none"
        _fail(f"run {r['id'][:12]} has no step '{step}' (steps: {steps})")
    lines = [
        {"step": t["step"], "task_id": t["id"], **line}
        for t in tasks
        for line in db.task_logs(t["id"])
    ]
    lines.sort(key=lambda x: (x["ts"], x["id"]))
    if as_json:
        print(json.dumps(lines, default=str))
        return
    for line in lines:
        out.print(
            f"{_ts(line['ts'], ms=True)} {line['step']} [{line['level']}] {line['message']}",
            markup=False,
            highlight=False,
        )


@runs_app.command("show")
def runs_show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a run with its tasks and their lifecycle transitions."""
    db = _db()
    r = db.get_run(run_ref)
    if r is None:
        _fail(f"no run matches '{run_ref}' (see `flowfed runs list`)", 2)
    for t in r["tasks"]:
        t["logs"] = db.task_logs(t["id"])
    if as_json:
        print(json.dumps(r, default=str))
        return
    out.print(f"[bold]{r['flow_name']}[/bold] run {r['id']} · {r['status']}")
    if r.get("error"):
        out.print(f"  [red]{r['error']}[/red]", soft_wrap=True)
    for t in r["tasks"]:
        flags = " (cached)" if t.get("cached") else ""
        out.print(
            f"  {t['step']}: {t['tool']}@{t['tool_version']} on {t['node']} — "
            f"{t['state']}{flags} · attempt {t['attempt']}"
        )
        for tr in t.get("transitions", []):
            detail = f" ({tr['detail']})" if tr.get("detail") else ""
            out.print(
                f"      {_ts(tr['at'], ms=True)} {tr['src']} → {tr['dst']}{detail}", markup=False
            )
        if t.get("error"):
            out.print(f"      [red]{t['error'].get('message')}[/red]", soft_wrap=True)
        for line in t["logs"]:
            out.print(
                f"      {_ts(line['ts'], ms=True)} [{line['level']}] {line['message']}",
                markup=False,
            )


def _ts(t: float | None, ms: bool = False) -> str:
    import datetime as dt

    if not t:
        return "—"
    fmt = "%Y-%m-%d %H:%M:%S.%f" if ms else "%Y-%m-%d %H:%M:%S"
    s = dt.datetime.fromtimestamp(t).strftime(fmt)
    return s[:-3] if ms else s


# --- artifacts and lineage -------------------------------------------------------------------


@artifacts_app.command("list")
def artifacts_list(
    name: Annotated[str | None, typer.Option(help="Only this artifact name.")] = None,
    run_ref: Annotated[str | None, typer.Option("--run", help="Only this run's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List artifacts in the catalog."""
    db = _db()
    run_id = None
    if run_ref:
        r = db.get_run(run_ref)
        if r is None:
            _fail(f"no run matches '{run_ref}'")
        run_id = r["id"]
    rows = db.list_artifacts(name=name, run_id=run_id)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table("id", "name", "version", "kind", "size", "hash", "step")
    for a in rows:
        table.add_row(
            a["id"][:12],
            a["name"],
            str(a["version"]),
            a["kind"],
            str(a["size"]),
            a["hash"][:12],
            a.get("step") or "",
        )
    out.print(table)


@artifacts_app.command("show")
def artifacts_show(
    ref: Annotated[str, typer.Argument(metavar="ART", help="id, id prefix, name or name:version")],
    as_json: JsonOpt = False,
) -> None:
    """Show an artifact's metadata, producer and parents."""
    a = _db().get_artifact(ref)
    if a is None:
        _fail(f"no artifact matches '{ref}' (see `flowfed artifacts list`)")
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


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(metavar="ART", help="id, id prefix, name or name:version")],
    as_json: JsonOpt = False,
) -> None:
    """Show where an artifact came from: a recursive tree back to its sources."""
    tree = _db().lineage(ref)
    if tree is None:
        _fail(f"no artifact matches '{ref}' (see `flowfed artifacts list`)")
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


# --- tools ------------------------------------------------------------------------------------


def _load_tools(imports: list[str] | None) -> Any:
    from flowfed.spec.diagnostics import FlowError
    from flowfed.tools import get_registry, import_tools

    problems = import_tools(imports or [], Path.cwd())
    if problems:
        _flow_error(FlowError(problems), False)
    return get_registry()


@tools_app.command("list")
def tools_list(imports: ImportOpt = None, as_json: JsonOpt = False) -> None:
    """List registered tools (load yours with --import)."""
    reg = _load_tools(imports)
    if as_json:
        print(json.dumps([t.describe() for t in reg], default=str))
        return
    from rich.table import Table

    table = Table("tool", "version", "type", "inputs", "outputs")
    for t in reg:
        table.add_row(
            t.name,
            t.version,
            str(t.type),
            ", ".join(t.inputs) or "—",
            ", ".join(t.output_names) or "—",
        )
    out.print(table)
    if not len(reg):
        out.print("no tools registered; load a tools file with --import tools.py")


@tools_app.command("show")
def tools_show(
    name: Annotated[str, typer.Argument(metavar="TOOL")],
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a tool: type, inputs, outputs and its config JSON Schema."""
    reg = _load_tools(imports)
    spec = reg.find(name)
    if spec is None:
        _fail(f"unknown tool '{name}'; registered: {', '.join(reg.names()) or 'none'}")
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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (Alembic) up to the newest schema."""
    from flowfed.api import default_database_url
    from flowfed.db import Database

    db = Database(default_database_url())
    db.upgrade()
    out.print(f"database at {db.url} is at revision {db.current_revision()}")


# --- server and its tokens ----------------------------------------------------------------------

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default: $FLOWFED_DATABASE_URL or .flowfed/flowfed.db).",
    ),
]


def _server_db(database_url: str | None) -> Any:
    """The database a server uses, which must already be at the current schema."""
    from flowfed.api import default_database_url
    from flowfed.db import Database, SchemaOutOfDate

    db = Database(database_url or default_database_url())
    try:
        db.ensure_schema(auto_upgrade=False)
    except SchemaOutOfDate as exc:
        db.close()
        _fail(f"{exc} (on {db!r})")
    except Exception as exc:  # unreachable server, bad credentials, missing driver
        db.close()
        _fail(f"cannot open database {db!r}: {type(exc).__name__}: {exc}")
    return db


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the token is for.")],
    role: Annotated[str, typer.Option("--role", help="admin or user.")] = "user",
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", help="Expire after D days (default: never)."),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user API token and print it (it is shown this once, never again)."""
    from flowfed.server.auth import create_token

    created = _on_server_db(database_url, create_token, name, role, expires_in_days)
    if as_json:
        print(
            json.dumps(
                {
                    "id": created.id,
                    "name": created.name,
                    "role": created.role,
                    "token": created.token,
                    "created_at": created.created_at,
                    "expires_at": created.expires_at,
                }
            )
        )
        return
    expiry = f"expires {_ts(created.expires_at)}" if created.expires_at else "never expires"
    err.print(f"token '{created.name}' ({created.role}, {expiry}); id {created.id}")
    err.print("store it now: it cannot be shown again")
    print(created.token)


@token_app.command("list")
def token_list(database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False) -> None:
    """List tokens (ids, names, roles, dates; never the secrets)."""
    from flowfed.server.auth import list_tokens

    _print_credentials(
        _on_server_db(database_url, list_tokens),
        as_json,
        {
            "id": "id",
            "name": "name",
            "role": "role",
            "created_at": "created",
            "expires_at": "expires",
            "revoked_at": "revoked",
            "last_used_at": "last used",
        },
    )


def _on_server_db(database_url: str | None, action: Any, *args: Any) -> Any:
    """Run ``action(db, *args)`` on the server's database, closing it afterwards.

    A ValueError (a bad role, scope or name) becomes a one-line error and exit code 2.
    """
    db = _server_db(database_url)
    try:
        return action(db, *args)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        db.close()


def _print_credentials(rows: list[dict[str, Any]], as_json: bool, columns: dict[str, str]) -> None:
    """Tokens or clients as JSON or a table (``*_at`` columns shown as dates)."""
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table(*columns.values())
    for r in rows:
        table.add_row(*(_ts(r[k]) if k.endswith("_at") else str(r[k]) for k in columns))
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Revoke a token: every request made with it is refused from now on."""
    from flowfed.server.auth import revoke_token

    if not _on_server_db(database_url, revoke_token, token_id):
        _fail(f"no token with id '{token_id}' (see `flowfed auth token list`)")
    out.print(f"token {token_id} revoked")


@client_app.command("create")
def client_create(
    name: Annotated[str, typer.Option("--name", help="The node or tool, e.g. hospital-a.")],
    role: Annotated[str, typer.Option("--role", help="node or tool.")],
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="node:<name> (a node; default node:<--name>) or task:<task id> (a tool); "
            "repeatable.",
        ),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an OAuth2 client and print its id and secret (the secret is shown once)."""
    from flowfed.server.oauth import create_client

    created = _on_server_db(database_url, create_client, name, role, scopes)
    if as_json:
        print(
            json.dumps(
                {
                    "client_id": created.client_id,
                    "client_secret": created.secret,
                    "name": created.name,
                    "role": created.role,
                    "scope": created.scope,
                    "created_at": created.created_at,
                }
            )
        )
        return
    err.print(f"client '{created.name}' ({created.role}, scope {created.scope})")
    err.print("store the secret now: it cannot be shown again")
    print(f"client_id:     {created.client_id}")
    print(f"client_secret: {created.secret}")


@client_app.command("list")
def client_list(database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False) -> None:
    """List OAuth2 clients (ids, names, roles, scopes, dates; never the secrets)."""
    from flowfed.server.oauth import list_clients

    _print_credentials(
        _on_server_db(database_url, list_clients),
        as_json,
        {
            "client_id": "client id",
            "name": "name",
            "role": "role",
            "scope": "scope",
            "created_at": "created",
            "revoked_at": "revoked",
            "last_used_at": "last token",
        },
    )


@client_app.command("revoke")
def client_revoke(
    client_id: Annotated[str, typer.Argument(metavar="ID", help="The client id (ffc_...).")],
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Revoke a client: no new tokens, and the tokens it holds stop working at once."""
    from flowfed.server.oauth import revoke_client

    if not _on_server_db(database_url, revoke_client, client_id):
        _fail(f"no client with id '{client_id}' (see `flowfed auth client list`)")
    out.print(f"client {client_id} revoked")


@app.command()
def server(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8000,
    database_url: DatabaseUrlOpt = None,
    artifacts_url: Annotated[
        str | None,
        typer.Option(
            "--artifacts-url", help="Artifact store URL (default: $FLOWFED_ARTIFACTS_URL)."
        ),
    ] = None,
    broker_url: Annotated[
        str,
        typer.Option(
            "--broker-url", help="Event bus: memory:// (default), redis://HOST or nats://HOST."
        ),
    ] = "memory://",
    imports: ImportOpt = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body accepted.")
    ] = 10 * 1024 * 1024,
    token_ttl: Annotated[
        int, typer.Option("--token-ttl", help="Lifetime of OAuth2 access tokens (seconds).")
    ] = 900,
    signing_key_file: Annotated[
        str | None,
        typer.Option(
            "--signing-key-file",
            help="File holding the access-token signing key (default: $FLOWFED_SIGNING_KEY, "
            "else a key kept in the database).",
        ),
    ] = None,
    ssl_certfile: Annotated[
        str | None,
        typer.Option("--ssl-certfile", help="TLS certificate chain (PEM): serve HTTPS and WSS."),
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM) of --ssl-certfile.")
    ] = None,
    trigger_interval: Annotated[
        float,
        typer.Option(
            "--trigger-interval", help="Seconds between trigger passes (0: no trigger service)."
        ),
    ] = 5.0,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where runs call tools: threads (default), processes, dask://HOST:PORT, "
            "ray://HOST:PORT, dask://local or ray://local (docs/executors.md).",
        ),
    ] = "threads",
) -> None:
    """Serve the REST and WebSocket API (one process, uvicorn)."""
    import socket

    import uvicorn

    from flowfed.server.app import StartupError, check_startup, create_app
    from flowfed.server.settings import ServerSettings

    settings = ServerSettings(
        host=host,
        port=port,
        database_url=database_url,
        artifacts_url=artifacts_url,
        broker_url=broker_url,
        imports=list(imports or []),
        max_body_bytes=max_body_bytes,
        token_ttl=token_ttl,
        signing_key_file=signing_key_file,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        trigger_interval=trigger_interval,
        executor=executor,
    )
    from flowfed.api import _known_executor

    if not _known_executor(executor):
        _fail(f"--executor: unknown executor {executor!r} (see docs/executors.md)")
    try:
        check_startup(settings).close()
    except StartupError as exc:
        _fail(str(exc))
    # Bind here rather than in uvicorn: a taken port is then one clear error, and with
    # --port 0 the address actually bound can be printed for whoever started us.
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    scheme = "https" if ssl_certfile else "http"
    print(f"flowfed server listening on {scheme}://{shown}:{bound_port}", flush=True)
    config = uvicorn.Config(
        create_app(settings),
        log_level="info",
        lifespan="on",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    srv = uvicorn.Server(config)
    srv.run(sockets=[sock])
    if not srv.started:
        _fail("the server did not start (see the log above)")


# Data nodes: `flowfed node start`, `flowfed nodes add|list|remove` (cli/nodes.py).
from flowfed.cli.nodes import node_app, nodes_app  # noqa: E402

app.add_typer(node_app, name="node")
app.add_typer(nodes_app, name="nodes")


def main() -> None:
    """Console entry point: run the app, turning unexpected errors into one paragraph."""
    # Start-up leaves ~60k long-lived objects (modules, pydantic schemas, SQLAlchemy tables):
    # freezing them keeps the collector from rescanning them during the run and at exit,
    # which costs a short command a noticeable share of its time. Everything that holds a
    # resource (database, writer threads) is closed explicitly before exit.
    gc.freeze()
    atexit.register(gc.freeze)
    try:
        app()
    except LookupError as exc:  # e.g. an id prefix that matches several runs or artifacts
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("FLOWFED_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        err.print("(set FLOWFED_DEBUG=1 for the traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()


def _local_principal() -> str:
    """Who runs a flow from this terminal, as a node's policy sees it: ``local:<user>``."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "local:unknown"
