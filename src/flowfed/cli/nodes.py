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

from flowfed.cli.common import api, err, fail, local_only, on_server_db, out, quote, remote
from flowfed.wording import plural

node_app = typer.Typer(help="Run a node agent next to a site's data.", no_args_is_help=True)
nodes_app = typer.Typer(
    help="Manage data nodes: credentials (add, remove) and their state (list).",
    no_args_is_help=True,
)


@node_app.command("start")
def node_start(
    ctx: typer.Context,
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
        str,
        typer.Option(
            "--runner",
            help="sandbox (bubblewrap; the default), or inprocess / subprocess, which "
            "isolate nothing and need --insecure.",
        ),
    ] = "sandbox",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow --runner inprocess or subprocess: tools then see the whole host "
            "(development only).",
        ),
    ] = False,
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
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="The node's policy (YAML, docs/node-policy.md); the strict default if unset.",
        ),
    ] = None,
) -> None:
    """Start a node agent: register the datasets, then run the tasks the server places here.

    The node's policy (``--policy``, else the strict default) decides what runs here and
    what leaves: see docs/node-policy.md.
    """
    from flowfed.node.agent import NodeAgent, NodeConfig, NodeSetupError, load_credentials
    from flowfed.tools.loading import import_tools

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _check_runner(runner, insecure)
    try:
        creds = load_credentials(credentials)
        if creds["name"] != name:
            raise NodeSetupError(
                f"{credentials} holds the credentials of node '{creds['name']}', not '{name}'"
            )
        given = remote(ctx)
        url = server or (given.url if given else None) or creds.get("server")
        if not url:
            raise NodeSetupError(f"no --server given and {credentials} names none")
        from flowfed.node.agent import parse_dataset_option

        datasets: dict[str, Path] = {}
        for text in dataset or []:
            ds_name, path = parse_dataset_option(text)
            if ds_name in datasets:
                raise NodeSetupError(f"--dataset {ds_name} is given twice")
            datasets[ds_name] = path
        from flowfed.node.policy import PolicyError, load_policy
        from flowfed.node.runners import SandboxLimits

        try:
            policy = load_policy(policy_file)
        except PolicyError as exc:
            raise NodeSetupError(f"--policy: {exc}") from None
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
                policy=policy,
                limits=SandboxLimits(
                    memory_mb=policy.limits.memory_mb,
                    processes=policy.limits.processes,
                    cpu_seconds=policy.limits.cpu_seconds,
                ),
            )
        )
    except NodeSetupError as exc:
        fail(str(exc))
    raise typer.Exit(agent.run())


def _check_runner(runner: str, insecure: bool) -> None:
    """Refuse to start without isolation unless the operator said so (exit 2).

    The sandbox needs bubblewrap; ``inprocess`` and ``subprocess`` show tools the whole
    host (the node's credentials, every dataset) and need ``--insecure``, which is then
    logged loudly.
    """
    from flowfed.node.runners import INSECURE_RUNNERS, INSTALL_HINT, bwrap_path

    if runner == "sandbox" and bwrap_path() is None:
        fail(
            "the node runs tools in a bubblewrap sandbox (--runner sandbox, the default), "
            f"and bwrap is not on PATH: install it with `{INSTALL_HINT}`. To run tools "
            "without any isolation (development only): --runner inprocess --insecure"
        )
    if runner in INSECURE_RUNNERS:
        if not insecure:
            fail(
                f"--runner {runner} runs tools without isolation: they can read the node's "
                "credentials and every dataset. Pass --insecure as well to accept that "
                "(development only), or use the default --runner sandbox"
            )
        logging.getLogger("flowfed.node").warning(
            "INSECURE: --runner %s --insecure: tools run without isolation and can read "
            "this node's credentials, datasets and store; never use this with real data",
            runner,
        )


def _refuse_database_url(ctx: typer.Context, database_url: str | None) -> bool:
    """Whether to go through the server: given one, ``--database-url`` is an error."""
    given = remote(ctx)
    if given is not None and database_url:
        fail(
            f"give either --server ({given.url}: the node is registered through its API, "
            "with an admin token) or --database-url (written directly), not both"
        )
    return given is not None


