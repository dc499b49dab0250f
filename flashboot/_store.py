"""The host store: T1 (shared RAM) and T2 (local disk) copies of model images, shared by processes.

The protocol between the keeper (noded) and worker processes is this directory convention; there
is no server, so a worker can restore while noded restarts, and every step is a plain file
operation that survives either side dying.  ``$TIDE_FLASHBOOT_DIR`` names the state directory::

    <state>/config.json            StoreConfig: shm_dir, budgets (written by the keeper; read by all)
    <state>/state.lock             flock, exclusive around index updates and space reservations
    <state>/index.json             StoreIndex: model records (sizes, last use) and model_id aliases
    <state>/images/<fp>.safetensors   T2: the image (a standard safetensors file)
    <state>/headers/<fp>.hdr       the image's header bytes, so a T1-only model can be demoted
    <state>/pins/<fp>.pin          shared flock per process that maps the model: it cannot be evicted
    <state>/pins/<key>.fill        exclusive flock while one process fills T1 for a model
    <state>/workers/<id>.lock|json T0 registrations (see _registry.py)
    <shm_dir>/<fp>.t1              T1: the image's data section (exact size); complete once renamed
    <shm_dir>/<key>.t1.tmp         T1 being filled (its bytes count against the RAM budget)

Rules: a T1 or T2 file appears only by rename, so if it exists it is complete.  Presence in a tier
is the file's existence; index.json only adds sizes, last use and aliases, and the keeper's
``reconcile`` (``host/_repair.py``) repairs it against the files (after a reboot /dev/shm is empty;
T2 survives).  A process pins a model
(shared flock) before it looks for its files; eviction needs the exclusive flock, so it skips any
model that a live process maps.  Locks die with their process, so a crash leaves nothing pinned.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterator

import msgspec

from tide.api.errors import FailedPrecondition, InvalidArgument, NotFound

from . import _pool
from ._image import ImageIndex, parse_header
from ._io import write_file_atomic
from ._locks import SharedLock, exclusive, try_exclusive
from ._plan import EvictionPlan, ModelState, StoreUsage, plan_stores
from ._safe import check_fingerprint, open_regular, valid_fingerprint
from ._segment import WANT_FILE, T1Segment, Want
from ._tmpfs import t1_backing

__all__ = ["ENV_DIR", "ENV_OWNER", "Alias", "HostStore", "ModelRecord", "StoreConfig", "StoreIndex"]

ENV_DIR = "TIDE_FLASHBOOT_DIR"
ENV_OWNER = "TIDE_FLASHBOOT_OWNER"  # recorded with every model the worker loads (noded: endpoint id)
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a header


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    shm_dir: str
    ram_budget: int  # bytes of T1 (sum of data sections held in shared memory)
    disk_budget: int  # bytes of T2 (sum of image files)
    read_threads: int = 4
    read_chunk_bytes: int = 16 << 20
    direct_io: bool = True


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    data_bytes: int
    image_bytes: int
    model_ids: tuple[str, ...] = ()
    last_used: float = 0.0
    # Who loaded it (noded passes the endpoint id in $TIDE_FLASHBOOT_OWNER): the placer prefers
    # this host for the next worker of those endpoints.
    owners: tuple[str, ...] = ()


class Alias(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    source_stamp: str = ""  # e.g. "path:size:mtime_ns"; a different stamp means the source changed


class StoreIndex(msgspec.Struct, frozen=True, kw_only=True):
    version: int = 1
    models: dict[str, ModelRecord] = {}
    aliases: dict[str, Alias] = {}


def tmpfs_tight(path: str, nbytes: int) -> bool:
    """Whether the filesystem under ``path`` has less than twice ``nbytes`` free (or is unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return True
    return st.f_bavail * st.f_frsize < 2 * nbytes


def _dir_bytes(path: str, suffixes: tuple[str, ...] = ()) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False) and (not suffixes or entry.name.endswith(suffixes)):
                total += entry.stat(follow_symlinks=False).st_size
    return total


