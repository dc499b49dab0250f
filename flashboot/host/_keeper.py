"""The FlashBoot keeper: the host side of FlashBoot, used by noded.  Never imports torch.

The keeper owns a state directory on local disk and a directory in shared memory; together they hold
T2 (images on disk) and T1 (data sections in ``/dev/shm``) for every model this host has run.  Worker
processes reach it through the directory convention documented in ``flashboot/_store.py``: noded passes
``Keeper.env(owner)`` (``TIDE_FLASHBOOT_DIR=<the owner's state dir>``) into each worker's environment
and mounts that owner's two directories into its container (one store per owner: ``_owners.py``);
``flashboot.load`` does the rest.  There is no server, so noded can
restart at any time without breaking a restore, and T1 copies outlive both workers and noded
(they go only with a reboot, an eviction or ``forget``).

Protocol, as a worker runs it (``flashboot.load``): read ``config.json``; look the model id up in
``index.json``; take the model's shared pin flock, then look for ``<fp>.t1`` (map it) or
``images/<fp>.safetensors`` (take the fill flock, reserve T1 room under ``state.lock``, read the image
into ``<fp>.t1.tmp`` with O_DIRECT, rename it to ``<fp>.t1``); on a miss, pack the source into a T1
segment the same way.  The pin is held while the process maps the model.  Eviction (keeper or a
worker making room) takes ``state.lock`` and succeeds only where the exclusive pin flock is free.

Where T1 lives: any tmpfs directory works (``/dev/shm/...``).  A tmpfs mounted with ``huge=always``
(or ``huge=within_size``) is much better: T1 is then mapped with 2 MiB pages, so a CPU restore maps a
GiB in about a millisecond instead of ~70 ms of 4 KiB page-table work, and ``cudaHostRegister`` has
512x fewer pages to pin.  Mounting it is the operator's (Ansible's) job; the keeper takes the path
and says what backs it (``t1_backing``), so noded can warn about a 4 KiB or non-RAM T1.

Budgets: T1 holds at most ``ram_budget_bytes`` and T2 at most ``disk_budget_bytes``; the least
recently used unpinned models go first, T1 copies being demoted to T2 (image written) while the disk
allows.  A model is pinned while any live process maps it, so a restore in flight is never evicted.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import time
from collections.abc import Callable
from typing import Literal, final

import msgspec

from tide.api.errors import InvalidArgument, ResourceExhausted, TideError, Unavailable

from .. import _pool
from .._image import ImageIndex, compute_chunk_hashes, iter_chunks, read_index
from .._io import ChunkReader, write_file_atomic
from .._locks import SharedLock
from .._plan import EvictionPlan
from .._registry import live_t0
from .._safe import open_regular, tree_problem
from .._store import ENV_DIR, ENV_OWNER, HostStore, StoreConfig
from .._tmpfs import T1Backing, t1_backing
from ._owners import enforce_all, owner_key, owner_keys, owner_paths
from ._repair import reconcile

__all__ = ["Holdings", "Keeper", "KeeperConfig", "ModelHolding", "Tier"]

log = logging.getLogger("tide.flashboot")

LOCK_TIMEOUT_S = 2.0  # a store lock held longer is a stuck or hostile worker: skip that store
Tier = Literal["t0", "t1", "t2"]
_TIERS: tuple[Tier, ...] = ("t0", "t1", "t2")


class KeeperConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state_dir: str  # on local disk (NVMe): index, images, locks
    shm_dir: str  # in shared memory, e.g. /dev/shm/tide-flashboot; best on a huge=always tmpfs
    ram_budget_bytes: int
    disk_budget_bytes: int
    read_threads: int = 4  # parallel O_DIRECT reads per restore
    read_chunk_bytes: int = 16 << 20
    direct_io: bool = True  # O_DIRECT image reads; some virtual disks read faster buffered
    preallocate_bytes: int = 0  # free T1 memory allocated at start, so first fills skip page allocation


class ModelHolding(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    model_ids: tuple[str, ...]
    data_bytes: int
    image_bytes: int
    tiers: tuple[Tier, ...]
    pinned: bool  # a live process maps it right now
    workers: int  # live worker processes holding it in device memory (T0)
    last_used: float
    owners: tuple[str, ...] = ()  # $TIDE_FLASHBOOT_OWNER of the workers that loaded it


class Holdings(msgspec.Struct, frozen=True, kw_only=True):
    """What this host holds, per tier, for the placer (prefer T0/T1 hosts, then T2)."""

    t0: tuple[str, ...]
    t1: tuple[str, ...]
    t2: tuple[str, ...]
    models: tuple[ModelHolding, ...]
    ram_used: int  # T1 copies, fills in progress and free memory
    ram_free: int  # recycled T1 memory waiting for the next fill (part of ram_used)
    ram_budget: int
    disk_used: int
    disk_budget: int

    def fingerprints(self) -> list[str]:
        return sorted({*self.t0, *self.t1, *self.t2})


@final
class Keeper:
    """Host-side owner of the T1 and T2 tiers.

    Every method is synchronous file I/O and safe to call while workers restore concurrently (all
    coordination is flock).  ``enforce``, ``import_image``, ``verify`` and ``forget`` may move whole
    images and are slow: noded calls them through ``asyncio.to_thread``.  ``start`` is idempotent
    and is how a restarted keeper adopts what its predecessor left (T2 images, live T1 copies).

    Models live in one store per owner (``_owners.py``): ``env(owner)`` and ``dirs(owner)`` name
    that owner's store, the rest of the API covers every store on the host.  The root store (owner
    "") serves callers that name no owner (tests, benchmarks, a worker run by hand).
    """

    def __init__(self, config: KeeperConfig, *, clock: Callable[[], float] = time.time):
        if config.ram_budget_bytes < 0 or config.disk_budget_bytes < 0:
            raise InvalidArgument("FlashBoot budgets must be >= 0")
        self.config = config
        self._clock = clock
        store_config = StoreConfig(
            shm_dir=config.shm_dir,
            ram_budget=config.ram_budget_bytes,
            disk_budget=config.disk_budget_bytes,
            read_threads=config.read_threads,
            read_chunk_bytes=config.read_chunk_bytes,
            direct_io=config.direct_io,
        )
        self._store = HostStore(config.state_dir, store_config, clock=clock)

    def start(self) -> None:
        """Create the directories, publish the config for workers, repair the indexes.  Idempotent."""
        for store in self._stores():
            self._open(store)
            try:
                reconcile(store, now=self._clock(), lock_timeout=LOCK_TIMEOUT_S)
            except TideError as exc:  # a worker holds its lock or broke its index: next start
                log.warning("FlashBoot store %s not repaired: %s", store.state_dir, exc)
        self.enforce()
        with self._store.locked():
            missing = (
                min(self.config.preallocate_bytes, self.config.ram_budget_bytes) - self._store.ram_used()
            )
            if missing >= 4096:  # slow (allocates and zeroes pages), but off every restore path
                _pool.preallocate(self.config.shm_dir, missing - missing % 4096)

    def _open(self, store: HostStore) -> None:
        store.create_dirs()
        config_path = os.path.join(store.state_dir, "config.json")
        write_file_atomic(config_path, [msgspec.json.encode(store.config)], durable=False)

    def _owner_store(self, owner: str) -> HostStore:
        return self._store_at(owner_key(owner))

    def _store_at(self, key: str) -> HostStore:
        state_dir, shm_dir = owner_paths(self.config.state_dir, self.config.shm_dir, key)
        config = msgspec.structs.replace(self._store.config, shm_dir=shm_dir)
        return HostStore(state_dir, config, clock=self._clock)

    def _stores(self) -> list[HostStore]:
        """The root store, then every owner store that exists and can be trusted (always in this
        order).  A store whose directories a worker replaced with links is left alone, logged."""
        out = [self._store]
        for key in owner_keys(self.config.state_dir):
            store = self._store_at(key)
            subdirs = [store.path(d) for d in ("images", "headers", "pins", "workers")]
            if problem := tree_problem([store.state_dir, *subdirs, store.config.shm_dir]):
                log.warning("FlashBoot store of %s left alone: %s", key, problem)
                continue
            out.append(store)
        return out

    def t1_backing(self) -> T1Backing:
        """What backs the T1 directory (RAM or not, 4 KiB or 2 MiB pages).  Cheap: reads the mount table."""
        return t1_backing(self.config.shm_dir)

    def paths(self, owner: str = "") -> tuple[str, str]:
        """(state dir, T1 dir) of ``owner``'s store, and nothing more: what noded binds into its
        containers.  Pure: ``dirs`` (or ``env``) makes sure the store exists."""
        if not owner:
            return self.config.state_dir, self.config.shm_dir
        return owner_paths(self.config.state_dir, self.config.shm_dir, owner)

    def dirs(self, owner: str = "") -> tuple[str, str]:
        """``paths(owner)``, with the owner's store created on first use and marked in use."""
        if not owner:
            return self.paths()
        store = self._owner_store(owner)
        config = os.path.join(store.state_dir, "config.json")
        if os.path.exists(config):
            os.utime(config)  # in use: ``collect`` leaves recently handed-out stores alone
        else:
            self._open(store)
        return store.state_dir, store.config.shm_dir

    def env(self, owner: str = "") -> dict[str, str]:
        """Environment a worker of ``owner`` (e.g. its endpoint) needs to find its store; the owner
        is also recorded with every model the worker loads and comes back in ``holdings()``."""
        state_dir, _ = self.dirs(owner)
        return {ENV_DIR: state_dir, **({ENV_OWNER: owner} if owner else {})}

    def enforce(self) -> EvictionPlan:
        """Bring both tiers within budget (LRU, pinned models skipped).  Slow: may write images."""
        return enforce_all(
            self._stores(),
            ram_budget=self.config.ram_budget_bytes,
            disk_budget=self.config.disk_budget_bytes,
            lock_timeout=LOCK_TIMEOUT_S,
        )

    def holdings(self) -> Holdings:
        """Fingerprints per tier plus per-model detail, over every store (a model several owners
        hold is one entry).  Cheap: stats files and tries locks."""
        merged: dict[str, ModelHolding] = {}
        stores = self._stores()
        for store in stores:
            try:
                held = _store_holdings(store)
            except TideError as exc:  # a worker holds its lock or broke its index: report the others
                log.warning("FlashBoot holdings of %s skipped: %s", store.state_dir, exc)
                continue
            for m in held:
                merged[m.fingerprint] = _merge(merged.get(m.fingerprint), m)
        models = tuple(merged[fp] for fp in sorted(merged))
        return Holdings(
            t0=tuple(m.fingerprint for m in models if "t0" in m.tiers),
            t1=tuple(m.fingerprint for m in models if "t1" in m.tiers),
            t2=tuple(m.fingerprint for m in models if "t2" in m.tiers),
            models=models,
            ram_used=sum(s.ram_used() for s in stores),
            ram_free=sum(s.ram_free() for s in stores),
            ram_budget=self.config.ram_budget_bytes,
            disk_used=sum(s.disk_used() for s in stores),
            disk_budget=self.config.disk_budget_bytes,
        )

    def import_image(
        self, path: str, *, model_id: str, stamp: str = "", owner: str = "", link: bool = True
    ) -> str:
        """Add an existing FlashBoot image to ``owner``'s T2 (hard link, else copy); returns its
        fingerprint.

        ``stamp`` must equal ``source_stamp(source)`` of the source workers will pass to ``load`` for
        the alias to hit (empty for state dicts and callables).  Slow when it copies.
        """
        store = self._store
        if owner:
            self.dirs(owner)
            store = self._owner_store(owner)
        index = read_index(path)
        fp = index.fingerprint
        if not store.make_room(need_disk=index.image_bytes).disk_fits:
            raise ResourceExhausted(f"no disk budget for a {index.image_bytes}-byte image")
        target = store.t2_path(fp)
        if not os.path.exists(target):
            tmp = f"{target}.tmp-import"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            try:
                if not link:
                    raise OSError("copy requested")
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        store.record(index, model_id=model_id, stamp=stamp)
        return fp

    def verify(self, fingerprint: str) -> dict[str, bool]:
        """Check every copy's chunk hashes against its header; a corrupt copy is deleted.  Slow.
        A tier counts as good only if every store's copy in it is."""
        result: dict[str, bool] = {}
        for store in self._stores():
            if store.in_t1(fingerprint) or store.in_t2(fingerprint):
                for tier, ok in _verify(store, fingerprint, self.config.read_threads).items():
                    result[tier] = result.get(tier, True) and ok
        return result

    def collect(self, live_owners: set[str], *, min_idle_s: float = 600.0) -> list[str]:
        """Delete the stores of owners with no live worker (``live_owners``: endpoints running
        here) that hold nothing and were not handed out for ``min_idle_s`` (a worker starting
        right now has its store), so endpoints long gone do not cost every pass a store to scan.
        Returns the keys removed.  A store is recreated by ``dirs`` when its owner comes back."""
        live = {owner_key(o) for o in live_owners}
        removed = []
        for store in self._stores()[1:]:
            key = os.path.basename(store.state_dir)
            try:
                idle = self._clock() - os.stat(os.path.join(store.state_dir, "config.json")).st_mtime
            except FileNotFoundError:
                idle = min_idle_s
            if key in live or idle < min_idle_s or not _empty(store):
                continue
            shutil.rmtree(store.config.shm_dir, ignore_errors=True)
            shutil.rmtree(store.state_dir, ignore_errors=True)
            removed.append(key)
        return removed

    def forget(self, fingerprint: str) -> bool:
        """Drop a model from T1 and T2 of every store unless a process pins it; returns whether it
        is gone everywhere."""
        gone = True
        for store in self._stores():
            with store.locked(timeout=LOCK_TIMEOUT_S):
                gone = (
                    all(
                        store.drop_copy(fingerprint, path)
                        for path in (store.t1_path(fingerprint), store.t2_path(fingerprint))
                    )
                    and gone
                )
                store.forget_empty()
        return gone


