"""The tool runtime protocol: JSON messages over one WebSocket between a tool and the platform.

Both ends import this module, so a message means the same thing on either side. Every frame
is one JSON object with a ``type`` (which message it is) and ``v`` (the protocol version,
:data:`PROTOCOL_VERSION`). :data:`Message` is the discriminated union of all of them;
:func:`parse_message` turns a frame into a model (or a :class:`ProtocolError` naming the
offending field) and :func:`dump_message` turns a model back into a frame.

Authentication happens in the WebSocket upgrade itself (``Authorization: Bearer <token>``,
the OAuth2 access token of role ``tool`` scoped ``task:<id>``), not in a message: the
platform can refuse an unauthenticated peer before any frame is exchanged, and the token
never appears in a recorded message log. The platform answers the tool's ``hello`` with
``welcome`` (who this run is) and then ``config``.

Example:
    >>> msg = parse_message('{"type": "log", "v": "1", "message": "epoch 1 done"}')
    >>> msg.level, msg.message
    ('info', 'epoch 1 done')
    >>> parse_message(dump_message(MetricMessage(name="loss", value=0.5))).value
    0.5
    >>> parse_message('{"type": "start", "v": "1", "inputs": {"x": {"source": "path"}}}')
    Traceback (most recent call last):
    ...
    flowfed.runtime.protocol.ProtocolError: invalid 'start' message: inputs.x.path: Field required
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from flowfed.runtime.lifecycle import State

PROTOCOL_VERSION = "1"
"""Bumped on any change an older peer could misread; peers refuse frames of another version."""

INLINE_LIMIT = 16 * 1024
"""Default largest output sent inline (bytes); matches the catalog's small-object limit."""

#: How an input or output's bytes are to be read. ``json``: UTF-8 JSON; ``bytes``: raw;
#: ``text``: UTF-8 text; ``npy``: a NumPy ``.npy`` file; ``file``: handed to the tool as a
#: path; ``model``: a file written by a ``flowfed.Model``'s ``save``; ``pandas``: a pandas
#: DataFrame as Parquet (needs pyarrow on the tool side); ``pickle``: only for tools
#: registered with ``allow_pickle``.
Kind = Literal["json", "bytes", "text", "npy", "pandas", "file", "model", "pickle"]

Level = Literal["debug", "info", "warning", "error"]


def _now() -> float:
    return time.time()


def b64encode(data: bytes) -> str:
    """Standard base64 text of ``data`` (how bytes travel inside JSON frames).

    Example:
        >>> b64encode(b"hi"), b64decode("aGk=")
        ('aGk=', b'hi')
    """
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode standard base64, refusing stray characters instead of skipping them."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def sha256_hex(data: bytes) -> str:
    """The content hash used for inputs and outputs: ``sha256:<hex>``.

    Example:
        >>> sha256_hex(b"")[:15]
        'sha256:e3b0c442'
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Base(BaseModel):
    # Unknown fields are refused so that a typo in a peer's frame is an error naming the
    # field rather than a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal["1"] = "1"  # == PROTOCOL_VERSION; a Literal so other versions fail to validate


# --- handshake -------------------------------------------------------------------------


class ToolInfo(BaseModel):
    """What the tool declares about itself in ``hello``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    type: str
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    config_schema: dict[str, Any] = Field(default_factory=dict)


class RuntimeInfo(BaseModel):
    """Where the tool runs (recorded with the run for reproducibility)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str
    platform: str
    pid: int
    hostname: str = ""
    flowfed: str = ""
    protocol: str = PROTOCOL_VERSION


class HelloMessage(_Base):
    """tool → platform, first frame: who the tool is and how it runs.

    ``tool`` is None only when the entry point could not be loaded; an ``error`` follows.
    """

    type: Literal["hello"] = "hello"
    entrypoint: str
    tool: ToolInfo | None
    runtime: RuntimeInfo
    mode: Literal["production", "development"] = "production"


class WelcomeMessage(_Base):
    """platform → tool, answer to ``hello``: the identity of this run (fills the Context)."""

    type: Literal["welcome"] = "welcome"
    task_id: str = ""
    run_id: str = ""
    step: str = ""
    node: str = "local"
    attempt: int = Field(default=1, ge=1)


class ConfigMessage(_Base):
    """platform → tool: the tool's config values (validated against its config schema).

    Sent once after ``welcome``; in development mode it may be sent again while the tool is
    idle to replace the config before ``start``.
    """

    type: Literal["config"] = "config"
    values: dict[str, Any] = Field(default_factory=dict)
    revision: int = Field(default=1, ge=1)


# --- control ---------------------------------------------------------------------------


class InlineInput(BaseModel):
    """An input carried in the frame: a JSON ``value``, or base64 ``data`` of ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["inline"] = "inline"
    value: Any = None
    data: str | None = None
    kind: Kind = "json"
    sha256: str | None = None

    @classmethod
    def of_bytes(cls, data: bytes, kind: Kind = "bytes") -> InlineInput:
        """Wrap raw bytes (with their hash, so the tool side verifies the transfer)."""
        return cls(data=b64encode(data), kind=kind, sha256=sha256_hex(data))


