"""Health, readiness, metrics, tokens and start-up refusals of a real server."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server, flowfed, project_env


def test_health_and_ready_need_no_token(server: Server) -> None:
    anon = server.client(auth=False)
    assert anon.get("/health").json() == {"status": "ok"}
    r = anon.get("/ready")
    assert r.status_code == 200 and r.json() == {"database": "ok", "bus": "ok"}
    assert anon.get("/openapi.json").status_code == 200


def test_metrics_count_requests_by_route_and_runs(server: Server, api: httpx.Client) -> None:
    api.get("/api/v1/tools")
    api.get("/api/v1/tools/no_such_tool")
    body = api.get("/metrics")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    text = body.text
    assert 'flowfed_http_requests_total{method="GET",route="/api/v1/tools",status="200"}' in text
    assert 'route="/api/v1/tools/{name}",status="404"' in text
    assert "flowfed_runs_active" in text and "flowfed_runs_started_total" in text


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer nonsense",
        "Bearer ffu_" + "0" * 32 + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_missing_or_wrong_tokens_get_the_same_401(server: Server, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = httpx.get(f"{server.url}/api/v1/runs", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 401 and body["instance"] == "/api/v1/runs"
    assert "Traceback" not in r.text
    assert httpx.get(f"{server.url}/metrics", headers=headers).status_code == 401


def test_a_tampered_secret_is_refused(server: Server) -> None:
    good = server.token
    bad = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert server.client(bad).get("/api/v1/me").status_code == 401
    me = server.client().get("/api/v1/me").json()
    assert me["name"] == "tests" and me["role"] == "admin"


def test_revoked_and_expired_tokens_are_refused(server: Server) -> None:
    created = server.new_token("--name", "temp")
    c = server.client(created["token"])
    assert c.get("/api/v1/me").json()["role"] == "user"
    listed = server.ff("auth", "token", "list", "--json", "--database-url", server.db_url)
    assert created["id"] in listed.stdout and created["token"] not in listed.stdout
    assert "secret" not in listed.stdout
    server.ff("auth", "token", "revoke", created["id"], "--database-url", server.db_url)
    r = c.get("/api/v1/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"

    expiring = server.new_token("--name", "short", "--expires-in-days", "1")
    e = server.client(expiring["token"])
    assert e.get("/api/v1/me").status_code == 200
    # Move the expiry into the past, as time passing would.
    db_file = server.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db_file) as conn:
        conn.execute(
            "UPDATE api_tokens SET expires_at = ? WHERE id = ?", (time.time() - 1, expiring["id"])
        )
    assert e.get("/api/v1/me").status_code == 401

    gone = server.ff("auth", "token", "revoke", "f" * 32, "--database-url", server.db_url, check=2)
    assert "no token" in gone.stderr


def test_token_create_rejects_a_bad_role(server: Server) -> None:
    res = server.ff(
        "auth", "token", "create", "--name", "x", "--role", "root",
        "--database-url", server.db_url, check=2,
    )  # fmt: skip
    assert "role must be one of admin, user" in res.stderr


def test_server_refuses_an_un_upgraded_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = project_env(tmp_path, url)
    res = flowfed(tmp_path, env, "server", "--port", "0", "--database-url", url, check=2)
    assert "flowfed db upgrade" in res.stderr and "out of date" in res.stderr
    assert "Traceback" not in res.stderr
    # Token commands refuse it the same way.
    res = flowfed(tmp_path, env, "auth", "token", "create", "--name", "x", check=2)
    assert "flowfed db upgrade" in res.stderr


def test_server_refuses_an_unsupported_broker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.db'}"
    env = project_env(tmp_path, url)
    flowfed(tmp_path, env, "db", "upgrade")
    res = flowfed(
        tmp_path, env, "server", "--port", "0", "--broker-url", "kafka://localhost", check=2
    )
    assert "kafka://localhost" in res.stderr and "memory://" in res.stderr


def test_server_refuses_a_broken_tools_module(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.db'}"
    env = project_env(tmp_path, url)
    flowfed(tmp_path, env, "db", "upgrade")
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    res = flowfed(tmp_path, env, "server", "--port", "0", "--import", "bad.py", check=2)
    assert "cannot import tools" in res.stderr and "no_such_module_here" in res.stderr


def test_server_stops_cleanly_on_sigterm(make_server) -> None:  # type: ignore[no-untyped-def]
    s = make_server()
    s.proc.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -SIGTERM).
    assert s.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    log = (s.root / "server.err").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
