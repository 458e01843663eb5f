"""The tool-side engine: drives one tool run through the lifecycle over the WebSocket channel.

It runs inside the tool's sandbox or container (``python -m flowfed.runtime``), so it
imports only ``flowfed.tools``, ``flowfed.runtime``, pydantic and websockets (httpx and
numpy only when an input needs them). The tool's code stays the domain function; this
module does everything around it:

``Pending``
    connect with the bearer token (retrying until ``--timeout``), send ``hello`` and a
    ``status`` for Pending, receive ``welcome`` and ``config``, validate the config against
    the tool's schema.
``Initialized``
    wait for ``start`` or ``terminate`` (and, in development mode, ``config`` updates),
    answering heartbeats; more than ``--timeout`` seconds without a frame is an error.
``Started``
    resolve and validate every input (inline, a path in the sandbox, a one-time URL), merge
    the hyperparameters into the config and validate again.
``Running``
    call the function through :func:`flowfed.tools.call_tool`; its :class:`Context` turns
    ``log``/``metric``/``progress`` calls into frames.
``Finished``
    send one ``output`` per declared output (content-hashed), then the final ``status``.
``Error`` / ``Cancelled``
    send a structured ``error`` (message, traceback, context) and the final ``status``.

Every state change goes through :class:`flowfed.runtime.lifecycle.Lifecycle` and is sent as
a ``status`` frame; temporary files are removed on every path.

Exit codes: 0 finished or terminated on request, 1 error, 2 bad command line,
75 platform unreachable within the timeout (``EX_TEMPFAIL``: worth retrying).

Example (materializing an output, what ``Finished`` does for each one):
    >>> kind, raw, media = materialize_value("scores", {"auc": 0.9})
    >>> kind, raw, media
    ('json', b'{"auc":0.9}', 'application/json')
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import io
import json
import os
import platform
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect, unix_connect

from flowfed.runtime.lifecycle import Lifecycle, State
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorDetail,
    ErrorMessage,
    HeartbeatMessage,
    HelloMessage,
    InlineInput,
    LogMessage,
    Message,
    MetricMessage,
    OutputMessage,
    OutputPolicy,
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
    b64decode,
    b64encode,
    dump_message,
    parse_message,
    sha256_hex,
)
from flowfed.runtime.usage import clean_counts, measured
from flowfed.tools.core import (
    MODEL_MAGIC,
    Context,
    ToolSpec,
    build_spec,
    call_tool,
    model_bytes,
    model_from_bytes,
    model_header,
    split_model_bytes,
)
from flowfed.tools.loading import ImportProblem, import_one

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 75

_MEDIA = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "npy": "application/x-npy",
    "pandas": "application/vnd.apache.parquet",
}


class RunFailure(Exception):
    """A failure the engine reports as a structured ``error`` frame."""

    def __init__(
        self,
        message: str,
        *,
        phase: str,
        error_type: str = "RuntimeError",
        details: Sequence[ErrorDetail] = (),
        tb: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase
        self.error_type = error_type
        self.details = list(details)
        self.tb = tb


class ChannelLost(Exception):
    """The platform closed the channel; nothing more can be reported over it."""


class PlatformUnreachable(Exception):
    """No WebSocket could be opened within the timeout (worth retrying later)."""


class PlatformRefused(Exception):
    """The platform answered the upgrade with an HTTP error (bad token: not worth retrying)."""


_CLOSED = object()


@dataclass
class EngineOptions:
    """What ``python -m flowfed.runtime`` was asked to do."""

    endpoint: str
    token: str
    tool: str
    timeout: float = 30.0
    dev: bool = False
    max_frame: int = 16 * 1024 * 1024
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: Connect over this Unix socket instead of TCP (the sandbox and container runners
    #: bind one into a tool that has no network at all); ``endpoint`` is then only the URI.
    unix_socket: str | None = None


def load_tool(ref: str) -> ToolSpec:
    """Load ``module_or_file:function`` and its ToolSpec (a plain function gets a default one).

    Raises :class:`RunFailure` (phase ``load``) when the module or the function is missing.

    Example:
        >>> spec = load_tool("textwrap:dedent")
        >>> spec.name, list(spec.inputs)
        ('dedent', ['text'])
    """
    module_ref, sep, fn_name = ref.rpartition(":")
    if not sep or not module_ref or not fn_name:
        raise RunFailure(
            f"--tool must read module_or_file:function, got {ref!r}",
            phase="load",
            error_type="UsageError",
        )
    try:
        module = import_one(module_ref)
    except ImportProblem as exc:
        raise RunFailure(str(exc), phase="load", error_type="ImportProblem") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RunFailure(
            f"{module_ref} has no function {fn_name!r}", phase="load", error_type="ImportProblem"
        )
    spec = getattr(fn, "__flowfed_tool__", None)
    if isinstance(spec, ToolSpec):
        return spec
    # A plain function is a tool too: the runtime must not force the decorator on authors.
    try:
        return build_spec(fn, name=fn_name, version="0", type="data-transformation")
    except TypeError as exc:
        raise RunFailure(str(exc), phase="load", error_type=type(exc).__name__) from None


_SCHEMAS: dict[int, tuple[ToolSpec, dict[str, Any]]] = {}


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """``spec``'s config JSON Schema, computed once per process.

    A warm worker (:mod:`flowfed.runtime.worker`) computes it before it forks a call:
    pydantic's schema generation costs a few milliseconds in every fresh child otherwise.
    """
    got = _SCHEMAS.get(id(spec))
    if got is None or got[0] is not spec:
        got = _SCHEMAS[id(spec)] = (spec, spec.config_schema())
    return got[1]


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding outputs are hashed in (sorted keys, no spaces, no NaN).

    Example:
        >>> canonical_json({"b": 1, "a": [1.5, None]})
        b'{"a":[1.5,null],"b":1}'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
    ).encode()


def _json_default(obj: Any) -> Any:
    # NumPy scalars (np.int64 from a metric computation) are the usual non-JSON leaf.
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def materialize_value(
    name: str, value: Any, *, workdir: Path | None = None, allow_pickle: bool = False
) -> tuple[str, bytes, str]:
    """Turn an output value into ``(kind, bytes, media_type)``.

    bytes stay bytes, a :class:`pathlib.Path` is the file's content, a ``flowfed.Model`` is
    what its ``save`` writes, a NumPy array is an ``.npy`` file, anything JSON-able is
    canonical JSON. Anything else is refused (pickled only for ``allow_pickle`` tools),
    so an output is always readable without the tool's code.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes", bytes(value), "application/octet-stream"
    if isinstance(value, PurePath):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"output '{name}' names {path}, which is not a file")
        return "file", path.read_bytes(), "application/octet-stream"
    if getattr(type(value), "__flowfed_model__", False):
        if workdir is not None:
            body = model_bytes(value, Path(workdir) / f"{name}.model")
        else:
            with tempfile.TemporaryDirectory(prefix="flowfed-model-") as tmp:
                body = model_bytes(value, Path(tmp) / f"{name}.model")
        # The engine's model artifacts name their class in a header (what it loads them
        # with); the same framing here makes a tool-side model the same artifact.
        return "model", model_header(value) + body, "application/octet-stream"
    np = sys.modules.get("numpy")  # an ndarray can only exist if numpy was imported
    if np is not None and isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue(), _MEDIA["npy"]
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(value, preserve_index=None), buf)
        return "pandas", buf.getvalue(), _MEDIA["pandas"]
    try:
        return "json", canonical_json(value), _MEDIA["json"]
    except (TypeError, ValueError) as exc:
        if allow_pickle:
            import pickle

            return "pickle", pickle.dumps(value), "application/x-python-pickle"
        raise ValueError(
            f"output '{name}': a {type(value).__name__} is not JSON, bytes, a file path, a "
            f"NumPy array or a flowfed.Model ({exc})"
        ) from None


