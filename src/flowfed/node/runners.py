"""How a node agent runs a tool: in a bubblewrap sandbox (the default), a subprocess, a thread.

``sandbox`` (the default of ``flowfed node start``) runs every task in a **warm worker**:
one bubblewrap sandbox per (run, dataset), kept between tasks and ended when idle
(:class:`WorkerPool`). Inside it, :mod:`flowfed.runtime.worker` forks a fresh child per
task, which runs one ordinary tool-side lifecycle over its own control channel, a Unix
socket. The sandbox shows the tool only:

* the Python installation read-only (``sys.prefix``, ``sys.base_prefix``, the folders on
  the agent's ``sys.path``), ``/usr`` and the ``/lib*``, ``/bin`` links, and from ``/etc``
  only what the dynamic loader needs plus a one-line ``passwd``/``group`` for its user;
* the ``--import`` tool files (a file, or its package folder), read-only;
* the one dataset file the task works on, read-only (not its folder);
* the task's own area (inputs, outputs, ``tmp``), read-write, emptied before every task;
* a private ``/tmp``, ``/dev`` and ``/proc``; no network (its own empty namespace).

It runs as uid/gid 65534 and, when the agent is root, as the host's uid 65534 too (a user
namespace the agent maps itself): the kernel exempts the host's root from RLIMIT_NPROC.
:class:`SandboxLimits` bound each process's memory (RLIMIT_AS), the worker's processes
and threads (RLIMIT_NPROC), and each task's CPU time (RLIMIT_CPU).

``subprocess`` (``python -m flowfed.runtime`` per task, no isolation) and ``inprocess``
(a thread of the agent) are for development and need ``--insecure``.

Example:
    >>> RUNNERS
    ('inprocess', 'subprocess', 'sandbox')
    >>> SandboxLimits()
    SandboxLimits(memory_mb=2048, processes=64, cpu_seconds=3600)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flowfed
from flowfed.executors.isolated import (
    CONNECT_S,
    GRACE_S,
    SandboxUnavailable,
    _Call,
    _Channel,
    _drive,
    _run_process,
    tool_entrypoint,
)
from flowfed.executors.processes import ProcessTaskError, ProcessTimeout
from flowfed.tools.core import Context, ToolSpec

log = logging.getLogger("flowfed.node")

RUNNERS = ("inprocess", "subprocess", "sandbox")
#: The runners that isolate nothing: ``flowfed node start`` wants ``--insecure`` for them.
INSECURE_RUNNERS = frozenset({"inprocess", "subprocess"})
#: The sandbox's user and group (``nobody``/``nogroup`` on Debian and most distributions).
SANDBOX_UID = 65534
#: Seconds an idle warm worker is kept before it is ended.
IDLE_S = 60.0
#: Install hint shown when bubblewrap is missing.
INSTALL_HINT = "apt-get install bubblewrap"
#: Modules a warm worker imports once, before its first task (missing ones are skipped).
PRELOAD = ("flowfed.tools.library", "numpy", "pandas", "pyarrow.parquet")
#: Environment of a sandboxed tool. Nothing of the agent's own environment (tokens,
#: proxies, credentials paths) enters; one BLAS/OpenMP thread per process keeps
#: numerical libraries inside the memory and process limits (OpenBLAS reserves address
#: space per thread) and makes forking the warm worker safe.
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
#: Where the sandbox sees its control sockets (a short path: see :func:`sandbox_argv`).
SOCKETS = Path("/run/flowfed")
#: What the dynamic loader and Python read from /etc (bound when present).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of a sandboxed task (the node policy may set stricter ones).

    ``memory_mb`` bounds each process's address space (RLIMIT_AS: an allocation past it
    fails with MemoryError), ``processes`` the processes and threads of one worker
    (RLIMIT_NPROC: a fork bomb's forks fail), ``cpu_seconds`` each task's CPU time
    (RLIMIT_CPU: the task is killed). 0 means no limit.

    Example:
        >>> SandboxLimits(memory_mb=512).memory_mb
        512
    """

    memory_mb: int = 2048
    processes: int = 64
    cpu_seconds: int = 3600


@dataclass(eq=False)
class _TaskShim:
    """The parts of a plan ``TaskNode`` that :mod:`flowfed.executors.isolated` reads."""

    tool: ToolSpec
    step: str
    node: str
    config: dict[str, Any]

    def config_json(self) -> dict[str, Any]:
        return self.config


