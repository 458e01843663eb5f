"""``flowfed db upgrade`` and ``flowfed auth token|client``: the server's database itself.

These work on a database (``--database-url``, else ``$FLOWFED_DATABASE_URL`` or
``.flowfed/flowfed.db``), not through a server's API: creating credentials and migrating
need the database's own rights. Only the listings have a server form (an admin token's
``GET /api/v1/auth/tokens`` and ``/clients``); the others refuse ``--server`` (exit 2).

Example:
    >>> # flowfed db upgrade --database-url postgresql://postgres@db:5432/flowfed
    >>> # flowfed auth token create --name alice --role admin
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer

from flowfed.cli.common import (
    DatabaseUrlOpt,
    JsonOpt,
    api,
    err,
    fail,
    local_only,
    on_server_db,
    out,
    remote,
    ts,
)

db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
auth_app = typer.Typer(
    help="Manage API tokens and OAuth2 clients for the server.", no_args_is_help=True
)
token_app = typer.Typer(help="Create, list and revoke user API tokens.", no_args_is_help=True)
client_app = typer.Typer(
    help="Register, list and revoke OAuth2 clients (nodes and tools).", no_args_is_help=True
)
auth_app.add_typer(token_app, name="token")
auth_app.add_typer(client_app, name="client")

#: What to do instead of --server, for the commands that write the database.
_DB_INSTEAD = (
    "it works on the database itself, not through the server's API. Run it where the "
    "server's database is reachable, naming it with --database-url (or "
    "$FLOWFED_DATABASE_URL), without --server (unset FLOWFED_SERVER if it is set)"
)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, database_url: DatabaseUrlOpt = None) -> None:
    """Apply database migrations (Alembic) up to the newest schema."""
    from flowfed.api import default_database_url
    from flowfed.db import Database
    from flowfed.db.problems import describe_db_error

    local_only(ctx, "db upgrade", _DB_INSTEAD)
    try:
        db = Database(database_url or default_database_url())
    except Exception as exc:  # a malformed URL or a missing driver
        fail(f"cannot use database URL {database_url or default_database_url()!r}: {exc}")
    try:
        db.upgrade()
        revision = db.current_revision()
    except Exception as exc:  # unreachable, missing, refused credentials, foreign schema
        fail(f"cannot upgrade database {db!r}: {describe_db_error(db.engine.url, exc)}")
    finally:
        db.close()
    out.print(f"database at {db.url} is at revision {revision}", markup=False, soft_wrap=True)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who or what the token is for.")],
    role: Annotated[str, typer.Option("--role", help="admin or user.")] = "user",
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", help="Expire after D days (default: never)."),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user API token and print it (it is shown this once, never again)."""
    from flowfed.server.auth import create_token

    local_only(ctx, "auth token create", _DB_INSTEAD)
    created = on_server_db(database_url, create_token, name, role, expires_in_days)
    if as_json:
        print(
            json.dumps(
                {
                    "id": created.id,
                    "name": created.name,
                    "role": created.role,
                    "token": created.token,
                    "created_at": created.created_at,
                    "expires_at": created.expires_at,
                }
            )
        )
        return
    expiry = f"expires {ts(created.expires_at)}" if created.expires_at else "never expires"
    err.print(f"token '{created.name}' ({created.role}, {expiry}); id {created.id}")
    err.print("store it now: it cannot be shown again")
    print(created.token)


@token_app.command("list")
def token_list(
    ctx: typer.Context, database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False
) -> None:
    """List tokens (ids, names, roles, dates; never the secrets). Admin tokens only."""
    _print_credentials(
        _credentials(ctx, "tokens", database_url),
        as_json,
        {
            "id": "id",
            "name": "name",
            "role": "role",
            "created_at": "created",
            "expires_at": "expires",
            "revoked_at": "revoked",
            "last_used_at": "last used",
        },
    )


def _credentials(
    ctx: typer.Context, kind: Literal["tokens", "clients"], database_url: str | None
) -> list[dict[str, Any]]:
    """The server's tokens or OAuth2 clients: over its API with --server, else from its db."""
    server = remote(ctx)
    if server is not None:
        rows: list[dict[str, Any]] = api(server, "GET", f"/auth/{kind}")
        return rows
    if kind == "tokens":
        from flowfed.server.auth import list_tokens as listing
    else:
        from flowfed.server.oauth import list_clients as listing
    return on_server_db(database_url, listing)


def _revoke(
    ctx: typer.Context, kind: Literal["token", "client"], ident: str, url: str | None
) -> None:
    """Revoke a token or client in the server's database; a clear error for an unknown id."""
    from flowfed.server.auth import revoke_token
    from flowfed.server.oauth import revoke_client

    local_only(ctx, f"auth {kind} revoke", _DB_INSTEAD)
    if not on_server_db(url, revoke_token if kind == "token" else revoke_client, ident):
        fail(f"no {kind} with id '{ident}' (see `flowfed auth {kind} list`)")
    out.print(f"{kind} {ident} revoked")


def _print_credentials(rows: list[dict[str, Any]], as_json: bool, columns: dict[str, str]) -> None:
    """Tokens or clients as JSON or a table (``*_at`` columns shown as dates)."""
    if as_json:
        print(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table(*columns.values())
    for r in rows:
        table.add_row(*(ts(r[k]) if k.endswith("_at") else str(r[k]) for k in columns))
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Revoke a token: every request made with it is refused from now on."""
    _revoke(ctx, "token", token_id, database_url)


@client_app.command("create")
def client_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The node or tool, e.g. hospital-a.")],
    role: Annotated[str, typer.Option("--role", help="node or tool.")],
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="node:<name> (a node; default node:<--name>) or task:<task id> (a tool); "
            "repeatable.",
        ),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an OAuth2 client and print its id and secret (the secret is shown once)."""
    from flowfed.server.oauth import create_client

    local_only(ctx, "auth client create", _DB_INSTEAD)
    created = on_server_db(database_url, create_client, name, role, scopes)
    if as_json:
        print(
            json.dumps(
                {
                    "client_id": created.client_id,
                    "client_secret": created.secret,
                    "name": created.name,
                    "role": created.role,
                    "scope": created.scope,
                    "created_at": created.created_at,
                }
            )
        )
        return
    err.print(f"client '{created.name}' ({created.role}, scope {created.scope})")
    err.print("store the secret now: it cannot be shown again")
    print(f"client_id:     {created.client_id}")
    print(f"client_secret: {created.secret}")


@client_app.command("list")
def client_list(
    ctx: typer.Context, database_url: DatabaseUrlOpt = None, as_json: JsonOpt = False
) -> None:
    """List OAuth2 clients (ids, names, roles, scopes, dates; never the secrets)."""
    _print_credentials(
        _credentials(ctx, "clients", database_url),
        as_json,
        {
            "client_id": "client id",
            "name": "name",
            "role": "role",
            "scope": "scope",
            "created_at": "created",
            "revoked_at": "revoked",
            "last_used_at": "last token",
        },
    )


@client_app.command("revoke")
def client_revoke(
    ctx: typer.Context,
    client_id: Annotated[str, typer.Argument(metavar="ID", help="The client id (ffc_...).")],
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Revoke a client: no new tokens, and the tokens it holds stop working at once."""
    _revoke(ctx, "client", client_id, database_url)
