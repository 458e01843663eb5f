"""The model registry: every trained model in the catalog, versioned, with its metrics.

A *model* is an artifact of kind ``model``: what an ``analysis`` tool must return (a
:class:`flowfed.Model` with save/load) is always stored with that kind, so the catalog
alone tells models apart, without importing any tool. Each registry entry is that
artifact (name, version, id, hash, run, step, producing task) plus:

- ``variant``: the swept params of its training task (``tasks.variant``, one subvariant per
  combination of a step's ``sweep:`` values), or None for an unswept step;
- ``training``: the training task's metrics (latest value of each);
- ``evaluations``: every task that consumed the model (by lineage), reported metrics and
  produced no model itself, i.e. the evaluations of it (a federated round's training task
  also consumes the global model, but produces a model update: it is not an evaluation);
- ``metrics``: the training metrics with the evaluations' on top. When several evaluation
  tasks report the same metric (one per hospital, say), each is qualified by its node
  (``accuracy@hospital-a``), or by its step when the nodes are the same.

Queries go through SQLAlchemy Core in a fixed number of round trips per call, so listing a
registry of thousands of models stays one screen of SQL.

Example:
    >>> from flowfed.db import Database
    >>> db = Database("sqlite://"); db.upgrade()
    >>> list_models(db)
    []
    >>> try:
    ...     resolve_model_ref(db, "model@1")
    ... except ModelNotFound as exc:
    ...     print(str(exc).split(" (")[0])
    no model named 'model'; the registry is empty
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from flowfed.db import models as m
from flowfed.db.database import Database

#: The artifact kind every model has (materializers store a flowfed.Model as "model").
MODEL_KIND = "model"

_INT32_MAX = 2**31 - 1
_REF = re.compile(r"^(?P<name>.+?)(?:[@:](?P<version>\d+|latest))?$")


class ModelNotFound(LookupError):
    """A model reference that names no model (the message lists what exists)."""


class BadModelRef(ValueError):
    """A string that is not a model reference at all."""


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` → ``("name", 3)``; ``"name"`` and ``"name@latest"`` → ``("name", None)``.

    ``name:3`` is accepted too (the form ``flowfed lineage`` prints).

    Example:
        >>> parse_model_ref("global_model@3"), parse_model_ref("lr:latest")
        (('global_model', 3), ('lr', None))
    """
    ref = ref.strip()
    mt = _REF.match(ref)
    if not ref or mt is None or not mt["name"].strip() or ref[0] in "@:":
        raise BadModelRef(f"{ref!r} is not a model reference: use NAME or NAME@VERSION")
    version = mt["version"]
    return mt["name"], None if version in (None, "latest") else int(version)


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    # SQLite caps the bound parameters of one statement.
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _has_variant() -> bool:
    # tasks.variant arrives with the planner's subvariants (migration 0005); until then
    # every model is reported with variant None.
    return "variant" in m.tasks.c


def _model_rows(conn: Connection, where: Sequence[Any], limit: int | None) -> list[dict[str, Any]]:
    a, t = m.artifacts, m.tasks
    cols = [
        a.c.id,
        a.c.name,
        a.c.version,
        a.c.hash,
        a.c.size,
        a.c.type_name,
        a.c.run_id,
        a.c.task_id,
        a.c.step,
        a.c.node,
        a.c.meta,
        a.c.created_at,
        t.c.tool,
        t.c.tool_version,
        t.c.metrics.label("task_metrics"),
        t.c.round.label("round"),
    ]
    if _has_variant():
        cols.append(t.c.variant.label("variant"))
    q = (
        select(*cols)
        .select_from(a.outerjoin(t, t.c.id == a.c.task_id))
        .where(a.c.kind == MODEL_KIND, *where)
        .order_by(a.c.created_at.desc(), a.c.version.desc())
    )
    if limit is not None:
        q = q.limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]


