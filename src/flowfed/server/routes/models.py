"""The model registry: trained models by name and version, their metrics, side by side.

Every artifact of kind ``model`` is an entry (see :mod:`flowfed.db.registry`); these routes
only read. ``/compare`` is declared before ``/{name}`` so it is never taken for a name.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from flowfed.db import registry
from flowfed.server import queries
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError
from flowfed.server.schemas import INT32_MAX

router = APIRouter(
    prefix="/api/v1/models",
    tags=["models"],
    dependencies=[Depends(require_principal)],
    responses={**AUTH_ERRORS, **NOT_FOUND},
)

#: Most models one ``/compare`` takes (each costs a few queries).
MAX_COMPARE = 50


class ModelEvaluation(BaseModel):
    """A task that evaluated the model (consumed it, reported metrics, made no model)."""

    task_id: str
    run_id: str
    step: str
    tool: str | None = None
    node: str
    metrics: dict[str, Any]


class ModelTraining(BaseModel):
    """The task that trained the model and the metrics it reported."""

    task_id: str
    metrics: dict[str, Any]


class ModelEntry(BaseModel):
    """One version of a registered model."""

    name: str
    version: int
    artifact_id: str
    hash: str
    size: int
    type_name: str
    model_class: str | None = None
    run_id: str
    step: str
    node: str
    task_id: str
    tool: str | None = None
    tool_version: str | None = None
    round: int | None = None
    variant: dict[str, Any] | None = None
    metrics: dict[str, Any]
    training: ModelTraining
    evaluations: list[ModelEvaluation]
    created_at: float


class ModelList(BaseModel):
    """Registry entries, newest first."""

    items: list[ModelEntry]


class ModelVersions(BaseModel):
    """Every version of one model, oldest first."""

    name: str
    versions: list[ModelEntry]


class LineageRoot(BaseModel):
    """A source artifact a model derives from (missing: no longer in the catalog)."""

    id: str
    name: str | None = None
    version: int | None = None
    hash: str | None = None
    step: str | None = None
    missing: bool = False


class ModelComparison(BaseModel):
    """Models side by side: one value per model in each list (None where absent)."""

    models: list[str]
    entries: list[ModelEntry]
    metrics: dict[str, list[Any]]
    variants: dict[str, list[Any]]
    lineage_roots: list[list[LineageRoot]]
    same_sources: bool


def _not_found(exc: LookupError) -> ProblemError:
    return ProblemError(404, str(exc), kind="not-found")


@router.get("", response_model=ModelList)
def list_models(
    request: Request,
    name: str | None = Query(None, description="Only versions of this model."),
    run_id: str | None = Query(None, description="Only models this run trained (id or prefix)."),
    limit: int = Query(200, ge=1, le=1000),
    include_rounds: bool = Query(
        False, description="Also federated rounds' node updates and earlier global models."
    ),
) -> dict[str, Any]:
    """Every trained model (artifacts of kind ``model``), newest first.

    A federated run registers one version, its final global model; its round models
    and node updates stay artifacts (``include_rounds=true`` lists them too)."""
    db = db_of(request)
    resolved = None
    if run_id is not None:
        resolved = queries.resolve_run_id(db, run_id)
        if resolved is None:
            raise ProblemError(404, f"no run matches '{run_id}'", kind="not-found")
    items = registry.list_models(
        db, name=name, run_id=resolved, limit=limit, include_rounds=include_rounds
    )
    return {"items": items}


@router.get("/compare", response_model=ModelComparison, responses=BAD_REQUEST)
def compare_models(
    request: Request,
    ids: str = Query(
        ...,
        description="Comma-separated models: name@version, name (latest) or artifact id.",
    ),
) -> dict[str, Any]:
    """Models side by side: the union of their metrics and swept params, their sources."""
    refs = [r.strip() for r in ids.split(",") if r.strip()]
    if not refs:
        raise ProblemError(400, "ids names no model: pass ids=name@1,name@2", kind="bad-request")
    if len(refs) > MAX_COMPARE:
        raise ProblemError(
            400, f"compare takes at most {MAX_COMPARE} models, got {len(refs)}", kind="bad-request"
        )
    try:
        return registry.compare_models(db_of(request), refs)
    except registry.BadModelRef as exc:
        raise ProblemError(400, str(exc), kind="bad-request") from None
    except registry.ModelNotFound as exc:
        raise _not_found(exc) from None


@router.get("/{name}", response_model=ModelVersions)
def model_versions(
    request: Request,
    name: str,
    include_rounds: bool = Query(False, description="Also federated rounds' models."),
) -> dict[str, Any]:
    """Every version of the model ``name``, oldest first."""
    try:
        versions = registry.model_versions(db_of(request), name, include_rounds=include_rounds)
        return {"name": name, "versions": versions}
    except registry.ModelNotFound as exc:
        raise _not_found(exc) from None


@router.get("/{name}/{version}", response_model=ModelEntry)
def model_version(
    request: Request, name: str, version: int = Path(..., ge=1, le=INT32_MAX)
) -> dict[str, Any]:
    """One version of a model: its artifact, variant, training and evaluation metrics."""
    try:
        return registry.get_model(db_of(request), f"{name}@{version}")
    except registry.BadModelRef as exc:
        raise ProblemError(400, str(exc), kind="bad-request") from None
    except registry.ModelNotFound as exc:
        raise _not_found(exc) from None
