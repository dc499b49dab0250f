"""The node API's wire types: what noded reports and what it is told to run.

noded never talks to etcd; it registers, heartbeats its inventory and worker
reports, and long-polls its desired workers over HTTP.  Decoders accept
unknown fields so mixed-version nodes keep working.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DesiredWorker",
    "DesiredWorkers",
    "FlashbootHolding",
    "GpuInfo",
    "Heartbeat",
    "MigInstance",
    "ModelFetch",
    "NodeInventory",
    "NodeRegistration",
    "WeightRestore",
    "WorkerBoot",
    "WorkerReport",
    "WorkerResume",
    "WorkerState",
]

# "suspended" (issue 16): frozen in place by noded, holding host RAM only; neither ready nor starting,
# so the autoscaler does not count it.  noded reports it only for a worker its coordinator asked to
# suspend (DesiredWorker.suspended), so a coordinator that predates the value never receives it.
WorkerState = Literal[
    "pending", "initializing", "idle", "running", "unhealthy", "stopping", "exited", "suspended"
]


class MigInstance(msgspec.Struct, frozen=True, kw_only=True):
    uuid: str  # "MIG-..."; what CUDA_VISIBLE_DEVICES names
    profile: str  # "3g.40gb"
    start: int  # placement start on the card's memory-slice grid
    size: int  # placement size
    gpu_instance_id: int = 0
    compute_instance_id: int = 0
    busy: bool = False  # a worker or a process uses it


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    uuid: str  # "GPU-..."
    type_id: str  # Tide's canonical type, e.g. "H100-80GB", "RTXPRO6000-96GB"
    name: str = ""  # as NVML names it, e.g. "NVIDIA H100 80GB HBM3"
    memory_mb: int = 0
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_instances: list[MigInstance] = []


class FlashbootHolding(msgspec.Struct, frozen=True, kw_only=True):
    """One model the host's FlashBoot keeper holds (weights kept after their workers exited)."""

    fingerprint: str
    model_ids: list[str] = []
    endpoints: list[str] = []  # endpoints whose workers loaded it: the placer prefers this host
    tiers: list[str] = []  # of "t0" (a live worker), "t1" (shared RAM), "t2" (local disk)
    nbytes: int = 0


class NodeInventory(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    region: str = ""  # e.g. "EU"
    datacenter: str = ""  # e.g. "EU-RO-1"
    gpus: list[GpuInfo] = []
    cpus: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    runtime: str = "process"
    images: list[str] = []  # images (or dir:// paths) already on this host
    flashboot_models: list[str] = []  # model fingerprints held in RAM or NVMe tiers
    version: str = ""
    # GPU uuid -> why noded does not (yet) hold the MIG layout it was told to (busy slice in the
    # way, Ampere mode change with processes running, driver error); absent = applied.
    mig_errors: dict[str, str] = {}
    flashboot: list[FlashbootHolding] = []  # per model: tiers and the endpoints that loaded it
    # Issue 16: host RAM this host lets suspended workers hold (noded's [runtime] suspend-budget-mb;
    # 0 = it stops idle workers instead of suspending them, as before).
    suspend_budget_bytes: int = 0
    models: list[str] = []  # model ids the host's model cache holds staged (the placer prefers it)


class NodeRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """POST /node/v1/register: answered with the node id and its credential."""

    inventory: NodeInventory


class WeightRestore(msgspec.Struct, frozen=True, kw_only=True):
    """One weight load of a worker (``flashboot.load``): where the bytes came from, how long."""

    model_id: str
    tier: str  # the nearest tier that held them: "t0", "t1", "t2" or "source"
    nbytes: int = 0
    seconds: float = 0.0
    started_at: float = 0.0


class WorkerBoot(msgspec.Struct, frozen=True, kw_only=True):
    """A worker process's own account of its start, in the host's unix seconds.

    Written by the worker side (``flashboot.load``) into ``$TIDE_WORKER_REPORT_DIR/boot.json``;
    noded forwards it in the worker's report.  Absent for handlers that load no weights through
    FlashBoot: their runtime import and weight restore are then part of "handler ready".
    """

    process_started_at: float = 0.0  # the kernel's start time of the process (its fork, if pooled)
    imported_at: float = 0.0  # the handler's imports were done: its first weight load began
    restored_at: float = 0.0  # its last weight load ended
    restores: list[WeightRestore] = []


class WorkerResume(msgspec.Struct, frozen=True, kw_only=True):
    """The last time noded brought this worker back from suspended (issue 16), host unix seconds.

    ``path``: "resume" (thawed in place, same pid) or "fresh" (the resume failed: it was stopped
    and started again; ``reason`` says why).  ``thaw_s`` includes ``device_restore_s``
    (cuda-checkpoint moving its memory back onto the GPU; 0 without one)."""

    path: str
    resumed_at: float
    thaw_s: float = 0.0
    device_restore_s: float = 0.0
    reason: str = ""


class ModelFetch(msgspec.Struct, frozen=True, kw_only=True):
    """How the model cache made a worker's model present before its start (not billed)."""

    model_id: str
    tier: str  # the nearest tier that held it: "host", "region", "global" or "source"
    nbytes: int = 0
    seconds: float = 0.0
    started_at: float = 0.0


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    state: WorkerState
    reason: str = ""  # why it exited / is unhealthy
    exit_code: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_at: float = 0.0  # first job-take seen (handler ready)
    revision: int = 0  # desired revision this worker was started from
    boot: WorkerBoot | None = None  # the worker's own start report, once it wrote one
    rss_bytes: int = 0  # host RAM held while suspended (counts against noded's suspend budget)
    resume: WorkerResume | None = None  # its last resume, once it had one
    model: ModelFetch | None = None  # the model cache's fetch before the (last) start


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    inventory: NodeInventory
    workers: list[WorkerReport] = []
    draining: bool = False


class DesiredWorker(msgspec.Struct, frozen=True, kw_only=True):
    """One worker the coordinator wants on this node."""

    worker_id: str
    endpoint_id: str
    revision: int  # bumps when anything below changes
    image: str
    command: list[str] = []
    args: list[str] = []
    env: dict[str, str] = {}  # includes RUNPOD_* and the worker's own token
    gpu_type: str = ""
    devices: list[str] = []  # GPU or MIG UUIDs
    flashboot: bool = False
    cpus: float = 0.0
    memory_bytes: int = 0
    # Issue 16: keep this idle worker frozen in place instead of stopping it (its devices are free
    # capacity meanwhile); flipping it back to False resumes it (same pid) instead of a fresh start.
    # A noded that predates the field ignores it and keeps the worker running.
    suspended: bool = False
    model: str = ""  # the endpoint's model URL: noded stages it before the start


class DesiredWorkers(msgspec.Struct, frozen=True, kw_only=True):
    """GET /node/v1/nodes/{id}/desired?after=REV long-poll answer."""

    revision: int  # pass back as ``after`` to wait for the next change
    workers: list[DesiredWorker] = []
    mig_layouts: dict[str, list[str]] = {}  # GPU uuid -> wanted profiles (MIG issue)
    drain: bool = False
    action: Literal["run", "drain"] = "run"
