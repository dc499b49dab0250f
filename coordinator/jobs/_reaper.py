"""Leader-only loops that end or recover jobs nobody else will: lost claims,
execution timeouts, and webhook delivery.

``plan_reap`` is pure: given the claims and the time it says which jobs to
requeue and which timed out.  ``Reaper.run`` applies that plan, then sleeps
until the next deadline or until the claims change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import msgspec

from coordinator._schema import Claim, JobRecord, encode, keys
from coordinator.jobs._context import JobsContext
from coordinator.jobs._webhook_guard import GuardedResolver
from coordinator.jobs._webhook_policy import check_webhook_url
from coordinator.store import Compare, Delete, Put
from tide.api.errors import Conflict, NotFound, TideError

__all__ = ["ReapAction", "Reaper", "WebhookSender", "plan_reap"]

log = logging.getLogger("tide.coordinator.reaper")


class ReapAction(msgspec.Struct, frozen=True):
    job_id: str
    kind: Literal["timeout", "lost"]
    claim: Claim
    claim_rev: int


def plan_reap(claims: Mapping[str, tuple[Claim, int, int]], now: float) -> tuple[list[ReapAction], float]:
    """Actions due now, and the earliest future deadline (inf when none)."""
    actions: list[ReapAction] = []
    next_at = float("inf")
    for job_id, (claim, rev, _lease) in claims.items():
        if claim.exec_deadline <= now:
            actions.append(ReapAction(job_id, "timeout", claim, rev))
        elif claim.deadline <= now:
            actions.append(ReapAction(job_id, "lost", claim, rev))
        else:
            next_at = min(next_at, claim.deadline, claim.exec_deadline)
    return actions, next_at


class Reaper:
    def __init__(self, ctx: JobsContext, *, max_retries: Callable[[str], int]) -> None:
        self._ctx = ctx
        self._max_retries = max_retries

    async def run(self) -> None:
        view = self._ctx.view
        await view.ready.wait()
        while True:
            now = self._ctx.clock()
            actions, next_at = plan_reap(view.claims, now)
            for action in actions:
                try:
                    await self._apply(action)
                except TideError as exc:
                    log.warning("reaping job %s: %s", action.job_id, exc.message)
            await view.claims_changed.wait(min(max(next_at - now, 0.05), 1.0))
            # A pass is O(claims) and claims change twice per job: under load,
            # batch the wake-ups (at most 10 passes a second) instead of one pass each.
            await asyncio.sleep(0.1)

    async def _apply(self, action: ReapAction) -> None:
        ctx = self._ctx
        try:
            record, rev = await ctx.read_job(action.claim.endpoint_id, action.job_id)
        except NotFound:  # the job's TTL ran out: only the claim is left
            await ctx.store.delete(keys.claim(action.job_id))
            return
        if record.status != "IN_PROGRESS" or record.worker_id != action.claim.worker_id:
            await ctx.store.txn(
                [Compare(key=keys.claim(action.job_id), target="mod", op="==", value=action.claim_rev)],
                [Delete(key=keys.claim(action.job_id))],
            )
            return
        if action.kind == "timeout":
            ms = record.execution_timeout_ms
            log.info("job %s timed out after %d ms on worker %s", record.id, ms, record.worker_id)
            await ctx.finish(record, rev, "TIMED_OUT", error=f"execution timeout of {ms} ms exceeded")
        else:
            await self._requeue(record, rev)

    async def _requeue(self, record: JobRecord, rev: int) -> None:
        ctx = self._ctx
        limit = self._max_retries(record.endpoint_id)
        grace = ctx.settings.claim_grace_s
        if record.retries >= limit:
            error = (
                f"worker {record.worker_id} was lost while running this job (no ping for {grace:.0f}s); "
                f"gave up after {record.retries + 1} attempts"
            )
            await ctx.finish(record, rev, "FAILED", error=error)
            return
        log.info(
            "job %s lost with worker %s; requeued (attempt %d)",
            record.id,
            record.worker_id,
            record.retries + 2,
        )
        requeued = msgspec.structs.replace(
            record,
            status="IN_QUEUE",
            retries=record.retries + 1,
            worker_id="",
            lost_by=record.worker_id,
            started_at=0.0,
        )
        lease = await ctx.lease_of(requeued)
        now = ctx.clock()
        stop_lease = await ctx.leases.lease_until(now + 300)
        await ctx.write_job(
            rev,
            requeued,
            extra=[
                Delete(key=keys.claim(record.id)),
                Put(
                    key=keys.queue(record.endpoint_id, record.low_priority, record.seq),
                    value=record.id.encode(),
                    lease=lease,
                ),
                Put(key=keys.stop(record.worker_id, record.id), value=b"", lease=stop_lease),
            ],
        )


class WebhookSender:
    """Delivers the status envelope of each final job that has a webhook:
    up to 3 attempts, 10 s apart, from the durable outbox."""

    def __init__(self, ctx: JobsContext, *, retry_delay_s: float = 10.0, attempts: int = 3) -> None:
        self._ctx = ctx
        self._retry_delay = retry_delay_s
        self._attempts = attempts
        self._in_flight: set[str] = set()
        self._handled: dict[str, int] = {}  # job id -> outbox revision already acted on

    async def run(self) -> None:
        view = self._ctx.view
        await view.ready.wait()
        timeout = aiohttp.ClientTimeout(total=10)
        # Every name is resolved through the policy; IP literals are checked in _deliver.
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._ctx.settings.webhooks))
        session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        async with session, asyncio.TaskGroup() as tg:
            while True:
                now = self._ctx.clock()
                next_at = float("inf")
                for job_id, (delivery, rev) in list(view.outbox.items()):
                    if job_id in self._in_flight or self._handled.get(job_id, 0) >= rev:
                        continue
                    if delivery.next_at <= now:
                        self._in_flight.add(job_id)
                        tg.create_task(self._deliver(session, job_id, delivery, rev))
                    else:
                        next_at = min(next_at, delivery.next_at)
                await view.outbox_changed.wait(min(max(next_at - now, 0.05), 1.0))

    async def _deliver(self, session: aiohttp.ClientSession, job_id: str, delivery: Any, rev: int) -> None:
        ctx = self._ctx
        key = keys.outbox(job_id)
        settled = False  # stays False when cancelled (leadership lost, shutdown): try again later
        try:
            try:
                record, _ = await ctx.read_job(delivery.endpoint_id, job_id)
            except NotFound:
                await ctx.store.delete(key)
                settled = True
                return
            body = {
                **await ctx.envelope(record),
                "input": await ctx.input_of(record),
                "webhook": delivery.url,
            }
            verdict = check_webhook_url(delivery.url, None, ctx.settings.webhooks)
            if not verdict.ok:  # stored before the policy, or the policy changed since
                log.warning("webhook for job %s refused: %s %s", job_id, delivery.url[:200], verdict.reason)
            ok = verdict.ok and await _post(session, delivery.url, body)
            attempts = delivery.attempts + 1 if verdict.ok else self._attempts  # refused: never retried
            cmp = [Compare(key=key, target="mod", op="==", value=rev)]
            if ok or attempts >= self._attempts:
                if not ok:
                    log.warning("webhook for job %s failed %d times; giving up", job_id, attempts)
                await ctx.store.txn(cmp, [Delete(key=key)])
            else:
                nxt = msgspec.structs.replace(
                    delivery, attempts=attempts, next_at=ctx.clock() + self._retry_delay
                )
                await ctx.store.txn(cmp, [Put(key=key, value=encode(nxt))])
            settled = True
        except (TideError, Conflict) as exc:
            log.warning("webhook for job %s: %s", job_id, exc)
            settled = True
        finally:
            if settled:
                self._handled[job_id] = rev
                if len(self._handled) > 100_000:
                    self._handled.clear()
            self._in_flight.discard(job_id)


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        # No redirects: a public receiver could otherwise bounce the envelope to an internal one.
        headers = {"Content-Type": "application/json"}
        async with session.post(url, data=encode(body), headers=headers, allow_redirects=False) as resp:
            return resp.status == 200
    return False
