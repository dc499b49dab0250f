"""Shared plumbing of the job services: settings, record writes, envelopes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator._committer import GroupCommitter
from coordinator._leases import LeaseBuckets
from coordinator._schema import JobRecord, WebhookDelivery, decode_job, encode, keys
from coordinator.jobs._blobs import JobBlobs
from coordinator.jobs._bounds import shrunk_for_store
from coordinator.jobs._coldstart import ColdStartTracker, cold_start_json
from coordinator.jobs._webhook_policy import WebhookPolicy
from coordinator.store import Compare, Delete, Get, Op, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import Conflict, NotFound, PayloadTooLarge
from tide.api.jobs import FINAL_STATES, JobState

__all__ = ["JobSettings", "JobsContext", "new_job_id", "new_seq"]


class JobSettings(msgspec.Struct, frozen=True, kw_only=True):
    inline_limit: int = 256 * 1024  # larger payloads live in the blob store
    run_limit: int = 10 * 1024 * 1024
    runsync_limit: int = 20 * 1024 * 1024
    result_limit: int = 64 * 1024 * 1024  # a job-done body; larger fails the job with a reason
    retention_run_s: float = 1800.0  # results kept after /run
    retention_sync_s: float = 60.0  # results kept after /runsync
    runsync_wait_ms: int = 90_000
    take_wait_s: float = 20.0  # job-take long-poll (RunPod workers abandon at 90 s)
    stop_wait_s: float = 20.0
    claim_grace_s: float = 30.0  # a claim lives this long past the last ping
    ping_interval_s: float = 10.0
    webhooks: WebhookPolicy = WebhookPolicy()  # where webhooks may go ([webhooks])


_QUEUED_RECORD_MAX = 16 * 1024  # larger records are read when taken
_QUEUED_BYTES_MAX = 64 * 1024 * 1024

_seq_counter = 0


class QueuedHints:
    """Job records this replica queued, with their revision, until a take here uses
    them.  A hint only (like WorkerService._claimed): the claim compares the revision
    and falls back to a read.  Bounded in bytes: records of jobs taken by another
    replica, cancelled or expired are dropped wholesale when the bound is reached."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[JobRecord, int, int]] = {}  # id -> (record, revision, size)
        self._bytes = 0

    def remember(self, record: JobRecord, rev: int, size: int) -> None:
        if size > _QUEUED_RECORD_MAX:
            return
        if self._bytes + size > _QUEUED_BYTES_MAX:
            self._records.clear()
            self._bytes = 0
        self._records[record.id] = (record, rev, size)
        self._bytes += size

    def recall(self, job_id: str) -> tuple[JobRecord, int] | None:
        """The record and its revision, forgotten here; None if not known."""
        found = self._records.pop(job_id, None)
        if found is None:
            return None
        self._bytes -= found[2]
        return found[0], found[1]


def new_seq(now: float) -> str:
    """A sortable queue position: submission time, then a per-process counter."""
    global _seq_counter
    _seq_counter = (_seq_counter + 1) % 1_000_000
    return f"{int(now * 1_000_000):017d}{_seq_counter:06d}"


class _Entropy:
    """os.urandom read 4 KiB at a time: one system call per 256 job ids, not one each
    (system calls are dear in sandboxes).  A forked child starts with a fresh pool."""

    def __init__(self) -> None:
        self.pool = b""
        self.pos = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.pool, self.pos = b"", 0

    def take16(self) -> bytes:
        if self.pos + 16 > len(self.pool):
            self.pool, self.pos = os.urandom(4096), 0
        self.pos += 16
        return self.pool[self.pos - 16 : self.pos]


_entropy = _Entropy()


def new_job_id(sync: bool) -> str:
    """A random (version 4) UUID with RunPod's suffix; formatted here, not by
    ``uuid.uuid4()``, which costs twice as much on every /run."""
    b = bytearray(_entropy.take16())
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{'sync-' if sync else ''}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}-u1"


