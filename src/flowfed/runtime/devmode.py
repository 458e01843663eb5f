"""Development mode, tool side: ``flowfed tool dev tools.py:train --server URL``.

Attaches a local tool, without isolation, to a server's dev-session registry and keeps it
there: it opens a session (``POST /api/v1/dev-sessions``), then runs the tool-side engine
(:class:`~flowfed.runtime.toolside.ToolEngine`, development mode) against the session's
runtime channel, once per execution: the engine idles in Initialized (taking config
updates), runs one execution when the server sends ``start``, and the loop reconnects for
the next. Every frame the tool sends is also printed, so the developer sees each
execution's live output in the terminal. With ``reload`` the tool's module is imported
afresh when its file changed since the last execution.

Like the rest of the tool side it imports neither the server, the database nor the
engine, and talks HTTP through the standard library.

Example:
    >>> describe_frame({"type": "metric", "name": "loss", "value": 0.25, "step": 3})
    'metric loss = 0.25 (step 3)'
    >>> describe_frame({"type": "log", "level": "info", "message": "epoch 1"})
    'log    epoch 1'
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import StartMessage, dump_message
from flowfed.runtime.toolside import (
    EXIT_ERROR,
    EXIT_OK,
    EngineOptions,
    RunFailure,
    ToolEngine,
    load_tool,
)

EXIT_USAGE = 2


class DevError(Exception):
    """The session could not be opened or kept; the message says why."""


def describe_frame(frame: dict[str, Any]) -> str | None:
    """One line (or a few) for a runtime frame, as the terminal shows it; None to skip."""
    kind = frame.get("type")
    if kind == "status":
        detail = f": {frame['detail']}" if frame.get("detail") else ""
        return f"status {frame.get('src') or '-'} -> {frame.get('dst')}{detail}"
    if kind == "log":
        level = frame.get("level", "info")
        tag = "" if level == "info" else f"[{level}] "
        return f"log    {tag}{frame.get('message', '')}"
    if kind == "metric":
        step = f" (step {frame['step']})" if frame.get("step") is not None else ""
        return f"metric {frame.get('name')} = {frame.get('value')}{step}"
    if kind == "progress":
        msg = f" {frame['message']}" if frame.get("message") else ""
        return f"progress {round(100 * float(frame.get('fraction', 0)))}%{msg}"
    if kind == "output":
        shown = ""
        if "value" in frame:
            text = json.dumps(frame["value"])
            shown = " = " + (text if len(text) <= 200 else text[:200] + "...")
        return f"output {frame.get('name')} ({frame.get('kind')}, {frame.get('size')} B){shown}"
    if kind == "error":
        etype, message = frame.get("error_type", "Error"), str(frame.get("message", ""))
        # The tool side often words its message "Type: text" already.
        head = message if message.startswith(f"{etype}:") else f"{etype}: {message}"
        lines = [f"error  {head}"]
        lines += [f"       {d['field']}: {d['message']}" for d in frame.get("details") or []]
        if frame.get("traceback"):
            lines.append(str(frame["traceback"]).rstrip())
        return "\n".join(lines)
    return None


def _http_json(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            detail = problem.get("detail") or problem.get("title")
        except (ValueError, AttributeError):
            detail = exc.reason
        raise DevError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DevError(f"cannot reach {url}: {reason}") from None


def ws_url(server: str, path: str) -> str:
    """``http(s)://host/...`` + ``path`` as a ``ws(s)://`` URL.

    Example:
        >>> ws_url("https://ff.example:8443/", "/api/v1/dev-sessions/ab/runtime")
        'wss://ff.example:8443/api/v1/dev-sessions/ab/runtime'
    """
    parts = urlsplit(server)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


class _EchoEngine(ToolEngine):
    """The tool-side engine, printing every frame it sends as it sends it.

    ``before_start`` runs when ``start`` arrives; when it returns True the tool's module
    changed on disk and is loaded again, so an edit made while the tool sat idle is what
    the execution runs.
    """

    def __init__(
        self,
        options: EngineOptions,
        echo: Callable[[dict[str, Any]], None],
        before_start: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(options)
        self._echo = echo
        self._before_start = before_start

    def _send(self, msg: Any) -> None:
        super()._send(msg)
        self._echo(json.loads(dump_message(msg)))

    def _idle(self) -> StartMessage | None:
        start = super()._idle()
        if start is not None and self._before_start is not None and self._before_start():
            self._spec = load_tool(self.opts.tool)
        return start


@dataclass
class DevOptions:
    """What ``flowfed tool dev`` was asked to do."""

    server: str
    token: str | None
    tool: str
    config: dict[str, Any]
    name: str = ""
    reload: bool = False
    #: Seconds the engine waits for the server (connect, and silence while idle).
    timeout: float = 60.0


class DevClient:
    """One dev session: open it, then serve executions until the server ends it."""

    def __init__(self, opts: DevOptions, out: TextIO | None = None) -> None:
        self.opts = opts
        self.out = out if out is not None else sys.stdout
        self.session: dict[str, Any] = {}
        self.executions = 0
        self._source: Path | None = None
        self._mtime: float | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def open(self) -> dict[str, Any]:
        """Load the tool locally (fail fast on a typo), then open the session."""
        spec = load_tool(self.opts.tool)
        self._source = _source_of(spec.fn)
        self._mtime = _mtime(self._source)
        body = {
            "entrypoint": self.opts.tool,
            "name": self.opts.name or spec.name,
            "config": self.opts.config,
        }
        url = self.opts.server.rstrip("/") + "/api/v1/dev-sessions"
        self.session = dict(_http_json("POST", url, self.opts.token, body))
        return self.session

    def run(self) -> int:
        """Open the session and serve it; the exit code."""
        try:
            session = self.open()
        except RunFailure as exc:
            self.say(f"error: cannot load {self.opts.tool}: {exc.message}")
            return EXIT_USAGE
        except DevError as exc:
            self.say(f"error: {exc}")
            return EXIT_ERROR
        sid = session["id"]
        self.say(f"dev session {sid}: tool {session['name']} ({self.opts.tool})")
        self.say(f"  trigger an execution: flowfed tool exec {sid} --param KEY=VALUE --follow")
        first = True
        while True:
            engine = _EchoEngine(
                EngineOptions(
                    endpoint=ws_url(self.opts.server, session["runtime_path"]),
                    token=self.opts.token or "",
                    tool=self.opts.tool,
                    timeout=self.opts.timeout,
                    dev=True,
                ),
                self._printer(first),
                self._maybe_reload if self.opts.reload else None,
            )
            code = engine.run()
            reached = engine.reached
            if State.INITIALIZED not in reached:
                # Never became ready (unreachable, refused, bad config, unloadable tool):
                # retrying would fail the same way.
                self.say(f"dev session {sid}: the tool could not start (exit code {code})")
                return code or EXIT_ERROR
            if engine.state is State.CANCELLED and State.STARTED not in reached:
                self.say(f"dev session {sid} ended by the server")
                return EXIT_OK
            first = False

    def _printer(self, first: bool) -> Callable[[dict[str, Any]], None]:
        sid = self.session.get("id", "?")

        def echo(frame: dict[str, Any]) -> None:
            kind = frame.get("type")
            if kind in ("hello", "heartbeat"):
                return
            if kind == "status":
                dst = frame.get("dst")
                if dst == "pending":
                    return
                if dst == "initialized":
                    if first:
                        self.say(f"dev session {sid}: ready (initialized), waiting for executions")
                    return
                if dst == "started":
                    self.executions += 1
                    self.say(f"--- execution {self.executions} ---")
            line = describe_frame(frame)
            if line is not None:
                self.say(line)

        return echo

    def _maybe_reload(self) -> bool:
        """Drop the tool's module if its file changed (True: load it again)."""
        source = self._source
        if source is None:
            return False
        now = _mtime(source)
        if now is None or now == self._mtime:
            return False
        self._mtime = now
        for name, module in sys.modules.copy().items():  # a copy: see executors.worker._tool
            if getattr(module, "__file__", None) and _same_file(module.__file__, source):
                # Dropped, not reloaded in place: the next load_tool imports it afresh.
                sys.modules.pop(name, None)
        self.say(f"reloaded {source.name} (changed on disk)")
        return True


