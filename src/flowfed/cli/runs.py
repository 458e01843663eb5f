"""``flowfed runs list|show|logs|watch|cancel``: runs of the local catalog or of ``--server``.

Without a server the commands read the local catalog (``.flowfed/`` or
``$FLOWFED_DATABASE_URL``); with one (``--server``/``$FLOWFED_SERVER``) they call its
``/api/v1/runs`` and ``/api/v1/tasks`` routes and never touch a local catalog.

Example:
    >>> # flowfed runs list --limit 5
    >>> # flowfed --server http://127.0.0.1:8000 --token ffu_... runs cancel 3f2a9c1e
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from flowfed.cli.common import JsonOpt, Remote, api, fail, local_db, out, quote, remote, ts
from flowfed.cli.figures import duration_text, resources_text, waiting_text

runs_app = typer.Typer(help="Inspect, follow and cancel runs.", no_args_is_help=True)


def _get_run(server: Remote | None, ref: str) -> tuple[dict[str, Any], Any]:
    """The run ``ref`` (id or unique prefix) with its tasks, and a reader of task logs."""
    if server is not None:
        run = api(server, "GET", f"/runs/{quote(ref)}")
        return run, lambda task_id: _remote_logs(server, task_id)
    db = local_db()
    found = db.get_run(ref)
    if found is None:
        fail(f"no run matches '{ref}' (see `flowfed runs list`)")
    return found, db.task_logs


def _remote_logs(server: Remote, task_id: str) -> list[dict[str, Any]]:
    """Every log line of a task, page by page."""
    lines: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = api(
            server, "GET", f"/tasks/{task_id}/logs", params={"offset": offset, "limit": 10_000}
        )
        lines += page["items"]
        offset = page["next_offset"]
    return lines


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs."""
    server = remote(ctx)
    if server is not None:
        rows = api(server, "GET", "/runs", params={"limit": limit})["items"]
    else:
        rows = local_db().list_runs(limit=limit)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table("run", "flow", "status", "started", "duration")
    now = time.time()
    for r in rows:
        # A run still going shows its duration so far.
        took = (r.get("ended_at") or now) - r["created_at"]
        dur = duration_text(took) + ("" if r.get("ended_at") else " so far")
        table.add_row(r["id"][:12], r["flow_name"], r["status"], ts(r["created_at"]), dur)
    out.print(table)


@runs_app.command("watch")
def runs_watch(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id on the server.")],
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live tree.")] = False,
) -> None:
    """Follow a run on a server live (needs --server / FLOWFED_SERVER)."""
    from flowfed.cli.remote import watch_and_exit

    server = remote(ctx)
    if server is None:
        fail("`runs watch` follows a run on a server: pass --server URL or set FLOWFED_SERVER")
    watch_and_exit(server, run_ref, as_json, quiet)


@runs_app.command("logs")
def runs_logs(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    step: Annotated[str | None, typer.Option("--step", help="Only this step's tasks.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the log lines the run's tools wrote (through ctx.log), in order."""
    r, task_logs = _get_run(remote(ctx), run_ref)
    tasks = [t for t in r["tasks"] if step is None or t["step"] == step]
    if step is not None and not tasks:
        steps = ", ".join(sorted({t["step"] for t in r["tasks"]})) or "none"
        fail(f"run {r['id'][:12]} has no step '{step}' (steps: {steps})")
    lines = [
        {"step": t["step"], "task_id": t["id"], **line}
        for t in tasks
        for line in task_logs(t["id"])
    ]
    lines.sort(key=lambda x: (x["ts"], x["id"]))
    if as_json:
        print(json.dumps(lines, default=str))
        return
    for line in lines:
        out.print(
            f"{ts(line['ts'], ms=True)} {line['step']} [{line['level']}] {line['message']}",
            markup=False,
            highlight=False,
        )


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a run with its tasks and their lifecycle transitions."""
    r, task_logs = _get_run(remote(ctx), run_ref)
    for t in r["tasks"]:
        t["logs"] = task_logs(t["id"])
    if as_json:
        print(json.dumps(r, default=str))
        return
    took = (r.get("ended_at") or time.time()) - r["created_at"]
    origin = ""
    if r.get("retry_of"):
        origin += f" · retry of {r['retry_of']}"
    if r.get("trigger"):
        origin += f" · started by trigger {r['trigger']}"
    out.print(
        f"[bold]{r['flow_name']}[/bold] run {r['id']} · {r['status']} · {duration_text(took)}"
        + origin,
        highlight=False,
    )
    if r.get("error"):
        out.print(f"  [red]{r['error']}[/red]", soft_wrap=True)
    for t in r["tasks"]:
        flags = " (cached)" if t.get("cached") else ""
        label = f" · {t['label']}" if t.get("label") else ""
        start, end = t.get("started_at"), t.get("ended_at")
        took_t = f" · {duration_text(end - start)}" if start and end else ""
        used = resources_text(t.get("resources"))
        wait = t.get("waiting_on")
        waiting = f" · {waiting_text(wait['node'], wait['offline_since'])}" if wait else ""
        out.print(
            f"  {t['step']}: {t['tool']}@{t['tool_version']} on {t['node']} — "
            f"{t['state']}{flags} · attempt {t['attempt']}{label}{took_t}"
            + (f" · {used}" if used else "")
            + waiting,
            markup=False,
        )
        for a in t.get("attempt_resources") or []:
            out.print(f"      attempt {a.get('attempt')}: {resources_text(a)}", markup=False)
        for tr in t.get("transitions", []):
            detail = f" ({tr['detail']})" if tr.get("detail") else ""
            out.print(
                f"      {ts(tr['at'], ms=True)} {tr['src']} → {tr['dst']}{detail}", markup=False
            )
        if t.get("error"):
            out.print(f"      [red]{t['error'].get('message')}[/red]", soft_wrap=True)
        for line in t["logs"]:
            out.print(
                f"      {ts(line['ts'], ms=True)} [{line['level']}] {line['message']}",
                markup=False,
            )


@runs_app.command("cancel")
def runs_cancel(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a running run on the server: nothing new starts, running tasks end cancelled."""
    server = remote(ctx)
    if server is None:
        fail(
            "`runs cancel` asks the server that executes a run: pass --server URL (or set "
            "FLOWFED_SERVER). A local `flowfed run` is cancelled with Ctrl-C in its terminal"
        )
    answer = api(server, "POST", f"/runs/{quote(run_ref)}/cancel")
    if as_json:
        print(json.dumps(answer))
        return
    out.print(
        f"run {answer['run_id']} is being cancelled on {server.url} (follow it with "
        f"`flowfed runs watch {answer['run_id'][:12]}`)",
        markup=False,
    )
