"""Import the Python files and modules that hold tools (a flow's ``imports``, ``--import``).

This is the one place tool code is loaded, so a syntax error or failing import inside a
user's ``tools.py`` becomes a located diagnostic instead of a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from flowfed.spec.diagnostics import Diagnostic


def import_tools(
    entries: list[str], base_dir: Path | None = None, *, origin: list[Diagnostic] | None = None
) -> list[Diagnostic]:
    """Import each entry (a ``.py`` path relative to ``base_dir``, or a dotted module).

    ``origin`` optionally gives, per entry, a diagnostic locating it in the flow file; its
    file and line are used for errors about that entry. Returns the problems found.
    """
    problems: list[Diagnostic] = []
    for i, entry in enumerate(entries):
        where = origin[i] if origin and i < len(origin) else None
        try:
            import_one(entry, base_dir)
        except ImportProblem as exc:
            problems.append(
                Diagnostic(
                    str(exc),
                    file=where.file if where else None,
                    line=where.line if where else None,
                    field=where.field if where else "imports",
                )
            )
    return problems


class ImportProblem(Exception):
    """A tool module that could not be imported; the message says why and where."""


def import_one(entry: str, base_dir: Path | None = None) -> ModuleType:
    """Import one tools file or module (raises :class:`ImportProblem`)."""
    looks_like_path = entry.endswith(".py") or "/" in entry or entry.startswith(".")
    if looks_like_path:
        path = Path(entry)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise ImportProblem(f"cannot import '{entry}': no such file {path}")
        return _import_file(path)
    try:
        return importlib.import_module(entry)
    except ModuleNotFoundError as exc:
        raise ImportProblem(f"cannot import module '{entry}': {exc}") from None
    except Exception as exc:
        raise ImportProblem(_describe(entry, exc)) from None


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    mod_name = f"flowfed_tools_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    # The tools file's own folder goes on sys.path so it can import its sibling modules,
    # and worker processes (fork) see the same modules.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportProblem(f"cannot import '{path}': not a Python module")
    # Already imported by its plain name (a tools file loaded earlier did `import stem`):
    # the same module, not a second copy of its tools.
    plain = sys.modules.get(path.stem)
    if plain is not None and _file_of(plain) == path:
        sys.modules[mod_name] = plain
        return plain
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    # A later tools file that does `from stem import helper` gets this very module (and
    # its registered tools) instead of executing the file again under the plain name.
    aliased = path.stem.isidentifier() and plain is None and _plain_import_finds(path)
    if aliased:
        sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(mod_name, None)
        if aliased:
            sys.modules.pop(path.stem, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ImportProblem(_describe(str(path), exc)) from None
    return module


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    try:
        return Path(file).resolve() if file else None
    except OSError:
        return None


def _plain_import_finds(path: Path) -> bool:
    """Whether ``import <stem>`` would load ``path`` (not a same-named module elsewhere)."""
    try:
        found = importlib.util.find_spec(path.stem)
    except (ImportError, ValueError):
        return False
    origin = getattr(found, "origin", None)
    try:
        return origin is not None and Path(origin).resolve() == path
    except OSError:
        return False


def _describe(entry: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
    return f"importing '{entry}' failed{where}: {type(exc).__name__}: {exc}"
