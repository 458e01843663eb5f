"""The CLI as a client of ``flowfed server``: submit runs, watch them over WebSocket.

The watcher rebuilds seed 000's tree from the run's event stream alone (the first event
names the flow's steps; every task event names its step, tool and node), so it draws the
same tree as a local run without reading the server's database.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from flowfed.cli.common import problem_text
from flowfed.engine.state import RunView
from flowfed.runtime.lifecycle import State

if TYPE_CHECKING:
    from flowfed.cli.common import Remote


class RemoteError(Exception):
    """The server refused a request or could not be reached; the message says why."""


@dataclass(eq=False)
class RemoteTask:
    """A task as seen through events (the attributes the monitor draws)."""

    id: str
    node: Any
    state: State = State.PENDING
    iteration: int = 1
    attempt: int = 1
    cached: bool = False
    progress: float | None = None
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    started_at: float | None = None
    ended_at: float | None = None


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


#: A refused answer as text (kept under this name: ``cli/triggers.py`` imports it).
_problem = problem_text


def submit_run(
    server: str, token: str | None, file: Path, params: dict[str, Any], *, cache: bool = True
) -> str:
    """POST the flow file's text to ``/api/v1/runs``; the new run's id.

    ``cache=False`` runs every task (``flowfed run --no-cache``).
    """
    import httpx

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RemoteError(f"cannot read {file}: {exc}") from None
    try:
        resp = httpx.post(
            f"{server.rstrip('/')}/api/v1/runs",
            json={"source": text, "params": params, "cache": cache},
            headers=_headers(token),
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach {server}: {exc or type(exc).__name__}") from None
    if resp.status_code >= 400:
        raise RemoteError(_problem(resp))
    return str(resp.json()["run_id"])


def events_url(server: str, run_id: str, after: int = 0) -> str:
    """The WebSocket URL of a run's event stream."""
    parts = urlsplit(server.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path}/api/v1/runs/{run_id}/events"
    return urlunsplit((scheme, parts.netloc, path, f"after={after}", ""))


class EventTree:
    """A RunView built from events, for the terminal monitor."""

    def __init__(self, run_id: str) -> None:
        self.view = RunView(run_id, flow_name="…", steps=[], started_at=time.time())
        self._tasks: dict[str, RemoteTask] = {}
        self.last_id = 0
        self.seen: list[int] = []

    def apply(self, msg: dict[str, Any]) -> None:
        """Fold one event into the tree."""
        self.last_id = max(self.last_id, int(msg["id"]))
        self.seen.append(int(msg["id"]))
        p = msg["payload"]
        kind = msg["kind"]
        if kind == "run":
            if p.get("steps"):
                self.view.steps = list(p["steps"])
                self.view.types = dict(p.get("types") or {})
                self.view.flow_type = p.get("flow_type")
                self.view.parts = dict(p.get("parts") or {})
                # The round total of each federated step (the tree shows "round 14/30").
                self.view.rounds = dict(p.get("rounds") or {})  # type: ignore[attr-defined]
                self.view.flow_name = p.get("flow") or self.view.flow_name
                self.view.started_at = msg["ts"]
            self.view.status = p.get("status", self.view.status)
            if self.view.status != "running":
                self.view.ended_at = msg["ts"]
                self.view.error = p.get("error")
            return
        tid = msg.get("task_id")
        if not tid or "step" not in p:
            return
        task = self._tasks.get(tid)
        if task is None:
            node = SimpleNamespace(
                id=p.get("plan_key") or p["step"],
                tool=SimpleNamespace(name=p.get("tool", "?")),
                node=p.get("node", "local"),
                round=p.get("round"),
                retries=p.get("retries", 0),
                dataset=p.get("dataset"),
                variant=p.get("variant"),
                label=p.get("label"),
                federated=None,
            )
            task = RemoteTask(tid, node)
            self._tasks[tid] = task
            self.view.tasks.setdefault(p["step"], []).append(task)  # type: ignore[arg-type]
            if p["step"] not in self.view.steps:
                self.view.steps.append(p["step"])
        task.iteration = p.get("iteration", task.iteration)
        task.attempt = p.get("attempt", task.attempt)
        if kind == "transition":
            task.state = State(p["dst"])
            if task.state is State.STARTED:
                task.started_at = msg["ts"]
            elif task.state.terminal:
                task.ended_at = msg["ts"]
            if task.state is State.CACHED:
                task.cached = True
            if task.state is State.ERROR:
                task.error = {"message": p.get("detail") or "failed"}
            elif p.get("detail") and task.state in (State.SKIPPED, State.CANCELLED):
                task.message = p["detail"]
        elif kind == "metric":
            task.metrics[p["name"]] = p["value"]
        elif kind == "progress":
            task.progress = p.get("fraction")
            if p.get("message"):
                task.message = p["message"]
            if p.get("total") is not None or p.get("unit") is not None:
                counts = {k: p.get(k) for k in ("done", "total", "unit")}
                task.resources = {**(task.resources or {}), "progress": counts}
        elif kind == "resources":
            task.resources = {k: p.get(k) for k in ("wall_s", "cpu_s", "peak_rss_mb", "progress")}
        elif kind == "waiting":
            task.message = p.get("message") if p.get("node") else None
        elif kind == "retry":
            task.state = State.PENDING
            task.error = None


