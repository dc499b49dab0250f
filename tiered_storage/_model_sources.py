"""Where a model's files come from the first time a region needs them.

Each source lists the model's files (path, size) and streams one file's bytes.  Failures are the
taxonomy's: a model that does not resolve (no such path, bucket prefix or repository revision)
is NotFound; a source that cannot be reached is Unavailable.  ``hf://`` speaks the Hugging Face
Hub's HTTP API at ``hf_endpoint`` (``https://huggingface.co`` or a mirror):
``GET /api/models/<repo>/revision/<rev>?blobs=true`` for the commit and the files, and
``GET /<repo>/resolve/<commit>/<path>`` for each file's bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import aiohttp
import msgspec

from tide.api.errors import NotFound, Unavailable
from tiered_storage._model_ref import ModelRef, check_relative
from tiered_storage._objects import ObjectStore
from tiered_storage._open import open_object_store

__all__ = ["ModelSource", "SourceSettings", "open_source"]

_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class SourceSettings:
    s3_endpoint_url: str = ""  # for s3:// models ("" = AWS)
    s3_credentials_file: str = ""
    hf_endpoint: str = "https://huggingface.co"
    hf_token_file: str = ""


class ModelSource(Protocol):
    async def files(self) -> tuple[str, list[tuple[str, int]]]:
        """(commit or "", [(path, size)]); NotFound when the model does not resolve."""
        ...

    def read(self, path: str) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


def open_source(ref: ModelRef, settings: SourceSettings) -> ModelSource:
    if ref.scheme == "file":
        return _FileSource(ref)
    if ref.scheme == "s3":
        return _S3Source(ref, settings)
    return _HfSource(ref, settings)


class _FileSource:
    def __init__(self, ref: ModelRef) -> None:
        self._root = Path(ref.location)
        self._url = ref.url

    async def files(self) -> tuple[str, list[tuple[str, int]]]:
        return "", await asyncio.to_thread(self._walk)

    def _walk(self) -> list[tuple[str, int]]:
        if self._root.is_file():
            return [(self._root.name, self._root.stat().st_size)]
        if not self._root.is_dir():
            raise NotFound(f"model {self._url}: no such file or directory on this host")
        found = []
        for dirpath, _, names in os.walk(self._root):
            for name in names:
                full = Path(dirpath) / name
                if full.is_file() and not full.is_symlink():
                    found.append(
                        (check_relative(full.relative_to(self._root).as_posix()), full.stat().st_size)
                    )
        return sorted(found)

    async def read(self, path: str) -> AsyncIterator[bytes]:
        full = self._root if self._root.is_file() else self._root / check_relative(path)
        f = await asyncio.to_thread(open, full, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def close(self) -> None:
        return None


class _S3Source:
    def __init__(self, ref: ModelRef, settings: SourceSettings) -> None:
        bucket, _, self._prefix = ref.location.partition("/")
        self._url = ref.url
        self._store: ObjectStore = open_object_store(
            f"s3://{bucket}",
            endpoint_url=settings.s3_endpoint_url,
            credentials_file=settings.s3_credentials_file,
        )

    async def files(self) -> tuple[str, list[tuple[str, int]]]:
        base = f"{self._prefix}/" if self._prefix else ""
        found = [(m.key[len(base) :], m.size) async for m in self._store.list(self._prefix)]
        if not found:
            raise NotFound(f"model {self._url}: no objects under that prefix")
        return "", sorted((check_relative(p), s) for p, s in found)

    def read(self, path: str) -> AsyncIterator[bytes]:
        return self._store.get_stream(f"{self._prefix}/{path}" if self._prefix else path, chunk_size=_CHUNK)

    async def close(self) -> None:
        await self._store.close()


class _Sibling(msgspec.Struct):
    rfilename: str
    size: int = 0


class _RepoInfo(msgspec.Struct):
    sha: str
    siblings: list[_Sibling] = []


class _HfSource:
    def __init__(self, ref: ModelRef, settings: SourceSettings) -> None:
        self._ref = ref
        self._base = settings.hf_endpoint.rstrip("/")
        token = Path(settings.hf_token_file).read_text().strip() if settings.hf_token_file else ""
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._commit = ""

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self._session

    async def files(self) -> tuple[str, list[tuple[str, int]]]:
        ref = self._ref
        url = f"{self._base}/api/models/{ref.location}/revision/{quote(ref.revision, safe='')}?blobs=true"
        body = await self._get(url)
        info = msgspec.json.decode(body, type=_RepoInfo)
        self._commit = info.sha
        return info.sha, sorted((check_relative(s.rfilename), s.size) for s in info.siblings)

    async def _get(self, url: str) -> bytes:
        try:
            async with self._http().get(url) as resp:
                if resp.status in (401, 403, 404):
                    raise NotFound(f"model {self._ref.url}: {self._base} answered {resp.status}")
                if resp.status != 200:
                    raise Unavailable(f"model index {self._base} answered {resp.status}; retry later")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"model index {self._base} is unreachable: {exc}") from None

    async def read(self, path: str) -> AsyncIterator[bytes]:
        url = f"{self._base}/{self._ref.location}/resolve/{self._commit}/{quote(path)}"
        try:
            async with self._http().get(url) as resp:
                if resp.status != 200:
                    raise Unavailable(f"model {self._ref.url}: {path} answered {resp.status}")
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"model index {self._base} is unreachable: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
