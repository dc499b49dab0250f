"""Recycled T1 memory: an evicted T1 copy becomes a free file whose pages the next fill reuses.

Filling fresh shared memory costs an allocation and a zeroing per page on the restore path (about
a fifth of a cold T2 restore on our test machine); reusing pages a previous copy left behind costs
neither.  Free files count against the RAM budget like T1 copies and are the first thing trimmed
when room is needed.  A reused file is overwritten in full (the fill covers the whole data section
and ``ftruncate`` cuts the rest), so no byte of an earlier model survives into a new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["FREE_SUFFIX", "best_fit", "free_files", "preallocate", "recycle", "take", "trim"]

FREE_SUFFIX = ".t1free"


def free_files(shm_dir: str) -> list[tuple[str, int]]:
    """``(path, size)`` of every free file, smallest first."""
    out = []
    with contextlib.suppress(FileNotFoundError), os.scandir(shm_dir) as it:
        out = [
            (e.path, e.stat(follow_symlinks=False).st_size)
            for e in it
            if e.name.endswith(FREE_SUFFIX) and e.is_file(follow_symlinks=False)
        ]
    return sorted(out, key=lambda f: f[1])


def recycle(path: str, shm_dir: str) -> None:
    """Turn a T1 file into a free file (the caller holds the state lock and the model's pin)."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, os.path.join(shm_dir, f"free-{secrets.token_hex(8)}{FREE_SUFFIX}"))


def best_fit(shm_dir: str, nbytes: int) -> tuple[str, int] | None:
    """The smallest free file holding ``nbytes``, else the largest one, else None."""
    files = free_files(shm_dir)
    return next((f for f in files if f[1] >= nbytes), files[-1] if files else None)


def take(free: tuple[str, int], dst: str, nbytes: int) -> None:
    """Rename a free file to ``dst`` and cut (or grow) it to ``nbytes``."""
    os.replace(free[0], dst)
    fd = os.open(dst, os.O_RDWR)
    try:
        os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)


def trim(shm_dir: str, excess: int, *, keep: str | None = None) -> int:
    """Delete free files, largest first, until ``excess`` bytes are freed; returns bytes freed."""
    freed = 0
    for path, size in reversed(free_files(shm_dir)):
        if freed >= excess:
            break
        if path != keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            freed += size
    return freed


def preallocate(shm_dir: str, nbytes: int) -> None:
    """Create a free file of ``nbytes`` with its pages allocated now, off the restore path."""
    path = os.path.join(shm_dir, f"free-{secrets.token_hex(8)}{FREE_SUFFIX}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    finally:
        os.close(fd)
