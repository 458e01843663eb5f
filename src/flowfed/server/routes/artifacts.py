"""Artifacts: catalog listing, metadata, content (shareable only) and lineage."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from flowfed.server import queries
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, FORBIDDEN, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError
from flowfed.server.schemas import INT32_MAX, Artifact, ArtifactDetail, LineageNode

router = APIRouter(
    prefix="/api/v1/artifacts",
    tags=["artifacts"],
    dependencies=[Depends(require_principal)],
    responses={**AUTH_ERRORS, **BAD_REQUEST, **NOT_FOUND},
)

# Names are free text, but a reference never needs a path separator, a parent step,
# or a control character; refusing them keeps refs from ever reaching a file path.
_BAD_REF = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")
_REF_VERSION = re.compile(r"[:@](\d+)$")


def check_ref(ref: str) -> str:
    """``ref`` if it is a plausible artifact reference, else a 400 problem."""
    if not ref or len(ref) > 300 or _BAD_REF.search(ref):
        raise ProblemError(
            400,
            "an artifact reference is an id, an id prefix, 'name' or 'name:version'; "
            "path separators, '..' and control characters are not allowed",
            kind="bad-reference",
        )
    version = _REF_VERSION.search(ref)
    if version is not None and int(version.group(1)) > INT32_MAX:
        # 'name:<version>' beyond any stored version (and any database integer).
        raise ProblemError(404, f"no artifact matches '{ref}'", kind="not-found")
    return ref


def _artifact(request: Request, ref: str) -> dict[str, Any]:
    row = db_of(request).get_artifact(check_ref(ref))
    if row is None:
        raise ProblemError(404, f"no artifact matches '{ref}'", kind="not-found")
    return row


@router.get("", response_model=list[Artifact])
def list_artifacts(
    request: Request,
    name: str | None = Query(None, description="Only artifacts of this name."),
    q: str | None = Query(
        None,
        max_length=255,
        description="Names starting with this (`scores` finds `scores[hospital-a:breast]`).",
    ),
    run: str | None = Query(None, description="Only this run's (id or unique prefix)."),
    run_id: str | None = Query(None, description="The same as `run`."),
    step: str | None = Query(None, max_length=255, description="Only this step's."),
    include_rounds: bool = Query(
        False,
        description="Also what federated rounds made: node updates and every round's global "
        "model (by default only the last round's, the run's model).",
    ),
    limit: int = Query(200, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Catalogued artifacts, newest first."""
    db = db_of(request)
    ref = run if run is not None else run_id
    resolved = None
    if ref is not None:
        resolved = queries.resolve_run_id(db, ref)
        if resolved is None:
            raise ProblemError(404, f"no run matches '{ref}'", kind="not-found")
    return db.list_artifacts(
        name=name,
        run_id=resolved,
        limit=limit,
        prefix=q,
        step=step,
        include_rounds=include_rounds,
    )


@router.get("/{ref}", response_model=ArtifactDetail)
def get_artifact(request: Request, ref: str) -> dict[str, Any]:
    """An artifact's metadata: hash, size, kind, producer, parents."""
    return _artifact(request, ref)


@router.get(
    "/{ref}/content",
    response_class=Response,
    responses={
        **FORBIDDEN,
        200: {"content": {"application/octet-stream": {}}, "description": "The stored bytes"},
    },
)
def artifact_content(request: Request, ref: str) -> Response:
    """The artifact's stored bytes, for shareable artifacts only.

    The bytes are the serialized form (JSON, Parquet, .npy, ...); the ``X-Flowfed-Artifact-Kind``
    header says which.
    """
    from flowfed.artifacts import ArtifactStore, CatalogBlobs, is_inline

    row = _artifact(request, ref)
    if not row.get("shareable"):
        raise ProblemError(
            403,
            f"artifact {row['name']}:{row['version']} is not shareable; its bytes stay on "
            f"node '{row['node']}'",
            kind="not-shareable",
        )
    source: Any = (
        CatalogBlobs(db_of(request))
        if is_inline(row["uri"])
        else ArtifactStore(request.app.state.settings.resolved_artifacts_url())
    )
    try:
        data = source.get(row["hash"], verify=True)
    except FileNotFoundError:
        raise ProblemError(
            410, f"the bytes of artifact {row['id']} are no longer stored", kind="content-gone"
        ) from None
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "X-Flowfed-Artifact-Kind": row["kind"],
            "X-Flowfed-Artifact-Hash": row["hash"],
            "ETag": f'"{row["hash"]}"',
            "Content-Disposition": f'attachment; filename="{row["id"]}.{row["kind"]}"',
        },
    )


@router.get("/{ref}/lineage", response_model=LineageNode)
def artifact_lineage(request: Request, ref: str) -> dict[str, Any]:
    """The recursive tree from an artifact back to its sources."""
    tree = db_of(request).lineage(check_ref(ref))
    if tree is None:
        raise ProblemError(404, f"no artifact matches '{ref}'", kind="not-found")
    return tree


@router.api_route("/{rest:path}", methods=["GET"], include_in_schema=False, response_model=None)
def artifact_path_trick(rest: str) -> None:
    """Any other path under /artifacts: a reference with separators (400) or nothing (404)."""
    check_ref(rest)
    raise ProblemError(404, f"no endpoint at /api/v1/artifacts/{rest}", kind="not-found")
