"""Artifacts: canonical fingerprints and code hashes, materializers, a content-addressed
store over fsspec, and lazy handles. numpy, pandas, pyarrow and fsspec load only on use.
"""

from flowfed.artifacts.blobs import (
    INLINE_MAX_BYTES,
    ByteSource,
    CatalogBlobs,
    inline_uri,
    is_inline,
)
from flowfed.artifacts.codehash import code_hash
from flowfed.artifacts.handle import ArtifactHandle
from flowfed.artifacts.hashing import UNHASHABLE, fingerprint
from flowfed.artifacts.materializers import (
    KINDS,
    Materialized,
    NotMaterializable,
    load,
    materialize,
    type_name_of,
)
from flowfed.artifacts.store import ArtifactCorrupted, ArtifactStore

__all__ = [
    "INLINE_MAX_BYTES",
    "KINDS",
    "UNHASHABLE",
    "ArtifactCorrupted",
    "ArtifactHandle",
    "ArtifactStore",
    "ByteSource",
    "CatalogBlobs",
    "Materialized",
    "NotMaterializable",
    "code_hash",
    "fingerprint",
    "inline_uri",
    "is_inline",
    "load",
    "materialize",
    "type_name_of",
]

# Cache keys live with the cache: flowfed.engine.cache.