def _empty(store: HostStore) -> bool:
    """Nothing in either tier, no fill under way, no worker registered (checked under the lock)."""
    try:
        with store.locked(timeout=LOCK_TIMEOUT_S):
            files = [
                name
                for d in (store.config.shm_dir, store.path("images"), store.path("workers"))
                for name in (os.listdir(d) if os.path.isdir(d) else [])
            ]
            return not files and not store.read_index().models
    except TideError:
        return False


def _store_holdings(store: HostStore) -> list[ModelHolding]:
    t0 = [h for h in live_t0(store.state_dir) if h.state == "resident"]
    with store.locked(timeout=LOCK_TIMEOUT_S):
        states = store.snapshot()
        records = store.read_index().models
    out = []
    for s in sorted(states, key=lambda s: s.fingerprint):
        workers = sum(1 for h in t0 if h.fingerprint == s.fingerprint)
        held = {"t0": workers > 0, "t1": s.in_t1, "t2": s.in_t2}
        tiers = tuple(t for t in _TIERS if held[t])
        out.append(
            ModelHolding(
                fingerprint=s.fingerprint,
                model_ids=records[s.fingerprint].model_ids,
                data_bytes=s.data_bytes,
                image_bytes=s.image_bytes,
                tiers=tiers,
                pinned=s.pinned,
                workers=workers,
                last_used=s.last_used,
                owners=records[s.fingerprint].owners,
            )
        )
    return out


