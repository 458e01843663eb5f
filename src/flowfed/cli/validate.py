"""``flowfed validate FILE``: check a flow against the local tools, or a server's.

Example:
    >>> # flowfed validate flow.yaml
    >>> # flowfed --server http://127.0.0.1:8000 validate flow.yaml --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flowfed.cli.common import (
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
from flowfed.wording import plural

validate_app = typer.Typer()


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
            flow_error(exc, as_json)
        flow_error(exc, as_json, imported_by(loaded, imports), loaded.flow)
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
    print_warnings(g.warnings)
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
