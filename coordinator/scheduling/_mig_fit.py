"""On-demand MIG partitioning, the pure half: which card to re-cut, into what, and when.

The placer (coordinator/scheduling) hands out free MIG instances first; when none fits it asks a
:class:`MigSliceFitter` whether an idle MIG-enabled card could be re-cut.  The fitter answers
with mig/'s planner: a new layout holding every instance in use (assigned to a worker, or busy
with a process noded saw) exactly where it is, the wanted profile, and as many of the idle
instances as still fit in place.  Only idle instances that are in the way are destroyed.

The wanted layout of a card is stored as a :class:`MigLayoutRecord` (a profile multiset) that
noded applies; until noded reports it, the card is *pending*: its free instances are withheld
(a re-cut may destroy them) and it is offered only for the slices the pending layout is about
to create.  Hysteresis: a card is re-cut at most once per ``min_interval_s``.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Literal

from coordinator._node_schema import MigLayoutRecord
from coordinator.scheduling._gpu_types import GpuNeed
from mig import Catalog, Layout, Slot, load_catalog, plan_layout
from tide.api.errors import NotFound
from tide.api.gpu_types import canonical_gpu_type
from tide.api.nodes import GpuInfo, MigInstance

__all__ = [
    "CardState",
    "MigSliceFitter",
    "card_state",
    "catalog_of",
    "plan_recut",
    "profiles_for",
    "slice_share",
]

CardState = Literal["unmanaged", "settled", "pending", "failed"]
_PLAIN = re.compile(r"^\d+g\.(\d+)gb$")  # no media-engine or graphics variant


@functools.cache
def catalog_of(type_id: str) -> Catalog | None:
    """The MIG catalog of a GPU type (any alias), or None for a type that has none."""
    try:
        return load_catalog(canonical_gpu_type(type_id))
    except NotFound:
        return None


def slice_share(type_id: str, profile: str) -> float:
    """The share of a card a MIG slice takes, for pricing: the larger of its memory units over
    the card's grid and its compute slices over the card's (what it keeps others from using).

    ``H100-80GB:3g.40gb`` is 4/8 = 0.5, ``RTXPRO6000-96GB:1g.24gb`` 3/12 = 0.25, a 7g or 4g.96gb
    the whole card.  A profile no catalog knows falls back to its compute slices over 7.
    """
    catalog = catalog_of(type_id)
    if catalog is not None and catalog.has_profile(profile):
        p = catalog.profile(profile)
        return max(p.size / catalog.grid, p.compute_slices / catalog.compute_slices)
    m = re.match(r"^(\d+)g\.", profile)
    return min(1.0, int(m.group(1)) / 7) if m else 1.0


def profiles_for(catalog: Catalog, need: GpuNeed) -> list[str]:
    """The profiles that satisfy ``need`` on this card type, best first.

    A named profile is itself; a memory class (``mig-24gb``) is every plain profile (no
    ``+me``/``-me``/``+gfx`` variant) whose name states at least that much memory, least memory
    first, then fewest compute slices: the smallest slice that fits wastes least.
    """
    if need.kind == "mig":
        same_type = canonical_gpu_type(need.type_id) == catalog.type_id
        return [need.profile] if same_type and catalog.has_profile(need.profile) else []
    if need.kind != "mig-class":
        return []
    plain = [(int(m.group(1)), p) for p in catalog.profiles if (m := _PLAIN.match(p.name))]
    fitting = [(gb, p) for gb, p in plain if gb >= need.min_memory_gb]
    return [p.name for _, p in sorted(fitting, key=lambda t: (t[0], t[1].compute_slices, t[1].name))]


def _slot(inst: MigInstance) -> Slot:
    return Slot(profile=inst.profile, start=inst.start)


def plan_recut(catalog: Catalog, gpu: GpuInfo, in_use: Collection[str], profile: str) -> Layout | None:
    """A layout for ``gpu`` that adds ``profile``, or None if no re-cut can fit it.

    Every instance that is busy or whose uuid is in ``in_use`` stays where it is; idle instances
    stay in place too unless they are in the way (largest kept first).  Pure; a handful of
    mig.plan_layout calls (each well under a millisecond).
    """
    held = [i for i in gpu.mig_instances if i.busy or i.uuid in in_use]
    idle = sorted(
        (i for i in gpu.mig_instances if not (i.busy or i.uuid in in_use)),
        key=lambda i: (-i.size, i.start),
    )
    held_slots = [_slot(i) for i in held]
    wanted = [i.profile for i in held] + [profile]
    kept = set(held_slots)
    layout = plan_layout(catalog, gpu.mig_instances, wanted, busy=held_slots)
    if not isinstance(layout, Layout) or not kept <= set(layout.slots):
        return None
    for inst in idle:
        trial = plan_layout(catalog, gpu.mig_instances, [*wanted, inst.profile], busy=held_slots)
        if isinstance(trial, Layout) and kept | {_slot(inst)} <= set(trial.slots):
            wanted.append(inst.profile)
            kept.add(_slot(inst))
            layout = trial
    return layout


def card_state(gpu: GpuInfo, record: MigLayoutRecord | None, error: str, *, stale: bool = False) -> CardState:
    """Where a card stands against its stored layout.

    ``unmanaged``: no stored layout (noded leaves the card alone); ``settled``: the card holds
    it; ``pending``: noded has yet to apply it; ``failed``: noded reports why it cannot, or it is
    ``stale`` (pending for too long: an old noded, a wedged driver).
    """
    if record is None:
        return "unmanaged"
    if gpu.mig_enabled and Counter(record.profiles) == Counter(i.profile for i in gpu.mig_instances):
        return "settled"
    return "failed" if error or stale else "pending"


class MigSliceFitter:
    """The placer's SliceFitter over mig/ (see the module docstring).  Built per scheduling pass.

    ``layouts`` and ``errors`` are keyed by GPU uuid: the stored layouts and what noded reports
    in ``inventory.mig_errors``.  ``proposals`` records, per card, the profiles of the layout
    the last successful :meth:`fit` chose (the placer reserves a card after one), so the caller
    can store exactly that layout.  Pure apart from that memo.
    """

    def __init__(
        self,
        *,
        layouts: Mapping[str, MigLayoutRecord],
        errors: Mapping[str, str],
        now: float,
        min_interval_s: float,
        pending_timeout_s: float = 120.0,
    ) -> None:
        self._layouts = layouts
        self._errors = errors
        self._now = now
        self._interval = min_interval_s
        self._timeout = pending_timeout_s
        self.proposals: dict[str, list[str]] = {}

    def state(self, gpu: GpuInfo) -> CardState:
        record = self._layouts.get(gpu.uuid)
        stale = record is not None and self._now - record.written_at > self._timeout
        return card_state(gpu, record, self._errors.get(gpu.uuid, ""), stale=stale)

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None:
        catalog = catalog_of(gpu.type_id)
        if catalog is None or not gpu.mig_enabled:
            return None
        candidates = profiles_for(catalog, need)
        record = self._layouts.get(gpu.uuid)
        if self.state(gpu) == "pending" and record is not None:
            # The card is being cut already: it serves only what that cut creates.
            coming = Counter(record.profiles) - Counter(i.profile for i in gpu.mig_instances)
            for profile in candidates:
                if coming[profile] > 0:
                    self.proposals[gpu.uuid] = list(record.profiles)
                    return profile
            return None
        if record is not None and self._now - record.written_at < self._interval:
            return None  # hysteresis: this card was cut a moment ago
        for profile in candidates:
            layout = plan_recut(catalog, gpu, in_use, profile)
            if layout is not None:
                self.proposals[gpu.uuid] = [s.profile for s in layout.slots]
                return profile
        return None
