"""OAuth2 client credentials for nodes and tools, roles and scopes, on a real server."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.server.conftest import Server

FLOW = {
    "name": "oauth-flow",
    "steps": [
        {"name": "load", "tool": "numbers", "params": {"n": 3}, "outputs": ["raw"]},
        {"name": "scale", "tool": "scale", "inputs": {"xs": "raw"}, "outputs": ["scaled"]},
    ],
}
MISSING_TASK = "0" * 32


def new_client(server: Server, *args: str, check: int | None = 0) -> dict[str, Any]:
    res = server.ff(
        "auth", "client", "create", "--json", "--database-url", server.db_url, *args, check=check
    )
    return dict(json.loads(res.stdout)) if check == 0 else {"stderr": res.stderr}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def token_request(
    server: Server, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/oauth/token", data=data, headers=headers)


def access_token(server: Server, client: dict[str, Any], **form: str) -> str:
    r = token_request(
        server, {"grant_type": "client_credentials", **form}, basic(client["client_id"],
        client["client_secret"]),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def tasks(server: Server) -> tuple[str, list[str]]:
    """A finished run's id and its task ids (node "local")."""
    with server.client() as c:
        r = c.post("/api/v1/runs", json={"definition": FLOW})
    assert r.status_code == 202, r.text
    run = server.wait_run(r.json()["run_id"])
    assert run["status"] == "success"
    return run["id"], [t["id"] for t in run["tasks"]]