@dataclass(slots=True)
class JobsContext:
    store: Store
    committer: GroupCommitter
    view: ClusterView
    leases: LeaseBuckets
    blobs: JobBlobs  # inputs and outputs above the inline limit (the cluster's object store)
    cold_starts: ColdStartTracker  # fresh workers' first jobs (the status envelope's coldStart)
    settings: JobSettings = field(default_factory=JobSettings)
    clock: Callable[[], float] = time.time
    # Queued records as this replica wrote them: a take here then skips the read.
    queued: QueuedHints = field(default_factory=QueuedHints)

    async def read_job(self, ep: str, job_id: str) -> tuple[JobRecord, int]:
        # Through the group committer: concurrent reads (and writes) share one
        # store round trip instead of one gRPC call each.
        res = await self.committer.commit([], [Get(key=keys.job(ep, job_id))])
        if not res.responses[0]:
            raise NotFound(f"job {job_id!r} not found on endpoint {ep!r} (unknown, or its TTL expired)")
        kv = res.responses[0][0]
        return decode_job(kv.value), kv.mod_revision

    async def write_job(
        self,
        old_rev: int,
        record: JobRecord,
        *,
        extra: list[Op] | None = None,
        compares: list[Compare] | None = None,
        lease: int | None = None,
    ) -> int:
        """Replace a job record if it still is at ``old_rev``; Conflict otherwise.
        ``lease``: the caller's ``lease_of(record)``, when it has it already."""
        if lease is None:
            lease = await self.leases.lease_until(self.expiry_of(record))
        key = keys.job(record.endpoint_id, record.id)
        ops: list[Op] = [Put(key=key, value=encode(record), lease=lease), *(extra or [])]
        cmp = [Compare(key=key, target="mod", op="==", value=old_rev), *(compares or [])]
        result = await self.committer.commit(cmp, ops)
        if not result.succeeded:
            raise Conflict(f"job {record.id} changed concurrently; retry")
        return result.revision

    def expiry_of(self, record: JobRecord) -> float:
        """When the record must disappear: its TTL, or its result retention once final."""
        ttl_end = record.created_at + record.ttl_ms / 1000.0
        if record.status in FINAL_STATES:
            keep = self.settings.retention_sync_s if record.sync else self.settings.retention_run_s
            return min(ttl_end, (record.finished_at or self.clock()) + keep)
        return ttl_end

    async def lease_of(self, record: JobRecord) -> int:
        return await self.leases.lease_until(self.expiry_of(record))

    async def input_of(self, record: JobRecord) -> Any:
        if record.input_blob:
            return msgspec.json.decode(await self.blobs.get(record.input_blob))
        return record.input

    async def output_of(self, record: JobRecord) -> Any:
        if record.output_blob:
            return msgspec.json.decode(await self.blobs.get(record.output_blob))
        return record.output

    async def envelope(self, record: JobRecord) -> dict[str, Any]:
        """The /status object (reference/runpod_protocol.md §2.4)."""
        out: dict[str, Any] = {"id": record.id, "status": record.status}
        if record.started_at:
            out["delayTime"] = int((record.started_at - record.created_at) * 1000)
        if record.finished_at and record.started_at:
            out["executionTime"] = int((record.finished_at - record.started_at) * 1000)
        if record.worker_id:
            out["workerId"] = record.worker_id
        if record.retries:
            out["retries"] = record.retries
        if record.has_output:
            out["output"] = await self.output_of(record)
        if record.error:
            out["error"] = record.error
        # Tide's addition (RunPod fields untouched): the first job of a fresh worker says what
        # its wait was spent on; the worker's own stages join once its node reports them.
        if record.finished_at and (cold := self.cold_starts.of_job(record)) is not None:
            out["coldStart"] = cold_start_json(cold)
        return out

    async def finish(self, record: JobRecord, rev: int, status: JobState, *, error: str) -> None:
        """Move a queued or running job to a final state it did not reach by itself
        (cancel, timeout, lost worker): dequeue it, drop its claim, tell its worker
        to stop it, and schedule its webhook."""
        now = self.clock()
        self.queued.recall(record.id)  # it will not be taken
        extra: list[Op] = [Delete(key=keys.queue(record.endpoint_id, record.low_priority, record.seq))]
        if record.status == "IN_PROGRESS":
            extra.append(Delete(key=keys.claim(record.id)))
            lease = await self.leases.lease_until(now + 300)
            extra.append(Put(key=keys.stop(record.worker_id, record.id), value=b"", lease=lease))
        final = msgspec.structs.replace(record, status=status, finished_at=now, error=error or None)
        await self.write_final(rev, final, extra)

    async def write_final(self, rev: int, final: JobRecord, extra: list[Op]) -> None:
        """Write a job's final record, its outbox entry and ``extra``.  A record the store
        refuses as too large ends FAILED without what made it so: a job never stays
        IN_PROGRESS because its end cannot be written."""
        try:
            await self.write_job(rev, final, extra=[*extra, *self._outbox_ops(final)])
        except PayloadTooLarge:
            shrunk = shrunk_for_store(final)
            await self.write_job(rev, shrunk, extra=[*extra, *self._outbox_ops(shrunk)])

    def _outbox_ops(self, final: JobRecord) -> list[Op]:
        return [self.outbox_put(final)] if final.webhook else []

    @staticmethod
    def outbox_put(record: JobRecord) -> Put:
        delivery = WebhookDelivery(url=record.webhook, endpoint_id=record.endpoint_id)
        return Put(key=keys.outbox(record.id), value=encode(delivery))

    async def get_many(self, ep: str, job_ids: list[str]) -> list[tuple[JobRecord, int] | None]:
        """Read several job records in one round trip (shared with other reads and writes)."""
        if not job_ids:
            return []
        res = await self.committer.commit([], [Get(key=keys.job(ep, j)) for j in job_ids])
        out: list[tuple[JobRecord, int] | None] = []
        for kvs in res.responses:
            out.append((decode_job(kvs[0].value), kvs[0].mod_revision) if kvs else None)
        return out
