"""Disk I/O for the T2 tier: parallel O_DIRECT reads into aligned buffers, atomic image writes.

Reads bypass the page cache with ``O_DIRECT`` (the bytes go straight into the T1 buffer, so caching
them again would only double the RAM they use).  Filesystems that refuse ``O_DIRECT`` (EINVAL at
open or at the first read: overlayfs, some tmpfs and FUSE mounts) get buffered reads instead; the
result says which path ran.  ``os.preadv`` releases the GIL, so a thread pool gives real queue depth.

Never imports torch.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import msgspec

from tide.api.errors import Internal, InvalidArgument, NotFound, ResourceExhausted, Unavailable

from ._image import iter_chunks

__all__ = [
    "DEFAULT_READ_CHUNK",
    "ChunkReader",
    "ReadResult",
    "drop_page_cache",
    "open_for_read",
    "pread_full",
    "write_file_atomic",
]

DEFAULT_READ_CHUNK = 16 << 20
_DIRECT_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)

Opener = Callable[[str, int], int]


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide reader pool per width: starting threads on every restore costs milliseconds."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="flashboot-read"
            )
        return pool


class ReadResult(msgspec.Struct, frozen=True, kw_only=True):
    nbytes: int
    seconds: float
    direct: bool  # False when any chunk fell back to buffered reads


def _default_opener(path: str, flags: int) -> int:
    return os.open(path, flags)


def open_for_read(path: str, *, direct: bool = True, opener: Opener = _default_opener) -> tuple[int, bool]:
    """Open ``path`` with O_DIRECT when asked and supported; returns ``(fd, is_direct)``."""
    try:
        if direct and hasattr(os, "O_DIRECT"):
            try:
                return opener(path, os.O_RDONLY | os.O_DIRECT), True
            except OSError as exc:
                if exc.errno not in _DIRECT_REFUSED:
                    raise
        return opener(path, os.O_RDONLY), False
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such file") from exc
    except OSError as exc:
        raise Unavailable(f"{path}: cannot open for reading: {exc}") from exc


def pread_full(fd: int, dst: memoryview, offset: int) -> None:
    """Fill ``dst`` from ``fd`` at ``offset``; a short file is an error (the image was truncated)."""
    done = 0
    while done < len(dst):
        n = os.preadv(fd, [dst[done:]], offset + done)
        if n == 0:
            raise Internal(f"short read at offset {offset + done}: the file is shorter than its header says")
        done += n


class ChunkReader:
    """Reads ranges of one file into page-aligned buffers with ``threads`` parallel preadv calls.

    Not safe to share between threads for concurrent ``read_into`` calls; make one per restore.
    """

    def __init__(self, path: str, *, threads: int = 4, direct: bool = True, opener: Opener = _default_opener):
        self._path = path
        self._threads = max(1, threads)
        self._opener = opener
        self._fd, self._direct = open_for_read(path, direct=direct, opener=opener)
        self._buffered_fd: int | None = None if self._direct else self._fd
        self._lock = threading.Lock()
        self.used_buffered = not self._direct

    def close(self) -> None:
        for fd in {self._fd, self._buffered_fd}:
            if fd is not None:
                os.close(fd)
        self._buffered_fd = None

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fallback_fd(self) -> int:
        with self._lock:
            if self._buffered_fd is None:
                self._buffered_fd, _ = open_for_read(self._path, direct=False, opener=self._opener)
            self.used_buffered = True
            return self._buffered_fd

    def _read_chunk(self, dst: memoryview, offset: int) -> None:
        fd = self._buffered_fd if self.used_buffered and self._buffered_fd is not None else self._fd
        try:
            pread_full(fd, dst, offset)
        except OSError as exc:
            if not (self._direct and exc.errno in _DIRECT_REFUSED):
                raise Unavailable(f"{self._path}: read failed at {offset}: {exc}") from exc
            pread_full(self._fallback_fd(), dst, offset)  # this filesystem refuses O_DIRECT reads

    def read_into(
        self,
        dst: memoryview,
        file_offset: int,
        *,
        chunk_bytes: int = DEFAULT_READ_CHUNK,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> ReadResult:
        """Read ``len(dst)`` bytes from ``file_offset`` into ``dst``.

        ``on_chunk(start, end)`` runs on the calling thread as each chunk of ``dst`` lands (in
        completion order), so a caller can start copying a chunk onward while others are read.
        """
        if chunk_bytes % 4096:
            raise InvalidArgument("chunk_bytes must be a multiple of 4096")
        started = time.perf_counter()
        pool = _pool(self._threads)
        pending: dict[Future[None], tuple[int, int]] = {
            pool.submit(self._read_chunk, dst[a:b], file_offset + a): (a, b)
            for a, b in iter_chunks(len(dst), chunk_bytes)
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    a, b = pending.pop(fut)
                    fut.result()
                    if on_chunk is not None:
                        on_chunk(a, b)
        finally:
            for fut in pending:
                fut.cancel()
            wait(pending)  # no read may still write into dst once we return
        return ReadResult(
            nbytes=len(dst), seconds=time.perf_counter() - started, direct=not self.used_buffered
        )


def drop_page_cache(path: str) -> None:
    """Ask the kernel to evict a file's clean pages (a cold read without root)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    step = 64 << 20
    done = 0
    while done < len(data):
        done += os.write(fd, data[done : done + step])


def write_file_atomic(path: str, parts: Sequence[memoryview | bytes], *, durable: bool = True) -> int:
    """Write ``parts`` back to back to ``path`` via a temp file and a rename; returns bytes written.

    Readers see either no file or the whole file.  ``durable`` (images) also fsyncs the file and its
    directory and evicts the written pages, since an image is read back with O_DIRECT and caching
    it only costs RAM.  Small metadata (index, registrations) skips both: it is rebuilt on repair.
    """
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    total = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for part in parts:
                view = part if isinstance(part, memoryview) else memoryview(part)
                _write_all(fd, view.cast("B"))
                total += view.nbytes
            if durable:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if exc.errno == errno.ENOSPC:
            raise ResourceExhausted(f"{path}: no space left to write the image") from exc
        raise Unavailable(f"{path}: write failed: {exc}") from exc
    return total


def _fsync_dir(path: str) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
