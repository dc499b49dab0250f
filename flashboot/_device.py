"""T0: device memory, one flat uint8 buffer per model with parameters as views.  Imports torch.

Copies always move large slices of the flat buffer (``COPY_CHUNK``), never tensor by tensor.  On
CUDA they are ``copy_(non_blocking=True)`` on a side stream from host memory registered with
``cudaHostRegister`` (pinned), so they run on the copy engine at link rate; on CPU a "device" buffer
is host memory and T1 is mapped copy-on-write instead of copied (zero-copy restore).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Any

import torch

from ._image import iter_chunks

__all__ = [
    "COPY_CHUNK",
    "ChunkCopier",
    "anon_map",
    "copy_all",
    "host_tensor",
    "private_map",
    "register_host",
    "resolve_device",
    "unregister_host",
]

COPY_CHUNK = 64 << 20
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


def private_map(path: str, nbytes: int, *, populate: bool = True) -> mmap.mmap:
    """Map a T1 file copy-on-write: reads share the T1 pages, writes stay private.

    ``populate`` prefaults the whole mapping now (the restore pays for its page tables, not the
    caller's first touch); without it pages fault in on first touch.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    if populate:
        with contextlib.suppress(OSError):  # older kernels: pages fault in on first touch instead
            m.madvise(_MADV_POPULATE_READ)
    return m


def _cuda_rc(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


def register_host(t: torch.Tensor) -> bool:
    """Page-lock host memory for async DMA (exact size, unlike pin_memory's power-of-two blocks)."""
    if not torch.cuda.is_available() or t.numel() == 0:
        return False
    rc = torch.cuda.cudart().cudaHostRegister(  # type: ignore[no-untyped-call]
        t.data_ptr(), t.numel(), 0
    )
    return _cuda_rc(rc) == 0


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


def copy_all(dst: torch.Tensor, src: torch.Tensor, *, chunk: int = COPY_CHUNK) -> None:
    """Copy a whole flat buffer in ``chunk``-sized slices and wait for completion."""
    copier = ChunkCopier(dst, src)
    for a, b in iter_chunks(src.numel(), chunk):
        copier.submit(a, b)
    copier.finish()
