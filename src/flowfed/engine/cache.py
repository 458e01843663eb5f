"""The task cache: its key, its index in the catalog, and the look-up a task makes.

A task whose key was seen before is skipped and reuses the outputs (and metrics) of the
task that did the work. The key is

    sha256(identity, input name → content hash, ...)
    identity = fingerprint("flowfed-cache-v1", tool, version, code hash, config)

where the code hash is :func:`flowfed.artifacts.codehash.code_hash` (the one function that
says what a tool's code is) and the config's fingerprint is canonical
(:func:`flowfed.artifacts.hashing.fingerprint`); a config that cannot be fingerprinted
turns caching off for that task rather than risking a wrong hit. A tool that reads
outside data (``source_version``) adds that data's version as one more input.

Entries are written by the database writer when a task finishes with a key
(``cache_entries``: key → the task and its output artifacts); :func:`load_index` reads
every entry of a flow's tools once per run, so a look-up on the hot path is a dict access.

Example:
    >>> k = cache_key("tools.train", "1", "c0de", {"lr": 0.1}, {"data": "h1"})
    >>> k == cache_key("tools.train", "1", "c0de", {"lr": 0.1}, {"data": "h1"})
    True
    >>> cache_key("tools.train", "1", "c0de", {"cb": object()}, {}) is None
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowfed.artifacts import is_inline
from flowfed.artifacts.codehash import code_hash
from flowfed.artifacts.hashing import UNHASHABLE, fingerprint

if TYPE_CHECKING:
    from flowfed.artifacts import ArtifactStore
    from flowfed.db import Database
    from flowfed.engine.state import ArtifactRef
    from flowfed.plan.graph import TaskNode

#: ``{output name: artifact row}`` and the metrics the task that did the work reported.
Hit = tuple[dict[str, dict[str, Any]], dict[str, float]]


def task_identity(tool: str, version: str, code: str, config: Mapping[str, Any]) -> str | None:
    """The input-independent part of a cache key: tool, version, code hash and config.

    None when the config has no canonical fingerprint (the task then always runs).
    """
    config_fp = fingerprint(dict(config))
    if not isinstance(config_fp, str):
        return None
    return str(fingerprint(("flowfed-cache-v1", tool, version, code, config_fp)))


def cache_key_for(identity: str, input_hashes: Mapping[str, str]) -> str:
    """Combine a :func:`task_identity` with the content hashes of the task's inputs."""
    h = hashlib.sha256(identity.encode())
    for name in sorted(input_hashes):
        h.update(b"\0" + name.encode() + b"\0" + input_hashes[name].encode())
    return h.hexdigest()


def cache_key(
    tool: str,
    version: str,
    code: str,
    config: Mapping[str, Any],
    input_hashes: Mapping[str, str],
) -> str | None:
    """The cache key of a task (None when its config cannot be fingerprinted)."""
    identity = task_identity(tool, version, code, config)
    return None if identity is None else cache_key_for(identity, input_hashes)


# -- the index in the catalog ---------------------------------------------------------------


def lookup(db: Database, key: str) -> Hit | None:
    """One entry, if every artifact it names still exists (outputs and metrics)."""
    from sqlalchemy import select

    from flowfed.db import models as m

    ce, t = m.cache_entries, m.tasks
    with db.engine.connect() as conn:
        row = conn.execute(
            select(ce.c.outputs, t.c.metrics)
            .select_from(ce.outerjoin(t, t.c.id == ce.c.task_id))
            .where(ce.c.key == key)
        ).first()
        if row is None:
            return None
        outputs: dict[str, str] = row[0] or {}
        found = db.artifact_dicts(conn, outputs.values())
    if any(aid not in found for aid in outputs.values()):
        return None
    return {name: found[aid] for name, aid in outputs.items()}, dict(row[1] or {})