def limit_hint(etype: str, message: str, limits: SandboxLimits) -> str:
    """A sentence naming the sandbox limit a tool's error most likely ran into ('' if none).

    Example:
        >>> limit_hint("MemoryError", "Unable to allocate 4.00 GiB", SandboxLimits())
        " (the node's sandbox limits each process to 2048 MB of memory)"
    """
    if etype == "MemoryError" and limits.memory_mb:
        return f" (the node's sandbox limits each process to {limits.memory_mb} MB of memory)"
    exhausted = "Resource temporarily unavailable" in message or "new thread" in message
    if etype in ("BlockingIOError", "RuntimeError", "OSError") and exhausted:
        return f" (the node's sandbox limits a task to {limits.processes} processes and threads)"
    return ""


def bwrap_path() -> str | None:
    """The bubblewrap binary on ``$PATH`` (None when it is not installed)."""
    return shutil.which("bwrap")


def require_bwrap() -> str:
    """The bubblewrap binary, or :class:`SandboxUnavailable` saying how to install it."""
    found = bwrap_path()
    if found is None:
        raise SandboxUnavailable(
            f"the sandbox runner needs bubblewrap (bwrap), which is not on PATH: "
            f"install it (`{INSTALL_HINT}`), or run tools without isolation with "
            "--runner inprocess --insecure (development only)"
        )
    return found


def python_roots() -> list[Path]:
    """Folders the sandboxed interpreter imports from: the installation, nothing else.

    ``sys.prefix``, ``sys.base_prefix``, flowfed's own source folder and the folders
    that ``.pth`` files of the site-packages add (editable installs). Not ``sys.path`` as
    such: importing a tool file puts that file's folder on it (and ``python -m`` the
    working directory), which may hold the node's credentials or other datasets.
    """
    import site

    import flowfed

    roots = [Path(sys.prefix), Path(sys.base_prefix), Path(flowfed.__file__).parents[1]]
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    for folder in map(Path, sites):
        for pth in sorted(folder.glob("*.pth")) if folder.is_dir() else []:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in pth.read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith(("#", "import ")) and Path(line).is_dir():
                        roots.append(Path(line))
    return _outermost(p.resolve() for p in roots if p.is_dir())


