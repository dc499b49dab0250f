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
import logging
import os
import re
from collections.abc import Callable
from functools import partial

import msgspec

from tide.api.errors import InvalidArgument, TideError, Unavailable

from .. import _pool
from .._plan import EvictionPlan, StoreUsage, plan_stores
from .._safe import open_regular
from .._segment import WANT_FILE, Want
from .._store import HostStore

__all__ = ["OWNERS_DIR", "enforce_all", "owner_key", "owner_keys", "owner_paths"]

log = logging.getLogger("tide.flashboot")

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


def enforce_all(
    stores: list[HostStore], *, ram_budget: int, disk_budget: int, lock_timeout: float = 2.0
) -> EvictionPlan:
    """Bring the stores together within the budgets: free T1 memory first, then the least recently
    used unpinned copies of any store (T1 demoted to T2 while the disk allows), making room for
    fills that found the T1 tmpfs full (``want.json``).  Slow: may write images.  A store whose
    lock stays taken for ``lock_timeout`` (a worker can hold its own store's lock) sits this pass
    out: its bytes count, nothing of it moves.  The plan names models as ``"<index>:<fp>"``."""
    with contextlib.ExitStack() as locks:
        held = [s for s in stores if _lock(locks, s, lock_timeout)]
        busy = [s for s in stores if s not in held]
        ram_budget -= sum(s.ram_used() for s in busy)
        disk_budget -= sum(s.disk_used() for s in busy)
        wanted = _take_wants(held, ram_budget)
        _trim_free(held, ram_budget - wanted)
        plan = plan_stores(
            [_usage(i, store) for i, store in enumerate(held)],
            ram_budget=ram_budget,
            disk_budget=disk_budget,
            need_ram=wanted,
        )
        for key in plan.drop_t2:
            i, fp = _split(key)
            _guarded(held[i], "drop", fp, partial(held[i].drop_copy, fp, held[i].t2_path(fp)))
    for key in plan.demote:
        i, fp = _split(key)
        _guarded(held[i], "demote", fp, partial(held[i].demote, fp))
    with contextlib.ExitStack() as locks:
        again = [s for s in held if _lock(locks, s, lock_timeout)]
        for key in plan.drop_t1:
            i, fp = _split(key)
            if held[i] in again:
                _guarded(held[i], "drop", fp, partial(held[i].drop_copy, fp, held[i].t1_path(fp)))
        for store in again:
            _guarded(store, "tidy-up", "its index", store.forget_empty)
        _trim_free(again, ram_budget - wanted)  # dropped copies became free memory: keep what fits
    return plan


def _usage(i: int, store: HostStore) -> StoreUsage:
    """The store for the planner, its models named ``"<i>:<fp>"`` (unique across the stores)."""
    try:
        usage = store.usage()
    except TideError as exc:  # a broken index: its owner's models sit this pass out
        log.warning("FlashBoot store %s skipped this pass: %s", store.state_dir, exc)
        return StoreUsage(ram_used=store.ram_used(), disk_used=store.disk_used())  # its bytes still count
    models = tuple(msgspec.structs.replace(m, fingerprint=f"{i}:{m.fingerprint}") for m in usage.models)
    return msgspec.structs.replace(usage, models=models)


def _guarded(store: HostStore, what: str, fp: str, act: Callable[[], object]) -> None:
    """One eviction step; a store whose files are not what they claim (a link, a bad header)
    costs its owner that step, never the keeper's pass."""
    try:
        act()
    except (TideError, OSError) as exc:
        log.warning("FlashBoot %s of %s in %s refused: %s", what, fp, store.state_dir, exc)


def _lock(locks: contextlib.ExitStack, store: HostStore, timeout: float) -> bool:
    try:
        locks.enter_context(store.locked(timeout=timeout))
    except Unavailable as exc:
        log.warning("FlashBoot store %s skipped this pass: %s", store.state_dir, exc)
        return False
    return True


def _take_wants(stores: list[HostStore], ram_budget: int, *, max_age: float = 900.0) -> int:
    """Room to make for fills that found the tmpfs full: each store's want, up to its fair share
    of the budget less what it holds (so no store can make the keeper evict everyone else).
    The wants are consumed."""
    fair = ram_budget // max(1, len(stores))
    total = 0
    for store in stores:
        path = store.path(WANT_FILE)
        try:
            fd = open_regular(path, os.O_RDONLY)
        except (FileNotFoundError, InvalidArgument):
            continue
        with os.fdopen(fd, "rb") as f:
            raw = f.read(4096)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            want = msgspec.json.decode(raw, type=Want)
        except msgspec.DecodeError:
            continue
        if store.clock() - want.at <= max_age:
            total += max(0, min(want.nbytes, fair) - store.ram_used())
    return min(total, max(ram_budget, 0))


def _trim_free(stores: list[HostStore], ram_budget: int) -> None:
    """Delete free (recycled) T1 memory until the stores fit ``ram_budget`` or none is left."""
    excess = sum(s.ram_used() for s in stores) - ram_budget
    for store in stores:
        if excess > 0:
            excess -= _pool.trim(store.config.shm_dir, excess)
