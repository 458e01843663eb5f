"""The node protocol: JSON messages over one WebSocket between a node agent and the server.

Both ends import this module. Every frame is one JSON object with ``type`` and ``v``
(:data:`NODE_PROTOCOL_VERSION`). The node opens the connection (outbound only: it works
behind a hospital firewall) to ``/api/v1/nodes/connect`` with ``Authorization: Bearer
<node token>`` and sends ``register``; the server answers ``welcome``. See docs/nodes.md
for the sequence.

node → server: ``register``, ``heartbeat``, ``telemetry``, ``result``, ``task_error``,
``resume`` (after a reconnect: the tasks the node still holds).
server → node: ``welcome``, ``assign``, ``terminate``, ``ack`` (a result or error was
recorded: the node may forget it), ``heartbeat`` (echo).

Bytes (a central input, a shareable output) travel as standard base64 text.

Example:
    >>> msg = parse_node_message('{"type": "heartbeat", "v": "1", "seq": 4}')
    >>> msg.seq
    4
    >>> parse_node_message('{"type": "launch", "v": "1"}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    flowfed.node.protocol.NodeProtocolError: unknown message type 'launch'; expected one of ...
"""

from __future__ import annotations

import base64
import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from flowfed.runtime.remote import RemoteInput, RemoteOutput, RemoteResult, RemoteTask

NODE_PROTOCOL_VERSION = "1"
"""Bumped on any change an older peer could misread; frames of another version are refused."""

MAX_FRAME_BYTES = 8 * 1024 * 1024
"""Default largest frame either side accepts (bytes); larger frames are refused and logged."""

HEARTBEAT_S = 2.0
"""Default seconds between node heartbeats (the server's ``welcome`` may set another)."""

WS_PATH = "/api/v1/nodes/connect"
"""Where node agents connect."""


class NodeProtocolError(ValueError):
    """A frame that is not a valid node message (the text says what and which field)."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal["1"] = "1"


class ColumnInfo(BaseModel):
    """One column of a registered dataset."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str


class DatasetInfo(BaseModel):
    """What a node tells the server about one dataset: its schema and hash, never rows."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    format: Literal["csv", "parquet"]
    rows: int = Field(ge=0)
    columns: list[ColumnInfo]
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class HeldTask(BaseModel):
    """A task the node still holds after a reconnect: running, or finished unacknowledged."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    state: Literal["queued", "running", "finished", "error"]


class RegisterMessage(_Base):
    """node → server, first frame: who it is (must match its token), its datasets."""

    type: Literal["register"] = "register"
    node: str
    datasets: list[DatasetInfo] = Field(default_factory=list)
    max_tasks: int = Field(default=1, ge=1)
    runner: str = "inprocess"
    agent_version: str = ""


class WelcomeMessage(_Base):
    """server → node, answer to ``register``."""

    type: Literal["welcome"] = "welcome"
    node: str
    heartbeat_s: float = HEARTBEAT_S
    max_frame: int = MAX_FRAME_BYTES


class HeartbeatMessage(_Base):
    """Either way: liveness. The server echoes the node's."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int = 0
    at: float = Field(default_factory=time.time)


class WireInput(BaseModel):
    """A :class:`~flowfed.runtime.remote.RemoteInput` on the wire (``data`` in base64)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    hash: str
    size: int
    kind: str
    type_name: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    location: Literal["node", "central"] = "central"
    data: str | None = None
    pickled: bool = False


