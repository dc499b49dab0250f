"""T0: device memory, one flat uint8 buffer per model with parameters as views.  Imports torch.

Copies always move large slices of the flat buffer (``COPY_CHUNK``), never tensor by tensor.  On
CUDA they are ``copy_(non_blocking=True)`` on a side stream from pinned host memory, so they run on
the copy engine at link rate.  Two ways to get there (``host_copy_mode``):

- ``register``: ``cudaHostRegister`` the whole T1 mapping, then DMA straight out of it.  No CPU
  copy, but pinning costs time per restore (per page: cheap on a 2 MiB-page T1, costly on 4 KiB);
- ``ring``: a few pinned staging slots allocated once per process (``PinnedRing``); CPU threads copy
  T1 into a slot while the previous slot's DMA runs (``StagedCopier``).  Bounded setup, but the
  CPU copy must keep up with the link.

``auto`` picks ``register`` on a huge-page T1 and ``ring`` otherwise; ``$TIDE_FLASHBOOT_HOST_COPY``
overrides it (bench/flashboot.py --device cuda measures both).  On CPU a "device" buffer is host
memory and T1 is mapped copy-on-write instead of copied (zero-copy restore).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
from typing import Any

import torch

from .._image import iter_chunks

__all__ = [
    "COPY_CHUNK",
    "ENV_HOST_COPY",
    "ChunkCopier",
    "PinnedRing",
    "StagedCopier",
    "anon_map",
    "copy_all",
    "host_copy_mode",
    "host_tensor",
    "private_map",
    "register_host",
    "resolve_device",
    "unregister_host",
]

log = logging.getLogger("tide.flashboot")

COPY_CHUNK = 64 << 20
ENV_HOST_COPY = "TIDE_FLASHBOOT_HOST_COPY"  # auto | register | ring
RING_SLOTS = 4
RING_SLOT_BYTES = 64 << 20
_MADV_POPULATE_READ = 22  # Linux >= 5.14: prefault page tables without copying


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def host_tensor(buf: mmap.mmap) -> torch.Tensor:
    """A uint8 tensor over a writable mapping (zero copy; keeps the mapping alive)."""
    return torch.frombuffer(buf, dtype=torch.uint8)


def anon_map(nbytes: int) -> mmap.mmap:
    """Private page-aligned host memory (a transient T1 when the RAM budget has no room)."""
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def private_map(path: str, nbytes: int) -> mmap.mmap:
    """Map a T1 file copy-on-write and prefault it: reads share the T1 pages, writes stay private."""
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # older kernels: pages fault in on first touch instead
        m.madvise(_MADV_POPULATE_READ)
    return m


def _cuda_rc(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


def register_host(t: torch.Tensor) -> bool:
    """Page-lock host memory for async DMA (exact size, unlike pin_memory's power-of-two blocks).

    On failure the CUDA runtime keeps the error as this thread's last error, and torch checks
    that after its next kernel launch: it would fail an unrelated kernel.  So it is cleared here.
    """
    if not torch.cuda.is_available() or t.numel() == 0:
        return False
    rc = torch.cuda.cudart().cudaHostRegister(  # type: ignore[no-untyped-call]
        t.data_ptr(), t.numel(), 0
    )
    if _cuda_rc(rc) == 0:
        return True
    log.warning(
        "cudaHostRegister of %d bytes failed (cudaError %d): copying through the ring",
        t.numel(),
        _cuda_rc(rc),
    )
    _clear_last_cuda_error()
    return False


def _clear_last_cuda_error() -> None:
    """``cudaGetLastError()`` in the CUDA runtime torch loaded (torch's binding lacks it)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        lib.cudaGetLastError()
        return
    log.warning("could not reach the CUDA runtime to clear a failed cudaHostRegister's error")


def unregister_host(t: torch.Tensor) -> None:
    if torch.cuda.is_available():
        torch.cuda.cudart().cudaHostUnregister(t.data_ptr())  # type: ignore[no-untyped-call]


class ChunkCopier:
    """Copies ``[a, b)`` slices of ``src`` into ``dst`` (same length, any devices).

    CUDA: each ``submit`` enqueues an async copy on a side stream and returns at once, so a caller
    can overlap it with the next disk read; ``finish`` waits.  CPU: ``submit`` copies inline (torch
    already spreads one large copy over its intra-op threads).
    """

    def __init__(self, dst: torch.Tensor, src: torch.Tensor):
        self.dst = dst
        self.src = src
        cuda = dst.device if dst.device.type == "cuda" else src.device if src.device.type == "cuda" else None
        self._stream: torch.cuda.Stream | None = None
        if cuda is not None:
            self._stream = torch.cuda.Stream(device=cuda)  # type: ignore[no-untyped-call]
            # The buffers were allocated on the current stream: order the side stream after it.
            self._stream.wait_stream(torch.cuda.current_stream(cuda))

    def submit(self, a: int, b: int) -> None:
        if self._stream is None:
            self.dst[a:b].copy_(self.src[a:b])
            return
        with torch.cuda.stream(self._stream):
            self.dst[a:b].copy_(self.src[a:b], non_blocking=True)

    def finish(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
            torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)


def host_copy_mode(t1_huge_pages: bool) -> str:
    """``register`` or ``ring`` for host -> CUDA copies out of T1 (see the module docstring)."""
    mode = os.environ.get(ENV_HOST_COPY, "auto")
    if mode in ("register", "ring"):
        return mode
    return "register" if t1_huge_pages else "ring"


class PinnedRing:
    """``slots`` page-locked staging buffers of ``slot_bytes``, allocated once per process and
    reused by every restore (allocating pinned memory per restore costs ~1-3 GB/s of setup).
    ``pinned=False`` gives plain buffers (CPU tests of the staging logic)."""

    _shared: PinnedRing | None = None

    def __init__(self, *, slots: int = RING_SLOTS, slot_bytes: int = RING_SLOT_BYTES, pinned: bool = True):
        self.slot_bytes = slot_bytes
        self.slots = [torch.empty(slot_bytes, dtype=torch.uint8, pin_memory=pinned) for _ in range(slots)]

    @classmethod
    def shared(cls) -> PinnedRing:
        """This process's ring (pinned when CUDA is available); built on first use."""
        if cls._shared is None:
            cls._shared = cls(pinned=torch.cuda.is_available())
        return cls._shared

    @classmethod
    def built(cls) -> bool:
        """Whether this process's ring exists yet (building it costs pinned allocations)."""
        return cls._shared is not None


class StagedCopier:
    """``ChunkCopier``'s interface for a source that is not page-locked: each slice goes through a
    ring slot (a CPU copy, spread over torch's intra-op threads), then to ``dst`` (CUDA: async on
    a side stream, the slot reused once its copy's event completed), so the CPU copy of one slot
    overlaps the DMA of the previous one.  Slices larger than a slot are split.
    """

    def __init__(self, dst: torch.Tensor, src: torch.Tensor, ring: PinnedRing):
        self.dst = dst
        self.src = src
        self.ring = ring
        self._next = 0
        self._events: list[Any] = [None] * len(ring.slots)
        self._stream: torch.cuda.Stream | None = None
        if dst.device.type == "cuda":
            self._stream = torch.cuda.Stream(device=dst.device)  # type: ignore[no-untyped-call]
            self._stream.wait_stream(torch.cuda.current_stream(dst.device))

    def submit(self, a: int, b: int) -> None:
        for x, y in iter_chunks(b - a, self.ring.slot_bytes):
            self._one(a + x, a + y)

    def _one(self, a: int, b: int) -> None:
        k = self._next
        self._next = (k + 1) % len(self.ring.slots)
        if self._events[k] is not None:
            self._events[k].synchronize()  # the slot's previous DMA is done: it may be refilled
        slot = self.ring.slots[k][: b - a]
        slot.copy_(self.src[a:b])
        if self._stream is None:
            self.dst[a:b].copy_(slot)
            return
        with torch.cuda.stream(self._stream):
            self.dst[a:b].copy_(slot, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(self._stream)
        self._events[k] = event

    def finish(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
            torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)
        self._events = [None] * len(self._events)


def copy_all(
    dst: torch.Tensor, src: torch.Tensor, *, chunk: int = COPY_CHUNK, ring: PinnedRing | None = None
) -> None:
    """Copy a whole flat buffer in ``chunk``-sized slices and wait for completion; through
    ``ring`` when ``src`` is host memory that is not page-locked."""
    copier: ChunkCopier | StagedCopier = (
        ChunkCopier(dst, src) if ring is None else StagedCopier(dst, src, ring)
    )
    for a, b in iter_chunks(src.numel(), chunk):
        copier.submit(a, b)
    copier.finish()
