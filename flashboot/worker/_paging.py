"""Device page-out and page-in of a loaded model around idle periods.  Imports torch.

Page-out (T0 -> T1) makes sure a host tier keeps the model's bytes, then frees the flat device
buffer under every view at once (``untyped_storage().resize_(0)``); page-in reallocates it and copies
the host copy back, so the tensor objects a caller holds stay the same (their addresses change:
CUDA graphs captured over them must be captured again).
"""

from __future__ import annotations

import torch

from tide.api.errors import InvalidArgument

from .._store import HostStore
from ._device import PinnedRing, copy_all, host_tensor, unregister_host
from ._restore import Loaded

__all__ = ["page_in", "page_out", "release"]


def page_out(store: HostStore | None, loaded: Loaded) -> None:
    """T0 -> T1: make sure a host tier keeps the bytes, then free device memory (CUDA).

    Weights are immutable, so when T1 already holds them nothing is copied.  On CPU the views map
    host memory and stay valid; nothing is freed until the caller drops them.
    """
    if not loaded.resident:
        return
    if store is not None and not loaded.in_t1:
        _save_to_t1(store, loaded)
    if loaded.device.type == "cuda":
        loaded.flat.untyped_storage().resize_(0)  # frees the memory under every view at once
        torch.cuda.empty_cache()
        loaded.resident = False


def _save_to_t1(store: HostStore, loaded: Loaded) -> None:
    index = loaded.index
    with store.fill_lock(loaded.fingerprint):
        if store.in_t1(loaded.fingerprint):
            loaded.in_t1 = True
            return
        seg = store.reserve_t1(loaded.fingerprint, index.data_bytes)
        if seg is None:
            host = loaded.flat.cpu() if loaded.device.type == "cuda" else loaded.flat
            with host.numpy().data as view:
                store.write_t2(index, loaded.header, view, model_id=None, stamp="")
            return
        dst = host_tensor(seg.map)
        copy_all(dst, loaded.flat)
        del dst
        store.publish_t1(seg, index, loaded.header, model_id=None, stamp="")
        seg.map.close()
        loaded.in_t1 = True


def page_in(store: HostStore | None, loaded: Loaded) -> None:
    """T1 -> T0 after ``page_out``: reallocate the flat buffer in place; the views see it again."""
    if loaded.resident:
        return
    storage = loaded.flat.untyped_storage()
    storage.resize_(loaded.index.data_bytes)
    if loaded.host is None:
        raise InvalidArgument(f"model {loaded.model_id!r}: no host copy to page in from")
    copy_all(loaded.flat, loaded.host, ring=None if loaded.registered else PinnedRing.shared())
    loaded.resident = True


def release(loaded: Loaded) -> None:
    """Forget a model: unpin its host copy so the keeper may evict it."""
    if loaded.registered and loaded.host is not None:
        unregister_host(loaded.host)
        loaded.registered = False
    loaded.host = None
    loaded.keepalive = None
    if loaded.pin is not None:
        loaded.pin.close()
        loaded.pin = None