def watch(
    server: str,
    token: str | None,
    run_id: str,
    *,
    tree: EventTree | None = None,
    on_event: Any = None,
) -> EventTree:
    """Follow a run's events until its final event; the resulting tree.

    After a dropped connection it reconnects and resumes after the last event it saw, so
    no event is lost or shown twice.
    """
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    tree = tree if tree is not None else EventTree(run_id)
    failures = 0
    while True:
        code: int | None = None
        try:
            with connect(
                events_url(server, run_id, tree.last_id),
                additional_headers=_headers(token),
                open_timeout=10,
            ) as ws:
                failures = 0
                for raw in ws:
                    msg = json.loads(raw)
                    tree.apply(msg)
                    if on_event is not None:
                        on_event(msg)
                code = ws.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        except (InvalidStatus, OSError, TimeoutError) as exc:
            failures += 1
            if failures > 5:
                raise RemoteError(f"cannot watch run {run_id} at {server}: {exc}") from None
            time.sleep(min(2.0, 0.2 * 2**failures))
            continue
        if code == 4401:
            raise RemoteError("the server refused the token (set --token or FLOWFED_TOKEN)")
        if code == 4404:
            raise RemoteError(f"the server has no run {run_id}")
        if tree.view.status != "running":
            return tree
        # Dropped mid-run: resume after the last event we saw.
        time.sleep(0.2)


def watch_and_exit(server: Remote, run_id: str, as_json: bool, quiet: bool) -> NoReturn:
    """Follow a run on the server to its end, drawing it; exit with its status's code."""
    import sys

    import typer

    from flowfed.cli.common import err, fail, out

    live = sys.stdout.isatty() and not as_json and not quiet
    tree = EventTree(run_id)
    try:
        if live:
            from flowfed.cli.monitor import LiveMonitor

            with LiveMonitor(out.console(), lambda: tree.view):
                watch(server.url, server.token, run_id, tree=tree)
        else:
            watch(server.url, server.token, run_id, tree=tree)
    except RemoteError as exc:
        fail(str(exc))
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
    if not as_json and not quiet:
        _print_results(server, run_id, tree)
    if not as_json:
        colour = {"success": "green", "failed": "red", "cancelled": "magenta"}.get(status, "")
        out.print(f"[{colour}]{status}[/{colour}] run {run_id} on {server.url}")
    raise typer.Exit({"success": 0, "failed": 1, "cancelled": 130}.get(status, 1))


def _print_results(server: Remote, run_id: str, tree: EventTree) -> None:
    """What a local run prints at its end, from the server: rounds and the report table.

    The report is the flow's ``report:`` artifact of this run, read through the REST API
    (shareable artifacts only); a run without one prints nothing more.
    """
    import httpx

    from flowfed.cli.common import api
    from flowfed.cli.report import print_report

    rounds = next(
        (
            int(t.metrics["rounds"])
            for runs in tree.view.tasks.values()
            for t in runs
            if "rounds" in t.metrics and t.node.round is None
        ),
        None,
    )
    summary: dict[str, Any] = {"rounds": rounds} if rounds else {}
    run = api(server, "GET", f"/runs/{run_id}")
    report = (run.get("spec") or {}).get("report")
    if report:
        arts = api(server, "GET", "/artifacts", params={"run": run_id, "name": report})
        if arts:
            resp = httpx.get(
                f"{server.url}/api/v1/artifacts/{arts[0]['id']}/content",
                headers=_headers(server.token),
                timeout=60,
            )
            if resp.status_code == 200:
                # A report that is not JSON has nothing to tabulate.
                with contextlib.suppress(ValueError):
                    summary["metrics"] = resp.json()
    print_report(summary)