class ToolEngine:
    """One tool run over one WebSocket: the Pending → … → Finished/Error loop.

    ``connector`` opens the WebSocket (the tests never replace it; it exists so an embedding
    node agent can pass a pre-configured client).
    """

    def __init__(
        self,
        options: EngineOptions,
        *,
        connector: Callable[..., ClientConnection] = connect,
        stderr: Any = None,
    ) -> None:
        self.opts = options
        self._connector = connector
        self._stderr = stderr if stderr is not None else sys.stderr
        self._lc = Lifecycle()
        # RLock: the grace timer and the main thread both move the lifecycle.
        self._state_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._last_seen = time.monotonic()
        self._ws: ClientConnection | None = None
        self._spec: ToolSpec | None = None
        self._welcome = WelcomeMessage()
        self._config_values: dict[str, Any] = {}
        self._ctx: Context | None = None
        self._terminate: TerminateMessage | None = None
        self._violation: ProtocolError | None = None
        self._channel_lost = False
        self._workdir: Path | None = None
        self._started_at = time.monotonic()

    @property
    def state(self) -> State:
        """The run's lifecycle state (Pending until connected and configured)."""
        return self._lc.state

    @property
    def reached(self) -> set[State]:
        """Every state the run has been in (to tell a failed start from a failed execution)."""
        return {State.PENDING, *(tr.to for tr in self._lc.history)}

    # --- entry point -------------------------------------------------------------------

    def run(self) -> int:
        """Run the whole lifecycle; returns the process exit code."""
        try:
            self._ws = self._connect()
        except PlatformUnreachable as exc:
            self._say(f"flowfed runtime: {exc}")
            return EXIT_UNREACHABLE
        except PlatformRefused as exc:
            self._say(f"flowfed runtime: {exc}")
            return EXIT_ERROR
        receiver = threading.Thread(target=self._receive_loop, name="flowfed-rx", daemon=True)
        receiver.start()
        try:
            return self._lifecycle()
        except RunFailure as failure:
            self._report(failure)
            return EXIT_ERROR
        except ChannelLost as exc:
            self._say(f"flowfed runtime: {exc}")
            with self._state_lock:
                if not self._lc.state.terminal:
                    self._lc.advance(State.ERROR, str(exc))
            return EXIT_ERROR
        except Exception as exc:  # a bug in the engine itself: still report it, structured
            self._report(
                RunFailure(
                    f"runtime failure: {type(exc).__name__}: {exc}",
                    phase="runtime",
                    error_type=type(exc).__name__,
                    tb=traceback.format_exc(),
                )
            )
            return EXIT_ERROR
        finally:
            self._cleanup()
            self._close()

    def _lifecycle(self) -> int:
        # Pending: identify, receive the run identity and the config.
        try:
            self._spec = load_tool(self.opts.tool)
        finally:
            # hello goes first whatever happens, so the platform always knows who failed.
            self._send(self._hello())
            self._send(StatusMessage(src=None, dst=State.PENDING, detail="connected"))
        self._welcome = self._expect(WelcomeMessage, "welcome")
        config = self._expect(ConfigMessage, "config")
        self._validate_config(config.values, phase="config")
        self._config_values = dict(config.values)
        self._advance(State.INITIALIZED, f"config revision {config.revision} valid")

        start = self._idle()
        if start is None:
            return EXIT_OK

        self._advance(State.STARTED)
        self._workdir = Path(tempfile.mkdtemp(prefix="flowfed-run-"))
        args = self._resolve_inputs(start)
        cfg = self._validate_config(
            {**self._config_values, **start.hyperparameters}, phase="hyperparameters"
        )
        if self._terminate is not None:
            return self._cancelled(self._terminate)

        self._advance(State.RUNNING)
        result = self._call(args, cfg)
        self._drain_after_run()
        if self._terminate is not None:
            return self._cancelled(self._terminate)
        if self._violation is not None:
            raise self._protocol_failure(self._violation)

        outputs = self._outputs(result, start.outputs)
        for out in outputs:
            self._send(out)
        self._advance(State.FINISHED, f"{len(outputs)} output(s)")
        return EXIT_OK

    # --- phases ------------------------------------------------------------------------

    def _idle(self) -> StartMessage | None:
        """Initialized: wait for start (returned) or terminate (None)."""
        while True:
            msg = self._next("start")
            if isinstance(msg, StartMessage):
                return msg
            if isinstance(msg, TerminateMessage):
                self._cancelled(msg)
                return None
            if isinstance(msg, ConfigMessage) and self.opts.dev:
                self._update_config(msg)
                continue
            if isinstance(msg, ConfigMessage):
                raise RunFailure(
                    "config updates are accepted only in development mode (--dev)",
                    phase="protocol",
                    error_type="ProtocolError",
                    details=[ErrorDetail(field="type", message="unexpected 'config'")],
                )
            raise RunFailure(
                f"unexpected {msg.type!r} message while initialized",
                phase="protocol",
                error_type="ProtocolError",
                details=[ErrorDetail(field="type", message=f"unexpected {msg.type!r}")],
            )

    def _update_config(self, msg: ConfigMessage) -> None:
        # A bad update in development mode is the user's typo, not a dead run: report it,
        # keep the previous config and stay idle.
        try:
            self._validate_config(msg.values, phase="config")
        except RunFailure as failure:
            self._send(self._error_frame(failure, fatal=False))
            return
        self._config_values = dict(msg.values)
        self._send(LogMessage(message=f"config revision {msg.revision} applied"))

    def _validate_config(self, values: dict[str, Any], *, phase: str) -> BaseModel:
        assert self._spec is not None
        try:
            return self._spec.config_model.model_validate(values)
        except ValidationError as exc:
            details = [
                ErrorDetail(
                    field=".".join(["config", *(str(p) for p in e["loc"])]), message=e["msg"]
                )
                for e in exc.errors()
            ]
            listing = "; ".join(f"{d.field}: {d.message}" for d in details)
            raise RunFailure(
                f"invalid {phase} for tool '{self._spec.name}': {listing}",
                phase=phase,
                error_type="ConfigError",
                details=details,
            ) from None

    def _resolve_inputs(self, start: StartMessage) -> dict[str, Any]:
        """Started: every declared input present, readable, hash-checked and typed."""
        assert self._spec is not None
        problems: list[ErrorDetail] = []
        for name, ispec in self._spec.inputs.items():
            if ispec.required and name not in start.inputs:
                problems.append(ErrorDetail(field=f"inputs.{name}", message="input missing"))
        for name in start.inputs:
            if name not in self._spec.inputs:
                problems.append(
                    ErrorDetail(
                        field=f"inputs.{name}",
                        message=f"tool '{self._spec.name}' has no input {name!r}",
                    )
                )
        args: dict[str, Any] = {}
        if not problems:
            for name, idef in start.inputs.items():
                try:
                    args[name] = self._resolve_one(name, idef)
                except ValueError as exc:
                    problems.append(ErrorDetail(field=f"inputs.{name}", message=str(exc)))
        if problems:
            listing = "; ".join(f"{d.field}: {d.message}" for d in problems)
            raise RunFailure(
                f"input validation failed: {listing}",
                phase="inputs",
                error_type="InputError",
                details=problems,
            )
        return args

    def _resolve_one(self, name: str, idef: InlineInput | PathInput | UrlInput) -> Any:
        assert self._workdir is not None and self._spec is not None
        if isinstance(idef, InlineInput):
            if idef.data is None:
                if idef.kind != "json":
                    raise ValueError(f"an inline {idef.kind} input needs base64 'data'")
                if idef.sha256:
                    _check_hash(canonical_json(idef.value), idef.sha256)
                return self._typed(name, idef.value)
            try:
                raw = b64decode(idef.data)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"'data' is not base64: {exc}") from None
            return self._decode(name, raw, idef.kind, idef.sha256)
        if isinstance(idef, PathInput):
            path = Path(idef.path)
            if not path.exists():
                raise ValueError(f"{path} is not present in the sandbox")
            if idef.kind == "file" and path.is_dir():
                return path  # a dataset folder: handed over as is
            if not path.is_file():
                raise ValueError(f"{path} is not a regular file")
            if idef.kind == "file":
                if idef.sha256:
                    _check_hash(path.read_bytes(), idef.sha256)
                return path
            return self._decode(name, path.read_bytes(), idef.kind, idef.sha256)
        raw = _fetch(idef.url, idef.headers, self.opts.timeout)
        return self._decode(name, raw, idef.kind, idef.sha256)

    def _decode(self, name: str, raw: bytes, kind: str, sha256: str | None) -> Any:
        assert self._workdir is not None and self._spec is not None
        if sha256:
            _check_hash(raw, sha256)
        try:
            if kind == "json":
                return self._typed(name, json.loads(raw))
            if kind == "text":
                return self._typed(name, raw.decode("utf-8"))
            if kind == "bytes":
                return raw
            if kind == "npy":
                import numpy as np  # only tools fed arrays pay for numpy

                return np.load(io.BytesIO(raw), allow_pickle=False)
            if kind == "pandas":
                import pyarrow.parquet as pq  # only tools fed DataFrames pay for pyarrow

                return pq.read_table(io.BytesIO(raw)).to_pandas()
            if kind == "pickle":
                if not self._spec.allow_pickle:
                    raise ValueError(f"tool '{self._spec.name}' does not accept pickled inputs")
                import pickle

                return pickle.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid {kind}: {exc}") from None
        target = self._workdir / "inputs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        cls = self._spec.inputs[name].annotation
        if kind == "model" and raw.startswith(MODEL_MAGIC):
            # Framed by the engine: the header names the model's class, which a tool whose
            # input is not annotated with a concrete model class loads it with.
            named, raw = split_model_bytes(raw)
            if not getattr(cls, "__flowfed_model__", False) or cls.__name__ == "Model":
                cls = named
        if kind == "model":
            if not getattr(cls, "__flowfed_model__", False):
                raise ValueError("a model input needs a flowfed.Model annotation to be loaded")
            model = model_from_bytes(cls, raw)
            if model is not NotImplemented:
                return model
            target.write_bytes(raw)
            return cls.load(target)
        target.write_bytes(raw)
        return target

    def _typed(self, name: str, value: Any) -> Any:
        """Check a JSON value against the input's annotation when pydantic understands it."""
        assert self._spec is not None
        ann = self._spec.inputs[name].annotation
        if ann in (Any, None) or ann is Path or getattr(ann, "__name__", "") == "_empty":
            return value
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(ann)
        except Exception:  # an annotation pydantic cannot model (a DataFrame): trust the tool
            return value
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{err['msg']}") from None

    def _call(self, args: dict[str, Any], cfg: BaseModel) -> Any:
        """Running: the domain function, with telemetry flowing out through its Context."""
        assert self._spec is not None
        w = self._welcome
        ctx = Context(
            self._telemetry,
            run_id=w.run_id,
            task_id=w.task_id,
            step=w.step,
            node=w.node,
            attempt=w.attempt,
            # A node agent's runner passes the task's dataset and round this way.
            **_task_context(),
        )
        with self._state_lock:
            self._ctx = ctx
            # A terminate that arrived during Started must still stop a cooperative tool.
            if self._terminate is not None:
                ctx.cancel()
        try:
            # This process runs one task: its CPU and peak memory are the task's.
            with measured(self._resources, "process"):
                return call_tool(self._spec, args, cfg, ctx)
        except Exception as exc:
            if self._terminate is not None:
                return None  # the tool stopped because we asked it to
            raise RunFailure(
                f"{type(exc).__name__}: {exc}",
                phase="running",
                error_type=type(exc).__name__,
                tb=traceback.format_exc(),
            ) from None
        finally:
            self._ctx = None

    def _telemetry(self, kind: str, payload: dict[str, Any]) -> None:
        msg: LogMessage | MetricMessage | ProgressMessage
        if kind == "log":
            level = payload.get("level", "info")
            msg = LogMessage(
                level=level if level in ("debug", "info", "warning", "error") else "info",
                message=payload["message"],
            )
        elif kind == "metric":
            msg = MetricMessage(name=payload["name"], value=payload["value"], step=payload["step"])
        elif kind == "progress":
            counts = clean_counts(payload) or {}
            msg = ProgressMessage(
                fraction=payload["fraction"],
                message=payload.get("message"),
                done=counts.get("done"),
                total=counts.get("total"),
                unit=counts.get("unit"),
            )
        else:
            return
        try:
            self._send(msg)
        except ChannelLost:
            # The tool cannot do anything useful about a lost channel; stop it cooperatively.
            if self._ctx is not None:
                self._ctx.cancel()

    def _resources(self, figures: dict[str, float]) -> None:
        # From the usage sampler's thread too: a lost channel only loses a sample.
        with contextlib.suppress(ChannelLost):
            self._send(ResourcesMessage(**figures))

    def _outputs(self, result: Any, policy: OutputPolicy) -> list[OutputMessage]:
        """Finished: materialize every declared output (all before any is sent)."""
        assert self._spec is not None and self._workdir is not None
        try:
            named = self._spec.split_outputs(result)
        except ValueError as exc:
            raise RunFailure(str(exc), phase="outputs", error_type=type(exc).__name__) from None
        messages = []
        for name, value in named.items():
            try:
                kind, raw, media = materialize_value(
                    name, value, workdir=self._workdir, allow_pickle=self._spec.allow_pickle
                )
            except Exception as exc:
                raise RunFailure(
                    str(exc),
                    phase="outputs",
                    error_type=type(exc).__name__,
                    details=[ErrorDetail(field=f"outputs.{name}", message=str(exc))],
                    tb=traceback.format_exc(),
                ) from None
            digest = sha256_hex(raw)
            common: dict[str, Any] = {
                "name": name,
                "kind": kind,
                "size": len(raw),
                "sha256": digest,
                "media_type": media,
            }
            if len(raw) <= policy.inline_limit:
                messages.append(OutputMessage(data=b64encode(raw), **common))
                continue
            if policy.directory is None:
                raise RunFailure(
                    f"output '{name}' is {len(raw)} bytes, over the inline limit of "
                    f"{policy.inline_limit}, and the start message names no output directory",
                    phase="outputs",
                    error_type="OutputError",
                    details=[ErrorDetail(field=f"outputs.{name}", message="too large to inline")],
                )
            target = Path(policy.directory) / f"{name}.{kind}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
            messages.append(OutputMessage(path=str(target), **common))
        return messages

    def _cancelled(self, msg: TerminateMessage) -> int:
        self._advance(State.CANCELLED, f"terminated: {msg.reason}" if msg.reason else "terminated")
        return EXIT_OK

    def _drain_after_run(self) -> None:
        # Frames that raced with the start of Running were queued instead of handled.
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, TerminateMessage):
                self._terminate = self._terminate or item
            elif isinstance(item, ProtocolError):
                self._violation = self._violation or item
            elif item is _CLOSED:
                raise ChannelLost("the platform closed the channel during the run")
            else:
                self._violation = self._violation or ProtocolError(
                    f"unexpected {item.type!r} message while running", field="type"
                )

    # --- channel -----------------------------------------------------------------------

    def _connect(self) -> ClientConnection:
        """Open the channel, retrying refused connections until the timeout runs out."""
        deadline = time.monotonic() + self.opts.timeout
        headers = {"Authorization": f"Bearer {self.opts.token}", **self.opts.extra_headers}
        delay = 0.05
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                if self.opts.unix_socket is not None:
                    return unix_connect(
                        self.opts.unix_socket,
                        self.opts.endpoint,
                        additional_headers=headers,
                        open_timeout=remaining,
                        close_timeout=2,
                        max_size=self.opts.max_frame,
                    )
                return self._connector(
                    self.opts.endpoint,
                    additional_headers=headers,
                    open_timeout=remaining,
                    close_timeout=2,
                    max_size=self.opts.max_frame,
                )
            except InvalidStatus as exc:
                raise PlatformRefused(
                    f"{self.opts.endpoint} refused the connection: HTTP {exc.response.status_code}"
                ) from None
            except InvalidURI as exc:
                raise PlatformRefused(f"bad endpoint: {exc}") from None
            except (OSError, TimeoutError, Exception) as exc:
                # The orchestrator may start the tool before the platform listens: retry.
                last = exc
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        raise PlatformUnreachable(
            f"could not connect to {self.opts.endpoint}"
            + (f" over {self.opts.unix_socket}" if self.opts.unix_socket else "")
            + f" within {self.opts.timeout:g} s"
            + (f": {type(last).__name__}: {last}" if last else "")
        )

    def _receive_loop(self) -> None:
        assert self._ws is not None
        try:
            for frame in self._ws:
                self._last_seen = time.monotonic()
                try:
                    self._dispatch(parse_message(frame))
                except ProtocolError as exc:
                    self._dispatch(exc)
        except ConnectionClosed:
            pass
        finally:
            self._channel_lost = True
            self._inbox.put(_CLOSED)

    def _dispatch(self, item: Message | ProtocolError) -> None:
        if isinstance(item, HeartbeatMessage):
            # Answered here, whatever the main thread is doing, so a long tool stays alive.
            with contextlib.suppress(ChannelLost):
                self._send(HeartbeatMessage(seq=item.seq))
            return
        with self._state_lock:
            working = self._lc.state in (State.STARTED, State.RUNNING)
            if not working:
                self._inbox.put(item)
                return
            if isinstance(item, TerminateMessage):
                self._terminate = self._terminate or item
                self._stop_tool(item.grace_seconds)
                return
            self._violation = self._violation or (
                item
                if isinstance(item, ProtocolError)
                else ProtocolError(
                    f"unexpected {item.type!r} message while {self._lc.state}", field="type"
                )
            )
            if self._ctx is not None:
                self._ctx.cancel()

    def _stop_tool(self, grace: float) -> None:
        if self._ctx is not None:
            self._ctx.cancel()
        timer = threading.Timer(grace, self._hard_stop)
        timer.daemon = True
        timer.start()

    def _hard_stop(self) -> None:
        # The tool ignored cancellation for the whole grace period: record the cancel and
        # leave. os._exit because the main thread is stuck inside tool code.
        with self._state_lock:
            if self._lc.state not in (State.STARTED, State.RUNNING):
                return
            grace = self._terminate.grace_seconds if self._terminate else 0
            self._advance(
                State.CANCELLED, f"terminated; the tool did not return within {grace:g} s"
            )
        self._cleanup()
        self._close()
        os._exit(EXIT_OK)

    def _next(self, waiting_for: str) -> Message:
        """The next frame for the main thread, enforcing the idle timeout."""
        while True:
            remaining = self._last_seen + self.opts.timeout - time.monotonic()
            if remaining <= 0:
                raise RunFailure(
                    f"idle timeout: no message from the platform for {self.opts.timeout:g} s "
                    f"while waiting for {waiting_for!r}",
                    phase="timeout",
                    error_type="IdleTimeout",
                )
            try:
                item = self._inbox.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                continue
            if item is _CLOSED:
                raise ChannelLost(f"the platform closed the channel while awaiting {waiting_for}")
            if isinstance(item, ProtocolError):
                raise self._protocol_failure(item)
            return item

    def _expect(self, cls: type[Any], name: str) -> Any:
        msg = self._next(name)
        if not isinstance(msg, cls):
            raise RunFailure(
                f"expected a {name!r} message, got {msg.type!r}",
                phase="protocol",
                error_type="ProtocolError",
                details=[ErrorDetail(field="type", message=f"expected {name!r}")],
            )
        return msg

    def _protocol_failure(self, exc: ProtocolError) -> RunFailure:
        return RunFailure(
            f"protocol error: {exc}",
            phase="protocol",
            error_type="ProtocolError",
            details=[ErrorDetail(field=exc.field or "", message=str(exc))],
        )

    def _send(self, msg: Any) -> None:
        if self._ws is None or self._channel_lost:
            raise ChannelLost("the channel to the platform is closed")
        frame = dump_message(msg)
        try:
            with self._send_lock:
                self._ws.send(frame)
        except ConnectionClosed as exc:
            self._channel_lost = True
            raise ChannelLost(f"the platform closed the channel: {exc}") from None

    def _advance(self, dst: State, detail: str | None = None) -> None:
        with self._state_lock:
            tr = self._lc.advance(dst, detail)
            try:
                self._send(StatusMessage(src=tr.src, dst=tr.to, at=tr.at, detail=tr.detail))
            except ChannelLost:
                if dst not in (State.ERROR, State.CANCELLED):
                    raise

    # --- reporting and cleanup -----------------------------------------------------------

    def _context(self, phase: str) -> dict[str, Any]:
        w = self._welcome
        return {
            "state": str(self._lc.state),
            "phase": phase,
            "tool": self._spec.ref if self._spec else None,
            "entrypoint": self.opts.tool,
            "task_id": w.task_id,
            "run_id": w.run_id,
            "step": w.step,
            "node": w.node,
            "attempt": w.attempt,
            "mode": "development" if self.opts.dev else "production",
            "python": platform.python_version(),
            "pid": os.getpid(),
            "elapsed_s": round(time.monotonic() - self._started_at, 3),
        }

    def _error_frame(self, failure: RunFailure, *, fatal: bool = True) -> ErrorMessage:
        return ErrorMessage(
            message=failure.message,
            error_type=failure.error_type,
            phase=failure.phase,
            details=failure.details,
            traceback=failure.tb,
            context=self._context(failure.phase),
            fatal=fatal,
        )

    def _report(self, failure: RunFailure) -> None:
        """Error: the structured error, then the final status (the last frame of the run)."""
        self._say(f"flowfed runtime: {failure.phase}: {failure.message}")
        if failure.tb:
            self._say(failure.tb.rstrip())
        with contextlib.suppress(ChannelLost):
            self._send(self._error_frame(failure))
        with self._state_lock:
            if not self._lc.state.terminal:
                self._advance(State.ERROR, failure.message[:500])

    def _say(self, text: str) -> None:
        print(text, file=self._stderr, flush=True)

    def _hello(self) -> HelloMessage:
        spec = self._spec
        info = None
        if spec is not None:
            info = ToolInfo(
                name=spec.name,
                version=spec.version,
                type=str(spec.type),
                inputs=list(spec.inputs),
                outputs=spec.output_names,
                config_schema=tool_schema(spec),
            )
        from flowfed import __version__

        return HelloMessage(
            entrypoint=self.opts.tool,
            tool=info,
            runtime=RuntimeInfo(
                python=platform.python_version(),
                platform=platform.platform(),
                pid=os.getpid(),
                hostname=socket.gethostname(),
                flowfed=__version__,
            ),
            mode="development" if self.opts.dev else "production",
        )

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _close(self) -> None:
        if self._ws is not None:
            # Closing an already broken socket can fail; there is nothing left to do then.
            with contextlib.suppress(Exception):
                self._ws.close()


