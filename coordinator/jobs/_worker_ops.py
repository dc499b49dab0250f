"""The worker-side operations: job-take(-batch), job-done, job-stream, ping,
job-stop (reference/runpod_protocol.md §1).

At least once: a take moves a job IN_QUEUE → IN_PROGRESS and writes its
claim in the same transaction; pings renew the claims of the jobs the worker
lists; the reaper requeues a claim whose deadline passed.  job-done is fenced
by the job record's revision and worker id, so a late answer from a worker
that lost its claim cannot overwrite the new attempt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from coordinator._schema import Claim, JobRecord, Presence, Retirement, encode, keys
from coordinator.jobs._bounds import MAX_STREAM_CHUNK, bounded_error, decode_json
from coordinator.jobs._context import JobsContext, new_seq
from coordinator.store import Compare, Delete, Op, Put
from coordinator.view import QueuedJob
from tide.api.errors import Conflict, InvalidArgument, PayloadTooLarge, TideError
from tide.api.jobs import FINAL_STATES

__all__ = ["WorkerService"]

log = logging.getLogger("tide.coordinator.worker")


class WorkerService:
    def __init__(self, ctx: JobsContext) -> None:
        self._ctx = ctx
        self._stops_sent: dict[tuple[str, str], tuple[int, float]] = {}  # (worker, job) -> (times, last)
        self._retired: dict[str, float] = {}  # worker -> when it sent stopPod (this replica)
        # Jobs this replica handed out, as it wrote them: job-done and job-stream
        # usually come back here and then skip a read.  A hint only: every write
        # still compares the revision, and a stale entry falls back to a read.
        self._claimed: dict[str, tuple[JobRecord, int]] = {}

    # -- take ------------------------------------------------------------
    async def take(self, ep: str, worker: str, n: int, wait_s: float) -> list[dict[str, Any]]:
        """Up to ``n`` jobs, long-polling up to ``wait_s``; [] when none came."""
        self.touch(ep, worker)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        queue = self._ctx.view.queue(ep)
        view = self._ctx.view
        while worker not in self._retired:  # a recycled worker gets no more jobs
            if worker in view.removed_workers or view.suspended(worker):
                # Suspended (issue 16): no job, so that noded freezes an idle worker.  Held like a
                # removed worker's take: the SDK polls again at once after an empty answer.
                await _removed(deadline - loop.time())
                return []
            candidates = queue.pop(n, ep)
            if candidates:
                taken = await self._claim(ep, worker, candidates)
                if taken:
                    return taken
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._ctx.view.closing:
                return []
            await queue.signal.wait(remaining)
        return []

    async def _claim(self, ep: str, worker: str, candidates: list[QueuedJob]) -> list[dict[str, Any]]:
        ctx = self._ctx
        queue = ctx.view.queue(ep)
        hints = [ctx.queued.recall(c.job_id) for c in candidates]
        unknown = [c.job_id for c, h in zip(candidates, hints, strict=True) if h is None]
        try:
            read = iter(await ctx.get_many(ep, unknown))
        except Exception:
            for c in candidates:  # still queued in the store: keep them in the view
                queue.add(c.key, c.job_id)
            raise
        found = [(h, True) if h is not None else (next(read), False) for h in hints]
        results = await asyncio.gather(
            *(self._claim_one(worker, c, f, hint) for c, (f, hint) in zip(candidates, found, strict=True)),
            return_exceptions=True,
        )
        taken: list[dict[str, Any]] = []
        for cand, result in zip(candidates, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("claiming job %s failed: %s", cand.job_id, result)
                queue.add(cand.key, cand.job_id)
            elif result is not None:
                taken.append(result)
        return taken

    async def _claim_one(
        self, worker: str, cand: QueuedJob, found: tuple[JobRecord, int] | None, hint: bool
    ) -> dict[str, Any] | None:
        """``hint``: ``found`` is what this replica queued, not a read; if it changed
        since (a retry after another replica ran it), read it and try again."""
        if found is None or found[0].status != "IN_QUEUE":
            return None
        record, rev = found
        ctx = self._ctx
        # Read a large input before claiming: with the object store down the take fails
        # and the job stays queued (not claimed by a worker that never gets it).
        job_input = await ctx.input_of(record) if record.input_blob else record.input
        now = ctx.clock()
        started = msgspec.structs.replace(record, status="IN_PROGRESS", started_at=now, worker_id=worker)
        lease = await ctx.lease_of(started)
        claim = Claim(
            endpoint_id=record.endpoint_id,
            worker_id=worker,
            deadline=now + ctx.settings.claim_grace_s,
            exec_deadline=now + record.execution_timeout_ms / 1000.0,
        )
        try:
            new_rev = await ctx.write_job(
                rev,
                started,
                extra=[
                    Delete(key=cand.key),
                    Put(key=keys.claim(record.id), value=encode(claim), lease=lease),
                    # A stop left by the requeue of this worker's earlier attempt is for that
                    # attempt: a worker restarted under the same id must not stop this one.
                    Delete(key=keys.stop(worker, record.id)),
                ],
                compares=[Compare(key=cand.key, target="create", op=">", value=0)],
                lease=lease,
            )
        except Conflict:
            if hint:
                read = await ctx.get_many(record.endpoint_id, [record.id])
                return await self._claim_one(worker, cand, read[0], False)
            return None  # another replica or a cancel got there first
        self._remember(started, new_rev)
        job: dict[str, Any] = {"id": record.id, "input": job_input}
        if record.webhook:
            job["webhook"] = record.webhook
        if record.s3_config:
            job["s3Config"] = record.s3_config
        if record.batch_id:
            job["batchId"] = record.batch_id
        return job

    async def reject(self, ep: str, worker: str, job_id: str, reason: str) -> None:
        """Fail a running job whose result could not be taken (too large)."""
        try:
            await self.done(ep, worker, job_id, encode({"error": reason}), is_stream=False)
        except TideError as exc:  # unknown job, reassigned: nothing of ours to fail
            log.info("could not fail job %s after a rejected result: %s", job_id, exc.message)

    def _remember(self, record: JobRecord, rev: int) -> None:
        if len(self._claimed) > 100_000:  # jobs whose answer went to another replica, or never came
            self._claimed.clear()
        self._claimed[record.id] = (record, rev)

    def _recall(self, ep: str, worker: str, job_id: str, *, forget: bool) -> tuple[JobRecord, int] | None:
        """The record as this replica last wrote it, if it says ``worker`` runs it."""
        found = self._claimed.pop(job_id, None) if forget else self._claimed.get(job_id)
        if found is None:
            return None
        record = found[0]
        ok = record.endpoint_id == ep and record.status == "IN_PROGRESS" and record.worker_id == worker
        return found if ok else None

    # -- done ------------------------------------------------------------
    async def done(
        self, ep: str, worker: str, job_id: str, body: bytes, *, is_stream: bool
    ) -> dict[str, Any]:
        ctx = self._ctx
        self.touch(ep, worker)
        for _ in range(8):
            record, rev = self._recall(ep, worker, job_id, forget=True) or await ctx.read_job(ep, job_id)
            if record.status in FINAL_STATES:
                return {"ignored": f"job {job_id} is already {record.status}"}
            if record.status == "IN_PROGRESS" and record.worker_id != worker:
                raise Conflict(
                    f"job {job_id} was reassigned to worker {record.worker_id}; result not accepted"
                )
            if record.status == "IN_QUEUE" and (not record.lost_by or record.lost_by != worker):
                # Only the worker whose claim lapsed may still answer a queued job (at least
                # once: its result saves a rerun); nobody may complete a job it never took.
                raise Conflict(f"job {job_id} is not held by worker {worker}; result not accepted")
            try:
                result = decode_json(body, "job-done body") if body.strip() else {}
            except InvalidArgument as exc:
                failure = {"error": f"the worker sent a result that is not JSON we take: {exc.message}"}
                await self._complete(record, rev, worker, failure)
                raise InvalidArgument(f"{exc.message}; the job was marked FAILED") from None
            if not isinstance(result, dict):
                result = {"output": result}
            try:
                if result.get("status") == "IN_PROGRESS":
                    return await self._progress(record, rev, result)
                return await self._complete(record, rev, worker, result)
            except Conflict:
                continue
        raise Conflict(f"job {job_id} kept changing; retry")

    async def _progress(self, record: JobRecord, rev: int, result: dict[str, Any]) -> dict[str, Any]:
        if record.status != "IN_PROGRESS":
            return {"ignored": "progress update for a job that is not running"}
        updated = msgspec.structs.replace(record, **await self._output_fields(record, result.get("output")))
        self._remember(updated, await self._ctx.write_job(rev, updated))
        return {"accepted": True}

    async def _output_fields(self, record: JobRecord, output: Any) -> dict[str, Any]:
        """An output inline when small, else in blob storage (as large inputs are)."""
        raw = encode(output)
        if len(raw) > self._ctx.settings.inline_limit:
            blob = await self._ctx.blobs.put(record.endpoint_id, record.id, "output", raw)
            return {"output": None, "output_blob": blob, "has_output": True}
        return {"output": output, "output_blob": "", "has_output": True}

    async def _complete(
        self, record: JobRecord, rev: int, worker: str, result: dict[str, Any]
    ) -> dict[str, Any]:
        ctx = self._ctx
        now = ctx.clock()
        error = bounded_error(result.get("error"))
        status = "FAILED" if error else "COMPLETED"
        fields: dict[str, Any] = {"status": status, "finished_at": now, "error": error or None}
        fields["started_at"] = record.started_at or now
        fields["worker_id"] = record.worker_id or worker  # a requeued job answered by its first worker
        if "output" in result:
            fields.update(await self._output_fields(record, result["output"]))
        final = msgspec.structs.replace(record, **fields)
        extra: list[Op] = [Delete(key=keys.claim(record.id))]
        if record.status == "IN_QUEUE":  # a requeued job answered by its first worker
            extra.append(Delete(key=keys.queue(record.endpoint_id, record.low_priority, record.seq)))
        await ctx.write_final(rev, final, extra)
        if result.get("stopPod"):
            await self.retire(record.endpoint_id, worker, record.id)
        return {"accepted": True}

    async def retire(self, ep: str, worker: str, job_id: str) -> None:
        """``stopPod``: the worker asked to be recycled after this job.  Recorded
        under ``retired/`` for the scheduler (stop it; start a fresh one if the
        scaler still wants one)."""
        log.info("worker %s of %s asked to be recycled (stopPod after job %s)", worker, ep, job_id)
        ctx = self._ctx
        now = ctx.clock()
        for old in [w for w, at in self._retired.items() if at < now - 3600]:
            del self._retired[old]
        self._retired[worker] = now
        ctx.view.queue(ep).signal.fire()  # its pending polls answer now, so the SDK can exit
        ctx.view.stop_signal(worker).fire()
        record = Retirement(endpoint_id=ep, worker_id=worker, job_id=job_id, at=now)
        lease = await ctx.leases.lease_until(now + 3600)
        await ctx.committer.commit([], [Put(key=keys.retired(ep, worker), value=encode(record), lease=lease)])

    # -- stream ----------------------------------------------------------
    async def stream_put(self, ep: str, worker: str, job_id: str, body: bytes) -> dict[str, Any]:
        ctx = self._ctx
        record, _ = self._recall(ep, worker, job_id, forget=False) or await ctx.read_job(ep, job_id)
        if record.status != "IN_PROGRESS" or record.worker_id != worker:
            return {"ignored": f"job {job_id} is {record.status}"}
        chunk = decode_json(body, "job-stream body")
        if not isinstance(chunk, dict) or "output" not in chunk:
            chunk = {"output": chunk}
        value = encode({"output": chunk["output"]})
        if len(value) > MAX_STREAM_CHUNK:
            raise PayloadTooLarge(
                f"a job-stream chunk is {len(value)} bytes; the limit is {MAX_STREAM_CHUNK}: "
                "send smaller chunks"
            )
        lease = await ctx.lease_of(record)
        seq = new_seq(ctx.clock())  # time, then a per-process counter: chunks keep their order
        await ctx.committer.commit([], [Put(key=keys.stream(job_id, seq), value=value, lease=lease)])
        return {"accepted": True}

    # -- liveness --------------------------------------------------------
    def touch(self, ep: str, worker: str) -> None:
        """Note that a worker is alive (takes and results prove it too)."""
        self._ctx.view.note_seen(ep, worker, self._ctx.clock())

    async def ping(self, ep: str, worker: str, job_ids: list[str], unhealthy: str = "") -> None:
        """Renew the claims of the listed jobs held by this worker; record presence."""
        ctx = self._ctx
        now = ctx.clock()
        ops: list[Op] = []
        compares: list[Compare] = []
        for job_id in job_ids:
            cached = ctx.view.claims.get(job_id)
            if cached is None or cached[0].worker_id != worker:
                continue
            claim, claim_rev, lease = cached
            renewed = msgspec.structs.replace(claim, deadline=now + ctx.settings.claim_grace_s)
            ops.append(Put(key=keys.claim(job_id), value=encode(renewed), lease=lease))
            compares.append(Compare(key=keys.claim(job_id), target="mod", op="==", value=claim_rev))
        presence = Presence(
            endpoint_id=ep, worker_id=worker, last_seen=now, jobs=job_ids, unhealthy=unhealthy
        )
        lease = await ctx.leases.lease_until(now + 3 * ctx.settings.ping_interval_s)
        ops.append(Put(key=keys.presence(ep, worker), value=encode(presence), lease=lease))
        result = await ctx.committer.commit(compares, ops)
        if not result.succeeded:  # a claim moved (done or requeued): renew what is left
            await ctx.committer.commit([], [ops[-1]])

    async def stop_signals(self, worker: str, wait_s: float) -> list[str]:
        """Job ids this worker must stop (cancelled or timed out); long-polls.

        Each stop is delivered ``_STOP_DELIVERIES`` times, ``_STOP_REDELIVER_S``
        apart, then forgotten: the runpod SDK drops a stop for a job it has
        taken but not started yet (still in its local queue), so one delivery
        can be lost (observed with 1.12.0)."""
        view = self._ctx.view
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            now = loop.time()
            pending = view.stops.get(worker, set())
            for gone in [k for k in self._stops_sent if k[0] == worker and k[1] not in pending]:
                del self._stops_sent[gone]  # expired, or deleted by another replica
            due, spent, next_at = plan_stop_delivery(pending, self._stops_sent, worker, now)
            if due:
                for job in due:
                    times, _ = self._stops_sent.get((worker, job), (0, 0.0))
                    self._stops_sent[worker, job] = (times + 1, now)
                if spent:
                    await self._ctx.committer.commit([], [Delete(key=keys.stop(worker, j)) for j in spent])
                    for job in spent:
                        self._stops_sent.pop((worker, job), None)
                return due
            remaining = deadline - now
            if worker in view.removed_workers:
                # At once: the SDK sleeps 1 s after an empty answer before it polls again (and
                # sees its SIGTERM), so answering now is what lets a stopped worker exit soon.
                return []
            if remaining <= 0 or view.closing or worker in self._retired:
                return []
            await view.stop_signal(worker).wait(min(remaining, next_at - now))


async def _removed(remaining: float) -> None:
    """Hold a removed worker's job-take before it answers "no job": at most a second.

    Soon, so the SDK's graceful exit on SIGTERM is not held up by a 20 s long-poll; not at
    once, because the SDK polls job-take again straight after an empty answer, so a worker
    noded has not stopped yet would spin on it.  The job-stop poll answers a removed worker at
    once instead: the SDK already sleeps a second after an empty stop answer (fa4691b)."""
    await asyncio.sleep(max(0.0, min(1.0, remaining)))


_STOP_DELIVERIES = 3
_STOP_REDELIVER_S = 1.0


def plan_stop_delivery(
    pending: set[str], sent: dict[tuple[str, str], tuple[int, float]], worker: str, now: float
) -> tuple[list[str], list[str], float]:
    """(stops due now, stops delivered for the last time now, when the next one is due)."""
    due: list[str] = []
    spent: list[str] = []
    next_at = float("inf")
    for job in sorted(pending):
        times, last = sent.get((worker, job), (0, 0.0))
        if times == 0 or last + _STOP_REDELIVER_S <= now:
            due.append(job)
            if times + 1 >= _STOP_DELIVERIES:
                spent.append(job)
        else:
            next_at = min(next_at, last + _STOP_REDELIVER_S)
    return due, spent, next_at
