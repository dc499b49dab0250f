"""The job lifecycle on MemoryStore, through the real HTTP API, without the SDK.

A coordinator runs in the test's event loop; the tests play client and worker
with aiohttp.  Time-driven paths (lost claims, execution timeouts, TTL) use a
fake clock that the test advances instead of sleeping.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.jobs import WebhookPolicy
from coordinator.store import MemoryStore
from tests.fixtures.coordinator import InProcessCoordinator


class FakeClock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class Api:
    """Client and worker calls against one coordinator."""

    def __init__(self, c: InProcessCoordinator, session: aiohttp.ClientSession) -> None:
        self.c = c
        self.s = session
        self.key = c.admin_key
        self._tokens: dict[tuple[str, str], str] = {}

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, auth: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth if auth is not None else f"Bearer {self.key}"}
        data: Any = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None and len(data) > 1 << 20:
            data = io.BytesIO(data)  # aiohttp warns about large raw bodies
        async with self.s.request(method, self.c.url + path, data=data, headers=headers) as resp:
            text = await resp.read()
            return resp.status, (json.loads(text) if text else None)

    async def token(self, ep: str, worker: str) -> str:
        if (ep, worker) not in self._tokens:
            self._tokens[ep, worker] = await self.c.admin.worker_token(ep, worker)
        return self._tokens[ep, worker]

    async def run(self, ep: str, body: Any) -> str:
        status, out = await self.call("POST", f"/v2/{ep}/run", body)
        assert status == 200, out
        assert out["status"] == "IN_QUEUE"
        return str(out["id"])

    async def status(self, ep: str, job: str) -> dict[str, Any]:
        status, out = await self.call("GET", f"/v2/{ep}/status/{job}")
        assert status == 200, out
        return dict(out)

    async def wait_status(self, ep: str, job: str, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                out = await self.status(ep, job)
                if out["status"] in states:
                    return out
                await asyncio.sleep(0.02)

    async def take(self, ep: str, worker: str, batch: int | None = None) -> tuple[int, Any]:
        route = "job-take-batch" if batch else "job-take"
        query = f"?gpu=x&batch_size={batch}&job_in_progress=0" if batch else "?gpu=x&job_in_progress=0"
        return await self.call("GET", f"/v2/{ep}/{route}/{worker}{query}", auth=await self.token(ep, worker))

    async def take_one(self, ep: str, worker: str) -> dict[str, Any]:
        for _ in range(50):
            status, job = await self.take(ep, worker)
            if status == 200:
                return dict(job)
            assert status == 204, job
        raise AssertionError("no job came")

    async def done(
        self, ep: str, worker: str, job: str, result: Any, *, stream: bool = False, raw: bytes | None = None
    ) -> tuple[int, Any]:
        path = f"/v2/{ep}/job-done/{worker}/{job}?gpu=x&isStream={'true' if stream else 'false'}"
        body = raw if raw is not None else json.dumps(result).encode()
        return await self.call("POST", path, raw=body, auth=await self.token(ep, worker))

    async def chunk(self, ep: str, worker: str, job: str, output: Any) -> tuple[int, Any]:
        path = f"/v2/{ep}/job-stream/{worker}/{job}?gpu=x&isStream=false"
        body = json.dumps({"output": output}).encode()
        return await self.call("POST", path, raw=body, auth=await self.token(ep, worker))

    async def ping(self, ep: str, worker: str, jobs: list[str]) -> None:
        query = f"?gpu=x&job_id={','.join(jobs)}&runpod_version=1.12.0" if jobs else "?gpu=x"
        status, out = await self.call(
            "GET", f"/v2/{ep}/ping/{worker}{query}", auth=await self.token(ep, worker)
        )
        assert status == 200, out

    async def stops(self, ep: str, worker: str) -> tuple[int, Any]:
        return await self.call("GET", f"/v2/{ep}/job-stop/{worker}?gpu=x", auth=await self.token(ep, worker))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = FakeClock()
    store = MemoryStore(clock=clock.monotonic)
    settings = {
        "take_wait_s": 0.2,
        "stop_wait_s": 0.2,
        "claim_grace_s": 5.0,
        "result_limit": 1 << 20,
        "webhooks": WebhookPolicy(allow_cidrs=("127.0.0.1/32",)),  # the receivers below
    }
    # The election lease outlives every advance() below: leadership stays put.
    async with InProcessCoordinator(store, state_dir=str(tmp_path), election_ttl_s=60, **settings) as c:
        assert c.coordinator is not None and c.coordinator.ctx is not None
        c.coordinator.ctx.clock = clock
        async with aiohttp.ClientSession() as session:
            a = Api(c, session)
            a.clock = clock  # type: ignore[attr-defined]
            await c.admin.create_endpoint("ep", maxJobRetries=1)
            yield a
    await store.close()


def advance(api: Api, seconds: float) -> None:
    clock: FakeClock = api.clock  # type: ignore[attr-defined]
    clock.offset += seconds
    assert api.c.coordinator is not None
    api.c.coordinator.view.claims_changed.fire()  # wake the reaper now rather than within 1 s


async def test_run_take_done_status(api: Api) -> None:
    job = await api.run("ep", {"input": {"a": 1}, "webhook": "", "s3Config": {"bucketName": "b"}})
    assert (await api.status("ep", job))["status"] == "IN_QUEUE"
    taken = await api.take_one("ep", "w1")
    assert taken["id"] == job and taken["input"] == {"a": 1}
    assert taken["s3Config"]["bucketName"] == "b"
    running = await api.status("ep", job)
    assert running["status"] == "IN_PROGRESS" and running["workerId"] == "w1"
    assert await api.done("ep", "w1", job, {"output": {"b": 2}}) == (200, {"accepted": True})
    final = await api.status("ep", job)
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"b": 2}
    assert final["workerId"] == "w1"
    assert {"delayTime", "executionTime"} <= final.keys()
    assert "error" not in final


async def test_take_answers_204_when_empty(api: Api) -> None:
    status, body = await api.take("ep", "w1")
    assert (status, body) == (204, None)
    status, body = await api.take("ep", "w1", batch=3)
    assert (status, body) == (204, None)


async def test_batch_take_gives_up_to_batch_size_in_submission_order(api: Api) -> None:
    jobs = [await api.run("ep", {"input": i}) for i in range(5)]
    status, batch = await api.take("ep", "w1", batch=3)
    assert status == 200 and [j["id"] for j in batch] == jobs[:3]
    status, batch = await api.take("ep", "w2", batch=3)
    assert status == 200 and [j["id"] for j in batch] == jobs[3:]
    for j in jobs:
        worker = "w1" if j in jobs[:3] else "w2"
        assert (await api.done("ep", worker, j, {"output": j}))[0] == 200
    assert (await api.call("GET", "/v2/ep/health"))[1]["jobs"]["completed"] == 5


async def test_each_job_is_taken_once_by_concurrent_workers(api: Api) -> None:
    jobs = {await api.run("ep", {"input": i}) for i in range(20)}
    results = await asyncio.gather(*(api.take("ep", f"w{i}", batch=4) for i in range(8)))
    taken = [j["id"] for status, batch in results if status == 200 for j in batch]
    assert len(taken) == len(set(taken)) == 20
    assert set(taken) == jobs


async def test_raised_error_and_returned_error_fail_the_job(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    await api.done("ep", "w1", job, {"output": {"detail": 1}, "error": "custom failure"})
    final = await api.status("ep", job)
    assert final["status"] == "FAILED"
    assert final["error"] == "custom failure" and final["output"] == {"detail": 1}


async def test_done_from_another_worker_is_refused(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    status, body = await api.done("ep", "w2", job, {"output": "intruder"})
    assert status == 409 and "w1" in body["error"]
    assert (await api.status("ep", job))["status"] == "IN_PROGRESS"


async def test_lost_claim_is_requeued_then_completed_by_another_worker(api: Api) -> None:
    job = await api.run("ep", {"input": "x"})
    await api.take_one("ep", "w1")
    advance(api, 6)  # past claim_grace_s without a ping from w1
    requeued = await api.wait_status("ep", job, "IN_QUEUE")
    assert requeued["retries"] == 1
    taken = await api.take_one("ep", "w2")
    assert taken == {"id": job, "input": "x"}
    status, _ = await api.done("ep", "w1", job, {"output": "late"})  # the lost worker comes back
    assert status == 409
    assert (await api.done("ep", "w2", job, {"output": "ok"}))[0] == 200
    final = await api.status("ep", job)
    assert (final["status"], final["output"], final["retries"], final["workerId"]) == (
        "COMPLETED",
        "ok",
        1,
        "w2",
    )
    status, stop = await api.stops("ep", "w1")  # w1 is told to drop its stale attempt
    assert status == 200 and stop == {"jobsToStop": [job]}


async def test_pings_keep_a_claim_alive(api: Api) -> None:
    job = await api.run("ep", {"input": "x"})
    await api.take_one("ep", "w1")
    for _ in range(3):
        advance(api, 3)
        await api.ping("ep", "w1", [job])
    await asyncio.sleep(0.1)
    assert (await api.status("ep", job))["status"] == "IN_PROGRESS"


async def test_worker_lost_too_often_fails_the_job(api: Api) -> None:
    job = await api.run("ep", {"input": "x"})  # the endpoint allows 1 retry
    await api.take_one("ep", "w1")
    advance(api, 6)
    await api.wait_status("ep", job, "IN_QUEUE")
    await api.take_one("ep", "w2")
    advance(api, 6)
    final = await api.wait_status("ep", job, "FAILED")
    assert "was lost" in final["error"] and "2 attempts" in final["error"]
    assert final["retries"] == 1


async def test_execution_timeout_times_out_and_stops_the_worker(api: Api) -> None:
    job = await api.run("ep", {"input": "x", "policy": {"executionTimeout": 5000}})
    await api.take_one("ep", "w1")
    await api.ping("ep", "w1", [job])
    advance(api, 5.5)
    await api.ping("ep", "w1", [job])  # alive, but too slow
    final = await api.wait_status("ep", job, "TIMED_OUT")
    assert "5000 ms" in final["error"]
    assert await api.stops("ep", "w1") == (200, {"jobsToStop": [job]})
    assert (await api.done("ep", "w1", job, {"output": "late"}))[1] == {
        "ignored": f"job {job} is already TIMED_OUT"
    }
    assert (await api.status("ep", job))["status"] == "TIMED_OUT"


async def test_cancel_queued_job_is_never_taken(api: Api) -> None:
    job = await api.run("ep", {"input": "x"})
    status, out = await api.call("POST", f"/v2/ep/cancel/{job}")
    assert (status, out) == (200, {"id": job, "status": "CANCELLED"})
    assert await api.take("ep", "w1") == (204, None)
    assert (await api.status("ep", job))["status"] == "CANCELLED"
    assert (await api.call("POST", f"/v2/ep/cancel/{job}"))[1]["status"] == "CANCELLED"  # idempotent


async def test_cancel_running_job_signals_its_worker(api: Api) -> None:
    job = await api.run("ep", {"input": "x"})
    await api.take_one("ep", "w1")
    stop = asyncio.create_task(api.stops("ep", "w1"))
    await api.call("POST", f"/v2/ep/cancel/{job}", raw=b"")
    assert await stop == (200, {"jobsToStop": [job]})
    assert await api.stops("ep", "w1") == (204, None)  # not again at once
    # ...but again a second later: the SDK drops a stop for a job it has not started yet
    deliveries = 1
    for _ in range(30):
        status, out = await api.stops("ep", "w1")
        if status == 200:
            assert out == {"jobsToStop": [job]}
            deliveries += 1
            if deliveries == 3:
                break
    assert deliveries == 3
    await asyncio.sleep(1.1)
    assert await api.stops("ep", "w1") == (204, None)  # then it is forgotten
    await api.done("ep", "w1", job, {"output": "late"})
    final = await api.status("ep", job)
    assert final["status"] == "CANCELLED" and "output" not in final


async def test_retry_requeues_failed_job_with_same_id_and_input(api: Api) -> None:
    job = await api.run("ep", {"input": {"n": 7}})
    await api.take_one("ep", "w1")
    await api.done("ep", "w1", job, {"error": "flaky"})
    assert (await api.status("ep", job))["status"] == "FAILED"
    assert await api.call("POST", f"/v2/ep/retry/{job}") == (200, {"id": job, "status": "IN_QUEUE"})
    queued = await api.status("ep", job)
    assert queued["status"] == "IN_QUEUE" and "error" not in queued and "output" not in queued
    assert await api.take_one("ep", "w2") == {"id": job, "input": {"n": 7}}
    await api.done("ep", "w2", job, {"output": 1})
    assert (await api.status("ep", job))["status"] == "COMPLETED"
    status, out = await api.call("POST", f"/v2/ep/retry/{job}")
    assert status == 409 and "COMPLETED" in out["error"]


async def test_purge_queue_removes_only_queued_jobs(api: Api) -> None:
    running = await api.run("ep", {"input": 0})
    await api.take_one("ep", "w1")
    queued = [await api.run("ep", {"input": i}) for i in range(3)]
    assert await api.call("POST", "/v2/ep/purge-queue", raw=b"") == (
        200,
        {"removed": 3, "status": "completed"},
    )
    for j in queued:
        assert (await api.status("ep", j))["status"] == "CANCELLED"
    assert (await api.status("ep", running))["status"] == "IN_PROGRESS"
    assert await api.take("ep", "w2") == (204, None)


async def test_stream_chunks_exactly_once_in_order(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    seen: list[Any] = []
    for i in range(30):
        assert (await api.chunk("ep", "w1", job, i))[0] == 200
        if i % 7 == 3:  # read while the worker is still writing, two readers at once
            replies = await asyncio.gather(*(api.call("GET", f"/v2/ep/stream/{job}") for _ in range(2)))
            for _, out in replies:
                assert out["status"] == "IN_PROGRESS"
                seen.extend(c["output"] for c in out["stream"])
    await api.done("ep", "w1", job, {"output": list(range(30))}, stream=True)
    _, out = await api.call("GET", f"/v2/ep/stream/{job}")
    assert out["status"] == "COMPLETED"
    seen.extend(c["output"] for c in out["stream"])
    assert sorted(seen) == list(range(30)) and len(seen) == 30
    _, out = await api.call("GET", f"/v2/ep/stream/{job}")
    assert out == {"id": job, "status": "COMPLETED", "stream": []}


async def test_stream_order_is_kept_for_one_reader(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    for i in range(50):
        await api.chunk("ep", "w1", job, {"i": i})
    _, out = await api.call("GET", f"/v2/ep/stream/{job}")
    assert [c["output"]["i"] for c in out["stream"]] == list(range(50))


async def test_progress_update_shows_while_running_and_is_ignored_after_final(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    await api.done("ep", "w1", job, {"status": "IN_PROGRESS", "output": "halfway"})
    running = await api.status("ep", job)
    assert (running["status"], running["output"]) == ("IN_PROGRESS", "halfway")
    await api.done("ep", "w1", job, {"output": "final"})
    status, out = await api.done("ep", "w1", job, {"status": "IN_PROGRESS", "output": "late progress"})
    assert status == 200 and "ignored" in out
    final = await api.status("ep", job)
    assert (final["status"], final["output"]) == ("COMPLETED", "final")


async def test_ttl_expiry_deletes_the_job(api: Api) -> None:
    job = await api.run("ep", {"input": {}, "policy": {"ttl": 10_000}})
    assert (await api.status("ep", job))["status"] == "IN_QUEUE"
    advance(api, 16)  # TTL plus the lease bucket's granularity
    status, out = await api.call("GET", f"/v2/ep/status/{job}")
    assert status == 404 and job in out["error"]
    assert await api.take("ep", "w1") == (204, None)


async def test_runsync_waits_for_the_result(api: Api) -> None:
    async def worker() -> None:
        job = await api.take_one("ep", "w1")
        await api.done("ep", "w1", job["id"], {"output": {"echo": job["input"]}})

    task = asyncio.create_task(worker())
    status, out = await api.call("POST", "/v2/ep/runsync", {"input": 5})
    await task
    assert status == 200 and out["status"] == "COMPLETED" and out["output"] == {"echo": 5}
    assert out["id"].startswith("sync-")


async def test_health_counts(api: Api) -> None:
    done_job = await api.run("ep", {"input": 1})
    await api.take_one("ep", "w1")
    await api.done("ep", "w1", done_job, {"output": 1})
    failed = await api.run("ep", {"input": 2})
    await api.take_one("ep", "w1")
    await api.done("ep", "w1", failed, {"error": "x"})
    await api.run("ep", {"input": 3})
    await api.run("ep", {"input": 4})
    await api.take_one("ep", "w2")
    await api.ping("ep", "w2", [])
    _, health = await api.call("GET", "/v2/ep/health")
    assert health["jobs"] == {"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 1, "retried": 0}
    assert set(health["workers"]) == {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}


async def test_a_result_too_large_to_store_fails_the_job_with_the_reason(api: Api) -> None:
    job = await api.run("ep", {"input": {}})
    await api.take_one("ep", "w1")
    big = json.dumps({"output": "z" * (2 << 20)}).encode()
    status, out = await api.done("ep", "w1", job, None, raw=big)
    assert status == 413 and "limit" in out["error"]
    final = await api.status("ep", job)
    assert final["status"] == "FAILED" and "result not stored" in final["error"]


async def test_webhook_is_retried_until_the_receiver_takes_it(api: Api) -> None:
    from aiohttp import web

    got: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        arrived.set()
        return web.Response(status=500 if len(got) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    try:
        job = await api.run("ep", {"input": {"w": 1}, "webhook": url})
        await api.take_one("ep", "w1")
        await api.done("ep", "w1", job, {"output": "ok"})
        async with asyncio.timeout(10):
            await arrived.wait()
            arrived.clear()
            assert api.c.coordinator is not None
            outbox = api.c.coordinator.view.outbox
            for _ in range(500):  # the failed attempt is recorded before we move the clock
                if job in outbox and outbox[job][0].attempts == 1:
                    break
                await asyncio.sleep(0.01)
            advance(api, 11)  # the retry is due 10 s after the failed attempt
            await arrived.wait()
        await asyncio.sleep(0.3)
        assert len(got) == 2  # delivered, then not again
        assert got[1] == got[0]
        assert got[1]["id"] == job and got[1]["status"] == "COMPLETED" and got[1]["output"] == "ok"
        assert got[1]["input"] == {"w": 1} and got[1]["webhook"] == url
    finally:
        await runner.cleanup()


async def test_webhook_cut_off_by_a_leadership_change_is_sent_again(api: Api) -> None:
    from aiohttp import web

    got: list[str] = []
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.json())["id"])
        arrived.set()
        if len(got) == 1:
            await release.wait()  # the first attempt hangs until leadership moves
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    try:
        job = await api.run("ep", {"input": {}, "webhook": url})
        await api.take_one("ep", "w1")
        await api.done("ep", "w1", job, {"output": "ok"})
        async with asyncio.timeout(15):
            await arrived.wait()
            arrived.clear()
            assert api.c.coordinator is not None
            await api.c.coordinator.store.delete(b"/tide/election/", prefix=True)  # leadership lost
            await arrived.wait()  # the new term sends it again
        assert got == [job, job]
    finally:
        release.set()
        await runner.cleanup()


async def test_an_interrupted_lease_grant_does_not_hang_its_bucket() -> None:
    from coordinator._leases import LeaseBuckets

    store = MemoryStore()
    gate = asyncio.Event()

    class SlowGrants:
        async def lease_grant(self, ttl: float) -> int:
            await gate.wait()
            return await store.lease_grant(ttl)

    buckets = LeaseBuckets(SlowGrants())  # type: ignore[arg-type]
    at = time.time() + 60
    first = asyncio.create_task(buckets.lease_until(at))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(buckets.lease_until(at))  # shares the first one's grant
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(Exception, match="interrupted"):
        await waiter  # told to retry, not left waiting forever
    gate.set()
    lease = await asyncio.wait_for(buckets.lease_until(at), 5)
    assert lease == await buckets.lease_until(at)  # granted once, then shared
    await store.close()