class PathInput(BaseModel):
    """An input already present in the sandbox (mounted or uploaded by the orchestrator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["path"] = "path"
    path: str
    kind: Kind = "file"
    sha256: str | None = None


class UrlInput(BaseModel):
    """An input fetched from a one-time download link the platform issued for this run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["url"] = "url"
    url: str
    kind: Kind = "file"
    sha256: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


InputDef = Annotated[InlineInput | PathInput | UrlInput, Field(discriminator="source")]


class OutputPolicy(BaseModel):
    """Where outputs go: inline up to ``inline_limit`` bytes, larger ones into ``directory``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inline_limit: int = Field(default=INLINE_LIMIT, ge=0)
    directory: str | None = None


class StartMessage(_Base):
    """platform → tool: run now, with these hyperparameters and inputs.

    ``hyperparameters`` are merged over the config (one subvariant per combination) and the
    result is validated against the config schema again.
    """

    type: Literal["start"] = "start"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, InputDef] = Field(default_factory=dict)
    outputs: OutputPolicy = Field(default_factory=OutputPolicy)


class TerminateMessage(_Base):
    """platform → tool: stop. Idle tools exit at once; a running tool is cancelled and
    given ``grace_seconds`` to return before the process exits anyway."""

    type: Literal["terminate"] = "terminate"
    reason: str = ""
    grace_seconds: float = Field(default=5.0, ge=0)


class HeartbeatMessage(_Base):
    """Either direction: liveness. The tool answers each platform heartbeat with the same
    ``seq``; any frame from the platform resets the tool's idle timeout."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int = 0
    at: float = Field(default_factory=_now)


# --- telemetry -------------------------------------------------------------------------


class StatusMessage(_Base):
    """tool → platform: one lifecycle transition (``src`` is None for entering Pending)."""

    type: Literal["status"] = "status"
    src: State | None
    dst: State
    at: float = Field(default_factory=_now)
    detail: str | None = None


class LogMessage(_Base):
    """tool → platform: a log line from the tool (``ctx.log``) or the runtime."""

    type: Literal["log"] = "log"
    level: Level = "info"
    message: str
    at: float = Field(default_factory=_now)


class MetricMessage(_Base):
    """tool → platform: a numeric metric (``ctx.metric``)."""

    type: Literal["metric"] = "metric"
    name: str
    value: float
    step: int | None = None
    at: float = Field(default_factory=_now)


class ProgressMessage(_Base):
    """tool → platform: progress in [0, 1] (``ctx.progress``)."""

    type: Literal["progress"] = "progress"
    fraction: float = Field(ge=0.0, le=1.0)
    message: str | None = None
    #: Counts, when the tool reports them (``ctx.progress(5000, 5000, unit="images")``).
    done: float | None = Field(default=None, ge=0.0)
    total: float | None = Field(default=None, ge=0.0)
    unit: str | None = Field(default=None, max_length=64)
    at: float = Field(default_factory=_now)


class ResourcesMessage(_Base):
    """tool → platform: the task's resource use so far, measured by the tool-side runtime
    (:mod:`flowfed.runtime.usage`): about once a second while it runs, then once at the end
    before the final ``status``."""

    type: Literal["resources"] = "resources"
    wall_s: float = Field(ge=0.0)
    cpu_s: float = Field(ge=0.0)
    peak_rss_mb: float = Field(ge=0.0)
    at: float = Field(default_factory=_now)


