"""The view: each replica's mirror of the small, hot parts of the store, fed by one watch."""

from coordinator.view._job_stats import JOBSTATS, JobStats, JobStatsFlusher, JobStatsRecord
from coordinator.view._queue import QueuedJob, Signal
from coordinator.view._view import ClusterView, JobFeed

__all__ = [
    "JOBSTATS",
    "ClusterView",
    "JobFeed",
    "JobStats",
    "JobStatsFlusher",
    "JobStatsRecord",
    "QueuedJob",
    "Signal",
]