def test_a_tool_gets_a_token_and_reads_only_its_own_task(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    run_id, (mine, other) = tasks
    client = new_client(server, "--name", "tool-a", "--role", "tool", "--scope", f"task:{mine}")
    assert client["client_id"].startswith("ffc_") and client["scope"] == f"task:{mine}"

    # HTTP Basic
    r = token_request(
        server,
        {"grant_type": "client_credentials"},
        basic(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["scope"] == f"task:{mine}"
    assert r.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["role"] == "tool" and claims["sub"] == client["client_id"]
    assert claims["scope"] == f"task:{mine}" and claims["exp"] - claims["iat"] >= 900

    # Form fields, asking for the scope explicitly
    r = token_request(
        server,
        {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "scope": f"task:{mine}",
        },
    )
    assert r.status_code == 200, r.text

    tool = server.client(body["access_token"])
    got = tool.get(f"/api/v1/tasks/{mine}")
    assert got.status_code == 200 and got.json()["id"] == mine
    assert tool.get(f"/api/v1/tasks/{mine}/logs").status_code == 200
    assert tool.get(f"/api/v1/tasks/{mine}/metrics").status_code == 200

    # Another task and a task that does not exist: the very same 403.
    refused = [
        tool.get(f"/api/v1/tasks/{other}"),
        tool.get(f"/api/v1/tasks/{MISSING_TASK}"),
        tool.get(f"/api/v1/tasks/{other}/logs"),
        tool.get(f"/api/v1/tasks/{MISSING_TASK}/metrics"),
        tool.get(f"/api/v1/tasks/{mine[:8]}"),  # a prefix is not the scoped id
    ]
    assert {r.status_code for r in refused} == {403}
    assert len({r.content for r in refused}) == 1
    problem = refused[0].json()
    assert refused[0].headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:flowfed:problem:forbidden" and problem["status"] == 403
    assert other not in refused[0].text

    # Everything else is out of reach, existing or not.
    elsewhere = [
        tool.get("/api/v1/runs"),
        tool.get(f"/api/v1/runs/{run_id}"),
        tool.get(f"/api/v1/runs/{MISSING_TASK}"),
        tool.post("/api/v1/runs", json={"definition": FLOW}),
        tool.get("/api/v1/flows"),
        tool.get("/api/v1/flows/executions"),
        tool.get("/api/v1/artifacts"),
        tool.get("/api/v1/tools"),
        tool.get("/metrics"),
        tool.get("/api/v1/me"),
        tool.get("/api/v1/auth/tokens"),
    ]
    assert [r.status_code for r in elsewhere] == [403] * len(elsewhere)
    assert len({r.content for r in elsewhere}) == 1
    assert elsewhere[1].content == elsewhere[2].content == refused[0].content


def test_a_node_reads_the_tasks_of_its_node_only(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    _, ids = tasks
    local = new_client(server, "--name", "local", "--role", "node")  # scope node:local
    assert local["scope"] == "node:local"
    node = server.client(access_token(server, local))
    assert all(node.get(f"/api/v1/tasks/{t}").status_code == 200 for t in ids)
    assert node.get("/api/v1/runs").status_code == 403

    elsewhere = new_client(server, "--name", "hospital-a", "--role", "node")
    h = server.client(access_token(server, elsewhere))
    a, b = h.get(f"/api/v1/tasks/{ids[0]}"), h.get(f"/api/v1/tasks/{MISSING_TASK}")
    assert a.status_code == b.status_code == 403 and a.content == b.content


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"grant_type": "password"}, "good", 400, "unsupported_grant_type"),
        ({}, "good", 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "task:" + "1" * 32}, "good", 400,
         "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "node:local"}, "good", 400,
         "invalid_scope"),
        ({"grant_type": "client_credentials"}, "wrong", 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, "unknown", 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, "none", 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, "bearer", 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "x"}, "good", 400, "invalid_request"),
    ],
)  # fmt: skip
def test_token_endpoint_errors_follow_rfc_6749(
    server: Server,
    tasks: tuple[str, list[str]],
    form: dict[str, str],
    auth: str,
    status: int,
    error: str,
) -> None:
    client = new_client(server, "--name", "t", "--role", "tool", "--scope", f"task:{tasks[1][0]}")
    headers = {
        "good": basic(client["client_id"], client["client_secret"]),
        "wrong": basic(client["client_id"], client["client_secret"] + "x"),
        "unknown": basic("ffc_" + "a" * 32, client["client_secret"]),
        "none": {},
        "bearer": {"Authorization": f"Bearer {server.token}"},
    }[auth]
    r = token_request(server, form, headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == error and "access_token" not in r.json()
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")


def test_the_token_endpoint_wants_a_form(server: Server) -> None:
    r = httpx.post(f"{server.url}/api/v1/oauth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert httpx.get(f"{server.url}/api/v1/oauth/token").status_code == 405


def test_revoking_a_client_refuses_new_and_outstanding_tokens(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    client = new_client(server, "--name", "gone", "--role", "node", "--scope", "node:local")
    access = access_token(server, client)
    c = server.client(access)
    assert c.get(f"/api/v1/tasks/{tasks[1][0]}").status_code == 200
    server.ff("auth", "client", "revoke", client["client_id"], "--database-url", server.db_url)
    r = token_request(
        server,
        {"grant_type": "client_credentials"},
        basic(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = c.get(f"/api/v1/tasks/{tasks[1][0]}")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    listed = server.ff("auth", "client", "list", "--json", "--database-url", server.db_url)
    rows = {row["client_id"]: row for row in json.loads(listed.stdout)}
    assert rows[client["client_id"]]["revoked_at"] is not None
    assert client["client_secret"] not in listed.stdout and "secret_hash" not in listed.stdout
    res = server.ff(
        "auth", "client", "revoke", "ffc_" + "f" * 32, "--database-url", server.db_url, check=2
    )
    assert "no client" in res.stderr


def test_forged_and_tampered_tokens_get_the_plain_401(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    client = new_client(server, "--name", "local", "--role", "node")
    access = access_token(server, client)
    claims = jwt.decode(access, options={"verify_signature": False})
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256", headers={"typ": "at+jwt"})
    none_alg = jwt.encode(claims, None, algorithm="none")
    head, payload, sig = access.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}AAAA"
    for bad in (forged, none_alg, tampered, access + "x"):
        r = server.client(bad).get(f"/api/v1/tasks/{tasks[1][0]}")
        assert r.status_code == 401, bad
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["type"] == "urn:flowfed:problem:unauthorized"


def test_user_tokens_keep_working_and_listings_are_admin_only(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    user = server.client(server.new_token("--name", "plain-user")["token"])
    run_id, ids = tasks
    for path in (
        "/api/v1/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/tasks/{ids[0]}",
        "/api/v1/flows",
        "/api/v1/artifacts",
        "/api/v1/tools",
        "/metrics",
        "/api/v1/me",
    ):
        assert user.get(path).status_code == 200, path
    assert user.get(f"/api/v1/tasks/{MISSING_TASK}").status_code == 404
    for path in ("/api/v1/auth/tokens", "/api/v1/auth/clients"):
        r = user.get(path)
        assert r.status_code == 403 and r.json()["type"] == "urn:flowfed:problem:forbidden"
        assert httpx.get(f"{server.url}{path}").status_code == 401

    admin = server.client()
    listed = admin.get("/api/v1/auth/tokens")
    assert listed.status_code == 200
    assert {"tests", "plain-user"} <= {t["name"] for t in listed.json()}
    assert "secret" not in listed.text and server.token not in listed.text
    clients = admin.get("/api/v1/auth/clients")
    assert clients.status_code == 200 and all(
        c["client_id"].startswith("ffc_") for c in clients.json()
    )


def test_client_create_validates_role_and_scope(server: Server) -> None:
    def refused(*args: str) -> str:
        return str(new_client(server, "--name", "x", *args, check=2)["stderr"])

    assert "role must be one of node, tool" in refused("--role", "admin")
    assert "needs --scope task:" in refused("--role", "tool")
    assert "read 'node:" in refused("--role", "node", "--scope", "task:" + "a" * 32)
    assert "full task id" in refused("--role", "tool", "--scope", "task:abc")


def test_node_and_tool_tokens_cannot_watch_run_events(
    server: Server, tasks: tuple[str, list[str]]
) -> None:
    client = new_client(server, "--name", "local", "--role", "node")
    headers = {"Authorization": f"Bearer {access_token(server, client)}"}
    url = server.url.replace("http://", "ws://") + f"/api/v1/runs/{tasks[0]}/events"
    with pytest.raises(ConnectionClosed) as info, connect(url, additional_headers=headers) as ws:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    with connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["id"] == 1


def test_tokens_expire_and_servers_on_one_database_share_the_key(
    make_server: Callable[..., Server], db_url: str
) -> None:
    # Servers sharing a database share a broker (a memory:// one refuses to share it).
    broker = f"redis://127.0.0.1:6379/0?prefix=oauth{uuid.uuid4().hex[:8]}"
    a = make_server(db_url, "--token-ttl", "1", "--broker-url", broker, name="a")
    b = make_server(a.db_url, "--broker-url", broker, name="b")
    client = new_client(a, "--name", "local", "--role", "node")
    r = token_request(
        a, {"grant_type": "client_credentials"}, basic(client["client_id"], client["client_secret"])
    )
    assert r.status_code == 200 and r.json()["expires_in"] == 1
    access = r.json()["access_token"]
    # Issued by a, accepted by b: the key was generated once, in the database.
    assert b.client(access).get(f"/api/v1/tasks/{MISSING_TASK}").status_code == 403
    deadline = time.monotonic() + 10
    while a.client(access).get(f"/api/v1/tasks/{MISSING_TASK}").status_code == 403:
        assert time.monotonic() < deadline, "the access token never expired"
        time.sleep(0.2)
    r = a.client(access).get(f"/api/v1/tasks/{MISSING_TASK}")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_signing_key_options(make_server: Callable[..., Server], tmp_path: Any) -> None:
    from tests.server.conftest import flowfed, project_env

    url = f"sqlite:///{tmp_path / 'k.db'}"
    env = project_env(tmp_path, url)
    flowfed(tmp_path, env, "db", "upgrade")
    missing = flowfed(
        tmp_path, env, "server", "--port", "0", "--signing-key-file", "nope.key", check=2
    )
    assert "cannot read --signing-key-file 'nope.key'" in missing.stderr
    (tmp_path / "short.key").write_text("too short\n")
    short = flowfed(
        tmp_path, env, "server", "--port", "0", "--signing-key-file", "short.key", check=2
    )
    assert "at least 32" in short.stderr
    env_short = flowfed(
        tmp_path, {**env, "FLOWFED_SIGNING_KEY": "abc"}, "server", "--port", "0", check=2
    )
    assert "FLOWFED_SIGNING_KEY" in env_short.stderr
    ttl = flowfed(tmp_path, env, "server", "--port", "0", "--token-ttl", "0", check=2)
    assert "--token-ttl" in ttl.stderr

    key = tmp_path / "good.key"
    key.write_text("k" * 48 + "\n")
    s = make_server(None, "--signing-key-file", str(key), name="keyed")
    client = new_client(s, "--name", "local", "--role", "node")
    access = access_token(s, client)
    jwt.decode(access, "k" * 48, algorithms=["HS256"], audience="flowfed-api")