def _evaluations(conn: Connection, model_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``{model id: [evaluation task...]}``: consumers that reported metrics, made no model."""
    a, p, t = m.artifacts, m.artifact_parents, m.tasks
    consumers: dict[str, set[str]] = {}
    for chunk in _chunks(model_ids):
        q = (
            select(p.c.parent_id, a.c.task_id)
            .select_from(p.join(a, a.c.id == p.c.artifact_id))
            .where(p.c.parent_id.in_(chunk))
        )
        for model_id, task_id in conn.execute(q):
            consumers.setdefault(model_id, set()).add(task_id)
    task_ids = sorted({tid for ts in consumers.values() for tid in ts})
    tasks: dict[str, dict[str, Any]] = {}
    made_models: set[str] = set()
    for chunk in _chunks(task_ids):
        for r in conn.execute(
            select(
                t.c.id, t.c.run_id, t.c.step, t.c.tool, t.c.node, t.c.metrics, t.c.created_at
            ).where(t.c.id.in_(chunk))
        ):
            tasks[r.id] = dict(r._mapping)
        made_models.update(
            r[0]
            for r in conn.execute(
                select(a.c.task_id).where(a.c.task_id.in_(chunk), a.c.kind == MODEL_KIND)
            )
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for model_id, tids in consumers.items():
        evals = [
            {
                "task_id": tid,
                "run_id": tasks[tid]["run_id"],
                "step": tasks[tid]["step"],
                "tool": tasks[tid]["tool"],
                "node": tasks[tid]["node"],
                "metrics": dict(tasks[tid]["metrics"] or {}),
                "created_at": tasks[tid]["created_at"],
            }
            for tid in tids
            if tid in tasks and tasks[tid]["metrics"] and tid not in made_models
        ]
        evals.sort(key=lambda e: (e["created_at"], e["step"], e["node"], e["task_id"]))
        for e in evals:
            del e["created_at"]
        out[model_id] = evals
    return out


def merged_metrics(
    training: dict[str, Any], evaluations: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The flat ``metrics`` of an entry: training metrics, then the evaluations' on top.

    A metric several evaluations report is qualified by node (or by step if the nodes
    are the same), so no value hides another.

    Example:
        >>> merged_metrics({"loss": 0.2}, [
        ...     {"step": "validate", "node": "a", "metrics": {"accuracy": 0.9}},
        ...     {"step": "validate", "node": "b", "metrics": {"accuracy": 0.8, "f1": 0.7}}])
        {'loss': 0.2, 'accuracy@a': 0.9, 'accuracy@b': 0.8, 'f1': 0.7}
    """
    merged = dict(training)
    reporters: dict[str, list[dict[str, Any]]] = {}
    for e in evaluations:
        for name in e["metrics"]:
            reporters.setdefault(name, []).append(e)
    for e in evaluations:
        for name, value in e["metrics"].items():
            others = reporters[name]
            if len(others) == 1:
                merged[name] = value
                continue
            nodes = {o["node"] for o in others}
            by = "node" if len(nodes) == len(others) else "step"
            merged[f"{name}@{e[by]}"] = value
    return merged


def _entry(row: dict[str, Any], evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    training = dict(row.get("task_metrics") or {})
    meta = row.get("meta") or {}
    return {
        "name": row["name"],
        "version": row["version"],
        "artifact_id": row["id"],
        "hash": row["hash"],
        "size": row["size"],
        "type_name": row["type_name"],
        "model_class": meta.get("class"),
        "run_id": row["run_id"],
        "step": row["step"],
        "node": row["node"],
        "task_id": row["task_id"],
        "tool": row["tool"],
        "tool_version": row["tool_version"],
        "round": row.get("round"),
        "variant": row.get("variant"),
        "metrics": merged_metrics(training, evaluations),
        "training": {"task_id": row["task_id"], "metrics": training},
        "evaluations": evaluations,
        "created_at": row["created_at"],
    }


def _entries(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    evals = _evaluations(conn, [r["id"] for r in rows])
    return [_entry(r, evals.get(r["id"], [])) for r in rows]


def list_models(
    db: Database,
    *,
    name: str | None = None,
    run_id: str | None = None,
    limit: int = 200,
    include_rounds: bool = False,
) -> list[dict[str, Any]]:
    """Registry entries, newest first, optionally of one name and/or one run.

    A federated run registers one model version, its final global model; its node
    updates and earlier rounds' models are listed only with ``include_rounds``.

    Example:
        >>> # list_models(db, name="model")[0]["metrics"]["accuracy"]
    """
    a = m.artifacts
    where: list[Any] = [] if include_rounds else [m.registered(m.tasks)]
    if name is not None:
        where.append(a.c.name == name)
    if run_id is not None:
        where.append(a.c.run_id == run_id)
    with db.engine.connect() as conn:
        return _entries(conn, _model_rows(conn, where, limit))


def model_names(db: Database) -> list[str]:
    """The names of every registered model, sorted."""
    a = m.artifacts
    with db.engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                select(a.c.name).where(a.c.kind == MODEL_KIND).distinct().order_by(a.c.name)
            )
        ]


def _versions(conn: Connection, name: str) -> list[int]:
    a = m.artifacts
    return [
        int(r[0])
        for r in conn.execute(
            select(a.c.version)
            .where(a.c.name == name, a.c.kind == MODEL_KIND)
            .order_by(a.c.version)
        )
    ]


def _span(versions: list[int]) -> str:
    if len(versions) == 1:
        return f"version {versions[0]}"
    if versions == list(range(versions[0], versions[-1] + 1)):
        return f"versions {versions[0]}..{versions[-1]}"
    return "versions " + ", ".join(map(str, versions))


def _not_found(conn: Connection, name: str, version: int | None) -> ModelNotFound:
    a = m.artifacts
    versions = _versions(conn, name)
    if versions:
        return ModelNotFound(f"{name} has {_span(versions)}; there is no {name}@{version}")
    known = [
        r[0]
        for r in conn.execute(
            select(a.c.name).where(a.c.kind == MODEL_KIND).distinct().order_by(a.c.name).limit(50)
        )
    ]
    kind = conn.execute(select(a.c.kind).where(a.c.name == name).limit(1)).scalar()
    if kind is not None:
        why = f"'{name}' is a {kind} artifact, not a model"
    else:
        why = f"no model named '{name}'"
    if known:
        return ModelNotFound(f"{why}; known: {', '.join(known)}")
    return ModelNotFound(
        f"{why}; the registry is empty (train one: a step whose tool returns a flowfed.Model)"
    )


def resolve_catalog_inputs(db: Database, refs: list[str]) -> dict[str, dict[str, Any]]:
    """The artifacts a flow's catalog inputs name (``NAME:VERSION`` or an artifact id),
    by reference; a reference that names none is left out (the planner reports it with
    the step and field that wrote it).

    Example:
        >>> # plan(flow, registry, catalog=resolve_catalog_inputs(db, catalog_inputs(flow)))
    """
    out: dict[str, dict[str, Any]] = {}
    for ref in refs:
        row = db.get_artifact(ref)
        if row is not None:
            out[ref] = row
    return out


def resolve_model_ref(db: Database, ref: str) -> dict[str, Any]:
    """The artifact row of a model named ``name@version`` (``name`` alone: the latest).

    A model's artifact id is accepted too.

    This is what a flow's ``model: name@version`` reference resolves through before the
    engine loads the weights into a tool. Errors name what exists: ``ModelNotFound("no
    model named 'x'; known: a, b")`` or ``ModelNotFound("x has versions 1..4; there is no
    x@7")``; a malformed reference raises :class:`BadModelRef`.

    Example:
        >>> # row = resolve_model_ref(db, "global_model@3"); row["hash"], row["uri"]
    """
    a = m.artifacts
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        # An artifact id (what `models list` shows and `compare` accepts) names one model.
        with db.engine.connect() as conn:
            row = conn.execute(select(a).where(a.c.id == ref, a.c.kind == MODEL_KIND)).first()
        if row is not None:
            return dict(row._mapping)
    name, version = parse_model_ref(ref)
    if version is not None and version > _INT32_MAX:
        # Beyond any stored version, and beyond what PostgreSQL's INTEGER can compare.
        with db.engine.connect() as conn:
            raise _not_found(conn, name, version)
    q = select(a).where(a.c.name == name, a.c.kind == MODEL_KIND)
    q = (
        q.where(a.c.version == version)
        if version is not None
        else q.order_by(a.c.version.desc()).limit(1)
    )
    with db.engine.connect() as conn:
        row = conn.execute(q).first()
        if row is None:
            raise _not_found(conn, name, version)
        return dict(row._mapping)


def get_model(db: Database, ref: str) -> dict[str, Any]:
    """The registry entry of ``name@version`` (or ``name``: latest); ModelNotFound if none."""
    row = resolve_model_ref(db, ref)
    with db.engine.connect() as conn:
        rows = _model_rows(conn, [m.artifacts.c.id == row["id"]], 1)
        return _entries(conn, rows)[0]


def model_versions(
    db: Database, name: str, *, include_rounds: bool = False
) -> list[dict[str, Any]]:
    """Every version of one model, oldest first; ModelNotFound if the name has none.

    Round models and node updates only with ``include_rounds`` (or when the name has
    nothing else)."""
    with db.engine.connect() as conn:
        named = m.artifacts.c.name == name
        rows = [] if include_rounds else _model_rows(conn, [named, m.registered(m.tasks)], None)
        if not rows:
            rows = _model_rows(conn, [named], None)
        if not rows:
            raise _not_found(conn, name, None)
        entries = _entries(conn, rows)
    return sorted(entries, key=lambda e: e["version"])


def lineage_roots(db: Database, artifact_id: str) -> list[dict[str, Any]]:
    """The sources an artifact derives from: ancestors without parents, by name.

    A breadth-first walk with a visited set (one query per generation): federated models
    share ancestors across rounds, and expanding the lineage *tree* would repeat them
    exponentially. A parent no longer in the catalog is reported with ``missing: True``.
    """
    a, p = m.artifacts, m.artifact_parents
    seen: set[str] = {artifact_id}
    frontier = [artifact_id]
    parents_of: dict[str, list[str]] = {}
    with db.engine.connect() as conn:
        while frontier:
            nxt: list[str] = []
            for chunk in _chunks(frontier):
                for child, parent in conn.execute(
                    select(p.c.artifact_id, p.c.parent_id).where(p.c.artifact_id.in_(chunk))
                ):
                    parents_of.setdefault(child, []).append(parent)
                    if parent not in seen:
                        seen.add(parent)
                        nxt.append(parent)
            frontier = nxt
        roots = sorted(aid for aid in seen if aid not in parents_of and aid != artifact_id)
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(roots):
            for r in conn.execute(
                select(a.c.id, a.c.name, a.c.version, a.c.hash, a.c.step).where(a.c.id.in_(chunk))
            ):
                found[r.id] = {**r._mapping, "missing": False}
    out = [found.get(aid, {"id": aid, "missing": True}) for aid in roots]
    return sorted(out, key=lambda r: (str(r.get("name")), r.get("version") or 0, r["id"]))


def compare_models(db: Database, refs: Sequence[str]) -> dict[str, Any]:
    """Models side by side: each entry, the union of metrics and of variant params
    (one value per model, None where a model lacks it), and each one's lineage roots.

    ``same_sources`` says whether every model derives from the same source artifacts
    (the comparison is then between training settings, not data).

    Example:
        >>> # compare_models(db, ["model@1", "model@2"])["metrics"]["accuracy"]  # [0.95, 0.97]
    """
    if not refs:
        raise BadModelRef("compare needs at least one model reference")
    entries = [get_model(db, r) for r in refs]
    labels = [f"{e['name']}@{e['version']}" for e in entries]
    metric_names = sorted({k for e in entries for k in e["metrics"]})
    param_names = sorted({k for e in entries for k in (e["variant"] or {})})
    roots = [lineage_roots(db, e["artifact_id"]) for e in entries]
    root_sets = [frozenset(r["id"] for r in rs) for rs in roots]
    return {
        "models": labels,
        "entries": entries,
        "metrics": {k: [e["metrics"].get(k) for e in entries] for k in metric_names},
        "variants": {k: [(e["variant"] or {}).get(k) for e in entries] for k in param_names},
        "lineage_roots": roots,
        "same_sources": len(set(root_sets)) <= 1,
    }
