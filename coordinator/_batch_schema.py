"""What a batch keeps in etcd (its requests and results are shards in the object store).

Key layout (under ``/tide/``)::

    batches/<ep>/<batch>           BatchRecord   (until deleted with the endpoint)
    batchshards/<batch>/<shard>    ShardLease    (only while the shard is being dispatched)

A batch of 8 million requests is one record plus, at any time, the few shard leases the
dispatcher has open: never a key per request.  The requests of an open shard run as
ordinary low-priority jobs (``/tide/jobs/<ep>/<batch>-<shard>-<index>``) that are deleted
when the shard's results are folded into its result shard.
"""

from __future__ import annotations

import msgspec

from tide.api.batches import BatchState

__all__ = ["BatchRecord", "ShardLease", "batch_keys", "child_job_id", "parse_child_job_id"]


class BatchRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    endpoint_id: str
    status: BatchState
    created_at: float  # unix seconds
    name: str = ""
    sla_hours: float = 0.0  # 0: no deadline
    max_price_per_gpu_hour: float = 0.0
    shards: list[int] = []  # request count of each input shard
    shard_ids: list[str] = []  # shard i's object: batches/<ep>/<id>/requests/<shard_ids[i]>
    finalized_at: float = 0.0
    finished_at: float = 0.0
    next_shard: int = 0  # shards below it are open (a lease) or folded (a result shard)
    completed: int = 0  # folded counts
    failed: int = 0
    cancelled: int = 0
    cancel_requested: bool = False
    gpu_seconds: dict[str, float] = {}  # price key -> GPU-seconds of folded requests
    exec_seconds: float = 0.0  # wall seconds of folded executions (the pacing's per-request time)
    runs: int = 0  # folded executions
    workers: int = 0  # what the pacing planner allowed last
    at_risk: str = ""  # why the SLA will be missed ("" = on track)

    @property
    def request_total(self) -> int:
        return sum(self.shards)

    @property
    def folded(self) -> int:
        return self.completed + self.failed + self.cancelled


class ShardLease(msgspec.Struct, frozen=True, kw_only=True):
    """An open shard: its requests below ``cursor`` were handed to the job queue."""

    shard: int
    size: int
    cursor: int = 0
    opened_at: float = 0.0


def child_job_id(batch: str, shard: int, index: int) -> str:
    return f"{batch}-{shard:06d}-{index:06d}"


def parse_child_job_id(job_id: str) -> tuple[str, int, int] | None:
    batch, _, rest = job_id.rpartition("-")  # ...-<shard>-<index>
    batch, _, shard = batch.rpartition("-")
    if not (batch and shard.isdigit() and rest.isdigit()):
        return None
    return batch, int(shard), int(rest)


class batch_keys:
    BATCHES = b"/tide/batches/"
    SHARDS = b"/tide/batchshards/"

    @staticmethod
    def batch(ep: str, batch: str = "") -> bytes:
        return f"/tide/batches/{ep}/{batch}".encode()

    @staticmethod
    def lease(batch: str, shard: int | None = None) -> bytes:
        return f"/tide/batchshards/{batch}/{'' if shard is None else f'{shard:06d}'}".encode()

    @staticmethod
    def children(ep: str, batch: str, shard: int) -> bytes:
        return f"/tide/jobs/{ep}/{batch}-{shard:06d}-".encode()
