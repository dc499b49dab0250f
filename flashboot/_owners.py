"""One host store per owner, under one pair of budgets.  Never imports torch.

Workers of different endpoints must not read or change each other's weights, so each owner (noded
passes the endpoint id) gets a store of its own: ``<state>/owners/<key>`` on disk and
``<shm>/owners/<key>`` in RAM, and a container is given only its own pair.  Two endpoints with the
same weights then keep two copies: isolation is worth more than the RAM.

Each owner store's config carries the host's whole budgets, so a worker can make room in its own
store as before; the keeper keeps the host within budget across all stores (``enforce_all``: least
recently used first, whoever owns it).  Between two keeper passes the stores together may hold
more than the budget; the T1 tmpfs's size caps that, since a fill that cannot allocate its pages
falls back to private memory (``HostStore.reserve_t1``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

import msgspec

from . import _pool
from ._plan import EvictionPlan, ModelState, plan_evictions
from ._store import HostStore

__all__ = ["OWNERS_DIR", "enforce_all", "owner_key", "owner_keys", "owner_paths"]

OWNERS_DIR = "owners"
_TAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def owner_key(owner: str) -> str:
    """A directory name for ``owner``: the name itself when it is tame, else a hash of it."""
    if _TAME.fullmatch(owner):
        return owner
    return "h-" + hashlib.sha256(owner.encode()).hexdigest()[:24]


def owner_paths(state_dir: str, shm_dir: str, owner: str) -> tuple[str, str]:
    """(state dir, T1 dir) of ``owner``'s store."""
    key = owner_key(owner)
    return os.path.join(state_dir, OWNERS_DIR, key), os.path.join(shm_dir, OWNERS_DIR, key)


def owner_keys(state_dir: str) -> list[str]:
    """Keys of the owner stores that exist under ``state_dir``, sorted."""
    with contextlib.suppress(FileNotFoundError), os.scandir(os.path.join(state_dir, OWNERS_DIR)) as it:
        return sorted(e.name for e in it if e.is_dir())
    return []


def _split(key: str) -> tuple[int, str]:
    i, _, fp = key.partition(":")
    return int(i), fp


def enforce_all(stores: list[HostStore], *, ram_budget: int, disk_budget: int) -> EvictionPlan:
    """Bring the stores together within the budgets: free T1 memory first, then the least recently
    used unpinned copies of any store (T1 demoted to T2 while the disk allows).  Slow: may write
    images.  The plan names models as ``"<store index>:<fingerprint>"``."""
    with contextlib.ExitStack() as locks:
        for store in stores:  # always in this order; a worker only ever takes its own store's lock
            locks.enter_context(store.locked())
        _trim_free(stores, ram_budget)
        models: list[ModelState] = []
        extra_ram = extra_disk = 0
        for i, store in enumerate(stores):
            snap = store.snapshot()
            extra_ram += store.ram_used() - sum(m.data_bytes for m in snap if m.in_t1)
            extra_disk += store.disk_used() - sum(m.image_bytes for m in snap if m.in_t2)
            models += [msgspec.structs.replace(m, fingerprint=f"{i}:{m.fingerprint}") for m in snap]
        plan = plan_evictions(
            models,
            ram_budget=ram_budget - max(extra_ram, 0),
            disk_budget=disk_budget - max(extra_disk, 0),
        )
        for key in plan.drop_t2:
            i, fp = _split(key)
            stores[i].drop_copy(fp, stores[i].t2_path(fp))
    for key in plan.demote:
        i, fp = _split(key)
        stores[i].demote(fp)
    with contextlib.ExitStack() as locks:
        for store in stores:
            locks.enter_context(store.locked())
        for key in plan.drop_t1:
            i, fp = _split(key)
            stores[i].drop_copy(fp, stores[i].t1_path(fp))
        for store in stores:
            store.forget_empty()
        _trim_free(stores, ram_budget)  # dropped copies became free memory: keep what the budget allows
    return plan


def _trim_free(stores: list[HostStore], ram_budget: int) -> None:
    """Delete free (recycled) T1 memory until the stores fit ``ram_budget`` or none is left."""
    excess = sum(s.ram_used() for s in stores) - ram_budget
    for store in stores:
        if excess > 0:
            excess -= _pool.trim(store.config.shm_dir, excess)
