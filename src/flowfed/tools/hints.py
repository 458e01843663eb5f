"""One message naming the import to add, instead of one "unknown tool" line per step.

A flow that forgets ``imports:`` fails planning with an "unknown tool" diagnostic for each
of its steps (25 lines for the federated example), none saying what is wrong. The tools
are simply not loaded. :func:`collapse_unknown_tools` replaces those diagnostics by one
that names the import: ``flowfed.tools.library`` for flowfed's own ``flowfed.*`` tools,
or the flow's own tools file when the flow imports nothing at all. A server (which never
imports what a submitted flow names) folds them into one message naming the
``--import`` options it should have been started with.

Example:
    >>> from flowfed.spec.diagnostics import Diagnostic
    >>> d = [Diagnostic("unknown tool 'flowfed.csv'", "f.yaml", 4, "load", "tool"),
    ...      Diagnostic("unknown tool 'flowfed.impute'", "f.yaml", 7, "clean", "tool")]
    >>> (one,) = collapse_unknown_tools(d, imported=[])
    >>> print(one.message)  # doctest: +NORMALIZE_WHITESPACE
    2 steps use flowfed's built-in tools (flowfed.csv, flowfed.impute), which are not
    loaded: add `imports: [flowfed.tools.library]` to the flow, or run with
    `--import flowfed.tools.library`
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from flowfed.spec.diagnostics import Diagnostic
from flowfed.spec.models import Flow
from flowfed.wording import plural

#: The module that registers every ``flowfed.*`` tool.
LIBRARY = "flowfed.tools.library"

_UNKNOWN = re.compile(r"^unknown tool '(?P<name>[^']+)'$")


def _fix(module: str, how: Literal["flow", "server"]) -> str:
    if how == "server":
        return f"start the server with `--import {module}`"
    return f"add `imports: [{module}]` to the flow, or run with `--import {module}`"


def collapse_unknown_tools(
    diagnostics: Sequence[Diagnostic],
    *,
    imported: Sequence[str],
    how: Literal["flow", "server"] = "flow",
    flow: Flow | None = None,
) -> list[Diagnostic]:
    """``diagnostics`` with the "unknown tool" ones an import would fix folded into one.

    ``imported`` lists what the flow and the command line imported. Tools named
    ``flowfed.*`` that :data:`LIBRARY` registers become one diagnostic naming it; when
    nothing was imported at all, the other unknown tools become one diagnostic saying the
    flow imports no tools. Given the ``flow``, the "is not produced by any step" lines
    about outputs of those steps go too: they follow from the missing tools. Every other
    diagnostic is kept, in order.
    """
    unknown: list[tuple[Diagnostic, str]] = []
    for d in diagnostics:
        match = _UNKNOWN.match(d.message)
        if match and d.field == "tool":
            unknown.append((d, match["name"]))
    if not unknown:
        return list(diagnostics)
    if how == "server":
        return _for_server(diagnostics, unknown, flow)
    builtin = {n for _, n in unknown if n.startswith("flowfed.") and _in_library(n, how)}
    folded: dict[int, Diagnostic] = {}
    lib = [(d, n) for d, n in unknown if n in builtin and LIBRARY not in imported]
    if lib:
        names = ", ".join(dict.fromkeys(n for _, n in lib))
        first = lib[0][0]
        folded[id(first)] = Diagnostic(
            f"{plural(len(lib), 'step')} {'uses' if len(lib) == 1 else 'use'} flowfed's "
            f"built-in tools ({names}), which are not loaded: {_fix(LIBRARY, how)}",
            first.file,
            first.line,
            field="imports",
        )
    rest = [(d, n) for d, n in unknown if n not in builtin]
    if rest and not imported and how == "flow":
        names = ", ".join(dict.fromkeys(n for _, n in rest))
        first = rest[0][0]
        folded[id(first)] = Diagnostic(
            f"{plural(len(rest), 'step')} {'names' if len(rest) == 1 else 'name'} tools that "
            f"are not registered ({names}), and the flow imports no tools: add "
            "`imports: [tools.py]` (the file or module defining them) to the flow, or run "
            "with `--import tools.py`",
            first.file,
            first.line,
            field="imports",
        )
    dropped = {id(d) for d, _ in lib}
    if rest and id(rest[0][0]) in folded:
        dropped |= {id(d) for d, _ in rest}
    if folded and flow is not None:
        gone = {n for d, n in unknown if id(d) in dropped or id(d) in folded}
        orphans = _orphans(flow, gone)
        dropped |= {id(d) for d in diagnostics if d.message in orphans}
    result: list[Diagnostic] = []
    for d in diagnostics:
        if id(d) in folded:
            result.append(folded[id(d)])
        elif id(d) not in dropped:
            result.append(d)
    return result


def _for_server(
    diagnostics: Sequence[Diagnostic],
    unknown: list[tuple[Diagnostic, str]],
    flow: Flow | None,
) -> list[Diagnostic]:
    """The server's fold: one diagnostic naming every ``--import`` it lacks.

    ``flowfed.*`` tools need the library; the other unknown tools of a flow whose own
    ``imports:`` (ignored by a server) presumably define them need those files. A typo (a
    close match exists) keeps its own "did you mean" diagnostic.
    """
    theirs = [i for i in (flow.imports if flow else []) if i != LIBRARY]
    builtin = [(d, n) for d, n in unknown if n.startswith("flowfed.")]
    own = [
        (d, n)
        for d, n in unknown
        if theirs and not n.startswith("flowfed.") and not (d.hint or "").startswith("did you")
    ]
    grouped = sorted(builtin + own, key=lambda dn: dn[0].line or 0)  # in the flow's order
    if not grouped:
        return list(diagnostics)
    names = list(dict.fromkeys(n for _, n in grouped))
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (
        f" and {len(names) - 5} more" if len(names) > 5 else ""
    )
    what = " and ".join(
        w
        for w, used in (("flowfed's built-in tools", builtin), ("the flow's imports", own))
        if used
    )
    fix = " ".join(
        f"--import {m}" for m in ([LIBRARY] if builtin else []) + (theirs if own else [])
    )
    first, steps = grouped[0][0], len(grouped)
    # The fix goes in the message itself: clients that print only messages show it too.
    one = Diagnostic(
        f"this server has not imported {what}: {plural(steps, 'step')} "
        f"use{'s' if steps == 1 else ''} unknown tools {shown}; start the server with {fix}",
        file=first.file,
        line=first.line,
        step=first.step if steps == 1 else None,
        field="tool",
    )
    gone = {id(d) for d, _ in grouped}
    orphans = _orphans(flow, set(names)) if flow is not None else set()
    return [one] + [d for d in diagnostics if id(d) not in gone and d.message not in orphans]


def _orphans(flow: Flow, tools: set[str]) -> set[str]:
    """The "is not produced by any step" messages that follow from ``tools`` missing."""
    from flowfed.spec.composite import flatten

    return {
        f"input '{name}' is not produced by any step"
        for step in flatten(flow).flow.steps  # a step of several tools: each of them
        if step.tool in tools
        for name in (
            step.outputs.values() if isinstance(step.outputs, dict) else step.outputs or []
        )
    }


def _in_library(name: str, how: Literal["flow", "server"]) -> bool:
    """Whether :data:`LIBRARY` registers a tool ``name``.

    For a local flow the library is imported to know for sure (the command ends with the
    error anyway); a server must not gain tools it was not started with, so there every
    ``flowfed.*`` name counts as the library's (they all are).
    """
    import importlib

    from flowfed.tools.core import get_registry

    if how == "server":
        return True
    try:
        importlib.import_module(LIBRARY)
    except Exception:  # an optional dependency missing: no hint rather than a crash
        return False
    return get_registry().find(name) is not None
