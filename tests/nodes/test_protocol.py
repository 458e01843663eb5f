"""The node protocol's messages: round trips and refusals (pure, no network)."""

from __future__ import annotations

import pytest

from flowfed.node.protocol import (
    AssignMessage,
    NodeProtocolError,
    ResultMessage,
    dump_node_message,
    output_to_wire,
    parse_node_message,
    result_from_wire,
    task_from_wire,
    task_to_wire,
)
from flowfed.runtime.remote import RemoteInput, RemoteOutput, RemoteTask


def test_task_round_trip_keeps_bytes() -> None:
    task = RemoteTask(
        run_id="r", task_id="t", node="a", dataset="breast", tool="x", tool_version="1",
        config={"k": [1, 2]},
        inputs={
            "model": RemoteInput(name="m", hash="h1", size=3, kind="bytes", data=b"\x00\xff\x01"),
            "parts": [RemoteInput(name="p", hash="h2", size=0, kind="json", location="node")],
        },
        outputs={"output": "y"}, shareable=["output"], timeout=5.0, round=3,
    )  # fmt: skip
    frame = dump_node_message(AssignMessage(task=task_to_wire(task)))
    back = task_from_wire(parse_node_message(frame).task)
    assert back == task


def test_result_round_trip() -> None:
    out = RemoteOutput(hash="h", size=2, kind="bytes", type_name="bytes", data=b"ok")
    msg = ResultMessage(task_id="t", outputs={"output": output_to_wire(out)}, metrics={"a": 1.0})
    back = result_from_wire(parse_node_message(dump_node_message(msg)))
    assert back.outputs["output"] == out and back.metrics == {"a": 1.0}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"type": "launch", "v": "1"}', "unknown message type 'launch'"),
        ('{"type": "ack", "v": "9", "task_id": "t"}', "protocol version '9' is not supported"),
        ('{"type": "ack", "v": "1"}', "invalid 'ack' message: task_id: Field required"),
        ('{"type": "ack", "v": "1", "task_id": "t", "x": 1}', "invalid 'ack' message: x"),
        ("[1, 2]", "frame must be a JSON object"),
        ("{", "frame is not JSON"),
        (
            '{"type": "register", "v": "1", "node": "a", "datasets": [{"name": "d", '
            '"format": "xlsx", "rows": 1, "columns": [], "hash": "' + "0" * 64 + '"}]}',
            "invalid 'register' message: datasets.0.format",
        ),
    ],
)
def test_refused_frames_say_why(frame: str, message: str) -> None:
    with pytest.raises(NodeProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_node_message(frame)


def test_frames_over_the_limit_are_refused() -> None:
    with pytest.raises(NodeProtocolError, match="frame of 101 bytes is over the limit of 100"):
        parse_node_message("x" * 101, max_bytes=100)


def test_the_node_package_never_imports_db_server_or_engine() -> None:
    """House rule: node/ imports runtime, tools and artifacts, never db, server or engine.

    Checked on what a node process actually loads, not on its import lines: a fresh
    interpreter imports the agent, every module of flowfed.node and the built-in tool
    library a node serves, and then must hold none of the central side's modules (nor
    SQLAlchemy, which only the catalog needs).
    """
    import subprocess
    import sys

    probe = (
        "import importlib, pkgutil, sys\n"
        "import flowfed.node.agent, flowfed.node\n"
        "for m in pkgutil.walk_packages(flowfed.node.__path__, 'flowfed.node.'):\n"
        "    importlib.import_module(m.name)\n"
        "import flowfed.tools.library\n"
        "banned = ('flowfed.db', 'flowfed.server', 'flowfed.engine', 'flowfed.cli', "
        "'sqlalchemy', 'alembic')\n"
        "print('\\n'.join(sorted(n for n in sys.modules if n.startswith(banned))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert loaded == [], f"a node process loads {loaded}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "not base64!"}, r"task\.inputs\.model\.WireInput\.data: Value error"),
        ({"location": "moon"}, r"task\.inputs\.model\.WireInput\.location"),
        ({"colour": "red"}, r"task\.inputs\.model\.WireInput\.colour"),
    ],
)
def test_assign_frames_with_a_bad_input_are_refused(change: dict[str, str], message: str) -> None:
    """The wire forms check what the plain dataclasses cannot: base64, location, no extras."""
    import json

    task = RemoteTask(
        run_id="r", task_id="t", node="a", dataset=None, tool="x", tool_version="1", config={},
        inputs={"model": RemoteInput(name="m", hash="h", size=1, kind="bytes", data=b"\x01")},
        outputs={}, shareable=[],
    )  # fmt: skip
    frame = json.loads(dump_node_message(AssignMessage(task=task_to_wire(task))))
    frame["task"]["inputs"]["model"].update(change)
    with pytest.raises(NodeProtocolError, match=rf"invalid 'assign' message: {message}"):
        parse_node_message(json.dumps(frame))
