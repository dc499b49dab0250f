"""Content-addressed blobs: large job payloads (and, later, model weights).

``LocalBlobStore`` keeps blobs as files named by their SHA-256 under one
directory (written to a temp file, fsynced, then renamed, so a reader never
sees a partial blob).  It is the first tier of the design's host NVMe cache ←
region volume ← object store chain; the other tiers implement the same
``BlobStore`` protocol.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from tide.api.errors import NotFound

__all__ = ["BlobStore", "LocalBlobStore"]


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data``; returns its key.  Idempotent; safe from many threads."""
        ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; NotFound if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; absent keys are ignored."""
        ...


class LocalBlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise NotFound(f"blob {key!r} not found (not a blob key)")
        return self._root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {key} not found") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
