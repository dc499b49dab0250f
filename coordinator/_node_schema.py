"""Stored types of the node side (under ``/tide/``)::

nodes/<node>                   NodeRecord        (inventory, reports, drain/lost flags)
workers/<node>/<worker>        WorkerAssignment  (a node's desired workers)
usage/<worker>                 UsageRecord       (metering: one per worker lifetime, or since its resume)
usage/<worker>.<ms>            UsageRecord       (a closed stretch before a suspend)
sched/epoch                    b"<n>"            (guards the placer's commits)
sched/reasons/<ep>             why workers of <ep> do not fit (empty = they do)
miglayouts/<node>/<gpu uuid>   MigLayoutRecord   (the MIG profiles noded must make that card hold)
coldstarts/<ep>                ColdStartHistory  (the endpoint's last cold starts, by the leader)
migdemand/<region>/<bucket>    MigDemandRecord   (devices demanded per region and hour bucket, by the leader)
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from tide.api.nodes import NodeInventory, WorkerReport

__all__ = [
    "ColdStart",
    "ColdStartHistory",
    "ColdStartStage",
    "MigDemandCell",
    "MigDemandRecord",
    "MigLayoutRecord",
    "NodeRecord",
    "UsageRecord",
    "WorkerAssignment",
    "nkeys",
]


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    inventory: NodeInventory
    address: str = ""  # noded's own HTTP address (worker logs)
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    draining: bool = False
    lost: bool = False
    workers: list[WorkerReport] = []


class WorkerAssignment(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    node_id: str
    gpu_type: str = ""
    devices: list[str] = []
    mig_profile: str = ""
    price_key: str = ""
    created_at: float = 0.0
    # Issue 16: frozen in place by noded (idle, scaled down); its devices are free capacity and it
    # is neither billed nor counted.  ``version``: the endpoint version it was suspended at (only
    # that version resumes it); ``resumed_at``: when it was last resumed (its next job's cold start).
    suspended: bool = False
    suspended_at: float = 0.0
    version: int = 0
    resumed_at: float = 0.0


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    node_id: str
    price_key: str
    gpus: int
    started_at: float
    stopped_at: float = 0.0  # 0 = still running (billed)
    unassigned_at: float = 0.0  # removed by the scheduler; billed until noded reports the exit


class MigLayoutRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A card's wanted MIG layout.  No record = noded leaves the card's instances alone."""

    node_id: str
    gpu_uuid: str
    profiles: list[str]  # a multiset; noded chooses placements that keep busy instances
    written_at: float  # hysteresis: the scheduler re-cuts a card at most once per interval
    source: str = "scheduler"  # or "admin" (tide mig apply)
    reason: str = ""  # what it was cut for, e.g. "endpoint ep-1 needs 2g.20gb"


class MigDemandCell(msgspec.Struct, frozen=True, kw_only=True):
    """One demand key of an hour bucket: ``"H100-80GB:3g.40gb"`` (a slice) or ``"H100-80GB"``
    (one whole GPU), in concurrent devices."""

    key: str
    avg: float = 0.0  # EWMA over the bucket's completed occurrences
    total: float = 0.0  # sum of this occurrence's samples (mean = total / samples)


class MigDemandRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a region demanded in one hour bucket (coordinator/scheduling/_mig_demand.py).

    ``bucket`` is ``"w033"`` (hour 33 of the week, Monday 00:00 UTC = 0) or ``"d09"`` (hour 9 of
    the day, UTC).  An occurrence is one real hour (unix hour ``occurrence``); the leader adds at
    most one sample a minute, and folds an occurrence into ``avg`` when the next one starts.
    """

    region: str
    bucket: str
    occurrences: int = 0  # completed occurrences folded into the cells' avg
    occurrence: int = -1  # unix hour of the occurrence being sampled
    samples: int = 0  # samples taken in that occurrence
    last_minute: int = -1  # unix minute of the last sample: one per minute, whoever leads
    cells: list[MigDemandCell] = []


class ColdStartStage(msgspec.Struct, frozen=True, kw_only=True):
    # fresh: placement | process_start | runtime_import | weight_restore | handler_ready | first_job
    # resume: placement | thaw | device_restore | handler_ready | first_job
    stage: str
    seconds: float
    tier: str = ""  # weight_restore: the nearest tier that held the weights


class ColdStart(msgspec.Struct, frozen=True, kw_only=True):
    """A fresh worker's start as its first job saw it (coordinator/jobs/_coldstart.py)."""

    endpoint_id: str
    worker_id: str
    node_id: str
    job_id: str  # the worker's first job
    submitted_at: float
    finished_at: float
    total_s: float  # the first job's submission to its result
    stages: list[ColdStartStage] = []
    weight_tier: str = ""  # the farthest tier its weights came from; "" = it reported none
    weight_bytes: int = 0
    complete: bool = False  # the worker's own boot (or resume) report is included
    # "fresh" (a new process) or "resume" (a suspended worker thawed in place, issue 16); a resume
    # that failed and fell back to a fresh start is "fresh" with ``reason`` saying why.
    path: str = "fresh"
    reason: str = ""


class ColdStartHistory(msgspec.Struct, frozen=True, kw_only=True):
    recent: list[ColdStart] = []  # oldest first, a few


class nkeys:
    NODES = b"/tide/nodes/"
    WORKERS = b"/tide/workers/"
    USAGE = b"/tide/usage/"
    EPOCH = b"/tide/sched/epoch"
    REASONS = b"/tide/sched/reasons/"
    MIGLAYOUTS = b"/tide/miglayouts/"
    COLDSTARTS = b"/tide/coldstarts/"
    MIGDEMAND = b"/tide/migdemand/"

    @staticmethod
    def node(node: str) -> bytes:
        return b"/tide/nodes/" + node.encode()

    @staticmethod
    def worker(node: str, worker: str) -> bytes:
        return f"/tide/workers/{node}/{worker}".encode()

    @staticmethod
    def usage(worker: str) -> bytes:
        return b"/tide/usage/" + worker.encode()

    @staticmethod
    def usage_segment(worker: str, started_at: float) -> bytes:
        """A closed stretch of a worker's usage: it ran, was suspended, and may run again."""
        return f"/tide/usage/{worker}.{int(started_at * 1000)}".encode()

    @staticmethod
    def reason(ep: str) -> bytes:
        return b"/tide/sched/reasons/" + ep.encode()

    @staticmethod
    def coldstarts(ep: str) -> bytes:
        return b"/tide/coldstarts/" + ep.encode()

    @staticmethod
    def mig_layout(node: str, gpu: str) -> bytes:
        return f"/tide/miglayouts/{node}/{gpu}".encode()

    @staticmethod
    def mig_demand(region: str, bucket: str) -> bytes:
        # "~" stands for the unnamed region ("" in inventories); names are one path segment.
        return f"/tide/migdemand/{quote(region, safe='') or '~'}/{bucket}".encode()
