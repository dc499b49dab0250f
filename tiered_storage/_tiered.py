"""``TieredStore``: a region's object store in front of the global one (read-through).

Reads go to the region's replica first and fill it from global on a miss, so a workload that
moves to another region copies nothing by hand; what each outcome does is ``plan_read``
(_read_plan.py).  With an expected SHA-256 (``fetch(key, sha256=...)``, ``fetch_to_file``) a
copy whose bytes do not match is never served: the region's is dropped and fetched again.

Faults, as documented in ARCHITECTURE.md ("Storage tiers"):

* region store down: reads are served from global (no fill); writes still go to global.
* global store down: the region serves what it holds; a region miss is Unavailable (not
  NotFound: global, the source of truth, could not be asked); writes are Unavailable.
* no global tier (``global_=None``): the region is the source of truth.

Writes go to global first (the source of truth), then the region (``put``; a failed region
write is logged: the next read fills it).  ``put_stream`` writes global only.  Nothing
propagates deletes or overwrites to other regions' replicas: objects bound to global should be
immutable (keys that carry a version or a digest); a reader that passes a digest detects a
stale copy as corrupt and refetches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Literal

import msgspec

from tide.api.errors import NotFound, Unavailable
from tiered_storage._objects import ObjectMeta, ObjectStore
from tiered_storage._read_plan import Answer, ReadPlan, plan_read, plan_region_only

__all__ = ["Fetched", "TieredStore"]

log = logging.getLogger(__name__)

Tier = Literal["region", "global"]


class Fetched(msgspec.Struct, frozen=True, kw_only=True):
    tier: Tier  # which store's bytes were served
    size: int
    sha256: str
    data: bytes = b""  # empty for fetch_to_file


class TieredStore:
    """``region`` in front of ``global_``; satisfies ``ObjectStore``.  Safe to use concurrently."""

    def __init__(self, region: ObjectStore, global_: ObjectStore | None = None) -> None:
        self.region = region
        self.global_ = global_

    @property
    def url(self) -> str:
        return f"{self.region.url} <- {self.global_.url}" if self.global_ else self.region.url

    # -- reads ---------------------------------------------------------------------------------

    async def fetch(self, key: str, *, sha256: str = "") -> Fetched:
        """The object's bytes and the tier that served them (see the module's fault list)."""
        answer, data = await _read(self.region, key, sha256)
        plan = await self._plan(answer, key)
        if plan.serve == "region":
            return _fetched("region", data)
        assert self.global_ is not None  # else _plan raised
        g_answer, data = await _read(self.global_, key, sha256)
        plan = await self._finish(answer, g_answer, key)
        if plan.fill:
            await self._fill(key, self.region.put(key, data))
        return _fetched("global", data)

    async def fetch_to_file(self, key: str, path: str | os.PathLike[str], *, sha256: str) -> Fetched:
        """Stream the object into ``path`` (replaced whole, never partly written), checking
        ``sha256`` on the way; a region miss is filled from the file afterwards."""
        dest = Path(path)
        answer, got = await _read_file(self.region, key, sha256, dest)
        plan = await self._plan(answer, key)
        if plan.serve == "region":
            return got
        assert self.global_ is not None  # else _plan raised
        g_answer, got = await _read_file(self.global_, key, sha256, dest)
        plan = await self._finish(answer, g_answer, key)
        if plan.fill:
            await self._fill(key, self.region.put_stream(key, _file_chunks(dest)))
        return msgspec.structs.replace(got, tier="global")

    async def _plan(self, answer: Answer, key: str) -> ReadPlan:
        plan = plan_read(answer, "skipped") if self.global_ else plan_region_only(answer)
        if plan.drop:
            await self._drop(key)
        if plan.error:
            _raise(plan, key, self.url)
        return plan

    async def _finish(self, answer: Answer, g_answer: Answer, key: str) -> ReadPlan:
        plan = plan_read(answer, g_answer)
        if plan.error:
            _raise(plan, key, self.url)
        return plan

    async def _drop(self, key: str) -> None:
        log.warning("object %s in %s does not match its checksum; dropping it", key, self.region.url)
        with contextlib.suppress(Unavailable):
            await self.region.delete(key)

    async def _fill(self, key: str, write: Awaitable[ObjectMeta]) -> None:
        try:
            await write
        except Unavailable as exc:
            log.warning("could not fill %s into %s: %s", key, self.region.url, exc.message)

    async def get(self, key: str) -> bytes:
        return (await self.fetch(key)).data

    async def get_stream(self, key: str, *, chunk_size: int = 8 << 20) -> AsyncIterator[bytes]:
        data = (await self.fetch(key)).data  # read-through needs the whole object to fill with
        for i in range(0, len(data), chunk_size):
            yield data[i : i + chunk_size]

    async def head(self, key: str) -> ObjectMeta:
        try:
            return await self.region.head(key)
        except (NotFound, Unavailable):
            if self.global_ is None:
                raise
        return await self.global_.head(key)

    def list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        """Global's listing (the source of truth); the region's while global is down."""
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        if self.global_ is not None:
            try:
                async for meta in self.global_.list(prefix):
                    yield meta
                return
            except Unavailable:
                log.warning("global store %s is down; listing the region's replica", self.global_.url)
        async for meta in self.region.list(prefix):
            yield meta

    # -- writes --------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> ObjectMeta:
        if self.global_ is None:
            return await self.region.put(key, data, if_absent=if_absent)
        meta = await self.global_.put(key, data, if_absent=if_absent)
        await self._fill(key, self.region.put(key, data))
        return meta

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> ObjectMeta:
        """Writes global only (a stream cannot be replayed): the region fills on first read."""
        return await (self.global_ or self.region).put_stream(key, chunks)

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectMeta:
        """A file's bytes, streamed, to global and then the region (as ``put``)."""
        if self.global_ is None:
            return await self.region.put_stream(key, _file_chunks(Path(path)))
        meta = await self.global_.put_stream(key, _file_chunks(Path(path)))
        await self._fill(key, self.region.put_stream(key, _file_chunks(Path(path))))
        return meta

    async def delete(self, key: str) -> None:
        if self.global_ is not None:
            await self.global_.delete(key)
        with contextlib.suppress(Unavailable):
            await self.region.delete(key)

    async def close(self) -> None:
        await self.region.close()
        if self.global_ is not None:
            await self.global_.close()