class OutputMessage(_Base):
    """tool → platform: one materialized output, inline (``data``) or by ``path``.

    ``sha256`` is the hash of the materialized bytes (for ``json``: the canonical encoding,
    sorted keys and no spaces), so either end can check what arrived.
    """

    type: Literal["output"] = "output"
    name: str
    kind: Kind
    size: int = Field(ge=0)
    sha256: str
    data: str | None = None
    path: str | None = None
    media_type: str = "application/octet-stream"

    def content(self) -> bytes:
        """The inline bytes, checked against ``sha256`` (ValueError if absent or corrupt)."""
        if self.data is None:
            raise ValueError(f"output '{self.name}' is not inline (see its path)")
        raw = b64decode(self.data)
        if sha256_hex(raw) != self.sha256:
            raise ValueError(f"output '{self.name}': content does not match {self.sha256}")
        return raw


class ErrorDetail(BaseModel):
    """One located problem: the dotted ``field`` it concerns and what is wrong."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class ErrorMessage(_Base):
    """Either direction: a structured error.

    From the tool: what failed (``message``, ``error_type``), where (``traceback``, runtime
    ``context``: state, phase, tool, python…) and, for validation errors, which fields.
    ``fatal`` is False only for a rejected development-mode config update, after which the
    tool keeps its previous config and stays idle.
    """

    type: Literal["error"] = "error"
    message: str
    error_type: str = "Error"
    phase: str = ""
    details: list[ErrorDetail] = Field(default_factory=list)
    traceback: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    fatal: bool = True
    at: float = Field(default_factory=_now)


Message = Annotated[
    HelloMessage
    | WelcomeMessage
    | ConfigMessage
    | StartMessage
    | TerminateMessage
    | HeartbeatMessage
    | StatusMessage
    | LogMessage
    | MetricMessage
    | ProgressMessage
    | ResourcesMessage
    | OutputMessage
    | ErrorMessage,
    Field(discriminator="type"),
]
"""Every frame either side may send, discriminated by ``type``."""

MESSAGE_TYPES: dict[str, type[_Base]] = {
    "hello": HelloMessage,
    "welcome": WelcomeMessage,
    "config": ConfigMessage,
    "start": StartMessage,
    "terminate": TerminateMessage,
    "heartbeat": HeartbeatMessage,
    "status": StatusMessage,
    "log": LogMessage,
    "metric": MetricMessage,
    "progress": ProgressMessage,
    "resources": ResourcesMessage,
    "output": OutputMessage,
    "error": ErrorMessage,
}

_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``field`` names the culprit when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_message(text: str | bytes) -> Message:
    """Parse one frame (raises :class:`ProtocolError` saying what and which field is wrong).

    Example:
        >>> parse_message('{"type": "hello", "v": "2"}')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flowfed.runtime.protocol.ProtocolError: protocol version '2' is not supported ...
        >>> parse_message('{"type": "launch", "v": "1"}')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flowfed.runtime.protocol.ProtocolError: unknown message type 'launch'; expected one of ...
    """
    try:
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError("frame has no 'type'", field="type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(
            f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}",
            field="type",
        )
    # The version is checked before the fields, so a newer peer gets "wrong version" rather
    # than a confusing complaint about some field that version renamed.
    version = obj.get("v")
    if version is None:
        raise ProtocolError(f"{kind!r} frame has no protocol version 'v'", field="v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (this peer speaks "
            f"{PROTOCOL_VERSION!r})",
            field="v",
        )
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _field_path(obj, err["loc"])
        field = ".".join(loc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProtocolError(
            f"invalid {kind!r} message: {field}: {err['msg']}{more}", field=field or None
        ) from None


def _field_path(obj: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The user-facing path of a validation error: ``loc`` without the union tags.

    pydantic puts the tag of a discriminated union (the message ``type``, an input's
    ``source``) into ``loc``; the frame itself has no such key, so it is dropped.
    """
    out: list[str] = []
    data = obj
    tag_skipped = False  # at most one tag per object: a field may share the tag's name
    for part in loc:
        if (
            not tag_skipped
            and isinstance(data, dict)
            and part in (data.get("type"), data.get("source"))
        ):
            tag_skipped = True
            continue
        tag_skipped = False
        out.append(str(part))
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return out


def dump_message(msg: _Base) -> str:
    """Encode a message as one JSON frame.

    Example:
        >>> dump_message(HeartbeatMessage(seq=3, at=0.0))
        '{"v":"1","type":"heartbeat","seq":3,"at":0.0}'
    """
    return msg.model_dump_json()
