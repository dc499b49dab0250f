"""Pure scheduling planners: the autoscaler, the placer and the worker reconciler.

Nothing here reads a clock, a store or a random source: the leader's loops
pass time, ids and snapshots in and apply the plans that come out.
"""

from coordinator.scheduling._autoscaler import (
    QueueStats,
    ScaleDecision,
    ScalerState,
    WorkerView,
    compute_desired_workers,
)
from coordinator.scheduling._gpu_types import GPU_TYPE_ALIASES, GpuNeed, canonical_gpu_type, parse_gpu_type_id
from coordinator.scheduling._placement_types import (
    NO_RECUT,
    Assignment,
    ClusterSnapshot,
    NodeSnapshot,
    NoRecut,
    PlacementPlan,
    PlacementRequest,
    SliceFitter,
    SliceRecut,
)
from coordinator.scheduling._placer import plan_placement
from coordinator.scheduling._reconcile import CurrentWorker, ReconcilePlan, plan_reconcile
from coordinator.scheduling._resources import DEFAULT_HOST_RESERVE, HostReserve

__all__ = [
    "DEFAULT_HOST_RESERVE",
    "GPU_TYPE_ALIASES",
    "NO_RECUT",
    "Assignment",
    "ClusterSnapshot",
    "CurrentWorker",
    "GpuNeed",
    "HostReserve",
    "NoRecut",
    "NodeSnapshot",
    "PlacementPlan",
    "PlacementRequest",
    "QueueStats",
    "ReconcilePlan",
    "ScaleDecision",
    "ScalerState",
    "SliceFitter",
    "SliceRecut",
    "WorkerView",
    "canonical_gpu_type",
    "compute_desired_workers",
    "parse_gpu_type_id",
    "plan_placement",
    "plan_reconcile",
]
