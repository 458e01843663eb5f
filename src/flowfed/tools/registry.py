"""Tools by name: :class:`Registry`, the process-wide one and a per-thread override.

``@tool`` registers into :func:`get_registry`; a cluster worker loading one flow's tools
file sends that thread's registrations elsewhere with :func:`registering_into`. Telling a
tool re-imported under another module name from a second tool reusing a name is the
subtle part, and it lives here with the registry it guards.

Example:
    >>> registry = Registry()
    >>> len(registry), registry.find("nothing") is None
    (0, True)
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flowfed.tools.spec import ToolSpec


class DuplicateTool(ValueError):
    """Two different functions registered under one name and version."""


class Registry:
    """Tools by name. ``flowfed.tools.get_registry()`` is the process-wide default."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def add(self, spec: ToolSpec) -> ToolSpec:
        """Register ``spec``; re-registering the same function (a module re-import) replaces."""
        old = self._tools.get(spec.name)
        if old is not None and not _same_function(old.fn, spec.fn):
            raise DuplicateTool(
                f"tool '{spec.name}' is already registered by "
                f"{_fn_identity(old.fn)}; {_fn_identity(spec.fn)} cannot reuse the name"
            )
        self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec:
        """The tool called ``name`` (``name@version`` is accepted and checked)."""
        base, _, version = name.partition("@")
        spec = self._tools[base]
        if version and version != spec.version:
            raise KeyError(name)
        return spec

    def find(self, name: str) -> ToolSpec | None:
        """Like :meth:`get`, but None when missing."""
        try:
            return self.get(name)
        except KeyError:
            return None

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> typing.Iterator[ToolSpec]:
        return iter([self._tools[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._tools)


def _fn_identity(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _source_of(fn: Callable[..., Any]) -> tuple[str, int, str] | None:
    """Where ``fn`` is defined: (resolved file, first line, qualified name), if known."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None
    try:
        file = str(Path(code.co_filename).resolve())
    except OSError:
        file = code.co_filename
    return file, code.co_firstlineno, getattr(fn, "__qualname__", "?")


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether ``a`` and ``b`` are one tool: the same object, or the same definition.

    A second tools file that imports a tool (or a helper module holding one) from the
    first gets the function object already registered, or, when the first file was loaded
    by path and the second imports it by module name, the same source executed under
    another module name. Neither is a second tool with the name.
    """
    if a is b or _fn_identity(a) == _fn_identity(b):
        return True
    where = _source_of(a)
    return where is not None and where == _source_of(b)


_DEFAULT = Registry()

# A registry that replaces the default in one thread (or task) only, see `registering_into`.
_OVERRIDE: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "flowfed_registry", default=None
)


def get_registry() -> Registry:
    """The registry that ``@tool`` and ``@register_task`` fill: the process-wide one, or
    the one :func:`registering_into` set for the calling thread."""
    override = _OVERRIDE.get()
    return _DEFAULT if override is None else override


@contextlib.contextmanager
def registering_into(registry: Registry) -> Iterator[Registry]:
    """Send this thread's ``@tool`` registrations to ``registry`` for the block.

    Other threads keep registering into the process-wide registry: a cluster worker loads
    one flow's tools file on one thread while others run tools (which may import modules
    that register tools of their own).

    Example:
        >>> from flowfed.tools import tool
        >>> private = Registry()
        >>> with registering_into(private):
        ...     @tool(version="1")
        ...     def only_here() -> int:
        ...         return 1
        >>> private.find("only_here") is not None, get_registry().find("only_here")
        (True, None)
    """
    token = _OVERRIDE.set(registry)
    try:
        yield registry
    finally:
        _OVERRIDE.reset(token)