def _fetched(tier: Tier, data: bytes) -> Fetched:
    return Fetched(tier=tier, size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)


async def _read(store: ObjectStore, key: str, sha256: str) -> tuple[Answer, bytes]:
    try:
        data = await store.get(key)
    except NotFound:
        return "miss", b""
    except Unavailable:
        return "down", b""
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        return "corrupt", b""
    return "hit", data


async def _read_file(store: ObjectStore, key: str, sha256: str, dest: Path) -> tuple[Answer, Fetched]:
    tmp = dest.with_name(f".{dest.name}.part")
    digest, size = hashlib.sha256(), 0
    answer: Answer = "hit"
    try:
        f = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in store.get_stream(key):
                size += len(chunk)
                await asyncio.to_thread(_hash_and_write, digest, f, chunk)  # off the event loop
        finally:
            await asyncio.to_thread(f.close)
        if digest.hexdigest() != sha256:
            answer = "corrupt"
        else:
            await asyncio.to_thread(os.replace, tmp, dest)
    except NotFound:
        answer = "miss"
    except Unavailable:
        answer = "down"
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return answer, Fetched(tier="region", size=size, sha256=digest.hexdigest())


def _hash_and_write(digest: Any, f: Any, chunk: bytes) -> None:
    digest.update(chunk)
    f.write(chunk)


async def _file_chunks(path: Path, chunk_size: int = 8 << 20) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


def _raise(plan: ReadPlan, key: str, where: str) -> None:
    if plan.error == "not_found":
        raise NotFound(f"object {key} not found in {where}")
    if plan.error == "corrupt":
        raise Unavailable(f"object {key} in {where} does not match its checksum (dropped); retry")
    raise Unavailable(f"object {key}: {where} is unavailable and no good copy is held in the region")
