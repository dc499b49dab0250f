"""A T1 fill in progress, and what a fill that found no room tells the keeper.  No torch."""

from __future__ import annotations

import contextlib
import mmap
import os

import msgspec

__all__ = ["WANT_FILE", "T1Segment", "Want"]

WANT_FILE = "want.json"


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """A fill that found the T1 tmpfs full: how much it wanted, and when."""

    nbytes: int
    at: float


class T1Segment:
    """A reserved T1 file being filled by this process; the store publishes it
    (``HostStore.publish_t1``), ``abort`` frees it."""

    def __init__(self, tmp_path: str, nbytes: int):
        self.tmp_path = tmp_path
        self.nbytes = nbytes
        fd = os.open(tmp_path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