@nodes_app.command("add")
def nodes_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The node's name, e.g. hospital-a.")],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the credentials JSON here (mode 600) too."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Server URL to put in the credentials (default: the global --server).",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The server's database (default as `flowfed server`)."),
    ] = None,
) -> None:
    """Register a node and print its credentials (shown this once; only a hash is stored).

    With the global --server the server registers it (an admin token); otherwise it is
    written to the database (--database-url).
    """
    given = remote(ctx)
    if _refuse_database_url(ctx, database_url):
        assert given is not None
        created = api(given, "POST", "/nodes", body={"name": name})
        creds: dict[str, Any] = {"name": created["name"], "token": created["token"]}
        server = server or given.url
    else:
        from flowfed.server.nodes import add_node

        made = on_server_db(database_url, add_node, name)
        creds = {"name": made.name, "token": made.token}
    if server:
        creds["server"] = server
    text = json.dumps(creds, indent=2)
    if out_file is not None:
        try:
            fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as exc:
            fail(f"cannot write {out_file}: {exc.strerror or exc}")
        err.print(f"credentials of node '{name}' written to {out_file}")
    err.print("store them now: the token cannot be shown again")
    print(text)


@nodes_app.command("list")
def nodes_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Nodes online/offline, their datasets and running tasks (from --server)."""

    server = remote(ctx)
    if server is None:
        fail("flowfed nodes list asks a server: give --server URL (and --token)")
    items = api(server, "GET", "/nodes", timeout=30)["items"]
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
        ds = ", ".join(
            f"{d['name']} ({plural(d['rows'], 'row')}, {d['hash'][:12]})" for d in n["datasets"]
        )
        table.add_row(
            n["name"], "online" if n["online"] else "offline", seen, str(n["running"]), ds or "—"
        )
    out.print(table)


@nodes_app.command("remove")
def nodes_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The node to remove.")],
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The server's database (default as `flowfed server`)."),
    ] = None,
) -> None:
    """Remove a node: its token stops working for new connections."""
    given = remote(ctx)
    if _refuse_database_url(ctx, database_url):
        assert given is not None
        api(given, "DELETE", f"/nodes/{quote(name)}")
    else:
        from flowfed.server.nodes import remove_node

        if not on_server_db(database_url, remove_node, name):
            fail(f"no node named '{name}' (see `flowfed nodes list`)")
    out.print(f"node '{name}' removed")


# -- the node's own journal (audit log, logs, errors, approvals): read where it lives --------

_WORK_DIR_HELP = "The node's --work-dir, as given to `flowfed node start`."
_WORK_DIR = Path(".flowfed-node")


def _journal(ctx: typer.Context, work_dir: Path) -> Any:
    """The NodeJournal of an existing work dir; a missing one is an error, never created."""
    from flowfed.node.journal import NodeJournal

    local_only(
        ctx,
        f"node {ctx.info_name}",
        "it reads the node's own journal (--work-dir) on the node's machine, which the "
        "server never holds. Leave --server out (unset FLOWFED_SERVER if it is set)",
    )
    if not work_dir.is_dir():
        fail(
            f"no node work directory at {work_dir} (give --work-dir, the one "
            "`flowfed node start` uses)"
        )
    return NodeJournal(work_dir)


def _when(ts: Any) -> str:
    # ISO-8601 UTC as the journal writes it, cut to the second for a table.
    return str(ts or "")[:19].replace("T", " ")


def _audit_summary(event: dict[str, Any]) -> str:
    """One line per audit event for the table; --json shows everything."""
    kind = event.get("kind")
    get = event.get
    if kind in ("task.admitted", "task.refused"):
        text = f"{get('tool')}@{get('tool_version')} by {get('principal')} (flow {get('flow')})"
        if kind == "task.refused":
            text += f" refused, rule {get('rule')}: {get('reason')}"
        return text
    if kind == "egress.released":
        return (
            f"{get('output')} ({get('output_kind') or get('category') or ''} {get('size')} B, "
            f"{get('rows')} rows) {str(get('hash'))[:12]}"
        ).replace("( ", "(")
    if kind == "egress.refused":
        return f"{get('output')} refused, rule {get('rule')}: {get('reason')}"
    if kind == "task.finished":
        outputs = get("outputs") or {}
        return f"{plural(len(outputs), 'output')}: " + ", ".join(sorted(outputs))
    if kind == "task.failed":
        return f"{get('type')} (error {get('error_id')})"
    if kind == "approval.requested":
        return f"{get('for')} {get('key')} waits ({get('request_id')})"
    if kind == "approval.granted":
        return f"{get('for')} {get('key')} approved by {get('by')} ({get('request_id')})"
    if kind == "node.started":
        return f"node {get('node')}, policy {str(get('policy'))[:12]}, runner {get('runner')}"
    rest = {k: v for k, v in event.items() if k not in ("kind", "task_id", "run_id")}
    return json.dumps(rest, default=str)[:200]


@node_app.command("audit")
def node_audit(
    ctx: typer.Context,
    work_dir: Annotated[Path, typer.Option("--work-dir", help=_WORK_DIR_HELP)] = _WORK_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain (exit 1 if it is broken).")
    ] = False,
    task: Annotated[
        str | None, typer.Option("--task", help="Only the entries of this task id.")
    ] = None,
) -> None:
    """The node's audit log: what ran, what left and what was refused (hash-chained)."""
    from rich.table import Table
    from rich.text import Text

    journal = _journal(ctx, work_dir)
    if verify:
        problems = journal.verify()
        count = len(journal.entries())
        seq, head = journal.head()
        if as_json:
            print(json.dumps({"ok": not problems, "entries": count, "head": head,
                              "problems": problems}))  # fmt: skip
        elif problems:
            for problem in problems:
                print(f"{journal.audit_path}: {problem}")
            print(
                f"audit chain BROKEN: {plural(len(problems), 'problem')} in "
                f"{plural(count, 'entry', 'entries')}"
            )
        elif count == 0:
            print("no audit entries")
        else:
            print(
                f"audit chain intact: {plural(count, 'entry', 'entries')} (head seq {seq}, {head})"
            )
        raise typer.Exit(1 if problems else 0)
    entries = journal.entries()
    if task is not None:
        entries = [
            e
            for e in entries
            if task in (e["event"].get("task_id"), (e["event"].get("details") or {}).get("task_id"))
        ]
    if as_json:
        for entry in entries:
            print(json.dumps(entry))
        return
    if not entries:
        print("no audit entries" + (f" for task {task}" if task else ""))
        return
    table = Table("seq", "time (UTC)", "kind", "task", "summary")
    for e in entries:
        ev = e["event"]
        task_id = ev.get("task_id") or (ev.get("details") or {}).get("task_id") or ""
        table.add_row(
            str(e["seq"]),
            _when(e["ts"]),
            Text(str(ev.get("kind"))),
            Text(str(task_id)[:12]),
            Text(_audit_summary(ev)),
        )
    out.print(table)


