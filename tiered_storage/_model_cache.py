"""The host tier of the model cache: models staged on local disk under a byte budget.

``ModelCache.ensure(ref)`` makes a model's files present under ``<root>/<id>/`` and says which
tier served them: ``host`` (already staged), ``region`` or ``global`` (through the
``TieredStore``: read-through, every file checked against the manifest's SHA-256) or ``source``
(the first fetch anywhere: the files are streamed from the source onto this host, hashed, then
uploaded to the region and global stores with the manifest last, so the region fetches each
model from its source once).

Layout of one staged model (bound read-only into containers)::

    <root>/<id>/files/...                       $TIDE_MODEL_PATH
    <root>/<id>/hub/models--<org>--<name>/      $HF_HUB_CACHE (hf:// models)
        refs/<revision>          -> the commit
        snapshots/<commit>       -> ../../../files (a relative link)
    <root>/<id>/manifest.json                   written last: a model without it is not staged

A model is staged into ``<root>/.staging-*`` and renamed into place; leftovers of a crash are
removed when the cache opens.  Files are checked once, on the way in; a staged model is trusted
after that (noded owns the directory; containers see it read-only).  Room is made least
recently used first (``plan_host_evictions``), never by evicting a model a running worker pins;
a model that cannot fit is ResourceExhausted.  If the stores cannot be reached (Unavailable),
the source is read directly and the upload is skipped; a host that holds the model needs nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import msgspec

from tide.api.errors import NotFound, ResourceExhausted, Unavailable
from tiered_storage._host_plan import HostModel, plan_host_evictions
from tiered_storage._model_ref import ModelFile, ModelManifest, ModelRef
from tiered_storage._model_sources import SourceSettings, open_source
from tiered_storage._tiered import TieredStore

__all__ = ["ModelCache", "Staged"]

log = logging.getLogger(__name__)

ModelTier = Literal["host", "region", "global", "source"]
_MANIFEST = "manifest.json"
_USED = ".used"
_PARALLEL = 4  # files fetched at once from the stores (a sharded model's shards)


class Staged(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    tier: ModelTier
    nbytes: int
    seconds: float


class ModelCache:
    """One host's staged models.  ``ensure`` is safe to call concurrently (one fetch per model)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        budget_bytes: int,
        store: TieredStore | None = None,
        sources: SourceSettings | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.budget_bytes = budget_bytes
        self.store = store
        self.sources = sources or SourceSettings()
        self._locks: dict[str, asyncio.Lock] = {}
        self._pins: Counter[str] = Counter()
        self.root.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        for entry in self.root.iterdir():
            if entry.name.startswith(".staging-") or not (entry / _MANIFEST).is_file():
                shutil.rmtree(entry, ignore_errors=True)

    # -- what workers see ----------------------------------------------------------------------

    def model_dir(self, ref: ModelRef) -> Path:
        return self.root / ref.id

    def env(self, ref: ModelRef) -> dict[str, str]:
        """The documented paths: $TIDE_MODEL_PATH always; the HF cache layout for hf:// models."""
        base = self.model_dir(ref)
        env = {"TIDE_MODEL_ID": ref.id, "TIDE_MODEL_PATH": str(base / "files")}
        if ref.scheme == "hf":
            env |= {
                "HF_HOME": str(base / "hf-home"),
                "HF_HUB_CACHE": str(base / "hub"),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
        return env

    def pin(self, model_id: str) -> None:
        self._pins[model_id] += 1

    def unpin(self, model_id: str) -> None:
        self._pins[model_id] -= 1
        if self._pins[model_id] <= 0:
            del self._pins[model_id]

    def held(self) -> list[HostModel]:
        """The staged models, with their sizes and when a worker last asked for them."""
        found = []
        for entry in self.root.iterdir():
            manifest = _read_manifest(entry / _MANIFEST)
            if manifest is not None:
                used = _mtime(entry / _USED) or _mtime(entry / _MANIFEST)
                found.append(HostModel(id=entry.name, nbytes=manifest.nbytes, last_used=used))
        return found

    # -- staging -------------------------------------------------------------------------------

    async def ensure(self, ref: ModelRef) -> Staged:
        """The model staged on this host (see the module's tiers and faults)."""
        async with self._locks.setdefault(ref.id, asyncio.Lock()):
            t0 = time.monotonic()
            dest = self.model_dir(ref)
            manifest = _read_manifest(dest / _MANIFEST)
            tier: ModelTier = "host"
            if manifest is None:
                manifest, tier = await self._stage(ref, dest)
            (dest / _USED).touch()
            return Staged(model_id=ref.id, tier=tier, nbytes=manifest.nbytes, seconds=time.monotonic() - t0)

    async def _stage(self, ref: ModelRef, dest: Path) -> tuple[ModelManifest, ModelTier]:
        staging = self.root / f".staging-{ref.id}-{secrets.token_hex(4)}"
        try:
            stored = await self._stored_manifest(ref)
            if stored is not None:
                tier = await self._from_store(ref, stored, staging)
                manifest = stored
            else:
                manifest, tier = await self._from_source(ref, staging), "source"
            _layout(ref, manifest, staging)
            (staging / _MANIFEST).write_bytes(msgspec.json.encode(manifest))
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
            return manifest, tier
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _stored_manifest(self, ref: ModelRef) -> ModelManifest | None:
        if self.store is None:
            return None
        try:
            got = await self.store.fetch(ref.manifest_key)
        except NotFound:
            return None
        except Unavailable as exc:
            log.warning("model %s: %s; reading its source directly", ref.url, exc.message)
            return None
        try:
            return msgspec.json.decode(got.data, type=ModelManifest)
        except msgspec.DecodeError:
            log.warning(
                "model %s: its manifest in %s does not parse; fetching again", ref.url, self.store.url
            )
            return None

    def _make_room(self, need: int, ref: ModelRef) -> None:
        held = [m for m in self.held() if m.id != ref.id]
        evict = plan_host_evictions(held, need=need, budget=self.budget_bytes, pinned=frozenset(self._pins))
        if evict is None:
            raise ResourceExhausted(
                f"host model cache {self.root} is full: model {ref.url} needs {need} bytes of a"
                f" {self.budget_bytes}-byte budget that running workers' models hold; raise"
                " [models] budget-bytes or place the endpoint elsewhere"
            )
        for model_id in evict:
            log.info("evicting model %s from %s (least recently used)", model_id, self.root)
            shutil.rmtree(self.root / model_id, ignore_errors=True)

    async def _from_store(self, ref: ModelRef, manifest: ModelManifest, staging: Path) -> ModelTier:
        assert self.store is not None
        self._make_room(manifest.nbytes, ref)
        store, slots = self.store, asyncio.Semaphore(_PARALLEL)

        async def one(f: ModelFile) -> str:
            path = staging / "files" / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            async with slots:
                return (await store.fetch_to_file(ref.file_key(f.path), path, sha256=f.sha256)).tier

        tiers = set(await asyncio.gather(*(one(f) for f in manifest.files)))
        return "global" if "global" in tiers else "region"

    async def _from_source(self, ref: ModelRef, staging: Path) -> ModelManifest:
        source = open_source(ref, self.sources)
        try:
            commit, listed = await source.files()
            self._make_room(sum(size for _, size in listed), ref)
            files = []
            for path, _ in listed:
                dest = staging / "files" / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                files.append(await _download(path, source.read(path), dest))
        finally:
            await source.close()
        manifest = ModelManifest(url=ref.url, files=files, commit=commit, fetched_at=time.time())
        await self._upload(ref, manifest, staging)
        return manifest

    async def _upload(self, ref: ModelRef, manifest: ModelManifest, staging: Path) -> None:
        """Into the region and global stores, the manifest last; best effort (the host has it)."""
        if self.store is None:
            return
        try:
            for f in manifest.files:
                await self.store.put_file(ref.file_key(f.path), staging / "files" / f.path)
            await self.store.put(ref.manifest_key, msgspec.json.encode(manifest))
        except Unavailable as exc:
            log.warning("model %s: not uploaded to %s: %s", ref.url, self.store.url, exc.message)


async def _download(path: str, chunks: AsyncIterator[bytes], dest: Path) -> ModelFile:
    digest, size = hashlib.sha256(), 0
    f = await asyncio.to_thread(open, dest, "wb")
    try:
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)
    return ModelFile(path=path, size=size, sha256=digest.hexdigest())


def _layout(ref: ModelRef, manifest: ModelManifest, staging: Path) -> None:
    """Read-only files; for hf:// models the Hugging Face cache layout over them."""
    (staging / "files").mkdir(exist_ok=True)
    for f in manifest.files:
        os.chmod(staging / "files" / f.path, 0o444)
    if ref.scheme != "hf":
        return
    (staging / "hf-home").mkdir(exist_ok=True)
    repo = staging / "hub" / f"models--{ref.location.replace('/', '--')}"
    commit = manifest.commit or ref.revision
    ref_file = repo / "refs" / ref.revision
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    ref_file.write_text(commit)
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / commit).symlink_to(Path("..", "..", "..", "files"))


def _read_manifest(path: Path) -> ModelManifest | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelManifest)
    except (OSError, msgspec.DecodeError):
        return None


def _mtime(path: Path) -> float:
    with contextlib.suppress(OSError):
        return path.stat().st_mtime
    return 0.0
