"""What a node sandbox is: its resource limits and the bubblewrap command that builds it.

The sandbox runner (:mod:`flowfed.node.runners`) starts every warm worker with the
command :func:`sandbox_argv` writes: a fresh namespace of every kind (no network), the
Python installation read-only (:func:`python_roots`), the ``--import`` tool files
(:func:`tool_paths`), the one dataset file, the task's own area read-write, a private
``/tmp``, ``/dev`` and ``/proc``, and a one-line ``passwd``/``group`` for uid/gid
:data:`SANDBOX_UID`. :class:`SandboxLimits` are what the worker enforces inside it.

A room of its own because it is the sandbox's layout, pure and checkable without starting
anything: what a tool can see is decided here, the processes that run in it elsewhere
(:mod:`flowfed.node.sandbox_worker`).

Example:
    >>> argv = sandbox_argv("bwrap", area=Path("/w/a"), sockets=Path("/w/s"),
    ...                     etc=Path("/w/etc"), readable=[], as_root=False)
    >>> "--unshare-all" in argv, "--share-net" in argv
    (True, False)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flowfed.executors.isolated import SandboxUnavailable

#: The sandbox's user and group (``nobody``/``nogroup`` on Debian and most distributions).
SANDBOX_UID = 65534
#: Install hint shown when bubblewrap is missing.
INSTALL_HINT = "apt-get install bubblewrap"
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
    return outermost(p.resolve() for p in roots if p.is_dir())


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


def outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths without those inside another one (a bind of the outer one shows them).

    Example:
        >>> outermost([Path("/a/b"), Path("/a"), Path("/c")])
        [PosixPath('/a'), PosixPath('/c')]
    """
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
    binds = [(p, p, "--ro-bind") for p in outermost(readable) if not p.is_relative_to("/usr")]
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
