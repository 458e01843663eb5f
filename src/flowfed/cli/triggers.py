"""``flowfed triggers``: schedule flows and chain them to events on a server.

Every command talks to ``--server`` / ``$FLOWFED_SERVER`` with ``--token``. ``add`` reads
a YAML (or JSON) file (docs/triggers.md) or builds the trigger from options, and checks it
here first, so a mistake is reported with its file, line and field.

Example:
    flowfed --server http://127.0.0.1:8000 triggers add -f weekly.yaml
    flowfed triggers add --name nightly --flow etl --cron "0 2 * * *" --timezone Europe/Berlin
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table

app = typer.Typer(
    help="Flows that start themselves: schedules, events, conditions (on a server).",
    no_args_is_help=True,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    from rich.markup import escape

    # The label is markup, the message is text: a flow named `[x]` prints as written.
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _remote(ctx: typer.Context) -> tuple[str, dict[str, str]]:
    obj = ctx.find_root().obj or {}
    server, token = obj.get("server"), obj.get("token")
    if not server:
        _fail("triggers live on a server: pass --server URL (or set FLOWFED_SERVER)")
    return server.rstrip("/"), ({"Authorization": f"Bearer {token}"} if token else {})


def _call(ctx: typer.Context, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    from flowfed.cli.remote import _problem

    server, headers = _remote(ctx)
    try:
        resp = httpx.request(
            method, f"{server}/api/v1/triggers{path}", headers=headers, timeout=60, **kwargs
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {server}: {exc}")
    if resp.status_code >= 400:
        _fail(_problem(resp).replace("\n", "; "))
    return None if resp.status_code == 204 else resp.json()


def _ts(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_file(path: Path) -> list[dict[str, Any]]:
    """The trigger definitions of a YAML/JSON file, validated (exit 2 naming file:line).

    The file is read exactly as flow files are (:func:`flowfed.spec.loader.read_documents`):
    a bare ``on:`` key stays ``on``, and several triggers may share one file, separated by
    ``---``. Every problem of every document is reported before anything is sent.
    """
    from pydantic import ValidationError

    from flowfed.server.triggers.model import TriggerSpec
    from flowfed.spec.diagnostics import FlowError
    from flowfed.spec.loader import read_documents

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        documents = read_documents(text, str(path))
    except FlowError as exc:
        _fail("; ".join(str(d) for d in exc.diagnostics))
    problems: list[str] = []
    triggers: list[dict[str, Any]] = []
    for data, source in documents:
        if not isinstance(data, dict):
            problems.append(
                f"{path}:{source.line(()) or 1}: a trigger is a mapping "
                "(name, flow, schedule or on, ...)"
            )
            continue
        try:
            TriggerSpec.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                loc = tuple(
                    x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function"))
                )
                field = ".".join(str(x) for x in loc) or "(trigger)"
                msg = e["msg"].removeprefix("Value error, ")
                problems.append(f"{path}:{source.line(loc) or 1}: {field}: {msg}")
            continue
        triggers.append(data)
    if problems:
        _fail("; ".join(problems))
    return triggers


@app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every trigger: kind, flow, state, next fire time, last fire and its run."""
    rows = _call(ctx, "GET", "")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("no triggers (add one with `flowfed triggers add -f trigger.yaml`)")
        return
    # Names are what users type next (enable, history): never fold them.
    table = Table(
        Column("name", no_wrap=True), "kind", "flow", "enabled", "next fire", "last fire", "run"
    )
    for r in rows:
        last = r.get("last_fire") or {}
        shown = last.get("status", "-") + (f" ({_ts(last.get('created_at'))})" if last else "")
        table.add_row(
            r["name"],
            r["kind"],
            r["flow"] + (f"@{r['version']}" if r.get("version") else ""),
            "yes" if r["enabled"] else "no",
            _ts(r.get("next_fire_at")),
            shown,
            (r.get("last_run_id") or "-")[:12],
        )
    out.print(table)


