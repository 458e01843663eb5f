"""flowfed's import graph has no circles, between modules or between its packages.

The graph is read from the source (``ast``), not from a running interpreter, so an
import that only a rare path executes counts as much as one at the top of a file. Every
import that can execute counts: at module level and inside functions (a lazy import
defers a circle, it does not remove it). Imports under ``if TYPE_CHECKING:`` never run and
do not count. Importing ``flowfed.db.writer`` runs ``flowfed/db/__init__.py`` first; that
implicit step is not an edge (a package always loads before its modules), but an
explicit ``from flowfed.db import Writer`` inside a module is an edge to the package,
and so to whatever its ``__init__`` imports.

Two levels are checked: modules (``flowfed.engine.task``), and the packages right below
``flowfed`` (``flowfed.engine`` → ``flowfed.db``), where a circle means two rooms of the
house plan that each need the other.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowfed

SRC = Path(flowfed.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module under src/flowfed: name → (file, is a package)."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        out[".".join(parts)] = (path, package)
    return out


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str) -> Iterator[tuple[str, int]]:
    """The flowfed modules ``name`` imports (when it runs), with the line of each import."""
    path, package = MODULES[name]
    here = name if package else name.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    yield from walk_one(other)
            else:
                yield from walk_one(child)

    def walk_one(node: ast.AST) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield (sub if sub in MODULES else module), node.lineno
        else:
            yield from walk(node)

    for target, line in walk(ast.parse(path.read_text(), str(path))):
        if target in MODULES and target != name:
            yield target, line


@functools.cache
def _graph() -> dict[str, dict[str, int]]:
    """module → {imported module: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for name in MODULES:
        edges: dict[str, int] = {}
        for target, line in _imports(name):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _explain(circle: list[str], graph: dict[str, dict[str, int]], level: str) -> str:
    lines = [f"{level} circle: {' <-> '.join(circle)}"]
    members = set(circle)
    for src in sorted(graph):
        for dst, line in sorted(graph[src].items()):
            a, b = (src, dst) if level == "module" else (_package(src), _package(dst))
            if a in members and b in members and a != b:
                lines.append(f"  {MODULES[src][0].relative_to(SRC.parent)}:{line} imports {dst}")
    return "\n".join(lines)


def test_the_reader_sees_imports_at_every_level() -> None:
    # The check below must be able to fail: the reader finds a module-level import, a
    # lazy one inside a function, and skips one under TYPE_CHECKING.
    graph = _graph()
    assert "flowfed.db" in graph["flowfed.engine.scheduler"]  # module level
    assert "flowfed.engine.federated" in graph["flowfed.engine.scheduler"]  # in a method
    assert "flowfed.engine.local" not in graph["flowfed.engine.scheduler"]  # TYPE_CHECKING
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("level", ["module", "package"])
def test_the_import_graph_has_no_circles(level: str) -> None:
    graph = _graph()
    if level == "module":
        edges = {m: set(targets) for m, targets in graph.items()}
    else:
        edges = {}
        for src, targets in graph.items():
            for dst in targets:
                if _package(src) != _package(dst):
                    edges.setdefault(_package(src), set()).add(_package(dst))
                    edges.setdefault(_package(dst), set())
    circles = _circles(edges)
    assert not circles, "\n".join(_explain(c, graph, level) for c in circles)
