"""``flowfed run FILE`` and ``flowfed validate FILE``: a flow here, or on ``--server``.

Locally a run goes through the engine (with local node agents or ``--simulate`` for placed
steps); with a server the flow's text is submitted and the run followed live over its
event stream. ``validate`` checks a flow against the local tools, or the server's.

Example:
    >>> # flowfed run flow.yaml --param epochs=20
    >>> # flowfed --server http://127.0.0.1:8000 validate flow.yaml
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from flowfed.cli.common import STARTED, ImportOpt, JsonOpt, err, fail, out, remote
from flowfed.wording import plural

if TYPE_CHECKING:
    from flowfed.spec.loader import LoadedFlow

run_app = typer.Typer()
validate_app = typer.Typer()


def _flow_error(
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


def _imported(loaded: Any, imports: list[str] | None) -> list[str]:
    return [*(imports or []), *(loaded.flow.imports if loaded is not None else [])]


@run_app.command()
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
    task_timeout: Annotated[
        float | None,
        typer.Option(
            "--task-timeout",
            min=0.001,
            help="Default task timeout in seconds for steps without a `timeout:` of their "
            "own (the flow's `config: {task_timeout: S}` comes first). Default: none.",
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
    from flowfed.api import parse_param_overrides
    from flowfed.spec.diagnostics import FlowError

    server = remote(ctx)
    if server is not None:
        # The server runs with its own executor, tools and nodes: an option that would
        # change them here is refused rather than silently dropped.
        local_options = {
            "--import": bool(imports),
            "--executor": executor is not None,
            "--workers": workers is not None,
            "--simulate": simulate,
            "--nodes": nodes_file is not None,
            "--node-runner": node_runner != "sandbox",
            "--task-timeout": task_timeout is not None,
        }
        given = [name for name, used in local_options.items() if used]
        if given:
            fail(
                f"{', '.join(given)} only apply to a local run; the server {server.url} runs "
                "flows with its own executor, tools (flowfed server --import) and nodes. "
                "Leave them out, or run locally without --server"
            )
        try:
            params = parse_param_overrides(param or [])
        except FlowError as exc:
            _flow_error(exc, as_json)
        _run_remote(server, file, params, not no_cache, as_json, quiet)
    from flowfed.api import make_engine, prepare

    if executor is not None:
        from flowfed.api import _known_executor

        if not _known_executor(executor):
            fail(
                "--executor must be threads, processes, subprocess, sandbox, container, "
                "dask://local, "
                f"dask://HOST:PORT, ray://local or ray://HOST:PORT; got {executor!r}"
            )
    loaded = None
    try:
        params = parse_param_overrides(param or [])
        from flowfed.spec import load_flow

        # Read once: the layout and the plan both need it (a 10,000-step file is ~0.6 s).
        loaded = load_flow(file)
        layout = _layout_for(loaded, file, nodes_file, simulate, params)
        prepared = prepare(loaded, params=params, imports=imports or [])
    except FlowError as exc:
        if loaded is None:
            _flow_error(exc, as_json)
        _flow_error(exc, as_json, _imported(loaded, imports), loaded.flow)
    _print_warnings(prepared.graph.warnings)
    placed = any(t.placed or t.federated is not None for t in prepared.graph.tasks.values())
    if placed and layout is None:
        fail(
            f"{file}: this flow places steps on data nodes: give the nodes layout "
            "(--nodes FILE or the flow's `nodes:`), or run it on a server its nodes connect "
            "to (flowfed --server URL run ...)"
        )
    if node_runner not in ("inprocess", "subprocess", "sandbox"):
        fail(f"--node-runner must be inprocess, subprocess or sandbox; got {node_runner!r}")
    if placed and layout is not None and not simulate and node_runner == "sandbox":
        from flowfed.node.runners import INSTALL_HINT, bwrap_path

        if bwrap_path() is None:
            fail(
                "the local node agents run tools in a bubblewrap sandbox (--node-runner "
                f"sandbox, the default), and bwrap is not on PATH: install it with "
                f"`{INSTALL_HINT}`, or choose --node-runner inprocess (no isolation)"
            )
    executor = executor or prepared.loaded.flow.executor or "threads"
    engine = make_engine(
        use_cache=not no_cache,
        executor=executor,
        max_workers=workers,
        task_timeout=task_timeout,
    )
    # A cluster executor (Dask, Ray) connects, or starts dask://local and ray://local, on
    # the first call the run makes: a fully cached run starts none.
    live = sys.stdout.isatty() and not as_json and not quiet
    try:
        with contextlib.ExitStack() as stack:
            if placed and layout is not None:
                engine.dispatcher = _start_nodes(
                    stack, layout, engine, simulate, node_runner, prepared, quiet or as_json
                )
            if live:
                from flowfed.cli.monitor import LiveMonitor

                with LiveMonitor(out.console(), lambda: engine.view):
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
    if engine.unavailable is not None:
        # The run is recorded as failed; the user gets the one line that says why.
        fail(engine.unavailable)
    if result.summary:
        result.summary["startup_s"] = round(result.view.started_at - STARTED, 4)
        result.summary["mode"] = "simulate" if simulate else "nodes"
    cluster = engine.remote
    if cluster is not None:
        result.summary["executor"] = {
            "url": executor,
            "cluster_started": cluster.started,
        }
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
        err.print(
            f"starting {plural(len(layout.nodes), 'local node agent')}: {', '.join(layout.nodes)}"
        )
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
        fail(str(exc))
    return nodes.dispatcher


def _run_remote(
    server: Any, file: Path, params: dict[str, Any], cache: bool, as_json: bool, quiet: bool
) -> NoReturn:
    """Submit the flow to a server and follow it live to the end."""
    from flowfed.cli.remote import RemoteError, submit_run, watch_and_exit

    try:
        run_id = submit_run(server.url, server.token, file, params, cache=cache)
    except RemoteError as exc:
        fail(str(exc))
    watch_and_exit(server, run_id, as_json, quiet)


def _print_summary(result: Any) -> None:
    data = result.to_dict()
    tasks = [t for s in data["steps"] for t in s["tasks"]]
    cached = sum(1 for t in tasks if t["cached"])
    colour = {"success": "green", "failed": "red", "cancelled": "magenta"}[result.status]
    out.print(
        f"[{colour}]{result.status}[/{colour}] run {result.run_id} · {plural(len(tasks), 'task')} "
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
            f"  {plural(len(result.artifacts), 'artifact')}; trace one with: "
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
            f"  federated: {plural(summary['rounds'], 'round')}"
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


@validate_app.command()
def validate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Flow file to check.")],
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a flow without running it: exit 0 if valid, 2 with every problem otherwise.

    With --server, the server checks it against its own tools.
    """
    from flowfed.api import prepare
    from flowfed.spec import load_flow
    from flowfed.spec.diagnostics import FlowError

    server = remote(ctx)
    if server is not None:
        if imports:
            fail(
                f"--import only applies locally: the server {server.url} checks flows "
                "against the tools it was started with (flowfed server --import)"
            )
        _validate_remote(server, file, as_json)
    loaded = None
    try:
        loaded = load_flow(file)
        prepared = prepare(loaded, imports=imports or [])
    except FlowError as exc:
        if loaded is None:
            _flow_error(exc, as_json)
        _flow_error(exc, as_json, _imported(loaded, imports), loaded.flow)
    g = prepared.graph
    types = g.step_types()
    if as_json:
        print(
            json.dumps(
                {
                    "valid": True,
                    "flow": g.flow.name,
                    "tasks": len(g.tasks),
                    "warnings": [w.to_dict() for w in g.warnings],
                    "steps": [
                        {
                            "name": t.step,
                            "task": t.id,
                            "label": t.label,
                            "tool": t.tool.ref,
                            "node": t.node,
                            "after": list(t.deps),
                            **({"type": types[t.step]} if t.step in types else {}),
                        }
                        for t in g.tasks.values()
                    ],
                }
            )
        )
        return
    out.print(f"[green]valid[/green]: flow '{g.flow.name}' · {plural(len(g.tasks), 'task')}")
    _print_warnings(g.warnings)
    # Grouped under the steps as written when a step holds several tools or says its type:
    # the tasks of seed 000's "Data Preprocessing" read as that one step.
    grouped = bool(types) or any(t.part for t in g.tasks.values())
    by_step: dict[str, list[Any]] = {}
    for t in g.tasks.values():
        by_step.setdefault(t.step, []).append(t)
    for step in g.step_names() if grouped else [None]:
        tasks = by_step.get(step, []) if step is not None else list(g.tasks.values())
        indent = "  "
        if step is not None:
            kind = f" ({types[step]})" if step in types else ""
            out.print(f"  Step: {step}{kind}", markup=False)
            indent = "    "
        for t in tasks:
            _print_planned(t, indent)


