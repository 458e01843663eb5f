"""The effective code of a tool: everything of the user's own code a call can reach.

A cache key that hashed only the tool function's own lines served stale results when a
helper it calls, or a constant it reads, changed. :func:`effective_code_hash` walks what
the tool can reach and hashes each piece by kind:

- **the user's own functions and classes** (in modules that are neither the standard
  library nor an installed distribution): their normalized source (the AST with
  docstrings dropped, so comments, docstrings and formatting do not count; the decorators
  of helpers and their settings do, the tool's own ``@tool(...)`` does not: its version is
  a part of the cache key by itself), their default arguments, closure cells and the
  globals their code names, transitively and across modules; a class with its bases,
  every method and its class attributes; lambdas too (their source, else their bytecode);
- **module-level values** they read (``THRESHOLD = 0.5``, ``WEIGHTS = {...}``, arrays,
  frames): their canonical content fingerprint; an object with no canonical encoding
  counts by its class and, when its ``repr`` is stable (no memory address), that text;
- **installed packages** (numpy, scikit-learn, flowfed itself): their distribution's
  name and version, not their code; the standard library: the Python version.

What the walk cannot see: code reached only through strings (``getattr(mod, name)``,
``importlib.import_module(...)``), files the tool reads (declare ``source_version``), and
state changed at run time. A name is followed wherever it appears in the code (as a
global or as an attribute), so the walk errs towards including too much: an edit there
re-runs the tool, never the reverse.

Example:
    >>> import textwrap, types
    >>> mod = types.ModuleType("demo_mod")
    >>> exec(textwrap.dedent('''
    ...     FACTOR = 2
    ...     def helper(x):
    ...         return x * FACTOR
    ...     def tool(xs):
    ...         return [helper(x) for x in xs]
    ... '''), mod.__dict__)
    >>> before = effective_code_hash(mod.tool)
    >>> mod.FACTOR = 3
    >>> effective_code_hash(mod.tool) == before
    False
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowfed.artifacts.hashing import UNHASHABLE, _code_object_digest, _strip, fingerprint

__all__ = ["code_hash", "effective_code_hash", "source_hash"]


def code_hash(fn: Any) -> str:
    """The hash of a tool's effective code (:func:`effective_code_hash`): the one function
    the cache key and a node's journal name a tool's code by.

    Comments, docstrings and formatting do not change it; a change of logic in the tool,
    in a helper it calls (transitively, across the user's modules), in a constant it reads,
    a default argument or a decorator setting does, as does the version of an installed
    package it uses. Falls back to bytecode and constants where source is unavailable.
    """
    return effective_code_hash(fn)


def effective_code_hash(fn: Any) -> str:
    """SHA-256 over the normalized code of ``fn`` and all user code and values it reaches.

    ``fn`` is a function (or a ``functools.partial`` of one). Stable across processes and
    machines: no ids, paths or module names go in, only code, values and versions.
    """
    walk = _Walk()
    root = fn.func if isinstance(fn, functools.partial) else fn
    walk.function(root, root=True)
    if isinstance(fn, functools.partial):
        walk.value(fn.args)
        walk.value(fn.keywords)
    h = hashlib.sha256(b"flowfed-effective-code-v1\0")
    h.update(walk.root.encode())
    for part in sorted(walk.parts):
        h.update(b"\0")
        h.update(part.encode())
    return h.hexdigest()


def source_hash(obj: Any, *, decorators: bool = True) -> str:
    """SHA-256 of one function's or class's normalized source (AST, docstrings dropped;
    decorators kept unless ``decorators`` is false); bytecode and constants when the
    source cannot be read."""
    try:
        tree = _tree(obj)
    except (OSError, TypeError, SyntaxError, RecursionError):
        tree = None
    if tree is not None:
        if not decorators:
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    node.decorator_list = []
        try:
            dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
            return hashlib.sha256(b"ast\0" + dumped.encode()).hexdigest()
        except RecursionError:
            pass  # an expression nested too deeply to dump: the bytecode still tells
    code = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    if code is None:
        raise TypeError(f"cannot compute a code hash for {obj!r}: no source and no bytecode")
    h = hashlib.sha256(b"bytecode\0")
    _code_object_digest(code, h)
    return h.hexdigest()


def _tree(obj: Any) -> ast.Module:
    from flowfed.artifacts.hashing import _source_by_positions

    if isinstance(obj, types.FunctionType):
        quick = _source_by_positions(obj)
        if quick is not None:
            try:
                return _strip(ast.parse(textwrap.dedent(quick)))
            except SyntaxError:
                pass  # not a whole definition: ask inspect
    src = textwrap.dedent(inspect.getsource(obj))
    if getattr(obj, "__name__", "") == "<lambda>":
        # inspect gives the lines the lambda is on, which may not parse alone (a lambda
        # inside a call spread over lines): keep what parses, else use the bytecode.
        src = src.strip().rstrip(",")
    return _strip(ast.parse(src))


# --- where a module comes from -------------------------------------------------------------


@functools.cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


@functools.cache
def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _origin(module_name: str | None) -> str | None:
    """``None`` for the user's own code, else what stands for it: ``dist:NAME==VERSION``
    for an installed distribution, ``python:X.Y`` for the standard library and builtins."""
    if not module_name:
        return f"python:{sys.version_info.major}.{sys.version_info.minor}"
    top = module_name.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "builtins":
        return f"python:{sys.version_info.major}.{sys.version_info.minor}"
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module is not None and file is None:
        return f"python:{sys.version_info.major}.{sys.version_info.minor}"  # frozen/builtin
    installed = file is not None and any(
        part in ("site-packages", "dist-packages") for part in Path(file).parts
    )
    return _installed_as(top, installed, module)


def _editable_holds(dist: str, module: Any) -> bool:
    """Whether ``module`` is a file of ``dist`` installed editable (``pip install -e``)."""
    import json
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution(dist).read_text("direct_url.json")
    except (PackageNotFoundError, OSError):
        return False
    try:
        info = json.loads(text or "{}")
    except ValueError:
        return False
    url = str(info.get("url", ""))
    if not (info.get("dir_info") or {}).get("editable") or not url.startswith("file://"):
        return False
    root = Path(url.removeprefix("file://")).resolve()
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(root)


@functools.cache
def _installed_as(top: str, installed: bool, module: Any) -> str | None:
    # A distribution named like the package (numpy, pandas, flowfed, editable installs
    # too) is one cheap look-up; mapping every installed distribution's files
    # (packages_distributions) costs seconds, so it is the last resort, for packages
    # under site-packages whose distribution has another name (sklearn, yaml).
    version = _dist_version(top)
    if version != "?" and (installed or _editable_holds(top, module)):
        return f"dist:{top}=={version}"
    if not installed:
        return None  # the user's own code (even if some distribution shares its name)
    declared = getattr(module, "__version__", None)
    if isinstance(declared, str):
        return f"dist:{top}=={declared}"
    dists = _distributions().get(top)
    if dists:
        return ",".join(f"dist:{d}=={_dist_version(d)}" for d in sorted(set(dists)))
    return f"dist:{top}==?"


# --- the walk ------------------------------------------------------------------------------


class _Walk:
    """One walk from a tool: the parts found (each a string), each object visited once."""

    def __init__(self) -> None:
        self.parts: set[str] = set()
        self.seen: set[int] = set()
        self.keep: list[Any] = []  # what `seen` ids belong to stays alive during the walk
        self.root = ""

    def _first(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        self.keep.append(obj)
        return True

    def function(self, fn: Any, *, root: bool = False) -> None:
        if not self._first(fn):
            return
        if not root:
            origin = _origin(getattr(fn, "__module__", None))
            if origin is not None:
                self.parts.add(origin)
                return
        # The tool's own decorator (``@tool(version=..., type=...)``) is not its logic: the
        # version joins the cache key by itself. A helper's decorators are (``@lru_cache``,
        # ``@clip(max_value=10)``), and so are a wrapper's settings, held in its closure.
        try:
            digest = source_hash(fn, decorators=not root)
        except TypeError:
            if root:
                raise
            digest = "no-source"  # still followed: its defaults, closure and globals
        if root:
            self.root = digest
        else:
            self.parts.add(f"code:{fn.__qualname__}:{digest}")
        if fn.__defaults__:
            self.value(fn.__defaults__, f"defaults:{fn.__qualname__}")
        if fn.__kwdefaults__:
            self.value(fn.__kwdefaults__, f"kwdefaults:{fn.__qualname__}")
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents, f"closure:{fn.__qualname__}")
            except ValueError:  # an empty cell
                continue
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            self.value(wrapped)
        self.names(fn.__code__, fn.__globals__)

    def names(self, code: types.CodeType, globals_: dict[str, Any]) -> None:
        """Follow every name ``code`` (and its nested code) uses that its module defines."""
        names = set(_code_names(code))
        for name in sorted(names):
            if name in globals_:
                self.value(globals_[name], f"global:{name}", names)

    def value(self, obj: Any, label: str = "", names: set[str] | None = None) -> None:
        if isinstance(obj, types.ModuleType):
            self.module(obj, names or set())
        elif isinstance(obj, types.FunctionType):
            self.function(obj)
        elif isinstance(obj, type):
            self.klass(obj)
        elif isinstance(obj, types.MethodType):
            self.value(obj.__func__)
            self.value(obj.__self__, label)
        elif isinstance(obj, functools.partial):
            self.value(obj.func)
            self.value(obj.args, label)
            self.value(obj.keywords, label)
        elif isinstance(obj, staticmethod | classmethod):
            self.value(obj.__func__)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                if f is not None:
                    self.value(f)
        elif isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            origin = _origin(getattr(obj, "__module__", None))
            if origin is not None:
                self.parts.add(origin)
        else:
            self.data(obj, label)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        origin = _origin(module.__name__)
        if origin is not None:
            self.parts.add(origin)
            return
        # A user module: what of it the code names (``helpers.scale`` names ``scale``).
        for name in sorted(names):
            member = module.__dict__.get(name)
            if member is not None or name in module.__dict__:
                self.value(member, f"global:{name}", names)

    def klass(self, cls: type) -> None:
        if not self._first(cls):
            return
        origin = _origin(cls.__module__)
        if origin is not None:
            self.parts.add(origin)
            return
        try:
            digest = source_hash(cls)
        except TypeError:
            digest = "no-source"  # made at run time: its members below still count
        self.parts.add(f"class:{cls.__qualname__}:{digest}")
        for base in cls.__mro__[1:]:
            if base is not object:
                self.klass(base)
        for name, member in sorted(cls.__dict__.items()):
            if name.startswith("__") and name.endswith("__") and not callable(member):
                continue  # __module__, __dict__, __doc__, ...
            self.value(member, f"attr:{cls.__qualname__}.{name}")

    def data(self, obj: Any, label: str) -> None:
        fp = fingerprint(obj)
        if fp is not UNHASHABLE:
            self.parts.add(f"value:{label}:{fp}")
            return
        if not self._first(obj):
            return
        if isinstance(obj, list | tuple | set | frozenset):
            # Containers of functions or classes (a registry of handlers): follow each.
            for i, item in enumerate(obj):
                self.value(item, f"{label}[{i}]")
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                self.value(v, f"{label}[{k!r}]")
            return
        # An object with no canonical encoding: its class (user code or a version), its
        # attributes when it has them, and a repr that names no memory address.
        self.klass(type(obj))
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, v in sorted(attrs.items()):
                self.value(v, f"{label}.{k}")
        try:
            text = repr(obj)
        except Exception:
            return
        if " at 0x" not in text:
            self.parts.add(f"repr:{label}:{hashlib.sha256(text.encode()).hexdigest()}")


def _code_names(code: types.CodeType) -> Iterator[str]:
    """Every global and attribute name ``code`` and its nested code objects use."""
    todo = [code]
    while todo:
        c = todo.pop()
        yield from c.co_names
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
