"""The object-store interface: named, immutable-once-written objects under keys.

Everything the coordinator keeps out of etcd (job payloads and results above the
inline limit; later batch shards, code bundles, model files, volume files) goes
through ``ObjectStore``, one protocol with two backends that pass one contract
suite (tests/contract/test_blobs.py): a local directory (``tide dev`` and single
replica setups) and S3 (every replica sees the same objects).

Keys are ``/``-separated paths, namespaced by kind at the first segment
(``jobs/<endpoint>/<job>/input``; ``batches/``, ``bundles/``, ``models/``,
``volumes/`` next): an object's kind and owner can be read from its key, which is
what the orphan sweep relies on.  ``list`` works on whole segments, as S3
delimiters and directories do: ``list("jobs/a")`` is ``list("jobs/a/")``.

Errors are the closed taxonomy's: ``NotFound`` (no such object),
``AlreadyExists`` (``if_absent`` lost to another writer), ``InvalidArgument`` (a
key that is not one), ``Unavailable`` (the store cannot be reached or refused
our credentials: retry later; the message names the store, never a secret).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

import msgspec

from tide.api.errors import InvalidArgument

__all__ = ["KINDS", "ObjectMeta", "ObjectStore", "check_key", "object_key"]

# The first segment of every key; an owner is found from the rest (see ``object_key``).
KINDS = ("jobs", "batches", "bundles", "models", "volumes")

_MAX_KEY = 1024  # S3's limit, in UTF-8 bytes


class ObjectMeta(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    modified: float  # seconds since the epoch (the store's clock)
    etag: str = ""  # changes whenever the content may have changed


class ObjectStore(Protocol):
    """One bucket (or directory).  Every method is safe to call concurrently."""

    @property
    def url(self) -> str:
        """Where the objects live (``s3://bucket/prefix``, ``file:///dir``), for messages."""
        ...

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> ObjectMeta:
        """Store ``data`` whole (a reader never sees part of it).  ``if_absent``: only if
        no object has the key, else AlreadyExists (exactly one of concurrent writers wins)."""
        ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> ObjectMeta:
        """Store what ``chunks`` yields without holding it all (multipart on S3)."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; NotFound if there is none."""
        ...

    def get_stream(self, key: str, *, chunk_size: int = 8 << 20) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; NotFound (on the first step) if there is none."""
        ...

    async def head(self, key: str) -> ObjectMeta:
        """The object's size, time and etag; NotFound if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; an absent key is not an error (deletes are retried)."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        """Every object under the folder ``prefix`` ("" = all), in no particular order."""
        ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """``key`` if it is a valid key, else InvalidArgument (no traversal, no empty segments)."""
    if not key or len(key.encode()) > _MAX_KEY:
        raise InvalidArgument(f"object key must be 1..{_MAX_KEY} bytes, got {len(key.encode())}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 or c == "\\" for c in key):
        raise InvalidArgument(f"object key {key!r} must be /-separated names without '.', '..' or controls")
    return key


def object_key(kind: str, *parts: str) -> str:
    """``kind/part/...``, each part one segment: the kind is one of ``KINDS``."""
    if kind not in KINDS:
        raise InvalidArgument(f"object kind {kind!r} is not one of {', '.join(KINDS)}")
    if any("/" in p for p in parts):
        raise InvalidArgument(f"object key parts must not contain '/': {parts!r}")
    return check_key("/".join((kind, *parts)))


def folder(prefix: str) -> str:
    """A list prefix as a folder: "" stays "", else it ends with exactly one '/'."""
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return f"{prefix}/" if prefix else ""
