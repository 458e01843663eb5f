"""The ``flowfed`` command line (Typer + Rich): the root command and its global options.

Exit codes: 0 success, 1 a run that failed, 130 a run stopped with Ctrl-C, 2 an invalid
flow or bad arguments. Every error is one readable paragraph; tracebacks are kept for
``FLOWFED_DEBUG=1``.

Each command lives in a module of its own (``cli/run.py``, ``cli/runs.py``, ...), listed in
:data:`COMMANDS` and imported only when that command is used: ``flowfed --help`` loads
Typer and this file, never Rich's console, SQLAlchemy, FastAPI or numpy.

Example:
    >>> # flowfed --server http://127.0.0.1:8000 --token ffu_... runs list
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from flowfed.cli.common import STARTED, err

__all__ = ["COMMANDS", "STARTED", "app", "main"]

#: The commands, in the order ``--help`` lists them: name -> (module, attribute, summary).
#: The attribute is a Typer app: a group of sub-commands, or one command. The summary is
#: what ``--help`` shows without importing the module (tests keep it equal to the real one).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "flowfed.cli.run",
        "run_app",
        "Validate and run a flow, showing a live tree of its steps and tasks.",
    ),
    "validate": (
        "flowfed.cli.validate",
        "validate_app",
        "Check a flow without running it: exit 0 if valid, 2 with every problem otherwise.",
    ),
    "runs": ("flowfed.cli.runs", "runs_app", "Inspect, follow and cancel runs."),
    "flows": ("flowfed.cli.flows", "flows_app", "Stored flow definitions on a server."),
    "artifacts": ("flowfed.cli.artifacts", "artifacts_app", "Inspect artifacts."),
    "lineage": (
        "flowfed.cli.artifacts",
        "lineage_app",
        "Show where an artifact came from: a recursive tree back to its sources.",
    ),
    "models": (
        "flowfed.cli.models",
        "models_app",
        "The model registry: trained models, their versions, variants and metrics.",
    ),
    "tools": ("flowfed.cli.tools", "tools_app", "Inspect registered tools."),
    "triggers": (
        "flowfed.cli.triggers",
        "app",
        "Flows that start themselves: schedules, events, conditions (on a server).",
    ),
    "nodes": (
        "flowfed.cli.nodes",
        "nodes_app",
        "Manage data nodes: credentials (add, remove) and their state (list).",
    ),
    "node": ("flowfed.cli.nodes", "node_app", "Run a node agent next to a site's data."),
    "tool": (
        "flowfed.cli.tooldev",
        "tool_app",
        "Develop a tool against a live server: dev sessions, test executions.",
    ),
    "server": (
        "flowfed.cli.serve",
        "server_app",
        "Serve the REST and WebSocket API (one process, uvicorn).",
    ),
    "auth": (
        "flowfed.cli.admin",
        "auth_app",
        "Manage API tokens and OAuth2 clients for the server.",
    ),
    "db": ("flowfed.cli.admin", "db_app", "Manage the database schema."),
}

#: The commands that are one command (a Typer app with one command), not a group.
LEAVES = frozenset({"run", "validate", "lineage", "server"})


class LazyGroup(TyperGroup):
    """The root command: its sub-commands are imported when one is used, not before.

    ``--help`` lists them from :data:`COMMANDS` without importing a single command module.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if (found is None or isinstance(found, _Placeholder)) and cmd_name in COMMANDS:
            found = load_command(cmd_name)
            self.commands[cmd_name] = found
        return found

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # Typer suggests close names from the commands loaded so far: offer them all.
        for name in COMMANDS:
            self.commands.setdefault(name, _Placeholder(name))  # type: ignore[arg-type]
        try:
            return super().resolve_command(ctx, args)
        finally:
            for name in [n for n, c in self.commands.items() if isinstance(c, _Placeholder)]:
                del self.commands[name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _Placeholder:
    """Stands for a not-yet-imported command while Typer looks for close names."""

    hidden = False

    def __init__(self, name: str) -> None:
        self.name = name


def load_command(name: str) -> Any:
    """Import the module of command ``name`` and build its Click command."""
    module, attribute, _ = COMMANDS[name]
    sub = getattr(importlib.import_module(module), attribute)
    if name in LEAVES:
        # Built from the command itself: typer.main.get_command would add completion options.
        cmd = typer.main.get_command_from_info(
            sub.registered_commands[0],
            pretty_exceptions_short=sub.pretty_exceptions_short,
            rich_markup_mode=sub.rich_markup_mode,
        )
    else:  # a group stays a group even with one sub-command (`flowfed db upgrade`)
        cmd = typer.main.get_group(sub)
    cmd.name = name
    return cmd


app = typer.Typer(
    name="flowfed",
    help="Run machine-learning flows of typed tools, with lineage and caching.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help for the root: Rich's help renderer alone costs more than the whole
    # 0.1 s budget of `flowfed --help`. The commands' own help keeps Rich.
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="FLOWFED_SERVER",
            help="URL of a flowfed server: commands about runs, tasks, flows, artifacts, "
            "lineage, models, nodes and triggers ask it instead of the local catalog.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="FLOWFED_TOKEN", help="API token for --server."),
    ] = None,
) -> None:
    """Run machine-learning flows of typed tools, with lineage and caching."""
    ctx.obj = {"server": server, "token": token}


def main() -> None:
    """Console entry point: run the app, turning unexpected errors into one paragraph."""
    import atexit
    import gc

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
