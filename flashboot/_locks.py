"""flock-based locks: the only synchronisation between the keeper and worker processes.

flock locks belong to an open file description and vanish when the process holding them dies, so a
crashed worker can never leave a model pinned or a fill half-claimed.  They also work across mount
namespaces (a worker in a container and noded on the host lock the same inode).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from tide.api.errors import Unavailable

__all__ = ["SharedLock", "exclusive", "try_exclusive"]


def _open_lock_file(path: str, *, create: bool = True) -> int:
    try:
        return os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
    except OSError as exc:
        raise Unavailable(f"{path}: cannot open lock file: {exc}") from exc


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


def _lock(path: str, mode: int, *, create: bool = True) -> int:
    """Open and flock ``path``; retries when a remover unlinked the file between our open and lock."""
    while True:
        fd = _open_lock_file(path, create=create)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


class SharedLock:
    """A shared (reader) flock held until ``close()``; many processes may hold one at once.
    ``blocking=False`` raises BlockingIOError instead of waiting for an exclusive holder."""

    def __init__(self, path: str, *, blocking: bool = True):
        self.path = path
        self._fd: int | None = _lock(path, fcntl.LOCK_SH | (0 if blocking else fcntl.LOCK_NB))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description releases the flock
            self._fd = None

    def __enter__(self) -> SharedLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def exclusive(path: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block: waits until it is free, or at most
    ``timeout`` seconds (then Unavailable: another process holds it)."""
    fd = _lock(path, fcntl.LOCK_EX) if timeout is None else _lock_within(path, timeout)
    try:
        yield
    finally:
        os.close(fd)


def _lock_within(path: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Unavailable(f"{path}: still locked by another process after {timeout:g} s") from None
            time.sleep(0.01)


@contextlib.contextmanager
def try_exclusive(path: str, *, unlink: bool = False) -> Iterator[bool]:
    """Try an exclusive flock without blocking; yields whether it was taken.

    A missing lock file counts as free and is not created: nobody holds it, and whoever locks it
    next checks the state it guards only after locking.  With ``unlink`` the lock file is removed
    while still held, so nobody can lock the old inode afterwards (``_lock`` notices and retries).
    """
    try:
        fd = _lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
    except BlockingIOError:
        yield False
        return
    except Unavailable as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise
        yield True
        return
    try:
        yield True
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)
