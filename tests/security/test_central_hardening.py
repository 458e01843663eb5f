"""Red team against the central server, as a local user with an ordinary ``user`` token.

Every attack goes through a real ``flowfed server`` subprocess (its logs are files we can
grep, its memory a process we can measure) or the real CLI.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.security.central import find_marker
from tests.server.conftest import Server, flowfed, project_env, start_server, stop

#: The server must never grow past this while it refuses hostile input.
RSS_LIMIT = 500 * 1024 * 1024

# Billion laughs: 9 levels of 9 aliases each, 10^9 strings once expanded, ~350 bytes.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
MISSING_TASK = "0" * 32


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite-backed ``flowfed server`` for this module; its ``token`` is a user's."""
    root = tmp_path_factory.mktemp("central")
    server = start_server(root, f"sqlite:///{root / 'flowfed.db'}")
    server.token = server.new_token("--name", "mallory", "--role", "user")["token"]
    yield server
    stop(server)


def client(server: Server) -> httpx.Client:
    # The timeout is the "quickly": a server that expands the bomb never answers in it.
    c = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=10
    )
    server.clients.append(c)
    return c


def assert_alive_and_small(server: Server) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    rss = psutil.Process(server.proc.pid).memory_info().rss
    assert rss < RSS_LIMIT, f"server RSS {rss / 2**20:.0f} MiB after hostile input"


def problem(r: httpx.Response, status: int, limit: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = dict(r.json())
    assert body["limit"] == limit, body
    return body


# -- input bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/flows/validate", {"source": BOMB}),
        ("/api/v1/flows", {"source": BOMB, "format": "yaml"}),
        ("/api/v1/runs", {"source": BOMB, "format": "yaml"}),
    ],
)
def test_an_alias_bomb_is_refused_and_the_server_stays_small(
    central: Server, path: str, body: dict[str, Any]
) -> None:
    r = client(central).post(path, json=body)
    detail = problem(r, 422, "nodes")["detail"]
    assert "250,000 values (aliases expanded)" in detail
    assert_alive_and_small(central)


def test_a_recursive_alias_and_an_alias_deepening_past_the_limit_are_refused(
    central: Server,
) -> None:
    c = client(central)
    r = c.post("/api/v1/flows/validate", json={"source": "name: x\nsteps: &s [*s]\n"})
    assert "refers to a node that contains it" in problem(r, 422, "recursive-alias")["detail"]
    deep = "a: &d " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*d" + "]" * 30 + "\n"
    r = c.post("/api/v1/flows/validate", json={"source": deep})
    assert "through an alias" in problem(r, 422, "depth")["detail"]


def test_small_anchors_still_work(central: Server) -> None:
    source = (
        "name: anchored\n"
        "defaults: &n {n: 3}\n"
        "steps:\n"
        "  - {name: load, tool: numbers, params: *n, outputs: [raw]}\n"
        "  - {name: again, tool: numbers, params: *n, outputs: [raw2]}\n"
    )
    r = client(central).post("/api/v1/flows/validate", json={"source": source})
    # Not refused for its aliases: what is left is the flow's own business (an unknown key).
    assert r.status_code in (200, 422), r.text
    assert "limit" not in r.json(), r.text


@pytest.mark.parametrize("depth", [494, 5000])
@pytest.mark.parametrize(
    "source",
    [
        lambda d: "name: x\nsteps: " + "[" * d + "]" * d,  # YAML flow style
        lambda d: '{"name": "x", "steps": ' + '{"a": ' * d + "1" + "}" * d + "}",  # JSON text
        lambda d: "name: x\nsteps:\n" + "- " * d + "1\n",  # YAML block style, compact
    ],
    ids=["yaml-flow", "json-text", "yaml-block"],
)
def test_deep_flow_text_is_a_422_not_a_500(central: Server, depth: int, source: Any) -> None:
    r = client(central).post("/api/v1/flows/validate", json={"source": source(depth)})
    if r.status_code == 422 and r.json().get("limit") is None:
        # libyaml itself stops block nesting past ~1000 levels, as a located syntax error.
        assert "invalid YAML" in r.text and depth > 1000, r.text
    else:
        assert "deeper than 64 levels" in problem(r, 422, "depth")["detail"]
    assert_alive_and_small(central)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/flows/validate",
        "/api/v1/flows",
        "/api/v1/runs",
        "/api/v1/flows/execute",
        "/api/v1/triggers",
        "/api/v1/templates/local-pipeline/flows",
        "/api/v1/dev-sessions",
    ],
)
@pytest.mark.parametrize("depth", [494, 100_000])
def test_a_deep_json_body_is_a_422_on_every_endpoint(
    central: Server, path: str, depth: int
) -> None:
    body = '{"flow": ' + "[" * depth + "]" * depth + "}"
    r = client(central).post(path, content=body, headers={"content-type": "application/json"})
    assert "deeper than the limit of 64 levels" in problem(r, 422, "depth")["detail"]
    # Without a content type FastAPI parses JSON too: the same answer.
    r = client(central).post(path, content=body)
    problem(r, 422, "depth")
    assert_alive_and_small(central)


