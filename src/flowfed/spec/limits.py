"""Bounds on YAML and JSON documents, checked before anything is built from them.

A YAML document is a graph, not a tree: an alias (``*a``) repeats its anchor's whole
subtree, so 330 bytes of nested aliases ("billion laughs") expand to 10^9 values, and a
server that builds them runs out of memory. Nesting is the other cheap attack: every level
costs a stack frame of whoever walks the document, and past the interpreter's limit the
walk fails with ``RecursionError`` (a 500, not a located problem). And a 2 MB flat list
``[0,0,...]`` composes into ~300 MB of YAML nodes before anyone could count them.

So :func:`check_yaml` walks the parser's event stream (libyaml when available: no node is
built, memory stays flat) and counts, *as if every alias were expanded*, the values, the
depth and the alias references, and stops at the first limit crossed. It knows the size
and depth of every anchored subtree when its alias appears, so a bomb is refused after a
handful of events, before it expands. :func:`check_json_depth` bounds the nesting of a
JSON text at C speed, before ``json.loads`` (whose own guard is the interpreter's
recursion limit) or pydantic see it.

The limits (module constants, documented in docs/server.md):

- :data:`MAX_DOCUMENT_BYTES` (8 MiB) of text; more is :class:`InputLimitError` with
  ``status`` 413;
- :data:`MAX_DEPTH` (64) nested mappings and lists;
- :data:`MAX_NODES` (250,000) values (keys count), aliases expanded: a 10,000-step flow
  has about 150,000;
- :data:`MAX_ALIASES` (1,000) alias references: anchors for small reuse keep working;
- no alias inside the node it names (a recursive document).

Example:
    >>> check_yaml("base: &b {lr: 0.1}\\nsteps: [*b, *b]\\n", "ok.yaml")
    >>> pairs = zip("abcdefghijklm", "bcdefghijklmn")
    >>> lines = [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]" for p, c in pairs]
    >>> bomb = "a: &a [x, x]\\n" + "\\n".join(lines)
    >>> try:
    ...     check_yaml(bomb, "bomb.yaml")
    ... except InputLimitError as exc:
    ...     print(exc.limit, exc.status)
    nodes 422
"""

from __future__ import annotations

import array
import itertools
import re
from typing import Any

import yaml

from flowfed.spec.diagnostics import Diagnostic, FlowError

#: Largest YAML or JSON flow document accepted, in bytes (UTF-8).
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
#: Deepest nesting of mappings and lists (JSON objects and arrays).
MAX_DEPTH = 64
#: Most values in one document, keys included, with every alias expanded.
MAX_NODES = 250_000
#: Most alias references (``*name``) in one document.
MAX_ALIASES = 1_000

#: libyaml's event parser when PyYAML has it (flat memory, ~10x the pure-Python speed).
_EVENT_PARSER: type = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class InputLimitError(FlowError):
    """A document over one of the limits; ``limit`` names it, ``status`` is its HTTP status.

    ``limit`` is ``"size"`` (status 413), ``"depth"``, ``"nodes"``, ``"aliases"`` or
    ``"recursive-alias"`` (status 422). It is a :class:`FlowError`, so whoever reports
    flow problems (the CLI, the server's problem documents) reports this one too.
    """

    def __init__(self, limit: str, message: str, file: str | None, line: int | None = None):
        self.limit = limit
        self.status = 413 if limit == "size" else 422
        super().__init__([Diagnostic(message, file, line, hint=_HINTS.get(limit))])


_HINTS = {
    "size": f"the limit is {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB",
    "depth": f"the limit is {MAX_DEPTH} levels",
    "nodes": f"the limit is {MAX_NODES:,} values, aliases expanded",
    "aliases": f"the limit is {MAX_ALIASES:,} alias references",
}