def _source_of(fn: Any) -> Path | None:
    import inspect

    with contextlib.suppress(TypeError, OSError):
        path = inspect.getsourcefile(fn)
        return Path(path).resolve() if path else None
    return None


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def _same_file(a: str | None, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b
    except OSError:
        return False


def follow_sse(lines: Any, on_event: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
    """Feed Server-Sent Events from ``lines`` (text lines) to ``on_event``; the ``end`` data.

    Example:
        >>> seen = []
        >>> follow_sse(["event: log", 'data: {"type": "log", "message": "hi"}', "",
        ...             "event: end", 'data: {"type": "end", "execution": {}}', ""],
        ...            lambda k, d: seen.append(k))
        {'type': 'end', 'execution': {}}
        >>> seen
        ['log', 'end']
    """
    event, data = "message", ""
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            payload = json.loads(data)
            on_event(event, payload)
            if event == "end":
                return dict(payload)
            event, data = "message", ""
    raise DevError("the server closed the execution's stream before it ended")


def run_dev(opts: DevOptions, out: TextIO | None = None) -> int:
    """``flowfed tool dev``: serve a dev session until the server ends it or Ctrl-C."""
    client = DevClient(opts, out)
    try:
        return client.run()
    except KeyboardInterrupt:
        client.say("dev session closed")
        return EXIT_OK
