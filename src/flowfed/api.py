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
    if executor is not None:
        from flowfed.executors import check_executor

        try:
            check_executor(executor)
        except ValueError as exc:
            problems.append(
                loaded.source.diag(
                    str(exc).split(": use ")[0],
                    ("executor",),
                    field="executor",
                    hint="use " + str(exc).split(": use ")[-1],
                )
            )
    raw = loaded.flow.config.get("task_timeout")
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0):
        problems.append(
            loaded.source.diag(
                f"config.task_timeout must be a positive number of seconds, got {raw!r}",
                ("config", "task_timeout"),
                field="config.task_timeout",
            )
        )
    if problems:
        raise FlowError(loaded.problems + problems)
    catalog = _resolve_catalog(loaded, database_url)
    from flowfed.collector import paused

    # Every object planning makes stays alive until the graph is built: with the collector
    # on, its full passes re-walk them again and again, and planning grows faster than the
    # flow (flowfed.collector has the figures).
    with paused():
        graph = plan(loaded, get_registry(), params, catalog)
    return Prepared(loaded, graph)


def parse_param_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["rounds=5", "name=x"]`` into typed values (YAML scalars: 5 is an int).

    Example:
        >>> parse_param_overrides(["rounds=5", "name=x", "lr=0.1"])
        {'rounds': 5, 'name': 'x', 'lr': 0.1}
    """
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise FlowError([Diagnostic(f"--param expects KEY=VALUE, got {pair!r}", field="param")])
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


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
    """Whether ``url`` names an executor (:func:`flowfed.executors.check_executor`)."""
    from flowfed.executors import check_executor

    try:
        check_executor(url)
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
    task_timeout: float | None = None,
) -> LocalEngine:
    """An engine over the default (or given) database and artifact store.

    ``task_timeout`` is the platform's default task timeout in seconds, for steps
    without a ``timeout:`` of their own (a flow's ``config: {task_timeout: S}`` comes
    first; see :class:`~flowfed.engine.local.LocalEngine`).
    """
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
        task_timeout=task_timeout,
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
    task_timeout: float | None = None,
) -> RunResult:
    """Validate and run a flow locally; returns the :class:`~flowfed.engine.RunResult`.

    ``task_timeout`` (seconds) stops any task of a step without its own ``timeout:``
    that runs longer, with a clear error (the flow's ``config: {task_timeout: S}``
    takes precedence over it).

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
        task_timeout=task_timeout,
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
