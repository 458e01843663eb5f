"""The command lines that start an isolated tool: sandbox (bubblewrap) and container.

:func:`sandbox_command` and :func:`container_command` build the prefix that confines the
tool's interpreter (read-only root, private ``/tmp``, no network, only the call's work
directory writable), :func:`container_engine` and :func:`container_limits` pick the engine
and its limits, and :func:`tool_entrypoint` names the tool for ``python -m
flowfed.runtime --tool``. Pure functions of the task and the host, no process started: a
room of its own so the isolation contract can be read (and tested) in one place, apart
from the conversation with the tool in :mod:`flowfed.executors.isolated`.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

from flowfed.executors.processes import ProcessTaskError
from flowfed.plan.graph import TaskNode

__all__ = [
    "DEFAULT_CPUS",
    "DEFAULT_IMAGE",
    "DEFAULT_MEMORY",
    "ContainerUnavailable",
    "SandboxUnavailable",
    "container_command",
    "container_engine",
    "container_limits",
    "sandbox_command",
    "tool_entrypoint",
]

#: The container image when ``$FLOWFED_CONTAINER_IMAGE`` is unset: Python with flowfed
#: installed (``docker build -t flowfed-runtime -f docker/runtime.Dockerfile .``).
DEFAULT_IMAGE = "flowfed-runtime:latest"
#: CPU and memory limits of a container when the step sets none
#: (``$FLOWFED_CONTAINER_CPUS``, ``$FLOWFED_CONTAINER_MEMORY`` override them).
DEFAULT_CPUS = "1"
DEFAULT_MEMORY = "2g"


class SandboxUnavailable(RuntimeError):
    """The sandbox executor was asked for but bubblewrap is not installed."""


class ContainerUnavailable(RuntimeError):
    """The container executor was asked for but neither docker nor podman is installed."""


def container_engine() -> str:
    """The container engine binary: ``$FLOWFED_CONTAINER_ENGINE``, else docker, else podman.

    Raises :class:`ContainerUnavailable` naming what to install or set.

    Example:
        >>> import os; os.environ["FLOWFED_CONTAINER_ENGINE"] = "/bin/sh"
        >>> container_engine()
        '/bin/sh'
        >>> del os.environ["FLOWFED_CONTAINER_ENGINE"]
    """
    chosen = os.environ.get("FLOWFED_CONTAINER_ENGINE", "").strip()
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise ContainerUnavailable(
                f"$FLOWFED_CONTAINER_ENGINE names {chosen!r}, which is not an executable"
            )
        return found
    for name in ("docker", "podman"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise ContainerUnavailable(
        "the container executor needs docker or podman, and neither is installed "
        "(or set $FLOWFED_CONTAINER_ENGINE; or use --executor sandbox)"
    )


def container_limits(node: TaskNode) -> tuple[str, str]:
    """``(cpus, memory)`` for ``node``: the step's (when it declares them), else the defaults."""
    cpus = getattr(node, "cpus", None) or os.environ.get("FLOWFED_CONTAINER_CPUS") or DEFAULT_CPUS
    memory = (
        getattr(node, "memory", None)
        or os.environ.get("FLOWFED_CONTAINER_MEMORY")
        or DEFAULT_MEMORY
    )
    return str(cpus), str(memory)


def container_command(
    engine: str,
    image: str,
    workdir: Path,
    *,
    name: str,
    readable: list[Path] | None = None,
    cpus: str = DEFAULT_CPUS,
    memory: str = DEFAULT_MEMORY,
    env: dict[str, str] | None = None,
    pass_env: tuple[str, ...] = ("FLOWFED_TOOL_TOKEN",),
) -> list[str]:
    """The ``docker run`` / ``podman run`` prefix (the image's command follows it).

    The same contract as the sandbox: read-only root, a private ``/tmp``, no network
    (``--network none``; the control channel is a Unix socket inside ``workdir``), only
    ``workdir`` writable, ``readable`` folders mounted read-only at their own paths. The
    tool runs as the caller's uid/gid so the files it writes into ``workdir`` are the
    caller's. ``pass_env`` names variables copied from the engine client's environment, so
    the token never appears on a command line.

    Example:
        >>> cmd = container_command("docker", "img", Path("/w"), name="t1")
        >>> cmd[:5], "--network" in cmd and cmd[cmd.index("--network") + 1]
        (['docker', 'run', '--rm', '--pull', 'never'], 'none')
    """
    wd = str(workdir)
    cmd = [
        engine, "run", "--rm",
        # A missing image is an immediate, clear error rather than a pull that outlasts
        # the connect timeout; production images are provisioned, not fetched per task.
        "--pull", "never",
        "--name", name,
        "--read-only",
        "--network", "none",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--pids-limit", "512",
        "--cpus", cpus,
        "--memory", memory,
        "--user", f"{os.getuid()}:{os.getgid()}",
        "--tmpfs", "/tmp:rw,nosuid,nodev",
        "--volume", f"{wd}:{wd}:rw",
        "--workdir", wd,
    ]  # fmt: skip
    if Path(engine).name.startswith("podman") and os.getuid() != 0:
        # Rootless podman maps the caller to root inside; keep-id keeps the caller's uid,
        # which the 0600 control socket and the work directory belong to.
        cmd += ["--userns", "keep-id"]
    for folder in dict.fromkeys(str(p.resolve()) for p in readable or []):
        if folder != wd:
            cmd += ["--volume", f"{folder}:{folder}:ro"]
    for key in pass_env:
        cmd += ["--env", key]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    cmd.append(image)
    return cmd


def tool_entrypoint(node: TaskNode) -> str:
    """The ``--tool`` argument for ``node``: ``module:function`` or ``/path/file.py:function``.

    Tools imported from a flow's ``imports:`` files live under synthetic module names
    (``flowfed_tools_<stem>_<hash>``) that a fresh interpreter cannot import: those are
    passed by source file; installed modules by module name (relative imports keep working).
    """
    fn = node.tool.fn
    module = getattr(fn, "__module__", None) or ""
    name = fn.__name__
    if module and not module.startswith("flowfed_tools_") and module != "__main__":
        return f"{module}:{name}"
    source = inspect.getsourcefile(fn)
    if source is None:
        raise ProcessTaskError(
            f"tool '{node.tool.name}' has no source file to run in a subprocess",
            etype="IsolationError",
        )
    return f"{Path(source).resolve()}:{name}"


def sandbox_command(workdir: Path, readable: list[Path] | None = None) -> list[str]:
    """The bubblewrap prefix: read-only root, private /tmp, no network, only ``workdir`` writable.

    ``readable`` folders (the tool's source folder, the working directory, the
    interpreter's prefix) that sit under ``/tmp`` would be hidden by the private ``/tmp``:
    they are bound back read-only.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "the sandbox executor needs bubblewrap (bwrap), which is not installed: "
            "run `apt-get install bubblewrap` (or use --executor subprocess)"
        )
    wd = str(workdir)
    again: list[str] = []
    for folder in dict.fromkeys(str(p.resolve()) for p in readable or []):
        if Path(folder).is_relative_to("/tmp") and Path(folder) != Path("/tmp"):
            again += ["--ro-bind", folder, folder]
    return [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        *again,
        "--bind", wd, wd,
        # Every namespace new, the network's too: the tool sees only an empty loopback.
        # The control channel is a Unix socket inside ``workdir``, which a bind mount
        # carries across the namespace boundary.
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
