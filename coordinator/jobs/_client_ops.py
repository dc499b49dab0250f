"""The public job operations: run, runsync, status, stream, cancel, retry,
purge-queue, health (reference/runpod_protocol.md §2).

Every state change is one transaction that compares the job record's
mod_revision, so concurrent cancels, completions and requeues resolve to one
winner; the loser re-reads and decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from coordinator._schema import JobRecord, encode, keys
from coordinator.jobs._context import JobsContext, new_job_id, new_seq
from coordinator.jobs._webhook_policy import check_webhook_url
from coordinator.store import Delete, Op, Put
from tide.api.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from tide.api.jobs import FINAL_STATES, JobRequest

__all__ = ["JobService"]

_MAX_RETRIES_ON_CONFLICT = 8


class JobService:
    def __init__(self, ctx: JobsContext) -> None:
        self._ctx = ctx

    # -- submit ----------------------------------------------------------
    async def submit(
        self, ep: str, req: JobRequest, *, sync: bool, timeout_ms: int, batch_id: str = "", job_id: str = ""
    ) -> JobRecord:
        ctx = self._ctx
        now = ctx.clock()
        policy = req.policy
        if req.webhook and not (verdict := check_webhook_url(req.webhook, None, ctx.settings.webhooks)).ok:
            raise InvalidArgument(f"webhook {verdict.reason}")
        raw_input = encode(req.input)
        large = len(raw_input) > ctx.settings.inline_limit
        job_id = job_id or new_job_id(sync)
        # Before the record: a job is accepted only once its input is where every replica reads it.
        blob = await ctx.blobs.put(ep, job_id, "input", raw_input) if large else ""
        record = JobRecord(
            id=job_id,
            endpoint_id=ep,
            status="IN_QUEUE",
            created_at=now,
            input=None if large else req.input,
            input_blob=blob,
            webhook=req.webhook or "",
            s3_config=msgspec.to_builtins(req.s3_config) if req.s3_config else None,
            low_priority=bool(policy and policy.low_priority),
            execution_timeout_ms=(
                policy.execution_timeout if policy and policy.execution_timeout else timeout_ms
            ),
            ttl_ms=(policy.ttl if policy and policy.ttl else 86_400_000),
            sync=sync,
            seq=new_seq(now),
            batch_id=batch_id,
        )
        lease = await ctx.lease_of(record)
        value = encode(record)
        ops: list[Op] = [
            Put(key=keys.job(ep, record.id), value=value, lease=lease),
            Put(key=keys.queue(ep, record.low_priority, record.seq), value=record.id.encode(), lease=lease),
        ]
        result = await ctx.committer.commit([], ops)
        ctx.queued.remember(record, result.revision, len(value))
        return record

    async def run_sync(
        self, ep: str, req: JobRequest, *, timeout_ms: int, wait_s: float, on_submitted: Callable[[], None]
    ) -> dict[str, Any]:
        """/runsync: submit (then ``on_submitted()``), and the status once final or
        when ``wait_s`` elapses.  Listening from before the submission, it needs no
        first read."""
        job_id = new_job_id(True)
        with _JobChanges(self._ctx, job_id) as changes:
            record = await self.submit(ep, req, sync=True, timeout_ms=timeout_ms, job_id=job_id)
            on_submitted()
            return await self._wait(ep, record, wait_s, changes)

    # -- read ------------------------------------------------------------
    async def status(self, ep: str, job_id: str) -> dict[str, Any]:
        record, _ = await self._ctx.read_job(ep, job_id)
        return await self._ctx.envelope(record)

    async def wait_final(self, ep: str, job_id: str, wait_s: float) -> dict[str, Any]:
        """The status once final, or the current one when ``wait_s`` elapses."""
        with _JobChanges(self._ctx, job_id) as changes:
            record, _ = await self._ctx.read_job(ep, job_id)
            return await self._wait(ep, record, wait_s, changes)

    async def _wait(self, ep: str, record: JobRecord, wait_s: float, changes: _JobChanges) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while record.status not in FINAL_STATES:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return await self._ctx.envelope((await self._ctx.read_job(ep, record.id))[0])
            newest = await changes.next(min(remaining, 5.0))  # re-read now and then
            if newest is not None and newest.status in FINAL_STATES:
                record = newest  # the watch brought the final record: no read needed
            elif newest is None:  # a periodic re-read, or the job was deleted (NotFound)
                record, _ = await self._ctx.read_job(ep, record.id)
        return await self._ctx.envelope(record)

    async def stream(self, ep: str, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """Undelivered chunks, each exactly once and in order (§2.5)."""
        record, _ = await self._ctx.read_job(ep, job_id)
        chunks = await self._take_chunks(job_id)
        if not chunks and wait_s > 0 and record.status not in FINAL_STATES:
            await self.wait_final(ep, job_id, min(wait_s, 1.0))
            record, _ = await self._ctx.read_job(ep, job_id)
            chunks = await self._take_chunks(job_id)
        return {"id": job_id, "status": record.status, "stream": chunks}

    async def follow(self, ep: str, job_id: str) -> AsyncIterator[tuple[list[Any], dict[str, Any] | None]]:
        """The job's stream as it is written: ``(chunks, None)`` for each batch of new chunks
        (each delivered once, as by ``stream``), then ``(the last chunks, final status)``.
        Woken by the view on every chunk and status change, so chunks are relayed with the
        watch's latency; the caller bounds how long it follows."""
        with _JobChanges(self._ctx, job_id, chunks=True) as changes:
            record, _ = await self._ctx.read_job(ep, job_id)
            while True:
                final = record.status in FINAL_STATES
                chunks = await self._take_chunks(job_id)  # after seeing it final: none is left behind
                if final:
                    yield chunks, await self._ctx.envelope(record)
                    return
                if chunks:
                    yield chunks, None
                newest = await changes.next(5.0)
                if newest is not None:
                    record = newest
                elif not changes.chunked:  # a periodic re-read, or the job is gone (NotFound)
                    record, _ = await self._ctx.read_job(ep, job_id)

    async def _take_chunks(self, job_id: str) -> list[Any]:
        # Deleting returns what was deleted: delivery and removal are one step,
        # so two readers never see the same chunk.
        result = await self._ctx.store.txn([], [Delete(key=keys.stream(job_id), prefix=True)])
        kvs = sorted(result.responses[0], key=lambda kv: kv.key)
        return [msgspec.json.decode(kv.value) for kv in kvs]

    # -- state changes ---------------------------------------------------
    async def cancel(self, ep: str, job_id: str) -> dict[str, Any]:
        for _ in range(_MAX_RETRIES_ON_CONFLICT):
            record, rev = await self._ctx.read_job(ep, job_id)
            if record.status in FINAL_STATES:
                return {"id": job_id, "status": record.status}
            try:
                await self._ctx.finish(record, rev, "CANCELLED", error="")
            except Conflict:
                continue
            return {"id": job_id, "status": "CANCELLED"}
        raise Conflict(f"job {job_id} kept changing while cancelling; retry")

    async def retry(self, ep: str, job_id: str) -> dict[str, Any]:
        record, rev = await self._ctx.read_job(ep, job_id)
        if record.status not in ("FAILED", "TIMED_OUT"):
            raise FailedPrecondition(
                f"only FAILED or TIMED_OUT jobs can be retried; job {job_id} is {record.status}"
            )
        requeued = msgspec.structs.replace(
            record,
            status="IN_QUEUE",
            output=None,
            output_blob="",
            has_output=False,
            error=None,
            started_at=0.0,
            finished_at=0.0,
            worker_id="",
            lost_by="",
        )
        lease = await self._ctx.lease_of(requeued)
        queue_key = keys.queue(ep, record.low_priority, record.seq)
        await self._ctx.write_job(
            rev, requeued, extra=[Put(key=queue_key, value=job_id.encode(), lease=lease)]
        )
        return {"id": job_id, "status": "IN_QUEUE"}

    async def purge_queue(self, ep: str) -> dict[str, Any]:
        """Cancel every queued (not running) job of the endpoint."""
        res = await self._ctx.store.range(keys.queue_of(ep))
        ids = [kv.value.decode() for kv in res.kvs]
        removed = 0
        for chunk_start in range(0, len(ids), 50):
            chunk = ids[chunk_start : chunk_start + 50]
            found = [f for f in await self._ctx.get_many(ep, chunk) if f and f[0].status == "IN_QUEUE"]
            # Concurrently: the group committer turns a chunk into one transaction
            # (the runpod SDK gives purge-queue 3 s).
            done = await asyncio.gather(*(self._cancel_queued(record, rev) for record, rev in found))
            removed += sum(done)
        return {"removed": removed, "status": "completed"}

    async def _cancel_queued(self, record: JobRecord, rev: int) -> bool:
        try:
            await self._ctx.finish(record, rev, "CANCELLED", error="")
        except (Conflict, NotFound):
            return False  # taken or cancelled meanwhile
        return True

    def health(self, ep: str) -> dict[str, Any]:
        view = self._ctx.view
        normal, low = view.queue(ep).counts()
        counters = view.job_stats.counts(ep)
        in_progress = len(view.claims_of(ep))
        out: dict[str, Any] = {
            "jobs": {
                "completed": counters["COMPLETED"],
                "failed": counters["FAILED"],
                "inProgress": in_progress,
                "inQueue": normal + low,
                "retried": counters["RETRIED"],
            },
            "workers": self._worker_counts(ep),
        }
        if reason := view.reasons.get(ep, ""):  # Tide's addition: why queued jobs wait for a worker
            out["reason"] = reason
        return out

    def _worker_counts(self, ep: str) -> dict[str, int]:
        counts = dict.fromkeys(("idle", "initializing", "ready", "running", "throttled", "unhealthy"), 0)
        busy = {c.worker_id for _, c in self._ctx.view.claims_of(ep)}
        for worker, presence in self._ctx.view.presence.get(ep, {}).items():
            if presence.unhealthy:
                counts["unhealthy"] += 1
            elif worker in busy:
                counts["running"] += 1
            else:
                counts["idle"] += 1
        counts["ready"] = counts["idle"] + counts["running"]
        return counts