@app.command("add")
def add_cmd(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Trigger definition (YAML or JSON).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Trigger name.")] = None,
    flow: Annotated[str | None, typer.Option("--flow", help="Stored flow to start.")] = None,
    version: Annotated[int | None, typer.Option("--version", help="Flow version.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="Cron expression.")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of --cron.")] = "UTC",
    every: Annotated[str | None, typer.Option("--every", help="Interval: 90s, 15m, 2h.")] = None,
    on_run: Annotated[
        str | None, typer.Option("--on-run", help="Fire when a run of this flow (glob) ends.")
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="With --on-run: end states that fire (repeatable)."),
    ] = None,
    on_artifact: Annotated[
        str | None, typer.Option("--on-artifact", help="Fire when an artifact matching it appears.")
    ] = None,
    when: Annotated[str | None, typer.Option("--when", help="Condition over `event`.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Flow parameter KEY=VALUE.")
    ] = None,
    catchup: Annotated[
        bool, typer.Option("--catchup/--no-catchup", help="Fire once for missed ticks.")
    ] = True,
    overlap: Annotated[str, typer.Option("--overlap", help="skip, queue or allow.")] = "skip",
    disabled: Annotated[bool, typer.Option("--disabled", help="Store it disabled.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a trigger from ``-f FILE`` or from options."""
    from pydantic import ValidationError

    from flowfed.api import parse_param_overrides
    from flowfed.server.triggers.model import TriggerSpec
    from flowfed.spec.diagnostics import FlowError

    if file is not None:
        documents = load_file(file)
    else:
        if not name or not flow:
            _fail("give -f trigger.yaml, or at least --name and --flow")
        try:
            params = parse_param_overrides(param or [])
        except FlowError as exc:
            _fail(str(exc))
        data = {
            "name": name,
            "flow": flow,
            "version": version,
            "params": params,
            "catchup": catchup,
            "overlap": overlap,
            "enabled": not disabled,
            "when": when,
        }
        if cron or every:
            data["schedule"] = {"cron": cron, "timezone": timezone, "every": every}
        elif on_run:
            data["on"] = {"run": {"flow": on_run, "status": status or None}}
        elif on_artifact:
            data["on"] = {"artifact": {"name": on_artifact}}
        data = {k: v for k, v in data.items() if v is not None}
        try:
            TriggerSpec.model_validate(data)
        except ValidationError as exc:
            _fail(
                "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'trigger'}: "
                    + e["msg"].removeprefix("Value error, ")
                    for e in exc.errors()
                )
            )
        documents = [data]
    rows = []
    for data in documents:
        try:
            rows.append(_call(ctx, "POST", "", json=data))
        except typer.Exit:
            # All of a file or none of it: the triggers added before this one go again.
            for row in rows:
                _call(ctx, "DELETE", f"/{row['name']}")
            raise
    if as_json:
        # One trigger: its object, as `add` always printed; several (a `---` file): a list.
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return
    for row in rows:
        nxt = f", next fire {_ts(row['next_fire_at'])}" if row.get("next_fire_at") else ""
        out.print(f"trigger {row['name']} added ({row['kind']} → flow {row['flow']}{nxt})")


@app.command("enable")
def enable_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Enable a trigger (what fell due while it was disabled does not fire)."""
    row = _call(ctx, "PATCH", f"/{name}", json={"enabled": True})
    out.print(f"trigger {row['name']} enabled")


@app.command("disable")
def disable_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Disable a trigger (its history stays)."""
    row = _call(ctx, "PATCH", f"/{name}", json={"enabled": False})
    out.print(f"trigger {row['name']} disabled")


@app.command("remove")
def remove_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Delete a trigger and its history (the runs it started stay)."""
    _call(ctx, "DELETE", f"/{name}")
    out.print(f"trigger {name} removed")


@app.command("history")
def history_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option("--limit", help="How many fires.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """A trigger's fires, newest first: the run each started or why none started."""
    rows = _call(ctx, "GET", f"/{name}/history", params={"limit": limit})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"trigger {name} has not fired yet")
        return
    table = Table(
        "at", "what", Column("status", no_wrap=True), Column("run", no_wrap=True), "reason"
    )
    for r in rows:
        table.add_row(
            _ts(r["created_at"]),
            r["fire_key"],
            r["status"] + (" (catchup)" if r["catchup"] else ""),
            # A prefix is enough for `flowfed runs show`.
            (r.get("run_id") or "-")[:12],
            r.get("reason") or "",
        )
    out.print(table)
