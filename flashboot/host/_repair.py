"""Repair of a host store after a restart: the files are the truth, the index follows them."""

from __future__ import annotations

import contextlib
import os

import msgspec

from tide.api.errors import InvalidArgument, NotFound

from .._locks import try_exclusive
from .._safe import valid_fingerprint
from .._store import HostStore, ModelRecord

__all__ = ["reconcile"]


def reconcile(
    store: HostStore, *, now: float, stale_after: float = 600.0, lock_timeout: float | None = None
) -> None:
    """Repair the index against the files: adopt images and T1 copies, forget vanished ones,
    delete stale temps and T1 copies nobody can describe (no header anywhere).  Unavailable when
    the store's lock stays taken for ``lock_timeout``."""
    with store.locked(timeout=lock_timeout):
        _drop_stale_temps(store, now=now, stale_after=stale_after)
        idx = store.read_index()
        models = dict(idx.models)
        for fp, path in _tier_files(store):
            if fp in models:
                continue
            try:
                image = store.image_index(fp)
            except (InvalidArgument, NotFound):
                if path.endswith(".t1"):  # an orphan from an earlier state dir: only costs RAM
                    store.drop_copy(fp, path)
                continue  # a foreign or truncated image: leave it for an operator
            rec = ModelRecord(
                fingerprint=fp,
                data_bytes=image.data_bytes,
                image_bytes=image.image_bytes,
                last_used=os.stat(path).st_mtime,
            )
            models[fp] = rec
        store.write_index(msgspec.structs.replace(idx, models=models))
        store.forget_empty()


def _tier_files(store: HostStore) -> list[tuple[str, str]]:
    out = []
    for root, suffix in ((store.path("images"), ".safetensors"), (store.config.shm_dir, ".t1")):
        with contextlib.suppress(FileNotFoundError), os.scandir(root) as it:
            out += [
                (e.name.removesuffix(suffix), e.path)
                for e in it
                if e.name.endswith(suffix) and valid_fingerprint(e.name.removesuffix(suffix))
            ]
    return out


def _drop_stale_temps(store: HostStore, *, now: float, stale_after: float) -> None:
    with contextlib.suppress(FileNotFoundError), os.scandir(store.config.shm_dir) as it:
        for entry in it:
            if entry.name.endswith(".t1.tmp"):
                with try_exclusive(store.fill_path(entry.name.removesuffix(".t1.tmp"))) as taken:
                    if taken:  # its filler died: nobody holds the fill lock
                        os.unlink(entry.path)
    for sub in ("images", "headers"):
        with os.scandir(store.path(sub)) as it:
            for entry in it:
                if ".tmp-" in entry.name and now - entry.stat().st_mtime > stale_after:
                    os.unlink(entry.path)
