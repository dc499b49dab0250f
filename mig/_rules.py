"""The placement rules of one card, as pure functions over a catalog and its live instances.

Shared by the planner and the simulator so they cannot disagree about what is legal (reference/mig.md
§4): a GPU instance occupies memory units ``[start, start + size)``; only the catalog's starts are
legal; live instances never overlap; each profile has a cap (``max_count``); the instances share the
card's compute slices and media-engine budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import msgspec

from mig._catalog import Catalog

__all__ = [
    "Slot",
    "blocked_count",
    "free_starts",
    "mask",
    "min_blocking_start",
    "occupied",
    "profile_counts",
    "remaining_capacity",
    "why_not",
]


class Slot(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A GPU instance as a layout sees it: a profile at a placement start."""

    profile: str
    start: int


def mask(start: int, size: int) -> int:
    """Memory units ``[start, start + size)`` as a bit mask."""
    return ((1 << size) - 1) << start


def occupied(catalog: Catalog, slots: Iterable[Slot]) -> int:
    bits = 0
    for s in slots:
        bits |= mask(s.start, catalog.profile(s.profile).size)
    return bits


def _engines_left(catalog: Catalog, slots: Iterable[Slot]) -> dict[str, int]:
    left = dict(catalog.engine_budget.limits())
    for s in slots:
        used = catalog.profile(s.profile).engines()
        for engine in left:
            left[engine] -= used[engine]
    return left


def why_not(catalog: Catalog, slots: Iterable[Slot], profile: str, start: int) -> str | None:
    """Why ``profile`` cannot be created at ``start`` next to ``slots``; None if it can.

    InvalidArgument (from the catalog) for a profile the card does not have.
    """
    p = catalog.profile(profile)
    live = list(slots)
    if start not in p.starts:
        return f"{start} is not a legal start for {profile} (legal: {list(p.starts)})"
    bits = mask(start, p.size)
    for s in live:
        if mask(s.start, catalog.profile(s.profile).size) & bits:
            return f"{profile} at {start} overlaps {s.profile} at {s.start}"
    if sum(1 for s in live if s.profile == profile) >= p.max_count:
        return f"{profile} is capped at {p.max_count} instance(s) per card"
    used = sum(catalog.profile(s.profile).compute_slices for s in live)
    if used + p.compute_slices > catalog.compute_slices:
        return f"{profile} needs {p.compute_slices} compute slice(s), {catalog.compute_slices - used} left"
    needs = p.engines()
    for engine, left in _engines_left(catalog, live).items():
        if needs[engine] > left:
            return f"{profile} needs {needs[engine]} {engine}, the card has {left} left"
    return None


def free_starts(catalog: Catalog, slots: Iterable[Slot], profile: str) -> list[int]:
    """Every start where ``profile`` could be created now, lowest first."""
    live = list(slots)
    return [s for s in catalog.profile(profile).starts if why_not(catalog, live, profile, s) is None]


def blocked_count(catalog: Catalog, occupied_bits: int, start: int, size: int) -> int:
    """How many still-free placements (of every profile) taking ``[start, start+size)`` would block."""
    bits = mask(start, size)
    count = 0
    for p in catalog.profiles:
        for pl in p.placements:
            m = mask(pl.start, pl.size)
            if not m & occupied_bits and m & bits:
                count += 1
    return count


def min_blocking_start(catalog: Catalog, slots: Iterable[Slot], profile: str) -> int | None:
    """The free start that blocks the fewest other placements (ties: lowest start), or None.

    This is the heuristic of reference/mig.md §4: it reproduces NVIDIA's documented automatic
    placements, and the placer uses it to leave the most room for later instances.
    """
    live = list(slots)
    starts = free_starts(catalog, live, profile)
    if not starts:
        return None
    bits = occupied(catalog, live)
    size = catalog.profile(profile).size
    return min(starts, key=lambda s: (blocked_count(catalog, bits, s, size), s))


def remaining_capacity(catalog: Catalog, slots: Iterable[Slot], profile: str) -> int:
    """How many more ``profile`` instances fit next to ``slots``, placing them greedily (NVML's rule)."""
    live = list(slots)
    count = 0
    while (start := min_blocking_start(catalog, live, profile)) is not None:
        live.append(Slot(profile=profile, start=start))
        count += 1
    return count


def profile_counts(slots: Iterable[Slot]) -> Counter[str]:
    return Counter(s.profile for s in slots)
