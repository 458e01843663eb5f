"""The protocol module: every message round-trips; bad frames fail naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowfed.runtime.lifecycle import State
from flowfed.runtime.protocol import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    ConfigMessage,
    ErrorDetail,
    ErrorMessage,
    HeartbeatMessage,
    HelloMessage,
    InlineInput,
    LogMessage,
    MetricMessage,
    OutputMessage,
    PathInput,
    ProgressMessage,
    ProtocolError,
    ResourcesMessage,
    RuntimeInfo,
    StartMessage,
    StatusMessage,
    TerminateMessage,
    ToolInfo,
    UrlInput,
    WelcomeMessage,
    b64encode,
    dump_message,
    parse_message,
    sha256_hex,
)

EXAMPLES: list[Any] = [
    HelloMessage(
        entrypoint="tools.py:scale",
        tool=ToolInfo(name="scale", version="1", type="preprocessing", inputs=["values"]),
        runtime=RuntimeInfo(python="3.11.7", platform="Linux", pid=42),
        mode="development",
    ),
    WelcomeMessage(task_id="t", run_id="r", step="s", node="n", attempt=2),
    ConfigMessage(values={"factor": 3}, revision=2),
    StartMessage(
        hyperparameters={"lr": 0.1},
        inputs={
            "a": InlineInput(value=[1, 2]),
            "b": InlineInput.of_bytes(b"\x00\x01"),
            "c": PathInput(path="/data/x.csv"),
            "d": UrlInput(url="https://platform/dl/once", sha256=sha256_hex(b"x")),
        },
    ),
    TerminateMessage(reason="user", grace_seconds=1),
    HeartbeatMessage(seq=9),
    StatusMessage(src=State.PENDING, dst=State.INITIALIZED, detail="ok"),
    StatusMessage(src=None, dst=State.PENDING),
    LogMessage(level="warning", message="careful"),
    MetricMessage(name="loss", value=0.25, step=3),
    ProgressMessage(fraction=0.5, message="half"),
    ProgressMessage(fraction=1.0, done=5000, total=5000, unit="images"),
    ResourcesMessage(wall_s=1.5, cpu_s=1.2, peak_rss_mb=85.0),
    OutputMessage(name="o", kind="bytes", size=1, sha256=sha256_hex(b"z"), data=b64encode(b"z")),
    ErrorMessage(
        message="bad", details=[ErrorDetail(field="config.x", message="nope")], fatal=False
    ),
]


def test_every_message_type_has_an_example() -> None:
    assert {m.type for m in EXAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.type)
def test_messages_round_trip_and_carry_type_and_version(msg: object) -> None:
    frame = dump_message(msg)  # type: ignore[arg-type]
    obj = json.loads(frame)
    assert obj["v"] == PROTOCOL_VERSION
    assert parse_message(frame) == msg
    assert parse_message(frame.encode()) == msg


def test_output_content_is_checked_against_its_hash() -> None:
    ok = OutputMessage(name="o", kind="bytes", size=2, sha256=sha256_hex(b"ab"), data="YWI=")
    assert ok.content() == b"ab"
    bad = ok.model_copy(update={"sha256": sha256_hex(b"other")})
    with pytest.raises(ValueError, match="does not match"):
        bad.content()


@pytest.mark.parametrize(
    ("frame", "field", "words"),
    [
        ("{nope", None, "not JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"v": "1"}', "type", "no 'type'"),
        ('{"type": "launch", "v": "1"}', "type", "unknown message type 'launch'"),
        ('{"type": "log", "message": "x"}', "v", "no protocol version"),
        ('{"type": "log", "v": "2", "message": "x"}', "v", "version '2' is not supported"),
        ('{"type": "log", "v": "1"}', "message", "Field required"),
        ('{"type": "log", "v": "1", "message": "x", "colour": 1}', "colour", "Extra inputs"),
        ('{"type": "metric", "v": "1", "name": "m", "value": "high"}', "value", "number"),
        ('{"type": "progress", "v": "1", "fraction": 2}', "fraction", "less than or equal"),
        ('{"type": "status", "v": "1", "src": null, "dst": "done"}', "dst", "Input should be"),
        (
            '{"type": "start", "v": "1", "inputs": {"x": {"source": "path"}}}',
            "inputs.x.path",
            "Field required",
        ),
        (
            '{"type": "start", "v": "1", "inputs": {"x": {"source": "path", "path": 3}}}',
            "inputs.x.path",
            "valid string",
        ),
        (
            '{"type": "start", "v": "1", "inputs": {"x": {"source": "ftp"}}}',
            "inputs.x",
            "'inline', 'path', 'url'",
        ),
    ],
)
def test_bad_frames_name_what_is_wrong(frame: str, field: str | None, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as info:
        parse_message(frame)
    assert info.value.field == field
    if field:
        assert field in str(info.value) or field in ("v", "type")
