"""Content-addressed artifact storage: ``<root>/objects/<hash[:2]>/<hash>``.

Local directories (plain paths and ``file://``) use ``os`` calls directly, the fast path
every local run takes; any other URL (``memory://``, ``s3://``, ``gs://``...) goes through
fsspec, imported only then. Objects are immutable and named by their SHA-256, so a put of
an object that exists is a no-op (dedupe) and readers can never see a partial object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any

from flowfed.artifacts.materializers import Materialized

_HASH = re.compile(r"[0-9a-f]{64}")


def _check(hash: str) -> str:
    # Hashes come from users too (CLI, REST): never let one escape the objects directory.
    if not _HASH.fullmatch(hash):
        raise ValueError(f"not a sha256 hex digest: {hash!r}")
    return hash


class ArtifactCorrupted(OSError):
    """Stored bytes do not match their content hash."""


class ArtifactStore:
    """Content-addressed object store over a local directory or any fsspec URL."""

    def __init__(self, url: str = ".flowfed/artifacts") -> None:
        self.url = url
        self._fs: Any = None
        if "://" not in url or url.startswith("file://"):
            path = url[len("file://") :] if url.startswith("file://") else url
            self.root = os.path.abspath(os.path.expanduser(path))
            self.local = True
            # Precomputed so put() does not build a Path per call (hashes need no quoting).
            self._root_uri = Path(self.root).as_uri()
            self._made: set[str] = set()
            self._tmp_seq = 0
            self._tmp_lock = threading.Lock()
        else:
            from fsspec.core import url_to_fs

            self._fs, root = url_to_fs(url)
            self.root = str(root).rstrip("/")
            self.local = False

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def _rel(self, hash: str) -> str:
        return f"objects/{hash[:2]}/{hash}"

    def object_path(self, hash: str) -> str:
        """Where the object lives (an OS path for local stores, an fsspec path otherwise)."""
        return f"{self.root}/{self._rel(_check(hash))}"

    def uri(self, hash: str) -> str:
        """A URI naming the object (``file://`` for local stores)."""
        if self.local:
            return f"{self._root_uri}/{self._rel(_check(hash))}"
        return self._fs.unstrip_protocol(self.object_path(hash))

    def put(self, m: Materialized) -> str:
        """Store the bytes of ``m`` under its hash (atomic, deduplicated); return the URI."""
        h = _check(m.hash)
        if not self.local:
            path = self.object_path(h)
            if not self._fs.exists(path):
                # Object stores (S3, GCS, memory) publish a whole object per put, so a
                # direct write is already atomic; a rename there would be a copy.
                self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self._fs.pipe_file(path, m.data)
            return self.uri(h)
        d = f"{self.root}/objects/{h[:2]}"
        path = f"{d}/{h}"
        uri = f"{self._root_uri}/objects/{h[:2]}/{h}"
        if os.path.exists(path):
            return uri
        if d not in self._made:
            os.makedirs(d, exist_ok=True)
            self._made.add(d)
        with self._tmp_lock:
            self._tmp_seq += 1
            seq = self._tmp_seq
        # Temp file in the same directory (same filesystem) so the rename is atomic; the
        # name is unique per process and call, so concurrent writers never collide.
        tmp = f"{d}/.{h}.{os.getpid()}.{seq}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(m.data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return uri

    def get(self, hash: str, *, verify: bool = False) -> bytes:
        """The bytes of an object; with ``verify``, check them against the hash."""
        path = self.object_path(hash)
        try:
            if self.local:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = self._fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact object {hash} not found in {self.url}") from None
        if verify and hashlib.sha256(data).hexdigest() != hash:
            raise ArtifactCorrupted(f"artifact object {hash} in {self.url} is corrupted")
        return bytes(data)

    def exists(self, hash: str) -> bool:
        """Whether the object is stored."""
        path = self.object_path(hash)
        return os.path.exists(path) if self.local else bool(self._fs.exists(path))

    def local_path(self, hash: str) -> Path | None:
        """The object's local file path, or None for non-local stores or missing objects."""
        if not self.local:
            return None
        path = self.object_path(hash)
        return Path(path) if os.path.exists(path) else None