def test_a_deep_websocket_message_closes_the_socket_not_the_server(central: Server) -> None:
    url = "ws" + central.url[4:] + f"/api/v1/runs/{MISSING_TASK}/events"
    with pytest.raises(ConnectionClosed) as info, connect(url, open_timeout=10) as ws:
        ws.send("[" * 100_000 + "]" * 100_000)
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1003
    assert_alive_and_small(central)


def test_too_large_flow_text_is_a_413(central: Server) -> None:
    big = "name: x\nsteps: []\n#" + "x" * (9 * 1024 * 1024)
    r = client(central).post("/api/v1/flows/validate", json={"source": big})
    assert "over the limit of 8,388,608" in problem(r, 413, "size")["detail"]
    r = client(central).post("/api/v1/flows/validate", content=b"{" + b" " * (11 * 2**20))
    problem(r, 413, "size")
    assert_alive_and_small(central)


def test_the_cli_refuses_hostile_flow_files_with_exit_2(tmp_path: Path) -> None:
    env = project_env(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "deep.json").write_text('{"name": "x", "steps": ' + "[" * 800 + "]" * 800 + "}")
    (tmp_path / "huge.yaml").write_bytes(b"name: x\n#" + b"x" * (9 * 2**20))
    for command in ("validate", "run"):
        res = flowfed(tmp_path, env, command, "bomb.yaml", check=2)
        assert "bomb.yaml:" in res.stderr + res.stdout
        assert "250,000 values (aliases expanded)" in res.stderr + res.stdout
        res = flowfed(tmp_path, env, command, "deep.json", check=2)
        assert "nesting deeper than 64 levels" in res.stderr + res.stdout
        res = flowfed(tmp_path, env, command, "huge.yaml", check=2)
        assert "over the limit of 8,388,608" in res.stderr + res.stdout


# -- scopes -------------------------------------------------------------------------------


def test_a_token_with_a_scope_its_client_was_never_given_is_refused(central: Server) -> None:
    res = central.ff(
        "auth", "client", "create", "--json", "--database-url", central.db_url,
        "--name", "hospital-a", "--role", "node",
    )  # fmt: skip
    registered = json.loads(res.stdout)
    # The attacker holds the signing key (the worst case: read from a leaked key file).
    key_file = Path(central.db_url.removeprefix("sqlite:///") + ".signing-key")
    key = base64.urlsafe_b64decode(key_file.read_text().strip())
    now = int(time.time())
    claims = {
        "iss": "flowfed", "aud": "flowfed-api", "sub": registered["client_id"],
        "client_id": registered["client_id"], "name": "hospital-a", "role": "node",
        "iat": now, "exp": now + 600, "jti": "f" * 32,
    }  # fmt: skip

    def forged(scope: str) -> str:
        return jwt.encode({**claims, "scope": scope}, key, "HS256", headers={"typ": "at+jwt"})

    with httpx.Client(base_url=central.url, timeout=10) as c:
        # The key is right: a token with the registered scope is accepted (403: a missing
        # task, out of scope, is the answer an accepted node token gets)...
        ok = c.get(f"/api/v1/tasks/{MISSING_TASK}", headers=bearer(forged("node:hospital-a")))
        assert ok.status_code == 403, ok.text
        # ...and any scope beyond the registration is refused outright.
        for scope in ("node:hospital-a node:hospital-b", "node:hospital-b", "task:" + "a" * 32):
            r = c.get(f"/api/v1/tasks/{MISSING_TASK}", headers=bearer(forged(scope)))
            assert r.status_code == 401, (scope, r.text)
            assert r.json()["type"] == "urn:flowfed:problem:unauthorized"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- logs ---------------------------------------------------------------------------------


