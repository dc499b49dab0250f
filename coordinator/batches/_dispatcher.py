"""The leader's batch dispatcher: feeds a finalized batch's requests to the ordinary job
queue as low-priority jobs, a window at a time, and folds each finished shard into its
result shard.

At-least-once without a key per request: a shard is *opened* (a lease key holding a cursor)
before any of its requests is queued, and the cursor is advanced *before* the requests it
covers are submitted, under deterministic job ids (``<batch>-<shard>-<index>``).  So after a
crash anywhere, every index below a cursor either has a job record or is resubmitted, and
every index above it is still to come.  The jobs themselves get the job path's guarantees
(claims renewed by pings; a dead worker's job is requeued).  A shard is folded once every
request in it is final: its results go to the object store first, then one transaction
counts them into the batch record, drops the lease and deletes the shard's job records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

import msgspec

from coordinator._batch_schema import BatchRecord, ShardLease, batch_keys, child_job_id
from coordinator._schema import JobRecord, encode
from coordinator.batches._children import Children, child_result, price_key_of, read_children
from coordinator.batches._records import BatchRecords
from coordinator.batches._settings import BatchSettings
from coordinator.batches._shards import ShardLine, ShardStore
from coordinator.jobs import JobsContext, JobService
from coordinator.scheduling import BatchPace, PaceInput, plan_batch_pace
from coordinator.store import Compare, Delete, Put
from tide.api.errors import Conflict, NotFound, TideError
from tide.api.jobs import FINAL_STATES, JobPolicy, JobRequest

__all__ = ["BatchDispatcher"]

log = logging.getLogger("tide.coordinator.batches")

_lease_decoder = msgspec.json.Decoder(ShardLease)
_LOW = JobPolicy(low_priority=True)


class BatchDispatcher:
    def __init__(
        self,
        ctx: JobsContext,
        jobs: JobService,
        shards: ShardStore,
        settings: BatchSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._jobs = jobs
        self._shards = shards
        self._records = BatchRecords(ctx.store)
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._lines: dict[tuple[str, int], list[ShardLine]] = {}  # open shards' requests

    def wake(self) -> None:
        """A batch's job ended (the view's job feed): pass again now, not at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.pass_once()
            except TideError as exc:  # the store or the object store is down: try again next tick
                log.warning("batch pass failed: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.tick_s):
                    await self._wake.wait()

    async def pass_once(self) -> None:
        for record, rev in await self._records.every():
            if record.status == "FINALIZED" and not record.finished_at:
                try:
                    await self._advance(record, rev)
                except Conflict:
                    continue  # cancelled or changed meanwhile: next pass

    # -- one batch -------------------------------------------------------
    async def _advance(self, record: BatchRecord, rev: int) -> None:
        ep = record.endpoint_id
        outstanding = 0
        open_leases: list[tuple[ShardLease, int]] = []
        for lease, lease_rev in await self._leases(record.id):
            children = await read_children(self._ctx, ep, record.id, lease.shard)
            lines = await self._requests(record, lease.shard)
            await self._recover(record, lease, lines, children)
            pending = [c for c, _ in children.values() if c.status not in FINAL_STATES]
            if record.cancel_requested:
                await self._cancel_queued(children)
            if not pending and (lease.cursor >= lease.size or record.cancel_requested):
                record, rev = await self._fold(
                    record, rev, lease, lines, await read_children(self._ctx, ep, record.id, lease.shard)
                )
                continue
            outstanding += len(pending)
            open_leases.append((lease, lease_rev))
        pace = self._pace(record, outstanding)
        if not record.cancel_requested:
            await self._fill(record, rev, open_leases, pace.workers * self._settings.prefetch - outstanding)
            record, rev = await self._records.read(ep, record.id)
        await self._settle(record, rev, bool(open_leases), pace)

    async def _leases(self, batch: str) -> list[tuple[ShardLease, int]]:
        res = await self._ctx.store.range(batch_keys.lease(batch))
        return [(_lease_decoder.decode(kv.value), kv.mod_revision) for kv in res.kvs]

    async def _requests(self, record: BatchRecord, shard: int) -> list[ShardLine]:
        key = (record.id, shard)
        if key not in self._lines:
            self._lines[key] = await self._shards.requests(
                record.endpoint_id, record.id, record.shard_ids[shard]
            )
        return self._lines[key]

    async def _recover(
        self, record: BatchRecord, lease: ShardLease, lines: list[ShardLine], children: Children
    ) -> None:
        """Indexes below the cursor without a job: submitted by a leader that died before
        the job was written (or the job expired): submit them again."""
        if record.cancel_requested:
            return
        lost = [i for i in range(lease.cursor) if i not in children and not lines[i].error]
        if lost:
            log.info("batch %s shard %d: resubmitting %d requests", record.id, lease.shard, len(lost))
            await self._submit(record, lease.shard, lines, lost)

    async def _submit(
        self, record: BatchRecord, shard: int, lines: list[ShardLine], indexes: list[int]
    ) -> None:
        ep = record.endpoint_id
        found = self._ctx.view.endpoints.get(ep)
        timeout_ms = found[0].spec.execution_timeout_ms if found else 600_000
        await asyncio.gather(
            *(
                self._jobs.submit(
                    ep,
                    JobRequest(input=lines[i].input, policy=_LOW),
                    sync=False,
                    timeout_ms=timeout_ms,
                    batch_id=record.id,
                    job_id=child_job_id(record.id, shard, i),
                )
                for i in indexes
            )
        )

    async def _cancel_queued(self, children: Children) -> None:
        for child, child_rev in children.values():
            if child.status == "IN_QUEUE":
                with contextlib.suppress(Conflict, NotFound):  # taken meanwhile: it finishes
                    await self._ctx.finish(child, child_rev, "CANCELLED", error="")

    # -- filling the window ----------------------------------------------
    async def _fill(
        self, record: BatchRecord, rev: int, leases: list[tuple[ShardLease, int]], room: int
    ) -> None:
        leases = list(leases)
        while room > 0:
            found = next(((lease, r) for lease, r in leases if lease.cursor < lease.size), None)
            if found is None:
                if record.next_shard >= len(record.shards):
                    return
                record, rev, found = await self._open(record, rev)
                leases.append(found)
            lease, lease_rev = found
            lines = await self._requests(record, lease.shard)
            n = min(room, lease.size - lease.cursor)
            moved = msgspec.structs.replace(lease, cursor=lease.cursor + n)
            key = batch_keys.lease(record.id, lease.shard)
            res = await self._ctx.store.txn(
                [Compare(key=key, target="mod", op="==", value=lease_rev)],
                [Put(key=key, value=encode(moved))],
            )
            if not res.succeeded:
                raise Conflict("shard lease moved; another leader?")
            leases[leases.index(found)] = (moved, res.revision)
            todo = [i for i in range(lease.cursor, moved.cursor) if not lines[i].error]
            await self._submit(record, lease.shard, lines, todo)
            room -= n

    async def _open(self, record: BatchRecord, rev: int) -> tuple[BatchRecord, int, tuple[ShardLease, int]]:
        shard = record.next_shard
        lease = ShardLease(shard=shard, size=record.shards[shard], opened_at=self._clock())
        opened = msgspec.structs.replace(record, next_shard=shard + 1)
        key = batch_keys.lease(record.id, shard)
        new_rev = await self._records.write(rev, opened, [Put(key=key, value=encode(lease))])
        return opened, new_rev, (lease, new_rev)

    # -- folding a shard -------------------------------------------------
    async def _fold(
        self, record: BatchRecord, rev: int, lease: ShardLease, lines: list[ShardLine], children: Children
    ) -> tuple[BatchRecord, int]:
        ep = record.endpoint_id
        results = []
        counts = {"COMPLETED": 0, "FAILED": 0, "CANCELLED": 0}
        gpu = dict(record.gpu_seconds)
        exec_s, runs = record.exec_seconds, record.runs
        for i, line in enumerate(lines):
            child = children.get(i)
            if line.error:
                result = {"id": line.id, "status": "FAILED", "error": line.error}
            elif child is None:
                result = {"id": line.id, "status": "CANCELLED"}  # never handed out: not billed
            else:
                job = child[0]
                result = await child_result(self._ctx, line.id, job)
                if job.started_at and job.finished_at:
                    seconds = job.finished_at - job.started_at
                    key, gpus = price_key_of(self._ctx.view, job.worker_id)
                    gpu[key] = gpu.get(key, 0.0) + seconds * gpus
                    exec_s, runs = exec_s + seconds, runs + 1
            counts[result["status"]] += 1
            results.append(result)
        await self._shards.put_results(ep, record.id, lease.shard, results)
        folded = msgspec.structs.replace(
            record,
            completed=record.completed + counts["COMPLETED"],
            failed=record.failed + counts["FAILED"],
            cancelled=record.cancelled + counts["CANCELLED"],
            gpu_seconds=gpu,
            exec_seconds=exec_s,
            runs=runs,
        )
        new_rev = await self._records.write(
            rev,
            folded,
            [
                Delete(key=batch_keys.lease(record.id, lease.shard)),
                Delete(key=batch_keys.children(ep, record.id, lease.shard), prefix=True),
            ],
        )
        self._lines.pop((record.id, lease.shard), None)
        return folded, new_rev

    # -- pacing and the end ----------------------------------------------
    def _pace(self, record: BatchRecord, outstanding: int) -> BatchPace:
        view = self._ctx.view
        ep = record.endpoint_id
        found = view.endpoints.get(ep)
        busy = sum(1 for job, _ in view.claims_of(ep) if not job.startswith("batch_"))
        normal, _ = view.queue(ep).counts()
        deadline = record.finalized_at + record.sla_hours * 3600 if record.sla_hours else math.inf
        return plan_batch_pace(
            PaceInput(
                remaining=record.request_total - record.folded,
                time_left_s=deadline - self._clock(),
                per_request_s=record.exec_seconds / record.runs
                if record.runs
                else self._settings.assumed_request_s,
                workers_max=found[0].spec.workers_max if found else 0,
                allowance=self._settings.allowance_workers,
                realtime_busy=busy,
                realtime_queued=normal,
            )
        )

    async def _settle(self, record: BatchRecord, rev: int, has_open: bool, pace: BatchPace) -> None:
        changes: dict[str, object] = {}
        if (pace.workers, pace.at_risk) != (record.workers, record.at_risk):
            changes.update(workers=pace.workers, at_risk=pace.at_risk)
        remaining = record.request_total - record.folded
        if not has_open and record.cancel_requested:
            changes.update(
                status="CANCELLED", cancelled=record.cancelled + remaining, finished_at=self._clock()
            )
        elif not has_open and remaining == 0:
            changes.update(finished_at=self._clock(), workers=0, at_risk="")
        if changes:
            await self._records.write(rev, msgspec.structs.replace(record, **changes))


class BatchJobFeed:
    """The view's job feed, narrowed to batch children ending: wakes the dispatcher."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self._on_end = on_end

    def observe(self, record: JobRecord) -> None:
        if record.batch_id and record.status in FINAL_STATES:
            self._on_end()

    def apply_history(self, ep: str, value: bytes | None, revision: int, *, replay: bool) -> None:
        return None

    def relisted(self) -> None:
        return None
