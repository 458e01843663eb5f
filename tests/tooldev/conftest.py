"""A real server subprocess for the tool-runtime and dev-mode tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server, start_server, stop

#: Small frame limit, so the oversize test sends kilobytes, not megabytes.
MAX_FRAME = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SQLite-backed server per module, with a small tool frame limit."""
    root = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWFED_TOOL_MAX_FRAME", str(MAX_FRAME))
        mp.setenv("FLOWFED_TOOL_HEARTBEAT_S", "1")
        s = start_server(root, f"sqlite:///{root / 'flowfed.db'}")
    yield s
    stop(s)


def server_log(server: Server) -> str:
    return (server.root / "server.err").read_text()


def new_tool_token(server: Server, task_id: str) -> str:
    res = server.ff(
        "auth", "client", "create", "--json", "--database-url", server.db_url,
        "--name", f"tool-{task_id[:8]}", "--role", "tool", "--scope", f"task:{task_id}",
    )  # fmt: skip
    client = json.loads(res.stdout)
    r = httpx.post(
        f"{server.url}/api/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


class Proc:
    """A background CLI process whose output goes to files (read while it runs)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                # Like a command typed at a terminal: Ctrl-C works even when the suite
                # runs in a background job, whose children start with SIGINT ignored.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None or text in self.out, (
                f"exited {self.proc.returncode} before printing {text!r}\n{self.out}\n{self.err}"
            )
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.out}\n{self.err}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def env_of(server: Server) -> dict[str, str]:
    env = dict(server.env)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return env