class WireTask(BaseModel):
    """A :class:`~flowfed.runtime.remote.RemoteTask` on the wire."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    task_id: str
    node: str
    dataset: str | None
    tool: str
    tool_version: str
    config: dict[str, Any]
    inputs: dict[str, WireInput | list[WireInput]]
    outputs: dict[str, str]
    shareable: list[str]
    timeout: float | None = None
    attempt: int = 1
    allow_pickle: bool = False
    step: str = ""
    round: int | None = None


class AssignMessage(_Base):
    """server → node: run this task."""

    type: Literal["assign"] = "assign"
    task: WireTask


class TelemetryMessage(_Base):
    """node → server: one telemetry item of a running task (see ``runtime.remote.Telemetry``)."""

    type: Literal["telemetry"] = "telemetry"
    task_id: str
    kind: Literal["state", "log", "metric", "progress"]
    payload: dict[str, Any]


class WireOutput(BaseModel):
    """A :class:`~flowfed.runtime.remote.RemoteOutput` on the wire (``data`` in base64)."""

    model_config = ConfigDict(extra="forbid")
    hash: str
    size: int
    kind: str
    type_name: str
    meta: dict[str, Any] = Field(default_factory=dict)
    pickled: bool = False
    data: str | None = None


class ResultMessage(_Base):
    """node → server: the task finished; its outputs (bytes only when shareable)."""

    type: Literal["result"] = "result"
    task_id: str
    outputs: dict[str, WireOutput]
    metrics: dict[str, float] = Field(default_factory=dict)


class TaskErrorMessage(_Base):
    """node → server: the task ended in Error (``report``: message, type, traceback, context)."""

    type: Literal["task_error"] = "task_error"
    task_id: str
    report: dict[str, Any]


class ResumeMessage(_Base):
    """node → server, after ``welcome`` on a reconnect: the tasks it still holds."""

    type: Literal["resume"] = "resume"
    tasks: list[HeldTask] = Field(default_factory=list)


class TerminateMessage(_Base):
    """server → node: stop this task (cancelled, timed out, or unknown to the server)."""

    type: Literal["terminate"] = "terminate"
    task_id: str
    reason: str = ""


class AckMessage(_Base):
    """server → node: the result or error of ``task_id`` is recorded; forget it."""

    type: Literal["ack"] = "ack"
    task_id: str


NodeMessage = Annotated[
    RegisterMessage
    | WelcomeMessage
    | HeartbeatMessage
    | AssignMessage
    | TelemetryMessage
    | ResultMessage
    | TaskErrorMessage
    | ResumeMessage
    | TerminateMessage
    | AckMessage,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(NodeMessage)
MESSAGE_TYPES = (
    "register",
    "welcome",
    "heartbeat",
    "assign",
    "telemetry",
    "result",
    "task_error",
    "resume",
    "terminate",
    "ack",
)


def parse_node_message(text: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Parse one frame (:class:`NodeProtocolError` saying what is wrong).

    Example:
        >>> parse_node_message('{"type": "ack", "v": "1", "task_id": "t1"}').task_id
        't1'
    """
    if len(text) > max_bytes:
        raise NodeProtocolError(f"frame of {len(text)} bytes is over the limit of {max_bytes}")
    try:
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NodeProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise NodeProtocolError(f"frame must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in MESSAGE_TYPES:
        raise NodeProtocolError(
            f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}"
        )
    if obj.get("v") != NODE_PROTOCOL_VERSION:
        raise NodeProtocolError(
            f"protocol version {obj.get('v')!r} is not supported (this side speaks "
            f"{NODE_PROTOCOL_VERSION!r})"
        )
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"][1:])
        raise NodeProtocolError(f"invalid {kind!r} message: {where}: {err['msg']}") from None


def dump_node_message(msg: BaseModel) -> str:
    """Encode a message as one JSON frame."""
    return msg.model_dump_json()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text.encode("ascii"), validate=True)


def task_to_wire(task: RemoteTask) -> WireTask:
    """A :class:`RemoteTask` as the ``assign`` message carries it."""

    def one(i: RemoteInput) -> WireInput:
        return WireInput(
            name=i.name,
            hash=i.hash,
            size=i.size,
            kind=i.kind,
            type_name=i.type_name,
            meta=i.meta,
            location="node" if i.location == "node" else "central",
            data=_b64(i.data),
            pickled=i.pickled,
        )

    inputs: dict[str, WireInput | list[WireInput]] = {
        k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in task.inputs.items()
    }
    return WireTask(
        run_id=task.run_id,
        task_id=task.task_id,
        node=task.node,
        dataset=task.dataset,
        tool=task.tool,
        tool_version=task.tool_version,
        config=task.config,
        inputs=inputs,
        outputs=task.outputs,
        shareable=task.shareable,
        timeout=task.timeout,
        attempt=task.attempt,
        allow_pickle=task.allow_pickle,
        step=task.step,
        round=task.round,
    )


def task_from_wire(w: WireTask) -> RemoteTask:
    """The :class:`RemoteTask` an ``assign`` message carries."""

    def one(i: WireInput) -> RemoteInput:
        return RemoteInput(
            name=i.name,
            hash=i.hash,
            size=i.size,
            kind=i.kind,
            type_name=i.type_name,
            meta=i.meta,
            location=i.location,
            data=_unb64(i.data),
            pickled=i.pickled,
        )

    inputs: dict[str, RemoteInput | list[RemoteInput]] = {
        k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in w.inputs.items()
    }
    return RemoteTask(
        run_id=w.run_id,
        task_id=w.task_id,
        node=w.node,
        dataset=w.dataset,
        tool=w.tool,
        tool_version=w.tool_version,
        config=w.config,
        inputs=inputs,
        outputs=w.outputs,
        shareable=w.shareable,
        timeout=w.timeout,
        attempt=w.attempt,
        allow_pickle=w.allow_pickle,
        step=w.step,
        round=w.round,
    )


def output_to_wire(o: RemoteOutput) -> WireOutput:
    """A :class:`RemoteOutput` as the ``result`` message carries it."""
    return WireOutput(
        hash=o.hash,
        size=o.size,
        kind=o.kind,
        type_name=o.type_name,
        meta=o.meta,
        pickled=o.pickled,
        data=_b64(o.data),
    )


def result_from_wire(msg: ResultMessage) -> RemoteResult:
    """The :class:`RemoteResult` a ``result`` message carries."""
    outputs = {
        name: RemoteOutput(
            hash=o.hash,
            size=o.size,
            kind=o.kind,
            type_name=o.type_name,
            meta=o.meta,
            pickled=o.pickled,
            data=_unb64(o.data),
        )
        for name, o in msg.outputs.items()
    }
    return RemoteResult(outputs=outputs, metrics=dict(msg.metrics))
