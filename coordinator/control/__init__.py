"""The leader's control loops: the scheduling pass (autoscale, reconcile, place, apply) and the
MIG passes inside it (on-demand re-cuts, ahead-of-time re-cuts, demand history), and the
object store's orphan sweep.  They read the
view, run the pure planners of coordinator/scheduling and write their plans to the store."""

from coordinator.control._blob_sweep import BlobSweeper, BlobSweepSettings, job_owner, plan_sweep
from coordinator.control._metering import UsageCloser
from coordinator.control._mig_ahead_loop import MigAhead, RegionForecast
from coordinator.control._scheduler import Scheduler

__all__ = [
    "BlobSweepSettings",
    "BlobSweeper",
    "MigAhead",
    "RegionForecast",
    "Scheduler",
    "UsageCloser",
    "job_owner",
    "plan_sweep",
]