def test_tokens_never_reach_the_server_logs(central: Server) -> None:
    secret = central.token.split(".", 1)[1]
    ws_url = "ws" + central.url[4:] + f"/api/v1/runs/{MISSING_TASK}/events"
    # The browser way: the token in the query string. The run does not exist: 4404.
    query = f"?access_token={central.token}"
    with pytest.raises(ConnectionClosed) as info, connect(ws_url + query, open_timeout=10) as ws:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404
    # REST with the token in a query parameter and in the header.
    c = client(central)
    assert c.get("/api/v1/me", params={"token": central.token}).status_code == 200
    assert c.get("/api/v1/me", params={"access_token": central.token}).status_code == 200
    # A bad token, logged nowhere either.
    assert httpx.get(f"{central.url}/api/v1/me?access_token=ffu_{'b' * 32}.nope-secret").status_code
    deadline = time.monotonic() + 10
    logs = ""
    while "access_token=[redacted]" not in logs or "token=[redacted]" not in logs:
        assert time.monotonic() < deadline, f"the requests were not logged:\n{logs}"
        time.sleep(0.1)
        logs = "".join((central.root / f).read_text() for f in ("server.out", "server.err"))
    assert secret not in logs
    assert "nope-secret" not in logs
    assert find_marker(secret.encode(), paths=[central.root / "server.out"]) == []
    assert "/events?access_token=[redacted]" in logs  # the WebSocket line is there, redacted


# -- files --------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_catalog_files_are_private_and_hold_no_signing_key(central: Server) -> None:
    catalog = Path(central.db_url.removeprefix("sqlite:///"))
    # Writes, so the WAL has content.
    r = client(central).post(
        "/api/v1/flows",
        json={"flow": {"name": "w", "steps": [{"name": "a", "tool": "numbers"}]}},
    )
    assert r.status_code == 201, r.text
    for suffix in ("", "-wal", "-shm"):
        path = catalog.with_name(catalog.name + suffix)
        assert path.exists(), path
        assert mode(path) == 0o600, (path, oct(mode(path)))
    key_file = catalog.with_name(catalog.name + ".signing-key")
    assert mode(key_file) == 0o600
    text = key_file.read_text().strip()
    catalog_files = [catalog.with_name(catalog.name + s) for s in ("", "-wal", "-shm")]
    for marker in (text.encode(), base64.urlsafe_b64decode(text)):
        assert find_marker(marker, paths=catalog_files) == []
    with sqlite3.connect(catalog) as conn:
        assert conn.execute("SELECT count(*) FROM signing_keys").fetchone() == (0,)


def test_an_old_catalog_is_tightened_and_its_key_moved_out(tmp_path: Path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    catalog = root / "flowfed.db"
    url = f"sqlite:///{catalog}"
    flowfed(root, project_env(root, url), "db", "upgrade")
    # What an older flowfed left: its key in the catalog, files readable by everyone.
    old_key = base64.urlsafe_b64encode(b"K" * 32).decode()
    with sqlite3.connect(catalog) as conn:
        conn.execute(
            "INSERT INTO signing_keys (id, secret, created_at) VALUES (?, ?, ?)",
            ("access-tokens-hs256", old_key, time.time()),
        )
    for path in root.glob("flowfed.db*"):
        path.chmod(0o644)
    server = start_server(root, url, upgrade=False)
    try:
        key_file = root / "flowfed.db.signing-key"
        assert key_file.read_text().strip() == old_key  # tokens it signed stay valid
        assert mode(key_file) == 0o600
        for path in root.glob("flowfed.db*"):
            assert mode(path) == 0o600, path
        hits = find_marker(old_key.encode(), paths=[root])
        assert hits == [str(key_file)], hits
        assert find_marker(b"K" * 32, paths=[root]) == []
    finally:
        stop(server)
