"""mig: MIG profile catalogs, a pure layout planner, and the MigBackend (NVML and simulator).

Only ``tide.api`` is imported from the rest of Tide; ``pynvml`` is imported lazily by the NVML
backend alone, so this package works on hosts without a GPU.
"""

from mig._backend import (
    ComputeInstanceInfo,
    GiProfileInfo,
    GpuDevice,
    GpuInstanceInfo,
    MigBackend,
    MigDevice,
    MigMode,
)
from mig._catalog import (
    Catalog,
    EngineBudget,
    Placement,
    Profile,
    catalog_for_name,
    list_type_ids,
    load_catalog,
)
from mig._nvml import NvmlMigBackend
from mig._ops import apply_transition, create_instance, destroy_instance, list_instances
from mig._planner import Layout, NoPlan, Transition, fits, plan_layout, plan_transition
from mig._rules import Slot
from mig._simulator import SimGpu, SimulatedMigBackend, parse_gpu_spec

__all__ = [
    "Catalog",
    "ComputeInstanceInfo",
    "EngineBudget",
    "GiProfileInfo",
    "GpuDevice",
    "GpuInstanceInfo",
    "Layout",
    "MigBackend",
    "MigDevice",
    "MigMode",
    "NoPlan",
    "NvmlMigBackend",
    "Placement",
    "Profile",
    "SimGpu",
    "SimulatedMigBackend",
    "Slot",
    "Transition",
    "apply_transition",
    "catalog_for_name",
    "create_instance",
    "destroy_instance",
    "fits",
    "list_instances",
    "list_type_ids",
    "load_catalog",
    "parse_gpu_spec",
    "plan_layout",
    "plan_transition",
]
