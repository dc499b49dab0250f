"""mig: MIG profile catalogs, a pure layout planner, and the MigBackend (NVML and simulator).

Only ``tide.api`` is imported from the rest of Tide; ``pynvml`` is imported lazily by the NVML
backend alone, so this package works on hosts without a GPU.
"""

from mig._catalog import (
    Catalog,
    EngineBudget,
    Placement,
    Profile,
    catalog_for_name,
    list_type_ids,
    load_catalog,
)
from mig._planner import Layout, NoPlan, Transition, fits, plan_layout, plan_transition
from mig._rules import Slot

__all__ = [
    "Catalog",
    "EngineBudget",
    "Layout",
    "NoPlan",
    "Placement",
    "Profile",
    "Slot",
    "Transition",
    "catalog_for_name",
    "fits",
    "list_type_ids",
    "load_catalog",
    "plan_layout",
    "plan_transition",
]
