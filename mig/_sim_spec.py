"""The simulator's GPU spec: ``"2xH100-80GB:mig,1xL40S-48GB"`` -> simulated cards."""

from __future__ import annotations

import re

import msgspec

from mig._backend import GpuDevice
from mig._catalog import Catalog, list_type_ids, load_catalog
from tide.api.errors import InvalidArgument
from tide.api.gpu_types import canonical_gpu_type

__all__ = ["SimGpu", "device_for", "parse_gpu_spec"]


class SimGpu(msgspec.Struct, frozen=True, kw_only=True):
    type_id: str  # a catalog type ("H100-80GB") or any other ("L40S-48GB": not MIG-capable)
    mig_enabled: bool = False
    passthrough: bool = False  # mode changes wait for a reboot (VM pass-through, vGPU host)


def parse_gpu_spec(spec: str) -> list[SimGpu]:
    """``"2xH100-80GB:mig,1xRTXPRO6000-96GB"`` -> GPUs; flags ``:mig`` and ``:passthrough``.

    A type may be written as any alias of its canonical id (``"8xB300-288GB"`` is ``B300-269GB``).
    """
    gpus: list[SimGpu] = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        m = re.fullmatch(r"(?:(\d+)x)?([A-Za-z0-9][A-Za-z0-9.\-]*)((?::[a-z]+)*)", entry)
        if not m:
            raise InvalidArgument(f"bad GPU spec entry {entry!r}: want [Nx]TYPE[:mig][:passthrough]")
        flags = set(filter(None, m.group(3).split(":")))
        if flags - {"mig", "passthrough"}:
            raise InvalidArgument(f"bad GPU spec flags in {entry!r}: {sorted(flags)}")
        type_id = canonical_gpu_type(m.group(2))
        if type_id not in list_type_ids() and not re.fullmatch(r".+-\d+GB", type_id):
            known = ", ".join(list_type_ids())
            raise InvalidArgument(f"unknown GPU type {type_id!r}: MIG types are {known}; others NAME-<N>GB")
        one = SimGpu(type_id=type_id, mig_enabled="mig" in flags, passthrough="passthrough" in flags)
        gpus.extend([one] * int(m.group(1) or 1))
    return gpus


def device_for(index: int, gpu_uuid: str, spec: SimGpu) -> tuple[GpuDevice, Catalog | None]:
    if spec.type_id in list_type_ids():
        cat = load_catalog(spec.type_id)
        name, memory = cat.nvml_names[0], cat.memory_mb
    else:
        cat = None
        m = re.fullmatch(r"(.+?)-(\d+)GB", spec.type_id)
        name = f"NVIDIA {m.group(1) if m else spec.type_id}"
        memory = int(m.group(2)) * 1024 if m else 0
    dev = GpuDevice(index=index, uuid=gpu_uuid, name=name, memory_mb=memory, mig_capable=cat is not None)
    return dev, cat