def _print_planned(t: Any, indent: str) -> None:
    """One planned task of ``flowfed validate``: its id, tool, placement, edges, label."""
    after = f" ← {', '.join(t.deps)}" if t.deps else ""
    routed = " (runs when routed to)" if t.routed else ""
    where = f" on {t.node}" if t.placed else ""
    fed = t.federated
    rounds = (
        f" ({plural(fed.settings.rounds, 'round')} on {plural(len(fed.participants), 'node')})"
        if fed is not None
        else ""
    )
    label = f" · {t.label}" if t.label else ""
    out.print(f"{indent}{t.id}: {t.tool.ref}{where}{rounds}{after}{routed}{label}", markup=False)


def _local_principal() -> str:
    """Who runs a flow from this terminal, as a node's policy sees it: ``local:<user>``."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "local:unknown"


def _validate_remote(server: Any, file: Path, as_json: bool) -> NoReturn:
    """``POST /api/v1/flows/validate`` with the file's text; exit 0 if valid, else 2."""
    import httpx

    from flowfed.cli.common import problem_text

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        resp = httpx.post(
            f"{server.url}/api/v1/flows/validate",
            json={"source": text},
            headers=server.headers,
            timeout=60,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {server.url}: {exc or type(exc).__name__}")
    body = resp.json() if resp.headers.get("content-type", "").endswith("json") else {}
    if resp.status_code == 422 and body.get("errors"):
        # The server's diagnostics name request.yaml: point them at the file instead.
        errors = [{**e, "file": str(file)} if e.get("file") else e for e in body["errors"]]
        if as_json:
            print(json.dumps({"valid": False, "errors": errors}))
        else:
            err.print(f"[red]invalid flow[/red]: {plural(len(errors), 'problem')}")
            for e in errors:
                where = f"{e['file']}:{e['line']}: " if e.get("line") else ""
                subject = ", ".join(
                    f"{k} '{e[k]}'" for k in ("step", "field") if e.get(k) is not None
                )
                hint = f" ({e['hint']})" if e.get("hint") else ""
                err.print(
                    f"  {where}{subject + ': ' if subject else ''}{e['message']}{hint}",
                    soft_wrap=True,
                    markup=False,
                )
        raise typer.Exit(2)
    if resp.status_code >= 400:
        fail(problem_text(resp).replace("\n", "; "))
    if as_json:
        print(json.dumps(body))
    else:
        out.print(
            f"[green]valid[/green] on {server.url}: flow '{body['flow']}' · "
            f"{plural(len(body['tasks']), 'task')}"
        )
        for t in body["tasks"]:
            after = f" ← {', '.join(t['after'])}" if t.get("after") else ""
            out.print(f"  {t['step']}: {t['tool']}{after}", markup=False)
    raise typer.Exit(0)
