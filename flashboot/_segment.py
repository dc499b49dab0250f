"""A T1 fill in progress, and what a fill that found no room tells the keeper.  No torch."""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import TYPE_CHECKING

import msgspec

from ._image import ImageIndex

if TYPE_CHECKING:
    from ._store import HostStore

__all__ = ["WANT_FILE", "T1Segment", "Want"]

WANT_FILE = "want.json"


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """A fill that found the T1 tmpfs full: how much it wanted, and when."""

    nbytes: int
    at: float


class T1Segment:
    """A reserved T1 file being filled by this process; ``commit`` publishes it, ``abort`` frees it."""

    def __init__(self, store: HostStore, tmp_path: str, nbytes: int):
        self.store = store
        self.tmp_path = tmp_path
        self.nbytes = nbytes
        fd = os.open(tmp_path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)

    def commit(self, index: ImageIndex, header: bytes, *, model_id: str | None, stamp: str) -> None:
        """Publish the filled segment as ``<fp>.t1``; the caller already pins ``index.fingerprint``."""
        self.store.save_header(index.fingerprint, header)
        target = self.store.t1_path(index.fingerprint)
        if os.path.exists(target):  # identical bytes published by someone else: keep theirs
            os.unlink(self.tmp_path)
        else:
            os.replace(self.tmp_path, target)
        self.store.record(index, model_id=model_id, stamp=stamp)

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