def _check_hash(raw: bytes, expected: str) -> None:
    actual = sha256_hex(raw)
    want = expected if expected.startswith("sha256:") else f"sha256:{expected}"
    if actual != want:
        raise ValueError(f"content hash {actual} does not match the declared {want}")


def _fetch(url: str, headers: dict[str, str], timeout: float) -> bytes:
    """Download a one-time link (httpx when installed, else urllib)."""
    try:
        import httpx
    except ImportError:  # a minimal container: the standard library is enough
        return _fetch_urllib(url, headers, timeout)
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ValueError(f"download of {url} failed: {exc}") from None
    if resp.status_code >= 400:
        raise ValueError(f"download of {url} failed: HTTP {resp.status_code}")
    return resp.content


def _fetch_urllib(url: str, headers: dict[str, str], timeout: float) -> bytes:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"download of {url} failed: {exc}") from None


def _task_context() -> dict[str, Any]:
    """``dataset`` and ``round`` for the Context from ``$FLOWFED_TASK_CONTEXT`` (a node sets it)."""
    raw = os.environ.get("FLOWFED_TASK_CONTEXT")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("dataset", "round") if k in data}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m flowfed.runtime``."""
    p = argparse.ArgumentParser(
        prog="python -m flowfed.runtime",
        description="Run one flowfed tool under the platform's control over a WebSocket.",
    )
    p.add_argument("--endpoint", required=True, help="ws:// or wss:// URL of the control channel")
    p.add_argument(
        "--token",
        default=os.environ.get("FLOWFED_TOOL_TOKEN"),
        help="bearer token (OAuth2 access token of role tool); default $FLOWFED_TOOL_TOKEN",
    )
    p.add_argument("--tool", required=True, help="module_or_file:function_name")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to connect, and the longest silence from the platform while waiting",
    )
    p.add_argument("--dev", action="store_true", help="development mode: accept config updates")
    p.add_argument(
        "--unix-socket",
        default=None,
        help="reach the endpoint through this Unix socket (sandbox and container runners)",
    )
    return p


#: ``prctl`` option: the signal this process gets when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """End with the process that started us (``$FLOWFED_PARENT_PID``), even on its kill -9.

    A node agent or engine killed outright runs no clean-up: without this, the tool
    process it started would run on as an orphan. Linux only (``PR_SET_PDEATHSIG``); a
    no-op elsewhere or when the variable is not set.
    """
    import os

    raw = os.environ.get("FLOWFED_PARENT_PID", "")
    if not raw.isdigit():
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux, or no libc
        return
    if os.getppid() != int(raw):
        os._exit(1)  # the parent died before the signal was armed


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the engine; returns the exit code.

    Example:
        >>> main(["--endpoint", "ws://127.0.0.1:9", "--token", "t", "--tool", "no_colon"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    die_with_parent()
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.token:
        parser.error("a token is required (--token or $FLOWFED_TOOL_TOKEN)")
    if ":" not in ns.tool:
        parser.error("--tool must read module_or_file:function_name")
    if ns.timeout <= 0:
        parser.error("--timeout must be positive")
    opts = EngineOptions(
        endpoint=ns.endpoint,
        token=ns.token,
        tool=ns.tool,
        timeout=ns.timeout,
        dev=ns.dev,
        unix_socket=ns.unix_socket,
    )
    return ToolEngine(opts).run()