class HostStore:
    """Process-safe access to one host's T1/T2 tiers.  All methods are synchronous file I/O.

    Safe to use from several processes and threads at once (flock); ``make_room`` and the demotions
    it triggers may write whole images and are slow, everything else is small metadata work.
    """

    def __init__(self, state_dir: str, config: StoreConfig, *, clock: Callable[[], float] = time.time):
        self.state_dir = state_dir
        self.config = config
        self.clock = clock
        self._index_codec = msgspec.json.Decoder(StoreIndex)
        self._t1_huge: bool | None = None

    @classmethod
    def open(cls, state_dir: str, *, clock: Callable[[], float] = time.time) -> HostStore:
        """Open a state directory the keeper created (worker side)."""
        try:
            with open(os.path.join(state_dir, "config.json"), "rb") as f:
                config = msgspec.json.decode(f.read(), type=StoreConfig)
        except FileNotFoundError as exc:
            raise FailedPrecondition(
                f"{state_dir}: no FlashBoot keeper state here (config.json missing)"
            ) from exc
        except msgspec.DecodeError as exc:
            raise InvalidArgument(f"{state_dir}/config.json: {exc}") from exc
        return cls(state_dir, config, clock=clock)

    def t1_huge_pages(self) -> bool:
        """Whether T1 sits on 2 MiB pages (read from the mount table once per store object)."""
        if self._t1_huge is None:
            self._t1_huge = t1_backing(self.config.shm_dir).huge_pages
        return self._t1_huge

    def create_dirs(self) -> None:
        for sub in ("images", "headers", "pins", "workers"):
            os.makedirs(os.path.join(self.state_dir, sub), exist_ok=True)
        os.makedirs(self.config.shm_dir, exist_ok=True)

    # ---- paths ----------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path under the state directory."""
        return os.path.join(self.state_dir, *parts)

    def t1_path(self, fp: str) -> str:
        return os.path.join(self.config.shm_dir, f"{check_fingerprint(fp)}.t1")

    def t2_path(self, fp: str) -> str:
        return self.path("images", f"{check_fingerprint(fp)}.safetensors")

    def pin_path(self, fp: str) -> str:
        return self.path("pins", f"{check_fingerprint(fp)}.pin")

    def fill_path(self, key: str) -> str:
        return self.path("pins", f"{key}.fill")

    @staticmethod
    def source_key(model_id: str) -> str:
        return "src-" + hashlib.sha256(model_id.encode()).hexdigest()[:24]

    # ---- index ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[None]:
        """The store's state lock; ``timeout`` bounds the wait (Unavailable after it)."""
        with exclusive(self.path("state.lock"), timeout=timeout):
            yield

    def read_index(self) -> StoreIndex:
        """The index, less any entry whose fingerprint is not one (workers can write this file)."""
        path = self.path("index.json")
        try:
            with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as f:
                idx = self._index_codec.decode(f.read())
        except FileNotFoundError:
            return StoreIndex()
        except msgspec.DecodeError as exc:
            raise InvalidArgument(f"{path}: not a FlashBoot index ({exc})") from exc
        models = {fp: m for fp, m in idx.models.items() if valid_fingerprint(fp) and m.fingerprint == fp}
        aliases = {k: a for k, a in idx.aliases.items() if valid_fingerprint(a.fingerprint)}
        if len(models) != len(idx.models) or len(aliases) != len(idx.aliases):
            return msgspec.structs.replace(idx, models=models, aliases=aliases)
        return idx

    def write_index(self, index: StoreIndex) -> None:
        write_file_atomic(self.path("index.json"), [msgspec.json.encode(index)], durable=False)

    def record(self, index: ImageIndex, *, model_id: str | None, stamp: str = "") -> None:
        """Record (or refresh) a model and, with ``model_id``, point that alias at it."""
        with self.locked():
            idx = self.read_index()
            old = idx.models.get(index.fingerprint)
            ids = set(old.model_ids if old else ())
            aliases = dict(idx.aliases)
            if model_id is not None:
                ids.add(model_id)
                aliases[model_id] = Alias(fingerprint=index.fingerprint, source_stamp=stamp)
            rec = ModelRecord(
                fingerprint=index.fingerprint,
                data_bytes=index.data_bytes,
                image_bytes=index.image_bytes,
                model_ids=tuple(sorted(ids)),
                last_used=self.clock(),
                owners=old.owners if old else (),
            )
            models = {**idx.models, index.fingerprint: rec}
            self.write_index(msgspec.structs.replace(idx, models=models, aliases=aliases))

    def add_owner(self, fp: str, owner: str) -> None:
        """Record that ``owner`` loaded the model (idempotent; a write only when it is new)."""
        rec = self.read_index().models.get(fp)
        if rec is None or owner in rec.owners:
            return
        with self.locked():
            idx = self.read_index()
            rec = idx.models.get(fp)
            if rec is None or owner in rec.owners:
                return
            rec = msgspec.structs.replace(rec, owners=tuple(sorted({*rec.owners, owner})))
            self.write_index(msgspec.structs.replace(idx, models={**idx.models, fp: rec}))

    def touch(self, fp: str) -> None:
        """Mark a model used now (LRU).  Sets the pin file's mtime: cheaper than rewriting the index."""
        now = self.clock()
        os.close(os.open(self.pin_path(fp), os.O_RDWR | os.O_CREAT, 0o666))
        os.utime(self.pin_path(fp), (now, now))

    def last_used(self, rec: ModelRecord) -> float:
        try:
            return max(rec.last_used, os.stat(self.pin_path(rec.fingerprint)).st_mtime)
        except FileNotFoundError:
            return rec.last_used

    def lookup(self, model_id: str, stamp: str) -> str | None:
        """The fingerprint held for ``model_id`` in T1 or T2, or None (unknown, stale stamp, or gone)."""
        alias = self.read_index().aliases.get(model_id)
        if alias is None or alias.source_stamp != stamp:
            return None
        fp = alias.fingerprint
        return fp if self.in_t1(fp) or self.in_t2(fp) else None

    def in_t1(self, fp: str) -> bool:
        return os.path.exists(self.t1_path(fp))

    def in_t2(self, fp: str) -> bool:
        return os.path.exists(self.t2_path(fp))

    # ---- headers, pins, maps --------------------------------------------------------------------
    def save_header(self, fp: str, header: bytes) -> None:
        path = self.path("headers", f"{fp}.hdr")
        if not os.path.exists(path):
            write_file_atomic(path, [header], durable=False)

    def header(self, fp: str) -> bytes:
        for path in (self.path("headers", f"{check_fingerprint(fp)}.hdr"), self.t2_path(fp)):
            with (
                contextlib.suppress(FileNotFoundError),
                os.fdopen(open_regular(path, os.O_RDONLY), "rb") as f,
            ):
                size = int.from_bytes(f.read(8), "little")
                if size > MAX_HEADER_BYTES:
                    raise InvalidArgument(f"{path}: a {size}-byte header is not a FlashBoot image's")
                return size.to_bytes(8, "little") + f.read(size)
        raise NotFound(f"model {fp}: no header on this host")

    def image_index(self, fp: str) -> ImageIndex:
        return parse_header(self.header(fp))

    def pin(self, fp: str) -> SharedLock:
        """Pin a model: while the lock is held no process evicts any of its tiers."""
        return SharedLock(self.pin_path(fp))

    def is_pinned(self, fp: str) -> bool:
        with try_exclusive(self.pin_path(fp)) as taken:
            return not taken

    def fill_lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive per-model fill lock: one process fills T1 while the others wait, then share it."""
        return exclusive(self.fill_path(key))

    def map_t1(self, fp: str) -> mmap.mmap | None:
        """Map the committed T1 copy shared (the caller holds the pin), or None if T1 lacks it."""
        try:
            fd = open_regular(self.t1_path(fp), os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            return mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)

    # ---- space ----------------------------------------------------------------------------------
    def ram_used(self) -> int:
        """Bytes of shared memory held: T1 copies, fills in progress and free (recycled) files."""
        return _dir_bytes(self.config.shm_dir, (".t1", ".t1.tmp", _pool.FREE_SUFFIX))

    def ram_free(self) -> int:
        return sum(size for _, size in _pool.free_files(self.config.shm_dir))

    def disk_used(self) -> int:
        return _dir_bytes(self.path("images"))

    def snapshot(self) -> list[ModelState]:
        """What the host holds, for the planner (the caller holds the state lock)."""
        idx = self.read_index()
        out = []
        for fp, rec in idx.models.items():
            in_t1, in_t2 = self.in_t1(fp), self.in_t2(fp)
            if in_t1 or in_t2:
                out.append(
                    ModelState(
                        fingerprint=fp,
                        data_bytes=rec.data_bytes,
                        image_bytes=rec.image_bytes,
                        in_t1=in_t1,
                        in_t2=in_t2,
                        pinned=self.is_pinned(fp),
                        last_used=self.last_used(rec),
                    )
                )
        return out

    def usage(self) -> StoreUsage:
        """What the store holds and the bytes it takes, for the planner (the caller holds the
        state lock)."""
        return StoreUsage(models=tuple(self.snapshot()), ram_used=self.ram_used(), disk_used=self.disk_used())

    def make_room(self, *, need_ram: int = 0, need_disk: int = 0) -> EvictionPlan:
        """Evict LRU unpinned copies until the budgets leave ``need_*`` bytes free.  Slow: may demote.

        Free (recycled) T1 memory goes first; evicted T1 copies become free memory in turn.
        """
        with self.locked():
            _pool.trim(self.config.shm_dir, self.ram_used() + need_ram - self.config.ram_budget)
            # Files the index does not know (fills in progress) still take room; free memory was trimmed.
            plan = plan_stores(
                [self.usage()],
                ram_budget=self.config.ram_budget,
                disk_budget=self.config.disk_budget,
                need_ram=need_ram,
                need_disk=need_disk,
            )
            for fp in plan.drop_t2:
                self.drop_copy(fp, self.t2_path(fp))
        for fp in plan.demote:
            self.demote(fp)
        with self.locked():
            for fp in plan.drop_t1:
                self.drop_copy(fp, self.t1_path(fp))
            self.forget_empty()
        return plan

    def drop_copy(self, fp: str, path: str) -> bool:
        """Delete one tier's copy unless a process pins the model (the caller holds the state lock).

        A T1 copy's pages are kept as free memory for the next fill.
        """
        with try_exclusive(self.pin_path(fp)) as taken:
            if taken and path.endswith(".t1"):
                _pool.recycle(path, self.config.shm_dir)
            elif taken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return taken

    def demote(self, fp: str) -> bool:
        """T1 -> T2: write the image from the shared copy, then free the RAM if nobody maps it.
        False when T1 lacks it or its pin file is locked exclusively (never waits for that)."""
        try:
            pin = SharedLock(self.pin_path(fp), blocking=False)
        except BlockingIOError:
            return False
        with pin:
            data = self.map_t1(fp)
            if data is None:
                return False
            try:
                if not self.in_t2(fp):
                    write_file_atomic(self.t2_path(fp), [self.header(fp), memoryview(data)])
            finally:
                data.close()
        with self.locked():
            return self.drop_copy(fp, self.t1_path(fp))

    def reserve_t1(self, key: str, nbytes: int) -> T1Segment | None:
        """Reserve ``nbytes`` of T1 for a fill (the caller holds ``fill_lock(key)``); None when full."""
        for attempt in range(2):
            with self.locked():
                seg = self._reserve_locked(key, nbytes)
            if seg is not None or attempt or not self.make_room(need_ram=nbytes).ram_fits:
                return seg
        return None

    def _reserve_locked(self, key: str, nbytes: int) -> T1Segment | None:
        shm = self.config.shm_dir
        os.makedirs(shm, exist_ok=True)  # /dev/shm is empty after a reboot
        free = _pool.best_fit(shm, nbytes)
        credit = free[1] if free is not None else 0
        excess = self.ram_used() - credit + nbytes - self.config.ram_budget
        if excess > 0:
            _pool.trim(shm, excess, keep=free[0] if free is not None else None)
        if self.ram_used() - credit + nbytes > self.config.ram_budget:
            return None
        tmp = os.path.join(shm, f"{key}.t1.tmp")
        if free is not None:
            _pool.take(free, tmp, nbytes)  # recycled pages: no allocation or zeroing on this path
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            if tmpfs_tight(shm, nbytes):
                # Allocate every page now: a full tmpfs fails here with ENOSPC, where a write
                # through the mapping would kill the process with SIGBUS.  Only when room is
                # tight: on 4 KiB pages this costs ~0.2 s/GiB that the readers otherwise overlap.
                os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            os.unlink(tmp)
            if exc.errno != errno.ENOSPC:
                raise
            self.note_want(nbytes)  # the keeper makes room across stores on its next pass
            return None  # no room in RAM after all: the caller fills private memory instead
        finally:
            os.close(fd)
        return T1Segment(tmp, nbytes)

    def publish_t1(
        self, seg: T1Segment, index: ImageIndex, header: bytes, *, model_id: str | None, stamp: str
    ) -> None:
        """Publish a filled segment as ``<fp>.t1``; the caller already pins ``index.fingerprint``."""
        self.save_header(index.fingerprint, header)
        target = self.t1_path(index.fingerprint)
        if os.path.exists(target):  # identical bytes published by someone else: keep theirs
            os.unlink(seg.tmp_path)
        else:
            os.replace(seg.tmp_path, target)
        self.record(index, model_id=model_id, stamp=stamp)

    def note_want(self, nbytes: int) -> None:
        """Tell the keeper a fill found no room in the T1 tmpfs (``want.json``; best effort)."""
        with contextlib.suppress(OSError):
            body = msgspec.json.encode(Want(nbytes=nbytes, at=self.clock()))
            write_file_atomic(self.path(WANT_FILE), [body], durable=False)

    def write_t2(
        self, index: ImageIndex, header: bytes, data: memoryview, *, model_id: str | None, stamp: str
    ) -> bool:
        """Write an image straight to T2 (no T1 room); False when the disk budget cannot fit it."""
        if not self.make_room(need_disk=index.image_bytes).disk_fits:
            return False
        self.save_header(index.fingerprint, header)
        write_file_atomic(self.t2_path(index.fingerprint), [header, data[: index.data_bytes]])
        self.record(index, model_id=model_id, stamp=stamp)
        return True

    # ---- repair ---------------------------------------------------------------------------------
    def forget_empty(self) -> None:
        """Drop records and aliases of models no tier holds (the caller holds the state lock)."""
        idx = self.read_index()
        models = {fp: r for fp, r in idx.models.items() if self.in_t1(fp) or self.in_t2(fp)}
        if len(models) == len(idx.models):
            return
        aliases = {m: a for m, a in idx.aliases.items() if a.fingerprint in models}
        for fp in set(idx.models) - set(models):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path("headers", f"{fp}.hdr"))
        self.write_index(StoreIndex(models=models, aliases=aliases))
