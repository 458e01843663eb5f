"""Submitted flows: parse (with located diagnostics), plan against the server's tools, store.

The server never imports code named by a submitted flow: its tools are the ones imported
at start-up (``flowfed server --import``). A flow's own ``imports`` are therefore reported
as warnings and otherwise ignored, which lets the same flow file run locally and here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.db.registry import resolve_catalog_inputs
from flowfed.plan.graph import TaskGraph, catalog_inputs, plan
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import LoadedFlow, SourceMap, parse_flow_text
from flowfed.spec.models import Flow
from flowfed.tools.core import get_registry
from flowfed.tools.hints import collapse_unknown_tools

#: Names that would be shadowed by fixed routes under /api/v1/flows/.
RESERVED_NAMES = frozenset({"executions", "execute", "validate"})


@dataclass
class Parsed:
    """A flow that parsed and planned, plus what to store for it."""

    loaded: LoadedFlow
    graph: TaskGraph
    source: str
    format: str
    warnings: list[Diagnostic] = field(default_factory=list)


def parse_text(source: str, fmt: str | None) -> LoadedFlow:
    """Parse flow text; ``fmt`` None sniffs JSON (leading ``{``) from YAML."""
    if fmt is None:
        fmt = "json" if source.lstrip().startswith("{") else "yaml"
    name = "request.json" if fmt == "json" else "request.yaml"
    return parse_flow_text(source, name)


def parse_object(raw_body: bytes, key: str, obj: dict[str, Any]) -> tuple[LoadedFlow, str]:
    """Parse the flow object found at ``key`` of a JSON request body.

    Line numbers point into the request body as sent; if the body cannot be re-read as
    text (it always can, since it parsed), the object is re-serialized instead. Returns
    the flow and the JSON text to store for it.
    """
    try:
        text = raw_body.decode("utf-8")
        loaded = parse_flow_text(text, "request.json", under=key)
    except UnicodeDecodeError:
        text = json.dumps({key: obj}, indent=2)
        loaded = parse_flow_text(text, "request.json", under=key)
    # The stored source must re-parse on its own: a bare seed-003 object gets back the
    # {"flow": ...} wrapper its format is recognised by.
    bare_seed = loaded.flow.start is not None and "flow" not in obj
    return loaded, json.dumps({"flow": obj} if bare_seed else obj, indent=2)


def check(
    loaded: LoadedFlow, params: dict[str, Any] | None = None, db: Database | None = None
) -> tuple[TaskGraph, list[Diagnostic]]:
    """Plan ``loaded`` against the server's registry (FlowError with every problem).

    Catalog inputs (``scaled:2``) are resolved in ``db`` first. Returns the graph and the
    warnings (ignored ``imports`` and the planner's own).
    """
    warnings = [
        loaded.source.diag(
            f"ignored import '{entry}': the server runs only the tools it was started with "
            "(flowfed server --import)",
            ("imports", i),
            field=f"imports[{i}]",
        )
        for i, entry in enumerate(loaded.flow.imports)
    ]
    catalog: dict[str, dict[str, Any]] = {}
    refs = catalog_inputs(loaded)
    if refs and db is not None:
        catalog = resolve_catalog_inputs(db, refs)
    try:
        graph = plan(loaded, get_registry(), params, catalog)
    except FlowError as exc:
        raise FlowError(
            collapse_unknown_tools(exc.diagnostics, imported=[], how="server", flow=loaded.flow)
        ) from None
    return graph, warnings + list(graph.warnings)


#: Plans of stored flow versions, by (row id, params): a stored version never changes and
#: the server's tools are fixed at start-up, so the same submission plans the same way.
#: Accepting a run of a stored flow then costs no parsing or planning.
_PLANS: OrderedDict[tuple[str, str], tuple[TaskGraph, list[Diagnostic]]] = OrderedDict()
_PLANS_LOCK = threading.Lock()
PLAN_CACHE_SIZE = 256


def check_stored(
    row: dict[str, Any], params: dict[str, Any] | None = None, db: Database | None = None
) -> tuple[TaskGraph, list[Diagnostic]]:
    """:func:`check` of a stored flow version, planned once per distinct ``params``.

    The graph is shared by the runs that use it: the engine only reads it.
    """
    try:
        key = (str(row["id"]), json.dumps(params or {}, sort_keys=True))
    except (TypeError, ValueError):  # params JSON cannot order: plan afresh
        return check(stored_loaded(row), params, db)
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None:
            _PLANS.move_to_end(key)
            return hit
    planned = check(stored_loaded(row), params, db)
    with _PLANS_LOCK:
        _PLANS[key] = planned
        while len(_PLANS) > PLAN_CACHE_SIZE:
            _PLANS.popitem(last=False)
    return planned


def store(db: Database, parsed: Parsed) -> dict[str, Any]:
    """Save a new version of the flow under its name; the stored row (without spec)."""
    flow = parsed.loaded.flow
    if flow.name in RESERVED_NAMES:
        raise FlowError(
            [
                parsed.loaded.source.diag(
                    f"the name '{flow.name}' is reserved by the API; choose another",
                    ("name",),
                    field="name",
                )
            ]
        )
    f = m.flows
    spec = flow.model_dump(mode="json")
    # Two submissions of one name can race for the next version: the unique constraint
    # decides, and the loser reads the new maximum and tries again.
    for _ in range(5):
        with db.engine.connect() as conn:
            current = conn.execute(
                select(func.max(f.c.version)).where(f.c.name == flow.name)
            ).scalar()
        row = {
            "id": uuid.uuid4().hex,
            "name": flow.name,
            "version": int(current or 0) + 1,
            "spec": spec,
            "source": parsed.source,
            "format": parsed.format,
            "created_at": time.time(),
        }
        try:
            with db.engine.begin() as conn:
                conn.execute(f.insert().values(**row))
        except IntegrityError:
            continue
        return row
    raise RuntimeError(
        f"could not assign a version to flow '{flow.name}' (too many concurrent saves)"
    )


def stored_loaded(row: dict[str, Any]) -> LoadedFlow:
    """Re-parse a stored flow from its source (so diagnostics keep their line numbers)."""
    source = row.get("source")
    if source:
        fname = f"{row['name']}@{row['version']}.{'json' if row['format'] == 'json' else 'yaml'}"
        try:
            return parse_flow_text(source, fname)
        except FlowError:
            pass  # fall back to the validated spec, which always loads
    return LoadedFlow(Flow.model_validate(row["spec"]), SourceMap())


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A stored flow row as the API's FlowSummary fields."""
    spec = row.get("spec") or {}
    return {
        "id": row["id"],
        "name": row["name"],
        "version": row["version"],
        "format": row["format"],
        "description": spec.get("description"),
        "steps": len(spec.get("steps") or []),
        "created_at": row["created_at"],
    }


def latest_rows(db: Database) -> list[dict[str, Any]]:
    """The latest version of every stored flow, by name."""
    f = m.flows
    newest = select(f.c.name, func.max(f.c.version).label("v")).group_by(f.c.name).subquery()
    q = (
        select(f)
        .join(newest, (f.c.name == newest.c.name) & (f.c.version == newest.c.v))
        .order_by(f.c.name)
    )
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def versions(db: Database, name: str) -> list[dict[str, Any]]:
    """Every stored version of ``name``, oldest first."""
    f = m.flows
    q = select(f).where(f.c.name == name).order_by(f.c.version)
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


#: Stored flow rows by id: a stored version never changes, so a run submission looks up
#: only which id a name (and version) is, not the flow's spec and source again.
_ROWS: OrderedDict[str, dict[str, Any]] = OrderedDict()


def get(db: Database, name: str, version: int | None = None) -> dict[str, Any] | None:
    """One stored version (the latest when ``version`` is None)."""
    f = m.flows
    q = select(f.c.id).where(f.c.name == name)
    q = q.where(f.c.version == version) if version is not None else q.order_by(f.c.version.desc())
    with db.engine.connect() as conn:
        found = conn.execute(q.limit(1)).first()
        if found is None:
            return None
        key = str(found.id)
        with _PLANS_LOCK:
            cached = _ROWS.get(key)
        if cached is not None:
            return dict(cached)
        row = conn.execute(select(f).where(f.c.id == found.id)).first()
    if row is None:  # deleted in between
        return None
    got = dict(row._mapping)
    with _PLANS_LOCK:
        _ROWS[key] = got
        while len(_ROWS) > PLAN_CACHE_SIZE:
            _ROWS.popitem(last=False)
    return dict(got)
