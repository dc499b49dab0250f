"""Worker-side restore: find the nearest tier holding a model and build T0 from it.  Imports torch.

    T1 (shared RAM)  --map + H2D-------------------------------> T0
    T2 (disk image)  --O_DIRECT reads into a T1 segment --H2D per chunk, pipelined--> T0
    source           --pack into a T1 segment (hash, header)--> T1 --> T0

The T1 segment a restore fills is published for the next worker (when the RAM budget has room;
otherwise a private buffer stands in and, for a source load, the image goes straight to T2).
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tide.api.errors import InvalidArgument, ResourceExhausted, Unavailable

from .._image import ImageIndex, read_index
from .._io import ChunkReader
from .._locks import SharedLock
from .._segment import T1Segment
from .._source import paths_of as _paths
from .._source import source_stamp
from .._store import HostStore
from ._device import (
    ChunkCopier,
    PinnedRing,
    StagedCopier,
    anon_map,
    copy_all,
    host_copy_mode,
    host_tensor,
    private_map,
    register_host,
)
from ._stats import Source, StageRecorder
from ._torch_bytes import views_of
from ._writer import BufferSink, TensorSource, describe_safetensors, describe_tensors, pack, seal

__all__ = ["Loaded", "Restored", "load_plain", "restore", "source_stamp"]

log = logging.getLogger("tide.flashboot")

SourceArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Callable[[], Mapping[str, Any]]


@dataclass(eq=False)
class Loaded:
    """A model this process holds: its flat T0 buffer, the views handed out, and its host backing."""

    model_id: str
    fingerprint: str
    device: torch.device
    index: ImageIndex
    flat: torch.Tensor
    tensors: dict[str, torch.Tensor]
    host: torch.Tensor | None = None  # CUDA: the registered T1 (or private) host copy kept for page-in
    registered: bool = False
    pin: SharedLock | None = None  # CUDA pins for the model's lifetime; CPU ties the pin to its mapping
    in_t1: bool = True  # False: bytes live only in this process (private buffer)
    resident: bool = True
    header: bytes = b""  # the image header, to publish these bytes to T1/T2 later
    keepalive: object = None  # the T1 fill mapping: unmapping it would cost time on the restore path


@dataclass
class Restored:
    loaded: Loaded
    tier: Source
    direct_io: bool | None = None


def _state_dict(source: object) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if callable(source):
        result = source()
        if not isinstance(result, Mapping):
            raise InvalidArgument(f"the source callable returned {type(result)}, not a state dict")
        return result
    raise InvalidArgument(
        "source must be a safetensors path, a list of paths, or a callable returning tensors"
    )


def load_plain(source: object, device: torch.device) -> dict[str, torch.Tensor]:
    """No keeper: load straight from the source."""
    paths = _paths(source)
    if paths is not None:
        from safetensors.torch import load_file

        out: dict[str, torch.Tensor] = {}
        for p in paths:
            out.update(load_file(p, device=str(device)))
        return {k: v for k, v in out.items() if not k.startswith("__pad_")}
    return {k: v.to(device) for k, v in _state_dict(source).items()}


def _describe(source: object, fds: dict[str, int]) -> tuple[list[TensorSource], dict[str, str]]:
    paths = _paths(source)
    if paths is not None:
        return describe_safetensors(paths, fds)
    return describe_tensors(_state_dict(source)), {}


def _lookup_pinned(store: HostStore, model_id: str, stamp: str) -> tuple[str, SharedLock] | None:
    fp = store.lookup(model_id, stamp)
    if fp is None:
        return None
    pin = store.pin(fp)  # pin first, then look: a pinned model's files cannot vanish
    if store.in_t1(fp) or store.in_t2(fp):
        return fp, pin
    pin.close()
    return None


def restore(
    store: HostStore, model_id: str, source: object, device: torch.device, rec: StageRecorder
) -> Restored:
    """Restore from the nearest tier; the result holds a pin on the model until released."""
    restored = _restore(store, model_id, source, device, rec)
    if not restored.loaded.header:
        restored.loaded.header = store.header(restored.loaded.fingerprint)
    return restored


def _restore(
    store: HostStore, model_id: str, source: object, device: torch.device, rec: StageRecorder
) -> Restored:
    stamp = source_stamp(source)
    with rec.stage("lookup", "-"):
        hit = _lookup_pinned(store, model_id, stamp)
    if hit is None:
        with store.fill_lock(store.source_key(model_id)):
            hit = _lookup_pinned(store, model_id, stamp)  # built by another worker while we waited?
            if hit is None:
                return _from_source(store, model_id, source, stamp, device, rec)
    fp, pin = hit
    try:
        if not store.in_t1(fp):
            with store.fill_lock(fp):  # one process fills T1 from T2; the others wait and share it
                if not store.in_t1(fp):
                    return _from_t2(store, model_id, stamp, fp, pin, device, rec)
        store.touch(fp)
        return Restored(loaded=_from_t1(store, model_id, fp, pin, device, rec, "t1"), tier="t1")
    except BaseException:
        pin.close()
        raise


def _cpu_view(m: mmap.mmap, pin: SharedLock | None) -> torch.Tensor:
    flat = host_tensor(m)
    if pin is not None:
        weakref.finalize(m, pin.close)  # the pin lasts exactly as long as the mapping
    return flat


def _from_t1(
    store: HostStore,
    model_id: str,
    fp: str,
    pin: SharedLock,
    device: torch.device,
    rec: StageRecorder,
    tier: str,
) -> Loaded:
    index = store.image_index(fp)
    n = index.data_bytes
    if device.type == "cpu":
        with rec.stage("t1->t0", tier, n):
            flat = _cpu_view(private_map(store.t1_path(fp), n), pin)
            tensors = views_of(flat, index.tensors)
        return Loaded(
            model_id=model_id, fingerprint=fp, device=device, index=index, flat=flat, tensors=tensors
        )
    shared = store.map_t1(fp)
    assert shared is not None  # we hold the pin, so the copy cannot have been evicted
    host = host_tensor(shared)
    registered, ring = _pin_or_ring(store, host, rec)
    flat = torch.empty(n, dtype=torch.uint8, device=device)
    with rec.stage("t1->t0", "t1", n):
        copy_all(flat, host, ring=ring)
        tensors = views_of(flat, index.tensors)
    return Loaded(
        model_id=model_id,
        fingerprint=fp,
        device=device,
        index=index,
        flat=flat,
        tensors=tensors,
        host=host,
        registered=registered,
        pin=pin,
    )


def _pin_or_ring(
    store: HostStore, host: torch.Tensor, rec: StageRecorder, *, in_t1: bool = True
) -> tuple[bool, PinnedRing | None]:
    """CUDA: page-lock ``host`` (register mode), else, or when that fails, this process's ring.
    ``in_t1``: ``host`` maps a T1 file (else private memory, on 4 KiB pages whatever T1 uses)."""
    if host_copy_mode(in_t1 and store.t1_huge_pages()) == "register":
        with rec.stage("pin", "t1", host.numel()):
            if register_host(host):
                return True, None
    return False, _ring(rec)


def _ring(rec: StageRecorder) -> PinnedRing:
    if not PinnedRing.built():
        with rec.stage("ring", "-"):  # once per process: pinned staging slots
            return PinnedRing.shared()
    return PinnedRing.shared()


def _fill_target(
    store: HostStore, key: str, nbytes: int, rec: StageRecorder
) -> tuple[T1Segment | None, mmap.mmap]:
    with rec.stage("reserve", "-"):
        seg = store.reserve_t1(key, nbytes)
    return seg, (seg.map if seg is not None else anon_map(nbytes))


def _from_t2(
    store: HostStore,
    model_id: str,
    stamp: str,
    fp: str,
    pin: SharedLock,
    device: torch.device,
    rec: StageRecorder,
) -> Restored:
    """T2 -> T1 -> T0.  CUDA: pipelined chunk by chunk (each chunk that lands in T1 goes on to T0
    at once, an async H2D copy).  CPU: T0 maps the published T1 copy-on-write, prefaulted (on
    /dev/shm faulting it in later, page by page, cost several times more)."""
    path = store.t2_path(fp)
    index = read_index(path)
    n = index.data_bytes
    seg, buf = _fill_target(store, fp, n, rec)
    cuda = device.type == "cuda"
    registered, ring = False, None
    host = host_tensor(buf) if cuda else None
    flat = torch.empty(n, dtype=torch.uint8, device=device) if cuda else None
    if host is not None:
        registered, ring = _pin_or_ring(store, host, rec, in_t1=seg is not None)
    copier: ChunkCopier | StagedCopier | None = None
    if flat is not None and host is not None:
        copier = ChunkCopier(flat, host) if ring is None else StagedCopier(flat, host, ring)
    on_chunk = copier.submit if copier is not None else None
    cfg = store.config
    try:
        with (
            ChunkReader(path, threads=cfg.read_threads, direct=cfg.direct_io) as reader,
            memoryview(buf) as view,
            rec.stage("t2->t1->t0", "t2", n),
        ):
            result = reader.read_into(
                view, index.data_offset, chunk_bytes=cfg.read_chunk_bytes, on_chunk=on_chunk
            )
            if copier is not None:
                copier.finish()
    except BaseException:
        if seg is not None:
            seg.abort()
        raise
    if seg is not None:
        store.publish_t1(seg, index, store.header(fp), model_id=model_id, stamp=stamp)
    else:
        store.touch(fp)
    if not cuda and seg is not None:  # T0 on CPU: the published T1 copy, mapped copy-on-write
        loaded = _from_t1(store, model_id, fp, pin, device, rec, "t2")
        loaded.keepalive = buf  # unmapping the fill now would cost time on the restore path
        return Restored(loaded=loaded, tier="t2", direct_io=result.direct)
    flat = flat if flat is not None else _cpu_view(buf, pin)  # CPU without T1 room: private bytes
    loaded = Loaded(
        model_id=model_id,
        fingerprint=fp,
        device=device,
        index=index,
        flat=flat,
        tensors=views_of(flat, index.tensors),
        host=host,
        registered=registered,
        pin=pin if cuda else None,  # CPU: the pin lasts as long as the mapping (_cpu_view)
        in_t1=seg is not None,
    )
    return Restored(loaded=loaded, tier="t2", direct_io=result.direct)


def _from_source(
    store: HostStore, model_id: str, source: object, stamp: str, device: torch.device, rec: StageRecorder
) -> Restored:
    fds: dict[str, int] = {}
    try:
        with rec.stage("source", "source"):
            sources, metadata = _describe(source, fds)
            layout = pack(sources, None)
        n = layout.data_bytes
        seg, buf = _fill_target(store, store.source_key(model_id), n, rec)
        try:
            with memoryview(buf) as view:
                sink = BufferSink(view)
                with rec.stage("pack", "source", n):
                    pack(sources, sink)
                with rec.stage("hash", "t1", n):
                    header, index = seal(layout, sink, metadata=metadata)
        except BaseException:
            if seg is not None:
                seg.abort()
            raise
    finally:
        for fd in fds.values():
            os.close(fd)
    pin = store.pin(index.fingerprint)
    store.save_header(index.fingerprint, header)
    if seg is not None:
        store.publish_t1(seg, index, header, model_id=model_id, stamp=stamp)
        loaded = _from_t1(store, model_id, index.fingerprint, pin, device, rec, "source")
        loaded.keepalive = buf
        return Restored(loaded=loaded, tier="source")
    loaded = _private_t0(index, buf, pin, model_id, device, rec)
    loaded.header = header
    try:  # no T1 room: keep it on disk for the next worker, if the disk takes it
        with rec.stage("t1->t2", "t1", index.image_bytes), memoryview(buf) as view:
            store.write_t2(index, header, view, model_id=model_id, stamp=stamp)
    except (ResourceExhausted, Unavailable) as exc:
        log.warning("model %r stays in this process only: %s", model_id, exc)
    return Restored(loaded=loaded, tier="source")


def _private_t0(
    index: ImageIndex,
    buf: mmap.mmap,
    pin: SharedLock,
    model_id: str,
    device: torch.device,
    rec: StageRecorder,
) -> Loaded:
    """T0 from a private host buffer (no T1 room)."""
    fp = index.fingerprint
    if device.type == "cpu":
        flat = _cpu_view(buf, pin)
        return Loaded(
            model_id=model_id,
            fingerprint=fp,
            device=device,
            index=index,
            flat=flat,
            tensors=views_of(flat, index.tensors),
            in_t1=False,
        )
    host = host_tensor(buf)
    flat = torch.empty(index.data_bytes, dtype=torch.uint8, device=device)
    with rec.stage("t1->t0", "t1", index.data_bytes):
        copy_all(flat, host, ring=_ring(rec))
    return Loaded(
        model_id=model_id,
        fingerprint=fp,
        device=device,
        index=index,
        flat=flat,
        tensors=views_of(flat, index.tensors),
        host=host,
        pin=pin,
        in_t1=False,
    )