class _JobChanges:
    """The changes of one job the view announces, from ``with`` on (none is lost
    between announcements: a change that comes while the caller reads is kept)."""

    def __init__(self, ctx: JobsContext, job_id: str, *, chunks: bool = False) -> None:
        self._view = ctx.view
        self._chunks = chunks  # also wake on stream chunks
        self._job_id = job_id
        self._changes: list[JobRecord | None] = []
        self._changed = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._chunk_pending = False
        self.chunked = False  # the last ``next`` was woken by a stream chunk

    def __enter__(self) -> _JobChanges:
        self._unsubscribe = [self._view.on_job(self._job_id, self._on_change)]
        if self._chunks:
            self._unsubscribe.append(self._view.on_stream(self._job_id, self._on_chunk))
        return self

    def __exit__(self, *exc: object) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    def _on_chunk(self) -> None:
        self._chunk_pending = True
        self._changed.set()

    def _on_change(self, record: JobRecord | None) -> None:
        self._changes.append(record)
        self._changed.set()

    async def next(self, timeout: float) -> JobRecord | None:
        """The newest change since the last call; None on a timeout, a deletion or a chunk."""
        if not self._changes and not self._chunk_pending:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        self.chunked, self._chunk_pending = self._chunk_pending, False
        newest = self._changes[-1] if self._changes else None
        self._changes.clear()
        return newest