def load_index(db: Database, tools: Iterable[str]) -> dict[str, Hit]:
    """Every entry of these tools whose artifacts all still exist: ``{key: hit}``."""
    from sqlalchemy import select

    from flowfed.db import models as m

    ce, t = m.cache_entries, m.tasks
    names = sorted(set(tools))
    entries: list[tuple[str, dict[str, str], dict[str, float]]] = []
    found: dict[str, dict[str, Any]] = {}
    with db.engine.connect() as conn:
        for chunk in _chunks(names, 500):
            q = (
                select(ce.c.key, ce.c.outputs, t.c.metrics)
                .select_from(ce.outerjoin(t, t.c.id == ce.c.task_id))
                .where(ce.c.tool.in_(chunk))
            )
            entries.extend((k, o or {}, dict(mt or {})) for k, o, mt in conn.execute(q))
        ids = [aid for _, outputs, _ in entries for aid in outputs.values()]
        for chunk in _chunks(ids, 500):
            found.update(db.artifact_dicts(conn, chunk))
    index: dict[str, Hit] = {}
    for key, outputs, metrics in entries:
        if all(aid in found for aid in outputs.values()):
            index[key] = ({n: found[aid] for n, aid in outputs.items()}, metrics)
    return index


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- the engine's side ------------------------------------------------------------------------


class CodeHashes:
    """Each tool's code hash, computed once per engine (from :func:`code_hash`), and the
    identities of config-less tools, which are the same for every task of the tool."""

    def __init__(self) -> None:
        self._by_fn: dict[int, str] = {}
        self.bare: dict[tuple[str, str, str], str | None] = {}

    def of(self, node: TaskNode) -> str:
        """The normalized code hash of ``node``'s tool."""
        fn = node.tool.fn
        h = self._by_fn.get(id(fn))
        if h is None:
            h = self._by_fn[id(fn)] = code_hash(fn)
        return h

    def recorded(self, node: TaskNode) -> str | None:
        """The code hash for the task's record; None where there is none (no source and
        no bytecode), which only turns caching off for that tool."""
        try:
            return self.of(node)
        except TypeError:
            return None


class TaskCache:
    """One run's cache: the flow's entries, loaded once, and each task's key.

    Args:
        index: the entries of the flow's tools (:func:`load_index`), ``{}`` when off.
        store: where large outputs live (a hit whose bytes are gone is no hit).
        codes: the engine's :class:`CodeHashes`, shared across its runs.
    """

    def __init__(self, index: dict[str, Hit], store: ArtifactStore, codes: CodeHashes) -> None:
        self.index = index
        self.store = store
        self.codes = codes
        self._identities: dict[str, object] = {}

    def identity(self, node: TaskNode) -> str | None:
        """The node's tool + code + config fingerprint, computed once per run."""
        got = self._identities.get(node.id, UNHASHABLE)
        if got is UNHASHABLE:
            from flowfed.tools.core import config_field_names

            tool = node.tool
            code = self.codes.of(node)
            if config_field_names(type(node.config)):
                got = task_identity(tool.name, tool.version, code, node.config_data)
            else:
                # A tool without config has one identity however many tasks run it (a
                # chain of 10,000 steps of one tool hashes it once).
                bare = self.codes.bare
                key = (tool.name, tool.version, code)
                got = bare.get(key, UNHASHABLE)
                if got is UNHASHABLE:
                    got = bare[key] = task_identity(tool.name, tool.version, code, {})
            self._identities[node.id] = got
        return got  # type: ignore[return-value]

    def key(
        self, node: TaskNode, inputs: Mapping[str, ArtifactRef | list[ArtifactRef]]
    ) -> tuple[str | None, str | None]:
        """``(key, None)``, or ``(None, why caching is off for this task)``."""
        identity = self.identity(node)
        hashes = {
            p: ",".join(r.hash for r in ref) if isinstance(ref, list) else ref.hash
            for p, ref in inputs.items()
        }
        source = _source_version(node)
        if source is not None:
            if source == "":
                return None, "caching off: the version of the data it reads is unknown"
            hashes["\0source"] = source
        if identity is None:
            return None, "caching off: config cannot be hashed canonically"
        return cache_key_for(identity, hashes), None

    def hit(self, key: str) -> Hit | None:
        """The entry for ``key`` if every output is still readable."""
        hit = self.index.get(key)
        if hit is None:
            return None
        store = self.store
        if all(is_inline(a.get("uri")) or store.exists(a["hash"]) for a in hit[0].values()):
            return hit
        return None


def _source_version(node: TaskNode) -> str | None:
    """The version of the outside data a tool reads ("" when it cannot tell)."""
    fn = node.tool.source_version
    if fn is None:
        return None
    try:
        version = fn(node.config_data)
    except Exception:  # an unreadable source: the tool itself will say why
        return ""
    return "" if version is None else str(version)
