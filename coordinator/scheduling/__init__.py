"""Pure scheduling planners: the autoscaler, the placer, the worker reconciler, suspended workers,
and MIG's slice fitter, ahead-of-time planner and demand history.

Nothing here reads a clock, a store or a random source: the leader's loops
pass time, ids and snapshots in and apply the plans that come out.  The stored records the
planners read (nodes, assignments, MIG layouts and demand history) are exported beside them, so
a caller that is not the leader (``simulate/``, the discrete-event simulator) can build them.
"""

from coordinator._node_schema import MigDemandRecord, MigLayoutRecord, NodeRecord, WorkerAssignment
from coordinator.scheduling._autoscaler import (
    QueueStats,
    ScaleDecision,
    ScalerState,
    WorkerView,
    compute_desired_workers,
)
from coordinator.scheduling._batch_pace import BatchPace, PaceInput, plan_batch_pace
from coordinator.scheduling._gpu_types import GPU_TYPE_ALIASES, GpuNeed, canonical_gpu_type, parse_gpu_type_id
from coordinator.scheduling._mig_ahead import (
    DEFAULT_AHEAD,
    AheadCard,
    AheadPlan,
    AheadSettings,
    CardTarget,
    plan_ahead,
    window_hour,
)
from coordinator.scheduling._mig_demand import (
    DEFAULT_DEMAND,
    SAMPLE_INTERVAL_S,
    DemandSettings,
    Forecast,
    bucket_label,
    buckets_of,
    compute_demand,
    forecast_for,
    update_demand,
)
from coordinator.scheduling._mig_fit import CardState, MigSliceFitter, card_state, catalog_of, slice_share
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
from coordinator.scheduling._suspend import (
    DEFAULT_SUSPEND,
    SuspendCandidate,
    SuspendedWorker,
    SuspendPlan,
    SuspendSettings,
    plan_evictions,
    plan_suspend,
)

__all__ = [
    "DEFAULT_AHEAD",
    "DEFAULT_DEMAND",
    "DEFAULT_HOST_RESERVE",
    "DEFAULT_SUSPEND",
    "GPU_TYPE_ALIASES",
    "NO_RECUT",
    "SAMPLE_INTERVAL_S",
    "AheadCard",
    "AheadPlan",
    "AheadSettings",
    "Assignment",
    "BatchPace",
    "CardState",
    "CardTarget",
    "ClusterSnapshot",
    "CurrentWorker",
    "DemandSettings",
    "Forecast",
    "GpuNeed",
    "HostReserve",
    "MigDemandRecord",
    "MigLayoutRecord",
    "MigSliceFitter",
    "NoRecut",
    "NodeRecord",
    "NodeSnapshot",
    "PaceInput",
    "PlacementPlan",
    "PlacementRequest",
    "QueueStats",
    "ReconcilePlan",
    "ScaleDecision",
    "ScalerState",
    "SliceFitter",
    "SliceRecut",
    "SuspendCandidate",
    "SuspendPlan",
    "SuspendSettings",
    "SuspendedWorker",
    "WorkerAssignment",
    "WorkerView",
    "bucket_label",
    "buckets_of",
    "canonical_gpu_type",
    "card_state",
    "catalog_of",
    "compute_demand",
    "compute_desired_workers",
    "forecast_for",
    "parse_gpu_type_id",
    "plan_ahead",
    "plan_batch_pace",
    "plan_evictions",
    "plan_placement",
    "plan_reconcile",
    "plan_suspend",
    "slice_share",
    "update_demand",
    "window_hour",
]
