"""Named MIG layouts (NVIDIA mig-parted's names) and cutting a card into a layout.

``all-<profile>`` is every plain profile of a card's catalog, as many instances as the card
holds (mig-parted's ``all-1g.24gb: 4``); ``all-balanced`` is the GPU Operator's default mixed
layout for the card types it names (reference/mig.md §5.4).  Cutting a card uses mig/'s own
planner, so instance placements are the ones noded would choose.
"""

from __future__ import annotations

import functools
import re

from coordinator.scheduling import catalog_of
from mig import Catalog, Layout, plan_layout
from tide.api.nodes import MigInstance

__all__ = ["cut", "named_layouts"]

_PLAIN = re.compile(r"^\d+g\.\d+gb$")
# gpu-operator's default-mig-parted-config "all-balanced", per card type.
_BALANCED: dict[str, dict[str, int]] = {
    "A100-80GB": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "H100-80GB": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "H200-141GB": {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1},
    "B200-180GB": {"1g.23gb": 2, "2g.45gb": 1, "3g.90gb": 1},
    "RTXPRO6000-96GB": {"1g.24gb": 2, "2g.48gb": 1},
}


def _most(catalog: Catalog, profile: str) -> list[str]:
    for n in range(catalog.profile(profile).max_count, 0, -1):
        if isinstance(plan_layout(catalog, [], [profile] * n), Layout):
            return [profile] * n
    return []


@functools.cache
def named_layouts(type_id: str) -> dict[str, tuple[str, ...]]:
    """Layout name -> profiles (a multiset) for one card type; empty for a type without MIG."""
    catalog = catalog_of(type_id)
    if catalog is None:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for p in catalog.profiles:
        if _PLAIN.match(p.name) and (profiles := _most(catalog, p.name)):
            out[f"all-{p.name}"] = tuple(profiles)
    balanced = _BALANCED.get(catalog.type_id)
    if balanced and all(catalog.has_profile(p) for p in balanced):
        out["all-balanced"] = tuple(p for p, n in balanced.items() for _ in range(n))
    return out


def cut(
    catalog: Catalog,
    instances: list[MigInstance],
    profiles: list[str],
    keep: list[MigInstance],
    uuid_prefix: str,
    serial: int,
) -> tuple[list[MigInstance], int] | None:
    """The card's instances after noded applies ``profiles``: ``keep`` stays in place, the
    rest are destroyed or created where mig.plan_layout puts them.  New uuids are
    ``<uuid_prefix>-<serial>`` (the caller's counter, returned advanced).  None: no layout."""
    held = [i for i in instances if i in keep]
    layout = plan_layout(catalog, instances, profiles, busy=held)
    if not isinstance(layout, Layout):
        return None
    old = {(i.profile, i.start): i for i in instances}
    out: list[MigInstance] = []
    for slot in layout.slots:
        found = old.get((slot.profile, slot.start))
        if found is None:
            size = catalog.profile(slot.profile).size
            found = MigInstance(
                uuid=f"{uuid_prefix}-{serial}", profile=slot.profile, start=slot.start, size=size
            )
            serial += 1
        out.append(found)
    return out, serial
