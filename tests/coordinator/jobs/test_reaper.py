"""The reaper (coordinator/jobs/_reaper.py): ``plan_reap`` over claims, and ``Reaper`` applying
it on the in-memory store.

A claim whose deadline passed unrenewed is requeued with ``retries`` + 1 (the worker is told to
stop it); once ``retries`` reaches the endpoint's maximum it is FAILED instead; a claim past its
execution deadline ends the job TIMED_OUT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from coordinator._committer import GroupCommitter
from coordinator._leases import LeaseBuckets
from coordinator._schema import Claim, JobRecord, decode_job, encode, keys
from coordinator.jobs import ColdStartTracker, JobBlobs, JobsContext, Reaper, plan_reap
from coordinator.store import MemoryStore
from coordinator.view import ClusterView
from tiered_storage import LocalObjectStore

EP, WORKER = "ep", "w-1"
MAX_RETRIES = 2


def _claim(*, deadline: float, exec_deadline: float) -> Claim:
    return Claim(endpoint_id=EP, worker_id=WORKER, deadline=deadline, exec_deadline=exec_deadline)


# -- plan_reap: pure --------------------------------------------------------------------------


def test_a_claim_past_its_deadline_is_lost() -> None:
    claims = {"j-1": (_claim(deadline=99.0, exec_deadline=500.0), 7, 0)}
    actions, _ = plan_reap(claims, now=100.0)
    assert [(a.job_id, a.kind, a.claim_rev) for a in actions] == [("j-1", "lost", 7)]


def test_a_claim_past_its_execution_deadline_times_out_even_when_renewed() -> None:
    claims = {"j-1": (_claim(deadline=130.0, exec_deadline=100.0), 7, 0)}
    actions, _ = plan_reap(claims, now=100.0)
    assert [(a.job_id, a.kind) for a in actions] == [("j-1", "timeout")]


def test_live_claims_give_the_next_deadline_and_no_action() -> None:
    claims = {
        "j-1": (_claim(deadline=130.0, exec_deadline=500.0), 1, 0),
        "j-2": (_claim(deadline=140.0, exec_deadline=120.0), 2, 0),
    }
    assert plan_reap(claims, now=100.0) == ([], 120.0)
    assert plan_reap({}, now=100.0) == ([], float("inf"))


# -- Reaper on the in-memory store ------------------------------------------------------------


@dataclass
class Rig:
    store: MemoryStore
    ctx: JobsContext


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = MemoryStore()
    view = ClusterView(store)
    tracker = ColdStartTracker(view)
    view.subscribe(tracker)
    ctx = JobsContext(
        store=store,
        committer=GroupCommitter(store),
        view=view,
        leases=LeaseBuckets(store),
        blobs=JobBlobs(LocalObjectStore(tmp_path / "blobs")),
        cold_starts=tracker,
    )
    feed = asyncio.create_task(view.run())
    reaper = asyncio.create_task(Reaper(ctx, max_retries=lambda ep: MAX_RETRIES).run())
    try:
        yield Rig(store, ctx)
    finally:
        for task in (reaper, feed):
            task.cancel()
        await asyncio.gather(reaper, feed, return_exceptions=True)
        await store.close()


async def _running(rig: Rig, *, retries: int, deadline: float, exec_deadline: float) -> JobRecord:
    """A job IN_PROGRESS on WORKER, with its claim, as a job-take leaves it."""
    now = time.time()
    record = JobRecord(
        id="j-1",
        endpoint_id=EP,
        status="IN_PROGRESS",
        created_at=now - 10,
        seq="00000000000000001000001",
        started_at=now - 5,
        worker_id=WORKER,
        retries=retries,
    )
    claim = _claim(deadline=deadline, exec_deadline=exec_deadline)
    await rig.store.put(keys.job(EP, record.id), encode(record))
    await rig.store.put(keys.claim(record.id), encode(claim))
    return record


async def _until(rig: Rig, *states: str) -> JobRecord:
    async with asyncio.timeout(10):
        while True:
            kv = await rig.store.get(keys.job(EP, "j-1"))
            if kv is not None and (record := decode_job(kv.value)).status in states:
                return record
            await asyncio.sleep(0.02)


async def test_a_lost_claim_is_requeued_with_one_more_retry(rig: Rig) -> None:
    now = time.time()
    old = await _running(rig, retries=0, deadline=now - 1, exec_deadline=now + 600)
    record = await _until(rig, "IN_QUEUE")
    assert (record.retries, record.worker_id, record.started_at) == (1, "", 0.0)
    assert await rig.store.get(keys.claim("j-1")) is None
    queued = await rig.store.get(keys.queue(EP, False, old.seq))
    assert queued is not None and queued.value == b"j-1"
    assert await rig.store.get(keys.stop(WORKER, "j-1")) is not None  # the lost worker drops it


async def test_a_claim_lost_at_the_retry_limit_fails_the_job(rig: Rig) -> None:
    now = time.time()
    await _running(rig, retries=MAX_RETRIES, deadline=now - 1, exec_deadline=now + 600)
    record = await _until(rig, "FAILED", "IN_QUEUE")
    assert record.status == "FAILED" and record.retries == MAX_RETRIES
    assert f"gave up after {MAX_RETRIES + 1} attempts" in str(record.error)
    assert await rig.store.get(keys.claim("j-1")) is None


async def test_an_execution_timeout_ends_the_job_timed_out_and_stops_its_worker(rig: Rig) -> None:
    now = time.time()
    await _running(rig, retries=0, deadline=now + 600, exec_deadline=now - 1)
    record = await _until(rig, "TIMED_OUT", "IN_QUEUE", "FAILED")
    assert record.status == "TIMED_OUT" and record.retries == 0
    assert "execution timeout of" in str(record.error)
    assert await rig.store.get(keys.claim("j-1")) is None
    assert await rig.store.get(keys.stop(WORKER, "j-1")) is not None


async def test_a_claim_that_outlived_its_job_is_deleted(rig: Rig) -> None:
    now = time.time()
    record = await _running(rig, retries=0, deadline=now - 1, exec_deadline=now + 600)
    done = msgspec.structs.replace(record, status="COMPLETED", finished_at=now)
    await rig.store.put(keys.job(EP, record.id), encode(done))
    async with asyncio.timeout(10):
        while True:
            if await rig.store.get(keys.claim("j-1")) is None:
                break
            await asyncio.sleep(0.02)
    kv = await rig.store.get(keys.job(EP, "j-1"))
    assert kv is not None and decode_job(kv.value).status == "COMPLETED"  # left as it was