def text_size(text: str) -> int:
    """The UTF-8 size of ``text`` (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_size(text: str, filename: str | None, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
    """InputLimitError (413) if ``text`` is larger than ``max_bytes``."""
    size = text_size(text)
    if size > max_bytes:
        raise InputLimitError(
            "size", f"the document is {size:,} bytes, over the limit of {max_bytes:,}", filename
        )


def check_yaml(
    text: str,
    filename: str | None = None,
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
    max_aliases: int = MAX_ALIASES,
) -> None:
    """Raise :class:`InputLimitError` if the YAML (or JSON) ``text`` crosses a limit.

    Counts values and depth with every alias expanded, without expanding any, so the
    check costs one pass over the parser's events whatever the document claims. Syntax
    errors are left to the caller's parser (this returns at the first one), which reports
    them with their line.

    Example:
        >>> try:
        ...     check_yaml("[" * 70 + "]" * 70, "deep.json")
        ... except InputLimitError as exc:
        ...     print(exc)
        deep.json:1: nesting deeper than 64 levels (the limit is 64 levels)
    """
    check_size(text, filename, max_bytes)
    parser: Any = _EVENT_PARSER(text)
    # One frame per open collection: [its anchor, the value count when it began, the
    # deepest level reached inside it]. Levels count from 1 at the outermost collection.
    stack: list[list[Any]] = []
    sizes: dict[str, int] = {}  # anchor -> values in its subtree (aliases expanded)
    depths: dict[str, int] = {}  # anchor -> levels of its subtree (a scalar has none)
    open_anchors: set[str] = set()
    nodes = aliases = 0

    def fail(limit: str, message: str, event: Any) -> None:
        mark = getattr(event, "start_mark", None)
        raise InputLimitError(limit, message, filename, mark.line + 1 if mark else None)

    try:
        while parser.check_event():
            ev = parser.get_event()
            kind = type(ev)
            if kind is yaml.ScalarEvent:
                nodes += 1
                if ev.anchor is not None:
                    sizes[ev.anchor], depths[ev.anchor] = 1, 0
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                nodes += 1
                level = len(stack) + 1
                if level > max_depth:
                    fail("depth", f"nesting deeper than {max_depth} levels", ev)
                stack.append([ev.anchor, nodes, level])
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                anchor, started, reached = stack.pop()
                if anchor is not None:
                    open_anchors.discard(anchor)
                    sizes[anchor] = nodes - started + 1
                    depths[anchor] = reached - len(stack)
                if stack:
                    stack[-1][2] = max(stack[-1][2], reached)
            elif kind is yaml.AliasEvent:
                aliases += 1
                if aliases > max_aliases:
                    fail("aliases", f"more than {max_aliases:,} alias references", ev)
                if ev.anchor in open_anchors:
                    fail(
                        "recursive-alias",
                        f"alias *{ev.anchor} refers to a node that contains it",
                        ev,
                    )
                nodes += sizes.get(ev.anchor, 1)
                # An alias of a collection nests that collection's levels where it stands.
                level = len(stack) + depths.get(ev.anchor, 0)
                if level > max_depth:
                    fail("depth", f"nesting deeper than {max_depth} levels (through an alias)", ev)
                if stack:
                    stack[-1][2] = max(stack[-1][2], level)
            if nodes > max_nodes:
                fail("nodes", f"more than {max_nodes:,} values (aliases expanded)", ev)
    except yaml.YAMLError:
        return  # the caller's parser reports it, with its line
    finally:
        dispose = getattr(parser, "dispose", None)
        if dispose is not None:
            dispose()


# A JSON string, escapes included (the unrolled form: no backtracking per character).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets become +1, closing ones -1 (0xff as a signed byte).
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth_exceeds(data: bytes | str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests objects and arrays deeper than ``max_depth``.

    Runs at C speed on the raw bytes (about 0.3 s for 10 MB of brackets): strings are
    dropped, every opening bracket counts +1 and every closing one -1, and the deepest
    running sum is the nesting depth. Malformed text gets a number too; ``json.loads``
    refuses it afterwards.

    Example:
        >>> json_depth_exceeds(b'{"a": [1, {"b": "[[[["}]}', max_depth=3)
        False
        >>> json_depth_exceeds(b"[" * 5 + b"]" * 5, max_depth=4)
        True
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # the common small body: no need to look closer
    signs = _JSON_STRING.sub(b"", raw).translate(_SIGNS, _NOT_BRACKETS)
    return max(itertools.accumulate(array.array("b", signs)), default=0) > max_depth


def load_yaml(text: str, filename: str | None = None) -> Any:
    """``yaml.safe_load`` of ``text`` after :func:`check_yaml`: plain data, within the limits.

    For YAML that is not a flow (trigger files, parameter values); flows go through
    :func:`flowfed.spec.loader.parse_flow_text`, which applies the same limits.

    Example:
        >>> load_yaml("a: &x [1, 2]\\nb: *x\\n")
        {'a': [1, 2], 'b': [1, 2]}
    """
    check_yaml(text, filename)
    return yaml.load(text, Loader=_EVENT_PARSER)
