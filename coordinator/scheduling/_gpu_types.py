"""GPU type ids: what an endpoint's ``gpu_type_ids`` entries mean to the placer.

An entry is one of:

* a whole-GPU type, Tide's canonical id (``"H100-80GB"``) or a RunPod name that
  aliases it (``"NVIDIA H100 80GB HBM3"``);
* a MIG profile on a type, ``"H100-80GB:3g.40gb"`` (the type part may be an alias);
* a MIG memory class, ``"mig-24gb"``: any MIG slice, on any type, with at least
  that much memory as its profile name states (``1g.24gb``, ``3g.40gb``).

Unknown names are kept as they are written: a host whose GPUs report that type
id still matches, and the "nothing fits" reason names it, so a typo shows up as
"no free H100-80G" instead of silently matching nothing.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from tide.api.gpu_types import GPU_TYPE_ALIASES, canonical_gpu_type

__all__ = [
    "ANY_GPU",
    "GPU_TYPE_ALIASES",
    "GpuNeed",
    "canonical_gpu_type",
    "parse_gpu_type_id",
    "profile_memory_gb",
]

_MIG_CLASS = re.compile(r"^mig-(\d+)gb$", re.IGNORECASE)
_PROFILE_MEMORY = re.compile(r"^\d+g\.(\d+)gb", re.IGNORECASE)


class GpuNeed(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed ``gpu_type_ids`` entry.  ``label`` is how messages name it."""

    kind: Literal["any", "gpu", "mig", "mig-class"]
    label: str
    type_id: str = ""  # canonical type for "gpu" and "mig"
    profile: str = ""  # MIG profile for "mig"
    min_memory_gb: int = 0  # for "mig-class"


def profile_memory_gb(profile: str) -> int:
    """Memory a MIG profile name states (``"3g.40gb"`` -> 40); 0 when the name has none."""
    m = _PROFILE_MEMORY.match(profile)
    return int(m.group(1)) if m else 0


def parse_gpu_type_id(entry: str) -> GpuNeed:
    """Parse one ``gpu_type_ids`` entry (see the module docstring)."""
    stripped = entry.strip()
    m = _MIG_CLASS.match(stripped)
    if m:
        gb = int(m.group(1))
        return GpuNeed(kind="mig-class", label=f"mig-{gb}gb", min_memory_gb=gb)
    if ":" in stripped:
        base, profile = stripped.split(":", 1)
        type_id = canonical_gpu_type(base)
        profile = profile.strip()
        return GpuNeed(kind="mig", label=f"{type_id}:{profile}", type_id=type_id, profile=profile)
    type_id = canonical_gpu_type(stripped)
    return GpuNeed(kind="gpu", label=type_id, type_id=type_id)


ANY_GPU = GpuNeed(kind="any", label="GPU of any type")
