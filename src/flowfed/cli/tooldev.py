"""``flowfed tool ...``: develop a tool against a live server (seed 001's development mode).

- ``flowfed tool dev tools.py:train --server URL [--token T] [--config-file c.json] [--reload]``
  attaches the local tool and prints each execution's live output;
- ``flowfed tool exec SESSION [--param k=v] [--input name=@file.json] [--follow]`` runs a
  test execution and (with ``--follow``) streams its output;
- ``flowfed tool config SESSION --set k=v | --file c.json`` replaces the tool's config;
- ``flowfed tool sessions`` lists the caller's dev sessions.

``--server`` and ``--token`` default to the global options (``FLOWFED_SERVER``,
``FLOWFED_TOKEN``). See docs/tool-dev.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from flowfed.wording import plural

tool_app = typer.Typer(
    help="Develop a tool against a live server: dev sessions, test executions.",
    no_args_is_help=True,
)
_err = Console(stderr=True, highlight=False)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: the global --server).")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="API token (default: the global --token).")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", soft_wrap=True, markup=True)
    raise typer.Exit(code)


def _target(ctx: typer.Context, server: str | None, token: str | None) -> tuple[str, str | None]:
    obj = ctx.obj or {}
    url = server or obj.get("server")
    if not url:
        _fail("no server: pass --server URL or set FLOWFED_SERVER")
    return str(url).rstrip("/"), token or obj.get("token")


def _json_arg(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{where}: not JSON ({exc})")


def _pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"{option} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _inputs(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            _fail(f"--input expects NAME=@file.json or NAME=<json>, got {pair!r}")
        if raw.startswith("@"):
            path = Path(raw[1:])
            try:
                text = path.read_text()
            except OSError as exc:
                _fail(f"--input {name}: cannot read {path}: {exc.strerror or exc}")
            out[name.strip()] = _json_arg(text, f"--input {name}: {path}")
        else:
            out[name.strip()] = _json_arg(raw, f"--input {name}")
    return out


def _problem_text(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"
    lines = [f"HTTP {resp.status_code}: {body.get('detail') or body.get('title')}"]
    for e in body.get("errors") or []:
        where = e.get("field") or ".".join(str(p) for p in e.get("loc") or [])
        lines.append(f"  {where}: {e.get('message')}" if where else f"  {e.get('message')}")
    return "\n".join(lines)


def _request(method: str, url: str, token: str | None, **kw: Any) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.request(method, url, headers=headers, timeout=60, **kw)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if resp.status_code >= 400:
        _fail(_problem_text(resp), 1)
    return resp.json() if resp.content else None


@tool_app.command("dev")
def dev(
    ctx: typer.Context,
    tool: Annotated[str, typer.Argument(help="The tool: file.py:function or module:function.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_file: Annotated[
        Path | None, typer.Option("--config-file", help="JSON file with the first config.")
    ] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="A config value KEY=VALUE (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Session name (default: the tool's).")] = "",
    reload: Annotated[
        bool, typer.Option("--reload", help="Re-import the tool's file when it changes.")
    ] = False,
) -> None:
    """Attach a local tool (no isolation) to a server and print each execution live."""
    from flowfed.runtime.devmode import DevOptions, run_dev

    url, tok = _target(ctx, server, token)
    if ":" not in tool:
        _fail(f"the tool must read file.py:function or module:function, got {tool!r}")
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = _json_arg(config_file.read_text(), f"--config-file {config_file}")
        except OSError as exc:
            _fail(f"cannot read --config-file {config_file}: {exc.strerror or exc}")
        if not isinstance(loaded, dict):
            _fail(f"--config-file {config_file}: expected a JSON object")
        values.update(loaded)
    values.update(_pairs(config, "--config"))
    code = run_dev(DevOptions(url, tok, tool, values, name=name, reload=reload))
    raise typer.Exit(code)


@tool_app.command("exec")
def exec_(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The dev session id (`flowfed tool sessions`).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Hyperparameter KEY=VALUE.")
    ] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", help="Inline input NAME=@file.json or NAME=<json> (repeatable)."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the live output until the end.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the execution as JSON.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a test execution of a dev session's tool (exit 1 if it ends in Error)."""
    url, tok = _target(ctx, server, token)
    body = {"params": _pairs(param, "--param"), "inputs": _inputs(input_)}
    base = f"{url}/api/v1/dev-sessions/{session}"
    ex = _request("POST", f"{base}/executions", tok, json=body)
    if not follow:
        print(json.dumps(ex, indent=2) if as_json else f"execution {ex['id']} ({ex['state']})")
        return
    final = _follow(f"{base}/executions/{ex['id']}/events", tok, ex["id"], quiet=as_json)
    if as_json:
        print(json.dumps(final, indent=2))
    else:
        print(f"execution {final['id']}: {final['state']}")
    raise typer.Exit(0 if final["state"] == "finished" else 1)


def _follow(url: str, token: str | None, eid: str, *, quiet: bool) -> dict[str, Any]:
    import httpx

    from flowfed.runtime.devmode import DevError, describe_frame, follow_sse

    def show(kind: str, data: dict[str, Any]) -> None:
        line = describe_frame(data)
        if line is not None and not quiet:
            print(line, flush=True)

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        timeout = httpx.Timeout(30, read=None)
        with httpx.stream("GET", url, headers=headers, timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                _fail(_problem_text(resp), 1)
            end = follow_sse(resp.iter_lines(), show)
    except httpx.HTTPError as exc:
        _fail(f"lost the stream of execution {eid}: {exc}", 1)
    except DevError as exc:
        _fail(str(exc), 1)
    return dict(end["execution"])


@tool_app.command("config")
def config_(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The dev session id.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config value KEY=VALUE (repeatable).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="JSON file with the config.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Replace the config of a dev session's tool (the tool validates it; exit 1 if rejected)."""
    url, tok = _target(ctx, server, token)
    values: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = _json_arg(file.read_text(), f"--file {file}")
        except OSError as exc:
            _fail(f"cannot read --file {file}: {exc.strerror or exc}")
        if not isinstance(loaded, dict):
            _fail(f"--file {file}: expected a JSON object")
        values.update(loaded)
    values.update(_pairs(set_, "--set"))
    out = _request(
        "POST", f"{url}/api/v1/dev-sessions/{session}/config", tok, json={"values": values}
    )
    print(f"config revision {out['revision']}: {json.dumps(out['values'], sort_keys=True)}")


@tool_app.command("sessions")
def sessions(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List your dev sessions: id, tool, connected, state, executions."""
    url, tok = _target(ctx, server, token)
    rows = _request("GET", f"{url}/api/v1/dev-sessions", tok)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no dev sessions")
        return
    for s in rows:
        status = (s["state"] or "connected") if s["connected"] else "offline"
        line = (
            f"{s['id']}  {s['name']:<20} {status:<12} {plural(len(s['executions']), 'execution')}"
        )
        print(line, file=sys.stdout)
