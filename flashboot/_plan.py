"""Pure eviction planning for the host tiers (T1 shared RAM, T2 local disk).

``plan_evictions`` takes a snapshot of what the host holds and the budgets, and returns what to
move: T1 copies to demote to T2 (write the image, then free the RAM), T1 copies to drop (T2 has
them already, or the disk has no room), and T2 images to delete.  Least recently used first;
pinned models (a live process maps them) are never touched.  No I/O, no clock: ``last_used``
values come in with the snapshot.

``plan_stores`` is the one entry point of both eviction passes: a worker making room in its own
store (``HostStore.make_room``) and the keeper keeping every store of the host within the budgets
(``host._owners.enforce_all``).  Bytes a store holds that its models do not account for (fills in
progress, recycled memory, files its index does not know) take room too.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["EvictionPlan", "ModelState", "StoreUsage", "plan_evictions", "plan_stores"]


class ModelState(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    data_bytes: int  # size of the T1 copy
    image_bytes: int  # size of the T2 image
    in_t1: bool
    in_t2: bool
    pinned: bool
    last_used: float


class StoreUsage(msgspec.Struct, frozen=True, kw_only=True):
    """One store as the planner sees it: the models a tier of it holds, and the bytes its T1 and
    T2 directories hold (which may be more than its models account for)."""

    models: tuple[ModelState, ...] = ()  # none when its index could not be read: only bytes count
    ram_used: int
    disk_used: int


class EvictionPlan(msgspec.Struct, frozen=True, kw_only=True):
    demote: tuple[str, ...] = ()  # write T1 -> T2, then drop T1
    drop_t1: tuple[str, ...] = ()
    drop_t2: tuple[str, ...] = ()
    ram_fits: bool = True  # the requested RAM is free once the plan is applied
    disk_fits: bool = True

    @property
    def empty(self) -> bool:
        return not (self.demote or self.drop_t1 or self.drop_t2)


def _lru(models: list[ModelState]) -> list[ModelState]:
    return sorted(models, key=lambda m: (m.last_used, m.fingerprint))


class _Disk:
    """Disk accounting while planning: images kept, images dropped, room left."""

    def __init__(self, models: list[ModelState], budget: int):
        self.budget = budget
        self.used = sum(m.image_bytes for m in models if m.in_t2)
        self.candidates = [m for m in _lru(models) if m.in_t2 and not m.pinned]
        self.dropped: list[str] = []

    def drop_until(self, room: int, *, older_than: float | None) -> bool:
        """Delete LRU images (only those older than ``older_than`` when given) until ``room`` fits."""
        while self.used + room > self.budget:
            victims = [m for m in self.candidates if older_than is None or m.last_used < older_than]
            if not victims:
                return False
            victim = victims[0]
            self.candidates.remove(victim)
            self.dropped.append(victim.fingerprint)
            self.used -= victim.image_bytes
        return True


def plan_evictions(
    models: list[ModelState],
    *,
    ram_budget: int,
    disk_budget: int,
    need_ram: int = 0,
    need_disk: int = 0,
) -> EvictionPlan:
    """What to evict so that T1 holds ``need_ram`` more bytes and T2 ``need_disk`` more.

    A T1 victim without an image is demoted when the disk has room for it, making room only by
    deleting images that are older than the victim itself (newer content displaces older); otherwise
    it is dropped from the host (its source can rebuild it).  Pure and deterministic.
    """
    ram_used = sum(m.data_bytes for m in models if m.in_t1)
    disk = _Disk(models, disk_budget)
    demote: list[str] = []
    drop_t1: list[str] = []
    for victim in _lru([m for m in models if m.in_t1 and not m.pinned]):
        if ram_used + need_ram <= ram_budget:
            break
        ram_used -= victim.data_bytes
        if victim.in_t2 and victim.fingerprint not in disk.dropped:
            drop_t1.append(victim.fingerprint)
        elif disk.drop_until(victim.image_bytes, older_than=victim.last_used):
            disk.used += victim.image_bytes
            demote.append(victim.fingerprint)
        else:
            drop_t1.append(victim.fingerprint)
    disk_fits = disk.drop_until(need_disk, older_than=None)
    return EvictionPlan(
        demote=tuple(demote),
        drop_t1=tuple(drop_t1),
        drop_t2=tuple(disk.dropped),
        ram_fits=ram_used + need_ram <= ram_budget,
        disk_fits=disk_fits,
    )


def plan_stores(
    stores: Sequence[StoreUsage],
    *,
    ram_budget: int,
    disk_budget: int,
    need_ram: int = 0,
    need_disk: int = 0,
) -> EvictionPlan:
    """``plan_evictions`` over the models of every store, under one pair of budgets less the bytes
    that no model accounts for.  The models' fingerprints must be unique across the stores."""
    models = [m for s in stores for m in s.models]
    extra_ram = sum(s.ram_used for s in stores) - sum(m.data_bytes for m in models if m.in_t1)
    extra_disk = sum(s.disk_used for s in stores) - sum(m.image_bytes for m in models if m.in_t2)
    return plan_evictions(
        models,
        ram_budget=ram_budget - max(extra_ram, 0),
        disk_budget=disk_budget - max(extra_disk, 0),
        need_ram=need_ram,
        need_disk=need_disk,
    )
