"""Why a request's workers did not fit: one human line per endpoint, naming every entry tried."""

from __future__ import annotations

from coordinator.scheduling._capacity import Pool
from coordinator.scheduling._gpu_types import GpuNeed
from coordinator.scheduling._index import Index, Want, gpu_pools, mig_pool_groups
from coordinator.scheduling._resources import Room

__all__ = ["reason"]


def reason(ix: Index, want: Want, workers: int) -> str:
    """One line naming, for each entry tried, why it did not fit."""
    where = "any data center" if want.dcs is None else ", ".join(sorted(want.dcs))
    return "; ".join(_need_reason(ix, want, need, workers, where) for need in want.needs)


def _need_reason(ix: Index, want: Want, need: GpuNeed, workers: int, where: str) -> str:
    count = want.gpu_count
    if need.kind in ("mig", "mig-class"):
        if count > 1:
            return f"{need.label} is a MIG slice but gpuCount {count} needs whole GPUs"
        what = need.label if need.kind == "mig" else f"MIG slice of at least {need.min_memory_gb} GB"
        pools = [p for group in mig_pool_groups(ix, need) for p in group]
        short = _short_of_room(ix, want, pools, 1, f"1x{what}", where, workers)
        if short is not None:
            return short
        return (
            f"no free {what} in {where} ({workers} requested, 0 free) and no MIG card can be re-cut to fit it"
        )
    pools = gpu_pools(ix, need)
    short = _short_of_room(ix, want, pools, count, f"{count}x{need.label}", where, workers)
    if short is not None:
        return short
    caps = [p.capacity(want.dcs) for p in pools]
    total, most = sum(c[0] for c in caps), max((c[1] for c in caps), default=0)
    wanted = workers * count
    if total >= count:
        return (
            f"no host with {count} free {need.label} in {where} "
            f"({wanted} requested, {total} free, at most {most} on one host)"
        )
    return f"no free {need.label} in {where} ({wanted} requested, {total} free)"


def _short_of_room(
    ix: Index, want: Want, pools: list[Pool], count: int, devices: str, where: str, workers: int
) -> str | None:
    """The CPU/RAM reason, when some host has the devices free but none has the room beside them."""
    if want.fits is None:
        return None
    hosts = sorted(
        {
            node
            for pool in pools
            for node, uuids in pool.free.items()
            if len(uuids) >= count and (want.dcs is None or pool.dc_of[node] in want.dcs)
        }
    )
    rooms = [(ix.room[node].shortfall(want.ask), node) for node in hosts if node in ix.room]
    if not rooms:
        return None
    _, best = min(rooms)
    asked = []
    if want.ask.millicpus:
        asked.append(f"{want.ask.millicpus / 1000:g} free CPUs")
    if want.ask.memory_mb:
        asked.append(f"{want.ask.memory_mb} MB free RAM")
    return (
        f"no host in {where} has {' and '.join(asked)} with {devices} free ({workers} requested); "
        f"best: {ix.hostname[best]} {_room_text(ix.room[best])} free"
    )


def _room_text(room: Room) -> str:
    cpus = "unlimited CPUs" if room.millicpus is None else f"{max(room.millicpus, 0) / 1000:g} CPUs"
    memory = "unlimited RAM" if room.memory_mb is None else f"{max(room.memory_mb, 0)} MB"
    return f"{cpus} / {memory}"