def _merge(a: ModelHolding | None, b: ModelHolding) -> ModelHolding:
    if a is None:
        return b
    return msgspec.structs.replace(
        a,
        model_ids=tuple(sorted({*a.model_ids, *b.model_ids})),
        tiers=tuple(t for t in _TIERS if t in a.tiers or t in b.tiers),
        pinned=a.pinned or b.pinned,
        workers=a.workers + b.workers,
        last_used=max(a.last_used, b.last_used),
        owners=tuple(sorted({*a.owners, *b.owners})),
    )


def _verify(store: HostStore, fingerprint: str, threads: int) -> dict[str, bool]:
    index = store.image_index(fingerprint)
    result: dict[str, bool] = {}
    try:
        pin = SharedLock(store.pin_path(fingerprint), blocking=False)
    except BlockingIOError:
        raise Unavailable(f"model {fingerprint} is being evicted; verify it again later") from None
    with pin:
        data = store.map_t1(fingerprint)
        if data is not None:
            with memoryview(data) as view:
                ok = compute_chunk_hashes(view[: index.data_bytes], index.chunk_bytes) == index.chunk_hashes
            data.close()
            result["t1"] = ok
        if store.in_t2(fingerprint):
            result["t2"] = _verify_t2(store, fingerprint, index, threads)
    with store.locked():
        for tier, ok in result.items():
            if not ok:
                path = store.t1_path(fingerprint) if tier == "t1" else store.t2_path(fingerprint)
                store.drop_copy(fingerprint, path)
    return result


def _verify_t2(store: HostStore, fp: str, index: ImageIndex, threads: int) -> bool:
    data_offset, chunk_bytes = index.data_offset, index.chunk_bytes
    hashes: list[str] = []
    path = store.t2_path(fp)
    os.close(open_regular(path, os.O_RDONLY))  # a link or a FIFO there is refused, not read
    buf = mmap.mmap(-1, chunk_bytes)  # page-aligned, as O_DIRECT wants
    try:
        with ChunkReader(path, threads=threads) as reader, memoryview(buf) as view:
            for a, b in iter_chunks(os.path.getsize(path) - data_offset, chunk_bytes):
                reader.read_into(view[: b - a], data_offset + a, chunk_bytes=store.config.read_chunk_bytes)
                hashes.extend(compute_chunk_hashes(view[: b - a], chunk_bytes, threads=1))
    finally:
        buf.close()
    return tuple(hashes) == index.chunk_hashes