def tool_paths(imports: Iterable[str], base: Path | None = None) -> list[Path]:
    """What to bind for ``--import`` entries: a tool file, or its package's folder.

    Module names (``mypkg.tools``) need nothing: they live on ``sys.path``.

    Example:
        >>> tool_paths(["flowfed.tools.library"])
        []
    """
    out = []
    for entry in imports:
        if not (entry.endswith(".py") or "/" in entry or os.sep in entry):
            continue
        p = Path(entry)
        p = (p if p.is_absolute() else (base or Path.cwd()) / p).resolve()
        if p.is_file() and (p.parent / "__init__.py").is_file():
            p = p.parent  # a module of a package: its siblings are imported with it
        if p.exists():
            out.append(p)
    return out


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths without those inside another one (a bind of the outer one shows them)."""
    unique = sorted(set(paths), key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for p in unique:
        if not any(p == k or p.is_relative_to(k) for k in kept):
            kept.append(p)
    return kept


def sandbox_argv(
    bwrap: str,
    *,
    area: Path,
    sockets: Path,
    etc: Path,
    readable: Iterable[Path],
    as_root: bool,
) -> list[str]:
    """The bubblewrap prefix of a node sandbox (the command follows it).

    ``area`` is bound read-write, ``sockets`` (the control sockets' folder) read-only at
    :data:`SOCKETS` (a Unix socket's path may not exceed 107 bytes, and the area's may),
    ``readable`` (files or folders) read-only at their own paths, ``etc`` holds the
    synthetic ``passwd`` and ``group``. With ``as_root`` the caller maps the user
    namespace itself (``--userns-block-fd``), so that the sandbox's uid 65534 is the
    host's uid 65534 and not the host's root.

    Example:
        >>> argv = sandbox_argv("bwrap", area=Path("/w/a"), sockets=Path("/w/s"),
        ...                     etc=Path("/w/etc"), readable=[], as_root=False)
        >>> argv[argv.index("--uid") + 1], "--share-net" in argv, "/" in argv[1:3]
        ('65534', False, False)
    """
    uid = str(SANDBOX_UID)
    argv = [bwrap, "--unshare-all", "--unshare-user"]
    if not as_root:
        argv += ["--uid", uid, "--gid", uid]
    argv += [
        "--die-with-parent",
        "--new-session",
        "--dev", "/dev",
        "--proc", "/proc",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--dir", "/etc",
    ]  # fmt: skip
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--ro-bind", str(etc / "passwd"), "/etc/passwd"]
    argv += ["--ro-bind", str(etc / "group"), "/etc/group"]
    binds = [(p, p, "--ro-bind") for p in _outermost(readable) if not p.is_relative_to("/usr")]
    binds += [(sockets, SOCKETS, "--ro-bind"), (area, area, "--bind")]
    made = {Path("/"), Path("/tmp"), Path("/etc"), Path("/usr")}
    for path, inside, how in binds:
        # bwrap makes missing parents 0700, which the unprivileged user cannot cross.
        for parent in reversed(inside.parents):
            if parent not in made:
                made.add(parent)
                argv += ["--dir", str(parent)]
        argv += [how, str(path), str(inside)]
    argv += ["--chdir", str(area)]
    return argv


class _CallEnd:
    """What :func:`flowfed.executors.isolated._drive` needs of a process, for one call.

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
        self.calls += 1
        self._fresh_area()
        shim = _TaskShim(spec, ctx.step, ctx.node, config)
        entry = tool_entrypoint(shim)  # type: ignore[arg-type]
        sock = self.sockets / f"c{self.calls}.sock"
        channel = _Channel(sock)
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
            call = _Call(shim, ctx.task_id, ctx, self.area)  # type: ignore[arg-type]
            end = _CallEnd(self)
            try:
                value = _drive(call, channel, end, args, timeout, self.area / "stderr.log")  # type: ignore[arg-type]
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


class WorkerPool:
    """Warm sandboxes of one node agent, one per (run, dataset) at a time per task.

    A task takes an idle worker of its key (or starts one), and gives it back when it
    ends normally. Workers idle longer than ``idle_s`` end; at most ``max_workers`` live:
    the longest-idle one of another key makes way for a new one.

    Example:
        >>> pool = WorkerPool(Path("/tmp/flowfed-doc-pool"), max_workers=2)
        >>> pool.size, pool.shutdown()
        (0, None)
    """

    def __init__(self, base: Path, max_workers: int = 8, idle_s: float = IDLE_S) -> None:
        self.base = base
        self.max_workers = max(1, max_workers)
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._workers: list[SandboxWorker] = []
        self._closed = False
        self._reaper = threading.Thread(
            target=self._reap, name="flowfed-sandbox-reaper", daemon=True
        )
        self._reaper.start()

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._workers)

    def _take(self, key: tuple[Any, ...]) -> SandboxWorker | None:
        while True:
            with self._lock:
                found = next(
                    (w for w in self._workers if w.key == key and not w.busy and w.alive), None
                )
                if found is None:
                    return None
                found.busy = True
            if found.settle():
                return found
            with self._lock:  # its last call never ended cleanly: not reused
                if found in self._workers:
                    self._workers.remove(found)
            found.close()

    def _make_room(self) -> None:
        with self._lock:
            idle = sorted((w for w in self._workers if not w.busy), key=lambda w: w.idle_since)
            while len(self._workers) >= self.max_workers and idle:
                victim = idle.pop(0)
                self._workers.remove(victim)
                threading.Thread(target=victim.close, daemon=True).start()

    def call(
        self,
        key: tuple[Any, ...],
        readable: list[Path],
        limits: SandboxLimits,
        spec: ToolSpec,
        args: dict[str, Any],
        config: dict[str, Any],
        ctx: Context,
        timeout: float | None,
        task_context: dict[str, Any],
    ) -> Any:
        """Run a task in a warm worker of ``key`` (started with ``readable`` bound)."""
        worker = self._take(key)
        if worker is None:
            self._make_room()
            worker = SandboxWorker(key, readable, limits, self.base)
            worker.busy = True
            with self._lock:
                self._workers.append(worker)
        try:
            return worker.call(spec, args, config, ctx, timeout, task_context)
        finally:
            with self._lock:
                worker.busy = False
                worker.idle_since = time.monotonic()
                if not worker.alive or self._closed:
                    if worker in self._workers:
                        self._workers.remove(worker)
                    worker.close()

    def _reap(self) -> None:
        while not self._closed:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                old = [
                    w
                    for w in self._workers
                    if not w.busy and (now - w.idle_since > self.idle_s or not w.alive)
                ]
                for w in old:
                    self._workers.remove(w)
            for w in old:
                w.close()

    def shutdown(self) -> None:
        """End every worker (a busy one's task fails as its process exits)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.close()


_pools: weakref.WeakKeyDictionary[Any, WorkerPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def pool_for(owner: Any, base: Path, max_workers: int) -> WorkerPool:
    """The warm-worker pool of ``owner`` (a node agent), made on first use.

    Its workers end when idle, when the pool is shut down (:func:`shutdown_pools`, also
    at exit), and with the agent's process (bubblewrap's ``--die-with-parent``).
    """
    with _pools_lock:
        pool = _pools.get(owner)
        if pool is None:
            pool = _pools[owner] = WorkerPool(base, max_workers)
            weakref.finalize(owner, pool.shutdown)
        return pool


@atexit.register
def shutdown_pools() -> None:
    """End the warm workers of every pool in this process."""
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.shutdown()


def run_sandboxed(
    owner: Any,
    *,
    base: Path,
    max_workers: int,
    run_id: str,
    dataset: dict[str, Any] | None,
    imports: list[str],
    limits: SandboxLimits,
    spec: ToolSpec,
    args: dict[str, Any],
    config: dict[str, Any],
    ctx: Context,
    timeout: float | None,
    task_context: dict[str, Any],
) -> Any:
    """Run one node task in the warm sandbox of its (run, dataset).

    Only that dataset's file and the ``imports`` tool files are bound, so a worker never
    shows a task another run's or another dataset's file. Raises as :func:`run_isolated`.
    """
    readable = tool_paths(imports)
    source = inspect_source(spec)
    if source is not None:
        readable.append(source)
    path = Path(dataset["path"]).resolve() if dataset else None
    if path is not None:
        readable.append(path)
    key = (run_id, dataset["name"] if dataset else None, str(path), tuple(readable), limits)
    pool = pool_for(owner, base, max_workers)
    return pool.call(key, readable, limits, spec, args, config, ctx, timeout, task_context)


def inspect_source(spec: ToolSpec) -> Path | None:
    """The file (or package folder) to bind for a tool that the sandbox imports by path."""
    entry = tool_entrypoint(_TaskShim(spec, "", "", {}))  # type: ignore[arg-type]
    source = entry.rpartition(":")[0]
    if not source.endswith(".py"):
        return None
    found = tool_paths([source])
    return found[0] if found else None


def run_isolated(
    spec: ToolSpec,
    args: dict[str, Any],
    config: dict[str, Any],
    ctx: Context,
    timeout: float | None,
    task_context: dict[str, Any],
) -> Any:
    """Run ``spec`` in ``python -m flowfed.runtime``, a plain child process (no isolation).

    Returns the tool's value in the shape :meth:`ToolSpec.split_outputs` expects; raises
    :class:`~flowfed.executors.processes.ProcessTaskError` or ``ProcessTimeout`` as
    :func:`flowfed.executors.isolated.call_isolated` does.
    """
    shim = _TaskShim(spec, ctx.step, ctx.node, config)
    workdir = Path(tempfile.mkdtemp(prefix="flowfed-node-task-")).resolve()
    entry = tool_entrypoint(shim)  # type: ignore[arg-type]
    channel = _Channel()
    env = dict(os.environ)
    env["FLOWFED_TOOL_TOKEN"] = channel.token
    env["FLOWFED_TASK_CONTEXT"] = json.dumps(task_context)
    env["TMPDIR"] = str(workdir / "tmp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The tool process ends with the agent, even when the agent is killed outright.
    env["FLOWFED_PARENT_PID"] = str(os.getpid())
    (workdir / "tmp").mkdir()
    cmd = [
        sys.executable, "-m", "flowfed.runtime", "--tool", entry, "--timeout", "60",
        "--endpoint", f"ws://127.0.0.1:{channel.port}",
    ]  # fmt: skip
    call = _Call(shim, ctx.task_id, ctx, workdir)  # type: ignore[arg-type]
    try:
        return _run_process(call, channel, cmd, env, args, timeout, workdir)
    finally:
        channel.close()
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = [
    "INSECURE_RUNNERS",
    "RUNNERS",
    "ProcessTaskError",
    "ProcessTimeout",
    "SandboxLimits",
    "SandboxUnavailable",
    "WorkerPool",
    "limit_hint",
    "require_bwrap",
    "run_isolated",
    "run_sandboxed",
]