@node_app.command("logs")
def node_logs(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id.")],
    work_dir: Annotated[Path, typer.Option("--work-dir", help=_WORK_DIR_HELP)] = _WORK_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The logs a task wrote on this node (they stay here unless the policy shares them)."""
    from flowfed.node.journal import JournalError

    journal = _journal(ctx, work_dir)
    try:
        if not journal.has_logs(task_id):
            fail(f"no logs of task {task_id} in {journal.logs_dir}")
        lines = journal.logs(task_id)
    except JournalError as exc:
        fail(str(exc))
    for line in lines:
        if as_json:
            print(json.dumps(line))
        else:
            print(
                f"{_when(line.get('ts'))} {str(line.get('level')).upper():7} {line.get('message')}"
            )


@node_app.command("errors")
def node_errors(
    ctx: typer.Context,
    error_id: Annotated[
        str | None,
        typer.Argument(metavar="ERROR_ID", help="Show this error in full (err-...)."),
    ] = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help=_WORK_DIR_HELP)] = _WORK_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The errors kept on this node, or one in full with its traceback."""
    from rich.table import Table
    from rich.text import Text

    journal = _journal(ctx, work_dir)
    if error_id is not None:
        report = journal.get_error(error_id)
        if report is None:
            fail(f"no error {error_id} in {journal.errors_path} (see `flowfed node errors`)")
        if as_json:
            print(json.dumps(report))
            return
        print(f"error {report['id']} at {report.get('ts')}, task {report.get('task_id')}")
        print(f"{report.get('type')}: {report.get('message')}")
        for key, value in (report.get("context") or {}).items():
            print(f"  {key}: {value}")
        if report.get("traceback"):
            print(str(report["traceback"]).rstrip())
        return
    summaries = journal.errors()
    if as_json:
        for summary in summaries:
            print(json.dumps(summary))
        return
    if not summaries:
        print("no errors kept on this node")
        return
    table = Table("time (UTC)", "task", "type", "message")
    table.add_column("id", no_wrap=True, min_width=16)
    for s in summaries:
        table.add_row(
            _when(s["ts"]),
            Text(str(s["task_id"])[:12]),
            Text(str(s["type"])),
            Text(str(s["message"])),
            str(s["id"]),
        )
    out.print(table)


@node_app.command("approvals")
def node_approvals(
    ctx: typer.Context,
    work_dir: Annotated[Path, typer.Option("--work-dir", help=_WORK_DIR_HELP)] = _WORK_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Approval requests of new tools and users: pending and granted."""
    from rich.table import Table
    from rich.text import Text

    from flowfed.node.journal import JournalError

    journal = _journal(ctx, work_dir)
    try:
        pending, approved = journal.pending(), journal.approved()
    except JournalError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"pending": pending, "approved": approved}))
        return
    if not pending and not approved:
        print("no approval requests")
        return
    # The id is what the operator copies into `node approve`: never cut or wrapped.
    table = Table("status", "kind", "key", "asked by")
    table.add_column("id", no_wrap=True, min_width=16)
    for r in [*pending, *approved]:
        details = r.get("details") or {}
        asked = ", ".join(str(details[k]) for k in ("principal", "flow") if details.get(k))
        status = str(r["status"]) + (f" by {r['by']}" if r.get("by") else "")
        table.add_row(
            Text(status),
            str(r["kind"]),
            Text(str(r["key"]), overflow="fold"),
            Text(asked),
            str(r["id"]),
        )
    out.print(table)
    if pending:
        print(f"{len(pending)} pending: `flowfed node approve ID` (or --all)")


@node_app.command("approve")
def node_approve(
    ctx: typer.Context,
    request: Annotated[
        str | None,
        typer.Argument(metavar="ID_OR_KEY", help="The request id (apr-...) or its key."),
    ] = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help=_WORK_DIR_HELP)] = _WORK_DIR,
    approve_all: Annotated[
        bool, typer.Option("--all", help="Approve every pending request.")
    ] = False,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who approves, for the audit log (default: your user name)."),
    ] = None,
) -> None:
    """Approve a waiting tool or user; the node's waiting tasks go on at once."""
    from flowfed.node.journal import JournalError

    if (request is None) == (not approve_all):
        fail("give one request id or key, or --all (not both)")
    journal = _journal(ctx, work_dir)
    if by is None:
        import getpass

        try:
            by = getpass.getuser()
        except (KeyError, OSError):  # no user name in a bare container
            by = "operator"
    try:
        done = journal.approve_all(by=by) if request is None else [journal.approve(request, by=by)]
    except JournalError as exc:
        fail(str(exc))
    if approve_all and not done:
        print("nothing pending")
    for r in done:
        print(f"approved {r['kind']} {r['key']} ({r['id']}) by {r['by']}")
