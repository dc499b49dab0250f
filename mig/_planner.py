"""The MIG layout planner: pure functions from (catalog, live instances, wanted profiles) to plans.

Tide never lets the driver choose a placement (its automatic choice depends on creation order and
driver version: NVIDIA's own example ``19,19,14,9`` fails on A100 while ``9,19,14,19`` fits).  The
planner searches explicit placements instead, exhaustively on the card's 8- or 12-unit grid, so a
multiset of profiles that fits in any order is found.  It keeps busy instances where they are,
keeps as many idle ones as it can, and only then moves idle ones.

An "instance" argument is anything with ``profile`` and ``start`` attributes (a :class:`Slot`,
or a ``tide.api.nodes.MigInstance``); one whose ``busy`` attribute is true counts as busy.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from mig._catalog import Catalog
from mig._rules import Slot, blocked_count, min_blocking_start, occupied, why_not

__all__ = ["Layout", "NoPlan", "Transition", "fits", "plan_layout", "plan_transition"]


class InstanceLike(Protocol):
    @property
    def profile(self) -> str: ...

    @property
    def start(self) -> int: ...


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """A whole card's instances, sorted by start."""

    type_id: str
    slots: tuple[Slot, ...]


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """Destroy these (all idle), then create these with explicit placements."""

    destroy: tuple[Slot, ...] = ()
    create: tuple[Slot, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.destroy and not self.create


class NoPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Why no plan exists; ``blocking`` names the busy instances in the way, if any."""

    reason: str
    blocking: tuple[Slot, ...] = ()


def _slots(instances: Iterable[InstanceLike]) -> list[Slot]:
    return [Slot(profile=i.profile, start=i.start) for i in instances]


def _busy(existing: Sequence[InstanceLike], busy: Iterable[InstanceLike]) -> set[Slot]:
    marked = {Slot(profile=i.profile, start=i.start) for i in existing if getattr(i, "busy", False) is True}
    return marked | set(_slots(busy))


def fits(catalog: Catalog, instances: Iterable[InstanceLike], profile: str) -> int | None:
    """Where one more ``profile`` would go next to ``instances`` (min-blocking start), or None."""
    return min_blocking_start(catalog, _slots(instances), profile)


def _search(catalog: Catalog, kept: list[Slot], todo: list[str]) -> list[Slot] | None:
    """Explicit placements for ``todo`` next to ``kept``, or None; exhaustive with memoised failures."""
    failed: set[tuple[int, int, int]] = set()

    def place(i: int, live: list[Slot], floor: int) -> list[Slot] | None:
        if i == len(todo):
            return []
        key = (i, occupied(catalog, live), floor)
        if key in failed:
            return None
        name, size = todo[i], catalog.profile(todo[i]).size
        starts = [s for s in catalog.profile(name).starts if s >= floor]
        starts = [s for s in starts if why_not(catalog, live, name, s) is None]
        bits = occupied(catalog, live)
        for s in sorted(starts, key=lambda s: (blocked_count(catalog, bits, s, size), s)):
            # Identical profiles are interchangeable: placing them in rising start order prunes
            # permutations without losing any layout.
            nxt = s + 1 if i + 1 < len(todo) and todo[i + 1] == name else 0
            rest = place(i + 1, [*live, Slot(profile=name, start=s)], nxt)
            if rest is not None:
                return [Slot(profile=name, start=s), *rest]
        failed.add(key)
        return None

    return place(0, kept, 0)


def _order(catalog: Catalog, names: Iterable[str]) -> list[str]:
    # Largest first: big instances have the fewest legal starts, so the search fails fast.
    return sorted(names, key=lambda n: (-catalog.profile(n).size, -catalog.profile(n).compute_slices, n))


def _precheck(catalog: Catalog, wanted: Sequence[str]) -> NoPlan | None:
    units = sum(catalog.profile(n).size for n in wanted)
    if units > catalog.grid:
        return NoPlan(reason=f"needs {units} memory units, a {catalog.type_id} has {catalog.grid}")
    for name, n in Counter(wanted).items():
        if n > (cap := catalog.profile(name).max_count):
            return NoPlan(reason=f"{n} x {name} wanted, a {catalog.type_id} allows {cap}")
    if _search(catalog, [], _order(catalog, wanted)) is None:
        return NoPlan(reason=f"no placement of {sorted(wanted)} fits a {catalog.type_id}")
    return None


def _keep_sets(idle: list[Slot]) -> Iterable[tuple[Slot, ...]]:
    """Subsets of the idle instances, most kept first (ties: larger instances first)."""
    for k in range(len(idle), -1, -1):
        yield from itertools.combinations(idle, k)


def plan_layout(
    catalog: Catalog,
    existing: Sequence[InstanceLike],
    wanted: Sequence[str],
    busy: Iterable[InstanceLike] = (),
) -> Layout | NoPlan:
    """A layout holding exactly ``wanted`` that keeps every busy and as many idle instances as it can.

    InvalidArgument for a profile the card does not have.  NoPlan when ``wanted`` cannot fit at all,
    or a busy instance is not wanted or is in the way.  Pure and deterministic; exhaustive yet
    cheap on these grids (well under a millisecond per card in bench measurements).
    """
    live = _slots(existing)
    busy_set = _busy(existing, busy) & set(live)
    if (pre := _precheck(catalog, wanted)) is not None:
        return pre
    excess = Counter(s.profile for s in busy_set) - Counter(wanted)
    if excess:
        blocking = tuple(sorted(s for s in busy_set if excess[s.profile] > 0))
        reason = f"busy instances are not in the wanted layout: {sorted(excess)}"
        return NoPlan(reason=reason, blocking=blocking)
    wanted_left = Counter(wanted) - Counter(s.profile for s in busy_set)
    idle = sorted(
        (s for s in live if s not in busy_set and wanted_left[s.profile] > 0),
        key=lambda s: (-catalog.profile(s.profile).size, s),
    )
    for keep in _keep_sets(idle):
        kept = [*sorted(busy_set), *keep]
        if Counter(s.profile for s in kept) - Counter(wanted) or _conflict(catalog, kept):
            continue
        todo = Counter(wanted) - Counter(s.profile for s in kept)
        placed = _search(catalog, kept, _order(catalog, todo.elements()))
        if placed is not None:
            return Layout(type_id=catalog.type_id, slots=tuple(sorted([*kept, *placed], key=_by_start)))
    return NoPlan(
        reason=f"{sorted(wanted)} fits an empty {catalog.type_id} but not around the busy instances",
        blocking=tuple(sorted(busy_set)),
    )


def _by_start(s: Slot) -> tuple[int, str]:
    return (s.start, s.profile)


def _conflict(catalog: Catalog, kept: list[Slot]) -> bool:
    """True if the kept instances are not a legal layout by themselves (never on a healthy card)."""
    return any(why_not(catalog, kept[:i], s.profile, s.start) is not None for i, s in enumerate(kept))


def plan_transition(
    current: Sequence[InstanceLike],
    target: Layout | Sequence[InstanceLike],
    busy: Iterable[InstanceLike] = (),
) -> Transition | NoPlan:
    """The instances to destroy and create to turn ``current`` into ``target``.

    Instances are matched by (profile, start): one in both stays untouched.  NoPlan, naming them,
    if the transition would destroy a busy instance.
    """
    cur = set(_slots(current))
    tgt = set(target.slots) if isinstance(target, Layout) else set(_slots(target))
    destroy = sorted(cur - tgt, key=_by_start)
    blocking = tuple(s for s in destroy if s in _busy(current, busy))
    if blocking:
        names = ", ".join(f"{s.profile} at {s.start}" for s in blocking)
        return NoPlan(reason=f"busy instances would be destroyed: {names}", blocking=blocking)
    return Transition(destroy=tuple(destroy), create=tuple(sorted(tgt - cur, key=_by_start)))
