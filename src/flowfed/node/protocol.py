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
import dataclasses
import json
import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass as wire_dataclass

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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> Any:
    # Frames carry base64 text; Python callers building a wire object pass the bytes.
    if isinstance(value, str):
        return base64.b64decode(value.encode("ascii"), validate=True)
    return value


_WireBytes = Annotated[
    bytes, BeforeValidator(_unb64), PlainSerializer(_b64, return_type=str, when_used="json")
]
"""Bytes that travel as standard base64 text in a frame."""

_WIRE = ConfigDict(extra="forbid")


# The wire forms below subclass the plain-data classes of flowfed.runtime.remote, so each
# field set is declared once (there); a wire class re-declares only what the wire changes.
@wire_dataclass(config=_WIRE)
class WireInput(RemoteInput):
    """A :class:`~flowfed.runtime.remote.RemoteInput` on the wire (``data`` in base64)."""

    location: Literal["node", "central"] = "central"
    data: _WireBytes | None = None


@wire_dataclass(config=_WIRE)
class WireTask(RemoteTask):
    """A :class:`~flowfed.runtime.remote.RemoteTask` on the wire."""

    # Each input in its wire form. A dict is invariant, so mypy cannot see that this only
    # narrows the base class's RemoteInput.
    inputs: dict[str, WireInput | list[WireInput]]  # type: ignore[assignment]


class AssignMessage(_Base):
    """server → node: run this task."""

    type: Literal["assign"] = "assign"
    task: WireTask


class TelemetryMessage(_Base):
    """node → server: one telemetry item of a running task (see ``runtime.remote.Telemetry``)."""

    type: Literal["telemetry"] = "telemetry"
    task_id: str
    kind: Literal["state", "log", "metric", "progress", "resources"]
    payload: dict[str, Any]


@wire_dataclass(config=_WIRE)
class WireOutput(RemoteOutput):
    """A :class:`~flowfed.runtime.remote.RemoteOutput` on the wire (``data`` in base64)."""

    data: _WireBytes | None = None


class ResultMessage(_Base):
    """node → server: the task finished; its outputs (bytes only when shareable)."""

    type: Literal["result"] = "result"
    task_id: str
    outputs: dict[str, WireOutput]
    metrics: dict[str, float] = Field(default_factory=dict)
    #: The node policy's decision per requested output (see ``RemoteResult.egress``).
    egress: list[dict[str, Any]] = Field(default_factory=list)


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


def _fields(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass instance, one level deep (unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def task_to_wire(task: RemoteTask) -> WireTask:
    """A :class:`RemoteTask` as the ``assign`` message carries it."""

    def one(i: RemoteInput) -> WireInput:
        location = "node" if i.location == "node" else "central"
        return WireInput(**{**_fields(i), "location": location})

    inputs: dict[str, WireInput | list[WireInput]] = {
        k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in task.inputs.items()
    }
    return WireTask(**{**_fields(task), "inputs": inputs})


def task_from_wire(w: WireTask) -> RemoteTask:
    """The :class:`RemoteTask` an ``assign`` message carries."""

    def one(i: WireInput) -> RemoteInput:
        return RemoteInput(**_fields(i))

    inputs: dict[str, RemoteInput | list[RemoteInput]] = {
        k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in w.inputs.items()
    }
    return RemoteTask(**{**_fields(w), "inputs": inputs})


def output_to_wire(o: RemoteOutput) -> WireOutput:
    """A :class:`RemoteOutput` as the ``result`` message carries it."""
    return WireOutput(**_fields(o))


def result_from_wire(msg: ResultMessage) -> RemoteResult:
    """The :class:`RemoteResult` a ``result`` message carries."""
    outputs = {name: RemoteOutput(**_fields(o)) for name, o in msg.outputs.items()}
    return RemoteResult(outputs=outputs, metrics=dict(msg.metrics), egress=list(msg.egress))
