"""Naming a model: the URL an endpoint gives, the id the caches use, and the manifest.

An endpoint names its weights by URL: ``s3://bucket/prefix`` (every object under the prefix),
``file:///path`` (a directory or one file, on the host that fetches it) or
``hf://org/name@rev`` (a Hugging Face repository at a revision, ``@main`` when none is given,
fetched from the configured index URL).  The id is derived from the URL (the first 32 hex
digits of its SHA-256), so every region and host agrees on it without asking anyone.

In a store a model is ``models/<id>/files/<path>`` per file and ``models/<id>/manifest.json``
(written last: a model without a manifest is not there yet).  The manifest lists each file's
size and SHA-256, which every later copy is checked against.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from tide.api.errors import InvalidArgument
from tiered_storage._objects import check_key, object_key

__all__ = ["ModelFile", "ModelManifest", "ModelRef", "parse_model_ref"]

Scheme = Literal["s3", "file", "hf"]
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_HF_REV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    scheme: Scheme
    id: str  # 32 hex digits of sha256(url)
    location: str  # s3: "bucket/prefix"; file: the path; hf: "org/name"
    revision: str = ""  # hf only

    @property
    def manifest_key(self) -> str:
        return object_key("models", self.id, "manifest.json")

    def file_key(self, path: str) -> str:
        return check_key(f"{object_key('models', self.id, 'files')}/{path}")


class ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # relative, "/"-separated
    size: int
    sha256: str


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    files: list[ModelFile]
    commit: str = ""  # hf: the revision resolved to a commit (the cache layout's snapshot name)
    fetched_at: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


def parse_model_ref(url: str) -> ModelRef:
    """The reference ``url`` names; InvalidArgument says what a valid one looks like."""
    parts = urlsplit(url)
    ident = hashlib.sha256(url.encode()).hexdigest()[:32]
    if parts.scheme == "s3" and parts.netloc:
        return ModelRef(url=url, scheme="s3", id=ident, location=f"{parts.netloc}{parts.path}".rstrip("/"))
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return ModelRef(url=url, scheme="file", id=ident, location=parts.path)
    if parts.scheme == "hf":
        repo, _, rev = f"{parts.netloc}{parts.path}".partition("@")
        rev = rev or "main"
        if _HF_REPO.match(repo) and _HF_REV.match(rev) and ".." not in rev:
            return ModelRef(url=url, scheme="hf", id=ident, location=repo, revision=rev)
    raise InvalidArgument(
        f"model {url!r} must be s3://bucket/prefix, file:///path or hf://org/name[@revision]"
    )


def check_relative(path: str) -> str:
    """A file path inside a model: relative, no '..' (what a source lists is not trusted)."""
    check_key(path)
    return path
