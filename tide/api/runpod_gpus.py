"""RunPod's GPU names as its management API speaks them, mapped onto Tide's GPU types.

RunPod's GraphQL ``saveEndpoint`` takes ``gpuIds``: a comma string of GPU *pools*
(``AMPERE_16``), optionally with exclusions of single types (``"ADA_24,-NVIDIA GeForce RTX
4090"``); ``gpuTypes`` lists single types by RunPod's id (``"NVIDIA H100 80GB HBM3"``).  Tide
keeps an endpoint's GPUs as a priority list of its own type ids (tide/api/gpu_types.py), so
a pool becomes the Tide types of its GPUs, in the pool's order.  Pools and their GPUs are
RunPod's (reference/runpod_protocol.md §4.2, docs ``references/gpu-types``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from tide.api.errors import InvalidArgument
from tide.api.gpu_types import canonical_gpu_type

__all__ = ["GPU_POOLS", "RUNPOD_GPU_TYPES", "RunPodGpuType", "gpu_ids_of", "tide_types_of"]


class RunPodGpuType(NamedTuple):
    id: str  # RunPod's gpuTypeId (NVML's product name, mostly)
    display_name: str
    memory_in_gb: int
    tide_type: str  # Tide's canonical type id


_T = RunPodGpuType
RUNPOD_GPU_TYPES: Final[tuple[RunPodGpuType, ...]] = (
    _T("NVIDIA RTX A4000", "RTX A4000", 16, "RTXA4000-16GB"),
    _T("NVIDIA RTX A4500", "RTX A4500", 20, "RTXA4500-20GB"),
    _T("NVIDIA RTX 4000 Ada Generation", "RTX 4000 Ada", 20, "RTX4000ADA-20GB"),
    _T("NVIDIA RTX 2000 Ada Generation", "RTX 2000 Ada", 16, "RTX2000ADA-16GB"),
    _T("NVIDIA L4", "L4", 24, "L4-24GB"),
    _T("NVIDIA RTX A5000", "RTX A5000", 24, "RTXA5000-24GB"),
    _T("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "RTX3090-24GB"),
    _T("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "RTX4090-24GB"),
    _T("NVIDIA RTX A6000", "RTX A6000", 48, "RTXA6000-48GB"),
    _T("NVIDIA A40", "A40", 48, "A40-48GB"),
    _T("NVIDIA L40", "L40", 48, "L40-48GB"),
    _T("NVIDIA L40S", "L40S", 48, "L40S-48GB"),
    _T("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 48, "RTX6000ADA-48GB"),
    _T("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, "A100-80GB"),
    _T("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, "A100-80GB"),
    _T("NVIDIA H100 PCIe", "H100 PCIe", 80, "H100-80GB"),
    _T("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "H100-80GB"),
    _T("NVIDIA H100 NVL", "H100 NVL", 94, "H100-94GB"),
    _T("NVIDIA H200", "H200 SXM", 141, "H200-141GB"),
    _T("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000", 96, "RTXPRO6000-96GB"),
    _T("NVIDIA B200", "B200", 180, "B200-180GB"),
    _T("NVIDIA B300 SXM6 AC", "B300", 288, "B300-269GB"),
)

# Pool id -> RunPod GPU type ids, in RunPod's order.
GPU_POOLS: Final[dict[str, tuple[str, ...]]] = {
    "AMPERE_16": (
        "NVIDIA RTX A4000",
        "NVIDIA RTX A4500",
        "NVIDIA RTX 4000 Ada Generation",
        "NVIDIA RTX 2000 Ada Generation",
    ),
    "AMPERE_24": ("NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090"),
    "ADA_24": ("NVIDIA GeForce RTX 4090",),
    "AMPERE_48": ("NVIDIA RTX A6000", "NVIDIA A40"),
    "ADA_48_PRO": ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation"),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL"),
    "HOPPER_141": ("NVIDIA H200",),
    "BLACKWELL_96": ("NVIDIA RTX PRO 6000 Blackwell Server Edition",),
    "BLACKWELL_180": ("NVIDIA B200",),
}

_BY_ID: Final = {t.id.casefold(): t for t in RUNPOD_GPU_TYPES}


def _type(name: str) -> RunPodGpuType:
    found = _BY_ID.get(name.strip().casefold())
    if found is None:
        raise InvalidArgument(
            f"unknown GPU type {name.strip()!r} in gpuIds; name one of: "
            + ", ".join(t.id for t in RUNPOD_GPU_TYPES)
        )
    return found


def tide_types_of(gpu_ids: str) -> list[str]:
    """Tide's GPU types, in priority order, for a RunPod ``gpuIds`` string.

    ``"ADA_24,AMPERE_48,-NVIDIA A40"``: the pools' types in order, less the excluded ones.
    Empty: any GPU.  An unknown pool or type is an :class:`InvalidArgument` naming the known ones.
    """
    parts = [p.strip() for p in gpu_ids.split(",") if p.strip()]
    excluded = {_type(p[1:]).id for p in parts if p.startswith("-")}
    wanted: list[str] = []
    for part in parts:
        if part.startswith("-"):
            continue
        pool = GPU_POOLS.get(part.upper())
        if pool is None and part.casefold() in _BY_ID:
            pool = (part,)  # one type by its RunPod id (a type no pool holds, such as B300)
        if pool is None:
            raise InvalidArgument(
                f"unknown GPU pool {part!r} in gpuIds; use a comma list of pools ({', '.join(GPU_POOLS)}) "
                "or GPU type ids (gpuTypes lists them), with '-<GPU type id>' to leave a type out, "
                "e.g. 'ADA_24,-NVIDIA GeForce RTX 4090'"
            )
        wanted += [_type(t).tide_type for t in pool if t not in excluded]
    return list(dict.fromkeys(wanted))


def gpu_ids_of(tide_types: list[str]) -> str:
    """The ``gpuIds`` string for an endpoint's Tide types: each pool that has one of them,
    with exclusions for the pool's types it lacks, and types no pool holds by their own id.
    ``tide_types_of`` of the answer gives the same types back, the first first (what RunPod
    cannot name, such as MIG profiles, is left out)."""
    order = {canonical_gpu_type(t): i for i, t in reversed(list(enumerate(tide_types)))}
    pools = [(p, [_type(m) for m in members]) for p, members in GPU_POOLS.items()]
    pooled = {m for members in GPU_POOLS.values() for m in members}
    pools += [(t.id, [t]) for t in RUNPOD_GPU_TYPES if t.id not in pooled]  # named alone
    ranked = sorted(
        ((min(order[t.tide_type] for t in types if t.tide_type in order), p, types)
         for p, types in pools if any(t.tide_type in order for t in types)),
        key=lambda r: r[0],
    )  # fmt: skip
    parts: list[str] = []
    for _, pool, types in ranked:  # the endpoint's priority order
        parts.append(pool)
        parts += [f"-{t.id}" for t in types if t.tide_type not in order]
    return ",".join(parts)
