"""``flowfed run FILE``: a flow here, or on ``--server``.

Locally a run goes through the engine (with local node agents or ``--simulate`` for placed
steps); with a server the flow's text is submitted and the run followed live over its
event stream.

Example:
    >>> # flowfed run flow.yaml --param epochs=20
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from flowfed.cli.common import (
    STARTED,
    ImportOpt,
    JsonOpt,
    err,
    fail,
    flow_error,
    imported_by,
    out,
    print_warnings,
    remote,
)
from flowfed.cli.report import print_report
from flowfed.wording import plural

if TYPE_CHECKING:
    from flowfed.spec.loader import LoadedFlow

run_app = typer.Typer()


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
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Go on with run RUN_ID of this flow, interrupted (its process killed): "
            "finished tasks stay finished, a federated step goes on after its last "
            "checkpointed round (docs/federated.md, Checkpointed rounds).",
        ),
    ] = None,
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
            "--resume": resume is not None,
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
            flow_error(exc, as_json)
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
            flow_error(exc, as_json)
        flow_error(exc, as_json, imported_by(loaded, imports), loaded.flow)
    print_warnings(prepared.graph.warnings)
    placed = any(t.placed or t.federated is not None for t in prepared.graph.tasks.values())
    if placed and layout is None:
        fail(
            f"{file}: this flow places steps on data nodes: give the nodes layout "
            "(--nodes FILE or the flow's `nodes:`), or run it on a server its nodes connect "
            "to (flowfed --server URL run ...)"
        )
    if resume is not None and simulate and placed:
        fail(
            "--resume: simulated nodes keep their artifacts in this process's memory, and "
            "those of the interrupted run died with its process; resume runs on node agents "
            "(without --simulate), or run the flow again"
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
    resumed = _resumable(engine, resume, file) if resume is not None else None
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
                        run_id=resumed,
                        resume=resumed is not None,
                    )
            else:
                result = engine.run(
                    prepared.graph,
                    params=params,
                    flow_file=str(file),
                    principal=_local_principal(),
                    run_id=resumed,
                    resume=resumed is not None,
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


def _resumable(engine: Any, ref: str, file: Path) -> str:
    """The full id of run ``ref`` if it can be resumed here; otherwise exit saying why."""
    row = engine.db.get_run(ref)
    if row is None:
        engine.db.close()
        fail(f"--resume: no run '{ref}' in this catalog ({engine.db.url})")
    if row.get("status") != "running":
        engine.db.close()
        fail(
            f"--resume: run {row['id']} ended ({row.get('status')}); only a run whose "
            "process stopped while it was running can be resumed"
        )
    return str(row["id"])


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
    # Only a flow with nodes loads the node layout code (and with it flowfed.server).
    from flowfed.server.local_nodes import LayoutError, ensure_data, load_layout

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
        from flowfed.api import home as home_dir
        from flowfed.engine.simulate import SimulatedNodes

        return SimulatedNodes(layout.nodes, state_dir=home_dir() / "simulated-nodes")
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
    print_report(result.summary)
    if result.artifacts:
        # Point at an output of the flow's last productive step: the "result" a user wants.
        order = {name: i for i, name in enumerate(result.view.steps)}
        last = max(result.artifacts, key=lambda a: (order.get(a.get("step"), -1), a["name"]))
        out.print(
            f"  {plural(len(result.artifacts), 'artifact')}; trace one with: "
            f"flowfed lineage {last['name']}:{last['version']}"
        )


def _local_principal() -> str:
    """Who runs a flow from this terminal, as a node's policy sees it: ``local:<user>``."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "local:unknown"
