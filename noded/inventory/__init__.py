"""noded's GPU inventory: what GPUs the host has (simulated or NVML) and the host's own facts."""

from noded.inventory._gpus import MigBackendGpus, NvmlGpus, SimulatedGpus, gpu_type_id
from noded.inventory._host import HostFacts, host_facts
from noded.inventory._protocol import GpuInventory

__all__ = [
    "GpuInventory",
    "HostFacts",
    "MigBackendGpus",
    "NvmlGpus",
    "SimulatedGpus",
    "gpu_type_id",
    "host_facts",
]
