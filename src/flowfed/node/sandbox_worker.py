"""One warm sandbox: a bubblewrap process that runs a node's tasks one after another.

A :class:`SandboxWorker` starts ``python -m flowfed.runtime.worker`` inside the sandbox
that :func:`~flowfed.node.sandbox.sandbox_argv` lays out (mapping the user namespace
itself when the agent runs as root), waits for it to say it is ready, and then serves one
call at a time: it empties the task area, hands over the client state, asks the worker to
fork a child for the task and drives that child's lifecycle over a Unix socket. After
anything but a normal end the worker is closed, so a cancelled, hung or misbehaving call
never shares a sandbox with the next.

A room of its own because it is the life of one sandboxed process; which worker serves
which task is :mod:`flowfed.node.worker_pool`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flowfed
from flowfed.executors.isolated import (
    CONNECT_S,
    GRACE_S,
    SandboxUnavailable,
    ToolCall,
    ToolChannel,
    drive_tool,
    tool_entrypoint,
)
from flowfed.executors.processes import ProcessTaskError
from flowfed.node.sandbox import (
    SANDBOX_ENV,
    SANDBOX_UID,
    SOCKETS,
    SandboxLimits,
    python_roots,
    require_bwrap,
    sandbox_argv,
)
from flowfed.node.subprocess_runner import TaskShim
from flowfed.tools.core import Context, ToolSpec

#: Modules a warm worker imports once, before its first task (missing ones are skipped).
PRELOAD = ("flowfed.tools.library", "numpy", "pandas", "pyarrow.parquet")


class _CallEnd:
    """What :func:`flowfed.executors.isolated.drive_tool` needs of a process, for one call.

    The call's process is a child of the worker inside the sandbox; the worker reports
    its exit code. Killing it kills the whole worker (it is not reused).
    """

    def __init__(self, worker: SandboxWorker) -> None:
        self.worker = worker
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self.worker.take_exit(0)
            if code is not None:
                self.returncode = code
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            self.returncode = self.worker.take_exit(timeout or 0)
            if self.returncode is None:
                raise subprocess.TimeoutExpired("tool call", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        self.worker.close()
        if self.returncode is None:
            self.returncode = -9


@dataclass(eq=False)
class SandboxWorker:
    """One warm sandbox: a bubblewrap process running :mod:`flowfed.runtime.worker`.

    It serves one call at a time (:meth:`call`); the pool makes sure of that.
    """

    key: tuple[Any, ...]
    readable: list[Path]
    limits: SandboxLimits
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    calls: int = 0
    busy: bool = False
    #: The last call returned before its process was reported gone (see :meth:`settle`).
    unsettled: bool = False
    idle_since: float = field(default_factory=time.monotonic)
    _reports: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        bwrap = require_bwrap()
        self.base.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="w-", dir=self.base)).resolve()
        self.area = self.dir / "area"
        # In the system's temporary folder: the node's --work-dir may be too deep a path
        # for a Unix socket.
        self.sockets = Path(tempfile.mkdtemp(prefix="flowfed-ctl-")).resolve()
        # Crossable by the sandbox's user; each socket in it is its alone (mode 600).
        self.sockets.chmod(0o711)
        etc = self.dir / "etc"
        for d in (self.area, etc):
            d.mkdir()
        uid = SANDBOX_UID
        passwd = f"sandbox:x:{uid}:{uid}:flowfed sandbox:/nonexistent:/bin/false\n"
        (etc / "passwd").write_text(passwd)
        (etc / "group").write_text(f"sandbox:x:{uid}:\n")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chown(self.area, uid, uid)
        argv = sandbox_argv(
            bwrap,
            area=self.area,
            sockets=self.sockets,
            etc=etc,
            readable=[*python_roots(), *self.readable],
            as_root=self.as_root,
        )
        fds: list[int] = []
        info_r = info_w = block_r = block_w = -1
        if self.as_root:
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds = [info_w, block_r]
            argv[3:3] = ["--info-fd", str(info_w), "--userns-block-fd", str(block_r)]
        cmd = [*argv]
        if self.as_root:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise SandboxUnavailable(
                    "a node agent running as root needs util-linux's setpriv to run the "
                    "sandbox as an unprivileged user (apt-get install util-linux)"
                )
            cmd += [
                setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            ]  # fmt: skip
        limits = self.limits
        cmd += [
            sys.executable, "-m", "flowfed.runtime.worker",
            "--memory-mb", str(limits.memory_mb),
            "--processes", str(limits.processes),
            "--cpu-seconds", str(limits.cpu_seconds),
            "--timeout", str(CONNECT_S),
            "--scratch", "/tmp", "--scratch", "/dev/shm",
        ]  # fmt: skip
        for module in PRELOAD:
            cmd += ["--preload", module]
        env = {**SANDBOX_ENV, "HOME": str(self.area), "TMPDIR": "/tmp"}
        # The same flowfed as the agent's (bound read-only by python_roots), even where an
        # editable install elsewhere would come first: agent and tool speak one protocol.
        env["PYTHONPATH"] = str(Path(flowfed.__file__).resolve().parents[1])
        self.log_path = self.dir / "worker.log"
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                pass_fds=fds,
            )
        try:
            if self.as_root:
                os.close(info_w)
                os.close(block_r)
                self._map_user(info_r, block_w)
            threading.Thread(
                target=self._read_reports, name="flowfed-sandbox-reports", daemon=True
            ).start()
            ready = self._next_report(CONNECT_S)
            if ready is None or not ready.get("ready"):
                raise ProcessTaskError(
                    "the sandbox did not start"
                    + (f" (exit code {self.proc.poll()})" if self.proc.poll() is not None else "")
                    + self.tail(),
                    etype="IsolationError",
                )
        except BaseException:
            self.close()
            raise
        finally:
            for fd in (info_r, block_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _map_user(self, info_r: int, block_w: int) -> None:
        """Map the sandbox's uids: 0 to the host's 0 for bubblewrap's own set-up (mounts,
        as the root of the new namespace only), 65534 to the host's 65534 for the tool
        (``setpriv`` switches to it before Python starts)."""
        buf = b""
        deadline = time.monotonic() + 10
        info: dict[str, Any] | None = None
        while info is None and time.monotonic() < deadline:
            chunk = os.read(info_r, 4096)
            if not chunk:
                break
            buf += chunk
            with contextlib.suppress(ValueError):
                info = json.loads(buf)
        if info is None or "child-pid" not in info:
            raise ProcessTaskError(
                "the sandbox did not start (no user namespace)" + self.tail(),
                etype="IsolationError",
            )
        pid = int(info["child-pid"])
        u = SANDBOX_UID
        Path(f"/proc/{pid}/uid_map").write_text(f"0 0 1\n{u} {u} 1\n")
        Path(f"/proc/{pid}/gid_map").write_text(f"0 0 1\n{u} {u} 1\n")
        os.write(block_w, b"1")

    def _read_reports(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    self._reports.put(msg)
        self._reports.put({"gone": True})

    def _next_report(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg = self._reports.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg.get("gone"):
            self._reports.put(msg)  # every later reader learns it too
            return None
        return msg

    def take_exit(self, timeout: float) -> int | None:
        """The current call's exit code once the worker reported it (None before)."""
        msg = self._next_report(timeout)
        if msg is not None and msg.get("call") == self.calls:
            return int(msg.get("exit", 1))
        if self.proc is not None and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip()
            if text:
                return "\n" + text[-limit:]
        return ""

    def settle(self, timeout: float = GRACE_S + 5) -> bool:
        """Wait until the last call's processes are gone (the worker reports it); False
        when the worker is not fit for another call (gone, or the report never came)."""
        if self.unsettled:
            code = self.take_exit(timeout)
            self.unsettled = False
            if code is None:
                return False
        return self.alive

    def _fresh_area(self) -> None:
        """Empty the task area (what the last task wrote there is gone) and lay it out."""
        for entry in os.scandir(self.area):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        for name in ("inputs", "outputs", "tmp"):
            (self.area / name).mkdir()
            if self.as_root:
                os.chown(self.area / name, SANDBOX_UID, SANDBOX_UID)

    def call(
        self,
        spec: ToolSpec,
        args: dict[str, Any],
        config: dict[str, Any],
        ctx: Context,
        timeout: float | None,
        task_context: dict[str, Any],
    ) -> Any:
        """Run one task in this worker; raises as :func:`run_isolated` does.

        After anything but a normal end (the tool finished, or raised) the worker is
        closed: a cancelled, hung or misbehaving call never shares a sandbox with the next.
        """
        if not self.settle():
            raise ProcessTaskError(
                "the sandbox worker is gone" + self.tail(), etype="ProcessExited"
            )
        from flowfed.node.client_state import hand_over, take_back

        self.calls += 1
        self._fresh_area()
        task_context = dict(task_context)
        state_file = hand_over(ctx, self.area, task_context, SANDBOX_UID if self.as_root else None)
        shim = TaskShim(spec, ctx.step, ctx.node, config)
        entry = tool_entrypoint(shim)  # type: ignore[arg-type]
        sock = self.sockets / f"c{self.calls}.sock"
        channel = ToolChannel(sock)
        if self.as_root:
            os.chown(sock, SANDBOX_UID, SANDBOX_UID)
        request = {
            "call": self.calls,
            "tool": entry,
            "socket": str(SOCKETS / sock.name),
            "token": channel.token,
            "area": str(self.area),
            "context": task_context,
        }
        reusable = False
        try:
            proc = self.proc
            assert proc is not None and proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                raise ProcessTaskError(
                    "the sandbox worker is gone" + self.tail(), etype="ProcessExited"
                ) from None
            call = ToolCall(shim, ctx.task_id, ctx, self.area)  # type: ignore[arg-type]
            end = _CallEnd(self)
            try:
                value = drive_tool(call, channel, end, args, timeout, self.area / "stderr.log")  # type: ignore[arg-type]
                take_back(ctx, state_file)
                reusable = True
                return value
            except ProcessTaskError as exc:
                # The tool raised: the lifecycle ended normally, in Error.
                reusable = call.error is not None and exc.etype == call.error.error_type
                if call.state is None and not reusable:
                    # It never connected: what the worker said explains it, if anything.
                    raise ProcessTaskError(
                        str(exc) + self.tail(), exc.remote_traceback, exc.etype
                    ) from None
                raise
            finally:
                # The call's process ends on its own after its final status: the next
                # call waits for that (settle), this one returns at once.
                self.unsettled = reusable and end.returncode is None
        finally:
            channel.close()
            with contextlib.suppress(OSError):
                sock.unlink()
            if not reusable:
                self.close()

    def close(self) -> None:
        """End the sandbox and remove its folder."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)
