"""The Python API: load, validate and run flows without the CLI.

Example:
    >>> import flowfed
    >>> # result = flowfed.run_flow("examples/quickstart/flow.yaml")
    >>> # result.status, result.to_dict()["artifacts"]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowfed.plan.graph import TaskGraph, plan
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.loader import LoadedFlow, load_flow
from flowfed.spec.models import Flow
from flowfed.tools.core import get_registry
from flowfed.tools.loading import import_tools

if TYPE_CHECKING:
    from flowfed.engine.local import LocalEngine, RunResult


def home() -> Path:
    """The folder holding the default database and artifact store (``$FLOWFED_HOME``)."""
    return Path(os.environ.get("FLOWFED_HOME", ".flowfed"))


def default_artifacts_url() -> str:
    """``$FLOWFED_ARTIFACTS_URL`` or ``<home>/artifacts``."""
    return os.environ.get("FLOWFED_ARTIFACTS_URL") or str(home() / "artifacts")


def default_database_url() -> str:
    """``$FLOWFED_DATABASE_URL`` or a SQLite file under :func:`home`."""
    from flowfed.db import default_database_url as db_default

    return db_default(home())


@dataclass
class Prepared:
    """A flow that passed every build-time check, ready to run."""

    loaded: LoadedFlow
    graph: TaskGraph


def prepare(
    flow: str | Path | Flow | LoadedFlow,
    *,
    params: dict[str, Any] | None = None,
    imports: Sequence[str] = (),
    database_url: str | None = None,
) -> Prepared:
    """Load a flow, import its tools and plan it (raises :class:`FlowError` on any problem).

    Inputs naming catalog artifacts (``scaled:2``) are looked up in ``database_url`` (the
    default catalog when None) before planning."""
    if isinstance(flow, str | Path):
        loaded = load_flow(flow)
    elif isinstance(flow, Flow):
        loaded = LoadedFlow(flow, source=_empty_source())
    else:
        loaded = flow
    problems: list[Diagnostic] = []
    if imports:
        problems += import_tools(list(imports), Path.cwd())
    if loaded.flow.imports:
        origin = [
            loaded.source.diag("", ("imports", i), field=f"imports[{i}]")
            for i in range(len(loaded.flow.imports))
        ]
        problems += import_tools(loaded.flow.imports, loaded.base_dir, origin=origin)
    executor = loaded.flow.executor
    if executor is not None and not _known_executor(executor):
        problems.append(
            loaded.source.diag(
                f"unknown executor {executor!r}",
                ("executor",),
                field="executor",
                hint="use threads, processes, subprocess, sandbox, dask://local, "
                "dask://HOST:PORT, ray://local or ray://HOST:PORT",
            )
        )
    if problems:
        raise FlowError(loaded.problems + problems)
    catalog = _resolve_catalog(loaded, database_url)
    return Prepared(loaded, plan(loaded, get_registry(), params, catalog))


def _resolve_catalog(loaded: LoadedFlow, database_url: str | None) -> dict[str, dict[str, Any]]:
    """The catalog artifacts the flow takes as inputs, read before planning (pure)."""
    from flowfed.plan.graph import catalog_inputs

    refs = catalog_inputs(loaded)
    if not refs:
        return {}
    from flowfed.db import Database
    from flowfed.db.registry import resolve_catalog_inputs

    db = Database(database_url or default_database_url())
    try:
        db.ensure_schema(auto_upgrade=True)
        return resolve_catalog_inputs(db, refs)
    finally:
        db.close()


def _known_executor(url: str) -> bool:
    from flowfed.engine.local import EXECUTORS
    from flowfed.executors import executor_from_url, is_cluster_url

    if url in EXECUTORS:
        return True
    if not is_cluster_url(url):
        return False
    try:
        executor_from_url(url)
    except ValueError:
        return False
    return True


def _empty_source() -> Any:
    from flowfed.spec.loader import SourceMap

    return SourceMap()


def make_engine(
    *,
    database_url: str | None = None,
    artifacts_url: str | None = None,
    use_cache: bool = True,
    executor: str = "threads",
    max_workers: int | None = None,
    listeners: list[Callable[[str, dict[str, Any]], None]] | None = None,
) -> LocalEngine:
    """An engine over the default (or given) database and artifact store."""
    from flowfed.artifacts import ArtifactStore
    from flowfed.db import Database
    from flowfed.engine.local import LocalEngine

    db = Database(database_url or default_database_url())
    db.ensure_schema(auto_upgrade=True)
    store = ArtifactStore(artifacts_url or default_artifacts_url())
    return LocalEngine(
        db,
        store,
        executor=executor,
        max_workers=max_workers,
        use_cache=use_cache,
        listeners=listeners,
    )


def run_flow(
    flow: str | Path | Flow | LoadedFlow,
    *,
    params: dict[str, Any] | None = None,
    imports: Sequence[str] = (),
    use_cache: bool = True,
    executor: str | None = None,
    database_url: str | None = None,
    artifacts_url: str | None = None,
) -> RunResult:
    """Validate and run a flow locally; returns the :class:`~flowfed.engine.RunResult`.

    Example:
        >>> # flowfed.run_flow("flow.yaml", params={"threshold": 0.7}).status
        >>> # 'success'
    """
    prepared = prepare(flow, params=params, imports=imports, database_url=database_url)
    engine = make_engine(
        database_url=database_url,
        artifacts_url=artifacts_url,
        use_cache=use_cache,
        # The caller's choice, else the flow file's `executor:`, else threads.
        executor=executor or prepared.loaded.flow.executor or "threads",
    )
    try:
        path = prepared.loaded.path
        return engine.run(prepared.graph, params=params, flow_file=str(path) if path else None)
    finally:
        engine.db.close()


def load_model(
    ref: str, *, database_url: str | None = None, artifacts_url: str | None = None
) -> Any:
    """A registered model, weights loaded: ``name@version``, ``name`` (latest) or its id.

    Resolved through the model registry (:func:`flowfed.db.registry.resolve_model_ref`),
    so a reference that names no model says which models or versions exist.

    Example:
        >>> # model = flowfed.api.load_model("classifier@2"); model.predict_proba(table)
    """
    from flowfed.artifacts import ArtifactHandle, ArtifactStore, CatalogBlobs, is_inline
    from flowfed.db import Database
    from flowfed.db.registry import resolve_model_ref

    db = Database(database_url or default_database_url())
    try:
        row = resolve_model_ref(db, ref)
        source: Any = (
            CatalogBlobs(db)
            if is_inline(row["uri"])
            else ArtifactStore(artifacts_url or default_artifacts_url())
        )
        return ArtifactHandle.from_row(source, row).load()
    finally:
        db.close()


def load_artifact(
    ref: str, *, database_url: str | None = None, artifacts_url: str | None = None
) -> Any:
    """The value of a catalogued artifact: ``id``, id prefix, ``name`` or ``name:version``.

    Example:
        >>> # flowfed.load_artifact("scores:2")
        >>> # {'accuracy': 0.87, 'auc': 0.96}
    """
    from flowfed.artifacts import ArtifactHandle, ArtifactStore, CatalogBlobs, is_inline
    from flowfed.db import Database

    db = Database(database_url or default_database_url())
    try:
        row = db.get_artifact(ref)
        if row is None:
            raise LookupError(f"no artifact matches {ref!r}")
        source: Any = (
            CatalogBlobs(db)
            if is_inline(row["uri"])
            else ArtifactStore(artifacts_url or default_artifacts_url())
        )
        return ArtifactHandle.from_row(source, row).load()
    finally:
        db.close()
