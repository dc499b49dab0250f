"""GpuInventory implementations over a MigBackend: simulated GPUs and NVML.

Both read everything through ``mig.MigBackend``, so a simulated host and a real one report GPUs
the same way, and noded's MIG reconciler can drive the very backend the inventory reads
(``.backend``).
"""

from __future__ import annotations

import asyncio
import re

from mig import (
    GpuDevice,
    MigBackend,
    NvmlMigBackend,
    SimulatedMigBackend,
    catalog_for_name,
    list_instances,
    list_type_ids,
)
from tide.api.errors import Unavailable
from tide.api.gpu_types import GPU_TYPE_ALIASES
from tide.api.nodes import GpuInfo

__all__ = ["MigBackendGpus", "NvmlGpus", "SimulatedGpus", "gpu_type_id"]

_NOISE = {"nvidia", "geforce", "generation"}


def gpu_type_id(name: str, memory_mb: int) -> str:
    """Tide's canonical type id for an NVML device name, e.g. ``"H100-80GB"``, ``"L40S-48GB"``.

    MIG types come from the catalogs; other cards get ``<NAME>-<GiB>GB`` (``"RTX5090-32GB"``).
    """
    if (type_id := catalog_for_name(name)) is not None:
        return type_id
    if name in GPU_TYPE_ALIASES:  # the table the coordinator's placer reads too
        return GPU_TYPE_ALIASES[name]
    words = [w for w in re.split(r"[\s\-_]+", name) if w and w.lower() not in _NOISE]
    return f"{''.join(words).upper()}-{round(memory_mb / 1024)}GB"


class MigBackendGpus:
    """A GpuInventory that reads GPUs, MIG modes and MIG instances through a MigBackend."""

    def __init__(self, backend: MigBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> MigBackend:
        return self._backend

    async def list_gpus(self) -> list[GpuInfo]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[GpuInfo]:
        out = []
        for dev in self._backend.list_gpus():
            try:
                out.append(self._gpu(dev))
            except Unavailable:
                continue  # lost between listing and reading: the next call says so
        return out

    def _gpu(self, dev: GpuDevice) -> GpuInfo:
        type_id = gpu_type_id(dev.name, dev.memory_mb)
        capable = dev.mig_capable and type_id in list_type_ids()
        enabled = capable and self._backend.get_mig_mode(dev.uuid).current
        return GpuInfo(
            index=dev.index,
            uuid=dev.uuid,
            type_id=type_id,
            name=dev.name,
            memory_mb=dev.memory_mb,
            mig_capable=capable,
            mig_enabled=enabled,
            mig_instances=list_instances(self._backend, dev.uuid) if enabled else [],
        )


class SimulatedGpus(MigBackendGpus):
    """Fake GPUs for development and tests, backed by a SimulatedMigBackend it owns."""

    def __init__(self, backend: SimulatedMigBackend) -> None:
        super().__init__(backend)
        self._sim = backend

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> SimulatedGpus:
        """``"2xH100-80GB,1xRTXPRO6000-96GB"`` (``:mig`` after a type starts it MIG-enabled).

        UUIDs are stable for a given spec and seed.  InvalidArgument for a malformed spec.
        """
        return cls(SimulatedMigBackend.from_spec(spec, seed=seed))

    @property
    def backend(self) -> SimulatedMigBackend:
        return self._sim


class NvmlGpus(MigBackendGpus):
    """The host's real GPUs through NVML.  Unavailable if there is no driver; ``close`` at exit."""

    def __init__(self) -> None:
        self._nvml = NvmlMigBackend()  # imports pynvml now, not when noded.inventory is imported
        super().__init__(self._nvml)

    def close(self) -> None:
        self._nvml.close()
