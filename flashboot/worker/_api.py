"""The worker API (``load``, ``page_out``, ``page_in``, ``release``) and what this process holds."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._store import ENV_DIR, ENV_OWNER, HostStore
from ._boot import BootReport
from ._stats import LoadStats, StageRecorder

if TYPE_CHECKING:
    import torch

    from .._registry import WorkerRegistration
    from ._restore import Loaded

__all__ = ["last_load_stats", "load", "page_in", "page_out", "release"]

Source = (
    str
    | os.PathLike[str]
    | Sequence[str | os.PathLike[str]]
    | Callable[[], Mapping[str, Any]]
    | Mapping[str, Any]
)


class _Process:
    """What this process holds.  Guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.stores: dict[str, tuple[int, HostStore]] = {}
        self.loaded: dict[str, Loaded] = {}
        self.stores_of: dict[str, HostStore | None] = {}
        self.registrations: dict[str, WorkerRegistration] = {}
        self.last: LoadStats | None = None
        self.boot = BootReport()

    def store(self, state_dir: str | None) -> HostStore | None:
        path = state_dir if state_dir is not None else os.environ.get(ENV_DIR) or None
        if path is None:
            return None
        try:  # re-read the config when the keeper rewrote it (new budgets)
            version = os.stat(os.path.join(path, "config.json")).st_mtime_ns
        except FileNotFoundError:
            version = 0
        cached = self.stores.get(path)
        if cached is None or cached[0] != version:
            self.stores[path] = cached = (version, HostStore.open(path))
        return cached[1]

    def publish(self, store: HostStore | None) -> None:
        """Rewrite this process's T0 registration for ``store``'s keeper."""
        if store is None:
            return
        from .._registry import T0Holding, WorkerRegistration

        reg = self.registrations.get(store.state_dir)
        if reg is None:
            reg = self.registrations[store.state_dir] = WorkerRegistration(store.state_dir)
        reg.update(
            tuple(
                T0Holding(
                    model_id=m.model_id,
                    fingerprint=m.fingerprint,
                    device=str(m.device),
                    nbytes=m.index.data_bytes,
                    state="resident" if m.resident else "paged_out",
                )
                for m in self.loaded.values()
                if getattr(self.stores_of.get(m.model_id), "state_dir", None) == store.state_dir
            )
        )


_PROC = _Process()


def load(
    model_id: str,
    *,
    source: Source,
    device: str | torch.device | None = None,
    state_dir: str | None = None,
) -> dict[str, torch.Tensor]:
    """Return ``{name: tensor}`` on ``device`` (default: CUDA if available, else CPU).

    ``source`` is a safetensors file (or the shards of one checkpoint), a state dict, or a callable
    returning one; it is read only when no tier of this host holds ``model_id`` (for file sources,
    a changed size or mtime counts as a new model).  ``state_dir`` overrides
    ``$TIDE_FLASHBOOT_DIR``.  Slow on a miss (reads and hashes the source); safe to call from
    several threads (serialised).  Stage timings: ``last_load_stats()``; with
    ``$TIDE_WORKER_REPORT_DIR`` set, they also go to noded (``worker/_boot.py``).
    """
    started_at = time.time()
    with _PROC.lock:
        tensors = _load(model_id, source, device, state_dir)
        if _PROC.last is not None:
            _PROC.boot.note(started_at, _PROC.last)
        return tensors


def _load(
    model_id: str, source: Source, device: str | torch.device | None, state_dir: str | None
) -> dict[str, torch.Tensor]:
    from ._device import resolve_device
    from ._paging import page_in
    from ._restore import load_plain, restore

    with _PROC.lock:
        dev = resolve_device(device)
        rec = StageRecorder()
        store = _PROC.store(state_dir)
        held = _PROC.loaded.get(model_id)
        if held is not None and held.device == dev:
            tier = "t0" if held.resident else "t1"
            with rec.stage("t1->t0" if not held.resident else "views", tier, held.index.data_bytes):
                page_in(store, held)
            _finish(model_id, held.fingerprint, tier, dev, held.index.data_bytes, rec, None)
            _PROC.publish(store)
            return dict(held.tensors)
        if store is None:
            with rec.stage("source", "source"):
                tensors = load_plain(source, dev)
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
            _finish(model_id, "", "source", dev, nbytes, rec, None)
            return tensors
        restored = restore(store, model_id, source, dev, rec)
        loaded = restored.loaded
        if owner := os.environ.get(ENV_OWNER):
            store.add_owner(loaded.fingerprint, owner)
        if held is not None:
            _release(held)
        _PROC.loaded[model_id] = loaded
        _PROC.stores_of[model_id] = store
        _finish(
            model_id, loaded.fingerprint, restored.tier, dev, loaded.index.data_bytes, rec, restored.direct_io
        )
        _PROC.publish(store)
        return dict(loaded.tensors)


def _finish(
    model_id: str,
    fp: str,
    tier: str,
    device: torch.device,
    nbytes: int,
    rec: StageRecorder,
    direct_io: bool | None,
) -> None:
    held = _PROC.loaded.get(model_id)
    _PROC.last = LoadStats(
        model_id=model_id,
        fingerprint=fp,
        tier=tier,  # type: ignore[arg-type]
        device=str(device),
        nbytes=nbytes,
        seconds=rec.elapsed(),
        stages=tuple(rec.stages),
        direct_io=direct_io,
        pinned_host=held.registered if held is not None and held.device.type == "cuda" else None,
    )


def last_load_stats() -> LoadStats | None:
    """Stage timings of this process's most recent ``load`` (None before the first)."""
    with _PROC.lock:
        return _PROC.last


def _selected(model_id: str | None) -> list[Loaded]:
    if model_id is None:
        return list(_PROC.loaded.values())
    held = _PROC.loaded.get(model_id)
    return [held] if held is not None else []


def page_out(model_id: str | None = None) -> None:
    """Free device memory of one model (or all) once a host tier holds its bytes; for idle workers.

    Idempotent.  The tensors ``load`` returned must not be used until ``page_in`` (CUDA).
    """
    from ._paging import page_out as _page_out

    with _PROC.lock:
        for held in _selected(model_id):
            store = _PROC.stores_of.get(held.model_id)
            _page_out(store, held)
            _PROC.publish(store)


def page_in(model_id: str | None = None) -> None:
    """Bring paged-out models back into device memory, under the same tensor objects.  Idempotent."""
    from ._paging import page_in as _page_in

    with _PROC.lock:
        for held in _selected(model_id):
            store = _PROC.stores_of.get(held.model_id)
            _page_in(store, held)
            _PROC.publish(store)


def _release(held: Loaded) -> None:
    from ._paging import release as _release_loaded

    _release_loaded(held)


def release(model_id: str | None = None) -> None:
    """Forget one model (or all): unpin its host copy so the keeper may evict it.

    Tensors already handed out stay valid on CUDA; on CPU their mapping keeps the pin until they
    are garbage collected.
    """
    with _PROC.lock:
        for held in _selected(model_id):
            _release(held)
            _PROC.loaded.pop(held.model_id, None)
            _PROC.publish(_PROC.stores_of.pop(held.model_id, None))
