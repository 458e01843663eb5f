"""The tool-side engine as a real subprocess against a real WebSocket platform peer."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorMessage,
    HeartbeatMessage,
    HelloMessage,
    InlineInput,
    LogMessage,
    MetricMessage,
    OutputMessage,
    OutputPolicy,
    PathInput,
    ProgressMessage,
    StartMessage,
    StatusMessage,
    TerminateMessage,
    UrlInput,
    sha256_hex,
)
from flowfed.runtime.toolside import EXIT_UNREACHABLE, canonical_json
from tests.polling import free_port

from .conftest import TOKEN, Peer, run_platform, spawn_tool

HAPPY = [State.PENDING, State.INITIALIZED, State.STARTED, State.RUNNING, State.FINISHED]


def test_happy_path_runs_the_whole_lifecycle(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        hello = await peer.handshake({"factor": 3})
        assert hello.tool is not None and hello.tool.name == "scale"
        assert hello.tool.inputs == ["values"] and "factor" in str(hello.tool.config_schema)
        assert hello.mode == "production"
        await peer.until_state(State.INITIALIZED)
        await peer.send(HeartbeatMessage(seq=7))
        beat = await peer.until(HeartbeatMessage)
        assert beat.seq == 7
        await peer.send(
            StartMessage(
                hyperparameters={"label": "r1"}, inputs={"values": InlineInput(value=[1, 2])}
            )
        )

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 0, out.stderr
    assert out.auth == f"Bearer {TOKEN}"
    assert isinstance(out.received[0], HelloMessage)
    assert out.states == HAPPY
    statuses = out.of(StatusMessage)
    assert [s.src for s in statuses] == [None, *HAPPY[:-1]]
    assert all(a.at <= b.at for a, b in itertools.pairwise(statuses))
    assert out.received[-1] == statuses[-1]  # the final status is the last frame

    assert [m.message for m in out.of(LogMessage)] == ["scaling 2 values"]
    assert [(m.name, m.value, m.step) for m in out.of(MetricMessage)] == [
        ("seen", 1.0, 0),
        ("seen", 2.0, 1),
    ]
    assert [p.fraction for p in out.of(ProgressMessage)] == [0.5, 1.0]

    (output,) = out.of(OutputMessage)
    expected = {"label": "r1", "values": [3.0, 6.0]}
    assert output.name == "output" and output.kind == "json"
    assert output.sha256 == sha256_hex(canonical_json(expected))
    assert json.loads(output.content()) == expected
    assert output.size == len(output.content())


def test_invalid_config_is_an_error_naming_the_field(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake({"factor": "lots", "colour": "red"})

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.phase == "config" and err.error_type == "ConfigError" and err.fatal
    assert {d.field for d in err.details} == {"config.factor", "config.colour"}
    assert "config.factor" in err.message
    assert err.context["state"] == "pending" and err.context["tool"] == "scale@1.2"
    assert out.states == [State.PENDING, State.ERROR]
    assert out.received[-1].type == "status"
    assert "config.factor" in out.stderr


def test_missing_input_aborts_the_run(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(StartMessage(inputs={}))

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.phase == "inputs"
    assert [(d.field, d.message) for d in err.details] == [("inputs.values", "input missing")]
    assert out.states == [State.PENDING, State.INITIALIZED, State.STARTED, State.ERROR]


def test_absent_path_and_wrong_hash_are_rejected(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")

    async def absent(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(StartMessage(inputs={"data": PathInput(path=str(tmp_path / "nope"))}))

    out = run_platform(absent, tmp_path, "reverse")
    (err,) = out.of(ErrorMessage)
    assert out.returncode == 1 and "not present in the sandbox" in err.message

    async def tampered(peer: Peer) -> None:
        await peer.handshake()
        bad = sha256_hex(b"something else")
        await peer.send(StartMessage(inputs={"data": PathInput(path=str(data), sha256=bad)}))

    out = run_platform(tampered, tmp_path, "reverse")
    (err,) = out.of(ErrorMessage)
    assert out.returncode == 1 and err.details[0].field == "inputs.data"
    assert "does not match" in err.message


def test_url_input_is_downloaded_and_large_output_goes_to_the_directory(
    tmp_path: Path, file_server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = file_server
    payload = bytes(range(256)) * 10
    files["/dl/once"] = payload
    outdir = tmp_path / "outputs"

    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(
            StartMessage(
                inputs={"data": UrlInput(url=f"{base}/dl/once", sha256=sha256_hex(payload))},
                outputs=OutputPolicy(inline_limit=100, directory=str(outdir)),
            )
        )

    out = run_platform(platform, tmp_path, "reverse")
    assert out.returncode == 0, out.stderr
    (output,) = out.of(OutputMessage)
    assert output.kind == "bytes" and output.data is None and output.path
    written = Path(output.path).read_bytes()
    assert written == payload[::-1] and output.sha256 == sha256_hex(written)
    # the downloaded input lived in the run's temp dir, which the cleanup removed
    assert list((tmp_path / "tmp").iterdir()) == []


def test_failed_download_is_an_input_error(
    tmp_path: Path, file_server: tuple[str, dict[str, bytes]]
) -> None:
    base, _ = file_server

    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(StartMessage(inputs={"data": UrlInput(url=f"{base}/expired")}))

    out = run_platform(platform, tmp_path, "reverse")
    (err,) = out.of(ErrorMessage)
    assert out.returncode == 1 and "HTTP 404" in err.message


def test_a_raising_tool_reports_its_traceback(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake({"why": "division by zero, sort of"})
        await peer.send(StartMessage())

    out = run_platform(platform, tmp_path, "boom")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.error_type == "RuntimeError" and err.phase == "running"
    assert err.message == "RuntimeError: division by zero, sort of"
    assert err.traceback and "tools.py" in err.traceback and "in boom" in err.traceback
    assert err.context["state"] == "running" and err.context["task_id"] == "t-1"
    assert list((tmp_path / "tmp").iterdir()) == []  # cleaned up on the error path too
    assert [m.message for m in out.of(LogMessage)] == ["about to fail"]
    assert out.states == [*HAPPY[:-1], State.ERROR]
    assert out.received[-1] == out.of(StatusMessage)[-1]


def test_terminate_while_idle_exits_cleanly(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.until_state(State.INITIALIZED)
        await peer.send(TerminateMessage(reason="user cancelled"))

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 0, out.stderr
    assert out.states == [State.PENDING, State.INITIALIZED, State.CANCELLED]
    assert out.of(StatusMessage)[-1].detail == "terminated: user cancelled"
    assert not out.of(ErrorMessage)


def test_terminate_while_running_cancels_the_tool(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(StartMessage())
        await peer.until_state(State.RUNNING)
        await peer.send(TerminateMessage(reason="stop", grace_seconds=10))

    out = run_platform(platform, tmp_path, "sleepy")
    assert out.returncode == 0, out.stderr
    assert out.states == [*HAPPY[:-1], State.CANCELLED]
    assert out.elapsed < 10  # the tool cooperated; no grace period was needed


def test_a_tool_ignoring_terminate_is_stopped_after_the_grace_period(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.send(StartMessage())
        await peer.until_state(State.RUNNING)
        await peer.send(TerminateMessage(reason="stop", grace_seconds=0.5))

    out = run_platform(platform, tmp_path, "stubborn")
    assert out.returncode == 0, out.stderr
    assert out.states == [*HAPPY[:-1], State.CANCELLED]
    assert "did not return within 0.5 s" in (out.of(StatusMessage)[-1].detail or "")
    assert out.elapsed < 30
    assert list((tmp_path / "tmp").iterdir()) == []


def test_dev_mode_accepts_config_updates_before_start(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake({"factor": 2})
        await peer.until_state(State.INITIALIZED)
        await peer.send(ConfigMessage(values={"factor": "ten"}, revision=2))
        rejected = await peer.until(ErrorMessage)
        assert not rejected.fatal and rejected.details[0].field == "config.factor"
        await peer.send(ConfigMessage(values={"factor": 10}, revision=3))
        await peer.until(LogMessage, lambda m: "revision 3 applied" in m.message)
        await peer.send(StartMessage(inputs={"values": InlineInput(value=[1])}))

    out = run_platform(platform, tmp_path, "scale", args=["--dev"])
    assert out.returncode == 0, out.stderr
    assert out.of(HelloMessage)[0].mode == "development"
    assert out.states == HAPPY
    (output,) = out.of(OutputMessage)
    assert json.loads(output.content()) == {"label": "x", "values": [10.0]}


def test_config_updates_are_refused_in_production_mode(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.until_state(State.INITIALIZED)
        await peer.send(ConfigMessage(values={"factor": 10}, revision=2))

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.phase == "protocol" and "development mode" in err.message


def test_garbage_from_the_platform_is_a_protocol_error(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.until_state(State.INITIALIZED)
        await peer.send_raw("this is {not json")

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.phase == "protocol" and err.error_type == "ProtocolError"
    assert "not JSON" in err.message
    assert out.states == [State.PENDING, State.INITIALIZED, State.ERROR]


def test_a_frame_of_another_protocol_version_is_refused(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.until(HelloMessage)
        await peer.send_raw('{"type": "welcome", "v": "9"}')

    out = run_platform(platform, tmp_path, "scale")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert "version '9' is not supported" in err.message and err.details[0].field == "v"


def test_a_silent_platform_hits_the_idle_timeout(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        await peer.handshake()
        await peer.until_state(State.INITIALIZED)
        await asyncio.sleep(0)  # and then never send start

    out = run_platform(platform, tmp_path, "scale", timeout=1)
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.error_type == "IdleTimeout" and "'start'" in err.message


def test_an_unloadable_tool_still_says_hello_then_reports(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        hello = await peer.until(HelloMessage)
        assert hello.tool is None and hello.entrypoint.endswith(":missing")

    out = run_platform(platform, tmp_path, "missing")
    assert out.returncode == 1
    (err,) = out.of(ErrorMessage)
    assert err.phase == "load" and "no function 'missing'" in err.message
    assert out.states == [State.PENDING, State.ERROR]


def test_a_bad_token_is_refused_at_the_upgrade(tmp_path: Path) -> None:
    async def platform(peer: Peer) -> None:
        raise AssertionError("no connection should be accepted")

    out = run_platform(platform, tmp_path, "scale", token="stolen")
    assert out.returncode == 1 and "HTTP 401" in out.stderr
    assert out.auth == "Bearer stolen"


def test_connect_timeout_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()  # bound then released: nothing listens there now
    t0 = time.monotonic()
    code, err = asyncio.run(
        spawn_tool(
            [
                "--endpoint",
                f"ws://127.0.0.1:{port}/ws",
                "--token",
                TOKEN,
                "--tool",
                "textwrap:dedent",
                "--timeout",
                "1",
            ],
            cwd=tmp_path,
        )
    )
    assert code == EXIT_UNREACHABLE
    assert f"could not connect to ws://127.0.0.1:{port}/ws within 1 s" in err
    assert time.monotonic() - t0 < 10


def test_toolside_stays_light() -> None:
    code = (
        "import sys, json, flowfed.runtime.toolside, flowfed.runtime.__main__;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    forbidden = ("flowfed.server", "flowfed.db", "flowfed.engine", "sqlalchemy", "fastapi")
    leaked = sorted(m for m in loaded if m.startswith(forbidden))
    assert leaked == []
    assert "flowfed.runtime.toolside" in loaded  # the check really imported it
